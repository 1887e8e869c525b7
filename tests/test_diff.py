"""`lineageflow diff` on two real runs: code, data, params, environment, metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import git
import pytest
import yaml

from flows.demo import add_data_version
from flows.training import training_pipeline
from lineageflow.reproduce.diff import diff_records, flatten, render

pytestmark = pytest.mark.usefixtures("prefect_api")


def lineageflow(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_diff_of_two_runs_names_data_params_files_and_metrics(
    make_workspace, tracking, tmp_path
):
    paths = make_workspace()
    ws = paths.workspace
    a = training_pipeline(workspace=str(ws))
    add_data_version(ws, 1, 1500, seed=9, drift=0.3, message="data v2")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["train"]["xgboost"]["max_depth"] = 5
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repo = git.Repo(ws)
    repo.git.add("params.yaml")
    repo.index.commit("deeper trees")
    params["evaluate"]["champion_tolerance"] = 1.0
    try:
        b = training_pipeline(workspace=str(ws))
    except Exception as exc:  # a refused challenger still trained and recorded
        assert "champion" in str(exc)
        b = None
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking)
    from mlflow import MlflowClient

    runs = MlflowClient(tracking).search_runs(
        [a["experiment_id"]],
        "tags.`lineageflow.kind` = 'pipeline'",
        order_by=["attributes.start_time DESC"],
    )
    run_b = b["run_id"] if b else runs[0].info.run_id
    proc = lineageflow("diff", a["run_id"], run_b, "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["runs"] == [a["run_id"], run_b]
    (data,) = out["data"]
    assert data["path"] == "data/customers" and data["md5"][0] != data["md5"][1]
    assert data["rows"] == [3000, 4500]
    assert {"key": "train.xgboost.max_depth", "a": 4, "b": 5} in out["params"]
    assert set(out["code"]["workspace"]["files_changed"]) == {
        "data/customers.dvc",
        "params.yaml",
    }
    assert out["code"]["pipeline"]["files_changed"] == []  # same lineageflow code
    assert out["environment"] == []
    metrics = {m["metric"]: m for m in out["metrics"]}
    auc = metrics["test_roc_auc"]
    assert auc["delta"] == pytest.approx(auc["b"] - auc["a"]) and auc["a"] != auc["b"]

    text = lineageflow("diff", a["run_id"], run_b, env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr[-2000:]
    for section in ("code", "data", "params", "environment", "metrics (holdout)"):
        assert f"\n{section}\n" in text.stdout
    assert "train.xgboost.max_depth  4  5" in text.stdout
    assert "data/customers.dvc, params.yaml" in text.stdout

    bad = lineageflow("diff", a["run_id"], "nope", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: run_id 'nope' is neither an MLflow run id (32 hex characters) nor "
        "models:/NAME/VERSION"
    )


def test_flatten_and_render_of_identical_records():
    rec = {
        "workspace": {"commit": "a" * 40, "dirty": False},
        "pipeline": {"commit": "b" * 40, "dirty": False},
        "data": [{"path": "d", "md5": "m", "size": 1}],
        "params": {"train": {"seed": 1, "xgboost": {"max_depth": 3}}},
        "mlflow": {"parent_run_id": "r1"},
        "environment": {"python": "3.11"},
    }
    assert flatten(rec["params"]) == {"train.seed": 1, "train.xgboost.max_depth": 3}
    d = diff_records(
        rec,
        dict(rec, mlflow={"parent_run_id": "r2"}),
        metrics=({"test_auc": 0.5}, {"test_auc": 0.5}),
        rows=({"d": 10}, {"d": 10}),
        files_changed={"workspace": [], "pipeline": []},
    )
    assert d["params"] == [] and d["environment"] == [] and d["code"]["user_code"] == []
    text = render(d)
    assert text.count("(no difference)") == 4  # code, data, params, environment
    assert "test_auc" in text
