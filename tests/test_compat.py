"""A run recorded by the lineageflow code before the restructuring into seams
(commit PRE_SEAMS), or before stages, data kinds, model sources and engines
were declared behind seams (PRE_DECLARED), still promotes, diffs and reproduces `exact` with today's
code, and today's runs record the same lineage.json keys and tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import git
import pytest
from mlflow import MlflowClient

from flows.promote import promote_version
from flows.reproduce import reproduce_run
from flows.training import training_pipeline
from lineageflow.registry.versions import load_lineage
from lineageflow.reproduce.diff import collect

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

# the last commit before lineageflow/ was split into sub-packages by concern
PRE_SEAMS = "ed0cdceac542f70e5f02f99afcccbae6a17c9c7c"
REPO = Path(__file__).resolve().parents[1]


# the last commit before stages were declared once and the data kinds, model
# sources and engines became seams (lineageflow/pipeline.py, data/kinds.py, ...)
PRE_DECLARED = "980e37537299fa8cf30f7e0b4d04d0449a95c40e"


def old_pipeline(dest: Path, commit: str = PRE_SEAMS) -> Path:
    """``commit``'s code in a git repo of its own (a reproduction reruns its
    commit in a worktree of it, as it would a team's lineageflow checkout)."""
    try:
        blob = subprocess.run(
            ["git", "archive", "--format=tar", commit],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"needs the git history that holds {commit[:12]} (not shallow)")
    dest.mkdir()
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    repo = git.Repo.init(dest, initial_branch="main")
    repo.git.add(A=True)
    repo.index.commit(f"lineageflow at {commit[:12]}")
    return dest


# every installed distribution and the ones imported (private libraries by
# commit); an entry's own keys say how that package was installed on this
# machine (vcs, editable, dir, archive), so they are not listed here
ENVIRONMENT = {"environment.distributions", "environment.imported"}
# record keys added since each old commit, each with the change that added it
ADDED_SINCE = {
    # Delta tables as data (delta-rs)
    PRE_SEAMS: {"environment.packages.deltalake"} | ENVIRONMENT,
    PRE_DECLARED: ENVIRONMENT,
}
# parent-run tags added since each old commit, likewise
TAGS_ADDED_SINCE = {
    # retrain when data changes: a change is trained once
    PRE_SEAMS: {"lineage.change_key"},
    PRE_DECLARED: set(),
}
# what only each old commit has: the flat layout; no stage declarations yet
OLD_LAYOUT = {
    PRE_SEAMS: "lineageflow/stages.py",
    PRE_DECLARED: "lineageflow/lineage/record.py",
}


def keys(value, prefix: str = "") -> set[str]:
    """Every key path of a JSON document (list items share one path)."""
    if isinstance(value, dict):
        out = set()
        for k, v in value.items():
            out |= {f"{prefix}{k}"} | keys(v, f"{prefix}{k}.")
        return out
    if isinstance(value, list):
        return set().union(*(keys(v, prefix) for v in value)) if value else set()
    return set()


@pytest.mark.parametrize("commit", [PRE_SEAMS, PRE_DECLARED], ids=["seams", "declared"])
def test_a_run_recorded_before_the_seams_promotes_diffs_and_reproduces(
    commit, make_workspace, tracking, prefect_api_url, tmp_path
):
    code = old_pipeline(tmp_path / "lineageflow-old", commit)
    assert (code / OLD_LAYOUT[commit]).is_file()
    assert not (code / "lineageflow" / "pipeline.py").exists()
    ws = make_workspace(**{"register.promote": False}).workspace
    model = make_workspace.model_name
    env = dict(
        os.environ,
        PYTHONPATH=str(code),
        MLFLOW_TRACKING_URI=tracking,
        PREFECT_API_URL=prefect_api_url,
    )
    script = (
        "import json, sys; from flows.training import training_pipeline; "
        "print(json.dumps(training_pipeline(workspace=sys.argv[1])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(ws)],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    old = json.loads(proc.stdout.strip().splitlines()[-1])
    assert old["version"] == "1" and old["stage"] == "None", old
    old_record, old_tags = load_lineage(tracking, old["run_id"])
    assert old_record["pipeline"]["path"] == str(code)

    # today's code promotes the version the old code registered
    message = promote_version(model, "1", str(ws))
    assert message == f"{model} v1 promoted to Staging"
    c = MlflowClient(tracking)
    assert c.get_model_version(model, "1").current_stage == "Staging"

    # today's run records the same keys and tags; new keys only where added on
    # purpose (the record is a contract: existing keys stay, new ones are additive)
    new = training_pipeline(workspace=str(ws), reuse=False)
    new_record, new_tags = load_lineage(tracking, new["run_id"])
    assert keys(old_record) <= keys(new_record)
    added = keys(new_record) - keys(old_record)
    entries = "environment.distributions."
    assert {k for k in added if not k.startswith(entries)} == ADDED_SINCE[commit]
    lineage_tags = {k for k in old_tags if k.startswith("lineage.")}
    new_lineage_tags = {k for k in new_tags if k.startswith("lineage.")}
    assert new_lineage_tags == lineage_tags | TAGS_ADDED_SINCE[commit]
    for old_stage, new_stage in zip(
        old_record["stages"], new_record["stages"], strict=True
    ):
        assert old_stage["name"] == new_stage["name"]
        assert set(c.get_run(new_stage["run_id"]).data.tags) == set(
            c.get_run(old_stage["run_id"]).data.tags
        ), old_stage["name"]

    # diff: the same data and params; the pipeline commit differs
    diff = collect(tracking, old["run_id"], new["run_id"], workspace=ws)
    assert [d["md5"][0] == d["md5"][1] for d in diff["data"]] == [True]
    assert diff["params"] == []
    assert diff["code"]["pipeline"]["a"] != diff["code"]["pipeline"]["b"]
    assert diff["metrics"] and all(m["delta"] == 0 for m in diff["metrics"])

    # reproduction reruns the recorded (old) commit in a worktree: exact
    out = reproduce_run(run_id=old["run_id"], workspace=str(ws))
    assert out["verdict"] == "exact", out
    assert "lineage.reproduction_of" in c.get_run(out["reproduction_run_id"]).data.tags
