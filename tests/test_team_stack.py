"""The whole product on the team stack (deployments/stack.py), all on 127.0.0.1:
PostgreSQL 15 for MLflow and Prefect, an S3 store (moto) behind MLflow's proxied
artifacts and as the DVC remote, a process pool with two workers, a Dask scheduler
with two workers.

`prefect deploy --all`, the train deployment, a nightly run that skips, a UI-style
reproduction on another checkout with an empty DVC cache, 8 concurrent promotions,
then an audit of the Staging version that reads only the tracking server (PostgreSQL)
and the object store. A `compute.engine: dask` run on the stack's Dask cluster."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import git
import pytest
from mlflow import MlflowClient

from deployments.services import BUCKET
from deployments.stack import TeamStack
from tests.conftest import WorkspaceFactory
from tests.servers import needs_postgres
from tests.test_deployments import (
    BIN,
    cli,
    flow_run_logs,
    rest,
    run_deployment_via_api,
    staging_versions,
    wait_flow_run,
    watch_train_deployment,
)

pytestmark = [
    pytest.mark.slow,
    needs_postgres,
]


@pytest.fixture(autouse=True)
def as_pipeline(team, clean_mlflow, monkeypatch):
    """In-process MLflow clients and Prefect REST calls sign in as the pipeline
    identity, as a shell that sourced env.sh does."""
    for key, value in team.secrets.mlflow_env("pipeline").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", team.secrets.prefect)
    # as env.sh: moto's IAM check cannot read MLflow's presigned download URLs
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")


def s3_keys(team: TeamStack, identity: str = "pipeline") -> dict[str, str]:
    """The S3 keys the stack made for `identity`."""
    return team.secrets.s3_env(identity)


def stack_env(team: TeamStack, identity: str = "pipeline", **extra) -> dict:
    """A shell that sourced env.sh (`pipeline`) or reader.env.sh (`reader`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_"))
    }
    return (
        env
        | team.client_env(identity)
        | {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        | extra
    )


def s3(team: TeamStack, identity: str = "admin"):
    import boto3

    k = s3_keys(team, identity)
    return boto3.client(
        "s3",
        endpoint_url=team.s3_endpoint,
        aws_access_key_id=k["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=k["AWS_SECRET_ACCESS_KEY"],
        region_name=k["AWS_DEFAULT_REGION"],
    )


def workspace_with_origin(
    tmp_path: Path, team: TeamStack, rows: int = 3000, **overrides
):
    """A workspace whose DVC remote is the stack's S3 and whose git `origin` is a
    bare repo, as a team's would be."""
    os.environ.update(
        s3_keys(team), AWS_ENDPOINT_URL_S3=team.s3_endpoint
    )  # in-process dvc push
    try:
        factory = WorkspaceFactory(tmp_path)
        paths = factory(rows=rows, remote=team.dvc_remote, **overrides)
    finally:
        for key in (*s3_keys(team), "AWS_ENDPOINT_URL_S3"):
            os.environ.pop(key, None)
    origin = tmp_path / "origin.git"
    git.Repo.init(origin, bare=True)
    repo = git.Repo(paths.workspace)
    repo.create_remote("origin", str(origin))
    repo.git.push("origin", "main")
    return paths, factory.model_name


def runs_of(client: MlflowClient, parent: str) -> list:
    exp = client.get_experiment_by_name("lineageflow")
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )


def test_the_product_on_postgres_s3_and_two_workers(team, tmp_path):
    env = stack_env(team)
    paths, name = workspace_with_origin(tmp_path, team)
    ws = paths.workspace
    deploy_env = dict(env, LINEAGEFLOW_WORKSPACE=str(ws))
    out = cli([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], deploy_env)
    assert "reproduce-run/reproduce" in out.stdout

    # 1. the train deployment, run by one of the two workers
    proc = watch_train_deployment(env)
    logs = "\n".join(p.tail() for p in team.procs.values() if "worker" in p.name)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{logs[-3000:]}"
    mlf = MlflowClient(team.mlflow_uri)
    _, (staged,) = staging_versions(mlf, name)
    run = mlf.get_run(staged.run_id)
    assert run.data.tags["lineage.checks"] == "passed"
    with tempfile.TemporaryDirectory() as tmp:
        record_text = Path(
            mlf.download_artifacts(run.info.run_id, "lineage.json", tmp)
        ).read_text()
    record = json.loads(record_text)
    (data,) = record["data"]
    assert data["remote_url"] == "s3://lineageflow/dvc" and data["in_remote"] is True
    # the artifacts really are in S3, under the server's --artifacts-destination
    keys = [
        o["Key"]
        for o in s3(team)
        .list_objects_v2(Bucket=BUCKET, Prefix="mlflow/")
        .get("Contents", [])
    ]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/lineage.json") for k in keys)

    # credentials come from the environment, never into the record, a tag or a log
    flow_run_id = run.data.tags["prefect.flow_run_id"]
    seen = [record_text, flow_run_logs(team.prefect_api, flow_run_id)]
    for r in [run, *runs_of(mlf, run.info.run_id)]:
        seen += [json.dumps(r.data.tags), json.dumps(r.data.params)]
    for secret in s3_keys(team).values():
        if secret != "us-east-1":
            assert not [s for s in seen if secret in s], secret

    # 2. the nightly run with nothing changed does nothing
    fr = run_deployment_via_api(
        team.prefect_api, "training-pipeline/nightly-retrain", {}
    )
    assert fr["state"]["type"] == "COMPLETED"
    expected = f"nothing changed since version {staged.version}"
    assert expected in flow_run_logs(team.prefect_api, fr["id"], expect=expected)

    # 3. reproduce as the UI does, from the run id alone, where the workspace is not:
    # the flow clones the recorded origin and pulls the data from S3 (empty cache)
    away = tmp_path / "elsewhere"
    ws.rename(away)
    try:
        fr = run_deployment_via_api(
            team.prefect_api, "reproduce-run/reproduce", {"run_id": run.info.run_id}
        )
        assert fr["state"]["type"] == "COMPLETED", flow_run_logs(
            team.prefect_api, fr["id"]
        )[-3000:]
    finally:
        away.rename(ws)
    original = mlf.get_run(run.info.run_id)
    assert original.data.tags["lineage.reproduction.verdict"] == "exact"
    repro = original.data.tags["lineage.reproduced_by"]
    pulls = [
        r
        for r in runs_of(mlf, repro)
        if r.data.tags["lineageflow.stage"] == "pull_data"
    ]
    assert [r.data.params["action"] for r in pulls] == ["pulled"]

    # 4. eight retrains at once, across both workers, of the very inputs Staging was
    # trained on: each completes, none adds a duplicate version, one Staging
    # (tests/test_faults_servers.py races eight promotions of new versions)
    dep = rest(
        "GET", f"{team.prefect_api}/deployments/name/training-pipeline/train"
    ).json()
    created = [
        rest(
            "POST",
            f"{team.prefect_api}/deployments/{dep['id']}/create_flow_run",
            json={},
        ).json()["id"]
        for _ in range(8)
    ]
    finished = [wait_flow_run(team.prefect_api, i, timeout=900) for i in created]
    states = [f["state"]["type"] for f in finished]
    assert states == ["COMPLETED"] * 8, [
        flow_run_logs(team.prefect_api, f["id"])[-1500:]
        for f in finished
        if f["state"]["type"] != "COMPLETED"
    ]
    mvs, staged_now = staging_versions(mlf, name)
    assert len(mvs) == 1 and len(staged_now) == 1, [m.version for m in mvs]
    said = flow_run_logs(team.prefect_api, finished[0]["id"], expect="identical to")
    assert f"identical to v{staged_now[0].version}" in said
    exp = mlf.get_experiment_by_name("lineageflow")
    assert not mlf.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )

    # 5. the audit reads only the tracking server (PostgreSQL) and S3: no workspace,
    # no DVC cache, no git on this side
    shutil.rmtree(tmp_path)
    audit_from_stores(team.mlflow_uri, s3(team), name)


