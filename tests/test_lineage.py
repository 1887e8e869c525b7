"""The lineage record: digest, flat tags, and the checks' verdicts and reasons."""

import copy
import shutil
import subprocess

import pytest

from lineageflow.lineage import checks
from lineageflow.lineage import record as lineage


def make_record(*, root: str, commit: str, md5: str, remote_url: str) -> dict:
    """A lineage record of one DVC directory dataset, as the pipeline writes it."""
    return lineage.build_record(
        workspace={
            "repo": root,
            "path": root,
            "commit": commit,
            "branch": "main",
            "dirty": False,
            "dirty_files": [],
        },
        data=[
            {
                "path": "data/customers",
                "dvc_file": "data/customers.dvc",
                "md5": md5,
                "size": 10,
                "nfiles": 1,
                "remote": "storage",
                "remote_url": remote_url,
                "in_remote": True,
                "read_md5": md5,
            }
        ],
        params={"a": 1},
        params_sha256="p" * 64,
        orchestration={"flow_run_id": "f"},
        mlflow_ids={"experiment_id": "1", "parent_run_id": "r"},
        pipeline={"version": "0.1.0", "commit": None, "dirty": None},
        env={"python": "3.11"},
    )


@pytest.fixture
def record():
    return make_record(
        root="/w", commit="a" * 40, md5="3f2a" + "0" * 28 + ".dir", remote_url="/r"
    )


def tags_for(record):
    return lineage.flat_tags(record) | {"lineage.digest": lineage.digest(record)}


def test_digest_is_sha256_of_canonical_json(record):
    import hashlib
    import json

    blob = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    assert lineage.digest(record) == hashlib.sha256(blob).hexdigest()


def test_record_keeps_the_contract_keys(record):
    assert {
        "workspace",
        "pipeline",
        "data",
        "params",
        "params_sha256",
        "environment",
        "orchestration",
        "mlflow",
    } <= set(record)
    assert {"repo", "commit", "branch", "dirty"} <= set(record["workspace"])
    assert set(record["data"][0]) >= {
        "path",
        "dvc_file",
        "md5",
        "size",
        "nfiles",
        "remote",
        "remote_url",
        "in_remote",
    }


def real_record(paths) -> dict:
    """A record of the real workspace's HEAD and .dvc md5."""
    import git
    import yaml

    ws = paths.workspace
    md5 = yaml.safe_load((ws / "data/customers.dvc").read_text())["outs"][0]["md5"]
    commit = git.Repo(ws).head.commit.hexsha
    return make_record(
        root=str(ws), commit=commit, md5=md5, remote_url=str(paths.remote)
    )


def test_all_checks_pass_on_a_good_record(make_workspace):
    from lineageflow.lineage.evidence import LiveEvidence

    paths = make_workspace(rows=500)
    record = real_record(paths)
    ok = checks.Check("runs_complete", True, "")
    found = checks.run_checks(
        record, tags_for(record), LiveEvidence(paths.workspace), ok
    )
    assert [c.name for c in found if not c.passed] == []


def test_each_check_names_the_fix_against_real_git_and_dvc(make_workspace):
    from lineageflow.lineage.evidence import LiveEvidence

    paths = make_workspace(rows=500, push=False)
    record = real_record(paths)
    ev = LiveEvidence(paths.workspace)
    md5 = record["data"][0]["md5"]
    dirty = copy.deepcopy(record)
    dirty["workspace"].update(dirty=True, dirty_files=["train.py"])
    assert "train.py" in checks.check_clean_tree(dirty).reason
    gone = copy.deepcopy(record)
    gone["workspace"]["commit"] = "b" * 40
    assert "history rewritten" in checks.check_commit_exists(gone, ev).reason
    other = copy.deepcopy(record)
    other["data"][0]["md5"] = "0" * 32 + ".dir"
    assert "commit the .dvc files" in checks.check_data_matches_commit(other, ev).reason
    assert checks.check_data_matches_commit(record, ev).passed
    missing = checks.check_data_in_remote(record, ev)  # never pushed
    assert (
        missing.reason
        == f"data/customers md5 {md5[:12]} is not in remote 'storage': run `dvc push`"
    )
    from flows.demo import dvc

    dvc("push", cwd=paths.workspace)
    assert checks.check_data_in_remote(record, ev).passed
    edited = copy.deepcopy(record)
    edited["data"][0]["read_md5"] = "beef" * 8
    assert "edited without `dvc add`" in checks.check_data_read(edited).reason


def test_edited_tag_or_record_breaks_the_digest(record):
    tags = tags_for(record)
    assert checks.check_digest(record, tags).passed
    forged = dict(tags, **{"lineage.git_commit": "b" * 40})
    assert "lineage.git_commit differs" in checks.check_digest(record, forged).reason
    edited = copy.deepcopy(record)
    edited["params"]["a"] = 2
    assert "edited after the run" in checks.check_digest(edited, tags).reason


def test_runs_complete_requires_every_stage_and_a_model_with_its_schema():
    finished = {s: ["FINISHED"] for s in checks.REQUIRED_STAGES}
    assert checks.check_runs_complete("FINISHED", finished, True, True).passed
    assert checks.check_runs_complete(
        "RUNNING", finished, True, True, parent_in_progress=True
    ).passed
    c = checks.check_runs_complete("RUNNING", finished, True, True)
    assert not c.passed and "parent run is RUNNING" in c.reason
    partial = dict(finished, train=["FAILED"])
    assert (
        "train child run is FAILED"
        in checks.check_runs_complete("FINISHED", partial, True, True).reason
    )
    assert (
        "no input schema (MLflow signature)"
        in checks.check_runs_complete("FINISHED", finished, True, False).reason
    )


def _picture_record() -> dict:
    return {
        "workspace": {"commit": "a" * 40, "branch": "main"},
        "pipeline": {"commit": "b" * 40},
        "data": [{"path": "data/x", "md5": "c" * 32}],
        "stages": [
            {"name": "pull_data", "run_id": "d" * 32, "outputs": [{"name": "data/x"}]},
            {"name": "train", "run_id": "e" * 32, "outputs": [{"name": "model"}]},
        ],
        "mlflow": {"parent_run_id": "f" * 32},
    }


def test_the_lineage_picture_labels_run_ids_as_runs():
    from lineageflow.lineage.graph import nodes_and_edges, to_dot

    nodes, edges = nodes_and_edges(_picture_record(), "m v1", [])
    dot = to_dot(nodes, edges)
    assert "train\\nMLflow run eeeeeeee\\nmodel" in dot  # not a bare 8-hex id
    assert '"data:data/x" -> "stage:pull_data:' in dot and "rankdir=LR" in dot


@pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="needs Debian's graphviz (its dot lays out the lineage picture)",
)
def test_the_lineage_picture_is_laid_out_by_graphviz(tmp_path):
    from lineageflow.lineage.graph import draw, nodes_and_edges, to_dot

    record = _picture_record()
    png = draw(record, tmp_path / "lineage.png", "m v1", [])
    # the same picture dot draws from the DOT text: the layout is Graphviz's
    nodes, edges = nodes_and_edges(record, "m v1", [])
    ref = tmp_path / "ref.png"
    subprocess.run(
        ["dot", "-Tpng", "-Gdpi=110", "-o", str(ref)],
        input=to_dot(nodes, edges).encode(),
        check=True,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.read_bytes() == ref.read_bytes()
