"""The ``train`` section of params.yaml: which model source builds the estimator
(lineageflow.model.sources) and what it is built with. A section of
lineageflow.config.PipelineConfig, so it imports nothing heavy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from lineageflow.estimator_params import (
    LogisticRegressionParams,
    RandomForestParams,
    XGBoostParams,
)

# "models.py:build_model": a Python file committed in the workspace, and a function
CODE_REF_RE = re.compile(r"^(?P<file>[\w./-]+\.py):(?P<function>[A-Za-z_]\w*)$")
NOTEBOOK_SUFFIXES = (".ipynb", ".py")
# the notebook's keys: in the resolved params (and so in params_sha256, the stage
# keys and the change key) only when ``model: notebook``, so a config written
# before notebooks existed keeps its digests
NOTEBOOK_KEYS = ("notebook", "notebook_params", "notebook_timeout")


def _relative(value: str, key: str, shape: str) -> Path | None:
    pure = Path(value)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"{key} must be {shape} relative to the workspace root")
    return pure


def _code_ref(value: str | None, key: str) -> str | None:
    if value is None:
        return None
    shape = "'<file>.py:<function>'"
    m = CODE_REF_RE.match(value.strip())
    if not m:
        raise ValueError(
            f"{key} must be {shape} relative to the workspace root, "
            "e.g. models.py:build_model"
        )
    _relative(m.group("file"), key, f"{shape}, e.g. models.py:build_model,")
    return value.strip()


class TrainConfig(BaseModel):
    # as lineageflow.config's sections: a typo is an error, a section a value
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    model: Literal[
        "xgboost", "random_forest", "logistic_regression", "custom", "notebook"
    ] = "xgboost"
    seed: int = 42
    # auto: from the target (text or few integer values -> classes, else regression)
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    xgboost: XGBoostParams = XGBoostParams()
    random_forest: RandomForestParams = RandomForestParams()
    logistic_regression: LogisticRegressionParams = LogisticRegressionParams()
    # model: custom -> the estimator comes from the workspace's own code, pinned by
    # the workspace commit: `factory` returns an unfitted estimator, called with
    # the `custom` mapping as keyword arguments.
    factory: str | None = None
    custom: dict[str, Any] = Field(default_factory=dict)
    # optional DataFrame -> DataFrame function applied inside the logged model
    features: str | None = None
    # model: notebook -> a committed notebook (.ipynb, or a .py notebook with
    # `# %%` cells or a Databricks export) fits the estimator, run by papermill;
    # `notebook_params` reaches it as `params`; timeout in seconds (None: none)
    notebook: str | None = None
    notebook_params: dict[str, Any] = Field(default_factory=dict)
    notebook_timeout: Annotated[int, Field(ge=1)] | None = None

    @field_validator("factory")
    @classmethod
    def _factory_ref(cls, v: str | None) -> str | None:
        return _code_ref(v, "train.factory")

    @field_validator("features")
    @classmethod
    def _features_ref(cls, v: str | None) -> str | None:
        return _code_ref(v, "train.features")

    @field_validator("notebook")
    @classmethod
    def _notebook_path(cls, v: str | None) -> str | None:
        if v is None:
            return None
        shape = "a notebook path (.ipynb or .py), e.g. notebooks/train.ipynb,"
        path = _relative(v.strip(), "train.notebook", shape)
        if path.suffix not in NOTEBOOK_SUFFIXES:
            raise ValueError(
                f"train.notebook must be {shape} relative to the workspace root"
            )
        return v.strip()

    @model_validator(mode="after")
    def _source_needs_its_code(self) -> TrainConfig:
        if self.model == "custom" and not self.factory:
            raise ValueError(
                "train.model is custom but train.factory is not set: "
                "set it to '<file>.py:<function>', e.g. models.py:build_model"
            )
        if self.model == "notebook" and not self.notebook:
            raise ValueError(
                "train.model is notebook but train.notebook is not set: "
                "set it to the notebook's path, e.g. notebooks/train.ipynb"
            )
        if self.model == "notebook" and self.features:
            raise ValueError(
                "train.features does not apply to train.model notebook: do the "
                "feature work in the notebook (its saved model takes raw rows)"
            )
        return self

    @model_serializer(mode="wrap")
    def _without_unused_notebook(self, handler) -> dict[str, Any]:
        out = handler(self)
        if self.model != "notebook":
            for key in NOTEBOOK_KEYS:
                out.pop(key, None)
        return out

    def estimator_params(self) -> dict[str, Any]:
        """Only the chosen estimator's parameters (what the model is built with)."""
        if self.model == "custom":
            return dict(self.custom)
        if self.model == "notebook":
            return dict(self.notebook_params)
        return getattr(self, self.model).model_dump()

    def code_refs(self) -> dict[str, str]:
        """The workspace code this config runs: role -> '<file>.py:<function>'
        (a notebook: its path)."""
        refs = {"factory": self.factory if self.model == "custom" else None}
        refs["notebook"] = self.notebook if self.model == "notebook" else None
        refs["features"] = self.features if self.model != "notebook" else None
        return {k: v for k, v in refs.items() if v}
