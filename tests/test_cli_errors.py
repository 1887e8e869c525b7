"""One-line errors of the ``lineageflow`` command: the exact line on stderr, exit
code 2, no traceback, no MLflow run left RUNNING."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lineageflow.ops.procs import free_port

LF = str(Path(sys.executable).parent / "lineageflow")


def lf(*args: str, **env: str) -> subprocess.CompletedProcess:
    e = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PREFECT_API"))
    }
    e.update(env)
    return subprocess.run(
        [LF, *args],
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_a_prefect_api_that_does_not_answer_is_one_line(make_workspace):
    ws = make_workspace().workspace
    api = f"http://127.0.0.1:{free_port()}/api"
    proc = lf("train", str(ws), PREFECT_API_URL=api)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"error: Prefect API at {api} does not answer (ConnectError): start that "
        "server (`prefect server start`, or `make stack`), or unset "
        "PREFECT_API_URL to use lineageflow's local one\n"
    )
    # refused before any MLflow run started: none is left RUNNING
    assert not (ws / ".lineageflow" / "mlflow.db").exists()


def test_two_misspelled_keys_are_one_line(tmp_path):
    import git

    git.Repo.init(tmp_path)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text(
        "train: {modle: xgboost}\nevaluate: {treshold: 0.7}\n"
    )
    proc = lf("train", str(tmp_path))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "error: params.yaml: unknown keys 'train.modle', 'evaluate.treshold': "
        "remove them or fix their spelling\n"
    )


def test_a_file_deleted_from_a_dvc_directory_is_one_line_before_the_fit(
    make_workspace, prefect_api_url
):
    import yaml
    from mlflow import MlflowClient

    from flows.demo import add_data_version

    ws = make_workspace().workspace
    add_data_version(ws, 1, 600, seed=8, drift=0.0, message="data v2")
    pinned = yaml.safe_load((ws / "data/customers.dvc").read_text())["outs"][0]["md5"]
    (ws / "data/customers/part-001.csv").unlink()
    proc = lf("train", str(ws), PREFECT_API_URL=prefect_api_url)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    read = last.split("read md5 ")[1][:12]
    assert last == (
        "error: data/customers does not match data/customers.dvc (part-001.csv "
        f"deleted; read md5 {read}, .dvc md5 {pinned[:12]}): run `dvc checkout "
        "data/customers` (`dvc pull data/customers` if the cache lacks it) to "
        "train on the committed version, or `dvc add data/customers` and commit "
        "to pin what is there"
    )
    c = MlflowClient(f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("lineageflow").experiment_id])
    assert sorted(
        (r.data.tags.get("lineageflow.stage", "parent"), r.info.status) for r in runs
    ) == [("parent", "FAILED"), ("pull_data", "FAILED")]
