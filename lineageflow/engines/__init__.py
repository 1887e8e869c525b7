"""The engine seam: where tables live and where split, digest, fit, predict and
score run.

An engine is one module with a class that implements ``Engine``; ``ENGINES``
names each. ``local`` (lineageflow.engines.local) keeps tables as pandas frames
in the flow's own process: the behaviour lineageflow has always had. ``dask``
(lineageflow.engines.dask) keeps them in partitions on a Dask cluster, which
``open_engine`` connects to (or starts) for the length of a run. The stages
(tasks/) call the engine a split names (``Split.engine``); none holds an engine
branch. Every engine must give the same split membership and the same digests
for the same data, so a model's lineage does not depend on where it trained.

A new engine: its module here, one line in ``ENGINES``, and how it opens in
``open_engine``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import pandas as pd

from lineageflow.compute_config import ComputeConfig
from lineageflow.config import PrepareConfig
from lineageflow.engines.cluster import open_cluster
from lineageflow.engines.dask import DaskEngine
from lineageflow.engines.local import LocalEngine, Read
from lineageflow.errors import ConfigError, LineageError
from lineageflow.model.ml import Split


class Engine(Protocol):
    name: str

    def read(self, src: Any, version: Any) -> Read:
        """One pinned dataset as this engine holds it (pull_data)."""

    def split(self, tables: list, target: str, cfg: PrepareConfig, task: str) -> Split:
        """The tables as one, checked, split into train and holdout."""

    def digested(self, split: Split) -> Split:
        """``split`` with both tables' content digests."""

    def persist(self, split: Split, part: str) -> str:
        """Store one side on prepare's run; the URI a later run loads it from."""

    def load(self, earlier: Any, tracking_uri: str) -> Split:
        """An earlier prepare's split (LookupError: it is made again)."""

    def verify(self, split: Split, stage: str, part: str) -> str:
        """``part``'s digest, refused when it is not the one prepare recorded."""

    def sizes(self, split: Split) -> dict[str, int]:
        """Rows of each side."""

    def fit(self, model: Any, split: Split) -> Any:
        """``model`` fitted on the training table."""

    def predict(self, model: Any, split: Split, part: str = "holdout") -> Any:
        """``model``'s predictions for one side of the split."""

    def score(self, model: Any, split: Split) -> dict[str, float]:
        """Holdout metrics over every holdout row."""

    def sample(self, split: Split, part: str = "holdout") -> tuple[Any, Any]:
        """(X, y) of one side, bounded to what fits in the flow's process (plots)."""

    def table(self, split: Split, part: str) -> pd.DataFrame:
        """One side as a frame for MLflow's dataset panel (bounded like ``sample``)."""

    def sample_note(self, split: Split, part: str) -> str | None:
        """What the plots say when they show a sample, not every row."""

    def fit_shape(self) -> dict:
        """What of where it fits is part of the train stage's key ({}: nothing)."""

    def describe(self, split: Split | None) -> dict | None:
        """The lineage record's ``compute`` (None: nothing beyond the local default)."""


ENGINES: dict[str, type] = {"local": LocalEngine, "dask": DaskEngine}
# the engine each run of this process opened (open_engine), by name
_OPEN: dict[str, Any] = {}


def engine(name: str = "local") -> Engine:
    """The engine called ``name``; an unknown one is refused in one line."""
    if name not in ENGINES:
        raise ConfigError(
            f"engine {name!r} is not known: use one of {', '.join(ENGINES)}"
        )
    if name == "local":
        return LocalEngine()
    opened = _OPEN.get(name)
    if opened is None:
        raise LineageError(
            f"no {name} cluster is open in this process: a run opens it "
            "(lineageflow.engines.open_engine) from compute in params.yaml"
        )
    return opened


@contextlib.contextmanager
def open_engine(cfg: ComputeConfig) -> Iterator[Engine]:
    """The engine ``cfg`` names, open for one run (a Dask cluster connected to,
    or started and stopped with it)."""
    if cfg.engine == "local":
        yield LocalEngine()
        return
    cluster = open_cluster(cfg)
    eng = DaskEngine(cluster)
    _OPEN[cfg.engine] = eng
    try:
        yield eng
    finally:
        _OPEN.pop(cfg.engine, None)
        cluster.close()
