"""training-pipeline: one Prefect flow run = one parent MLflow run; each stage a child run."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from prefect import flow, get_run_logger, unmapped

from lineageflow.config import PipelineConfig, load_params
from lineageflow.lineage import record as lineage
from lineageflow.lineage import report
from lineageflow.lineage.code import pipeline_state, user_code_state
from lineageflow.model import ml
from lineageflow.registry.promotion import Decision
from lineageflow.registry.versions import unchanged_since_staging
from lineageflow.runs import reuse as stage_reuse
from lineageflow.runs.orchestration import (
    flow_run_alive,
    one_line_user_errors,
    orchestration_info,
    prefect_tags,
)
from lineageflow.runs.stages import collect_stages
from lineageflow.runs.tracking import (
    artifact_root_for,
    bounded_http_retries,
    check_reachable,
    close_stale_runs,
    default_tracking_uri,
    ensure_experiment,
    log_params,
    parent_run,
)
from lineageflow.workspace import Workspace, git_state, open_workspace
from tasks.data import prepare, pull_data, release_freed_memory
from tasks.model import evaluate, train
from tasks.registry import record_lineage, register_model


@dataclass
class PipelineResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    metrics: dict[str, float]
    record: dict
    model_name: str | None = None
    model_version: str | None = None
    promoted: bool = False
    identical_to: str | None = None  # the Staging version this run's model equals
    outcome: str = "trained, not registered"  # in plain words, for both UIs
    checks: list[lineage.Check] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "timings": self.timings,
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "metrics": self.metrics,
            "model": self.model_name,
            "version": self.model_version,
            "stage": "Staging" if self.promoted or self.identical_to else "None",
            "identical_to": self.identical_to,
            "checks": {c.name: c.passed for c in self.checks},
            "reused": [
                {"stage": s["name"], "from_run": s["reused_from"]}
                for s in self.record.get("stages", [])
                if "reused_from" in s
            ],
        }


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
    ``run_stages`` in a subprocess (flows.pinned), so new arguments
    are keyword-only with defaults.

    ``reuse``: stages whose inputs, params, code and libraries equal those of a
    finished earlier stage take its verified outputs (lineageflow.runs.reuse). Off by
    default: a reproduction recomputes everything. Either way each stage records
    its key, so later runs can reuse what this one computed.

    ``origin``: the recorded workspace a reproduction rebuilds; its record names
    that repo, path and branch, not the temporary worktree it ran in (which is
    gone afterwards). The commit and cleanliness are the worktree's own.
    """
    logger = get_run_logger()
    timings: dict[str, float] = {}
    clock = _Clock(timings)
    with clock("setup"):
        bounded_http_retries()
        check_reachable(tracking_uri)
        git = git_state(ws.git())  # read before anything runs: the state the run used
        if origin is not None:
            git = replace(
                git,
                repo=origin.get("repo", git.repo),
                path=origin.get("path", git.path),
                branch=origin.get("branch"),
            )
        user_code = user_code_state(ws.root, cfg.train.code_refs())
        pipeline = pipeline_state()
        state_dir = ws.state_dir if tracking_uri.startswith("sqlite:") else None
        exp_id = ensure_experiment(
            tracking_uri,
            cfg.mlflow.experiment,
            artifact_root_for(tracking_uri, state_dir),
        )
        for stale in close_stale_runs(tracking_uri, exp_id, flow_run_alive):
            logger.warning("closed MLflow run %s left RUNNING by a crashed flow", stale)
        orch = orchestration_info()
        basis = stage_reuse.basis(pipeline, user_code)
        if reuse and basis is None:
            logger.info("stage reuse is off: the pipeline code has uncommitted changes")
    name = run_name or f"train-{git.commit[:8]}"
    tags = prefect_tags(orch) | (extra_tags or {})
    # every child run repeats MLflow's source fields and names the pipeline code
    inherited = lineage.source_tags(git.as_dict(), entrypoint) | {
        "lineage.stage.code": str(pipeline.get("commit") or pipeline.get("version"))
    }
    with parent_run(tracking_uri, exp_id, name, tags, inherited=inherited) as run:
        logger.info("MLflow parent run %s (experiment %s)", run.run_id, exp_id)
        # runs compare by config in MLflow's UI (the stages keep their sections)
        log_params(run, lineage.flat_params(cfg.as_dict()))
        run = replace(run, reuse_basis=basis, reuse_lookup=reuse)
        with clock("pull_data"):
            pulled = pull_data.map(
                unmapped(str(ws.root)),
                cfg.data.datasets,
                unmapped(cfg.data.remote),
                unmapped(run),
            )
            versions, frames = zip(*[f.result() for f in pulled], strict=True)
        if expect_data is not None:
            _verify_restored(expect_data, versions)
        with clock("prepare"):
            split = prepare(
                list(frames),
                cfg.data.target,
                cfg.prepare,
                run,
                cfg.train.task,
                list(versions),
            )
            ml.check_metric(split.task, cfg.evaluate.metric)  # before any training
            evaluate_cfg = cfg.evaluate.for_task(split.task)
            if chosen := cfg.evaluate.chosen(split.task):
                logger.info(chosen)
            if sum(v.size or 0 for v in versions) > 64 * 2**20:
                release_freed_memory()  # the raw frames are gone; the fit comes next
        with clock("train"):
            trained = train(split, cfg.train, run, str(ws.root))
        with clock("evaluate"):
            metrics = evaluate(trained, split, evaluate_cfg, run)
        with clock("lineage"):  # once every stage has recorded its own lineage
            record = lineage.build_record(
                workspace=git.as_dict(),
                data=[v.as_record() for v in versions],
                params=cfg.as_dict(),
                params_sha256=cfg.sha256(),
                orchestration=orch,
                mlflow_ids={"experiment_id": exp_id, "parent_run_id": run.run_id},
                pipeline=pipeline,
                user_code=user_code,
                stages=collect_stages(run),
            )
            record_lineage(record, run)
        for stage in record.get("stages", []):
            if "reused_from" in stage:
                logger.info(
                    "%s: unchanged since run %s, its outputs reused (digests checked)",
                    stage["name"],
                    stage["reused_from"],
                )
        result = PipelineResult(
            run.run_id, exp_id, tracking_uri, metrics, record, timings=timings
        )
        if not register:
            if (extra_tags or {}).get("lineage.reproduction_of"):
                result.outcome = (
                    f"reproduction of run {extra_tags['lineage.reproduction_of']} "
                    "(a reproduction never registers)"
                )
            _publish(result, tracking_uri)
        else:
            with clock("register"):
                decision: Decision = register_model(
                    str(ws.root),
                    record,
                    trained.model_uri,
                    metrics,
                    split,
                    evaluate_cfg,
                    cfg.registration,
                    run,
                    trained.digest,
                )
            result.model_name = cfg.registration.model_name
            result.model_version = decision.version
            result.promoted = decision.promoted
            result.identical_to = decision.identical_to
            result.outcome = decision.message(cfg.registration.model_name)
            result.checks = decision.checks
            _publish(result, tracking_uri)
            logger.info(decision.message(cfg.registration.model_name))
        _log_timings(run, timings)
        if register:
            from lineageflow.registry.promotion import refuse_if_failed

            refuse_if_failed(decision, cfg.registration.model_name)
    return result


