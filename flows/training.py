"""training-pipeline: one Prefect flow run = one parent MLflow run; each stage a child run."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from lineageflow.config import PipelineConfig
from lineageflow.registry.versions import unchanged_since_staging
from lineageflow.retrain.commit import commit_run
from lineageflow.runs.context import RunContext, settings
from lineageflow.runs.flowstart import flow_setup
from lineageflow.runs.orchestration import run_logger
from lineageflow.runs.publish import Clock, PipelineResult, finish
from lineageflow.runs.store import check_reachable
from lineageflow.tags import TAG_REPRODUCTION_OF
from lineageflow.workspace import Workspace
from tasks.data import prepare, pull_all
from tasks.model import evaluate, train
from tasks.registry import record_lineage, register_model


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
    with ctx.parent_run(run_name, extra_tags) as run:
        with clock("pull_data"):
            versions, frames = pull_all(ws, cfg.data, run, expect=expect_data)
        with clock("prepare"):
            split = prepare(
                frames,
                cfg.data.target,
                cfg.prepare,
                run,
                cfg.train.task,
                versions,
                cfg.evaluate,
            )
        with clock("train"):
            trained = train(split, cfg.train, run, str(ws.root))
        with clock("evaluate"):
            metrics = evaluate(trained, split, cfg.evaluate, run)
        with clock("lineage"):
            record = record_lineage(ctx, run, versions)
        decision = None
        if register:
            with clock("register"):
                decision = register_model(
                    record,
                    trained,
                    metrics,
                    split,
                    cfg.evaluate,
                    cfg.registration,
                    run,
                    str(ws.root),
                )
        model = cfg.registration.model_name
        of = (extra_tags or {}).get(TAG_REPRODUCTION_OF)
        result = finish(run, record, metrics, decision, model, clock.timings, of)
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
            data md5s and the params equal those of the current Staging version.
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
    if skip_if_unchanged:
        check_reachable(uri)
        version = unchanged_since_staging(ws, cfg, uri)
        if version is not None:
            message = f"nothing changed since version {version}"
            run_logger().info(message)
            return {
                "skipped": True,
                "message": message,
                "version": version,
                "model": cfg.registration.model_name,
                "stage": "Staging",
            }
    return run_stages(ws, cfg, uri, reuse=reuse).summary()


def run_workspace(workspace: str | Path, reuse: bool = True) -> dict:
    """Run the flow in-process (CLI and tests)."""
    return training_pipeline(workspace=str(workspace), reuse=reuse)
