"""pull_data and prepare: thin declarations around lineageflow.data and .model.ml."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE

from lineageflow.config import (
    DataConfig,
    Dataset,
    EvaluateConfig,
    PrepareConfig,
    dataset_name,
)
from lineageflow.data.source import Source, Version, open_source, verify_restored
from lineageflow.engines import engine as get_engine
from lineageflow.model.ml import Split, check_metric
from lineageflow.ops.procs import release_freed_memory
from lineageflow.pipeline import PREPARE, PULL_DATA
from lineageflow.runs.artifacts import log_dataset, persist_split_meta
from lineageflow.runs.orchestration import run_logger
from lineageflow.runs.stages import stage_run
from lineageflow.runs.tracking import RunRef
from lineageflow.tags import TAG_DATASET, TAG_THREAD
from lineageflow.workspace import Workspace
from tasks import retry_unless_user_error


# NO_CACHE: Prefect's default policy hashes the inputs (slow on frames) and keys on
# the flow run id anyway, so it never skips work across runs.
@task(
    name=PULL_DATA.name,
    task_run_name=lambda: _run_name(),
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_unless_user_error,
    cache_policy=NO_CACHE,
)
def pull_data(
    workspace: str,
    dataset: Dataset,
    remote: str | None,
    run: RunRef,
    expect: list[dict] | None = None,
    engine: str = "local",
) -> tuple[Version, Handoff]:
    """Pin one dataset's version (a DVC file pulled if absent; a Delta table's
    version chosen), verify it, read it, log it as an input; the table comes
    back in a Handoff for prepare to take. ``expect``: a reproduction's
    recorded data (a Delta table is read at its recorded version). ``engine``
    reads it: into this process (local), or where a cluster's workers hold its
    partitions (dask), which hash its files as they read them."""
    dataset = dataset_name(entry := dataset)
    recorded = next((d for d in expect or [] if d.get("path") == dataset), None)
    src = open_source(Workspace(Path(workspace)), entry, remote, expect=recorded)
    tags = {
        TAG_DATASET: dataset,
        TAG_THREAD: threading.current_thread().name,
    }
    params = {"dataset": dataset, "remote": remote}
    with stage_run(run, PULL_DATA.name, inputs=[], params=params, tags=tags) as (
        _,
        io,
    ):
        t0 = time.perf_counter()
        version = src.pin()
        io.inputs.append(src.key_input(version))
        t1 = time.perf_counter()
        # the source just hashed the data (DVC's state DB): if it is what an
        # earlier run read, nothing is read now (prepare reads it only if it
        # cannot reuse either)
        earlier = io.reuse(
            lambda e: _earlier_read(e, src, version),
            copy_params=False,
            datasets_also_on=run.run_id,
        )
        eng = get_engine(engine)
        if earlier is not None:
            version, rows, columns = earlier
            handoff = Handoff(None, lambda v=version: eng.read(src, v).table)
        else:
            read = eng.read(src, version)
            version, rows, columns = read.version, read.rows, read.columns
            io.output(dataset, src.read_digest(version))
            handoff = Handoff(read.table)
            name, source = src.mlflow_dataset(version)
            for on in (None, run.run_id):  # this stage's run, and the parent's panel
                log_dataset(
                    read.frame,
                    name,
                    version.md5,
                    "training",
                    source=source,
                    run_id=on,
                    tracking_uri=run.tracking_uri,
                )
            del read
        t2 = time.perf_counter()
        mlflow.log_params(
            {
                "dataset": dataset,
                **version.params(),
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


def pull_all(
    ws: Workspace,
    cfg: DataConfig,
    run: RunRef,
    expect: list[dict] | None = None,
    engine: str = "local",
) -> tuple[list[Version], list[Handoff]]:
    """pull_data for every dataset, in parallel threads: their versions and
    tables. ``expect``: a reproduction's recorded data, which it must read exactly."""
    pulled = pull_data.map(
        unmapped(str(ws.root)),
        cfg.datasets,
        unmapped(cfg.remote),
        unmapped(run),
        unmapped(expect),
        unmapped(engine),
    )
    versions, frames = zip(*[f.result() for f in pulled], strict=True)
    if expect is not None:
        verify_restored(expect, versions)
    return list(versions), list(frames)


