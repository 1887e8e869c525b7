"""The promotion decision: the lineage checks, the quality gate and the champion,
then None -> Staging only if every one passed. The one module that decides.

One promotion at a time per model: a Prefect global concurrency limit across
machines (when a Prefect server is in use) and an exclusive file lock on this
machine, held around read-champion -> decide -> write, so two flows cannot both
believe they beat the same champion.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lineageflow.config import EvaluateConfig
from lineageflow.errors import PromotionRefused
from lineageflow.lineage import record as lineage
from lineageflow.lineage import report
from lineageflow.lineage.record import Check
from lineageflow.model import ml
from lineageflow.registry import versions as registry
from lineageflow.registry.versions import (
    STAGING_ALIAS,
    TAG_CHECK_PREFIX,
    TAG_CHECKS,
    current_staging,
)
from lineageflow.runs.tracking import client, redact_uri


@contextlib.contextmanager
def promotion_slot(model_name: str) -> Iterator[None]:
    """One promotion per model across machines, via a Prefect global concurrency
    limit of 1 when a Prefect server is in use (the file lock in
    ``promotion_lock`` covers one machine and the ephemeral API)."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        yield
        return
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = f"lineageflow-promote-{model_name}"
    with get_client(sync_client=True) as pc:
        try:
            pc.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            # a missing limit would make `concurrency` a silent no-op
            with contextlib.suppress(ObjectAlreadyExists):
                pc.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    with concurrency(name, occupy=1, timeout_seconds=900, strict=True):
        yield


@contextlib.contextmanager
def promotion_lock(tracking_uri: str, model_name: str) -> Iterator[None]:
    """Exclusive, cross-process lock for one model's promotions on this machine.

    The lock file sits next to a sqlite store (whose users share a filesystem)
    or in the temp dir for a server; runs spread across machines additionally
    go through a Prefect global concurrency limit (see tasks/registry.py).
    """
    key = hashlib.sha256(
        f"{redact_uri(tracking_uri)}|{model_name}".encode()
    ).hexdigest()[:16]
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        base = Path(tracking_uri.removeprefix("sqlite:///")).parent
    else:
        base = Path(tempfile.gettempdir())
    path = base / f".lineageflow-promote-{key}.lock"
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Decision:
    version: str
    promoted: bool
    checks: list[Check]
    previous: str | None
    # the Staging version whose model has this run's model digest: nothing was
    # registered and nothing was checked (the champion stays as it is)
    identical_to: str | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def message(self, model_name: str) -> str:
        if self.identical_to:
            return (
                f"{model_name}: identical to v{self.identical_to}, the Staging "
                "version (the same model, or a fit of the same train table, params, "
                "code and libraries): nothing registered"
            )
        if self.promoted:
            return f"{model_name} v{self.version} promoted to Staging"
        return f"{model_name} v{self.version} stays in None: " + lineage.summary_line(
            self.failed
        )


def apply_decision(
    tracking_uri: str,
    model_name: str,
    version: str,
    checks: list[Check],
    promote: bool,
    description=None,
    record: dict | None = None,
) -> Decision:
    """Write the checks onto the version, then promote only if every one passed.

    Order matters for "no half-promoted model": each check's tag first (so a
    version in Staging always says why), then stage, then alias, and only then
    ``lineage.checks=passed``: a version that did not reach Staging never says
    it passed. ``description(record, checks, promoted)`` writes the markdown the
    registry page shows.
    """
    c = client(tracking_uri)
    failed = [ch for ch in checks if not ch.passed]
    for ch in checks:
        c.set_model_version_tag(
            model_name, version, TAG_CHECK_PREFIX + ch.name, ch.tag_value()[:5000]
        )
    will_promote = promote and not failed
    if description is not None and record is not None:
        c.update_model_version(
            model_name, version, description=description(record, checks, will_promote)
        )
    previous = current_staging(tracking_uri, model_name)
    if failed or not promote:
        c.set_model_version_tag(
            model_name, version, TAG_CHECKS, "failed" if failed else "passed"
        )
        if failed:
            c.set_model_version_tag(
                model_name,
                version,
                "lineage.failed_checks",
                ",".join(ch.name for ch in failed),
            )
        return Decision(version, False, checks, previous)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # stages are deprecated but still the UI's Staging
        _archive_staging(c, model_name, keep=version)
        c.transition_model_version_stage(
            model_name, version, "Staging", archive_existing_versions=False
        )
    c.set_registered_model_alias(model_name, STAGING_ALIAS, version)
    c.set_model_version_tag(model_name, version, TAG_CHECKS, "passed")
    return Decision(version, True, checks, previous)


