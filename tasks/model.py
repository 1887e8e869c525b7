"""train and evaluate: thin declarations around lineageflow.model.ml, in the stage pattern."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.types.schema import AnyType, ColSpec, Schema
from prefect import task
from prefect.cache_policies import NO_CACHE

from lineageflow.config import EvaluateConfig, TrainConfig
from lineageflow.data.tabular import signature_frame
from lineageflow.engines import engine
from lineageflow.lineage.environment import imported, installed, pinned_requirements
from lineageflow.model import ml
from lineageflow.model.plots import write_plots
from lineageflow.model.sources import open_source
from lineageflow.pipeline import EVALUATE, TRAIN
from lineageflow.runs.artifacts import load_model, log_dataset, stored_model_digest
from lineageflow.runs.autolog import autolog
from lineageflow.runs.reuse import Earlier
from lineageflow.runs.stages import stage_run
from lineageflow.runs.store import client
from lineageflow.runs.tracking import RunRef
from lineageflow.tags import FITTED_MODULES, PARAM_PREFIX, PLOTS_DIR


@dataclass(frozen=True)
class TrainedModel:
    model: Any
    model_uri: str  # models:/m-... (MLflow 3 logged model); register this, not runs:/
    run_id: str
    flavor: str
    digest: str = ""  # sha256 of the stored model.pkl (lineageflow.runs.stages)
    model_id: str | None = None
    # top-level modules imported where it was fitted, beyond this process (a
    # notebook's kernel): the record's environment names their distributions
    modules: tuple[str, ...] = ()


def _pip_requirements(modules: tuple[str, ...] = ()) -> list[str]:
    # Given explicitly: MLflow's inference of requirements spends 3-4.5 s in a
    # subprocess per log_model (measured here). xgboost is listed for every model:
    # a custom estimator may use it, and the project installs it anyway.
    pkgs = ["mlflow", "numpy", "pandas", "scikit-learn", "cloudpickle", "xgboost"]
    # + every library installed from git that this process or the model source's
    # kernel (``modules``) imported, pinned by its commit id
    return pinned_requirements(
        [f"{p}=={version(p)}" for p in pkgs], installed(), imported(modules)
    )


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Hold a library logger's warnings back for one call. Used for MLflow's
    per-call advice to use skops instead of (cloud)pickle: the project pins the
    model's bytes by digest and verifies them before every load instead."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _raw_signature(head, predictions):
    """The raw rows' schema: ints long, floats double, text string. A pandas
    ``category`` column is declared ``Any``: MLflow's schema enforcement refuses
    category for ``string`` (it converts it under ``Any``), and Parquet files
    written from categoricals read back as category."""
    with warnings.catch_warnings():  # the integer-columns hint: long is meant
        warnings.simplefilter("ignore", UserWarning)
        sig = infer_signature(signature_frame(head), predictions)
    cats = {c for c in head.columns if isinstance(head[c].dtype, pd.CategoricalDtype)}
    if cats:
        sig.inputs = Schema(
            [
                ColSpec(AnyType(), spec.name) if spec.name in cats else spec
                for spec in sig.inputs.inputs
            ]
        )
    return sig


# Never retried and never run in parallel threads: autolog state is process-global
# and two overlapping autologged fits lose the second run's data.
@task(name=TRAIN.name, cache_policy=NO_CACHE)
def train(
    split: ml.Split, cfg: TrainConfig, run: RunRef, workspace: str | None = None
) -> TrainedModel:
    """Fit on the raw training rows; log one model that serves raw rows.

    What builds and fits the estimator is the model source ``train.model``
    names (lineageflow.model.sources); where it fits, the split's engine. One
    scikit-learn pipeline, pickled with cloudpickle: the raw-frame step, the
    label decoder and any user code travel inside it *by value*, so the model
    loads where neither lineageflow nor the workspace is importable. (sklearn's
    default skops format also refuses RandomForest: "untrusted types".)"""
    source = open_source(cfg, workspace, split)
    eng = engine(split.engine)
    lib = source.autolog_library()
    inputs = [("train_table", split.digests.get("train", ""))]
    # where it fits is part of what it fits: a cluster's shape shapes the model
    shape = eng.fit_shape()
    params = cfg.model_dump(mode="json") | shape if shape else cfg
    with stage_run(run, TRAIN.name, inputs=inputs, params=params) as (active, io):
        eng.verify(split, TRAIN.name, "train")
        reused = io.reuse(lambda e: _earlier_model(e, run))
        if reused is not None:
            return replace(reused, run_id=active.info.run_id)
        autolog(lib)
        t0 = time.perf_counter()
        try:
            model = source.fit(split, eng)
        finally:
            autolog(lib, disable=True)
        fit_seconds = time.perf_counter() - t0
        # prefixed: sklearn's autolog of a Pipeline already logs its step `model`
        code = {"seed": cfg.seed, "task": split.task} | source.code()
        mlflow.log_params({PARAM_PREFIX + k: v for k, v in code.items()})
        if source.modules:  # for a run that reuses this stage: its record names them
            mlflow.log_dict({"modules": list(source.modules)}, FITTED_MODULES)
        # the schema of the raw rows (ints stay long, text stays string): what
        # pandas reads from the training data is accepted as it is
        head = eng.sample(split, "train")[0].head(200)
        with _quiet("mlflow.sklearn"):  # its pickle advice, once per run
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=_raw_signature(head, model.predict(head)),
                pip_requirements=_pip_requirements(source.modules),
                serialization_format="cloudpickle",
            )
        stored = stored_model_digest(info.model_uri, run.tracking_uri)
        digest = io.output("model", stored, uri=info.model_uri)
        log_dataset(
            eng.table(split, "train"),
            "train",
            split.digests["train"],
            "training",
            source=split.uris.get("train"),
            model_id=info.model_id,
        )
        mlflow.log_metrics(
            {
                "fit_seconds": fit_seconds,
                "log_model_seconds": time.perf_counter() - t0 - fit_seconds,
            }
        )
    return TrainedModel(
        model,
        info.model_uri,
        active.info.run_id,
        "sklearn",
        digest,
        info.model_id,
        source.modules,
    )


def _earlier_model(earlier: Earlier, run: RunRef) -> TrainedModel:
    """The model an earlier train stage logged under the same key, loaded from its
    stored bytes and refused unless they have the recorded digest."""
    out = earlier.output("model")
    if out is None or not out.get("uri", "").startswith("models:/m-"):
        raise LookupError("it logged no model")
    model = load_model(out["uri"], out["digest"], "train", run.tracking_uri)
    model_id = out["uri"].removeprefix("models:/")
    return TrainedModel(
        model,
        out["uri"],
        earlier.run_id,
        "sklearn",
        out["digest"],
        model_id,
        _fitted_modules(earlier.run_id, run.tracking_uri),
    )


def _fitted_modules(run_id: str, tracking_uri: str) -> tuple[str, ...]:
    """What an earlier train run recorded as imported where it fitted (none
    when it fitted in its own process)."""
    c = client(tracking_uri)
    if not any(a.path == FITTED_MODULES for a in c.list_artifacts(run_id)):
        return ()
    with tempfile.TemporaryDirectory() as tmp:
        path = c.download_artifacts(run_id, FITTED_MODULES, tmp)
        return tuple(json.loads(Path(path).read_text())["modules"])


@task(name=EVALUATE.name, cache_policy=NO_CACHE)
def evaluate(
    trained: TrainedModel, split: ml.Split, cfg: EvaluateConfig, run: RunRef
) -> dict[str, float]:
    """Holdout metrics and plots; the metrics also go onto the parent run and
    onto the logged model (MLflow's Logged models panel)."""
    cfg = cfg.for_task(split.task)  # an unset metric as the task chose it

    inputs = [
        ("model", trained.digest),
        ("holdout_table", split.digests.get("holdout", "")),
    ]
    eng = engine(split.engine)
    with stage_run(run, EVALUATE.name, inputs=inputs, params=cfg) as (_, io):
        # the model as stored, by digest: what is scored is what gets registered
        model = load_model(
            trained.model_uri, trained.digest, "evaluate", run.tracking_uri
        )
        eng.verify(split, EVALUATE.name, "holdout")
        metrics = eng.score(model, split)
        test_metrics = {f"test_{k}": v for k, v in metrics.items()}
        holdout = log_dataset(
            eng.table(split, "holdout"),
            "holdout",
            split.digests["holdout"],
            "holdout",
            source=split.uris.get("holdout"),
            model_id=trained.model_id,
        )
        # on the stage's run and, linked, on the logged model with the dataset
        # they were scored on (MLflow's "Datasets used" of the logged model)
        mlflow.log_metrics(test_metrics, model_id=trained.model_id, dataset=holdout)
        with tempfile.TemporaryDirectory() as tmp:
            X, y = eng.sample(split, "holdout")
            note = eng.sample_note(split, "holdout")
            for png in write_plots(model, X, y, Path(tmp), split.task, note):
                mlflow.log_artifact(str(png), artifact_path=PLOTS_DIR)
        io.output("metrics", ml.metrics_digest(test_metrics))
    c = client(run.tracking_uri)
    for k, v in test_metrics.items():
        c.log_metric(run.run_id, k, v)
    return metrics
