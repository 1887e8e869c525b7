"""The estimators lineageflow builds: what the registry will serve.

Every model takes raw rows (ints, floats, strings, NaNs) through the raw-frame
step of lineageflow.model.modelparts and, for a classifier, answers in the data's own
labels. Plain scikit-learn / xgboost objects; no Prefect, no MLflow.

Each estimator's library is imported when that estimator is built: a run pays
for its own model only (xgboost 2.4 s, sklearn.ensemble 2.2 s to import here,
measured with ``python -X importtime``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from lineageflow.config import TrainConfig
from lineageflow.errors import DataError, UserCodeError
from lineageflow.lineage.code import call_user
from lineageflow.model.modelparts import LabeledClassifier, RawFrame


def build_model(
    cfg: TrainConfig,
    factory: Callable[..., Any] | None = None,
    features: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    task: str = "binary",
    labels: list | None = None,
):
    """The unfitted model that the registry will serve: it takes raw rows (ints,
    floats, strings, NaNs) and, for a classifier, predicts the data's own labels.

    ``factory``/``features`` are the workspace's own functions when params.yaml
    names them (see lineageflow.lineage.code); a custom estimator gets the raw columns.
    """
    from sklearn.pipeline import Pipeline

    if cfg.model == "custom":
        steps = [("model", _custom_model(cfg, factory, task))]
    else:
        steps = _builtin_steps(cfg, task)
    if features is not None:
        from sklearn.preprocessing import FunctionTransformer

        steps.insert(0, ("features", FunctionTransformer(features, validate=False)))
    model = steps[0][1] if len(steps) == 1 else Pipeline(steps)
    if task == "regression":
        return model
    return LabeledClassifier(model, list(labels if labels is not None else [0, 1]))


def _custom_model(cfg: TrainConfig, factory, task: str = "binary"):

    if factory is None:
        raise UserCodeError(f"train.factory {cfg.factory} was not loaded")
    model = call_user(factory, cfg.factory, "factory", **cfg.estimator_params())
    regression = task == "regression"
    need = ("fit", "predict") if regression else ("fit", "predict_proba")
    missing = [m for m in need if not callable(getattr(model, m, None))]
    if missing:
        kind, example = (
            ("regressor", "HistGradientBoostingRegressor()")
            if regression
            else ("classifier", "HistGradientBoostingClassifier()")
        )
        raise UserCodeError(
            f"train.factory {cfg.factory} returned {type(model).__name__}, not a "
            f"{kind} (no {' or '.join(missing)}): return an unfitted "
            f"scikit-learn-style estimator, e.g. {example}"
        )
    return model


def _builtin_steps(cfg: TrainConfig, task: str) -> list[tuple[str, Any]]:
    """Raw-frame casting, then the estimator: xgboost reads categoricals and
    missing values natively; scikit-learn models get imputation and one-hot
    encoding as steps of the same pipeline."""
    params = cfg.estimator_params()
    regression = task == "regression"
    if cfg.model == "xgboost":
        from xgboost import XGBClassifier, XGBRegressor

        cls = XGBRegressor if regression else XGBClassifier
        metric = {"binary": "logloss", "multiclass": "mlogloss"}.get(task, "rmse")
        return [
            ("raw", RawFrame("category")),
            (
                "model",
                cls(
                    **params,
                    random_state=cfg.seed,
                    eval_metric=metric,
                    enable_categorical=True,
                ),
            ),
        ]
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [SimpleImputer(strategy="median")]
    if cfg.model == "logistic_regression":
        if regression:
            raise DataError(
                "train.model logistic_regression is a classifier but the task is "
                "regression: set train.model to xgboost or random_forest"
            )
        from sklearn.linear_model import LogisticRegression

        numeric.append(StandardScaler())
        estimator = LogisticRegression(**params, random_state=cfg.seed)
    else:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestRegressor if regression else RandomForestClassifier
        estimator = cls(**params, random_state=cfg.seed)
    encode = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(*numeric),
                make_column_selector(dtype_include="number"),
            ),
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_include=object),
            ),
        ],
        sparse_threshold=0.0,
    )
    return [("raw", RawFrame("object")), ("encode", encode), ("model", estimator)]


def xgb_classifier(params: dict, seed: int):
    """A plain XGBClassifier of a sweep configuration (XGBClassifier's own params)."""
    from xgboost import XGBClassifier

    return XGBClassifier(**params, random_state=seed, eval_metric="logloss")
