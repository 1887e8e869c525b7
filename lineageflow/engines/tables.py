"""What the Dask engine's flow-side process keeps of a split held on the cluster:
the partitions, where each is, and futures of each side's parts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from lineageflow.engines.partitions import Part


@dataclass
class Tables:
    """A split held on the cluster: each side's partitions, as futures."""

    parts: list[Part]
    infos: list[dict]  # per partition: md5, rows
    workers: list[str]  # per partition: the worker holding it
    sides: dict  # "train"/"holdout" -> (X futures, y futures)
    rows: dict  # "train"/"holdout" -> rows
    features: pd.DataFrame  # zero-row frame: the feature columns and dtypes
    categories: dict = field(default_factory=dict)  # train side, per column

    def manifest(self) -> list[dict]:
        """Each partition as recorded: dataset, file, rows, md5."""
        return [
            p.record() | {"rows": i["rows"], "md5": i["md5"]}
            for p, i in zip(self.parts, self.infos, strict=True)
        ]


class Named:
    """A partition's name where tabular's schema check expects a Path."""

    def __init__(self, name: str):
        self.name = name
