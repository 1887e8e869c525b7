"""Faults with real processes: concurrent promotions, an MLflow server killed mid-run,
and an MLflow server with basic auth. Servers bind 127.0.0.1 and are stopped by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.servers import Proc, free_port, loopback, wait_for_parent_of_stage

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def env_for(**extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING"))
    }
    env.update(extra)
    return env


def start_train(ws: Path, env: dict) -> subprocess.Popen:
    """`lineageflow train WS` in the background, output captured."""
    return subprocess.Popen(
        [str(BIN / "lineageflow"), "train", str(ws)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def versions(uri, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MlflowClient(uri).search_model_versions(f"name = '{name}'")


def test_eight_concurrent_flows_leave_exactly_one_staging(
    make_workspace, prefect_api_url, tmp_path
):
    ws = make_workspace(rows=2000).workspace
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = env_for(PREFECT_API_URL=prefect_api_url, MLFLOW_TRACKING_URI=uri)
    MlflowClient(
        uri
    ).search_experiments()  # create the schema once, not 8 times at once
    procs = [start_train(ws, env) for _ in range(8)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        # 0 = promoted; 2 = refused with one line (e.g. lost to an equal champion)
        assert p.returncode in (0, 2), err[-3000:]
        if p.returncode == 2:
            assert err.strip().splitlines()[-1].startswith("error: ")
    mvs = versions(uri, make_workspace.model_name)
    # each run registered a version, or found Staging already held its very model
    # (the same train inputs, params and code) and registered nothing
    identical = sum("identical to v" in out for out, _err in outs)
    said = [f"{o.strip()[-300:]} | {e.strip()[-300:]}" for o, e in outs]
    assert len(mvs) + identical == 8 and len(mvs) >= 1, said
    staged = [m for m in mvs if m.current_stage == "Staging"]
    assert len(staged) == 1
    c = MlflowClient(uri)
    assert str(
        c.get_registered_model(make_workspace.model_name).aliases["staging"]
    ) == str(staged[0].version)
    assert all(
        m.current_stage in ("Archived", "None") for m in mvs if m is not staged[0]
    )
    assert all(m.tags.get("lineage.checks") in ("passed", "failed") for m in mvs)
    exp = c.get_experiment_by_name("lineageflow")
    assert not c.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )


def start_mlflow(
    tmp: Path,
    port: int,
    name: str = "mlflow",
    app: str | None = None,
    env: dict | None = None,
) -> Proc:
    cmd = [
        str(BIN / "mlflow"),
        "server",
        *loopback(port),
        "--backend-store-uri",
        f"sqlite:///{tmp / 'mlflow.db'}",
        "--artifacts-destination",
        str(tmp / "mlartifacts"),
    ]
    if app:
        cmd += ["--app-name", app]
    proc = Proc(
        name,
        cmd,
        env_for(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **(env or {})),
        tmp,
        tmp / f"{name}.log",
    )
    proc.wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
    return proc


def test_mlflow_killed_mid_run_then_next_start_closes_the_orphan(
    make_workspace, prefect_api_url, tmp_path
):
    # enough work that the server can be killed while the flow is in flight
    ws = make_workspace(rows=40000, **{"train.xgboost.n_estimators": 300}).workspace
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow(tmp_path, port)
    env = env_for(
        PREFECT_API_URL=prefect_api_url,
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
    )
    try:
        flow = start_train(ws, env)
        c = MlflowClient(uri)
        parent = wait_for_parent_of_stage(
            c, "train", timeout=180, keep_going=lambda: flow.poll() is None
        )
        if parent is None:
            flow.kill()
            out, err = flow.communicate(timeout=30)
            pytest.fail(f"the flow never reached train:\n{out[-2000:]}\n{err[-3000:]}")
        server.stop()  # the tracking server dies mid-train
        out, err = flow.communicate(timeout=300)
        assert flow.returncode == 2, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: MLflow") and "does not answer" in last, last
        # the server comes back; the next run closes what the crashed one left RUNNING
        server = start_mlflow(tmp_path, port, name="mlflow-again")
        assert c.get_run(parent).info.status == "RUNNING"
        rerun = subprocess.run(
            [str(BIN / "lineageflow"), "train", str(ws)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        orphan = c.get_run(parent)
        assert orphan.info.status == "KILLED"
        assert "no longer running" in orphan.data.tags["lineageflow.error"]
        exp = c.get_experiment_by_name("lineageflow")
        assert not c.search_runs(
            [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
        )
    finally:
        server.stop()


def test_basic_auth_server_credentials_and_no_password_leak(
    make_workspace, prefect_api_url, tmp_path
):
    secret = "S3cr3t-pw-Zq81x"
    ws = make_workspace().workspace
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    ini = tmp_path / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = admin\n"
        f"admin_password = {secret}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server = start_mlflow(
        tmp_path,
        port,
        app="basic-auth",
        env={
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
        },
    )
    try:
        lf = str(BIN / "lineageflow")
        bad = subprocess.run(
            [lf, "train", str(ws)],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            env=env_for(
                PREFECT_API_URL=prefect_api_url,
                MLFLOW_TRACKING_URI=uri,
                MLFLOW_TRACKING_USERNAME="admin",
                MLFLOW_TRACKING_PASSWORD="wrong",
            ),
        )
        assert bad.returncode == 2
        assert bad.stderr.strip().splitlines()[-1] == (
            f"error: MLflow tracking server {uri} rejected the credentials: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
        good_env = env_for(
            PREFECT_API_URL=prefect_api_url,
            MLFLOW_TRACKING_URI=uri,
            MLFLOW_TRACKING_USERNAME="admin",
            MLFLOW_TRACKING_PASSWORD=secret,
        )
        good = subprocess.run(
            [lf, "train", str(ws)],
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
            env=good_env,
        )
        assert good.returncode == 0, good.stderr[-3000:]
        assert secret not in good.stdout + good.stderr
        # scan every param, tag, metric key, artifact and the registry for the password
        os.environ.update(
            MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=secret
        )
        try:
            c = MlflowClient(uri)
            exp = c.get_experiment_by_name("lineageflow")
            runs = c.search_runs([exp.experiment_id])
            assert len(runs) == 6  # parent + 5 stages (register_model too)
            for run in runs:
                blob = (
                    repr(run.data.params) + repr(run.data.tags) + repr(run.data.metrics)
                )
                assert secret not in blob
                dst = tmp_path / "dl" / run.info.run_id
                dst.mkdir(parents=True)
                c.download_artifacts(run.info.run_id, "", str(dst))
                for f in dst.rglob("*"):
                    if f.is_file():
                        assert secret.encode() not in f.read_bytes(), f
            for mv in versions(uri, make_workspace.model_name):
                assert secret not in repr(mv.tags) + mv.source + (mv.description or "")
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME")
            os.environ.pop("MLFLOW_TRACKING_PASSWORD")
        assert secret not in (tmp_path / "mlflow.log").read_text()
    finally:
        server.stop()
