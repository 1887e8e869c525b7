"""train and evaluate: thin declarations around lineageflow.model.ml, in the stage pattern."""

from __future__ import annotations

import contextlib
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
from lineageflow.errors import UserCodeError
from lineageflow.lineage.code import call_user, check_features, load_callable
from lineageflow.model import ml
from lineageflow.model.plots import write_plots
from lineageflow.runs.artifacts import load_model, log_dataset, stored_model_digest
from lineageflow.runs.autolog import autolog
from lineageflow.runs.reuse import Earlier
from lineageflow.runs.stages import stage_run
from lineageflow.runs.store import client
from lineageflow.runs.tracking import RunRef


@dataclass(frozen=True)
class TrainedModel:
    model: Any
    model_uri: str  # models:/m-... (MLflow 3 logged model); register this, not runs:/
    run_id: str
    flavor: str
    digest: str = ""  # sha256 of the stored model.pkl (lineageflow.runs.stages)
    model_id: str | None = None


def _pip_requirements() -> list[str]:
    # Given explicitly: MLflow's inference of requirements spends 3-4.5 s in a
    # subprocess per log_model (measured here). xgboost is listed for every model:
    # a custom estimator may use it, and the project installs it anyway.
    pkgs = ["mlflow", "numpy", "pandas", "scikit-learn", "cloudpickle", "xgboost"]
    return [f"{p}=={version(p)}" for p in pkgs]


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


def _user_code(cfg: TrainConfig, workspace: str | None, split: ml.Split):
    """The workspace's factory/features functions, imported from the tree being
    trained (a reproduction's worktree holds the recorded commit's files)."""
    refs = cfg.code_refs()
    if refs and workspace is None:
        raise UserCodeError("train.factory/features need the workspace path")
    fns = {
        role: load_callable(Path(workspace), ref, role) for role, ref in refs.items()
    }
    if "features" in fns:
        check_features(fns["features"], refs["features"], split.X_train)
    return fns.get("factory"), fns.get("features")


def _fit(model, split: ml.Split, cfg: TrainConfig):
    if cfg.model != "custom":
        return ml.fit(model, split)
    return call_user(ml.fit, cfg.factory, "factory", model, split)


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
@task(name="train", cache_policy=NO_CACHE)
def train(
    split: ml.Split, cfg: TrainConfig, run: RunRef, workspace: str | None = None
) -> TrainedModel:
    """Fit on the raw training rows; log one model that serves raw rows."""
    factory, features = _user_code(cfg, workspace, split)
    # One scikit-learn pipeline, pickled with cloudpickle: the raw-frame step, the
    # label decoder and any user code travel inside it *by value*, so the model
    # loads where neither lineageflow nor the workspace is importable. (sklearn's
    # default skops format also refuses RandomForest: "untrusted types".)
    # here, not at the top: scikit-learn takes 0.8 s to import (measured), and a
    # run that fits nothing (the nightly check, nothing changed) must not pay it
    from lineageflow.model import estimators, modelparts

    modelparts.register()
    lib = "xgboost" if cfg.model == "xgboost" else "sklearn"  # for autolog
    inputs = [("train_table", split.digests.get("train", ""))]
    with stage_run(run, "train", inputs=inputs, params=cfg) as (active, io):
        split.verify("train", "train")
        reused = io.reuse(lambda e: _earlier_model(e, run))
        if reused is not None:
            return replace(reused, run_id=active.info.run_id)
        autolog(lib)
        t0 = time.perf_counter()
        try:
            model = estimators.build_model(
                cfg, factory, features, split.task, split.labels
            )
            model = _fit(model, split, cfg)
        finally:
            autolog(lib, disable=True)
        fit_seconds = time.perf_counter() - t0
        # prefixed: sklearn's autolog of a Pipeline already logs its step `model`
        mlflow.log_params(
            {
                "lineageflow.model": cfg.model,
                "lineageflow.seed": cfg.seed,
                "lineageflow.task": split.task,
            }
            | {f"lineageflow.{k}": v for k, v in cfg.code_refs().items()}
        )
        # the schema of the raw rows (ints stay long, text stays string): what
        # pandas reads from the training data is accepted as it is
        head = split.X_train.head(200)
        with _quiet("mlflow.sklearn"):  # its pickle advice, once per run
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=_raw_signature(head, model.predict(head)),
                pip_requirements=_pip_requirements(),
                serialization_format="cloudpickle",
            )
        stored = stored_model_digest(info.model_uri, run.tracking_uri)
        digest = io.output("model", stored, uri=info.model_uri)
        log_dataset(
            split.table("train"),
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
        model, info.model_uri, active.info.run_id, "sklearn", digest, info.model_id
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
        model, out["uri"], earlier.run_id, "sklearn", out["digest"], model_id
    )


@task(name="evaluate", cache_policy=NO_CACHE)
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
    with stage_run(run, "evaluate", inputs=inputs, params=cfg) as (_, io):
        # the model as stored, by digest: what is scored is what gets registered
        model = load_model(
            trained.model_uri, trained.digest, "evaluate", run.tracking_uri
        )
        split.verify("evaluate", "holdout")
        metrics = ml.score(model, split.X_test, split.y_test, split.task)
        test_metrics = {f"test_{k}": v for k, v in metrics.items()}
        holdout = log_dataset(
            split.table("holdout"),
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
            for png in write_plots(
                model, split.X_test, split.y_test, Path(tmp), split.task
            ):
                mlflow.log_artifact(str(png), artifact_path="plots")
        io.output("metrics", ml.metrics_digest(test_metrics))
    c = client(run.tracking_uri)
    for k, v in test_metrics.items():
        c.log_metric(run.run_id, k, v)
    return metrics
