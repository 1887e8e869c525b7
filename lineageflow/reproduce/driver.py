"""The reproduction driver: what reproduce-run does (flows/reproduce.py composes
these steps). Open the recorded run and refuse one that cannot be reproduced;
rebuild it in a temp worktree or clone with its recorded data and code; judge
the reproduction against it, tag both runs and show the verdict.

The flow hands in how the stages run again (``Rerunners``): they are flow code
(flows.training.run_stages, flows.pinned.run_recorded_code), and the library
never imports ``flows/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from lineageflow.attest.verify import attested_versions
from lineageflow.checkouts import has_commit, tree_at
from lineageflow.config import PipelineConfig, parse_params
from lineageflow.data.source import restore
from lineageflow.errors import LineageError, WorkspaceError
from lineageflow.lineage.checks import check_digest
from lineageflow.lineage.code import pipeline_state
from lineageflow.pipeline import REGISTER_MODEL
from lineageflow.registry.versions import load_lineage, recorded_metrics
from lineageflow.reproduce.reproduction import (
    Comparison,
    judge,
    resolve_run_id,
    validate_ref,
)
from lineageflow.runs.context import resolve_workspace
from lineageflow.runs.orchestration import run_logger
from lineageflow.runs.publish import PipelineResult
from lineageflow.runs.store import client, run_url, tracking_uri_for
from lineageflow.tags import (
    TAG_REPRODUCED_BY,
    TAG_REPRODUCTION_FIRST_DIVERGENCE,
    TAG_REPRODUCTION_OF,
    TAG_REPRODUCTION_VERDICT,
)
from lineageflow.workspace import Workspace, open_workspace


@dataclass(frozen=True)
class Rerunners:
    """How the stages run again, handed in by the flow."""

    stages: Callable[..., PipelineResult]  # the code at hand: run_stages
    recorded: Callable[..., str]  # a recorded commit's code, in a subprocess
    entrypoint: str  # the flow's entrypoint, the reproduction's source name


@dataclass(frozen=True)
class Reproduction:
    """A recorded run about to be rebuilt: everything read before any checkout."""

    run_id: str
    tolerance: float
    ws: Workspace | None
    uri: str
    record: dict
    cfg: PipelineConfig
    signed: list[str]  # one line per attested version of the run


@dataclass(frozen=True)
class Reproduced:
    """The reproduction's run and its verdict against the original."""

    of: Reproduction
    new_id: str
    experiment_id: str
    cmp: Comparison

    def summary(self) -> dict:
        cmp = self.cmp
        return {
            "run_id": self.of.run_id,
            "reproduction_run_id": self.new_id,
            "verdict": cmp.verdict,
            "metrics_verdict": cmp.metrics_verdict,
            "notes": self.of.signed + cmp.notes(),
            "code_note": "; ".join(cmp.causes),
            "first_divergence": cmp.divergence,
            "environment": cmp.environment,
            "metrics": {k: (a, b) for k, a, b, _ in cmp.rows},
        }


def open_reproduction(
    run_id: str, workspace: str | None, tolerance: float
) -> Reproduction:
    """The run ``run_id`` names, its intact lineage record and params; refused in
    one line when it cannot be reproduced."""
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
    logger = run_logger()
    for line in signed:
        logger.info(line)
    return Reproduction(run_id, tolerance, ws, uri, record, cfg, signed)


def rebuild(job: Reproduction, rerun: Rerunners) -> str:
    """Rerun the recorded run in a temp worktree (or clone) of the workspace at its
    commit, with its data restored; return the reproduction's run id."""
    record = job.record
    local = _local_workspace(job.ws, record)
    commit = record["workspace"]["commit"]
    with tree_at(commit, local, record["workspace"]["repo"], "workspace") as tree:
        restore(tree, record, main=local)
        return _rerun(tree, job, rerun)


def compare(job: Reproduction, new_id: str) -> Reproduced:
    """Judge the reproduction against the original and tag both runs with it."""
    run_id, uri = job.run_id, job.uri
    reproduced, _ = load_lineage(uri, new_id)
    cmp = judge(
        job.record,
        reproduced,
        recorded_metrics(uri, run_id),
        recorded_metrics(uri, new_id),
        job.tolerance,
    )
    c = client(uri)
    for rid, key, value in (
        (run_id, TAG_REPRODUCED_BY, new_id),
        (run_id, TAG_REPRODUCTION_VERDICT, cmp.line()[:5000]),
        (new_id, TAG_REPRODUCTION_VERDICT, cmp.line()[:5000]),
        *(
            (rid, TAG_REPRODUCTION_FIRST_DIVERGENCE, cmp.divergence[:5000])
            for rid in ((run_id, new_id) if cmp.divergence else ())
        ),
    ):
        c.set_tag(rid, key, value)
    return Reproduced(job, new_id, reproduced["mlflow"]["experiment_id"], cmp)


def publish(done: Reproduced) -> dict:
    """The verdict as the ``reproduction`` artifact and one log line; return the
    flow's result."""
    run_id = done.of.run_id
    create_markdown_artifact(
        _markdown(run_id, done.new_id, done.experiment_id, done.of.uri, done.cmp),
        key="reproduction",
        description=f"reproduction of MLflow run {run_id}",
    )
    run_logger().info("reproduction of %s: %s", run_id, done.cmp.line())
    return done.summary()


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


def _rerun(tree: Path, job: Reproduction, rerun: Rerunners) -> str:
    """Run the stages again with the recorded pipeline code; return the new run id."""
    record, cfg, uri, run_id = job.record, job.cfg, job.uri, job.run_id
    logger = run_logger()
    name, tags = f"reproduce-{run_id[:8]}", {TAG_REPRODUCTION_OF: run_id}
    then, now = record.get("pipeline", {}), pipeline_state()
    commit = then.get("commit")
    if commit and (commit != now["commit"] or now["dirty"]):
        local = next(
            (Path(p) for p in (now["path"], then.get("path")) if has_commit(p, commit)),
            None,
        )
        try:
            with tree_at(commit, local, then.get("repo"), "lineageflow") as code:
                return rerun.recorded(
                    code, tree, record, uri, name, tags, log=logger.info
                )
        except WorkspaceError as exc:  # the verdict will say the code was not pinned
            logger.warning("rerunning with the code at hand: %s", exc)
    result = rerun.stages(
        Workspace(tree),
        cfg,
        uri,
        register=REGISTER_MODEL.reproduced,  # a reproduction registers nothing
        run_name=name,
        extra_tags=tags,
        expect_data=record["data"],
        entrypoint=rerun.entrypoint,
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
