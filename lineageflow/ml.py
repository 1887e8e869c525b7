"""Plain ML logic: read, validate, split, build, fit, score. No Prefect, no MLflow."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lineageflow.config import EvaluateConfig, PrepareConfig, TrainConfig
from lineageflow.errors import DataError, UserCodeError
from lineageflow.lineage import Check

HIGHER_IS_BETTER = {
    "roc_auc": True,
    "accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "log_loss": False,
}


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series

    def sizes(self) -> dict[str, int]:
        return {"train_rows": len(self.X_train), "test_rows": len(self.X_test)}


def read_dataset(path: Path) -> pd.DataFrame:
    """Read a CSV file, or every ``*.csv`` of a directory in name order."""
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path} holds no .csv files: add data and run `dvc add`")
    try:
        frames = [pd.read_csv(f) for f in files]
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: add rows and run `dvc add`") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not readable CSV: {exc}".splitlines()[0]) from None
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def validate_frame(df: pd.DataFrame, target: str, name: str = "dataset") -> None:
    """Refuse data no classifier should be trained on, with a fix in the message."""
    if df.empty:
        raise DataError(f"{name} has no rows: add data and run `dvc add`")
    if target not in df.columns:
        cols = ", ".join(map(str, df.columns[:8]))
        raise DataError(
            f"target column '{target}' is not in {name} (columns: {cols}): "
            "set data.target in params.yaml"
        )
    n_nan = int(df[target].isna().sum())
    if n_nan:
        raise DataError(
            f"{name} has {n_nan} rows with a missing '{target}' label: "
            "drop or label them, then `dvc add`"
        )
    classes = df[target].nunique()
    if classes < 2:
        raise DataError(
            f"{name} has a single class in '{target}' ({df[target].iloc[0]!r}): "
            "a classifier needs at least two"
        )
    features = df.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"{name} has no feature columns besides '{target}'")
    bad = [
        c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
    ]
    if bad:
        raise DataError(
            f"{name} has non-numeric feature columns {bad[:5]}: "
            "encode them as numbers before `dvc add`"
        )


def encode_labels(y: pd.Series) -> tuple[pd.Series, list[Any]]:
    """Map labels to 0..k-1 (xgboost requires it); keep the original classes."""
    classes = sorted(y.unique().tolist())
    if classes == list(range(len(classes))):
        return y.astype("int64"), classes
    mapping = {c: i for i, c in enumerate(classes)}
    return y.map(mapping).astype("int64"), classes


def hash_test_mask(df: pd.DataFrame, test_size: float, seed: int) -> np.ndarray:
    """True for holdout rows, decided by each row's content and the seed alone."""
    # pandas' hash_key only salts object columns, so the seed is mixed in here
    # with the splitmix64 finalizer (uint64 arithmetic wraps, as intended).
    salt = np.uint64(int(hashlib.sha256(str(seed).encode()).hexdigest()[:16], 16))
    h = pd.util.hash_pandas_object(df, index=False).to_numpy() + salt
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return (h % np.uint64(1_000_000)) < np.uint64(round(test_size * 1_000_000))


def split_frame(df: pd.DataFrame, target: str, cfg: PrepareConfig) -> Split:
    y, _ = encode_labels(df[target])
    X = df.drop(columns=[target])
    if cfg.method == "hash":
        test = hash_test_mask(df, cfg.test_size, cfg.seed)
        if test.all() or not test.any() or y[~test].nunique() < 2:
            raise DataError(
                f"cannot split {len(df)} rows with test_size={cfg.test_size}: one "
                "side would be empty or single-class; add rows or change test_size"
            )
        return Split(X[~test], X[test], y[~test], y[test])
    from sklearn.model_selection import train_test_split

    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=cfg.test_size, random_state=cfg.seed, stratify=y
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(df)} rows with test_size={cfg.test_size}: {exc}"
        ) from None
    return Split(X_train, X_test, y_train, y_test)


