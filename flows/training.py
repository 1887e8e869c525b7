"""training-pipeline: one Prefect flow run = one parent MLflow run; each stage a child run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow

from lineageflow.attest.staging import staging
from lineageflow.config import PipelineConfig
from lineageflow.data.source import Version
from lineageflow.engines import engine, open_engine
from lineageflow.errors import LineageError
from lineageflow.model.ml import Split
from lineageflow.pipeline import (
    EVALUATE,
    PREPARE,
    PULL_DATA,
    RECORD_STEP,
    REGISTER_MODEL,
    TRAIN,
    steps,
)
from lineageflow.registry.promotion import Decision
from lineageflow.registry.versions import unchanged_since_staging
from lineageflow.retrain.commit import commit_run
from lineageflow.retrain.queue import one_at_a_time
from lineageflow.runs.context import RunContext, settings
from lineageflow.runs.flowstart import flow_setup
from lineageflow.runs.orchestration import run_logger
from lineageflow.runs.publish import Clock, PipelineResult, finish
from lineageflow.runs.store import check_reachable
from lineageflow.runs.tracking import RunRef
from lineageflow.tags import TAG_REPRODUCTION_OF
from lineageflow.workspace import Workspace
from tasks.data import Handoff, prepare, pull_all
from tasks.model import TrainedModel, evaluate, train
from tasks.registry import record_lineage, register_model


@dataclass
class Products:
    """What the steps of one run hand each other, in the order they are made."""

    ctx: RunContext
    run: RunRef
    expect: list[dict] | None  # a reproduction's recorded data
    versions: list[Version] = field(default_factory=list)
    frames: list[Handoff] = field(default_factory=list)
    split: Split | None = None
    trained: TrainedModel | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    decision: Decision | None = None


def _pull_data(p: Products) -> None:
    ws, cfg = p.ctx.ws, p.ctx.cfg
    engine = cfg.compute.engine
    p.versions, p.frames = pull_all(ws, cfg.data, p.run, p.expect, engine)


def _prepare(p: Products) -> None:
    cfg = p.ctx.cfg
    p.split = prepare(
        p.frames,
        cfg.data.target,
        cfg.prepare,
        p.run,
        cfg.train.task,
        p.versions,
        cfg.evaluate,
        cfg.compute.engine,
    )


def _train(p: Products) -> None:
    p.trained = train(p.split, p.ctx.cfg.train, p.run, str(p.ctx.ws.root))


def _evaluate(p: Products) -> None:
    p.metrics = evaluate(p.trained, p.split, p.ctx.cfg.evaluate, p.run)


def _record(p: Products) -> None:
    modules = p.trained.modules if p.trained is not None else ()
    compute = engine(p.ctx.cfg.compute.engine).describe(p.split)
    p.record = record_lineage(p.ctx, p.run, p.versions, modules, compute)


def _register_model(p: Products) -> None:
    cfg = p.ctx.cfg
    p.decision = register_model(
        p.record,
        p.trained,
        p.metrics,
        p.split,
        cfg.evaluate,
        cfg.registration,
        p.run,
        str(p.ctx.ws.root),
    )


# what each step of lineageflow.pipeline.steps() runs: a task, and what it hands on
STEPS: dict[str, Callable[[Products], None]] = {
    PULL_DATA.name: _pull_data,
    PREPARE.name: _prepare,
    TRAIN.name: _train,
    EVALUATE.name: _evaluate,
    RECORD_STEP: _record,
    REGISTER_MODEL.name: _register_model,
}


def step_of(name: str) -> Callable[[Products], None]:
    """What step ``name`` runs; a declared stage with no step is one line."""
    step = STEPS.get(name)
    if step is None:
        raise LineageError(
            f"stage {name!r} is declared in lineageflow/pipeline.py but "
            "flows/training.py has no step for it: add it to STEPS"
        )
    return step


def run_stages(
    ws: Workspace,
    cfg: PipelineConfig,
    tracking_uri: str,
    *,
    register: bool = True,
    run_name: str | None = None,
    extra_tags: dict[str, str] | None = None,
    expect_data: list[dict] | None = None,
    entrypoint: str = "flows/training.py:training_pipeline",
    reuse: bool = False,
    origin: dict | None = None,
) -> PipelineResult:
    """The pipeline body, shared by training-pipeline and reproduce-run.

    Its signature is a contract: a reproduction runs the *recorded* commit's
    ``run_stages`` in a subprocess (flows.pinned), so new arguments are
    keyword-only with defaults. ``reuse``: stages equal to a finished earlier
    stage take its verified outputs (lineageflow.runs.stages); a reproduction
    recomputes everything. ``origin``: the recorded workspace a reproduction
    rebuilds (lineageflow.runs.context).
    """
    clock = Clock()
    with clock("setup"):
        ctx = RunContext.start(ws, cfg, tracking_uri, entrypoint, origin, reuse)
    # the engine first: a cluster that cannot be reached ends the run before
    # any MLflow run starts (nothing left RUNNING)
    with open_engine(cfg.compute), ctx.parent_run(run_name, extra_tags) as run:
        p = Products(ctx, run, expect_data)
        # the declared stages in order (lineageflow.pipeline); a reproduction
        # (register=False) runs those it declares reproduced
        for name, timing in steps(reproduction=not register):
            with clock(timing):
                step_of(name)(p)
        model = cfg.registration.model_name
        of = (extra_tags or {}).get(TAG_REPRODUCTION_OF)
        result = finish(run, p.record, p.metrics, p.decision, model, clock.timings, of)
    result.refuse_if_failed()  # after the run is finished and published
    return result


def train_commit(workspace: str | None, rev: str, reuse: bool) -> dict:
    """Train ``rev`` in a worktree (the user's tree and branch untouched), once:
    a run of the same commit, data and params, whatever its outcome, ends this
    one at once (lineageflow.retrain.commit)."""
    with commit_run(workspace, rev) as job:
        if job.done is not None:
            skipped = job.skipped()
            run_logger().info(skipped["message"])
            return skipped
        return run_stages(
            job.ws,
            job.cfg,
            job.tracking_uri,
            reuse=reuse,
            extra_tags=job.tags(),
            origin=job.origin,
        ).summary()


@flow(name="training-pipeline", log_prints=True)
def training_pipeline(
    workspace: str | None = None,
    skip_if_unchanged: bool = False,
    reuse: bool = True,
    commit: str | None = None,
) -> dict:
    """Pull the workspace's DVC data, train, evaluate, register; promote to Staging
    only when every lineage check and the quality gate pass.

    Args:
        workspace: path of the git repository holding params.yaml and the .dvc files
            (default: $LINEAGEFLOW_WORKSPACE).
        skip_if_unchanged: end at once, registering nothing, when the commit, the
            data md5s and the params equal those of the current Staging version
            (the newest signed promotion; a version moved there by hand is
            named in a warning).
        reuse: take the verified outputs of earlier stages whose inputs, params
            section, code and libraries are unchanged (no refit when only the
            evaluation or registration settings changed); False recomputes all.
        commit: train this commit (its data pointers and params) in a worktree,
            once: set by the `lineageflow.data.changed` trigger. Empty: the
            workspace as it is.
    """
    flow_setup()
    if commit:
        return train_commit(workspace, commit, reuse)
    ws, cfg, uri = settings(workspace)
    # a scheduled retrain holds the workspace's slot, as a triggered retrain
    # and an audit do (lineageflow.retrain.queue): none runs beside another
    slot = one_at_a_time(ws.root) if skip_if_unchanged else contextlib.nullcontext()
    with slot:
        if skip_if_unchanged:
            check_reachable(uri)
            version = unchanged_since_staging(ws, cfg, uri)
            if version is not None:
                return _nothing_changed(version, cfg.registration.model_name, uri)
        return run_stages(ws, cfg, uri, reuse=reuse).summary()


def _nothing_changed(version: str, model: str, uri: str) -> dict:
    """A nightly run's result when commit, data and params are the Staging
    version's: nothing trained, nothing registered."""
    message = f"nothing changed since version {version}"
    run_logger().info(message)
    skipped = {
        "skipped": True,
        "message": message,
        "version": version,
        "model": model,
        "stage": "Staging",
    }
    # compared with the newest signed promotion; one moved into Staging by hand
    # since is said here (a run that trains says it at register)
    moved = staging(uri, model).line()
    if moved:
        run_logger().warning(moved)
        skipped["warning"] = moved
    return skipped


def run_workspace(workspace: str | Path, reuse: bool = True) -> dict:
    """Run the flow in-process (CLI and tests)."""
    return training_pipeline(workspace=str(workspace), reuse=reuse)
