"""The Dask engine on real LocalClusters: the same split as the local engine,
train -> Staging -> MLflow pyfunc -> reproduce, stage reuse, and its faults.

Every cluster here is a real ``distributed.LocalCluster`` of worker processes
on 127.0.0.1, started by the run (``compute.address: null``) or by the test,
and closed by whoever started it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import git
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.demo import add_data_version, dvc
from flows.reproduce import reproduce_run
from flows.training import training_pipeline
from lineageflow.compute_config import ComputeConfig
from lineageflow.config import PrepareConfig
from lineageflow.data.dvc_files import DvcFile, dir_md5
from lineageflow.engines import ENGINES, LocalEngine
from lineageflow.engines.cluster import open_cluster
from lineageflow.engines.dask import DaskEngine
from lineageflow.errors import ConfigError, DataError
from lineageflow.ops.procs import free_port
from lineageflow.workspace import Workspace
from tests.test_reuse import set_params

DATASET = "data/customers"
# a test that runs the flow: against the session's Prefect API
flow_test = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def cluster():
    c = open_cluster(ComputeConfig(engine="dask", workers=2, memory_limit="2GiB"))
    yield c
    c.close()


def replace_data(ws: Path, frames: dict[str, pd.DataFrame], message: str) -> None:
    """The dataset as exactly these files, `dvc add`ed and committed."""
    folder = ws / DATASET
    for f in folder.iterdir():
        f.unlink()
    for name, df in frames.items():
        if name.endswith(".parquet"):
            df.to_parquet(folder / name, index=False)
        else:
            df.to_csv(folder / name, index=False)
    dvc("add", DATASET, cwd=ws)
    repo = git.Repo(ws)
    repo.git.add(f"{DATASET}.dvc")
    repo.index.commit(message)
    dvc("push", cwd=ws)


def mixed_parts(n: int = 900, files: int = 3) -> dict[str, pd.DataFrame]:
    """Partitions that only agree once joined: an int column with a gap in one
    file (float64 in the whole table), text classes, a categorical feature."""
    rng = np.random.default_rng(3)
    out = {}
    for i in range(files):
        df = pd.DataFrame(
            {
                "tenure": rng.integers(0, 60, n),
                "spend": rng.normal(50, 10, n).round(3),
                "plan": rng.choice(["basic", "plus", "pro"], n),
                "churned": rng.choice(["no", "yes"], n, p=[0.7, 0.3]),
            }
        )
        if i == 1:
            df["tenure"] = df["tenure"].astype("float64")
            df.loc[5, "tenure"] = np.nan
        out[f"part-{i:03d}.csv"] = df
    return out


def pinned(ws: Path) -> tuple[DvcFile, object]:
    src = DvcFile(Workspace(ws), DATASET)
    return src, src.pin()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_both_engines_split_the_same_rows_with_the_same_digests(
    make_workspace, cluster, fmt
):
    paths = make_workspace()
    ws = paths.workspace
    parts = mixed_parts()
    if fmt == "parquet":  # Parquet keeps each file's dtypes: one int, one float
        parts = {k.replace(".csv", ".parquet"): v for k, v in parts.items()}
    replace_data(ws, parts, f"mixed {fmt} partitions")
    cfg = PrepareConfig()
    src, version = pinned(ws)

    local, dask = LocalEngine(), DaskEngine(cluster)
    a = local.digested(
        local.split([local.read(src, version).table], "churned", cfg, "auto")
    )
    read = dask.read(src, version)
    b = dask.digested(dask.split([read.table], "churned", cfg, "auto"))

    assert read.version.read_md5 == version.md5  # the workers' md5s make DVC's
    assert (b.task, b.labels, b.task_reason) == (a.task, a.labels, a.task_reason)
    assert b.digests == a.digests
    assert dask.sizes(b) == local.sizes(a)
    # the same rows on each side, by their place in the whole table
    Xb, yb = dask.sample(b, "holdout")
    assert list(Xb.index) == list(a.X_test.index[: len(Xb)])
    assert yb.tolist() == a.y_test.iloc[: len(yb)].tolist()
    assert dask.verify(b, "train", "train") == a.digests["train"]


def test_a_changed_partition_is_read_as_changed(make_workspace, cluster):
    paths = make_workspace()
    ws = paths.workspace
    add_data_version(ws, 1, 500, seed=9, drift=0.0, message="v2")
    part = ws / DATASET / "part-001.csv"
    # changed after the pin (one changed before it is refused by the pin itself:
    # test_a_partition_changed_after_dvc_add_is_refused_before_the_fit)
    src, version = pinned(ws)
    part.write_text(part.read_text().replace("\n1,", "\n0,", 1))
    read = DaskEngine(cluster).read(src, version)
    assert read.version.read_md5 != version.md5
    files = sorted((ws / DATASET).iterdir())
    listing = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in files}
    assert read.version.read_md5 == dir_md5(listing)  # what DVC itself hashes
    md5 = hashlib.md5(part.read_bytes()).hexdigest()
    assert {"file": "part-001.csv", "md5": md5} in [
        {"file": p.name, "md5": i["md5"]}
        for p, i in zip(read.table[0], read.table[1], strict=True)
    ]


def test_a_csv_partition_with_other_columns_is_one_line(make_workspace, cluster):
    paths = make_workspace()
    ws = paths.workspace
    parts = mixed_parts()
    parts["part-002.csv"] = parts["part-002.csv"].rename(columns={"plan": "tier"})
    replace_data(ws, parts, "a partition with other columns")
    src, version = pinned(ws)
    with pytest.raises(
        DataError,
        match=r"part-00\d.csv and part-000.csv in data/customers have different columns \(plan, tier\)",
    ):
        DaskEngine(cluster).read(src, version)


def test_only_xgboost_trains_on_dask():
    from lineageflow.config import parse_params

    with pytest.raises(
        ConfigError,
        match="train.model random_forest cannot train on compute.engine dask",
    ):
        parse_params(
            {"compute": {"engine": "dask"}, "train": {"model": "random_forest"}}
        )
    with pytest.raises(
        ConfigError, match="prepare.method stratified needs the whole table"
    ):
        parse_params(
            {"compute": {"engine": "dask"}, "prepare": {"method": "stratified"}}
        )
    assert set(ENGINES) == {"local", "dask"}


def dask_workspace(make_workspace, versions: int = 3, rows: int = 1500):
    paths = make_workspace(rows=rows, **{"compute.engine": "dask"})
    for i in range(1, versions):
        add_data_version(
            paths.workspace, i, rows, seed=7 + i, drift=0.0, message=f"data v{i + 1}"
        )
    return paths


def record_of(tracking: str, run_id: str) -> dict:
    import json
    import tempfile

    c = MlflowClient(tracking)
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(
            Path(c.download_artifacts(run_id, "lineage.json", tmp)).read_text()
        )


@flow_test
def test_dask_trains_promotes_serves_reproduces_and_reuses(make_workspace, tracking):
    paths = dask_workspace(make_workspace)
    ws = paths.workspace
    name = make_workspace.model_name

    first = training_pipeline(workspace=str(ws))

    assert first["stage"] == "Staging", first
    rec = record_of(tracking, first["run_id"])
    compute = rec["compute"]
    assert compute["engine"] == "dask" and compute["scheduler"] == "LocalCluster"
    assert compute["workers"] == 2 and compute["threads_per_worker"] == [1]
    assert compute["memory_limit"] == [4 * 2**30]
    files = sorted((ws / DATASET).glob("*.csv"))
    assert [(p["file"], p["md5"]) for p in compute["partitions"]] == [
        (f.name, hashlib.md5(f.read_bytes()).hexdigest()) for f in files
    ]
    assert sum(p["rows"] for p in compute["partitions"]) == 4500
    assert compute["xgboost"] == "3.2.0"
    # an ordinary xgboost model: MLflow's own pyfunc serves raw rows on one machine
    model = mlflow.pyfunc.load_model(f"models:/{name}/{first['version']}")
    raw = pd.read_csv(files[0]).drop(columns=["churned"]).head(50)
    predicted = model.predict(raw)
    assert len(predicted) == 50 and set(np.asarray(predicted).tolist()) <= {0, 1}
    assert model.metadata.signature is not None

    out = reproduce_run(run_id=first["run_id"], workspace=str(ws))
    assert out["verdict"] == "exact", out

    # the same run on a cluster of another shape says so, and where it split
    with three_workers() as address:
        os.environ["LINEAGEFLOW_DASK_ADDRESS"] = address
        try:
            other = reproduce_run(run_id=first["run_id"], workspace=str(ws))
        finally:
            del os.environ["LINEAGEFLOW_DASK_ADDRESS"]
    line = (
        MlflowClient(tracking)
        .get_run(first["run_id"])
        .data.tags["lineage.reproduction.verdict"]
    )
    assert other["verdict"] != "exact", other
    assert "first differed at train's params" in line, line
    assert "cluster differs: workers 2 -> 3" in line, line

    # only the gate changed: the fit on the same cluster shape is reused
    set_params(ws, "a lower gate", **{"evaluate.threshold": 0.55})
    again = training_pipeline(workspace=str(ws))
    assert "train" in {r["stage"] for r in again["reused"]}, again


class three_workers:
    """A LocalCluster of 3 workers that the test starts and stops."""

    def __enter__(self) -> str:
        from distributed import LocalCluster

        self.c = LocalCluster(
            n_workers=3,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="2GiB",
        )
        return self.c.scheduler_address

    def __exit__(self, *exc) -> None:
        self.c.close()


def no_run_left_running(tracking: str) -> None:
    c = MlflowClient(tracking)
    running = c.search_runs(
        [e.experiment_id for e in c.search_experiments()],
        "attributes.status = 'RUNNING'",
    )
    assert running == []


@flow_test
def test_an_unreachable_scheduler_is_one_line_and_starts_no_run(
    make_workspace, tracking
):
    port = free_port()
    paths = make_workspace(
        **{"compute.engine": "dask", "compute.address": f"tcp://127.0.0.1:{port}"}
    )
    before = len(
        MlflowClient(tracking).search_runs(
            [e.experiment_id for e in MlflowClient(tracking).search_experiments()]
        )
    )
    with pytest.raises(
        ConfigError,
        match=rf"the Dask scheduler at tcp://127.0.0.1:{port} is unreachable .*: start it, or set compute.address",
    ):
        training_pipeline(workspace=str(paths.workspace))
    c = MlflowClient(tracking)
    assert (
        len(c.search_runs([e.experiment_id for e in c.search_experiments()])) == before
    )
    assert c.search_registered_models(f"name = '{make_workspace.model_name}'") == []
    no_run_left_running(tracking)


@flow_test
def test_a_partition_changed_after_dvc_add_is_refused_before_the_fit(
    make_workspace, tracking
):
    """The flow's own pin (DVC's hash of the directory) refuses it, whatever the
    engine: nothing reaches the workers' fit, nothing is registered."""
    paths = dask_workspace(make_workspace, versions=2, rows=800)
    ws = paths.workspace
    part = ws / DATASET / "part-001.csv"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:-5]) + "\n")  # five rows gone, not re-added
    with pytest.raises(
        DataError,
        match=r"^data/customers does not match data/customers.dvc \(part-001.csv "
        r"modified; read md5 [0-9a-f]{12}, .dvc md5 [0-9a-f]{12}\): run `dvc "
        r"checkout data/customers` .* or `dvc add data/customers` and commit to "
        r"pin what is there$",
    ):
        training_pipeline(workspace=str(ws))
    c = MlflowClient(tracking)
    assert c.search_model_versions(f"name = '{make_workspace.model_name}'") == []
    no_run_left_running(tracking)