def audit_from_stores(tracking_uri: str, bucket_client, name: str) -> None:
    """Check the Staging version's lineage with nothing but MLflow's API and S3."""
    import mlflow

    mlf = MlflowClient(tracking_uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mv = mlf.get_model_version_by_alias(name, "staging")
    run = mlf.get_run(mv.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        record = json.loads(
            Path(
                mlf.download_artifacts(run.info.run_id, "lineage.json", tmp)
            ).read_text()
        )
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    assert (
        run.data.tags["lineage.digest"]
        == hashlib.sha256(canonical.encode()).hexdigest()
    )
    assert mv.tags["lineage.checks"] == "passed"
    for d in record["data"]:
        bucket, _, prefix = d["remote_url"].removeprefix("s3://").partition("/")
        key = f"{prefix}/files/md5/{d['md5'][:2]}/{d['md5'][2:]}"
        manifest = json.loads(
            bucket_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        )
        assert len(manifest) == d["nfiles"]
        for entry in manifest:
            part = f"{prefix}/files/md5/{entry['md5'][:2]}/{entry['md5'][2:]}"
            body = bucket_client.get_object(Bucket=bucket, Key=part)["Body"].read()
            assert hashlib.md5(body).hexdigest() == entry["md5"]
    # the registered model is the bytes the train stage recorded
    stages = {s["name"]: s for s in record["stages"]}
    (model_out,) = stages["train"]["outputs"]
    assert mv.source == model_out["uri"]  # the version registers that logged model
    logged = mlf.get_logged_model(model_out["uri"].removeprefix("models:/"))
    with tempfile.TemporaryDirectory() as tmp:
        pkl = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{logged.artifact_location}/model.pkl",
            dst_path=tmp,
            tracking_uri=tracking_uri,
        )
        digest = hashlib.sha256(Path(pkl).read_bytes()).hexdigest()
    assert digest == model_out["digest"]


def test_delta_on_the_stacks_s3_and_a_dvc_remote_set_in_config_local(team, tmp_path):
    """A Delta table on the stack's S3: train, append, retrain, reproduce the
    first after an overwrite (exact), keys never recorded. Then a DVC S3 remote
    configured the DVC way (endpoint and keys in `.dvc/config.local`, nothing in
    the environment): train, push, reproduce with an emptied cache."""
    from deltalake import write_deltalake

    from flows.demo import DemoPaths, add_data_version, dvc, init_workspace
    from lineageflow.data.synthetic import make_customers
    from tests.conftest import small_params

    env = stack_env(team)  # endpoint and keys for the Delta table, as a user's shell
    opts = {
        "AWS_ENDPOINT_URL": team.s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": s3_keys(team)["AWS_DEFAULT_REGION"],
        "AWS_ACCESS_KEY_ID": s3_keys(team)["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s3_keys(team)["AWS_SECRET_ACCESS_KEY"],
    }
    table = f"s3://{BUCKET}/lake/customers-{tmp_path.name[-6:]}"
    write_deltalake(table, make_customers(2500, 1, 0.0), storage_options=opts)
    paths = DemoPaths(tmp_path / "delta")
    paths.base.mkdir()
    name = f"model-delta-{tmp_path.name[-6:]}"
    init_workspace(
        paths, params_text=small_params(name, **{"data.datasets": [{"delta": table}]})
    )
    ws = str(paths.workspace)
    first = train_cli(ws, env)
    write_deltalake(
        table, make_customers(900, 2, 0.6), mode="append", storage_options=opts
    )
    second = train_cli(ws, env)
    mlf = MlflowClient(team.mlflow_uri)
    records = []
    for s in (first, second):
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(
                mlf.download_artifacts(s["run_id"], "lineage.json", tmp)
            ).read_text()
        records.append(text)
        (d,) = json.loads(text)["data"]
        assert d["kind"] == "delta" and d["uri"] == table
    assert [json.loads(r)["data"][0]["version"] for r in records] == [0, 1]
    write_deltalake(
        table, make_customers(400, 3, 0.0), mode="overwrite", storage_options=opts
    )
    out = cli(
        [str(BIN / "lineageflow"), "reproduce", first["run_id"], "--workspace", ws], env
    )
    assert (
        mlf.get_run(first["run_id"])
        .data.tags["lineage.reproduction.verdict"]
        .startswith("exact")
    ), out.stdout[-2000:]
    seen = [*records, out.stdout, out.stderr]
    for s in (first, second):
        run = mlf.get_run(s["run_id"])
        for r in [run, *runs_of(mlf, s["run_id"])]:
            seen += [json.dumps(r.data.tags), json.dumps(r.data.params)]
        seen.append(
            flow_run_logs(team.prefect_api, run.data.tags["prefect.flow_run_id"])
        )
    for secret in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert not [s for s in seen if s3_keys(team)[secret] in s], secret

    # unreachable S3: one line naming the endpoint (never a key), nothing registered
    down = dict(env, AWS_ENDPOINT_URL_S3="http://127.0.0.1:9")
    proc = subprocess.run(
        [str(BIN / "lineageflow"), "train", ws],
        env=down,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: Delta table {table}: S3 endpoint http://127.0.0.1:9 could not be reached"
    ), proc.stderr[-2000:]
    assert s3_keys(team)["AWS_SECRET_ACCESS_KEY"] not in proc.stderr + proc.stdout

    # DVC the DVC way: endpoint and keys in config.local only
    no_aws = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    paths = DemoPaths(tmp_path / "dvc-local")
    paths.base.mkdir()
    name = f"model-dvclocal-{tmp_path.name[-6:]}"
    init_workspace(
        paths, params_text=small_params(name), remote=f"s3://{BUCKET}/dvc-local"
    )
    ws = paths.workspace
    for key, value in (
        ("endpointurl", team.s3_endpoint),
        ("access_key_id", s3_keys(team)["AWS_ACCESS_KEY_ID"]),
        ("secret_access_key", s3_keys(team)["AWS_SECRET_ACCESS_KEY"]),
    ):
        dvc("remote", "modify", "--local", "storage", key, value, cwd=ws)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
    try:
        add_data_version(ws, 0, 3000, seed=7, drift=0.0, message="data v1")
    finally:
        os.environ.update(saved)
    run = train_cli(str(ws), no_aws)
    assert run["stage"] == "Staging"
    shutil.rmtree(ws / ".dvc" / "cache")  # the reproduction must pull from S3
    cli(
        [str(BIN / "lineageflow"), "reproduce", run["run_id"], "--workspace", str(ws)],
        no_aws,
        timeout=300,
    )
    tags = mlf.get_run(run["run_id"]).data.tags
    assert tags["lineage.reproduction.verdict"].startswith("exact")
    repro = tags["lineage.reproduced_by"]
    (pull,) = [
        r
        for r in runs_of(mlf, repro)
        if r.data.tags["lineageflow.stage"] == "pull_data"
    ]
    assert pull.data.params["action"] == "pulled"


def train_cli(ws: str, env: dict) -> dict:
    """`lineageflow train WS`: its run id and stage, from the summary line."""
    out = cli([str(BIN / "lineageflow"), "train", ws], env, timeout=300).stdout
    m = re.search(r"^run ([0-9a-f]{32}): \S+ v\d+ -> (\w+)", out, re.M)
    assert m, out[-2000:]
    return {"run_id": m.group(1), "stage": m.group(2)}


def test_signed_promotions_verify_from_the_stacks_s3_artifacts(team, tmp_path):
    """Two promotions by `lineageflow train` on the stack: the Staging model and
    its history verify from S3 (lineageflow and the model_signing command); a
    model file edited in the bucket is named, and load_verified refuses it."""
    import lineageflow
    from lineageflow.attest import keys
    from lineageflow.runs.artifact_store import download
    from tests.test_attest import model_signing_verifies

    paths, name = workspace_with_origin(
        tmp_path, team, rows=2000, **{"evaluate.champion_tolerance": 1.0}
    )
    env = stack_env(team)
    ws = str(paths.workspace)
    train_cli(ws, env)
    from flows.demo import add_data_version

    os.environ.update(s3_keys(team), AWS_ENDPOINT_URL_S3=team.s3_endpoint)
    try:
        add_data_version(paths.workspace, 1, 800, seed=8, drift=0.3, message="v2")
    finally:
        for key in (*s3_keys(team), "AWS_ENDPOINT_URL_S3"):
            os.environ.pop(key, None)
    assert train_cli(ws, env)["stage"] == "Staging"
    pub = keys.state_dir() / keys.PUBLIC_NAME  # the default key, made at promotion
    verify = [str(BIN / "lineageflow"), "verify", f"models:/{name}@staging"]
    out = json.loads(cli([*verify, "--key", str(pub), "--json"], env).stdout)
    assert out["verified"] and [h["version"] for h in out["history"]] == ["2", "1"]
    assert out["signature"].startswith("runs:/")

    mlf = MlflowClient(team.mlflow_uri)
    mv = mlf.get_model_version(name, "2")
    run_id, _, folder = out["signature"].removeprefix("runs:/").partition("/")
    sig = mlf.download_artifacts(run_id, folder, str(tmp_path / "sig"))
    # (MLflow's own models:/ download asks the process-wide registry, whichever
    # store an earlier test left there: lineageflow resolves it on this one)
    model = download(f"models:/{name}/2", team.mlflow_uri, tmp_path / "model")
    model_signing_verifies(model, sig, pub)

    bucket = s3(team)
    model_id = mv.source.removeprefix("models:/")
    (key,) = [
        o["Key"]
        for o in bucket.list_objects_v2(Bucket=BUCKET)["Contents"]
        if model_id in o["Key"] and o["Key"].endswith("/MLmodel")
    ]
    saved = bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    try:
        bucket.put_object(Bucket=BUCKET, Key=key, Body=saved + b"\n")
        proc = subprocess.run(
            [*verify, "--key", str(pub)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 1
        assert proc.stdout.strip() == (
            f"FAILED models:/{name}/2: model file MLmodel was changed after promotion"
        )
        with pytest.raises(Exception, match="MLmodel was changed"):
            lineageflow.load_verified(
                f"models:/{name}@staging", public_key=pub, tracking_uri=team.mlflow_uri
            )
    finally:
        bucket.put_object(Bucket=BUCKET, Key=key, Body=saved)
    model = lineageflow.load_verified(
        f"models:/{name}@staging", public_key=pub, tracking_uri=team.mlflow_uri
    )
    import pandas as pd

    rows = pd.read_csv(next((paths.workspace / "data" / "customers").glob("*.csv")))
    assert len(model.predict(rows.drop(columns=["churned"]).head(10))) == 10


def test_a_dask_run_on_the_stacks_scheduler_and_workers(team, tmp_path):
    """``compute.engine: dask`` on a DVC directory of three CSV partitions (one per
    data version), run by the train deployment on a pool worker: the flow run
    finds the stack's scheduler in the worker's environment
    (LINEAGEFLOW_DASK_ADDRESS), not a LocalCluster of its own; it reaches
    Staging, its record names that scheduler, its two workers and the
    partitions, and the registered model predicts raw rows."""
    import mlflow
    import pandas as pd

    from flows.demo import add_data_version
    from lineageflow.runs.artifact_store import download

    paths, name = workspace_with_origin(
        tmp_path, team, rows=1500, compute={"engine": "dask"}
    )
    ws = paths.workspace
    os.environ.update(s3_keys(team), AWS_ENDPOINT_URL_S3=team.s3_endpoint)  # dvc push
    try:
        for part in (1, 2):
            add_data_version(
                ws, part, 1500, seed=7 + part, drift=0.2, message=f"v{part + 1}"
            )
    finally:
        for key in (*s3_keys(team), "AWS_ENDPOINT_URL_S3"):
            os.environ.pop(key, None)
    git.Repo(ws).git.push("origin", "main")
    env = stack_env(team)
    deploy_env = dict(env, LINEAGEFLOW_WORKSPACE=str(ws))
    cli([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "train"], deploy_env)

    proc = watch_train_deployment(env)
    logs = "\n".join(p.tail() for p in team.procs.values() if "worker" in p.name)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{logs[-3000:]}"
    mlf = MlflowClient(team.mlflow_uri)
    _, (staged,) = staging_versions(mlf, name)
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(
            mlf.download_artifacts(staged.run_id, "lineage.json", tmp)
        ).read_text()
    compute = json.loads(text)["compute"]
    assert compute["engine"] == "dask"
    assert compute["scheduler"] == team.dask_address  # the stack's, no credentials
    assert compute["workers"] == 2 and compute["threads_per_worker"] == [1]
    files = sorted((ws / "data" / "customers").glob("*.csv"))

    def md5(f: Path) -> str:  # DVC's hash of a file
        return hashlib.md5(f.read_bytes()).hexdigest()

    assert [f.name for f in files] == ["part-000.csv", "part-001.csv", "part-002.csv"]
    assert compute["partitions"] == [
        {"dataset": "data/customers", "file": f.name, "rows": 1500, "md5": md5(f)}
        for f in files
    ]
    assert s3_keys(team)["AWS_SECRET_ACCESS_KEY"] not in text

    # the registered model: pyfunc, raw rows in, the data's own labels out
    model_dir = download(f"models:/{name}@staging", team.mlflow_uri, tmp_path / "m")
    model = mlflow.pyfunc.load_model(str(model_dir))
    rows = pd.read_csv(files[-1])
    predicted = model.predict(rows.drop(columns=["churned"]))
    assert len(predicted) == len(rows) and set(predicted) == {0, 1}  # churned's

    # reproduced on the same cluster (the stack's scheduler, from env.sh's
    # variable): the same placement, the same model, the same metrics
    cli(
        [str(BIN / "lineageflow"), "reproduce", staged.run_id, "--workspace", str(ws)],
        dict(env, AWS_ENDPOINT_URL_S3=team.s3_endpoint, **s3_keys(team)),
        timeout=300,
    )
    tags = mlf.get_run(staged.run_id).data.tags
    assert tags["lineage.reproduction.verdict"] == "exact", tags
    again = json.loads(
        Path(
            mlf.download_artifacts(
                tags["lineage.reproduced_by"], "lineage.json", tmp_path
            )
        ).read_text()
    )["compute"]
    assert again["scheduler"] == team.dask_address
