"""The local engine: tables are pandas frames in the flow's own process.

The split, the digests, the fit and the scores are lineageflow.model.ml's pure
functions, called as they always were."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from lineageflow.config import PrepareConfig
from lineageflow.data.tabular import validate_frame
from lineageflow.model import ml
from lineageflow.model.ml import Split


class LocalEngine:
    name = "local"

    def split(
        self, frames: list[pd.DataFrame], target: str, cfg: PrepareConfig, task: str
    ) -> Split:
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        frames.clear()  # the caller's list held the only other references
        validate_frame(df, target)
        split = ml.split_frame(df, target, cfg, task)
        return replace(split, engine=self.name)

    def digested(self, split: Split) -> Split:
        return split.with_digests()

    def verify(self, split: Split, stage: str, part: str) -> str:
        return split.verify(stage, part)

    def fit(self, model: Any, split: Split) -> Any:
        return ml.fit(model, split)

    def predict(self, model: Any, split: Split, part: str = "holdout") -> Any:
        return model.predict(split.parts(part)[0])

    def score(self, model: Any, split: Split) -> dict[str, float]:
        return ml.score(model, split.X_test, split.y_test, split.task)

    def sample(self, split: Split, part: str = "holdout") -> tuple[Any, Any]:
        return split.parts(part)  # the whole side: it is in this process already
