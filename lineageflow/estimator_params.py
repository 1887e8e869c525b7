"""Each built-in estimator's own section of params.yaml (``train.<model>``):
what lineageflow.model.estimators builds it with. A section of
lineageflow.config.TrainConfig, so it imports nothing heavy.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Params(BaseModel):
    # as lineageflow.config's sections: a typo is an error, a section a value
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class XGBoostParams(_Params):
    n_estimators: Annotated[int, Field(ge=1, le=10_000)] = 200
    max_depth: Annotated[int, Field(ge=1, le=32)] = 6
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    subsample: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    colsample_bytree: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    min_child_weight: Annotated[float, Field(ge=0.0)] = 1.0
    tree_method: Literal["hist", "approx", "exact"] = "hist"
    n_jobs: Annotated[int, Field(ge=1, le=256)] | None = None  # None = all cores


class RandomForestParams(_Params):
    n_estimators: Annotated[int, Field(ge=1, le=10_000)] = 200
    max_depth: Annotated[int, Field(ge=1, le=256)] | None = 12
    min_samples_leaf: Annotated[int, Field(ge=1)] = 5
    n_jobs: Annotated[int, Field(ge=1, le=256)] | None = None


class LogisticRegressionParams(_Params):
    C: Annotated[float, Field(gt=0.0)] = 1.0
    max_iter: Annotated[int, Field(ge=1)] = 1000
