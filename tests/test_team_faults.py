"""Faults on the team stack (deployments/stack.py): the object store not answering
the MLflow server during log_model ends in one clear line, nothing left RUNNING, and
a rerun that reaches Staging. Components killed by PID mid-run (PostgreSQL, the
worker, the S3 endpoint, ...) are tests/test_chaos.py's and bench/chaos.py's."""

from __future__ import annotations

import subprocess
import time

import pytest
from mlflow import MlflowClient

from tests.servers import TcpGate, needs_postgres
from tests.test_deployments import (
    BIN,
    ROOT,
    staging_versions,
)
from tests.test_faults_servers import start_train
from tests.test_team_stack import (  # noqa: F401 - as_pipeline: autouse
    as_pipeline,
    stack_env,
    workspace_with_origin,
)

pytestmark = [
    pytest.mark.slow,
    needs_postgres,
]
# enough work that a fault lands while the flow is in flight
HEAVY = {"rows": 20000, "train.xgboost.n_estimators": 300}


def until_stage(client, flow=None, stage="train", timeout: float = 300) -> str:
    """The parent run id once a `stage` child run is RUNNING (while `flow` lives)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (flow is None or flow.poll() is None):
        exp = client.get_experiment_by_name("lineageflow")
        runs = exp and client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`lineageflow.stage` = '{stage}' "
            "and attributes.status = 'RUNNING'",
        )
        if runs:
            return runs[0].data.tags["mlflow.parentRunId"]
        time.sleep(0.2)
    if flow is None:
        pytest.fail(f"no flow reached {stage} in {timeout}s")
    flow.kill()
    out, err = flow.communicate(timeout=30)
    pytest.fail(f"the flow never reached {stage}:\n{out[-2000:]}\n{err[-3000:]}")


def nothing_running(client) -> None:
    exp = client.get_experiment_by_name("lineageflow")
    running = client.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    assert not running, [r.info.run_id for r in running]


def rerun_reaches_staging(ws, env, client, name) -> str:
    proc = subprocess.run(
        [str(BIN / "lineageflow"), "train", str(ws)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (staged,) = staging_versions(client, name)[1]
    nothing_running(client)
    return staged.run_id


def test_object_store_down_during_log_model(team, tmp_path):
    paths, name = workspace_with_origin(tmp_path, team, **HEAVY)
    env = stack_env(team)
    client = MlflowClient(team.mlflow_uri)
    gate = TcpGate(team.ports["s3"])
    team.procs["mlflow"].stop()
    team.start_mlflow(s3_endpoint=gate.url)  # the server reaches S3 through the gate
    try:
        first_run = rerun_reaches_staging(paths.workspace, env, client, name)
        # fewer client retries than lineageflow's default (4 at 1-8 s): each one
        # waits for the server's own S3 retries
        env = dict(
            env,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
            MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
        )
        flow = start_train(paths.workspace, env)
        parent = until_stage(client, flow)
        gate.cut()  # before the model is logged: S3 stops answering the server
        out, err = flow.communicate(timeout=600)
        assert flow.returncode == 2, err[-3000:]
        last = err.strip().splitlines()[-1]
        print(err[-3000:])
        assert last.startswith("error: ") and "artifact store" in last, last
        assert client.get_run(parent).info.status == "FAILED"
        assert len(staging_versions(client, name)[0]) == 1  # nothing new registered
        nothing_running(client)
        # an earlier run's record cannot be read either: named as the store's fault
        promote = subprocess.run(
            [str(BIN / "lineageflow"), "reproduce", first_run],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        last = promote.stderr.strip().splitlines()[-1]
        assert promote.returncode == 2 and "artifact store" in last, last
        gate.mend()
        rerun_reaches_staging(paths.workspace, stack_env(team), client, name)
    finally:
        gate.close()
        team.procs["mlflow"].stop()
        team.start_mlflow()
