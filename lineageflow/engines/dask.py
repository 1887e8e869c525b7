"""The Dask engine: tables live in partitions on a Dask cluster; split, digests,
fit (xgboost's own Dask interface), predictions and scores run on its workers.

The flow's process holds per-partition summaries, row hashes streamed through
two sha256s, and the holdout's predictions; never a table. Partition i of a
table is one file of a dataset, read on the worker placement gives it
(lineageflow.engines.cluster), numbered from its position in the whole table,
so its rows' sides and hashes are those the local engine computes: the same
data gives the same split membership and the same digests on both engines.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from importlib.metadata import version as dist_version
from itertools import accumulate
from typing import Any

import numpy as np
import pandas as pd

from lineageflow.config import PrepareConfig
from lineageflow.data.tabular import check_same_schema, check_table
from lineageflow.engines import partitions as P
from lineageflow.engines.cluster import Cluster, gather, lost_worker
from lineageflow.engines.dask_fit import fit_xgboost
from lineageflow.engines.local import Read
from lineageflow.engines.summaries import combine
from lineageflow.engines.tables import Named, Tables
from lineageflow.errors import DataError
from lineageflow.lineage.record import verify_input
from lineageflow.model import ml
from lineageflow.model.digests import digest_of, schema_of
from lineageflow.model.ml import Split
from lineageflow.tags import TABLES_DIR

# rows gathered into the flow's process for the signature and the plots
SAMPLE_ROWS = 20_000


class DaskEngine:
    name = "dask"

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.client = cluster.client

    # ------------------------------------------------------------ placement

    def _placed(self, n: int) -> list[str]:
        ws = self.cluster.workers()
        if not ws:
            raise DataError("the Dask cluster has no workers: start `dask worker`")
        return [ws[i * len(ws) // n] for i in range(n)]

    def _on(self, worker: str, fn, *args):
        return self.client.submit(
            fn, *args, workers=[worker], allow_other_workers=False, pure=False
        )

    # ------------------------------------------------------------- pull_data

    def read(self, src, version) -> Read:
        """The dataset's partitions inspected where they will be read: each
        file's md5 (what ``data_read_matches`` compares), rows and columns."""
        parts = src.partitions(version)
        where = self._placed(len(parts))
        futures = [self._on(w, P.inspect, p) for p, w in zip(parts, where, strict=True)]
        infos = gather(self.cluster, futures, f"reading {src.name}")
        check_same_schema(
            [(Named(p.name), i["meta"]) for p, i in zip(parts, infos, strict=True)],
            src.name,
        )
        version = src.read_files(
            version, {p.name: i["md5"] for p, i in zip(parts, infos, strict=True)}
        )
        head = gather(
            self.cluster, [self._on(where[0], P.head_of, parts[0])], "sampling"
        )[0]
        rows = sum(i["rows"] for i in infos)
        return Read((parts, infos), version, rows, infos[0]["meta"].shape[1], head)

    # --------------------------------------------------------------- prepare

    def split(self, tables: list, target: str, cfg: PrepareConfig, task: str) -> Split:
        parts = [p for t in tables for p in t[0]]
        infos = [i for t in tables for i in t[1]]
        tables.clear()
        rows = [i["rows"] for i in infos]
        name = ", ".join(dict.fromkeys(p.dataset for p in parts))
        if not sum(rows):
            raise DataError(f"{name} has no rows: add data and run `dvc add`")
        meta = pd.concat([i["meta"] for i in infos])  # pandas' common dtypes
        check_table(meta, target, 0, [], name)
        offsets = [0, *accumulate(rows)][:-1]
        where = self._placed(len(parts))
        dtypes = meta.dtypes.to_dict()
        pieces = [
            self._on(w, P.split_piece, p, off, dtypes, cfg.test_size, cfg.seed)
            for p, off, w in zip(parts, offsets, where, strict=True)
        ]
        sums = gather(
            self.cluster,
            [
                self._on(w, P.summarize, f, target)
                for f, w in zip(pieces, where, strict=True)
            ],
            "splitting",
        )
        d = combine(sums, meta, target, task, cfg.test_size, name)
        done = [
            self._on(w, P.finish, f, target, d.labels)
            for f, w in zip(pieces, where, strict=True)
        ]
        del pieces
        sides = {
            side: tuple(
                [
                    self._on(w, P.pick, f, k + j)
                    for f, w in zip(done, where, strict=True)
                ]
                for j in (0, 1)
            )
            for side, k in (("train", 0), ("holdout", 2))
        }
        del done
        features = meta.drop(columns=[target]).iloc[:0]
        t = Tables(parts, infos, where, sides, d.rows, features, d.categories)
        none = pd.Series(dtype="float64")
        return Split(
            pd.DataFrame(),
            pd.DataFrame(),
            none,
            none,
            d.task,
            d.labels or [],
            d.reason,
            target,
            engine=self.name,
            data=t,
        )

    def digested(self, split: Split) -> Split:
        return replace(
            split, digests={p: self._digest(split, p) for p in ("train", "holdout")}
        )

    def _digest(self, split: Split, part: str) -> str:
        """``table_digest`` (lineageflow.model.digests) of one side, its partitions' row hashes streamed
        in partition order (one partition's hashes in this process at a time)."""
        t: Tables = split.data
        Xs, ys = t.sides[part]
        hx, hy = hashlib.sha256(), hashlib.sha256()
        futures = [
            self._on(w, P.hashes, X, y)
            for X, y, w in zip(Xs, ys, t.workers, strict=True)
        ]
        for f in futures:
            bx, by = gather(self.cluster, [f], "hashing the split")[0]
            hx.update(bx)
            hy.update(by)
            f.release()
        ytype = "float64" if split.task == "regression" else "int64"
        schema = schema_of(t.features.dtypes, ytype)
        return digest_of(schema, hx.hexdigest(), hy.hexdigest())

    def persist(self, split: Split, part: str) -> str:
        """One side's partitions by digest on prepare's run (a manifest: the
        files, their md5s and rows; the rows stay where they are)."""
        import mlflow

        t: Tables = split.data
        manifest = {
            "digest": split.digests[part],
            "rows": t.rows[part],
            "partitions": t.manifest(),
        }
        path = f"{TABLES_DIR}/{part}_partitions-{split.digests[part][:16]}.json"
        mlflow.log_dict(manifest, path)
        return f"runs:/{mlflow.active_run().info.run_id}/{path}"

    def load(self, earlier, tracking_uri: str) -> Split:
        raise LookupError("a split on Dask is made again where its partitions are")

    def verify(self, split: Split, stage: str, part: str) -> str:
        got = self._digest(split, part)
        verify_input(stage, f"{part}_table", got, split.digests.get(part))
        return got

    def sizes(self, split: Split) -> dict[str, int]:
        rows = split.data.rows
        return {"train_rows": rows["train"], "test_rows": rows["holdout"]}

    # ------------------------------------------------------------ train

    def fit(self, model: Any, split: Split) -> Any:
        return fit_xgboost(self, model, split)

    # --------------------------------------------------------- evaluate

    def predict(self, model: Any, split: Split, part: str = "holdout") -> np.ndarray:
        """One side's predictions (regression) or class probabilities, made by
        partition on the workers and joined in row order."""
        t: Tables = split.data
        regression = split.task == "regression"
        [shared] = self.client.scatter([model], broadcast=True, hash=False)
        futures = [
            self._on(w, P.predict, shared, X, regression)
            for X, w in zip(t.sides[part][0], t.workers, strict=True)
        ]
        try:
            return self._joined(futures, t.rows[part], f"predicting the {part} rows")
        finally:
            del futures, shared

    def _joined(self, futures: list, rows: int, doing: str) -> np.ndarray:
        """The partitions' arrays as one, filled a partition at a time: the
        flow's process holds the result and one partition, never both twice."""
        out, at = None, 0
        for f in futures:
            [part] = gather(self.cluster, [f], doing)
            f.release()
            if out is None:
                out = np.empty((rows, *part.shape[1:]), dtype=part.dtype)
            out[at : at + len(part)] = part
            at += len(part)
        return out

    def score(self, model: Any, split: Split) -> dict[str, float]:
        """Metrics over every holdout row: predictions made by partition on the
        workers, joined in row order, scored as the local engine scores."""
        predicted = self.predict(model, split, "holdout")
        t: Tables = split.data
        labels = [
            self._on(w, P.values, y)
            for y, w in zip(t.sides["holdout"][1], t.workers, strict=True)
        ]
        y = self._joined(labels, t.rows["holdout"], "scoring")
        return ml.score_predictions(pd.Series(y), predicted, split.task)

    def sample(self, split: Split, part: str = "holdout") -> tuple[Any, Any]:
        """The first ``SAMPLE_ROWS`` rows of one side, in partition order."""
        t: Tables = split.data
        Xs, ys = t.sides[part]
        got_X, got_y, n = [], [], 0
        for X, y, w in zip(Xs, ys, t.workers, strict=True):
            hx, hy = gather(
                self.cluster, [self._on(w, P.head, X, y, SAMPLE_ROWS - n)], "sampling"
            )[0]
            got_X.append(hx)
            got_y.append(hy)
            n += len(hx)
            if n >= SAMPLE_ROWS:
                break
        return pd.concat(got_X), pd.concat(got_y)

    def table(self, split: Split, part: str) -> pd.DataFrame:
        X, y = self.sample(split, part)
        return X.assign(**{split.target: y})

    def sample_note(self, split: Split, part: str) -> str | None:
        rows = split.data.rows[part]
        shown = min(rows, SAMPLE_ROWS)
        return None if shown == rows else f"first {shown:,} of {rows:,} {part} rows"

    def fit_shape(self) -> dict:
        """What of the cluster's shape goes into the train stage's key: what the
        model depends on (not the memory limit)."""
        shape = self.cluster.shape()
        return {"engine": self.name} | {
            k: shape[k] for k in ("workers", "threads_per_worker")
        }

    def describe(self, split: Split | None) -> dict:
        """What lineage.json records of where the run computed."""
        out = {"engine": self.name, "scheduler": self.cluster.address}
        out |= self.cluster.shape()
        out["xgboost"] = dist_version("xgboost")
        if split is not None and isinstance(split.data, Tables):
            t: Tables = split.data
            out["partitions"] = t.manifest()
        return out

    def lost(self, doing: str, exc: BaseException) -> DataError:
        return lost_worker(self.cluster, doing, exc)
