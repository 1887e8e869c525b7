"""Faults and bad input inside the flow: one clear message, nothing lost, no run RUNNING."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import git
import numpy as np
import pytest
from mlflow import MlflowClient

from flows.demo import dvc
from flows.training import training_pipeline
from lineageflow.data.synthetic import make_customers
from lineageflow.errors import DataError, TrackingError, WorkspaceError
from tests.servers import free_port

pytestmark = pytest.mark.usefixtures("prefect_api")
LF = str(Path(sys.executable).parent / "lineageflow")


def replace_data(ws: Path, df, push: bool = True) -> None:
    """A new data version with the given rows: write, `dvc add`, commit, `dvc push`."""
    df.to_csv(ws / "data/customers/part-000.csv", index=False)
    dvc("add", "data/customers", cwd=ws)
    repo = git.Repo(ws)
    repo.git.add("data/customers.dvc")
    repo.index.commit("data: new version")
    if push:
        dvc("push", cwd=ws)


def runs_of(uri: str, experiment_name: str = "lineageflow"):
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment_name)
    return c.search_runs([exp.experiment_id], max_results=1000) if exp else []


def runs_failed_with(uri: str, message: str):
    return [
        r for r in runs_of(uri) if message in r.data.tags.get("lineageflow.error", "")
    ]


def test_training_task_that_raises_fails_child_parent_and_flow(
    make_workspace, tracking
):
    ws = make_workspace(**{"train.model": "random_forest"}).workspace
    df = make_customers(3000, seed=3)
    df.loc[5, "monthly_charges"] = np.inf  # numeric, so it passes the schema check
    replace_data(ws, df)
    state = training_pipeline(workspace=str(ws), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match=r"[Ii]nput X contains infinity") as err:
        state.result()
    assert "infinity" in state.message
    c = MlflowClient(tracking)
    head = git.Repo(ws).head.commit.hexsha
    parent = next(
        r
        for r in runs_of(tracking)
        # MLflow's own source field is set when the run starts (lineage.json and
        # the lineage.* tags are written once every stage has run)
        if r.data.tags.get("mlflow.source.git.commit") == head
        and r.data.tags.get("lineageflow.kind") == "pipeline"
    )
    assert parent.info.status == "FAILED"
    assert str(err.value) in parent.data.tags["lineageflow.error"]
    children = c.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    train = next(r for r in children if r.data.tags["lineageflow.stage"] == "train")
    assert (
        train.info.status == "FAILED"
        and "infinity" in train.data.tags["lineageflow.error"]
    )
    assert not [r for r in runs_of(tracking) if r.info.status == "RUNNING"]
    from warnings import catch_warnings, simplefilter

    with catch_warnings():
        simplefilter("ignore")
        assert not c.search_model_versions(f"name = '{make_workspace.model_name}'")


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"data.target": "nope"}, DataError, r"target column 'nope' is not in dataset"),
        (
            {"data.remote": "nowhere"},
            DataError,
            r"DVC remote 'nowhere' does not exist \(configured: storage\)",
        ),
        (
            {"data.datasets": ["data/other"]},
            WorkspaceError,
            r"has no .dvc file \(data/other.dvc\)",
        ),
    ],
)
def test_bad_params_fail_the_flow_in_one_line(
    make_workspace, tracking, overrides, error, match
):
    ws = make_workspace(**overrides).workspace
    with pytest.raises(error, match=match) as err:
        training_pipeline(workspace=str(ws))
    assert "\n" not in str(err.value)
    assert not [r for r in runs_of(tracking) if r.info.status == "RUNNING"]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda df: df.iloc[0:0], r"dataset has no rows"),
        (lambda df: df.assign(churned=0), r"single class in 'churned'"),
        (
            lambda df: df.assign(churned=df.churned.where(df.index > 2)),
            r"3 rows with a missing 'churned' label",
        ),
        (
            lambda df: df.assign(region=float("nan")),
            r"column\(s\) \['region'\] are entirely empty",
        ),
    ],
)
def test_bad_data_fails_prepare_with_the_reason(
    make_workspace, tracking, mutate, match
):
    ws = make_workspace().workspace
    replace_data(ws, mutate(make_customers(500, seed=4)))
    with pytest.raises(DataError, match=match) as err:
        training_pipeline(workspace=str(ws))
    failed = runs_failed_with(tracking, str(err.value))
    assert {r.data.tags.get("lineageflow.stage", "parent") for r in failed} == {
        "prepare",
        "parent",
    }
    assert all(r.info.status == "FAILED" for r in failed)
    assert not [r for r in runs_of(tracking) if r.info.status == "RUNNING"]


def test_unreachable_tracking_uri_fails_fast(make_workspace, monkeypatch):
    ws = make_workspace().workspace
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(
        TrackingError,
        match=rf"MLflow tracking server {uri} does not answer .*: start it or fix MLFLOW_TRACKING_URI",
    ):
        training_pipeline(workspace=str(ws))


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    e.update(env or {})
    return subprocess.run(
        [LF, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=e,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    import re

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(match, last), last


@pytest.mark.slow
def test_cli_errors_are_one_line(make_workspace, tmp_path, tracking):
    ws = make_workspace().workspace
    assert_one_line_error(
        cli("train", str(tmp_path)), r"is not a git repository: run `git init`"
    )
    (ws / "params.yaml").write_text("train: {xgboost: {n_estimators: -3}}\n")
    assert_one_line_error(
        cli("train", str(ws)),
        r"'train.xgboost.n_estimators' Input should be greater than or equal to 1",
    )
    git.Repo(ws).git.checkout("params.yaml")
    uri = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(
        cli("train", str(ws), env={"MLFLOW_TRACKING_URI": uri}), r"does not answer"
    )
    assert_one_line_error(
        cli("reproduce", "; rm -rf /", "--workspace", str(ws)),
        r"is neither an MLflow run id",
    )
    # a failure inside the flow (prepare) also ends in one line, with no traceback
    (ws / "params.yaml").write_text(
        (ws / "params.yaml").read_text().replace("target: churned", "target: nope")
    )
    git.Repo(ws).git.commit("-am", "wrong target")
    assert_one_line_error(
        cli("train", str(ws)), r"target column 'nope' is not in dataset"
    )
