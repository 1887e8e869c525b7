"""pull_data and prepare: thin declarations around lineageflow.data.tabular / ml."""

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

from lineageflow.config import PrepareConfig
from lineageflow.data.dvc import DataVersion, pull_dataset
from lineageflow.data.tabular import read_table, validate_frame
from lineageflow.model import ml
from lineageflow.runs import reuse
from lineageflow.runs.stages import (
    load_split,
    log_dataset,
    persist_split_meta,
    persist_table,
    stage_run,
)
from lineageflow.runs.tracking import RunRef
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
    ) as (active, io):
        t0 = time.perf_counter()
        version = pull_dataset(ws.root, data_path, dvc_file, remote)
        io.inputs.append({"name": pointer, "digest": f"md5:{version.md5}"})
        t1 = time.perf_counter()
        earlier = io.earlier()
        if earlier is not None and _same_data(earlier, dataset, version):
            # DVC just hashed the file (state DB): it is what the earlier run read.
            # Nothing is read now; prepare reads it only if it cannot reuse either.
            io.take_from(earlier, copy_params=False, datasets_also_on=run.run_id)
            version = replace(version, format=earlier.params["format"])
            rows, columns = earlier.metrics["rows"], earlier.metrics["columns"]
            handoff = Handoff.later(data_path)
        else:
            df, fmt = read_table(data_path)
            version = replace(version, format=fmt)
            # the raw data's digest is the DVC md5 of what was read
            io.output(dataset, f"md5:{version.read_md5}")
            rows, columns, handoff = len(df), df.shape[1], Handoff(df)
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
            del df
        t2 = time.perf_counter()
        mlflow.log_params(
            {
                "dataset": dataset,
                "dvc_md5": version.md5,
                "action": version.action,
                "format": version.format,
            }
        )
        mlflow.log_metrics(
            {
                "rows": rows,
                "columns": columns,
                "dvc_seconds": t1 - t0,
                "read_seconds": t2 - t1,
            }
        )
    return version, handoff


def _same_data(earlier, dataset: str, version: DataVersion) -> bool:
    out = earlier.output(dataset)
    return (
        out is not None
        and out["digest"] == f"md5:{version.read_md5}"
        and version.read_md5 == version.md5
        and earlier.params.get("format") in ("csv", "parquet")
        and {"rows", "columns"} <= set(earlier.metrics)
    )


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

    __slots__ = ("frame", "path")

    def __init__(self, frame: pd.DataFrame | None, path: Path | None = None):
        self.frame: pd.DataFrame | None = frame
        self.path = path

    @classmethod
    def later(cls, path: Path) -> Handoff:
        """A table not read yet: whoever takes it reads it (if anyone does)."""
        return cls(None, path)

    def drop(self) -> None:
        self.frame = self.path = None

    def take(self) -> pd.DataFrame:
        frame, self.frame = self.frame, None
        path, self.path = self.path, None
        if frame is None and path is not None:
            frame, _ = read_table(path)
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
        earlier = io.earlier()
        if earlier is not None:
            try:
                split = load_split(earlier, run.tracking_uri)
            except Exception as exc:  # gone, damaged or changed: recompute
                reuse.declined("prepare", earlier, exc)
            else:
                io.take_from(earlier)
                for f in frames:  # a frame pull_data read anyway is not needed
                    if isinstance(f, Handoff):
                        f.drop()
                return split
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
        persist_split_meta(split)
        uris = {}
        for part in ("train", "holdout"):
            uri = persist_table(split.table(part), split.digests[part], f"{part}_table")
            io.output(f"{part}_table", split.digests[part], uri=uri)
            uris[part] = uri
    return replace(split, uris=uris)