def _run_name() -> str:
    from prefect.runtime import task_run

    return f"pull_data[{dataset_name(task_run.parameters['dataset'])}]"


def _earlier_read(earlier, src: Source, version: Version):
    """(version, rows, columns) of the same data an earlier run read."""
    out = earlier.output(src.name)
    same = (
        out is not None
        and out["digest"] == src.read_digest(version)
        and version.read_md5 == version.md5
        # it read the data (the format is set once read), whatever its kind
        and earlier.params.get("format") not in (None, "", "None")
        and {"rows", "columns"} <= set(earlier.metrics)
    )
    if not same:
        raise LookupError("what it read differs from the data pinned now")
    version = replace(version, format=earlier.params["format"])
    return version, earlier.metrics["rows"], earlier.metrics["columns"]


class Handoff:
    """A table handed from pull_data to prepare exactly once (a frame, or an
    engine's partitions); ``source`` reads one not read yet, if anyone takes it.

    Prefect keeps every task's result for the rest of the flow run (it links results
    to states to track dependencies), so a frame returned as such stays in memory
    through the fit. Whoever takes it owns it; the handoff keeps nothing."""

    __slots__ = ("frame", "source")

    def __init__(self, frame: Any, source=None):
        self.frame: Any = frame
        self.source = source  # reads the table when it was not read yet

    def drop(self) -> None:
        self.frame = self.source = None

    def take(self) -> Any:
        frame, self.frame = self.frame, None
        source, self.source = self.source, None
        if frame is None and source is not None:
            frame = source()
        if frame is None:
            raise RuntimeError("this frame was already handed to a stage")
        return frame


@task(name=PREPARE.name, cache_policy=NO_CACHE)
def prepare(
    frames: list[pd.DataFrame | Handoff],
    target: str,
    cfg: PrepareConfig,
    run: RunRef,
    task_setting: str = "auto",
    data: list[Version] | None = None,
    evaluate: EvaluateConfig | None = None,
    engine: str = "local",
) -> Split:
    """Schema check, the task (given or inferred, with its reason) and the split,
    made by ``engine`` (lineageflow.engines), which holds the tables from here on;
    both tables are persisted by digest on this stage's run. The task decides
    the evaluation metric: one that does not fit it is refused here, before any
    training."""
    inputs = [(d.path, f"md5:{d.read_md5}") for d in data or []]
    params = cfg.model_dump() | {"target": target, "task": task_setting}
    if engine != "local":  # part of the stage key; local keys stay as they were
        params["engine"] = engine
    with stage_run(run, PREPARE.name, inputs=inputs, params=params) as (_, io):
        eng = get_engine(engine)
        split = io.reuse(lambda e: eng.load(e, run.tracking_uri))
        if split is not None:
            for f in frames:  # a frame pull_data read anyway is not needed
                if isinstance(f, Handoff):
                    f.drop()
        else:
            split = _split(eng, frames, target, cfg, task_setting, data or [], io)
        if evaluate is not None:
            check_metric(split.task, evaluate.metric)
            if chosen := evaluate.chosen(split.task):
                run_logger().info(chosen)
    return split


def _split(eng, frames, target, cfg, task_setting, data, io) -> Split:
    frames = [f.take() if isinstance(f, Handoff) else f for f in frames]
    split = eng.split(frames, target, cfg, task_setting)
    if sum(d.size or 0 for d in data) > 64 * 2**20:
        release_freed_memory()  # the raw frames are gone; the fit comes next
    mlflow.log_params(
        cfg.model_dump()
        | {"target": target, "task": split.task, "task_reason": split.task_reason}
    )
    if split.labels:
        mlflow.log_param("labels", json.dumps(split.labels, default=str)[:6000])
    mlflow.log_metrics(eng.sizes(split))
    split = eng.digested(split)
    persist_split_meta(split)
    uris = {}
    for part in ("train", "holdout"):
        uri = eng.persist(split, part)
        io.output(f"{part}_table", split.digests[part], uri=uri)
        uris[part] = uri
    return replace(split, uris=uris)