def _archive_staging(c, model_name: str, keep: str) -> None:
    """Move every other Staging version to Archived, one by one.

    Not ``archive_existing_versions=True``: an MLflow 3.17 server on PostgreSQL
    with psycopg 3 compares the version column with a string there and fails
    ("operator does not exist: integer <> character varying",
    https://github.com/mlflow/mlflow/issues/24592; reproduced here). Done under
    the promotion lock, so no other promotion interleaves.
    """
    found = c.search_model_versions(f"name = '{model_name}'")
    for mv in found:
        if mv.current_stage == "Staging" and str(mv.version) != str(keep):
            c.transition_model_version_stage(model_name, mv.version, "Archived")
            c.update_model_version(
                model_name,
                mv.version,
                description=report.archived_description(mv.description, keep),
            )


def identical_champion(
    tracking_uri: str, model_name: str, digest: str, train_key: str | None = None
) -> str | None:
    """The Staging version this run's model is identical to, if any: the same
    model file (digest), or a fit of the same train stage key (the same input
    table, train params, code and libraries; a refit's pickle bytes may differ
    while the model is the same function of its inputs).

    A retrain on the same commit, data and params makes the very same model:
    registering it again would add a duplicate version and, on a tie, archive
    the champion for itself."""
    version = current_staging(tracking_uri, model_name) if digest else None
    if version is None:
        return None
    their_digest, their_key = registry.version_identity(
        tracking_uri, model_name, version
    )
    same_fit = train_key is not None and their_key == train_key
    return version if (their_digest == digest or same_fit) else None


def refuse_if_failed(decision: Decision, model_name: str) -> None:
    """Fail the flow run when a check failed; a tie with the champion only keeps
    the champion (the version stays in None, tagged why), it is no error."""
    if decision.failed and not all(c.tie for c in decision.failed):
        raise PromotionRefused(decision.message(model_name), version=decision.version)


def score_champion(tracking_uri: str, model_name: str, split: ml.Split):
    """Score the current Staging version on *this* holdout (same rows, same labels)."""
    version = current_staging(tracking_uri, model_name)
    if version is None:
        return None, None
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    model = registry.load_native(f"models:/{model_name}/{version}")
    try:
        return ml.score(model, split.X_test, split.y_test, split.task), version
    except Exception as exc:  # e.g. the feature set changed between versions
        raise ValueError(
            f"Staging v{version} cannot score this holdout ({type(exc).__name__}: {exc})"
        ) from exc


def gate(
    metrics: dict[str, float],
    cfg: EvaluateConfig,
    champion: Callable[[], tuple[dict[str, float] | None, str | None]],
) -> list[Check]:
    """The quality threshold, then champion/challenger (``champion()`` gives the
    Staging version's metrics to beat, or raises ValueError when it cannot)."""
    try:
        best, version = champion()
        return ml.quality_gate(metrics, cfg, best, version)
    except ValueError as exc:
        return ml.quality_gate(metrics, cfg)[:1] + [
            Check("champion", False, f"{exc}: promote by hand if intended")
        ]


def decide(
    tracking_uri: str,
    model_name: str,
    version: str,
    run_id: str,
    workspace: Path,
    model_uri: str | None,
    *,
    in_progress: bool,
    metrics: dict[str, float],
    evaluate_cfg: EvaluateConfig,
    champion: Callable[[], tuple[dict[str, float] | None, str | None]],
    promote: bool,
) -> Decision:
    """Every check on the *stored* record (an edit since the run is caught), the
    gate, and the decision written onto the version: one promotion at a time."""
    with promotion_slot(model_name), promotion_lock(tracking_uri, model_name):
        record, tags = registry.load_lineage(tracking_uri, run_id)
        checks = lineage.run_checks(
            record,
            tags,
            registry.LiveEvidence(workspace),
            registry.runs_check(
                tracking_uri, record, model_uri, in_progress=in_progress
            ),
        )
        checks += gate(metrics, evaluate_cfg, champion)
        return apply_decision(
            tracking_uri,
            model_name,
            version,
            checks,
            promote,
            description=report.version_description,
            record=record,
        )
