"""Plain ML logic: split, fit, score. No Prefect, no MLflow.

Reading and validating tables lives in lineageflow.data.tabular, building models in
lineageflow.model.estimators."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from lineageflow.config import PrepareConfig
from lineageflow.data.tabular import infer_task
from lineageflow.data.tabular import validate_frame as validate_frame
from lineageflow.errors import DataError
from lineageflow.lineage.record import verify_input
from lineageflow.model.digests import PARALLEL_ROWS as PARALLEL_ROWS
from lineageflow.model.digests import row_hashes, table_digest

HIGHER_IS_BETTER = {
    "roc_auc": True,
    "accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}
REGRESSION_METRICS = ("rmse", "mae", "r2")


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    task: str = "binary"  # binary | multiclass | regression
    labels: list = field(default_factory=list)  # the data's classes, code order
    task_reason: str = ""
    target: str = "target"
    # content digests of the two tables (prepare's outputs), checked by every
    # stage that reads them: {"train": ..., "holdout": ...}
    digests: dict = field(default_factory=dict)
    # where prepare stored each table (artifact URIs of its Parquet files): the
    # source MLflow's Datasets panels name for "train" and "holdout"
    uris: dict = field(default_factory=dict)
    # the engine that holds the tables and runs split, fit and score on them
    # (lineageflow.engines): the stages after prepare call that one
    engine: str = "local"
    # what that engine holds the tables in when they are not the frames above
    # (the Dask engine: partitions on its cluster, lineageflow.engines.dask)
    data: Any = field(default=None, compare=False, repr=False)

    def sizes(self) -> dict[str, int]:
        return {"train_rows": len(self.X_train), "test_rows": len(self.X_test)}

    def parts(self, part: str) -> tuple[pd.DataFrame, pd.Series]:
        return (
            (self.X_train, self.y_train)
            if part == "train"
            else (self.X_test, self.y_test)
        )

    def table(self, part: str) -> pd.DataFrame:
        """One side as a single table, the target (as trained on) last."""
        X, y = self.parts(part)
        return X.assign(**{self.target: y})

    def with_digests(self) -> Split:
        return replace(
            self,
            digests={p: table_digest(*self.parts(p)) for p in ("train", "holdout")},
        )

    def verify(self, stage: str, part: str) -> str:
        """The table's digest, refused when it is not the one prepare recorded."""
        got = table_digest(*self.parts(part))
        verify_input(stage, f"{part}_table", got, self.digests.get(part))
        return got


def check_metric(task: str, metric: str | None) -> None:
    """The configured metric must fit the task (one line with the choices); an
    unset one is chosen for the task (EvaluateConfig.for_task)."""
    if metric is None:
        return
    regression = task == "regression"
    if regression != (metric in REGRESSION_METRICS):
        fits = (
            ", ".join(REGRESSION_METRICS)
            if regression
            else ", ".join(k for k in HIGHER_IS_BETTER if k not in REGRESSION_METRICS)
        )
        raise DataError(
            f"evaluate.metric {metric} does not fit a {task} task: set it to one "
            f"of {fits}"
        )


def encode_labels(y: pd.Series) -> tuple[pd.Series, list[Any]]:
    """Map labels to 0..k-1 (xgboost requires it); keep the original classes."""
    classes = label_order(y.unique().tolist())
    return apply_labels(y, classes), classes


def label_order(values: list) -> list:
    """The classes in code order: sorted within each type."""
    return sorted(values, key=lambda v: (str(type(v)), v))


def apply_labels(y: pd.Series, classes: list) -> pd.Series:
    """``y`` as codes 0..k-1 of ``classes`` (one partition of a table, or all)."""
    if classes == list(range(len(classes))):
        return y.astype("int64")
    mapping = {c: i for i, c in enumerate(classes)}
    return y.map(mapping).astype("int64")


def hash_test_mask(df: pd.DataFrame, test_size: float, seed: int) -> np.ndarray:
    """True for holdout rows, decided by each row's content and the seed alone."""
    # pandas' hash_key only salts object columns, so the seed is mixed in here
    # with the splitmix64 finalizer (uint64 arithmetic wraps, as intended).
    salt = np.uint64(int(hashlib.sha256(str(seed).encode()).hexdigest()[:16], 16))
    h = row_hashes(df, index=False) + salt
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return (h % np.uint64(1_000_000)) < np.uint64(round(test_size * 1_000_000))


