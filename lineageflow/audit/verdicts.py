"""An audit's verdicts, pure: what a version's findings and its reproduction
add up to, when the audit rebuilds it, and how a verdict is written (the
version's description line, the change event, the Prefect artifact's table).

Verdicts, most serious first: ``tampered`` (a stored model file, statement or
the lineage record no longer matches what was signed or recorded),
``unreproducible`` (a recorded data version or commit is gone, the run was
deleted, or the rebuild failed for a reason that names it), ``unverifiable``
(a store or remote did not answer: nothing is known), then the rebuild's own:
``diverged``, ``within`` (metrics within ``audit.tolerance``), ``exact``.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from lineageflow.lineage.code import code_id
from lineageflow.tags import (
    AUDIT_CHANGED_EVENT,
    LABEL_AUDIT_VERDICT,
    LABEL_MODEL,
    LABEL_WORKSPACE,
    RESOURCE_MODEL_VERSION_PREFIX,
)

EXACT, WITHIN, DIVERGED = "exact", "within", "diverged"
TAMPERED, UNREPRODUCIBLE, UNVERIFIABLE = "tampered", "unreproducible", "unverifiable"
SEVERITY = (TAMPERED, UNREPRODUCIBLE, UNVERIFIABLE, DIVERGED, WITHIN, EXACT)
# reproduce-run's verdicts (lineageflow.reproduce.reproduction.judge) as the
# audit's: code a rebuild could not pin is a rebuild that diverged from the record
FROM_REPRODUCTION = {
    "exact": EXACT,
    "within_tolerance": WITHIN,
    "diverged": DIVERGED,
    "unpinned": DIVERGED,
}
AUDIT_LINE = re.compile(r"^audited \d{4}-\d{2}-\d{2}: .*$", re.MULTILINE)
HISTORY = 5  # audit lines a description keeps: about a month of weekly audits
DESCRIPTION_MAX = 5000  # MLflow's limit on a model version's description
_NAMESPACE = uuid.UUID("0b6c8f43-5a1e-4d0c-9a43-2f9e5d1c7e21")


@dataclass(frozen=True)
class Finding:
    """One thing an audit found wrong with a version, and why."""

    verdict: str
    cause: str


@dataclass(frozen=True)
class Audited:
    """One version's audit: its verdict, the one before, and how it was reached."""

    model: str
    version: str
    stage: str
    run_id: str | None
    verdict: str
    cause: str
    previous: str | None  # the verdict the last audit wrote; None: first audit
    reproduced: bool  # rebuilt this time (else: offline checks only)
    since: int  # audits since its last rebuild, this one included
    basis: str | None = None
    reproduction: str | None = None  # the rebuild's MLflow run id

    @property
    def changed(self) -> bool:
        """A verdict that differs from the last audit's; a first audit changes
        nothing when it confirms what the promotion claimed (exact)."""
        if self.previous is None:
            return self.verdict != EXACT
        return self.verdict != self.previous

    def line(self) -> str:
        how = "rebuilt" if self.reproduced else "offline checks"
        why = f": {self.cause}" if self.cause else ""
        return (
            f"{self.model} v{self.version} ({self.stage}): {self.verdict} ({how}){why}"
        )


def worst(findings: list[Finding]) -> Finding | None:
    """The most serious finding; its cause lists every finding of that verdict."""
    if not findings:
        return None
    top = min(findings, key=lambda f: SEVERITY.index(f.verdict))
    same = [f.cause for f in findings if f.verdict == top.verdict]
    return Finding(top.verdict, "; ".join(dict.fromkeys(same)))


def from_reproduction(summary: dict) -> Finding:
    """reproduce-run's result as a finding: the verdict and, when it is not
    exact, the first diverging stage, the code causes and environment changes."""
    verdict = FROM_REPRODUCTION.get(summary.get("verdict"), DIVERGED)
    if verdict == EXACT:
        return Finding(EXACT, "")
    parts = [summary.get("first_divergence"), summary.get("code_note")]
    env = summary.get("environment") or []
    if env:
        parts.append("environment differs: " + ", ".join(env))
    cause = "; ".join(p for p in parts if p) or (
        f"metrics {summary.get('metrics_verdict')}"
    )
    return Finding(verdict, cause)


