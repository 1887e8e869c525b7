"""Delta Lake tables as versioned data (lineageflow.data.delta), on real
deltalake tables, git, DVC, MLflow (sqlite) and Prefect."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import git
import pytest
from deltalake import DeltaTable, write_deltalake
from mlflow import MlflowClient

from flows.demo import DemoPaths, init_workspace
from flows.promote import promote_model
from flows.reproduce import reproduce_run
from flows.training import training_pipeline
from lineageflow.data.synthetic import make_customers
from lineageflow.errors import ConfigError, DataError, PromotionRefused
from lineageflow.reproduce.diff import collect, render
from tests.conftest import small_params
from tests.servers import mlflow_ui
from tests.test_browser import CHROMIUM, rendered
from tests.test_e2e import clean_env
from tests.test_pipeline import read_lineage, versions

pytestmark = pytest.mark.usefixtures("prefect_api")


def delta_workspace(tmp_path: Path, datasets: list, **overrides):
    """A git + DVC workspace whose params.yaml lists ``datasets``; returns
    (workspace, model name)."""
    paths = DemoPaths(tmp_path / f"ws-{uuid.uuid4().hex[:6]}")
    paths.base.mkdir()
    name = f"model-{uuid.uuid4().hex[:8]}"
    params = small_params(name, **{"data.datasets": datasets, **overrides})
    init_workspace(paths, params_text=params)
    return paths, name


def log_files(table: Path) -> list[str]:
    return sorted(p.name for p in (table / "_delta_log").iterdir())


def test_train_append_retrain_then_reproduce_after_overwrite_and_vacuum(
    tmp_path, tracking
):
    table = tmp_path / "lake" / "customers"
    write_deltalake(table, make_customers(2500, seed=1, drift=0.0))
    paths, name = delta_workspace(tmp_path, [{"delta": str(table)}])
    ws = paths.workspace

    first = training_pipeline(workspace=str(ws))
    assert first["stage"] == "Staging"
    rec = read_lineage(tracking, first["run_id"])
    (d,) = rec["data"]
    dt = DeltaTable(table)
    assert d["kind"] == "delta" and d["version"] == 0 and d["path"] == str(table)
    assert d["uri"] == table.as_uri() and d["table_id"] == dt.metadata().id
    assert d["rows"] == 2500 and d["read_md5"] == d["md5"] and d["nfiles"] == 1
    assert d["timestamp"].endswith("Z") and d["schema"]["churned"] == "int64"
    # MLflow's dataset names the table and the version, 0 included
    c = MlflowClient(tracking)
    (ds,) = c.get_run(first["run_id"]).inputs.dataset_inputs
    assert ds.dataset.name == f"{table}@v0"
    assert ds.dataset.source_type == "delta_table"
    assert json.loads(ds.dataset.source) == {
        "path": table.as_uri(),
        "delta_table_version": 0,
        "delta_table_id": dt.metadata().id,
    }

    note = c.get_run(first["run_id"]).data.tags["mlflow.note.content"]
    assert f"| `{table}` | `{d['md5']}` | {d['size']} | 1 | delta v0 | yes |" in note
    described = c.get_model_version(name, "1").description
    assert f"- data `{table}` v0 md5 `{d['md5']}` (delta)" in described

    # an append is a new version: the nightly check sees it, the retrain records it
    write_deltalake(table, make_customers(1000, seed=2, drift=0.6), mode="append")
    second = training_pipeline(workspace=str(ws), skip_if_unchanged=True)
    assert not second.get("skipped")
    (d2,) = read_lineage(tracking, second["run_id"])["data"]
    assert d2["version"] == 1 and d2["rows"] == 3500 and d2["md5"] != d["md5"]
    assert training_pipeline(workspace=str(ws), skip_if_unchanged=True)["skipped"]
    text = render(collect(tracking, first["run_id"], second["run_id"], str(ws)))
    assert f"v0 {d['md5'][:8]}" in text and f"v1 {d2['md5'][:8]}" in text
    assert "2500" in text and "3500" in text

    # an overwrite that changes a column's type: time travel still reads v0
    changed = make_customers(500, seed=3, drift=0.0).astype(
        {"tenure_months": "float64"}
    )
    write_deltalake(table, changed, mode="overwrite", schema_mode="overwrite")
    result = reproduce_run(first["run_id"], workspace=str(ws))
    assert result["verdict"] == "exact", result

    # VACUUM removes v0's files: one line naming the table, version and the fix
    before = log_files(table)
    DeltaTable(table).vacuum(
        retention_hours=0, enforce_retention_duration=False, dry_run=False
    )
    with pytest.raises(DataError) as exc:
        reproduce_run(first["run_id"], workspace=str(ws))
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"Delta table {table} version 0 cannot be read: VACUUM ")
    assert "keep_versions" in msg
    # lineageflow wrote nothing to the table (the vacuum above did, 2 entries)
    assert len(log_files(table)) == len(before) + 2
    # the weekly audit says the same of both versions, offline, without a rebuild
    from flows.audit import audit_registry

    out = audit_registry(workspace=str(ws), models=[name])
    assert out["audited"] == {
        f"{name}/2": "unreproducible",
        f"{name}/1": "unreproducible",
    }
    assert out["rebuilt"] == []
    assert out["causes"][f"{name}/1"].startswith(
        f"Delta table {table} version 0 cannot be read: VACUUM "
    ), out["causes"]


def test_a_vacuumed_version_then_a_recreated_table_are_refused_at_promotion(
    tmp_path, tracking
):
    table = tmp_path / "customers"
    write_deltalake(table, make_customers(2000, seed=1, drift=0.0))
    # an unreachable threshold: the version stays in None, promotable later
    paths, name = delta_workspace(
        tmp_path, [{"delta": str(table)}], **{"evaluate.threshold": 0.999}
    )
    ws = str(paths.workspace)
    with pytest.raises(PromotionRefused, match="quality_threshold"):
        training_pipeline(workspace=ws)

    def refused_by_data_in_remote() -> str:
        with pytest.raises(PromotionRefused, match="data_in_remote"):
            promote_model(name, "1", ws)
        mv = versions(tracking, name)["1"]
        assert mv.current_stage == "None"
        return mv.tags["lineage.check.data_in_remote"]

    # an overwrite, then VACUUM: the log still lists version 0, its file is gone
    write_deltalake(table, make_customers(2000, seed=5, drift=0.0), mode="overwrite")
    DeltaTable(table).vacuum(
        retention_hours=0, enforce_retention_duration=False, dry_run=False
    )
    assert refused_by_data_in_remote() == (
        f"failed: Delta table {table} version 0 cannot be read: VACUUM removed 1 of "
        "its 1 files; keep the versions you may reproduce with "
        "`vacuum(keep_versions=[...])` or a longer "
        "`delta.deletedFileRetentionDuration`"
    )

    # the log entries of version 0 expire (a checkpoint, then the log cleaned up)
    dt = DeltaTable(table)
    dt.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"})
    DeltaTable(table).create_checkpoint()
    time.sleep(0.05)
    DeltaTable(table).cleanup_metadata()
    assert "00000000000000000000.json" not in log_files(table)
    assert refused_by_data_in_remote() == (
        f"failed: Delta table {table} version 0 is no longer in its log (its entries "
        "expired: delta.logRetentionDuration; latest is 4): it cannot be read again; "
        "keep the log longer"
    )

    # deleted and re-created at the same path: another table, whatever its rows
    shutil.rmtree(table)
    write_deltalake(table, make_customers(2000, seed=1, drift=0.0))
    tag = refused_by_data_in_remote()
    assert tag.startswith(f"failed: Delta table {table} is not the recorded table")
    assert "re-created" in tag


def test_a_run_may_mix_dvc_files_and_delta_tables(make_workspace, tmp_path, tracking):
    table = tmp_path / "more-customers"
    write_deltalake(table, make_customers(800, seed=9, drift=0.2))
    paths = make_workspace(
        **{
            "data.datasets": ["data/customers", {"delta": str(table), "version": 0}],
            "evaluate.champion_tolerance": 1.0,
        }
    )
    write_deltalake(table, make_customers(300, seed=10, drift=0.2), mode="append")
    summary = training_pipeline(workspace=str(paths.workspace))
    assert summary["stage"] == "Staging"
    kinds = {
        d["path"]: d.get("kind", "dvc")
        for d in read_lineage(tracking, summary["run_id"])["data"]
    }
    assert kinds == {"data/customers": "dvc", str(table): "delta"}
    (d,) = [d for d in read_lineage(tracking, summary["run_id"])["data"] if "kind" in d]
    assert d["version"] == 0 and d["rows"] == 800  # pinned, not the latest

    # the same versions again: every stage is reused (its key holds the table id,
    # version and files digest); a new Delta version is not
    again = training_pipeline(workspace=str(paths.workspace))
    assert {r["stage"] for r in again["reused"]} == {"pull_data", "prepare", "train"}
    (paths.workspace / "params.yaml").write_text(
        (paths.workspace / "params.yaml")
        .read_text()
        .replace("version: 0", "version: 1")
    )
    repo = git.Repo(paths.workspace)
    repo.git.add("params.yaml")
    repo.index.commit("train on Delta version 1")
    newer = training_pipeline(workspace=str(paths.workspace))
    reused = {r["stage"]: r["from_run"] for r in newer["reused"]}
    assert "prepare" not in reused and "train" not in reused


def refused_one_line(ws: Path, exc_type=DataError) -> str:
    with pytest.raises(exc_type) as exc:
        training_pipeline(workspace=str(ws))
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_bad_delta_inputs_each_get_one_line_and_nothing_is_registered(
    tmp_path, tracking
):
    table = tmp_path / "t"
    write_deltalake(table, make_customers(1500, seed=1, drift=0.0))
    write_deltalake(table, make_customers(200, seed=2, drift=0.0), mode="append")
    plain = tmp_path / "plain"
    plain.mkdir()
    make_customers(100, seed=1, drift=0.0).to_csv(plain / "x.csv", index=False)
    first_commit = DeltaTable(table).history()[-1]["timestamp"]
    cases = [
        ({"delta": str(plain)}, DataError, f"{plain} is not a Delta table"),
        (
            {"delta": str(tmp_path / "nope")},
            DataError,
            f"Delta table {tmp_path / 'nope'}: {tmp_path / 'nope'} does not exist",
        ),
        (
            {"delta": str(table), "version": 9},
            DataError,
            f"Delta table {table} has no version 9 (latest is 1)",
        ),
        (
            {"delta": str(table), "timestamp": "2001-01-01T00:00:00Z"},
            DataError,
            f"Delta table {table}: timestamp 2001-01-01T00:00:00Z is before its version 0",
        ),
        (
            {"delta": str(table), "version": 0, "timestamp": "2026-01-01"},
            ConfigError,
            f"params.yaml: delta table '{table}': set version or timestamp, not both",
        ),
    ]
    before = log_files(table)
    for entry, kind, start in cases:
        paths, name = delta_workspace(tmp_path, [entry])
        msg = refused_one_line(paths.workspace, kind)
        assert msg.startswith(start), msg
        assert versions(tracking, name) == {}
    assert log_files(table) == before
    assert first_commit  # the table's own history is intact

    # a table inside the workspace must be git-ignored (its files are not the commit's)
    paths, name = delta_workspace(tmp_path, [{"delta": "lake/customers"}])
    write_deltalake(
        paths.workspace / "lake" / "customers", make_customers(1200, 4, 0.0)
    )
    msg = refused_one_line(paths.workspace)
    assert msg.startswith("Delta table lake/customers is inside the workspace but not")
    (paths.workspace / ".gitignore").write_text(".lineageflow/\nlake/\n")
    repo = git.Repo(paths.workspace)
    repo.git.add(".gitignore")
    repo.index.commit("ignore the lake")
    assert training_pipeline(workspace=str(paths.workspace))["stage"] == "Staging"


def test_refused_s3_credentials_name_the_endpoint_not_the_key(
    tmp_path, tracking, monkeypatch
):
    """A moto S3 that checks credentials (moto's IAM mode): one line naming the
    endpoint; the key appears nowhere."""
    from deployments.services import Proc
    from lineageflow.ops.procs import free_port

    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    bin_dir = Path(sys.executable).parent
    moto = Proc(
        "moto-iam",
        [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env,
        tmp_path,
        tmp_path / "moto.log",
    )
    try:
        moto.wait_http(f"http://127.0.0.1:{port}/moto-api/", timeout=60)
        secret = "not-a-key-moto-knows-" + uuid.uuid4().hex
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
        paths, name = delta_workspace(tmp_path, [{"delta": "s3://lake/customers"}])
        msg = refused_one_line(paths.workspace)
        assert msg.startswith(
            f"Delta table s3://lake/customers: S3 endpoint http://127.0.0.1:{port} "
            "refused the credentials"
        ), msg
        assert secret not in msg and "AKIAUNKNOWN" not in msg
        assert versions(tracking, name) == {}
    finally:
        moto.stop()


@pytest.mark.slow
def test_the_delta_demo_trains_both_versions_and_reproduces_the_first(tmp_path):
    """`lineageflow demo --source delta`, as README shows it, from a clean shell."""
    env = clean_env(PREFECT_HOME=str(tmp_path / "prefect-home"))
    lf = Path(sys.executable).parent / "lineageflow"
    proc = subprocess.run(
        [
            str(lf),
            "demo",
            "--dir",
            str(tmp_path / "d"),
            "--rows",
            "2000",
            "--source",
            "delta",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = proc.stdout
        assert f"Delta version 1 of {tmp_path / 'd' / 'lake' / 'customers'}" in out
        assert out.count(" -> Staging") == 2
        assert out.rstrip().endswith("verdict: exact"), out[-1500:]
        table = tmp_path / "d" / "lake" / "customers"
        assert DeltaTable(table).version() == 1
        first = re.search(r"^  ([0-9a-f]{32})  ", out, re.M).group(1)
        if CHROMIUM:  # MLflow's own run page names the table and its version
            db = tmp_path / "d" / "workspace" / ".lineageflow" / "mlflow.db"
            shown = mlflow_run_page(db, first, tmp_path, env, needle=f"{table}@v0")
            (d,) = read_lineage(f"sqlite:///{db}", first)["data"]
            assert f"Datasets {table}@v0 ({d['md5']}) training" in shown
    finally:
        subprocess.run(
            [str(lf), "server", "stop"], env=env, capture_output=True, timeout=60
        )


def mlflow_run_page(db: Path, run_id: str, tmp: Path, env: dict, needle: str) -> str:
    """A run's page in MLflow's own UI (`mlflow ui` on the store, headless Chromium)."""
    exp = MlflowClient(f"sqlite:///{db}").get_run(run_id).info.experiment_id
    with mlflow_ui(db, tmp, env) as server:
        return rendered(f"{server}/#/experiments/{exp}/runs/{run_id}", needle, tmp)


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        (
            {"delta": "s3://AKIAX:sekrit@bucket/t"},
            "params.yaml: delta table URI for 'bucket/t' carries credentials: put "
            "them in the environment (AWS_* or LINEAGEFLOW_DELTA_STORAGE_OPTIONS), "
            "never in params.yaml",
        ),
        (
            {"delta": "gs://bucket/t"},
            "params.yaml: 'data.datasets.0.delta' delta table 'gs://bucket/t': only "
            "local paths, file:// and s3:// are read (got 'gs://bucket/t')",
        ),
        (
            {"delta": "/lake/t", "timestamp": "yesterday"},
            "params.yaml: 'data.datasets.0.timestamp' timestamp 'yesterday' is not ISO "
            "8601 (e.g. 2026-11-01T00:00:00Z) (got 'yesterday')",
        ),
        (
            {"delta": "/lake/t", "versoin": 2},
            "params.yaml: unknown key 'data.datasets.0.versoin': remove it or fix its "
            "spelling",
        ),
        (
            {"delta": "../outside"},
            "params.yaml: 'data.datasets.0.delta' delta table path '../outside' must "
            "stay inside the workspace (got '../outside')",
        ),
    ],
)
def test_delta_entries_are_checked_when_params_are_read(entry, said):
    from lineageflow.config import parse_params

    with pytest.raises(ConfigError) as exc:
        parse_params({"data": {"datasets": [entry]}})
    assert str(exc.value) == said
    assert "sekrit" not in str(exc.value)


def test_a_plain_dvc_config_hashes_as_before_delta_existed():
    """Adding the Delta kind changed no DVC-only params digest (nightly skips
    and stage keys of earlier runs still match)."""
    from lineageflow.config import parse_params

    cfg = parse_params({"data": {"datasets": ["data/customers", "data/more"]}})
    assert cfg.data.datasets == ["data/customers", "data/more"]
    assert cfg.as_dict()["data"]["datasets"] == ["data/customers", "data/more"]


def test_schema_change_names_the_first_changed_column():
    from lineageflow.data.delta import schema_change

    recorded = {"tenure_months": "int64", "plan": "string", "churned": "int64"}
    assert schema_change(recorded, dict(recorded)) is None
    assert schema_change(
        recorded, {**recorded, "plan": "large_string", "x": "int8"}
    ) == ("column 'plan' was string and is now large_string")


def test_storage_options_come_from_the_environment_with_bounded_waits(monkeypatch):
    from lineageflow.data.delta_store import OPTIONS_ENV, storage_options

    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", OPTIONS_ENV):
        monkeypatch.delenv(k, raising=False)
    assert storage_options("/lake/t") is None  # local tables need none
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    opts = storage_options("s3://b/t")
    assert opts["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert opts["AWS_ALLOW_HTTP"] == "true" and opts["AWS_REGION"] == "eu-west-1"
    assert opts["max_retries"] == "2" and opts["connect_timeout"] == "5s"
    monkeypatch.setenv(
        OPTIONS_ENV, '{"AWS_ENDPOINT_URL": "https://s3.internal", "timeout": "9s"}'
    )
    opts = storage_options("s3://b/t")
    assert opts["AWS_ENDPOINT_URL"] == "https://s3.internal" and opts["timeout"] == "9s"
    assert "AWS_ALLOW_HTTP" not in opts
    monkeypatch.setenv(OPTIONS_ENV, "endpoint=http://x")
    with pytest.raises(
        DataError, match=r"^\$LINEAGEFLOW_DELTA_STORAGE_OPTIONS is not a JSON"
    ):
        storage_options("s3://b/t")


def test_a_delta_store_that_does_not_answer_is_unverifiable_not_gone(
    monkeypatch, tmp_path
):
    """The audit asks the kind whether its store answered before calling a
    recorded version gone (lineageflow.audit.offline.data_findings)."""
    from lineageflow.audit.offline import data_findings
    from lineageflow.ops.procs import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    entry = {
        "kind": "delta",
        "path": "s3://lake/customers",
        "uri": "s3://lake/customers",
        "version": 0,
        "md5": "ab" * 16,
    }
    (found,) = data_findings({"data": [entry]}, tmp_path)
    assert found.verdict == "unverifiable", found
    assert found.cause.startswith(
        "s3://lake/customers: Delta table s3://lake/customers: S3 endpoint "
        "http://127.0.0.1:"
    ), found.cause
    # a local table that is not there any more is gone, not unverifiable
    gone = dict(entry, path=str(tmp_path / "no-table"), uri=str(tmp_path / "no-table"))
    (found,) = data_findings({"data": [gone]}, tmp_path)
    assert found.verdict == "unreproducible", found