def split_frame(
    df: pd.DataFrame, target: str, cfg: PrepareConfig, task_setting: str = "auto"
) -> Split:
    task, reason = infer_task(df[target], task_setting, target)
    if task == "regression":
        y, labels = df[target].astype("float64"), []
    else:
        y, labels = encode_labels(df[target])
    features = [c for c in df.columns if c != target]
    if cfg.method == "hash":
        test = hash_test_mask(df, cfg.test_size, cfg.seed)
        too_few = task != "regression" and y[~test].nunique() < 2
        if test.all() or not test.any() or too_few:
            raise cannot_split(len(df), cfg.test_size)
        # each side copied once from df: no whole-frame X copy first (peak memory)
        split = Split(
            df.loc[~test, features],
            df.loc[test, features],
            y[~test],
            y[test],
            task,
            labels,
            reason,
            target,
        )
    else:
        X = df[features]
        from sklearn.model_selection import train_test_split

        try:
            X_train, X_test, y_train, y_test = train_test_split(
                X,
                y,
                test_size=cfg.test_size,
                random_state=cfg.seed,
                stratify=None if task == "regression" else y,
            )
        except ValueError as exc:
            raise DataError(
                f"cannot split {len(df)} rows with test_size={cfg.test_size}: {exc}"
            ) from None
        split = Split(X_train, X_test, y_train, y_test, task, labels, reason, target)
    if task != "regression":
        only_test = sorted(set(split.y_test) - set(split.y_train))
        if only_test:
            raise only_in_holdout([labels[i] for i in only_test], target)
    return split


def cannot_split(rows: int, test_size: float) -> DataError:
    return DataError(
        f"cannot split {rows} rows with test_size={test_size}: one side would be "
        "empty or single-class; add rows or change test_size"
    )


def only_in_holdout(classes: list, target: str) -> DataError:
    return DataError(
        f"class(es) {classes[:5]} of '{target}' appear only in the holdout: add "
        "training rows of them, drop them, or use prepare.method: stratified"
    )


def fit(model, split: Split):
    model.fit(split.X_train, split.y_train)
    return model


def score(
    model, X: pd.DataFrame, y: pd.Series, task: str = "binary"
) -> dict[str, float]:
    """Holdout metrics. Classification: binary metrics on the positive class,
    macro otherwise (``y`` holds codes 0..k-1). Regression: rmse, mae, r2."""
    if task == "regression":
        return score_predictions(y, np.asarray(model.predict(X), dtype="float64"), task)
    return score_predictions(y, np.asarray(model.predict_proba(X)), task)


def score_predictions(y, predicted: np.ndarray, task: str) -> dict[str, float]:
    """``score`` from the predictions (regression) or class probabilities of
    every holdout row, however they were computed (in one process, or by
    partition on a cluster and joined in row order)."""
    from sklearn import metrics as m

    if task == "regression":
        pred = predicted
        return {
            "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
            "mae": float(m.mean_absolute_error(y, pred)),
            "r2": float(m.r2_score(y, pred)),
        }
    proba = predicted
    pred = proba.argmax(axis=1)
    binary = proba.shape[1] == 2
    avg = "binary" if binary else "macro"
    out = {
        "accuracy": m.accuracy_score(y, pred),
        "f1": m.f1_score(y, pred, average=avg, zero_division=0),
        "precision": m.precision_score(y, pred, average=avg, zero_division=0),
        "recall": m.recall_score(y, pred, average=avg, zero_division=0),
        "log_loss": m.log_loss(y, proba, labels=list(range(proba.shape[1]))),
    }
    try:
        out["roc_auc"] = (
            m.roc_auc_score(y, proba[:, 1])
            if binary
            else m.roc_auc_score(
                y, proba, multi_class="ovr", labels=list(range(proba.shape[1]))
            )
        )
    except ValueError:  # a single class in the holdout
        out["roc_auc"] = float("nan")
    return {k: float(v) for k, v in out.items()}


def metrics_digest(metrics: dict[str, float]) -> str:
    """sha256 of a stage's metrics as canonical JSON: its output digest."""
    blob = json.dumps(metrics, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()
