"""Which registered versions an audit re-proves, what the last audit wrote on
each, and writing this audit's result: tags and the description's line, never
a stage or an alias.

The versions: of each model lineageflow registered (``lineageflow.managed``, or
the names given), the one in Staging and the last ``keep`` Archived ones that a
lineageflow promotion put there (``lineage.checks = passed``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime

from mlflow.exceptions import MlflowException

from lineageflow.audit.verdicts import Audited, description_line, description_with
from lineageflow.errors import LineageError
from lineageflow.runs.store import client, redact_uri, tracking_error
from lineageflow.tags import (
    TAG_AUDIT_AT,
    TAG_AUDIT_BASIS,
    TAG_AUDIT_CAUSE,
    TAG_AUDIT_REPRODUCTION,
    TAG_AUDIT_RUN,
    TAG_AUDIT_SINCE,
    TAG_AUDIT_VERDICT,
    TAG_CHECKS,
    TAG_MANAGED,
    TAG_PROMOTION_SHA256,
    TAG_RUN_ID,
    TAG_WORKSPACE_REPO,
)

STAGES = ("Staging", "Archived")


@dataclass(frozen=True)
class Selection:
    """The versions to audit, model by model, and a line per model skipped."""

    versions: list  # MLflow ModelVersions, Staging first, then newest archived
    skipped: list[str]


def select(uri: str, models: list[str] | None, keep: int) -> Selection:
    """The versions to audit. Names given by hand are refused in one line when
    one is not registered or has no version lineageflow registered."""
    c = client(uri)
    if models:
        names = list(dict.fromkeys(models))
        for name in names:
            _known(c, uri, name)
    else:
        found = c.search_registered_models(max_results=1000)
        names = sorted(m.name for m in found if m.tags.get(TAG_MANAGED) == "true")
    chosen, skipped = [], []
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stages are deprecated (FutureWarning)
            every = c.search_model_versions(f"name = '{name}'")
        ours = [mv for mv in every if mv.tags.get(TAG_RUN_ID)]
        if not ours and models:
            raise LineageError(
                f"model '{name}' has no version lineageflow registered (no "
                f"{TAG_RUN_ID} tag on any of its {len(every)}): audit the models "
                "lineageflow trains, or leave this name out"
            )
        promoted = [mv for mv in ours if _promoted(mv)]
        staged = [mv for mv in promoted if mv.current_stage == "Staging"]
        archived = sorted(
            (mv for mv in promoted if mv.current_stage == "Archived"),
            key=lambda mv: int(mv.version),
            reverse=True,
        )
        picked = _by_version(staged) + archived[:keep]
        if not picked:
            skipped.append(
                f"{name}: no version a lineageflow promotion put in Staging or Archived"
            )
        chosen += picked
    return Selection(chosen, skipped)


def _known(c, uri: str, name: str) -> None:
    try:
        c.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise tracking_error(uri, exc, f"could not read model '{name}'") from None
        found = c.search_registered_models(max_results=1000)
        ours = sorted(m.name for m in found if m.tags.get(TAG_MANAGED) == "true")
        raise LineageError(
            f"model '{name}' is not registered in the MLflow store at "
            f"{redact_uri(uri)}: lineageflow's models there: "
            + (", ".join(ours) or "none yet")
        ) from None


def _promoted(mv) -> bool:
    """Put in Staging by a lineageflow promotion (which signs: a version whose
    checks passed but that was never promoted has no promotion statement)."""
    return (
        mv.current_stage in STAGES
        and mv.tags.get(TAG_CHECKS) == "passed"
        and bool(mv.tags.get(TAG_PROMOTION_SHA256))
    )


def _by_version(mvs: list) -> list:
    return sorted(mvs, key=lambda mv: int(mv.version), reverse=True)


def recorded_elsewhere(uri: str, mv, here: frozenset[str]) -> str | None:
    """One line when ``mv``'s run was trained in another workspace than the
    one audited (a shared tracking server): that workspace's audit re-proves
    it, with its repository, DVC remotes and workers. None: this workspace's."""
    run_id = mv.tags.get(TAG_RUN_ID) or mv.run_id
    try:
        repo = client(uri).get_run(run_id).data.tags.get(TAG_WORKSPACE_REPO)
    except MlflowException:
        return None  # a deleted or unreadable run: the offline checks say so
    if repo is None or repo in here:
        return None
    return f"{mv.name} v{mv.version}: trained in workspace {repo}; its own audit re-proves it"


def last_audit(mv) -> dict[str, str | None]:
    """What the last audit wrote on ``mv``: verdict, basis, audits since a rebuild."""
    return {
        "verdict": mv.tags.get(TAG_AUDIT_VERDICT),
        "basis": mv.tags.get(TAG_AUDIT_BASIS),
        "since": mv.tags.get(TAG_AUDIT_SINCE),
        "reproduction": mv.tags.get(TAG_AUDIT_REPRODUCTION),
    }


def write(uri: str, a: Audited, at: datetime, flow_run_id: str | None) -> None:
    """The verdict on the version: its tags, then the description's line."""
    c = client(uri)
    mv = c.get_model_version(a.model, a.version)
    c.update_model_version(
        a.model, a.version, description_with(mv.description, description_line(at, a))
    )
    tags = {
        TAG_AUDIT_BASIS: a.basis or "",
        TAG_AUDIT_SINCE: str(a.since),
        TAG_AUDIT_CAUSE: a.cause[:5000],
        TAG_AUDIT_AT: at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        TAG_AUDIT_RUN: flow_run_id or "",
        **({TAG_AUDIT_REPRODUCTION: a.reproduction} if a.reproduction else {}),
        TAG_AUDIT_VERDICT: a.verdict,  # last: it is what the next audit compares
    }
    for key, value in tags.items():
        c.set_model_version_tag(a.model, a.version, key, value)
