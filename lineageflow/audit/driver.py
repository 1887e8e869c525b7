"""The audit driver: what audit-registry does for each version (flows/audit.py
composes these steps). Offline checks every time; a rebuild (reproduce-run,
handed in by the flow: the library never imports ``flows/``) when one is due;
the verdict written on the version; the changes as events; the table.

A failure is a verdict for that version, never the end of the audit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lineageflow.audit import registry
from lineageflow.audit.offline import Offline, check_version, environment_now
from lineageflow.audit.verdicts import (
    EXACT,
    UNREPRODUCIBLE,
    UNVERIFIABLE,
    Audited,
    Finding,
    basis,
    from_reproduction,
    rebuild_due,
    worst,
)
from lineageflow.errors import (
    LineageflowError,
    OrchestratorError,
    RemoteUnreachable,
    TrackingError,
    one_line,
)
from lineageflow.runs.orchestration import run_logger
from lineageflow.tags import TAG_RUN_ID

# (run id, workspace or None for the recorded one, tolerance) -> reproduce-run's result
Rebuild = Callable[[str, str | None, float], dict]


@dataclass(frozen=True)
class Plan:
    """One audit run's settings and what it needs at hand."""

    uri: str
    root: Path  # the workspace the audit runs for
    here: frozenset[str]  # the names its runs record it by (path, origin URL)
    rebuild: Rebuild
    every: int  # audit.reproduce_every
    tolerance: float
    at: datetime
    flow_run_id: str | None


def audit_versions(plan: Plan, versions: list) -> tuple[list[Audited], list[str]]:
    """Each version's verdict, one at a time, in order (nothing written yet:
    ``write_verdicts``); and a line per version another workspace trained."""
    try:
        env = environment_now()
    except Exception as exc:  # noqa: BLE001 - then every version is rebuilt
        run_logger().warning("environment not read (%s): rebuilding", one_line(exc))
        env = {"unread": one_line(exc)}
    out, elsewhere = [], []
    for mv in versions:
        line = registry.recorded_elsewhere(plan.uri, mv, plan.here)
        if line:
            elsewhere.append(line)
            continue
        audited = audit_one(plan, mv, env)
        run_logger().info(audited.line())
        out.append(audited)
    return out, elsewhere


def write_verdicts(plan: Plan, audited: list[Audited]) -> list[str]:
    """Each verdict on its version (after its event went out); a line per
    version it could not be written on (the next audit compares again)."""
    failed = []
    for a in audited:
        try:
            registry.write(plan.uri, a, plan.at, plan.flow_run_id)
        except Exception as exc:  # noqa: BLE001 - the table still shows it
            failed.append(
                f"{a.model} v{a.version}: verdict not written ({one_line(exc)})"
            )
            run_logger().warning(failed[-1])
    return failed


def audit_one(plan: Plan, mv, env: dict) -> Audited:
    last = registry.last_audit(mv)
    since = _int(last.get("since"))
    stage = mv.current_stage
    try:
        off = check_version(plan.uri, mv, plan.root)
        base = basis(off.model_sha256, off.record, env) if off.record else None
    except Exception as exc:  # noqa: BLE001 - a verdict, not a crash
        off = Offline(None, findings=[Finding(UNVERIFIABLE, one_line(exc))])
        base = None

    def result(found: Finding, rebuilt: bool, reproduction=None) -> Audited:
        return Audited(
            mv.name,
            str(mv.version),
            stage,
            off.run_id or mv.tags.get(TAG_RUN_ID) or mv.run_id,
            found.verdict,
            found.cause,
            last.get("verdict"),
            rebuilt,
            0 if rebuilt else since + 1,
            base,
            reproduction or last.get("reproduction"),
        )

    found = worst(off.findings)
    if found is not None:
        return result(found, False)
    if not rebuild_due(last, base, plan.every):
        return result(Finding(EXACT, ""), False)
    found, reproduction = _rebuild(plan, off, mv)
    return result(found, True, reproduction)


def _rebuild(plan: Plan, off: Offline, mv) -> tuple[Finding, str | None]:
    """reproduce-run on the version's run, as a finding. A refusal that names
    what is missing is ``unreproducible``; a store that does not answer,
    ``unverifiable``."""
    recorded = Path(off.record["workspace"].get("path") or "")
    here = str(plan.root) if recorded == plan.root else None
    try:
        summary = plan.rebuild(off.run_id, here, plan.tolerance)
    except (TrackingError, OrchestratorError, RemoteUnreachable) as exc:
        return Finding(UNVERIFIABLE, f"rebuild: {exc}"), None
    except LineageflowError as exc:
        return Finding(UNREPRODUCIBLE, f"rebuild refused: {exc}"), None
    except Exception as exc:  # noqa: BLE001 - a store, a remote, a worker gone
        return Finding(UNVERIFIABLE, f"rebuild failed: {one_line(exc)}"), None
    return from_reproduction(summary), summary.get("reproduction_run_id")


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
