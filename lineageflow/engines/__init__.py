"""The engine seam: where tables live and where split, digest, fit, predict and
score run.

An engine is one module with a class that implements ``Engine``; ``ENGINES``
names each. ``local`` (lineageflow.engines.local) keeps tables as pandas frames
in the flow's own process: the behaviour lineageflow has always had. The stages
(tasks/) call the engine a split names (``Split.engine``); none holds an engine
branch. Every engine must give the same split membership and the same digests
for the same data, so a model's lineage does not depend on where it trained.

A new engine: its module here, and one line in ``ENGINES``.
"""

from __future__ import annotations

from typing import Any, Protocol

import pandas as pd

from lineageflow.config import PrepareConfig
from lineageflow.engines.local import LocalEngine
from lineageflow.errors import ConfigError
from lineageflow.model.ml import Split


class Engine(Protocol):
    name: str

    def split(
        self, frames: list[pd.DataFrame], target: str, cfg: PrepareConfig, task: str
    ) -> Split:
        """The frames as one table, checked, split into train and holdout."""

    def digested(self, split: Split) -> Split:
        """``split`` with both tables' content digests."""

    def verify(self, split: Split, stage: str, part: str) -> str:
        """``part``'s digest, refused when it is not the one prepare recorded."""

    def fit(self, model: Any, split: Split) -> Any:
        """``model`` fitted on the training table."""

    def predict(self, model: Any, split: Split, part: str = "holdout") -> Any:
        """``model``'s predictions for one side of the split."""

    def score(self, model: Any, split: Split) -> dict[str, float]:
        """Holdout metrics over every holdout row."""

    def sample(self, split: Split, part: str = "holdout") -> tuple[Any, Any]:
        """(X, y) of one side, bounded to what fits in the flow's process (plots)."""


ENGINES: dict[str, type] = {"local": LocalEngine}


def engine(name: str = "local") -> Engine:
    """The engine called ``name``; an unknown one is refused in one line."""
    cls = ENGINES.get(name)
    if cls is None:
        raise ConfigError(
            f"engine {name!r} is not known: use one of {', '.join(ENGINES)}"
        )
    return cls()
