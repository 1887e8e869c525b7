"""pull_data and prepare: thin declarations around lineageflow.tabular / ml."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from lineageflow import ml
from lineageflow.config import PrepareConfig
from lineageflow.dvcio import DataVersion, pull_dataset
from lineageflow.stages import log_dataset, persist_table, stage_run
from lineageflow.tabular import read_table, validate_frame
from lineageflow.tracking import RunRef
from lineageflow.workspace import Workspace
from tasks import retry_unless_user_error


# NO_CACHE: Prefect's default policy hashes the inputs (slow on frames) and keys on
# the flow run id anyway, so it never skips work across runs.
@task(
    name="pull_data",
    task_run_name="pull_data[{dataset}]",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_unless_user_error,
    cache_policy=NO_CACHE,
)
def pull_data(
    workspace: str, dataset: str, remote: str | None, run: RunRef
) -> tuple[DataVersion, Handoff]:
    """DVC-pull one dataset if absent, verify its md5, read it, log it as an input;
    the frame comes back in a Handoff for prepare to take."""
    import mlflow

    ws = Workspace(Path(workspace))
    data_path, dvc_file = ws.dataset(dataset)
    tags = {
        "lineageflow.dataset": dataset,
        "lineageflow.thread": threading.current_thread().name,
    }
    pointer = str(dvc_file.relative_to(ws.root))
    with stage_run(
        run,
        "pull_data",
        inputs=[],
        params={"dataset": dataset, "remote": remote},
        tags=tags,
    ) as (_, io):
        t0 = time.perf_counter()
        version = pull_dataset(ws.root, data_path, dvc_file, remote)
        io.inputs.append({"name": pointer, "digest": f"md5:{version.md5}"})
        t1 = time.perf_counter()
        df, fmt = read_table(data_path)
        version = replace(version, format=fmt)
        t2 = time.perf_counter()
        # the raw data's digest is the DVC md5 of what was read
        io.output(dataset, f"md5:{version.read_md5}")
        mlflow.log_params(
            {
                "dataset": dataset,
                "dvc_md5": version.md5,
                "action": version.action,
                "format": fmt,
            }
        )
        mlflow.log_metrics(
            {
                "rows": len(df),
                "columns": df.shape[1],
                "dvc_seconds": t1 - t0,
                "read_seconds": t2 - t1,
            }
        )
        for on in (None, run.run_id):  # this stage's run, and the parent's panel
            log_dataset(
                df,
                dataset,
                version.md5,
                "training",
                source=str(data_path),
                run_id=on,
                tracking_uri=run.tracking_uri,
            )
    return version, Handoff(df)


def release_freed_memory() -> None:
    """Give the heap pages freed by reading and splitting back to the OS before the
    fit: glibc keeps them (malloc_trim), so they would count in the peak twice."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


class Handoff:
    """A frame handed from pull_data to prepare exactly once.

    Prefect keeps every task's result for the rest of the flow run (it links results
    to states to track dependencies), so a frame returned as such stays in memory
    through the fit. Whoever takes it owns it; the handoff keeps nothing."""

    __slots__ = ("frame",)

    def __init__(self, frame: pd.DataFrame):
        self.frame: pd.DataFrame | None = frame

    def take(self) -> pd.DataFrame:
        frame, self.frame = self.frame, None
        if frame is None:
            raise RuntimeError("this frame was already handed to a stage")
        return frame


@task(name="prepare", cache_policy=NO_CACHE)
def prepare(
    frames: list[pd.DataFrame | Handoff],
    target: str,
    cfg: PrepareConfig,
    run: RunRef,
    task_setting: str = "auto",
    data: list[DataVersion] | None = None,
) -> ml.Split:
    """Schema check, the task (given or inferred, with its reason) and the split;
    both tables are persisted by digest on this stage's run."""
    import mlflow

    inputs = [(d.path, f"md5:{d.read_md5}") for d in data or []]
    params = cfg.model_dump() | {"target": target, "task": task_setting}
    with stage_run(run, "prepare", inputs=inputs, params=params) as (active, io):
        frames = [f.take() if isinstance(f, Handoff) else f for f in frames]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        del frames
        validate_frame(df, target)
        split = ml.split_frame(df, target, cfg, task_setting)
        mlflow.log_params(
            cfg.model_dump()
            | {"target": target, "task": split.task, "task_reason": split.task_reason}
        )
        if split.labels:
            mlflow.log_param("labels", json.dumps(split.labels, default=str)[:6000])
        mlflow.log_metrics(split.sizes())
        split = split.with_digests()
        for part in ("train", "holdout"):
            uri = persist_table(split.table(part), split.digests[part], f"{part}_table")
            io.output(f"{part}_table", split.digests[part], uri=uri)
    return split
