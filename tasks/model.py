"""train and evaluate."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lineageflow import ml
from lineageflow.config import EvaluateConfig, TrainConfig
from lineageflow.errors import UserCodeError
from lineageflow.plots import write_plots
from lineageflow.tracking import RunRef, child_run, client


@dataclass(frozen=True)
class TrainedModel:
    model: Any
    model_uri: str  # models:/m-... (MLflow 3 logged model); register this, not runs:/
    run_id: str
    flavor: str


def _pip_requirements(flavor: str, custom: bool = False) -> list[str]:
    # Given explicitly: MLflow's inference of requirements spends 3-4.5 s in a
    # subprocess per log_model (measured here). A custom estimator may be any
    # library's: xgboost is listed too, as the project installs it.
    pkgs = ["mlflow", "numpy", "pandas", "scikit-learn", "cloudpickle"]
    if flavor == "xgboost" or custom:
        pkgs.append("xgboost")
    return [f"{p}=={version(p)}" for p in pkgs]


def autolog(flavor: str, disable: bool = False) -> None:
    import mlflow

    # Models are logged below, once, with a signature and pinned requirements.
    kw = {"log_models": False, "silent": True, "disable": disable}
    if flavor == "xgboost":
        mlflow.xgboost.autolog(log_input_examples=False, **kw)
    else:
        mlflow.sklearn.autolog(log_post_training_metrics=False, **kw)


# Never retried and never run in parallel threads: autolog state is process-global
# and two overlapping autologged fits lose the second run's data.
def _user_code(cfg: TrainConfig, workspace: str | None, split: ml.Split):
    """The workspace's factory/features functions, imported from the tree being
    trained (a reproduction's worktree holds the recorded commit's files)."""
    from lineageflow.code import load_callable

    refs = cfg.code_refs()
    if refs and workspace is None:
        raise UserCodeError("train.factory/features need the workspace path")
    fns = {
        role: load_callable(Path(workspace), ref, role) for role, ref in refs.items()
    }
    if "features" in fns:
        ml.check_features(fns["features"], refs["features"], split.X_train)
    return fns.get("factory"), fns.get("features")


def _fit(model, split: ml.Split, cfg: TrainConfig):
    if cfg.model != "custom":
        return ml.fit(model, split)
    from lineageflow.code import call_user

    return call_user(ml.fit, cfg.factory, "factory", model, split)


@task(name="train", cache_policy=NO_CACHE)
def train(
    split: ml.Split, cfg: TrainConfig, run: RunRef, workspace: str | None = None
) -> TrainedModel:
    import mlflow
    from mlflow.models import infer_signature

    factory, features = _user_code(cfg, workspace, split)
    # one pickled sklearn model when user code is inside it (cloudpickle carries
    # the user's module by value); xgboost's own format otherwise
    flavor = "xgboost" if cfg.model == "xgboost" and features is None else "sklearn"
    with child_run(run, "train") as active:
        autolog(flavor)
        t0 = time.perf_counter()
        try:
            model = _fit(ml.build_model(cfg, factory, features), split, cfg)
        finally:
            autolog(flavor, disable=True)
        fit_seconds = time.perf_counter() - t0
        # prefixed: sklearn's autolog of a Pipeline already logs its step `model`
        mlflow.log_params(
            {"lineageflow.model": cfg.model, "lineageflow.seed": cfg.seed}
            | {f"lineageflow.{k}": v for k, v in cfg.code_refs().items()}
        )
        head = split.X_train.head(200)
        # float columns in the signature: a missing value at serving time is then
        # a NaN, not a schema error (MLflow's own advice for integer columns)
        signature = infer_signature(head.astype("float64"), model.predict_proba(head))
        log_model = (
            mlflow.xgboost.log_model
            if flavor == "xgboost"
            else mlflow.sklearn.log_model
        )
        extra = {} if flavor == "xgboost" else {"serialization_format": "cloudpickle"}
        # sklearn's default skops format refuses RandomForest ("untrusted types")
        info = log_model(
            model,
            name="model",
            signature=signature,
            pip_requirements=_pip_requirements(flavor, custom=cfg.model == "custom"),
            **extra,
        )
        run_id = active.info.run_id
        mlflow.log_metrics(
            {
                "fit_seconds": fit_seconds,
                "log_model_seconds": time.perf_counter() - t0 - fit_seconds,
            }
        )
    return TrainedModel(model, info.model_uri, run_id, flavor)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(
    trained: TrainedModel, split: ml.Split, cfg: EvaluateConfig, run: RunRef
) -> dict[str, float]:
    """Holdout metrics and plots; the metrics also go onto the parent run."""
    import mlflow

    with child_run(run, "evaluate"):
        metrics = ml.score(trained.model, split.X_test, split.y_test)
        test_metrics = {f"test_{k}": v for k, v in metrics.items()}
        mlflow.log_metrics(test_metrics)
        with tempfile.TemporaryDirectory() as tmp:
            for png in write_plots(
                trained.model, split.X_test, split.y_test, Path(tmp)
            ):
                mlflow.log_artifact(str(png), artifact_path="plots")
    c = client(run.tracking_uri)
    for k, v in test_metrics.items():
        c.log_metric(run.run_id, k, v)
    return metrics