@flow_test
def test_a_worker_over_its_memory_limit_is_one_line(make_workspace, tracking):
    paths = make_workspace(
        **{
            "compute.engine": "dask",
            "compute.memory_limit": "350MiB",
            "compute.workers": 1,
        }
    )
    ws = paths.workspace
    rng = np.random.default_rng(0)
    n = 2_000_000
    big = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"f{i}" for i in range(12)])
    big["churned"] = rng.integers(0, 2, n)
    replace_data(ws, {"part-000.parquet": big}, "a partition larger than a worker")
    with pytest.raises(
        DataError,
        match="over its memory limit .*: raise compute.memory_limit, or write the data as smaller partitions",
    ):
        training_pipeline(workspace=str(ws))
    c = MlflowClient(tracking)
    assert c.search_registered_models(f"name = '{make_workspace.model_name}'") == []
    no_run_left_running(tracking)


@flow_test
def test_a_worker_killed_during_the_fit_is_one_line(make_workspace, tracking):
    with three_workers() as address:
        paths = dask_workspace(make_workspace, versions=2, rows=3000)
        ws = paths.workspace
        set_params(
            ws,
            "a long fit on the team's cluster",
            **{"compute.address": address, "train.xgboost.n_estimators": 3000},
        )
        killer = threading.Thread(target=kill_when_training, args=(address,))
        killer.start()
        try:
            with pytest.raises(
                DataError, match=r"a Dask worker died while fitting xgboost"
            ):
                training_pipeline(workspace=str(ws))
        finally:
            killer.join(timeout=120)
    c = MlflowClient(tracking)
    assert c.search_registered_models(f"name = '{make_workspace.model_name}'") == []
    no_run_left_running(tracking)