class _Clock:
    """Wall time per stage, kept on the result and logged as parent metrics."""

    def __init__(self, into: dict[str, float]):
        self.into = into

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.into[stage] = round(time.perf_counter() - t0, 4)


def _log_timings(run, timings: dict[str, float]) -> None:
    from lineageflow.runs.tracking import client

    c = client(run.tracking_uri)
    for stage, seconds in timings.items():
        c.log_metric(run.run_id, f"time_{stage}_s", seconds)


def _verify_restored(expected: list[dict], got) -> None:
    """A reproduction must read exactly the recorded data versions."""
    from lineageflow.errors import DataError

    have = {v.path: v for v in got}
    for d in expected:
        v = have.get(d["path"])
        if v is None or v.md5 != d["md5"] or v.read_md5 != d["md5"]:
            found = v.read_md5 if v else "nothing"
            raise DataError(
                f"recorded data {d['path']} md5 {d['md5'][:12]} could not be restored "
                f"(read {found[:12]}): is it still in remote '{d['remote']}'?"
            )


def _publish(result: PipelineResult, tracking_uri: str) -> None:
    """The lineage picture on the parent run; Prefect artifacts: the picture, the
    lineage summary with the checks, and a link to MLflow."""
    import tempfile

    from prefect.artifacts import (
        create_image_artifact,
        create_link_artifact,
        create_markdown_artifact,
    )

    from lineageflow.lineage.graph import draw
    from lineageflow.runs.tracking import artifact_url, client, run_url

    model = (
        f"{result.model_name} v{result.model_version}" if result.model_version else None
    )
    with tempfile.TemporaryDirectory() as tmp:
        png = draw(result.record, Path(tmp) / "lineage.png", model, result.checks)
        client(tracking_uri).log_artifact(result.run_id, str(png))
    picture = artifact_url(tracking_uri, result.run_id, "lineage.png")
    create_image_artifact(
        picture,
        key="lineage-graph",
        description=f"commit -> data -> stages -> model of MLflow run {result.run_id}",
    )

    summary = report.markdown_summary(
        result.record, result.checks, outcome=result.outcome, metrics=result.metrics
    )
    # the parent run's description in MLflow's UI (its "mlflow.note.content")
    client(tracking_uri).set_tag(result.run_id, "mlflow.note.content", summary)
    create_markdown_artifact(
        summary,
        key="lineage-summary",
        description=f"{result.outcome}: lineage and checks of MLflow run {result.run_id}",
    )
    create_link_artifact(
        run_url(tracking_uri, result.experiment_id, result.run_id),
        link_text=f"MLflow run {result.run_id}",
        key="mlflow-run",
    )


