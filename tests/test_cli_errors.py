"""One-line errors the ``lineageflow`` command gives before a flow runs: the exact
line on stderr, exit code 2, no traceback, no MLflow run started."""

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
