"""reproduce-run: rebuild a past run from its recorded code, data and params.

Prefect's "Copy to new run" reruns a deployment with *today's* code and data;
this flow pins all three itself (see lineageflow.reproduce.reproduction): the workspace at
the recorded commit in a temp worktree or clone, the recorded DVC versions, and
the recorded lineageflow commit (run in a subprocess when it is not the code
running now). The user's working tree is never touched; nothing is registered.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from prefect import flow, get_run_logger

from lineageflow.config import parse_params
from lineageflow.errors import LineageError, WorkspaceError
from lineageflow.lineage import record as lineage
from lineageflow.lineage.code import pipeline_state
from lineageflow.registry.versions import load_lineage
from lineageflow.reproduce.reproduction import (
    Comparison,
    has_commit,
    judge,
    prepare_dvc,
    resolve_run_id,
    tree_at,
    validate_ref,
)
from lineageflow.runs.orchestration import one_line_user_errors
from lineageflow.runs.tracking import (
    bounded_http_retries,
    client,
    run_url,
    tracking_uri_for,
)
from lineageflow.workspace import Workspace, open_workspace

ENTRYPOINT = "flows/reproduce.py:reproduce_run"


def _given_workspace(workspace: str | None) -> Workspace | None:
    """The workspace the caller named (parameter, else $LINEAGEFLOW_WORKSPACE);
    None lets the record say where the workspace is.

    For a reproduction the workspace is a hint: the record names the repo and
    commit. A named one that is not on this worker (the deploy-time path on
    another machine, or a moved checkout) is passed over when the tracking
    store is reachable without it (MLFLOW_TRACKING_URI); the flow then uses the
    recorded workspace, or clones its recorded URL."""
    chosen = workspace or os.environ.get("LINEAGEFLOW_WORKSPACE")
    if not chosen or "{{" in chosen:  # an unfilled deployment template: not given
        return None
    if not Path(chosen).expanduser().exists() and os.environ.get("MLFLOW_TRACKING_URI"):
        get_run_logger().warning(
            "workspace %s is not on this worker: using the workspace the run "
            "recorded (cloned from its recorded URL when it is not here)",
            chosen,
        )
        return None
    return open_workspace(chosen)


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
    from flows.pinned import run_recorded_code
    from flows.training import run_stages

    logger = get_run_logger()
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


def _test_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    m = client(tracking_uri).get_run(run_id).data.metrics
    return {k: v for k, v in m.items() if k.startswith("test_")}


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
    logger = get_run_logger()
    bounded_http_retries()  # one line in seconds, not minutes of retries
    ref = validate_ref(run_id)  # before any git, DVC or MLflow call
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise LineageError(f"tolerance must be a finite number >= 0, got {tolerance}")
    ws = _given_workspace(workspace)
    uri = tracking_uri_for(ws.root if ws else None)
    run_id = resolve_run_id(ref, uri)
    record, tags = load_lineage(uri, run_id)
    intact = lineage.check_digest(record, tags)
    if not intact.passed:
        raise LineageError(f"run {run_id} cannot be reproduced: {intact.reason}")
    cfg = parse_params(record["params"], source=f"run {run_id} params")
    local = _local_workspace(ws, record)
    commit = record["workspace"]["commit"]
    with tree_at(commit, local, record["workspace"]["repo"], "workspace") as tree:
        prepare_dvc(tree, record, main=local)
        new_id = _rerun(tree, record, cfg, uri, run_id)
    reproduced, _ = load_lineage(uri, new_id)
    cmp = judge(
        record,
        reproduced,
        _test_metrics(uri, run_id),
        _test_metrics(uri, new_id),
        tolerance,
    )
    c = client(uri)
    for rid, key, value in (
        (run_id, "lineage.reproduced_by", new_id),
        (run_id, "lineage.reproduction.verdict", cmp.line()[:5000]),
        (new_id, "lineage.reproduction.verdict", cmp.line()[:5000]),
    ):
        c.set_tag(rid, key, value)
    from prefect.artifacts import create_markdown_artifact

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
        "notes": cmp.notes(),
        "code_note": "; ".join(cmp.causes),
        "environment": cmp.environment,
        "metrics": {k: (a, b) for k, a, b, _ in cmp.rows},
    }