def resolve_workspace(workspace: str | None) -> str:
    """The flow parameter, else ``$LINEAGEFLOW_WORKSPACE`` (set in a deployment's env)."""
    from lineageflow.errors import WorkspaceError

    chosen = workspace or os.environ.get("LINEAGEFLOW_WORKSPACE")
    if not chosen:
        raise WorkspaceError(
            "no workspace: pass the `workspace` parameter or set LINEAGEFLOW_WORKSPACE"
        )
    if "{{" in chosen:  # prefect deploy leaves an unset {{ $VAR }} as it is
        raise WorkspaceError(
            f"workspace parameter is the unfilled template {chosen!r}: export "
            "LINEAGEFLOW_WORKSPACE before `prefect deploy`, or pass `workspace`"
        )
    return chosen


@flow(name="training-pipeline", log_prints=True)
def training_pipeline(
    workspace: str | None = None, skip_if_unchanged: bool = False, reuse: bool = True
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
    """
    one_line_user_errors()  # a refusal reaches Prefect's UI as its one line
    ws = open_workspace(resolve_workspace(workspace))
    cfg = load_params(ws.params_path())
    uri = default_tracking_uri(ws.state_dir)
    if skip_if_unchanged:
        check_reachable(uri)
        version = unchanged_since_staging(ws, cfg, uri)
        if version is not None:
            message = f"nothing changed since version {version}"
            get_run_logger().info(message)
            return {
                "skipped": True,
                "message": message,
                "version": version,
                "model": cfg.registration.model_name,
                "stage": "Staging",
            }
    result = run_stages(ws, cfg, uri, reuse=reuse)
    return result.summary()


def run_workspace(workspace: str | Path, reuse: bool = True) -> dict:
    """Run the flow in-process (CLI and tests)."""
    return training_pipeline(workspace=str(workspace), reuse=reuse)
