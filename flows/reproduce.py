"""reproduce-run: rebuild a past run from its recorded code, data and params.

Prefect's "Copy to new run" reruns a deployment with *today's* code and data;
this flow pins all three itself (see lineageflow.reproduce.reproduction): the workspace
at the recorded commit in a temp worktree or clone, the recorded DVC versions, and
the recorded lineageflow commit (run in a subprocess when it is not the code
running now). The user's working tree is never touched; nothing is registered.
"""

from __future__ import annotations

import math
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.pinned import run_recorded_code
from flows.training import run_stages
from lineageflow.attest.verify import attested_versions
from lineageflow.checkouts import has_commit, tree_at
from lineageflow.config import parse_params
from lineageflow.data.source import restore
from lineageflow.errors import LineageError, WorkspaceError
from lineageflow.lineage.checks import check_digest
from lineageflow.lineage.code import pipeline_state
from lineageflow.ops.procs import no_collection_at_exit
from lineageflow.registry.versions import load_lineage, recorded_metrics
from lineageflow.reproduce.reproduction import (
    Comparison,
    judge,
    resolve_run_id,
    validate_ref,
)
from lineageflow.runs.context import resolve_workspace
from lineageflow.runs.orchestration import one_line_user_errors, run_logger
from lineageflow.runs.store import (
    bounded_http_retries,
    client,
    run_url,
    tracking_uri_for,
)
from lineageflow.workspace import Workspace, open_workspace

ENTRYPOINT = "flows/reproduce.py:reproduce_run"


def _local_workspace(ws: Workspace | None, record: dict) -> Path | None:
    """The repo to make the worktree from; None means clone the recorded URL."""
    commit = record["workspace"]["commit"]
    if ws is not None:
        if not has_commit(ws.root, commit):
            raise WorkspaceError(
                f"recorded commit {commit[:12]} is not in {ws.root} (history "
                "rewritten?): restore it to reproduce this run"
            )
        return ws.root
    path = record["workspace"].get("path")
    return Path(path) if has_commit(path, commit) else None


def _rerun(tree: Path, record: dict, cfg, uri: str, run_id: str) -> str:
    """Run the stages again with the recorded pipeline code; return the new run id."""
    logger = run_logger()
    name, tags = f"reproduce-{run_id[:8]}", {"lineage.reproduction_of": run_id}
    then, now = record.get("pipeline", {}), pipeline_state()
    commit = then.get("commit")
    if commit and (commit != now["commit"] or now["dirty"]):
        local = next(
            (Path(p) for p in (now["path"], then.get("path")) if has_commit(p, commit)),
            None,
        )
        try:
            with tree_at(commit, local, then.get("repo"), "lineageflow") as code:
                return run_recorded_code(
                    code, tree, record, uri, name, tags, log=logger.info
                )
        except WorkspaceError as exc:  # the verdict will say the code was not pinned
            logger.warning("rerunning with the code at hand: %s", exc)
    result = run_stages(
        Workspace(tree),
        cfg,
        uri,
        register=False,
        run_name=name,
        extra_tags=tags,
        expect_data=record["data"],
        entrypoint=ENTRYPOINT,
        origin=record["workspace"],
    )
    return result.run_id


def _markdown(run_id: str, new_id: str, exp_id: str, uri: str, cmp: Comparison) -> str:
    def fmt(v):
        return "—" if v is None else f"{v:.10g}"

    def link(rid):
        return f"[{rid}]({run_url(uri, exp_id, rid)})"

    table = "\n".join(
        f"| `{k}` | {fmt(a)} | {fmt(b)} | {fmt(d)} |" for k, a, b, d in cmp.rows
    )
    notes = "".join(f"- {n}\n" for n in cmp.notes())
    return (
        f"## Reproduction: **{cmp.verdict}**\n\n"
        f"- original run: {link(run_id)}\n- reproduction: {link(new_id)}\n"
        + notes
        + "\n| metric | original | reproduction | abs diff |\n|---|---|---|---|\n"
        + table
        + "\n"
    )


@flow(name="reproduce-run", log_prints=True)
def reproduce_run(
    run_id: str, workspace: str | None = None, tolerance: float = 0.0
) -> dict:
    """Rebuild a past training run from its recorded code, data and params, and
    compare every metric (exact / within_tolerance / diverged / unpinned).

    Args:
        run_id: an MLflow parent run id, or models:/NAME/VERSION.
        workspace: the workspace git repo. Default: $LINEAGEFLOW_WORKSPACE, else
            the recorded one when it is on this machine, else a clone of its
            recorded URL.
        tolerance: largest absolute metric difference still called within_tolerance.
    """
    one_line_user_errors()  # a refusal reaches Prefect's UI as its one line
    no_collection_at_exit()
    logger = run_logger()
    bounded_http_retries()  # one line in seconds, not minutes of retries
    ref = validate_ref(run_id)  # before any git, DVC or MLflow call
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise LineageError(f"tolerance must be a finite number >= 0, got {tolerance}")
    named = resolve_workspace(workspace, hint=True)
    ws = open_workspace(named) if named else None
    uri = tracking_uri_for(ws.root if ws else None)
    run_id = resolve_run_id(ref, uri)
    record, tags = load_lineage(uri, run_id)
    intact = check_digest(record, tags)
    if not intact.passed:
        raise LineageError(f"run {run_id} cannot be reproduced: {intact.reason}")
    cfg = parse_params(record["params"], source=f"run {run_id} params")
    signed = [v.line() for v in attested_versions(uri, run_id)]
    for line in signed:
        logger.info(line)
    local = _local_workspace(ws, record)
    commit = record["workspace"]["commit"]
    with tree_at(commit, local, record["workspace"]["repo"], "workspace") as tree:
        restore(tree, record, main=local)
        new_id = _rerun(tree, record, cfg, uri, run_id)
    reproduced, _ = load_lineage(uri, new_id)
    cmp = judge(
        record,
        reproduced,
        recorded_metrics(uri, run_id),
        recorded_metrics(uri, new_id),
        tolerance,
    )
    c = client(uri)
    for rid, key, value in (
        (run_id, "lineage.reproduced_by", new_id),
        (run_id, "lineage.reproduction.verdict", cmp.line()[:5000]),
        (new_id, "lineage.reproduction.verdict", cmp.line()[:5000]),
        *(
            (rid, "lineage.reproduction.first_divergence", cmp.divergence[:5000])
            for rid in ((run_id, new_id) if cmp.divergence else ())
        ),
    ):
        c.set_tag(rid, key, value)
    exp_id = reproduced["mlflow"]["experiment_id"]
    create_markdown_artifact(
        _markdown(run_id, new_id, exp_id, uri, cmp),
        key="reproduction",
        description=f"reproduction of MLflow run {run_id}",
    )
    logger.info("reproduction of %s: %s", run_id, cmp.line())
    return {
        "run_id": run_id,
        "reproduction_run_id": new_id,
        "verdict": cmp.verdict,
        "metrics_verdict": cmp.metrics_verdict,
        "notes": signed + cmp.notes(),
        "code_note": "; ".join(cmp.causes),
        "first_divergence": cmp.divergence,
        "environment": cmp.environment,
        "metrics": {k: (a, b) for k, a, b, _ in cmp.rows},
    }
