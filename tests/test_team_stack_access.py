"""The team stack is secure by default (deployments/access.py), tested on the
running stack: every service refuses an anonymous request; `reader` browses runs,
versions and artifacts and can change nothing, and lineageflow says so in one line;
`pipeline` trains and promotes; no generated secret shows up in a log file, an
MLflow tag, param or artifact, a Prefect artifact, flow-run parameter or event,
or a process's command line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from deployments.services import BUCKET
from deployments.stack import TeamStack
from tests.servers import needs_postgres
from tests.test_deployments import BIN, ROOT, rest
from tests.test_team_stack import (  # noqa: F401 - as_pipeline: autouse
    as_pipeline,
    s3,
    stack_env,
    train_cli,
    workspace_with_origin,
)

pytestmark = [pytest.mark.slow, needs_postgres]


@pytest.fixture(scope="module")
def trained(team, tmp_path_factory):
    """One model the pipeline identity trained and promoted on the stack."""
    tmp = tmp_path_factory.mktemp("access")
    paths, name = workspace_with_origin(tmp, team, rows=1500)
    with pytest.MonkeyPatch.context() as mp:  # the module fixture: no autouse here
        for key, value in team.secrets.mlflow_env("pipeline").items():
            mp.setenv(key, value)
        run = train_cli(str(paths.workspace), stack_env(team))
    assert run["stage"] == "Staging"
    return {"run_id": run["run_id"], "name": name, "workspace": paths.workspace}


def reader_env(team: TeamStack, **extra) -> dict[str, str]:
    """A shell that sourced reader.env.sh."""
    return stack_env(team, "reader", **extra)


def refused(call) -> str:
    with pytest.raises(MlflowException) as info:
        call()
    return str(info.value)


def test_every_service_refuses_an_anonymous_request(team):
    # MLflow: no user, a wrong password
    api = f"{team.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(api, timeout=10).status_code == 401
    assert httpx.get(api, auth=("pipeline", "wrong"), timeout=10).status_code == 401
    assert httpx.get(
        api, auth=("pipeline", team.secrets.mlflow["pipeline"]), timeout=10
    ).is_success
    # Prefect: no auth string (its /health alone answers anyone)
    flows = f"{team.prefect_api}/flows/filter"
    assert httpx.post(flows, json={}, timeout=10).status_code == 401
    assert httpx.post(flows, json={}, auth=("x", "y"), timeout=10).status_code == 401
    assert rest("POST", flows, json={}).is_success  # with the auth string
    # PostgreSQL: scram-sha-256 everywhere, no trust line; a role reaches only its
    # own database
    import psycopg

    hba = (team.pg.data / "pg_hba.conf").read_text().splitlines()
    rules = [line for line in hba if line.strip() and not line.startswith("#")]
    assert rules and all(line.split()[-1] == "scram-sha-256" for line in rules)
    port, pw = team.ports["pg"], team.secrets.pg

    def connect(db: str, user: str, password: str | None):
        env_pass = {"PGPASSFILE": "/nonexistent"}  # no fallback to a pgpass file
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env_pass.items():
                mp.setenv(key, value)
            return psycopg.connect(
                host="127.0.0.1",
                port=port,
                dbname=db,
                user=user,
                password=password,
                connect_timeout=5,
            )

    for db, user, password in (
        ("mlflow", "mlflow", None),
        ("mlflow", "postgres", None),
        ("mlflow", "mlflow", "wrong"),
        ("prefect", "mlflow", pw["mlflow"]),  # another service's database
        ("mlflow", "prefect", pw["prefect"]),
    ):
        with pytest.raises(psycopg.OperationalError) as info:
            connect(db, user, password).close()
        assert "password" in str(info.value) or "permission denied" in str(
            info.value
        ), str(info.value)
    connect("mlflow", "mlflow", pw["mlflow"]).close()
    # S3: unsigned, an unknown key, the reader writing, the pipeline writing
    # MLflow's artifacts behind the server
    import boto3
    import botocore.exceptions

    s3(team, "pipeline").put_object(Bucket=BUCKET, Key="dvc/probe", Body=b"data")
    admin = s3(team, "admin")
    admin.put_object(Bucket=BUCKET, Key="mlflow/probe", Body=b"model")
    mlflow_object = "mlflow/probe"
    unsigned = httpx.get(f"{team.s3_endpoint}/{BUCKET}/dvc/probe", timeout=10)
    assert unsigned.status_code == 403 and b"data" not in unsigned.content
    stranger = boto3.client(
        "s3",
        endpoint_url=team.s3_endpoint,
        aws_access_key_id="AKIASTRANGER",
        aws_secret_access_key="not-a-key",
        region_name="us-east-1",
    )
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
        stranger.get_object(Bucket=BUCKET, Key="dvc/probe")

    for identity, call in (
        ("reader", lambda c: c.put_object(Bucket=BUCKET, Key="dvc/x", Body=b"1")),
        ("reader", lambda c: c.delete_object(Bucket=BUCKET, Key="dvc/x")),
        ("pipeline", lambda c: c.put_object(Bucket=BUCKET, Key="mlflow/x", Body=b"")),
        ("reader", lambda c: c.get_object(Bucket=BUCKET, Key=mlflow_object)),
        ("pipeline", lambda c: c.get_object(Bucket=BUCKET, Key=mlflow_object)),
        (
            "pipeline",  # a bulk delete is checked against the bucket
            lambda c: c.delete_objects(
                Bucket=BUCKET, Delete={"Objects": [{"Key": mlflow_object}]}
            ),
        ),
        ("pipeline", lambda c: c.delete_bucket(Bucket=BUCKET)),
        ("mlflow", lambda c: c.put_object(Bucket=BUCKET, Key="dvc/x", Body=b"1")),
    ):
        try:
            answer = call(s3(team, identity))
        except botocore.exceptions.ClientError as exc:
            assert "AccessDenied" in str(exc), exc
        else:  # a bulk delete answers 200, with an error per key
            errors = answer.get("Errors", []) if isinstance(answer, dict) else []
            assert errors and errors[0]["Code"] == "AccessDenied", (identity, answer)
    assert (
        admin.get_object(Bucket=BUCKET, Key="mlflow/probe")["Body"].read() == b"model"
    )
    # each server's password file holds its own role only, never the superuser's
    for name, role in (("pgpass-mlflow", "mlflow"), ("pgpass-prefect", "prefect")):
        lines = (team.base / name).read_text().split()
        assert lines and all(line.split(":")[3] == role for line in lines), name
        assert pw["postgres"] not in (team.base / name).read_text()
    # every file holding a secret is its owner's only
    assert (team.base.stat().st_mode & 0o777) == 0o700
    for name in ("secrets.json", "env.sh", "reader.env.sh", "pgpass", "pgpass-mlflow"):
        assert (team.base / name).stat().st_mode & 0o777 == 0o600, name
    assert (team.base / "mlflow-auth.ini").stat().st_mode & 0o777 == 0o600


def test_the_reader_browses_and_changes_nothing(team, trained, tmp_path):
    name, run_id = trained["name"], trained["run_id"]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in team.secrets.mlflow_env("reader").items():
            mp.setenv(key, value)
        c = MlflowClient(team.mlflow_uri)
        run = c.get_run(run_id)
        assert run.data.tags["lineage.checks"] == "passed"
        version = c.get_model_version_by_alias(name, "staging")
        assert c.get_model_version(name, version.version).run_id == run_id
        got = c.download_artifacts(run_id, "lineage.json", str(tmp_path))
        assert json.loads(Path(got).read_text())["data"]
        exp = run.info.experiment_id
        for call in (
            lambda: c.create_run(exp),
            lambda: c.set_tag(run_id, "x", "y"),
            lambda: c.create_model_version(name, f"runs:/{run_id}/model", run_id),
            lambda: c.transition_model_version_stage(name, version.version, "None"),
            lambda: c.set_registered_model_alias(name, "staging", version.version),
            lambda: c.delete_registered_model_alias(name, "staging"),
            lambda: c.delete_model_version(name, version.version),
            lambda: c.delete_registered_model(name),
            lambda: c.delete_run(run_id),
            lambda: c.delete_experiment(exp),
        ):
            assert "403" in refused(call)
    # untouched: still the pipeline's signed Staging version
    mlf = MlflowClient(team.mlflow_uri)
    assert mlf.get_model_version_by_alias(name, "staging").version == version.version

    # lineageflow as the reader: one line each, nothing written
    def lineageflow(*args: str, env: dict) -> str:
        proc = subprocess.run(
            [str(BIN / "lineageflow"), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        return proc.stderr.strip().splitlines()[-1]

    # the reader verifies the signed Staging model (reads only)
    from lineageflow.attest import keys

    pub = keys.state_dir() / keys.PUBLIC_NAME  # the key the promotion signed with
    checked = subprocess.run(
        [str(BIN / "lineageflow"), "verify", f"models:/{name}@staging"]
        + ["--key", str(pub), "--json"],
        cwd=ROOT,
        env=reader_env(team),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert json.loads(checked.stdout)["verified"] is True

    ws = str(trained["workspace"])
    line = lineageflow("train", ws, env=reader_env(team))
    assert line == (
        f"error: Prefect API at {team.prefect_api} refused the credentials: set "
        "PREFECT_API_AUTH_STRING to its auth string (the team stack's env.sh has "
        "it; reader.env.sh has none: the reader may not run flows)"
    )
    # with Prefect's one credential, MLflow still refuses the reader
    with_prefect = reader_env(team, PREFECT_API_AUTH_STRING=team.secrets.prefect)
    tail = (
        "to user 'reader' (permission denied): train, register and promote as an "
        "identity that may (the team stack's pipeline: source .stack/env.sh)"
    )
    line = lineageflow("train", ws, env=with_prefect)
    assert line == f"error: MLflow refused /api/2.0/mlflow/runs/create {tail}"
    line = lineageflow(
        "promote", name, version.version, "--workspace", ws, env=with_prefect
    )
    assert line.startswith("error: MLflow refused /api/2.0/mlflow/") and line.endswith(
        tail
    )
    runs = mlf.search_runs(
        [run.info.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    assert not runs
    assert mlf.get_model_version_by_alias(name, "staging").version == version.version


def test_no_generated_secret_leaks(team, trained, tmp_path):
    """Search every log file, MLflow tag, param and artifact, Prefect artifact,
    flow-run parameter and event, and every process's command line."""
    secrets = [s for s in team.secrets.values() if len(s) >= 16]
    assert len(secrets) >= 10

    def leaks(text: str, where: str) -> None:
        found = [s[:4] + "…" for s in secrets if s in text]
        assert not found, f"{where}: {found}"

    for f in team.base.rglob("*.log"):
        leaks(f.read_text(errors="replace"), str(f))
    leaks((team.pg.base / "pg.log").read_text(errors="replace"), "pg.log")
    c = MlflowClient(team.mlflow_uri)
    for exp in c.search_experiments():
        for run in c.search_runs([exp.experiment_id]):
            leaks(json.dumps([run.data.tags, run.data.params]), run.info.run_id)
    run_id = trained["run_id"]
    dst = tmp_path / "artifacts"
    dst.mkdir()
    c.download_artifacts(run_id, "", str(dst))
    files = [f for f in dst.rglob("*") if f.is_file()]
    assert files
    for f in files:
        leaks(f.read_bytes().decode("latin-1"), str(f))
    for mv in c.search_model_versions(f"name = '{trained['name']}'"):
        leaks(json.dumps([mv.tags, mv.source, mv.description]), f"v{mv.version}")
    api = team.prefect_api
    leaks(rest("POST", f"{api}/artifacts/filter", json={}).text, "Prefect artifacts")
    leaks(rest("POST", f"{api}/flow_runs/filter", json={}).text, "flow-run params")
    leaks(rest("POST", f"{api}/deployments/filter", json={}).text, "deployments")
    page = rest("POST", f"{api}/events/filter", json={"limit": 50}).json()
    assert page["events"]
    for _ in range(20):  # 50 events a page
        leaks(json.dumps(page["events"]), "events")
        if not page.get("next_page"):
            break
        page = rest("GET", page["next_page"]).json()
    ps = subprocess.run(
        ["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True
    ).stdout
    assert "moto_server" in ps and "mlflow" in ps
    leaks(ps, "ps")
