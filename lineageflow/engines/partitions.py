"""What the Dask engine runs on its workers, one partition (one file) at a time.

Plain functions of pandas frames, the same ones the local engine uses on the
whole table (lineageflow.model.ml, lineageflow.data.tabular): a row's side of
the split and its hash depend on that row alone, so the partitions' results
joined in partition order are the whole table's. No Prefect, no MLflow, no
client: a worker imports this module and nothing of the run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lineageflow.data.tabular import _kind, _read_one
from lineageflow.errors import DataError
from lineageflow.model.ml import apply_labels, hash_test_mask

# what a summary keeps of a column's distinct values per partition: enough to
# decide the task (20 classes at most) and to name examples, never the column
UNIQUE_CAP = 1000
# a categorical feature's values are the fitted model's categories: all of them
CATEGORY_CAP = 100_000


@dataclass(frozen=True)
class Part:
    """One partition: a file of a dataset, read where a worker runs."""

    dataset: str  # the dataset's name in params.yaml
    name: str  # as recorded: the file relative to the dataset (DVC) or table
    path: str  # where a worker reads it (a local path, or a Delta file URI)
    fmt: str  # csv | parquet | delta
    # a Delta table's file: the table and version whose fragment it is, and the
    # storage options that reach it (never recorded)
    table: str | None = None
    version: int | None = None
    options: dict | None = field(default=None, compare=False, repr=False)

    def record(self) -> dict:
        return {"dataset": self.dataset, "file": self.name}


def read(part: Part) -> pd.DataFrame:
    if part.fmt != "delta":
        return _read_one(Path(part.path), part.fmt)
    from deltalake import DeltaTable

    table = DeltaTable(part.table, version=part.version, storage_options=part.options)
    ds = table.to_pyarrow_dataset()
    for frag in ds.get_fragments():
        if frag.path == part.path:
            return frag.to_table(schema=ds.schema).to_pandas()
    raise DataError(
        f"Delta table {part.dataset} version {part.version} no longer lists "
        f"{part.name}: pin the version again"
    )


def md5_of(path: str) -> str | None:
    """The file's md5 (DVC's hash of a file), read in 1 MiB blocks; None for a
    file that is not on a local path (a Delta file in object storage)."""
    if "://" in path:
        return None
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inspect(part: Part) -> dict:
    """The partition's md5, rows, and columns with their dtypes (a zero-row
    frame): what the client checks and records before anything is split."""
    local = part.fmt != "delta" or Path(part.path).is_file()
    md5 = md5_of(part.path) if local else None
    if part.fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(part.path)
            rows = meta.metadata.num_rows
            empty = meta.schema_arrow.empty_table().to_pandas()
        except Exception:  # noqa: BLE001 - the reader names what is wrong
            df = read(part)
            rows, empty = len(df), df.iloc[:0]
    else:
        df = read(part)
        rows, empty = len(df), df.iloc[:0]
    return {"md5": md5, "rows": int(rows), "meta": empty}


@dataclass
class Piece:
    """One partition read and split, raw target: what ``finish`` encodes."""

    train: pd.DataFrame
    holdout: pd.DataFrame


def split_piece(
    part: Part,
    offset: int,
    dtypes: dict,
    test_size: float,
    seed: int,
) -> Piece:
    """Read the partition, cast it to the table's common dtypes, number its rows
    from ``offset`` (their position in the whole table), and split it by each
    row's content hash (lineageflow.model.ml.hash_test_mask)."""
    df = read(part)
    casts = {c: t for c, t in dtypes.items() if c in df.columns and df[c].dtype != t}
    if casts:
        df = df.astype(casts)
    df.index = pd.RangeIndex(offset, offset + len(df))
    test = hash_test_mask(df, test_size, seed)
    return Piece(df.loc[~test], df.loc[test])


def summarize(piece: Piece, target: str) -> dict:
    """What the client needs to check, infer the task and fit the raw-frame
    step, without the rows: label values, missing labels, empty columns,
    categorical features' values on the training side."""
    both = (piece.train, piece.holdout)
    y = pd.concat([t[target] for t in both])
    features = [c for c in piece.train.columns if c != target]
    cats = {}
    for c in features:
        col = piece.train[c]
        if _kind(col) == "categorical":
            cats[str(c)] = col.dropna().astype(str).unique()[:CATEGORY_CAP].tolist()
    return {
        "rows": {"train": len(piece.train), "holdout": len(piece.holdout)},
        "labels": y.dropna().unique()[:UNIQUE_CAP].tolist(),
        "label_dtype": y.dtype,
        "missing_labels": int(y.isna().sum()),
        "sides": {
            side: t[target].dropna().unique()[:UNIQUE_CAP].tolist()
            for side, t in zip(("train", "holdout"), both, strict=True)
        },
        "empty": [str(c) for c in features if all(t[c].isna().all() for t in both)],
        "categories": cats,
    }


def finish(piece: Piece, target: str, labels: list | None) -> tuple:
    """(X_train, y_train, X_holdout, y_holdout) as trained on: the target as
    codes of ``labels`` (a classifier) or float64 (``labels`` None)."""
    out = []
    for t in (piece.train, piece.holdout):
        y = t[target]
        y = y.astype("float64") if labels is None else apply_labels(y, labels)
        out += [t.drop(columns=[target]), y]
    return tuple(out)


def pick(parts: tuple, i: int):
    return parts[i]


def hashes(X: pd.DataFrame, y: pd.Series) -> tuple[bytes, bytes]:
    """The partition's row hashes (index included) of features and target: the
    bytes lineageflow.model.digests.table_digest hashes for the whole table."""
    hx = pd.util.hash_pandas_object(X, index=True).to_numpy()
    hy = pd.util.hash_pandas_object(y.rename(None), index=True).to_numpy()
    return hx.tobytes(), hy.tobytes()


def head_of(part: Part, n: int = 1000) -> pd.DataFrame:
    """A partition's first rows (MLflow's dataset panel of pull_data)."""
    return read(part).head(n)


def head(X: pd.DataFrame, y: pd.Series, n: int) -> tuple[pd.DataFrame, pd.Series]:
    return X.iloc[:n], y.iloc[:n]


def predict(model, X: pd.DataFrame, regression: bool) -> np.ndarray:
    """The partition's predictions (regression) or class probabilities."""
    if regression:
        return np.asarray(model.predict(X), dtype="float64")
    return np.asarray(model.predict_proba(X))


def values(y: pd.Series) -> np.ndarray:
    return y.to_numpy()


def transform(raw, X: pd.DataFrame) -> pd.DataFrame:
    """The fitted raw-frame step applied to one partition (what xgboost reads)."""
    return raw.transform(X)