def kill_when_training(address: str, timeout: float = 120) -> None:
    """SIGKILL the worker that runs xgboost's training task, once one does
    (the scheduler's view, not a guess at timing): xgboost.dask submits it as
    its closure ``fn`` (map_worker_partitions)."""
    from distributed import Client

    with Client(address) as c:
        pids = c.run(os.getpid)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for worker, keys in c.processing().items():
                if any(str(k).startswith("fn-") for k in keys) and worker in pids:
                    os.kill(pids[worker], signal.SIGKILL)
                    return
            time.sleep(0.1)


def prepare_outputs(tracking: str, run_id: str) -> dict:
    [prep] = [
        s for s in record_of(tracking, run_id)["stages"] if s["name"] == "prepare"
    ]
    return {o["name"]: o["digest"] for o in prep["outputs"]}


@flow_test
def test_a_dvc_directory_and_a_delta_table_train_on_both_engines_alike(
    make_workspace, tmp_path, tracking
):
    from deltalake import write_deltalake

    from lineageflow.data.synthetic import make_customers

    table = tmp_path / "more-customers"
    write_deltalake(table, make_customers(700, seed=9, drift=0.2))
    write_deltalake(table, make_customers(300, seed=10, drift=0.2), mode="append")
    paths = make_workspace(
        rows=1200,
        **{
            "data.datasets": ["data/customers", {"delta": str(table)}],
            "evaluate.champion_tolerance": 1.0,
        },
    )
    ws = paths.workspace
    add_data_version(ws, 1, 900, seed=8, drift=0.0, message="data v2")
    local = training_pipeline(workspace=str(ws), reuse=False)
    set_params(ws, "train on the cluster", **{"compute.engine": "dask"})

    dask = training_pipeline(workspace=str(ws), reuse=False)

    assert dask["stage"] == "Staging", dask
    assert prepare_outputs(tracking, dask["run_id"]) == prepare_outputs(
        tracking, local["run_id"]
    )
    parts = record_of(tracking, dask["run_id"])["compute"]["partitions"]
    assert [p["dataset"] for p in parts] == ["data/customers"] * 2 + [str(table)] * 2
    assert sum(p["rows"] for p in parts) == 1200 + 900 + 1000


def test_a_worker_restarted_under_its_name_is_a_lost_worker_not_a_hang():
    """A worker killed and started again under the same name (the stack's, or a
    nanny over its memory limit) comes back at a new address without what the run
    placed on it: the run's next gather says a worker died instead of waiting."""
    from lineageflow.engines.cluster import gather

    c = open_cluster(ComputeConfig(engine="dask", workers=2, memory_limit="2GiB"))
    try:
        first, _ = c.workers()  # the run places work: these addresses count
        kept = c.client.submit(np.arange, 5, workers=[first], pure=False)
        assert list(gather(c, [kept], "testing")[0]) == [0, 1, 2, 3, 4]
        c.client.restart_workers([first], timeout=60)
        assert first not in c.workers() and len(c.workers()) == 2
        again = c.client.submit(
            np.arange, 3, workers=[first], allow_other_workers=False, pure=False
        )
        with pytest.raises(DataError, match="a Dask worker died while testing"):
            gather(c, [again], "testing")
    finally:
        c.close()