def frame_digest(df: pd.DataFrame | pd.Series) -> str:
    """Content digest of a frame (row order and values), independent of pickling."""
    hashed = pd.util.hash_pandas_object(df, index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def build_model(
    cfg: TrainConfig,
    factory: Callable[..., Any] | None = None,
    features: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
):
    """The unfitted estimator; ``factory``/``features`` are the workspace's own
    functions when params.yaml names them (see lineageflow.code)."""
    model = (
        _builtin_model(cfg) if cfg.model != "custom" else _custom_model(cfg, factory)
    )
    if features is None:
        return model
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    # inside the logged model, so the registered model takes the raw columns
    return Pipeline(
        [("features", FunctionTransformer(features, validate=False)), ("model", model)]
    )


def _custom_model(cfg: TrainConfig, factory):
    from lineageflow.code import call_user

    if factory is None:
        raise UserCodeError(f"train.factory {cfg.factory} was not loaded")
    model = call_user(factory, cfg.factory, "factory", **cfg.estimator_params())
    missing = [
        m for m in ("fit", "predict_proba") if not callable(getattr(model, m, None))
    ]
    if missing:
        raise UserCodeError(
            f"train.factory {cfg.factory} returned {type(model).__name__}, not a "
            f"classifier (no {' or '.join(missing)}): return an unfitted "
            "scikit-learn-style estimator, e.g. HistGradientBoostingClassifier()"
        )
    return model


def check_features(features, ref: str, X: pd.DataFrame) -> None:
    """Run the user's feature function on a few rows first: a wrong return type
    is one line here instead of a traceback deep inside the fit."""
    from lineageflow.code import call_user

    out = call_user(features, ref, "features", X.head(5).copy())
    if not isinstance(out, pd.DataFrame) or len(out) != min(5, len(X)):
        raise UserCodeError(
            f"train.features {ref} must return a DataFrame with one row per input "
            f"row (got {type(out).__name__}): fix it and commit"
        )


def _builtin_model(cfg: TrainConfig):
    params = cfg.estimator_params()
    if cfg.model == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(**params, random_state=cfg.seed, eval_metric="logloss")
    if cfg.model == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(**params, random_state=cfg.seed)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(**params, random_state=cfg.seed)
    )


def fit(model, split: Split):
    model.fit(split.X_train, split.y_train)
    return model


def score(model, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Holdout metrics; binary metrics on the positive class, macro otherwise."""
    from sklearn import metrics as m

    proba = model.predict_proba(X)
    pred = np.asarray(proba).argmax(axis=1)
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
            else m.roc_auc_score(y, proba, multi_class="ovr")
        )
    except ValueError:  # a single class in the holdout
        out["roc_auc"] = float("nan")
    return {k: float(v) for k, v in out.items()}


def quality_gate(
    metrics: dict[str, float],
    cfg: EvaluateConfig,
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
) -> list[Check]:
    """Threshold on the configured metric, then champion/challenger on one holdout."""
    name, higher = cfg.metric, HIGHER_IS_BETTER[cfg.metric]
    value = metrics.get(name, float("nan"))
    ok = value >= cfg.threshold if higher else value <= cfg.threshold
    op = ">=" if higher else "<="
    results = [
        Check(
            "quality_threshold",
            bool(ok),
            f"{name} {value:.4f} {op} threshold {cfg.threshold}"
            if ok
            else f"{name} {value:.4f} misses the threshold {op} {cfg.threshold}: "
            "improve the model or data, or lower evaluate.threshold",
        )
    ]
    if champion is None:
        results.append(Check("champion", True, "no Staging version to beat"))
        return results
    best = champion.get(name, float("nan"))
    tol = cfg.champion_tolerance
    beats = value >= best - tol if higher else value <= best + tol
    results.append(
        Check(
            "champion",
            bool(beats),
            f"{name} {value:.4f} vs Staging v{champion_version} {best:.4f} "
            "on this holdout"
            if beats
            else f"{name} {value:.4f} is worse than Staging v{champion_version} "
            f"({best:.4f}) on this holdout: keep the champion, or raise "
            "evaluate.champion_tolerance",
        )
    )
    return results
