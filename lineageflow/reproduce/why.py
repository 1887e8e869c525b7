"""Why a new version differs from the champion: at every promotion and every
refusal, ``lineageflow diff`` of the champion's run (A) and this run (B) —
code, data, params, environment and holdout metrics with their deltas — as
markdown for the Prefect artifact and the version's description in MLflow."""

from __future__ import annotations

from pathlib import Path

from lineageflow.errors import LineageflowError
from lineageflow.reproduce.diff import collect, render
from lineageflow.runs.store import client
from lineageflow.tags import TAG_RUN_ID

MARK = "### Why it differs from the champion"


def why_it_changed(
    tracking_uri: str,
    model_name: str,
    version: str,
    champion: str,
    run_id: str,
    workspace: Path | None,
) -> str:
    """The markdown section: champion ``champion`` (A) against this run (B)."""
    mv = client(tracking_uri).get_model_version(model_name, champion)
    champ_run = mv.tags.get(TAG_RUN_ID) or mv.run_id
    head = (
        f"{MARK} (v{champion})\n\n"
        f"`lineageflow diff` of the champion **v{champion}** (A, run `{champ_run}`) "
        f"and **v{version}** (B, run `{run_id}`); each run's metrics are on its own "
        "holdout.\n\n"
    )
    try:
        diff = collect(tracking_uri, champ_run, run_id, workspace=workspace)
    except LineageflowError as exc:  # e.g. the champion predates lineage.json
        return head + f"Not compared: {exc}\n"
    return head + "```\n" + render(diff) + "```\n"


def with_why(description: str | None, why: str) -> str:
    """The version's description with the section (replacing an earlier one)."""
    kept = (description or "").split(MARK, 1)[0].rstrip()
    return f"{kept}\n\n{why}" if kept else why
