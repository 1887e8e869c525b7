"""Real tables on real git + DVC workspaces: CSV and Parquet, binary, multiclass
and regression, text / category columns and missing values; the Staging model
answers raw rows through MLflow's pyfunc and through `mlflow models serve`."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import git
import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.demo import dvc
from flows.training import training_pipeline
from lineageflow.config import PrepareConfig
from lineageflow.data import tabular
from lineageflow.data.synthetic import make_mixed
from lineageflow.errors import DataError
from lineageflow.model import ml
from lineageflow.registry import gate
from tests.servers import Proc, free_port, loopback

pytestmark = pytest.mark.usefixtures("prefect_api")
BIN = Path(sys.executable).parent
METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
THRESHOLD = {"binary": 0.6, "multiclass": 0.4, "regression": 1e9}


def write_table(df: pd.DataFrame, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)


def add_version(ws: Path, files: dict[str, pd.DataFrame], fmt: str, msg: str) -> None:
    for name, df in files.items():
        write_table(df, ws / "data" / "table" / name, fmt)
    dvc("add", "data/table", cwd=ws)
    repo = git.Repo(ws)
    repo.git.add("data/table.dvc", "data/.gitignore")
    repo.index.commit(msg)
    dvc("push", cwd=ws)


def table_workspace(make_workspace, task: str, fmt: str, rows: int = 3000, **params):
    """A workspace whose dataset is data/table (a directory of CSV or Parquet)."""
    overrides = {
        "data.datasets": ["data/table"],
        "data.target": "label",
        "evaluate.metric": METRIC[task],
        "evaluate.threshold": THRESHOLD[task],
        **params,
    }
    paths = make_workspace(rows=200, **overrides)
    ws = paths.workspace
    df = make_mixed(rows, seed=11, task=task)
    add_version(ws, {f"part-000.{fmt}": df}, fmt, f"table v1 ({fmt}, {task})")
    return ws, df


def raw_rows(ws: Path, fmt: str, n: int = 40) -> pd.DataFrame:
    """Rows as a consumer reads them from the training data, target dropped."""
    (path,) = sorted((ws / "data" / "table").iterdir())
    df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    return df.drop(columns=["label"]).head(n)


def serve_and_ask(model_uri: str, tracking: str, rows: pd.DataFrame, tmp: Path):
    """`mlflow models serve` on 127.0.0.1, one dataframe_records request."""
    port = free_port()
    # mlflow runs `uvicorn` from PATH: the venv's bin, as for a user who activated it
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=tracking,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    proc = Proc(
        "mlflow models serve",
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            *loopback(port),
        ],
        env,
        tmp,
        tmp / f"serve-{port}.log",
    )
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/ping", timeout=120)
        records = json.loads(rows.to_json(orient="records"))  # NaN -> null
        resp = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_records": records},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text[:2000]
        return resp.json()["predictions"]
    finally:
        proc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_raw_tables_reach_staging_and_serve_raw_rows(
    make_workspace, tracking, tmp_path, fmt, task
):
    ws, df = table_workspace(make_workspace, task, fmt)
    out = training_pipeline(workspace=str(ws))
    assert out["stage"] == "Staging", out
    c = MlflowClient(tracking)
    record = json.loads(
        Path(c.download_artifacts(out["run_id"], "lineage.json")).read_text()
    )
    assert record["data"][0]["format"] == fmt
    prepare = c.search_runs(
        [out["experiment_id"]],
        f"tags.mlflow.parentRunId = '{out['run_id']}' "
        "and tags.`lineageflow.stage` = 'prepare'",
    )[0]
    assert prepare.data.params["task"] == task
    assert prepare.data.params["task_reason"].startswith("auto: ")
    if task == "regression":
        assert set(out["metrics"]) == {"rmse", "mae", "r2"}
        assert out["metrics"]["r2"] > 0.5
    else:
        assert out["metrics"]["accuracy"] > 0.5

    # MLflow's own pyfunc on raw rows, as pandas reads them (ints, text, NaN)
    import mlflow

    name = make_workspace.model_name
    rows = raw_rows(ws, fmt)
    assert rows["income"].isna().any() and rows["channel"].isna().any()
    mlflow.set_tracking_uri(tracking)
    model = mlflow.pyfunc.load_model(f"models:/{name}@staging")
    pred = pd.Series(np.asarray(model.predict(rows)).ravel())
    assert len(pred) == len(rows)
    if task == "regression":
        assert pred.dtype.kind == "f" and pred.notna().all()
    else:  # the data's own labels, not codes
        assert set(pred) <= set(df["label"]) and len(set(pred)) >= 2
    schema = {c.name: str(c.type) for c in model.metadata.get_input_schema().inputs}
    assert schema["age"].endswith("long") and schema["income"].endswith("double")
    assert schema["channel"].endswith("string") and schema["region"].endswith("string")
    # a pandas category (Parquet keeps it) is declared Any: MLflow converts it
    assert schema["plan"] == ("Any" if fmt == "parquet" else "DataType.string")

    # the served model answers a JSON request of the same raw rows
    served = serve_and_ask(f"models:/{name}@staging", tracking, rows, tmp_path)
    if task == "regression":
        assert np.allclose(np.asarray(served, dtype=float), pred.to_numpy(float))
    else:
        assert served == pred.tolist()


def test_unseen_category_and_missing_column_values_still_predict(
    make_workspace, tracking
):
    ws, df = table_workspace(make_workspace, "binary", "csv", rows=2000)
    training_pipeline(workspace=str(ws))
    import mlflow

    mlflow.set_tracking_uri(tracking)
    model = mlflow.pyfunc.load_model(f"models:/{make_workspace.model_name}@staging")
    rows = raw_rows(ws, "csv", 5).assign(region="atlantis", channel=None)
    assert set(model.predict(rows)) <= {"churn", "stay"}


# ------------------------------------------------------------ bad data


def _bad_type_change(ws: Path) -> None:
    v2 = make_mixed(800, seed=12, task="binary")
    v2["region"] = np.arange(len(v2))  # text in v1, numbers in v2
    add_version(ws, {"part-001.csv": v2}, "csv", "table v2 with region as numbers")


def _bad_parquet(ws: Path) -> None:
    path = ws / "data" / "table" / "part-000.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    dvc("add", "data/table", cwd=ws)
    git.Repo(ws).git.add("data/table.dvc")
    git.Repo(ws).index.commit("broken parquet")
    dvc("push", cwd=ws)


def _bad_empty_column(ws: Path) -> None:
    v = make_mixed(3000, seed=11, task="binary").assign(notes=np.nan)
    add_version(ws, {"part-000.csv": v}, "csv", "an empty column")


@pytest.mark.parametrize(
    ("setup", "fmt", "params", "match"),
    [
        (None, "csv", {"train.task": "binary", "data.target": "income"}, None),
        (_bad_type_change, "csv", {}, r"column 'region' changed type between data"),
        (_bad_parquet, "parquet", {}, r"is not readable Parquet .*: rewrite it"),
        (_bad_empty_column, "csv", {}, r"\['notes'\] are entirely empty: drop them"),
        (None, "csv", {"evaluate.metric": "rmse"}, r"evaluate.metric rmse does not"),
    ],
    ids=["continuous-target", "type-changed", "bad-parquet", "empty-column", "metric"],
)
def test_bad_tables_are_one_line_and_register_nothing(
    make_workspace, tracking, setup, fmt, params, match
):
    ws, _ = table_workspace(make_workspace, "binary", fmt, rows=3000, **params)
    if setup is not None:
        setup(ws)
    if match is None:  # income has NaNs: label the missing ones first
        match = r"rows with a missing 'income' label"
    with pytest.raises(DataError, match=match) as err:
        training_pipeline(workspace=str(ws))
    assert "\n" not in str(err.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mvs = MlflowClient(tracking).search_model_versions(
            f"name = '{make_workspace.model_name}'"
        )
    assert mvs == []


def test_a_regression_table_with_only_its_data_set_gates_on_r2(
    make_workspace, tracking, caplog
):
    """params.yaml naming only the data: the metric follows the task the pipeline
    inferred (it was roc_auc, refused for a regression task)."""
    import logging

    import yaml

    ws, _ = table_workspace(make_workspace, "regression", "csv")
    minimal = {
        "data": {"datasets": ["data/table"], "target": "label"},
        "register": {"model_name": make_workspace.model_name},
    }
    (ws / "params.yaml").write_text(yaml.safe_dump(minimal))
    repo = git.Repo(ws)
    repo.git.add("params.yaml")
    repo.index.commit("only the data")
    with caplog.at_level(logging.INFO):
        out = training_pipeline(workspace=str(ws))
    assert out["stage"] == "Staging", out
    assert "evaluate.metric not set: gating a regression model on r2" in caplog.text
    mv = MlflowClient(tracking).get_model_version(out["model"], out["version"])
    assert mv.tags["lineage.check.quality_threshold"] == "passed"
    assert "r2" in out["metrics"] and "roc_auc" not in out["metrics"]


# ------------------------------------------------------------ pure functions


def test_task_inference_and_its_refusals():
    assert tabular.infer_task(pd.Series(["a", "b", "a"]), "auto", "y")[0] == "binary"
    assert tabular.infer_task(pd.Series([0, 1, 2, 1]), "auto", "y")[0] == "multiclass"
    task, why = tabular.infer_task(pd.Series([0.5, 1.25, 3.0]), "auto", "y")
    assert (
        task == "regression"
        and why == "auto: numeric target 'y' with non-integer values"
    )
    many = pd.Series(np.arange(500))
    assert tabular.infer_task(many, "auto", "y")[0] == "regression"
    with pytest.raises(
        DataError, match=r"looks continuous .* set train.task to regression"
    ):
        tabular.infer_task(pd.Series([0.5, 1.25, 3.0]), "binary", "y")
    with pytest.raises(DataError, match=r"has 3 classes but train.task is binary"):
        tabular.infer_task(pd.Series(["a", "b", "c"]), "binary", "y")
    with pytest.raises(DataError, match=r"not numeric .* but train.task is regression"):
        tabular.infer_task(pd.Series(["a", "b"]), "regression", "y")
    with pytest.raises(DataError, match=r"single class"):
        tabular.infer_task(pd.Series([1, 1, 1]), "auto", "y")


def test_a_class_only_in_the_holdout_is_refused():
    df = make_mixed(2000, seed=3, task="binary")
    for i in range(len(df)):  # the label is part of the row's hash: find a row
        df.loc[i, "label"] = "rare"  # that lands in the holdout *with* it
        if ml.hash_test_mask(df, 0.2, 42)[i]:
            break
        df.loc[i, "label"] = make_mixed(2000, seed=3, task="binary").loc[i, "label"]
    with pytest.raises(DataError, match=r"\['rare'\] of 'label' appear only in the"):
        ml.split_frame(df, "label", PrepareConfig())


def test_regression_gate_prefers_lower_rmse():
    from lineageflow.config import EvaluateConfig

    cfg = EvaluateConfig(metric="rmse", threshold=10.0)
    assert gate.quality_gate({"rmse": 9.0}, cfg)[0].passed
    assert not gate.quality_gate({"rmse": 11.0}, cfg)[0].passed
    worse = gate.quality_gate({"rmse": 9.0}, cfg, {"rmse": 8.0}, "2")[1]
    assert not worse.passed and "worse than Staging v2" in worse.reason
    assert gate.quality_gate({"rmse": 7.5}, cfg, {"rmse": 8.0}, "2")[1].passed


def test_math_of_the_regression_scores():
    class Identity:
        def predict(self, X):
            return X["x"].to_numpy() + 1.0

    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    y = pd.Series([0.0, 1.0, 2.0, 3.0])
    s = ml.score(Identity(), X, y, "regression")
    assert s["rmse"] == 1.0 and s["mae"] == 1.0 and math.isclose(s["r2"], 1 - 4 / 5)
