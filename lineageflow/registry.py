"""Model registry: register a version, gather evidence, run the checks, promote.

MLflow 3 keeps stages (deprecated since 2.9, hidden in the new UI) and recommends
aliases, so a promotion does both: stage Staging (archiving the previous one)
*and* alias ``staging`` on the same version. One promotion at a time per model:
an exclusive file lock held across processes around read-champion → decide →
write, so two flows cannot both believe they beat the same champion.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lineageflow import lineage
from lineageflow.errors import LineageError, PromotionRefused
from lineageflow.lineage import Check
from lineageflow.tracking import client, redact_uri
from lineageflow.workspace import SHA_RE

STAGING_ALIAS = "staging"
TAG_CHECKS = "lineage.checks"
TAG_CHECK_PREFIX = "lineage.check."


# ---------------------------------------------------------------- evidence


class LiveEvidence:
    """Answers the checks' questions from the real workspace repo and DVC remote."""

    def __init__(self, workspace_root: Path):
        import git

        self.root = workspace_root
        self.git = git.Repo(workspace_root)

    def commit_exists(self, commit: str) -> bool:
        import git

        if not SHA_RE.match(commit or ""):
            return False
        try:
            self.git.git.cat_file("-e", f"{commit}^{{commit}}")
            return True
        except git.GitCommandError:
            return False

    def dvc_md5_at(self, commit: str, dvc_file: str) -> str | None:
        import git

        from lineageflow.dvcio import md5_in_dvc_text

        if not self.commit_exists(commit) or not _safe_relpath(dvc_file):
            return None
        try:
            return md5_in_dvc_text(self.git.git.show(f"{commit}:{dvc_file}"))
        except git.GitCommandError:
            return None

    def in_remote(self, entry: dict) -> bool:
        from lineageflow.dvcio import in_remote_now

        return in_remote_now(self.root, entry.get("remote"), entry["md5"])


def _safe_relpath(p: str) -> bool:
    pure = Path(p)
    return (
        bool(p)
        and not pure.is_absolute()
        and ".." not in pure.parts
        and not p.startswith("-")
    )


# ---------------------------------------------------------------- reading runs


def load_lineage(tracking_uri: str, run_id: str) -> tuple[dict, dict[str, str]]:
    """The ``lineage.json`` artifact and the tags of a parent run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise LineageError(
            f"MLflow run {run_id} does not exist in {redact_uri(tracking_uri)}: "
            "check the run id and MLFLOW_TRACKING_URI"
        ) from None
    tags = dict(run.data.tags)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path="lineage.json",
                dst_path=tmp,
                tracking_uri=tracking_uri,
            )
            record = json.loads(Path(local).read_text())
    except (MlflowException, OSError, json.JSONDecodeError):
        raise LineageError(
            f"MLflow run {run_id} has no readable lineage.json: it was not made by "
            "the training-pipeline flow"
        ) from None
    return record, tags


def runs_check(
    tracking_uri: str, record: dict, model_uri: str | None, in_progress: bool
) -> Check:
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    from lineageflow.tracking import TAG_STAGE, child_runs

    mids = record["mlflow"]
    c = client(tracking_uri)
    parent = c.get_run(mids["parent_run_id"])
    children: dict[str, list[str]] = {}
    for run in child_runs(tracking_uri, mids["experiment_id"], mids["parent_run_id"]):
        stage = run.data.tags.get(TAG_STAGE, "")
        children.setdefault(stage, []).append(run.info.status)
    has_model = has_sig = False
    if model_uri:
        try:
            info = get_model_info(model_uri)
            has_model, has_sig = True, info.signature is not None
        except (MlflowException, OSError):
            pass
    return lineage.check_runs_complete(
        parent.info.status, children, has_model, has_sig, parent_in_progress=in_progress
    )


# ---------------------------------------------------------------- registry


def register_version(
    tracking_uri: str,
    model_name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
):
    """Create a version (stage None) carrying the lineage summary as tags."""
    c = client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(model_name)
    except MlflowException:
        c.create_registered_model(model_name, tags={"lineageflow.managed": "true"})
    # MLflow 3 logged models live at models:/m-<id>; a tracking *server* refuses
    # that source unless model_id names it too (a sqlite store does not check).
    model_id = (
        model_uri.removeprefix("models:/")
        if model_uri.startswith("models:/m-")
        else None
    )
    mv = c.create_model_version(
        model_name, model_uri, run_id=run_id, tags=tags, model_id=model_id
    )
    return str(mv.version)


def current_staging(tracking_uri: str, model_name: str) -> str | None:
    """The version behind alias ``staging`` (falling back to the Staging stage)."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        return str(c.get_model_version_by_alias(model_name, STAGING_ALIAS).version)
    except MlflowException:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = c.search_model_versions(f"name = '{model_name}'")
    staged = [mv for mv in found if mv.current_stage == "Staging"]
    return str(max(int(mv.version) for mv in staged)) if staged else None


def load_native(model_uri: str):
    """Load a model with its own flavor so ``predict_proba`` is available."""
    import mlflow
    from mlflow.models import get_model_info

    flavors = get_model_info(model_uri).flavors
    if "xgboost" in flavors:
        return mlflow.xgboost.load_model(model_uri)
    if "sklearn" in flavors:
        return mlflow.sklearn.load_model(model_uri)
    raise LineageError(f"{model_uri} has neither an xgboost nor a sklearn flavor")


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

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def message(self, model_name: str) -> str:
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
        c.transition_model_version_stage(
            model_name, version, "Staging", archive_existing_versions=True
        )
    c.set_registered_model_alias(model_name, STAGING_ALIAS, version)
    c.set_model_version_tag(model_name, version, TAG_CHECKS, "passed")
    return Decision(version, True, checks, previous)


def refuse_if_failed(decision: Decision, model_name: str) -> None:
    if decision.failed:
        raise PromotionRefused(decision.message(model_name), version=decision.version)
