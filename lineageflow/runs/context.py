"""The run context: everything a run reads once, before any stage.

``settings`` turns a flow's ``workspace`` parameter into the workspace, its
params and its MLflow store (no MLflow call yet). ``RunContext.start`` then
reads the state the run will use — git and code, the experiment, runs a crashed
flow left RUNNING, Prefect's ids, the reuse basis, the source tags every child
run inherits — and opens the parent run. Flows compose tasks around it; they
do not compute. training-pipeline, reproduce-run, promote-model and the sweep
all start here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from lineageflow.config import PipelineConfig, load_params
from lineageflow.errors import WorkspaceError
from lineageflow.lineage.code import pipeline_state, user_code_state
from lineageflow.lineage.record import build_record, flat_params, source_tags
from lineageflow.runs import reuse
from lineageflow.runs.orchestration import (
    flow_run_alive,
    orchestration_info,
    prefect_tags,
    run_logger,
)
from lineageflow.runs.stages import collect_stages
from lineageflow.runs.store import (
    artifact_root_for,
    bounded_http_retries,
    check_reachable,
    ensure_experiment,
)
from lineageflow.runs.tracking import RunRef, close_stale_runs, log_params, parent_run
from lineageflow.tags import TAG_STAGE_CODE
from lineageflow.workspace import GitState, Workspace, git_state, open_workspace


def resolve_workspace(workspace: str | None, *, hint: bool = False) -> str | None:
    """The flow's ``workspace`` parameter, else ``$LINEAGEFLOW_WORKSPACE`` (a
    deployment's env), as a path.

    ``hint``: for a reproduction the workspace is only a hint (the record names
    the repo and commit): unset, an unfilled deployment template, or a path not
    on this worker while ``MLFLOW_TRACKING_URI`` reaches the store give None,
    and the flow uses the recorded workspace (or clones its recorded URL).
    Otherwise each of those is one line saying what to set."""
    chosen = workspace or os.environ.get("LINEAGEFLOW_WORKSPACE")
    unfilled = bool(chosen) and "{{" in chosen  # prefect deploy leaves {{ $VAR }}
    if hint:
        if not chosen or unfilled:
            return None
        if not Path(chosen).expanduser().exists() and os.environ.get(
            "MLFLOW_TRACKING_URI"
        ):
            run_logger().warning(
                "workspace %s is not on this worker: using the workspace the run "
                "recorded (cloned from its recorded URL when it is not here)",
                chosen,
            )
            return None
        return chosen
    if not chosen:
        raise WorkspaceError(
            "no workspace: pass the `workspace` parameter or set LINEAGEFLOW_WORKSPACE"
        )
    if unfilled:
        raise WorkspaceError(
            f"workspace parameter is the unfilled template {chosen!r}: export "
            "LINEAGEFLOW_WORKSPACE before `prefect deploy`, or pass `workspace`"
        )
    return chosen


def workspace_store(workspace: str | None) -> tuple[Workspace, str]:
    """The workspace a flow was given, and its MLflow store."""
    chosen = resolve_workspace(workspace)
    ws = open_workspace(chosen)
    return ws, ws.tracking_uri()


def settings(workspace: str | None) -> tuple[Workspace, PipelineConfig, str]:
    """The workspace a flow was given, its params and its MLflow store."""
    ws, uri = workspace_store(workspace)
    return ws, load_params(ws.params_path()), uri


@dataclass(frozen=True)
class RunContext:
    """What a run reads once before any stage (``start``), and what it makes of
    it: the parent run and the lineage record."""

    ws: Workspace
    cfg: PipelineConfig
    tracking_uri: str
    experiment_id: str
    git: GitState
    pipeline: dict
    user_code: list[dict]
    orchestration: dict
    entrypoint: str
    reuse_lookup: bool  # stages take an earlier identical stage's outputs

    @classmethod
    def start(
        cls,
        ws: Workspace,
        cfg: PipelineConfig,
        tracking_uri: str,
        entrypoint: str,
        origin: dict | None = None,
        reuse_lookup: bool = False,
    ) -> RunContext:
        """Read the run's state. ``origin``: the recorded workspace a reproduction
        rebuilds; its record names that repo, path and branch, not the temporary
        worktree it runs in (the commit and cleanliness are the worktree's own)."""
        bounded_http_retries()
        check_reachable(tracking_uri)
        exp_id = experiment(ws, cfg, tracking_uri)
        for stale in close_stale_runs(tracking_uri, exp_id, flow_run_alive):
            run_logger().warning(
                "closed MLflow run %s left RUNNING by a crashed flow", stale
            )
        pipeline = pipeline_state()
        user_code = user_code_state(ws.root, cfg.train.code_refs())
        git = git_state(ws.git())  # read before anything runs: the state the run used
        if origin is not None:
            git = replace(
                git,
                repo=origin.get("repo", git.repo),
                path=origin.get("path", git.path),
                branch=origin.get("branch"),
            )
        return cls(
            ws,
            cfg,
            tracking_uri,
            exp_id,
            git,
            pipeline,
            user_code,
            orchestration_info(),
            entrypoint,
            reuse_lookup,
        )

    @contextlib.contextmanager
    def parent_run(
        self,
        run_name: str | None = None,
        extra_tags: dict[str, str] | None = None,
    ) -> Iterator[RunRef]:
        """The flow's parent MLflow run, with the resolved config as its params
        (runs compare by config in MLflow's UI; the stages keep their sections).
        Its stages run under it with the reuse basis (lineageflow.runs.reuse:
        none while the pipeline code has uncommitted changes)."""
        basis = reuse.basis(self.pipeline, self.user_code)
        if self.reuse_lookup and basis is None:
            run_logger().info(
                "stage reuse is off: the pipeline code has uncommitted changes"
            )
        name = run_name or f"train-{self.git.commit[:8]}"
        tags = prefect_tags(self.orchestration) | (extra_tags or {})
        # every child run repeats MLflow's source fields and names the pipeline code
        code = self.pipeline.get("commit") or self.pipeline.get("version")
        inherited = source_tags(self.git.as_dict(), self.entrypoint)
        inherited[TAG_STAGE_CODE] = str(code)
        with parent_run(
            self.tracking_uri, self.experiment_id, name, tags, inherited=inherited
        ) as run:
            run_logger().info(
                "MLflow parent run %s (experiment %s)", run.run_id, run.experiment_id
            )
            log_params(run, flat_params(self.cfg.as_dict()))
            yield replace(run, reuse_basis=basis, reuse_lookup=self.reuse_lookup)

    def record(
        self,
        run: RunRef,
        versions,
        modules: Iterable[str] = (),
        compute: dict | None = None,
    ) -> dict:
        """The lineage record, once every stage has recorded its own lineage;
        ``modules``: module names imported outside this process (a notebook's);
        ``compute``: the engine's account of where it computed."""
        return build_record(
            workspace=self.git.as_dict(),
            data=[v.as_record() for v in versions],
            params=self.cfg.as_dict(),
            params_sha256=self.cfg.sha256(),
            orchestration=self.orchestration,
            mlflow_ids={
                "experiment_id": self.experiment_id,
                "parent_run_id": run.run_id,
            },
            pipeline=self.pipeline,
            user_code=self.user_code,
            stages=collect_stages(run),
            modules=modules,
            compute=compute,
        )


def experiment(ws: Workspace, cfg: PipelineConfig, tracking_uri: str) -> str:
    """The run's MLflow experiment (a local store keeps artifacts in the workspace)."""
    state_dir = ws.state_dir if tracking_uri.startswith("sqlite:") else None
    return ensure_experiment(
        tracking_uri, cfg.mlflow.experiment, artifact_root_for(tracking_uri, state_dir)
    )
