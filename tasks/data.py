"""pull_data and prepare."""

from __future__ import annotations

import json
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from lineageflow import ml
from lineageflow.config import PrepareConfig
from lineageflow.dvcio import DataVersion, pull_dataset
from lineageflow.tabular import read_table, signature_frame, validate_frame
from lineageflow.tracking import RunRef, child_run
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
) -> tuple[DataVersion, pd.DataFrame]:
    """DVC-pull one dataset if absent, verify its md5, read it, log it as an input."""
    import mlflow
    from mlflow.models import infer_signature

    ws = Workspace(Path(workspace))
    data_path, dvc_file = ws.dataset(dataset)
    tags = {
        "lineageflow.dataset": dataset,
        "lineageflow.thread": threading.current_thread().name,
    }
    with child_run(run, "pull_data", tags=tags):
        t0 = time.perf_counter()
        version = pull_dataset(ws.root, data_path, dvc_file, remote)
        t1 = time.perf_counter()
        df, fmt = read_table(data_path)
        version = replace(version, format=fmt)
        t2 = time.perf_counter()
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
        with warnings.catch_warnings():
            # a local path matches two equivalent MLflow source types; either is fine
            warnings.simplefilter("ignore", UserWarning)
            # (and the integer-columns hint concerns serving, not a logged input)
            ds = mlflow.data.from_pandas(
                df, source=str(data_path), name=dataset, digest=version.md5
            )
            # MLflow infers the dataset schema over every cell: 11.9 s for 500k x 41
            # (measured). A frame's dtypes decide it, so infer it from a sample and
            # seed the cached property.
            ds.__dict__["schema"] = infer_signature(
                signature_frame(df.head(1000))
            ).inputs
            mlflow.log_input(ds, context="training")
    return version, df


@task(name="prepare", cache_policy=NO_CACHE)
def prepare(
    frames: list[pd.DataFrame],
    target: str,
    cfg: PrepareConfig,
    run: RunRef,
    task_setting: str = "auto",
) -> ml.Split:
    """Schema check, the task (given or inferred, with its reason) and the split."""
    import mlflow

    with child_run(run, "prepare"):
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        validate_frame(df, target)
        split = ml.split_frame(df, target, cfg, task_setting)
        mlflow.log_params(
            cfg.model_dump()
            | {"target": target, "task": split.task, "task_reason": split.task_reason}
        )
        if split.labels:
            mlflow.log_param("labels", json.dumps(split.labels, default=str)[:6000])
        mlflow.log_metrics(split.sizes())
        mlflow.set_tags(
            {
                "split.train_digest": ml.frame_digest(split.X_train),
                "split.test_digest": ml.frame_digest(split.X_test),
            }
        )
    return split
