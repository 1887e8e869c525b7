"""The local engine: tables are pandas frames in the flow's own process.

The split, the digests, the fit and the scores are lineageflow.model.ml's pure
functions, called as they always were."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from lineageflow.config import PrepareConfig
from lineageflow.data.tabular import validate_frame
from lineageflow.model import ml
from lineageflow.model.ml import Split
from lineageflow.runs.artifacts import load_split, persist_table


@dataclass
class Read:
    """What pull_data read of one dataset: the table as the engine holds it
    (a frame, or partitions on a cluster), its version as read, its size, and a
    frame for MLflow's dataset panel (the whole table, or its first rows)."""

    table: Any
    version: Any
    rows: int
    columns: int
    frame: pd.DataFrame


class LocalEngine:
    name = "local"

    def read(self, src, version) -> Read:
        df, version = src.read(version)
        return Read(df, version, len(df), df.shape[1], df)

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

    def persist(self, split: Split, part: str) -> str:
        """Store one side by digest on prepare's run; its ``runs:/`` URI."""
        return persist_table(split.table(part), split.digests[part], f"{part}_table")

    def load(self, earlier, tracking_uri: str) -> Split:
        """An earlier prepare's split, from the tables it stored."""
        return load_split(earlier, tracking_uri)

    def verify(self, split: Split, stage: str, part: str) -> str:
        return split.verify(stage, part)

    def sizes(self, split: Split) -> dict[str, int]:
        return split.sizes()

    def fit(self, model: Any, split: Split) -> Any:
        return ml.fit(model, split)

    def predict(self, model: Any, split: Split, part: str = "holdout") -> Any:
        return model.predict(split.parts(part)[0])

    def score(self, model: Any, split: Split) -> dict[str, float]:
        return ml.score(model, split.X_test, split.y_test, split.task)

    def sample(self, split: Split, part: str = "holdout") -> tuple[Any, Any]:
        return split.parts(part)  # the whole side: it is in this process already

    def table(self, split: Split, part: str) -> pd.DataFrame:
        return split.table(part)

    def sample_note(self, split: Split, part: str) -> str | None:
        return None  # plots show every row

    def fit_shape(self) -> dict:
        return {}  # a local fit's stage key is its params section, as it was

    def describe(self, split: Split | None) -> dict | None:
        return None  # records of local runs stay as they were
