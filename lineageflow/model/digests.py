"""Content digests of tables: what prepare's outputs are named by, and what
every stage that reads a table checks. Plain pandas and hashlib."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd


def table_digest(X: pd.DataFrame, y: pd.Series) -> str:
    """Content digest of features and target together: column names and dtypes,
    rows, order, values. pandas' row hashes alone ignore both names and dtypes (a
    category column hashes like its strings), and a model trained on one schema
    is not the model for another (its signature differs)."""
    return digest_of(
        schema_of(X.dtypes, y.dtype), frame_digest(X), frame_digest(y.rename(None))
    )


def schema_of(dtypes: pd.Series, target_dtype) -> str:
    """The schema part of ``table_digest``: column names and dtypes, then the
    target's dtype."""
    return json.dumps(
        [[str(c), str(t)] for c, t in dtypes.items()] + [str(target_dtype)]
    )


def digest_of(schema: str, features: str, target: str) -> str:
    """``table_digest`` from its parts: the schema and the sha256 hex digests of
    the features' and the target's row hashes (index included), in row order.
    A table held in partitions streams each partition's row hashes, in order,
    into those two sha256s: the same digest as the table in one frame."""
    return hashlib.sha256((schema + features + target).encode()).hexdigest()


def frame_digest(df: pd.DataFrame | pd.Series) -> str:
    """Content digest of a frame (row order and values), independent of pickling."""
    return hashlib.sha256(row_hashes(df, index=True).tobytes()).hexdigest()


# below this many rows one thread hashes faster than two are started
PARALLEL_ROWS = 200_000


def row_hashes(df: pd.DataFrame | pd.Series, index: bool) -> np.ndarray:
    """pandas' row hashes (uint64 per row), computed on row blocks in threads.

    A row's hash depends on that row alone, so the blocks' hashes joined are
    exactly the whole frame's; numpy releases the GIL while it hashes."""
    workers = min(os.cpu_count() or 1, 8, max(1, len(df) // PARALLEL_ROWS))
    if workers == 1:
        return pd.util.hash_pandas_object(df, index=index).to_numpy()
    bounds = np.linspace(0, len(df), workers + 1).astype(int)

    def block(i: int) -> np.ndarray:
        part = df.iloc[bounds[i] : bounds[i + 1]]
        return pd.util.hash_pandas_object(part, index=index).to_numpy()

    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(block, range(workers))))
