"""The split tables a prepare stage stores: Arrow IPC now, Parquet from earlier
runs still read; both refused unless their content has the recorded digest."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from lineageflow.errors import LineageError
from lineageflow.model.ml import table_digest
from lineageflow.runs.artifacts import load_table, persist_table


@pytest.fixture
def table():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(1000, 3)), columns=["a", "b", "c"])
    df["city"] = pd.Categorical(rng.choice(["x", "y", "z"], size=1000))
    df["y"] = rng.integers(0, 2, size=1000)
    return df[df.index % 4 != 0]  # a split's index: not a range


def digest_of(df):
    return table_digest(df.iloc[:, :-1], df.iloc[:, -1])


def test_a_stored_table_reads_back_with_its_digest(tmp_path, table):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        stored = persist_table(table, digest_of(table), "train_table")
    assert stored.endswith(".arrow")
    back = load_table(stored, digest_of(table), "train", "train_table", uri)
    pd.testing.assert_frame_equal(back, table)


def test_a_parquet_table_of_an_earlier_run_still_loads(tmp_path, table):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    name = f"train_table-{digest_of(table)[:16]}.parquet"
    table.to_parquet(tmp_path / name)  # as runs before Arrow stored them
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / name), artifact_path="tables")
    stored = f"runs:/{run.info.run_id}/tables/{name}"
    back = load_table(stored, digest_of(table), "train", "train_table", uri)
    pd.testing.assert_frame_equal(back, table)
    with pytest.raises(LineageError, match="train refused input train_table"):
        load_table(stored, "0" * 64, "train", "train_table", uri)
