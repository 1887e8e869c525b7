"""Default mode: `lineageflow` commands with no PREFECT_API_URL share one local
Prefect server per PREFECT_HOME (lineageflow.ops.localserver) instead of starting
a temporary one per command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lineageflow.ops import localserver, procs

LF = str(Path(sys.executable).parent / "lineageflow")

pytestmark = pytest.mark.slow


def env_for(home: Path, **extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PREFECT_", "LINEAGEFLOW_SERVER"))
    }
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update(extra)
    return env


def lf(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LF, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def gone(pid: int, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            return True
        time.sleep(0.2)
    return False


def test_commands_share_one_local_server_with_ui_until_stopped(
    make_workspace, tmp_path
):
    ws = make_workspace().workspace
    home = tmp_path / "home"
    env = env_for(home)
    try:
        first = lf("train", str(ws), env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "started the local Prefect server" in first.stderr
        state = json.loads((home / localserver.STATE).read_text())
        pid, api = state["pid"], state["api"]
        assert api.startswith("http://127.0.0.1:") and localserver._ours(pid)
        # the run is there to browse after the command ended: API and UI
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        assert [r["state_type"] for r in runs] == ["COMPLETED"]
        # task runs reach the server as events: its services must record them
        names: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "register_model" not in names:
            tasks = httpx.post(f"{api}/task_runs/filter", json={}, timeout=10).json()
            names = {t["task_key"].split("-")[0] for t in tasks}
            time.sleep(0.5)
        assert {"prepare", "train", "evaluate", "register_model"} <= names, names
        ui = httpx.get(api.removesuffix("/api") + "/", timeout=10)
        assert ui.status_code == 200 and "<html" in ui.text.lower()

        second = lf("train", str(ws), env=env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "started the local Prefect server" not in second.stderr
        assert "Starting temporary server" not in second.stderr
        # nothing changed in between: the CLI says what it reused instead of refitting
        assert "outputs reused after their digest checks: pull_data from run " in (
            second.stdout
        )
        assert ", train from run " in second.stdout
        assert json.loads((home / localserver.STATE).read_text())["pid"] == pid
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        assert len(runs) == 2

        status = lf("server", "status", env=env)
        assert status.returncode == 0 and api in status.stdout
    finally:
        stopped = lf("server", "stop", env=env)
    assert stopped.returncode == 0 and api in stopped.stdout
    assert gone(pid) and not (home / localserver.STATE).exists()
    assert lf("server", "status", env=env).returncode == 1


def test_a_stale_record_is_replaced_and_a_dead_pid_never_signalled(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (home / localserver.STATE).write_text(
        json.dumps({"pid": dead.pid, "api": "http://127.0.0.1:9/api"})
    )
    try:
        assert localserver.running(home) is None
        api = localserver.ensure(home)
        state = localserver.running(home)
        assert state is not None and state["api"] == api
        assert state["pid"] != dead.pid
    finally:
        localserver.stop(home)
    assert gone(state["pid"])


def test_an_idle_server_stops_itself(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("LINEAGEFLOW_SERVER_IDLE", "3")
    localserver.ensure(home)
    pid = localserver.running(home)["pid"]
    try:
        assert gone(pid, within=60), "the idle server is still running"
        assert "idle for 3 s: stopping" in (home / "lineageflow-server.log").read_text()
        assert localserver.running(home) is None
    finally:
        localserver.stop(home)


def test_opt_out_and_a_configured_api_start_no_local_server(
    make_workspace, tmp_path, prefect_api_url
):
    ws = make_workspace().workspace
    home = tmp_path / "home"
    off = lf("train", str(ws), env=env_for(home, LINEAGEFLOW_LOCAL_SERVER="0"))
    assert off.returncode == 0, off.stderr[-3000:]
    assert "Starting temporary server" in off.stderr
    assert not (home / localserver.STATE).exists()
    team = lf("train", str(ws), env=env_for(home, PREFECT_API_URL=prefect_api_url))
    assert team.returncode == 0, team.stderr[-3000:]
    assert "Starting temporary server" not in team.stderr
    assert not (home / localserver.STATE).exists()


def test_a_command_survives_its_local_server_going_away(make_workspace, tmp_path):
    """The shared server killed mid-train: the command says so in one line, starts
    it again on the same address and carries on to Staging; no page of
    retries and tracebacks, no MLflow run left RUNNING."""
    import signal

    from mlflow import MlflowClient

    from tests.servers import wait_for_parent_of_stage

    ws = make_workspace(rows=40000, **{"train.xgboost.n_estimators": 300}).workspace
    home = tmp_path / "home"
    env = env_for(home)
    api = localserver_api = None
    try:
        cmd = subprocess.Popen(
            [LF, "train", str(ws)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        mlf = MlflowClient(f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}")
        parent = wait_for_parent_of_stage(
            mlf, "train", timeout=180, keep_going=lambda: cmd.poll() is None
        )
        assert parent, cmd.communicate(timeout=60)
        state = json.loads((home / localserver.STATE).read_text())
        localserver_api = state["api"]
        os.kill(state["pid"], signal.SIGKILL)
        out, err = cmd.communicate(timeout=300)
        assert cmd.returncode == 0, err[-3000:]
        assert (
            f"the local Prefect server (pid {state['pid']}) stopped while this "
            f"command ran: starting it again on {localserver_api} and carrying on"
        ) in err
        assert "Traceback" not in out + err and len((out + err).splitlines()) < 40
        assert "-> Staging" in out
        again = json.loads((home / localserver.STATE).read_text())
        api = again["api"]
        assert api == localserver_api and again["pid"] != state["pid"]
        assert mlf.get_run(parent).info.status == "FINISHED"
    finally:
        localserver.stop(home)
