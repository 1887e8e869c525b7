"""MLflow's own UI, in a real headless Chromium, on the store `make demo` leaves:
the parent run shows the git commit and the datasets; the Staging version shows
the lineage summary."""

from __future__ import annotations

import html
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.servers import mlflow_ui

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="needs Debian's chromium (not installed; .ci/run installs it)",
    ),
]


def page_text(url: str, tmp: Path) -> str:
    """The DOM after MLflow's single-page app has fetched and rendered."""
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tempfile.mkdtemp(dir=tmp)}",
            "--window-size=1400,1000",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rendered(url: str, needle: str, tmp: Path, tries: int = 3) -> str:
    """The page's visible text once it shows ``needle`` (a page whose requests
    outlast Chromium's virtual-time budget on a busy machine is loaded again)."""
    for _ in range(tries):
        text = visible_text(page_text(url, tmp))
        if needle in text:
            return text
    raise AssertionError(f"{url} never showed {needle!r}: {text[:1500]}")


def visible_text(dom: str) -> str:
    """The page's text, tags and inline SVG paths removed, spaces folded."""
    text = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", dom, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return re.sub(r"\s+", " ", text)


def test_mlflow_ui_shows_commit_datasets_and_the_version_lineage(tmp_path):
    demo = tmp_path / "demo"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))
    }
    env.update(DO_NOT_TRACK="true", PREFECT_HOME=str(tmp_path / "prefect-home"))
    subprocess.run(
        ["make", "demo", f"DEMO_DIR={demo}"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    db = demo / "workspace" / ".lineageflow" / "mlflow.db"
    con = sqlite3.connect(db)
    name, version, run_id, mv_source = con.execute(
        "SELECT name, version, run_id, source FROM model_versions "
        "WHERE current_stage='Staging'"
    ).fetchone()
    (archived,) = con.execute(
        "SELECT version FROM model_versions WHERE current_stage='Archived'"
    ).fetchone()
    (exp_id,) = con.execute(
        "SELECT experiment_id FROM runs WHERE run_uuid=?", (run_id,)
    ).fetchone()
    (commit,) = con.execute(
        "SELECT value FROM tags WHERE run_uuid=? AND key='mlflow.source.git.commit'",
        (run_id,),
    ).fetchone()
    (md5,) = con.execute(
        "SELECT value FROM tags WHERE run_uuid=? AND key='lineage.data.data/customers.md5'",
        (run_id,),
    ).fetchone()
    con.close()

    with mlflow_ui(db, tmp_path, env) as server:
        base = f"{server}/#"
        run_page = visible_text(
            page_text(f"{base}/experiments/{exp_id}/runs/{run_id}", tmp_path)
        )
        # MLflow's own Source field: the entrypoint, the branch, the short commit
        source = run_page.split("flows/training.py:training_pipeline", 1)[1]
        source = source.split("Datasets", 1)[0]
        assert "main" in source and commit[:7] in source, source[:300]
        # the Datasets panel: name (digest = DVC md5) and context
        datasets = run_page.split("Datasets", 1)[1].split("Tags", 1)[0]
        assert f"data/customers ({md5[:36]}) training" in datasets, datasets[:300]
        mv_page = visible_text(
            page_text(f"{base}/models/{name}/versions/{version}", tmp_path)
        )
        assert "Lineage" in mv_page and commit[:12] in mv_page
        assert "code_committed" in mv_page and "✅" in mv_page
        # where its signature is, and the check that the key could sign
        assert "Signed by key" in mv_page and "signing_key" in mv_page, mv_page[:800]
        # the logged model knows its version and what it was scored on (it said
        # "Not registered" and "Datasets used: None" for versions made with
        # create_model_version)
        model_id = mv_source.removeprefix("models:/")
        model_page = rendered(
            f"{base}/experiments/{exp_id}/models/{model_id}", "Model versions", tmp_path
        )
        used = model_page.split("Datasets used", 1)[1].split("Model versions", 1)
        assert "holdout" in used[0], used[0][:300]
        assert f"{name} v{version}" in used[1][:200], used[1][:300]
        # the parent run: resolved params and a description with the outcome
        assert "train.xgboost.n_estimators" in run_page
        assert f"{name} v{version} promoted to Staging" in run_page
        # the archived version no longer claims to be in Staging
        old = visible_text(
            page_text(f"{base}/models/{name}/versions/{archived}", tmp_path)
        )
        assert "promoted to Staging" not in old and "now Archived" in old, old[:500]
