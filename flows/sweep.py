"""sweep: train several xgboost configurations on one data version, in parallel processes.

MLflow autolog keeps process-global state, and two autologged fits overlapping in
threads silently lose the second run's data (3 of 3 tries here). So each
configuration is a Prefect task in a worker *process*, with its own child run
started under the sweep's parent run by explicit id:

- ``sweep`` (default): Prefect's ProcessPoolTaskRunner, 2 processes;
- ``sweep_on("dask")``: prefect-dask's DaskTaskRunner on a LocalCluster of worker
  processes (one thread each), or ``sweep_on("dask", address="tcp://host:8786")`` on
  a running Dask cluster ($LINEAGEFLOW_DASK_ADDRESS when no address is given: the
  team stack's). The split then travels to the workers by value, so a worker on
  another machine needs only the tracking server.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path

import mlflow
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from lineageflow.compute_config import ADDRESS_ENV
from lineageflow.engines import engine
from lineageflow.model.estimators import xgb_classifier
from lineageflow.model.ml import HIGHER_IS_BETTER, Split, metrics_digest
from lineageflow.pipeline import SWEEP
from lineageflow.runs.autolog import autolog
from lineageflow.runs.context import RunContext, settings
from lineageflow.runs.flowstart import flow_setup
from lineageflow.runs.stages import stage_run
from lineageflow.runs.tracking import RunRef
from lineageflow.tags import TAG_SWEEP_INDEX, TAG_SWEEP_SIZE
from tasks.data import prepare, pull_all

ENTRYPOINT = "flows/sweep.py:sweep"


@task(name="fit_config", task_run_name="fit_config[{index}]", cache_policy=NO_CACHE)
def fit_config(
    split: str | Split, index: int, params: dict, seed: int, run: RunRef
) -> dict:
    """Fit one configuration and score it on the shared holdout, as a stage: its
    child run records the two tables it read and the metrics it made, by digest.

    `split`: the Split itself, or the path of a pickled one on this machine."""
    if isinstance(split, str):
        with open(split, "rb") as fh:
            split = pickle.load(fh)
    inputs = [(f"{p}_table", split.digests[p]) for p in ("train", "holdout")]
    tags = {TAG_SWEEP_INDEX: str(index)}
    section = {"xgboost": params, "seed": seed}
    eng = engine(split.engine)
    with stage_run(run, SWEEP.name, inputs=inputs, params=section, tags=tags) as (
        active,
        io,
    ):
        autolog("xgboost")
        t0 = time.perf_counter()
        try:
            model = eng.fit(xgb_classifier(params, seed), split)
        finally:
            autolog("xgboost", disable=True)
        fit_seconds = time.perf_counter() - t0
        metrics = eng.score(model, split)
        test_metrics = {f"test_{k}": v for k, v in metrics.items()}
        mlflow.log_metrics(test_metrics | {"fit_seconds": fit_seconds})
        io.output("metrics", metrics_digest(test_metrics))
        return {
            "index": index,
            "run_id": active.info.run_id,
            "params": params,
            **metrics,
        }


def estimated_cost(params: dict) -> float:
    """Relative fit cost of an xgboost config: trees x depth (xgboost's defaults)."""
    return params.get("n_estimators", 100) * params.get("max_depth", 6)


@flow(name="sweep", log_prints=True, task_runner=ProcessPoolTaskRunner(max_workers=2))
def sweep(workspace: str, grid: list[dict], metric: str = "roc_auc") -> dict:
    """Train every xgboost configuration of ``grid`` (dicts of XGBClassifier params)
    on the workspace's data; one child run each under one parent run.

    Use ``sweep.with_options(task_runner=...)`` for more workers or a Dask cluster.
    """
    logger = flow_setup()
    ws, cfg, uri = settings(workspace)
    ctx = RunContext.start(ws, cfg, uri, ENTRYPOINT)
    with ctx.parent_run("sweep", {TAG_SWEEP_SIZE: str(len(grid))}) as run:
        _, frames = pull_all(ws, cfg.data, run)
        split = prepare(frames, cfg.data.target, cfg.prepare, run)
        # Largest first (LPT): in grid order the heaviest configs came last and
        # one worker sat idle at the end (measured: 4-16 s fits, 1.43x on 2 cores).
        order = sorted(range(len(grid)), key=lambda i: -estimated_cost(grid[i]))
        with tempfile.TemporaryDirectory() as tmp:
            ship: str | Split = split
            if not _on_dask():  # local processes read one pickle from disk
                ship = str(Path(tmp) / "split.pkl")
                with open(ship, "wb") as fh:
                    pickle.dump(split, fh, protocol=pickle.HIGHEST_PROTOCOL)
            futures = [
                fit_config.submit(ship, i, grid[i], cfg.train.seed, run) for i in order
            ]
            results = sorted((f.result() for f in futures), key=lambda r: r["index"])
        higher = HIGHER_IS_BETTER[metric]
        best = max(results, key=lambda r: r[metric] if higher else -r[metric])
        logger.info(
            "best of %d: config %d, %s=%.4f",
            len(results),
            best["index"],
            metric,
            best[metric],
        )
    return {"run_id": run.run_id, "results": results, "best": best}


def _on_dask() -> bool:
    ctx = FlowRunContext.get()
    return ctx is not None and type(ctx.task_runner).__name__ == "DaskTaskRunner"


def sweep_on(runner: str = "process", address: str | None = None, workers: int = 2):
    """The sweep flow on `runner`: ``process`` (a local process pool), ``thread``
    (one at a time: autolog is process-global), or ``dask`` (the scheduler at
    `address`, else at $LINEAGEFLOW_DASK_ADDRESS, else a LocalCluster of `workers`
    processes)."""
    if runner == "process":
        return sweep.with_options(
            task_runner=ProcessPoolTaskRunner(max_workers=workers)
        )
    if runner == "thread":
        return sweep.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        address = address or os.environ.get(ADDRESS_ENV, "").strip()
        if address:
            return sweep.with_options(task_runner=DaskTaskRunner(address=address))
        return sweep.with_options(
            task_runner=DaskTaskRunner(
                cluster_kwargs={
                    "n_workers": workers,
                    "threads_per_worker": 1,  # autolog is process-global
                    "processes": True,
                    "dashboard_address": None,
                    "host": "127.0.0.1",
                }
            )
        )
    raise ValueError(f"runner must be process, thread or dask, got {runner!r}")
