"""The model-source seam: what builds and fits the estimator the registry serves,
and what is recorded about its code.

A source is opened before the train stage's run starts (``open_source``), so
user code that does not import or does not fit the data fails in one line with
no half-made run; inside the run the train stage calls ``fit`` with the engine
that holds the tables and logs ``code()`` as ``lineageflow.*`` params.

The sources, by ``train.model``: the built-in models (xgboost, random_forest,
logistic_regression) ``custom``, the workspace's own factory function, and ``notebook``, a
committed notebook run by papermill (lineageflow.model.notebook). A
new source is one class (here or in its own module) and one line in
``SOURCES``, plus its ``train.model`` value in lineageflow.config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lineageflow.config import TrainConfig
from lineageflow.errors import UserCodeError
from lineageflow.lineage.code import call_user, check_features, load_callable
from lineageflow.model.ml import Split
from lineageflow.model.notebook import NotebookSource


class ModelSource:
    """The built-in models: lineageflow builds the estimator from its params
    section; the workspace may add a ``features`` function."""

    def __init__(self, cfg: TrainConfig, fns: dict[str, Callable[..., Any]]):
        self.cfg = cfg
        self.fns = fns  # the workspace's functions, by role (factory, features)

    @classmethod
    def open(
        cls, cfg: TrainConfig, workspace: Path | None, split: Split
    ) -> ModelSource:
        """The source with the workspace code it names imported (from the tree
        being trained: a reproduction's worktree holds the recorded files)."""
        refs = cfg.code_refs()
        if refs and workspace is None:
            raise UserCodeError("train.factory/features need the workspace path")
        fns = {role: load_callable(workspace, ref, role) for role, ref in refs.items()}
        if "features" in fns:
            check_features(fns["features"], refs["features"], split.X_train)
        return cls(cfg, fns)

    def autolog_library(self) -> str:
        """The library whose MLflow autolog records the fit."""
        return "xgboost" if self.cfg.model == "xgboost" else "sklearn"

    def code(self) -> dict[str, str]:
        """What is recorded about the model's code (``lineageflow.<key>`` params)."""
        return {"model": self.cfg.model} | self.cfg.code_refs()

    def build(self, split: Split) -> Any:
        # here, not at the top: scikit-learn takes 0.8 s to import (measured), and
        # a run that fits nothing (the nightly check) must not pay it
        from lineageflow.model import estimators, modelparts

        modelparts.register()
        return estimators.build_model(
            self.cfg,
            self.fns.get("factory"),
            self.fns.get("features"),
            split.task,
            split.labels,
        )

    # the top-level modules imported where the model was fitted, besides this
    # process's own (a notebook's kernel): which libraries its code used
    modules: tuple[str, ...] = ()

    def fit(self, split: Split, engine) -> Any:
        """The fitted estimator: raw rows in, the data's own labels out."""
        return engine.fit(self.build(split), split)


class FactorySource(ModelSource):
    """``model: custom``: the estimator comes from the workspace's ``factory``
    function (pinned by the workspace commit); its errors name the function."""

    def fit(self, split: Split, engine) -> Any:
        return call_user(
            engine.fit, self.cfg.factory, "factory", self.build(split), split
        )


SOURCES: dict[str, type[ModelSource] | type[NotebookSource]] = {
    "xgboost": ModelSource,
    "random_forest": ModelSource,
    "logistic_regression": ModelSource,
    "custom": FactorySource,
    "notebook": NotebookSource,  # lineageflow.model.notebook
}


def open_source(cfg: TrainConfig, workspace: str | None, split: Split) -> ModelSource:
    """The source ``train.model`` names, opened on the tree being trained."""
    root = Path(workspace) if workspace is not None else None
    return SOURCES[cfg.model].open(cfg, root, split)
