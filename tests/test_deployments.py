"""Deployments end to end with real processes on 127.0.0.1: a Prefect server, a process
work pool and worker, an MLflow tracking server over HTTP; `prefect deploy --all`,
`prefect deployment run ... --watch`, and a reproduction created through the Prefect
REST API (what the UI's "Run > Custom run" calls)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from tests.servers import Proc, free_port, wait_for_parent_of_stage

# `prefect deploy` records its directory as the flows' working directory: deploy
# from the committed snapshot of the code under test (tests/conftest.py)
ROOT = Path(
    os.environ.get("LINEAGEFLOW_TEST_PIPELINE") or Path(__file__).resolve().parents[1]
)
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def base_env(tmp: Path) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))
    }
    env.update(
        DO_NOT_TRACK="true",
        DVC_NO_ANALYTICS="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_WORKER_QUERY_SECONDS="1",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    return env


def cli(
    args: list[str], env: dict, timeout: float = 120
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"{args} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def rest(method: str, url: str, **kw) -> httpx.Response:
    """A Prefect REST call that, like Prefect's own client, retries 429/502/503 (the
    server answers 503 while its sqlite DB is busy): 6 tries, 0.5-8 s apart."""
    for attempt in range(6):
        resp = httpx.request(method, url, timeout=10, **kw)
        if resp.status_code not in (429, 502, 503) or attempt == 5:
            resp.raise_for_status()
            return resp
        time.sleep(min(0.5 * 2**attempt, 8))
    raise AssertionError("unreachable")


def wait_flow_run(api: str, flow_run_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fr = rest("GET", f"{api}/flow_runs/{flow_run_id}").json()
        if fr["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return fr
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout}s")


def run_deployment_via_api(api: str, name: str, parameters: dict) -> dict:
    dep = rest("GET", f"{api}/deployments/name/{name}").json()
    fr = rest(
        "POST",
        f"{api}/deployments/{dep['id']}/create_flow_run",
        json={"parameters": parameters},
    )
    return wait_flow_run(api, fr.json()["id"])


def flow_run_logs(
    api: str, flow_run_id: str, expect: str = "", timeout: float = 30
) -> str:
    """The run's logs; with `expect`, poll (bounded) since logs are shipped in batches."""
    deadline = time.monotonic() + timeout
    while True:
        logs = rest(
            "POST",
            f"{api}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}},
        ).json()
        text = "\n".join(entry["message"] for entry in logs)
        if expect in text or time.monotonic() > deadline:
            return text
        time.sleep(1)


