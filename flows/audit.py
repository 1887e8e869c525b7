"""audit-registry: re-prove every model lineageflow promoted, on a schedule.

For each registered model lineageflow promoted, the Staging version and the last
``audit.keep`` archived ones: the offline checks every time (signature and
statements as ``lineageflow verify``, each recorded data version still readable
from its remote, each recorded commit still there), and a rebuild by run id
(reproduce-run, as a subflow) when one is due. Each verdict goes on its version
(tags ``lineage.audit.*`` and the description's last line), into the ``audit``
artifact, and, when it changed, into a ``lineageflow.audit.changed`` event. It
holds the workspace's retrain slot; it never changes a stage or an alias.
The steps are lineageflow.audit's.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.reproduce import reproduce_run
from lineageflow.audit.driver import Plan, audit_versions, write_verdicts
from lineageflow.audit.registry import select
from lineageflow.audit.verdicts import event, markdown
from lineageflow.errors import ConfigError
from lineageflow.retrain.events import send
from lineageflow.retrain.queue import one_at_a_time
from lineageflow.runs.context import resolve_workspace, settings
from lineageflow.runs.flowstart import flow_setup
from lineageflow.runs.orchestration import orchestration_info
from lineageflow.workspace import origin_url


def _rebuild(run_id: str, workspace: str | None, tolerance: float) -> dict:
    return reproduce_run(run_id=run_id, workspace=workspace, tolerance=tolerance)


@flow(name="audit-registry", log_prints=True)
def audit_registry(
    workspace: str | None = None,
    models: list[str] | None = None,
    keep: int | None = None,
    reproduce_every: int | None = None,
) -> dict:
    """Re-prove each promoted model version: verify it offline, check its data
    and commits are still there, rebuild it when due; write the verdict on the
    version and send `lineageflow.audit.changed` when it changed.

    Args:
        workspace: the workspace git repo (default: $LINEAGEFLOW_WORKSPACE).
        models: registered model names (default: every model lineageflow
            registered in the workspace's MLflow store).
        keep: archived versions audited per model (default: params.yaml
            audit.keep, 2).
        reproduce_every: rebuild a version that is unchanged since its last
            exact rebuild every this many audits (default: audit.reproduce_every, 4).
    """
    logger = flow_setup()
    label = resolve_workspace(workspace)
    ws, cfg, uri = settings(label)
    keep = cfg.audit.keep if keep is None else keep
    every = cfg.audit.reproduce_every if reproduce_every is None else reproduce_every
    if keep < 0 or every < 1:
        raise ConfigError(
            f"keep must be >= 0 and reproduce_every >= 1 (got {keep}, {every})"
        )
    at = datetime.now(UTC)
    run = orchestration_info()["flow_run_id"]
    here = frozenset(p for p in (str(ws.root), origin_url(ws.git())) if p)
    with one_at_a_time(ws.root):  # never alongside a triggered or nightly retrain
        chosen = select(uri, models, keep)
        plan = Plan(uri, ws.root, here, _rebuild, every, cfg.audit.tolerance, at, run)
        audited, elsewhere = audit_versions(plan, chosen.versions)
        skipped = chosen.skipped + elsewhere
        for line in skipped:
            logger.info("not audited: %s", line)
        create_markdown_artifact(
            markdown(audited, at, skipped),
            key="audit",
            description="registry audit: each promoted version's verdict",
        )
        # the events before the verdicts: a change whose event did not go out
        # is still a change at the next audit
        changed = [a for a in audited if a.changed]
        send(
            [event(a, label, run) for a in changed],
            again="no verdict was written, so the next audit sends them again",
        )
        write_verdicts(plan, audited)
    return {
        "audited": {f"{a.model}/{a.version}": a.verdict for a in audited},
        "changed": [f"{a.model}/{a.version}" for a in changed],
        "rebuilt": [f"{a.model}/{a.version}" for a in audited if a.reproduced],
        "causes": {f"{a.model}/{a.version}": a.cause for a in audited if a.cause},
        "skipped": skipped,
    }
