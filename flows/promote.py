"""promote-model: re-check a registered version and promote it when everything passes.

For a version left in None (say, its data was not pushed): fix the cause, then
promote it without retraining. The checks read the run back from MLflow, so a
record or tag edited since the run is refused here too.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException
from prefect import flow

from lineageflow.attest.verify import attested
from lineageflow.config import parse_params
from lineageflow.errors import LineageError, PromotionRefused
from lineageflow.ops.procs import no_collection_at_exit
from lineageflow.registry import champion, promotion
from lineageflow.registry import versions as registry
from lineageflow.runs.context import workspace_store
from lineageflow.runs.orchestration import one_line_user_errors, run_logger
from lineageflow.runs.store import bounded_http_retries, client
from tasks.registry import explain


@flow(name="promote-model", log_prints=True)
def promote_model(model_name: str, version: int | str, workspace: str = ".") -> str:
    """Re-run every lineage check on MODEL_NAME vVERSION; promote to Staging if all pass.

    The champion comparison uses the metrics each version recorded on its own
    holdout (the holdout rows are not kept between runs).

    Args:
        model_name: the registered model's name.
        version: the version number to re-check, e.g. 3.
        workspace: the workspace git repo the version was trained from.
    """
    one_line_user_errors()  # a refusal reaches Prefect's UI as its one line
    no_collection_at_exit()
    logger = run_logger()
    bounded_http_retries()  # one line in seconds, not minutes of retries
    ws, uri = workspace_store(workspace)
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
    run_id = mv.tags.get("lineage.run_id") or mv.run_id
    record, _ = registry.load_lineage(uri, run_id)
    earlier = attested(uri, model_name, version)  # a signed version must still verify
    if earlier is not None and not earlier.ok:
        raise PromotionRefused(f"{model_name} v{version}: {earlier.line()}", version)
    if earlier is not None:
        logger.info(earlier.line())
    cfg = parse_params(record.get("params"), source=f"run {run_id} params")

    decision = promotion.decide(
        uri,
        model_name,
        version,
        run_id,
        ws.root,
        mv.source,
        in_progress=False,
        metrics=champion.holdout_metrics(uri, run_id),
        evaluate_cfg=cfg.evaluate,
        champion=champion.recorded_champion(uri, model_name, version),
        promote=True,
    )
    if decision.previous and decision.previous != version:
        explain(uri, model_name, decision, run_id, str(ws.root))
    message = decision.message(model_name)
    if earlier is not None:
        message += f" ({earlier.line()})"
    logger.info(message)
    promotion.refuse_if_failed(decision, model_name)
    return message


def promote_version(model_name: str, version: str, workspace: str | Path) -> str:
    return promote_model(
        model_name=model_name, version=version, workspace=str(workspace)
    )