def basis(model_sha256: str | None, record: dict, environment_now: dict) -> str:
    """sha256 of what a rebuild depends on: the model's digest, the recorded
    data versions and commits, and the environment the audit runs in now. The
    same basis as at the last exact rebuild: no rebuild is due yet."""
    code = [
        record.get("workspace", {}).get("commit"),
        record.get("pipeline", {}).get("commit"),
        *sorted(code_id(c) or "" for c in record.get("user_code") or []),
    ]
    blob = json.dumps(
        {
            "model": model_sha256,
            "data": sorted((d.get("path"), d.get("md5")) for d in record["data"]),
            "code": code,
            "environment": environment_now,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def rebuild_due(last: dict[str, str | None], basis_now: str, every: int) -> bool:
    """Rebuild unless the last audit was ``exact`` on this very basis and fewer
    than ``every`` audits ran since its last rebuild (this one counted)."""
    if last.get("verdict") != EXACT or last.get("basis") != basis_now:
        return True
    try:
        since = int(last.get("since") or 0)
    except ValueError:
        return True
    return since + 1 >= every


def description_with(description: str | None, line: str, keep: int = HISTORY) -> str:
    """The version's description with the audit's line appended after the
    last ``keep - 1`` audits' lines (older ones dropped), everything else the
    description says kept above them, whole; within MLflow's 5000 characters."""
    text = description or ""
    past = AUDIT_LINE.findall(text)[-(keep - 1) :] if keep > 1 else []
    rest = re.sub(r"\n{3,}", "\n\n", AUDIT_LINE.sub("", text)).rstrip()
    while past and len(rest) + len("\n".join([*past, line])) >= DESCRIPTION_MAX:
        past.pop(0)  # the oldest audit goes first; the description itself never
    room = DESCRIPTION_MAX - len(rest) - 1
    lines = "\n".join([*past, line[: max(room, 0)]])
    return f"{rest}\n{lines}" if rest else lines


def description_line(at: datetime, audited: Audited) -> str:
    """One line: ``audited 2026-12-06: exact`` (a cause cut to 300 characters)."""
    cause = " ".join(audited.cause.split())
    why = f" ({cause[:300]}{'…' if len(cause) > 300 else ''})" if cause else ""
    return f"audited {at:%Y-%m-%d}: {audited.verdict}{why}"


def event(audited: Audited, workspace: str, flow_run_id: str | None) -> dict:
    """``lineageflow.audit.changed`` for one version, for Prefect's ``POST
    /events``: one id per audit run and version, so a resend is dropped."""
    a = audited
    return {
        "id": str(uuid.uuid5(_NAMESPACE, f"{flow_run_id}/{a.model}/{a.version}")),
        "occurred": datetime.now(UTC).isoformat(),
        "event": AUDIT_CHANGED_EVENT,
        "resource": {
            "prefect.resource.id": f"{RESOURCE_MODEL_VERSION_PREFIX}{a.model}/{a.version}",
            "prefect.resource.name": f"{a.model} v{a.version}",
            LABEL_MODEL: a.model,
            LABEL_WORKSPACE: workspace,
            LABEL_AUDIT_VERDICT: a.verdict,
        },
        "related": (
            [
                {
                    "prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                    "prefect.resource.role": "flow-run",
                }
            ]
            if flow_run_id
            else []
        ),
        "payload": {
            "model": a.model,
            "version": a.version,
            "stage": a.stage,
            "run_id": a.run_id,
            "old_verdict": a.previous,
            "new_verdict": a.verdict,
            "cause": a.cause,
            "reproduced": a.reproduced,
        },
    }


def markdown(audited: list[Audited], at: datetime, refused: list[str]) -> str:
    """The ``audit`` artifact: one row per version, the changes first in bold."""

    def cell(text: str | None) -> str:
        return (text or "—").replace("|", "\\|").replace("\n", " ")

    rows = [
        f"| `{a.model}` | {a.version} | {a.stage} | "
        + (f"**{a.verdict}**" if a.changed else a.verdict)
        + f" | {cell(a.previous)} | {'rebuilt' if a.reproduced else 'offline'} "
        f"| {cell(a.cause)} |"
        for a in audited
    ]
    changed = sum(a.changed for a in audited)
    head = (
        f"## Registry audit {at:%Y-%m-%d %H:%M} UTC: {len(audited)} version(s), "
        f"{changed} changed\n\n"
    )
    notes = "".join(f"- {line}\n" for line in refused)
    table = (
        "| model | version | stage | verdict | was | how | cause |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    return head + (notes + "\n" if notes else "") + table
