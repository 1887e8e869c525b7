"""What promote-model re-checks before deciding (flows/promote.py): the registered
version it names, the run and params that made it, and its earlier attestation,
which must still verify. The decision itself is lineageflow.registry.promotion's.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from lineageflow.attest.verify import Verified, attested
from lineageflow.config import PipelineConfig, parse_params
from lineageflow.errors import LineageError, PromotionRefused
from lineageflow.registry import versions as registry
from lineageflow.runs.orchestration import run_logger
from lineageflow.runs.store import client
from lineageflow.tags import TAG_RUN_ID


@dataclass(frozen=True)
class Registered:
    """A registered version to re-check, as read from the MLflow store."""

    version: str
    source: str  # the model version's source URI
    run_id: str
    cfg: PipelineConfig  # the params its run recorded
    earlier: Verified | None  # its attestation, verified; None when unsigned


def registered_version(uri: str, model_name: str, version: int | str) -> Registered:
    """The version ``model_name`` vVERSION, refused in one line when it is not a
    number, not registered, or its attestation no longer verifies."""
    # MLflow returns versions as int from sqlite and as str over HTTP
    version = str(version)
    if not version.isdigit():
        raise LineageError(f"model version {version!r} must be a number, e.g. 3")
    try:
        mv = client(uri).get_model_version(model_name, version)
    except MlflowException:
        raise LineageError(
            f"model {model_name} v{version} is not registered in this MLflow store"
        ) from None
    run_id = mv.tags.get(TAG_RUN_ID) or mv.run_id
    record, _ = registry.load_lineage(uri, run_id)
    earlier = attested(uri, model_name, version)  # a signed version must still verify
    if earlier is not None and not earlier.ok:
        raise PromotionRefused(f"{model_name} v{version}: {earlier.line()}", version)
    if earlier is not None:
        run_logger().info(earlier.line())
    cfg = parse_params(record.get("params"), source=f"run {run_id} params")
    return Registered(version, mv.source, run_id, cfg, earlier)