def staging_versions(client: MlflowClient, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mvs = client.search_model_versions(f"name = '{name}'")
    return mvs, [m for m in mvs if m.current_stage == "Staging"]


def deploy_and_start_worker(
    stack: dict, env: dict, name: str = "prefect worker", worker_env: dict | None = None
) -> Proc:
    """Create the pool, `prefect --no-prompt deploy --all`, start a worker that
    sends flow runs to the stack's MLflow server."""
    prefect = str(BIN / "prefect")
    cli(
        [prefect, "work-pool", "create", "lineageflow-process", "--type", "process"],
        env,
    )
    out = cli([prefect, "--no-prompt", "deploy", "--all"], env).stdout
    for dep in (
        "training-pipeline/train",
        "training-pipeline/nightly-retrain",
        "reproduce-run/reproduce",
    ):
        status = rest("GET", f"{stack['api']}/deployments/name/{dep}").status_code
        assert status == 200, out
    return start_worker(stack, worker_env or env, name)


def watch_train_deployment(env: dict) -> subprocess.CompletedProcess:
    """`prefect deployment run 'training-pipeline/train' --watch` (0 = Completed)."""
    return subprocess.run(
        [
            str(BIN / "prefect"),
            "deployment",
            "run",
            "training-pipeline/train",
            "--watch",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def start_worker(stack: dict, env: dict, name: str) -> Proc:
    worker_env = dict(env, MLFLOW_TRACKING_URI=stack["mlflow_uri"])
    worker = Proc(
        name,
        [str(BIN / "prefect"), "worker", "start", "--pool", "lineageflow-process"],
        worker_env,
        ROOT,
        stack["tmp"] / f"{name.replace(' ', '-')}.log",
    )
    stack["started"].append((worker, 2))  # a prefect worker needs two SIGINTs
    return worker


@pytest.fixture
def stack(tmp_path):
    env = base_env(tmp_path)
    pport, mport = free_port(), free_port()
    api = f"http://127.0.0.1:{pport}/api"
    env["PREFECT_API_URL"] = api
    started: list[tuple[Proc, int]] = []
    try:
        prefect = Proc(
            "prefect server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(pport),
            ],
            env,
            ROOT,
            tmp_path / "prefect.log",
        )
        started.append((prefect, 1))
        mlflow_env = dict(env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        mlflow = Proc(
            "mlflow server",
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(mport),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{tmp_path / 'mlflow.db'}",
                "--artifacts-destination",
                str(tmp_path / "mlartifacts"),
            ],
            mlflow_env,
            tmp_path,
            tmp_path / "mlflow.log",
        )
        started.append((mlflow, 1))
        prefect.wait_http(f"{api}/health", timeout=120)
        mlflow.wait_http(f"http://127.0.0.1:{mport}/health", timeout=120)
        yield {
            "env": env,
            "api": api,
            "mlflow_uri": f"http://127.0.0.1:{mport}",
            "tmp": tmp_path,
            "started": started,
        }
    finally:
        for proc, interrupts in reversed(started):
            proc.stop(interrupts=interrupts)


def test_deploy_run_reproduce_and_nightly(stack, make_workspace):
    env, api = stack["env"], stack["api"]
    paths = make_workspace(rows=3000)
    name = make_workspace.model_name
    deploy_env = dict(env, LINEAGEFLOW_WORKSPACE=str(paths.workspace))
    # the workspace is filled into train/nightly at deploy time; the worker has
    # no LINEAGEFLOW_WORKSPACE, so a reproduction finds it from the run id alone
    worker = deploy_and_start_worker(stack, deploy_env, worker_env=env)

    # 1. prefect deployment run --watch leaves a Staging version
    proc = watch_train_deployment(env)
    assert proc.returncode == 0, (
        f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}\n{worker.tail()}"
    )
    mlf = MlflowClient(stack["mlflow_uri"])
    mvs, staged = staging_versions(mlf, name)
    assert len(mvs) == 1 and len(staged) == 1
    run = mlf.get_run(staged[0].run_id)
    assert run.data.tags["lineage.checks"] == "passed"
    # links both ways: MLflow -> Prefect, and Prefect artifacts -> MLflow
    flow_run_id = run.data.tags["prefect.flow_run_id"]
    assert run.data.tags["prefect.flow_run_url"].endswith(flow_run_id)
    assert run.data.tags["prefect.deployment"] == "train"
    arts = rest(
        "POST",
        f"{api}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
    ).json()
    by_key = {a["key"]: a for a in arts}
    assert run.info.run_id in by_key["mlflow-run"]["data"]
    assert f"]({stack['mlflow_uri']}/#/experiments/" in by_key["mlflow-run"]["data"]
    assert "clean_tree" in by_key["lineage-summary"]["data"]

    # 2. reproduce through the REST API, as the UI does: the run id alone
    bad = run_deployment_via_api(api, "reproduce-run/reproduce", {"run_id": "nope"})
    assert bad["state"]["type"] == "FAILED"
    assert "is neither an MLflow run id" in flow_run_logs(
        api, bad["id"], expect="is neither"
    )
    fr = run_deployment_via_api(
        api, "reproduce-run/reproduce", {"run_id": run.info.run_id}
    )
    assert fr["state"]["type"] == "COMPLETED", flow_run_logs(api, fr["id"])[-3000:]
    original = mlf.get_run(run.info.run_id)
    assert original.data.tags["lineage.reproduction.verdict"] == "exact"
    repro = mlf.get_run(original.data.tags["lineage.reproduced_by"])
    assert repro.data.tags["lineage.reproduction_of"] == run.info.run_id
    assert len(staging_versions(mlf, name)[0]) == 1  # reproduction never registers

    # 3. the nightly deployment has its schedule, and with nothing changed does nothing
    nightly = rest(
        "GET", f"{api}/deployments/name/training-pipeline/nightly-retrain"
    ).json()
    (sched,) = nightly["schedules"]
    assert (
        sched["schedule"]["cron"] == "0 3 * * *"
        and sched["schedule"]["timezone"] == "UTC"
    )
    assert sched["active"] is True
    fr = run_deployment_via_api(api, "training-pipeline/nightly-retrain", {})
    assert fr["state"]["type"] == "COMPLETED"
    expected = f"nothing changed since version {staged[0].version}"
    assert expected in flow_run_logs(api, fr["id"], expect=expected)
    assert len(staging_versions(mlf, name)[0]) == 1

    worker.stop(interrupts=2)
    assert worker.popen.poll() is not None


def test_worker_killed_mid_flow_is_crashed_closed_and_rerun_works(
    stack, make_workspace
):
    import signal

    env, api = stack["env"], stack["api"]
    ws = make_workspace(rows=40000, **{"train.xgboost.n_estimators": 300}).workspace
    env = dict(env, LINEAGEFLOW_WORKSPACE=str(ws))
    worker = deploy_and_start_worker(stack, env)

    dep = rest("GET", f"{api}/deployments/name/training-pipeline/train").json()
    first = rest(
        "POST", f"{api}/deployments/{dep['id']}/create_flow_run", json={}
    ).json()
    mlf = MlflowClient(stack["mlflow_uri"])
    parent = wait_for_parent_of_stage(mlf, "train", timeout=300)
    assert parent, worker.tail()
    os.killpg(worker.pid, signal.SIGKILL)  # the worker (and its process group)
    worker.popen.wait(30)
    # Whether the flow process dies with it or is ended by Prefect's termination
    # handling, the flow run must end Crashed and its MLflow run must not stay
    # RUNNING once the next pipeline starts.

    worker2 = start_worker(stack, env, "prefect worker 2")
    proc = watch_train_deployment(env)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{worker2.tail()}"
    orphan = mlf.get_run(parent)
    assert orphan.info.status == "KILLED", orphan.data.tags.get("lineageflow.error")
    assert (
        rest("GET", f"{api}/flow_runs/{first['id']}").json()["state"]["type"]
        == "CRASHED"
    )
    exp = mlf.get_experiment_by_name("lineageflow")
    assert not mlf.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    assert len(staging_versions(mlf, make_workspace.model_name)[1]) == 1
