"""The pieces that travel *inside* a logged model, so it takes raw rows.

- ``RawFrame`` casts a raw frame (as pandas reads it: ints, floats, strings,
  NaNs) to what the estimator was fitted on: float columns as they are, other
  numeric columns as float64,
  text / category columns as categoricals with the training categories (an
  unseen value becomes missing), columns in training order.
- ``LabeledClassifier`` trains on codes 0..k-1 (xgboost requires them) and
  answers ``predict`` in the data's own labels.

This module is pickled *by value* into the model (see ``register``), so
``mlflow.pyfunc.load_model`` needs neither lineageflow nor the workspace.
Keep it free of imports from the rest of lineageflow.
"""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin


def register() -> None:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def is_categorical(s: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return False
    return isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s)


class RawFrame(TransformerMixin, BaseEstimator):
    """Raw rows -> the fitted columns and dtypes.

    ``categories_as="category"`` keeps pandas categoricals (xgboost's native
    categorical support); ``"object"`` gives strings with None for missing, for
    scikit-learn's imputer and one-hot encoder.
    """

    def __init__(self, categories_as: str = "category"):
        self.categories_as = categories_as

    def fit(self, X: pd.DataFrame, y=None):
        self.columns_ = [str(c) for c in X.columns]
        self.categories_: dict[str, list[str]] = {}
        for c in X.columns:
            if is_categorical(X[c]):
                values = X[c].dropna().astype(str).unique().tolist()
                self.categories_[str(c)] = sorted(values)
        return self

    @property
    def categorical_columns(self) -> list[str]:
        return [c for c in self.columns_ if c in self.categories_]

    @property
    def numeric_columns(self) -> list[str]:
        return [c for c in self.columns_ if c not in self.categories_]

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = pd.DataFrame(X)
        if any(not isinstance(c, str) for c in X.columns):
            X = X.rename(columns=str)
        missing = [c for c in self.columns_ if c not in X.columns]
        if missing:
            raise ValueError(f"input lacks the model's columns {missing[:5]}")
        if list(X.columns) != self.columns_:
            X = X[self.columns_]
        casts = {}
        for c in self.columns_:
            col = X[c]
            if c in self.categories_:
                text = col.astype("string").astype(object).where(col.notna(), None)
                cat = pd.Categorical(text, categories=self.categories_[c])
                casts[c] = cat if self.categories_as == "category" else _as_object(cat)
            elif not pd.api.types.is_float_dtype(col):
                # ints, bools, text sent for a numeric column: float64 (NaN-able);
                # float columns pass untouched (no float32 -> float64 copy: it
                # cost xgboost 2 s on 400k x 40, measured)
                casts[c] = pd.to_numeric(col, errors="coerce").astype("float64")
        return X.assign(**casts) if casts else X

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.columns_, dtype=object)


def _as_object(cat: pd.Categorical) -> np.ndarray:
    arr = np.asarray(cat.astype(object), dtype=object)
    arr[pd.isna(cat)] = "__missing__"
    return arr


class LabeledClassifier(ClassifierMixin, BaseEstimator):
    """Wrap a classifier fitted on codes 0..k-1; ``predict`` returns labels."""

    def __init__(self, estimator: Any = None, labels: list | None = None):
        self.estimator = estimator
        self.labels = labels

    def fit(self, X, y):
        self.estimator.fit(X, y)
        self.classes_ = np.asarray(self.labels, dtype=object)
        return self

    def predict_proba(self, X):
        return self.estimator.predict_proba(X)

    def predict(self, X):
        codes = np.asarray(self.predict_proba(X)).argmax(axis=1)
        out = np.asarray(self.labels, dtype=object)[codes]
        # labels of one numeric type come back as that type, not as objects
        try:
            return out.astype(np.asarray(self.labels).dtype)
        except (TypeError, ValueError):
            return out
