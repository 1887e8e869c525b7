"""End to end: the README's commands in a subprocess, checked by an independent reader.

The reader below imports nothing from lineageflow: it verifies lineage.json with
only the documented keys, git, the .dvc files and the DVC remote's layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def clean_env(**extra) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))
    }
    env.update(DO_NOT_TRACK="true", DVC_NO_ANALYTICS="1", **extra)
    return env


def md5_file(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def verify_independently(record: dict, tags: dict) -> None:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    assert tags["lineage.digest"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert tags["lineage.git_commit"] == record["workspace"]["commit"]
    ws = record["workspace"]
    repo = git.Repo(ws["path"])
    commit = repo.commit(ws["commit"])
    assert ws["dirty"] is False
    for d in record["data"]:
        pointer = yaml.safe_load(repo.git.show(f"{commit.hexsha}:{d['dvc_file']}"))
        assert pointer["outs"][0]["md5"] == d["md5"]
        store = Path(d["remote_url"]) / "files" / "md5"
        obj = store / d["md5"][:2] / d["md5"][2:]
        assert obj.is_file(), f"{d['md5']} is not in the DVC remote"
        manifest = json.loads(obj.read_text())
        assert len(manifest) == d["nfiles"]
        data_dir = Path(ws["path"]) / d["path"]
        for entry in manifest:
            assert (store / entry["md5"][:2] / entry["md5"][2:]).is_file()
            assert md5_file(data_dir / entry["relpath"]) == entry["md5"]


def test_make_demo_leaves_a_verifiable_staging_version(tmp_path):
    demo_dir = tmp_path / "demo"
    state = tmp_path / "state"  # a fresh machine: no signing key yet
    env = clean_env(
        PREFECT_HOME=str(tmp_path / "prefect-home"), XDG_STATE_HOME=str(state)
    )
    proc = run(["make", "demo", f"DEMO_DIR={demo_dir}"], env)
    assert "open the MLflow UI with:" in proc.stdout
    # the default key was made once, for the first promotion, and said where
    key = state / "lineageflow" / "signing" / "signing.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert proc.stderr.count("generated a signing key pair") == 1
    assert "FutureWarning" not in proc.stdout + proc.stderr  # stages are deprecated
    # the verify command the demo prints, run as printed
    (line,) = [ln for ln in proc.stdout.splitlines() if " verify models:/" in ln]
    verified = run(
        [str(Path(sys.executable).parent / "lineageflow")] + line.split()[1:], env
    )
    assert verified.stdout.startswith("verified models:/churn-classifier/2 ")
    db = demo_dir / "workspace" / ".lineageflow" / "mlflow.db"
    assert db.is_file()
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT mv.version, mv.run_id FROM model_versions mv WHERE mv.current_stage='Staging'"
    ).fetchall()
    assert len(rows) == 1, rows
    version, run_id = rows[0]
    alias = con.execute(
        "SELECT version FROM registered_model_aliases WHERE alias='staging'"
    ).fetchall()
    assert alias == [(version,)]
    tags = dict(
        con.execute(
            "SELECT key, value FROM tags WHERE run_uuid=?", (run_id,)
        ).fetchall()
    )
    status = con.execute(
        "SELECT status FROM runs WHERE run_uuid=?", (run_id,)
    ).fetchone()[0]
    assert status == "FINISHED"
    running = con.execute(
        "SELECT count(*) FROM runs WHERE status='RUNNING'"
    ).fetchone()[0]
    assert running == 0
    artifact_uri = con.execute(
        "SELECT artifact_uri FROM runs WHERE run_uuid=?", (run_id,)
    ).fetchone()[0]
    record = json.loads(
        (Path(artifact_uri.removeprefix("file://")) / "lineage.json").read_text()
    )
    verify_independently(record, tags)
    assert not git.Repo(demo_dir / "workspace").is_dirty(untracked_files=True)


def test_cli_honours_mlflow_tracking_uri_and_prefect_home(tmp_path):
    db = tmp_path / "elsewhere" / "mlflow.db"
    db.parent.mkdir()
    home = tmp_path / "prefect-home"
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{db}", PREFECT_HOME=str(home))
    lf = str(Path(sys.executable).parent / "lineageflow")
    run([lf, "demo", "--dir", str(tmp_path / "d"), "--rows", "3000"], env)
    assert db.is_file()
    assert (tmp_path / "elsewhere" / "mlartifacts").is_dir()
    assert not (tmp_path / "d" / "workspace" / ".lineageflow" / "mlflow.db").exists()
    assert (home / "prefect.db").is_file()


def test_cli_bad_workspace_is_one_line(tmp_path):
    lf = str(Path(sys.executable).parent / "lineageflow")
    proc = subprocess.run(
        [lf, "train", str(tmp_path / "nope")],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: workspace {tmp_path / 'nope'} does not exist: pass the path of a git repo"
    ]
