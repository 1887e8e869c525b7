"""The lineage record: digest, flat tags, and the checks' verdicts and reasons."""

import copy

import pytest

from lineageflow import lineage


@pytest.fixture
def record():
    return lineage.build_record(
        workspace={
            "repo": "/w",
            "path": "/w",
            "commit": "a" * 40,
            "branch": "main",
            "dirty": False,
            "dirty_files": [],
        },
        data=[
            {
                "path": "data/customers",
                "dvc_file": "data/customers.dvc",
                "md5": "3f2a" + "0" * 28 + ".dir",
                "size": 10,
                "nfiles": 1,
                "remote": "storage",
                "remote_url": "/r",
                "in_remote": True,
                "read_md5": "3f2a" + "0" * 28 + ".dir",
            }
        ],
        params={"a": 1},
        params_sha256="p" * 64,
        orchestration={"flow_run_id": "f"},
        mlflow_ids={"experiment_id": "1", "parent_run_id": "r"},
        pipeline={"version": "0.1.0", "commit": None, "dirty": None},
        env={"python": "3.11"},
    )


class FakeEvidence:
    """Stands in for git/DVC answers in pure unit tests of the check logic only;
    the flow tests exercise the real LiveEvidence against real git and DVC."""

    def __init__(self, commit=True, md5=None, remote=True):
        self.commit, self.md5, self.remote = commit, md5, remote

    def commit_exists(self, commit):
        return self.commit

    def dvc_md5_at(self, commit, dvc_file):
        return self.md5

    def in_remote(self, entry):
        return self.remote


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


def test_all_checks_pass_on_a_good_record(record):
    ev = FakeEvidence(md5=record["data"][0]["md5"])
    ok = lineage.Check("runs_complete", True, "")
    checks = lineage.run_checks(record, tags_for(record), ev, ok)
    assert [c.name for c in checks if not c.passed] == []


def test_each_check_names_the_fix(record):
    md5 = record["data"][0]["md5"]
    dirty = copy.deepcopy(record)
    dirty["workspace"].update(dirty=True, dirty_files=["train.py"])
    assert "train.py" in lineage.check_clean_tree(dirty).reason
    assert (
        "history rewritten"
        in lineage.check_commit_exists(record, FakeEvidence(commit=False)).reason
    )
    assert (
        "commit the .dvc files"
        in lineage.check_data_matches_commit(record, FakeEvidence(md5="x")).reason
    )
    missing = lineage.check_data_in_remote(record, FakeEvidence(md5=md5, remote=False))
    assert (
        missing.reason
        == f"data/customers md5 {md5[:12]} is not in remote 'storage': run `dvc push`"
    )
    edited = copy.deepcopy(record)
    edited["data"][0]["read_md5"] = "beef" * 8
    assert "edited without `dvc add`" in lineage.check_data_read(edited).reason


def test_edited_tag_or_record_breaks_the_digest(record):
    tags = tags_for(record)
    assert lineage.check_digest(record, tags).passed
    forged = dict(tags, **{"lineage.git_commit": "b" * 40})
    assert "lineage.git_commit differs" in lineage.check_digest(record, forged).reason
    edited = copy.deepcopy(record)
    edited["params"]["a"] = 2
    assert "edited after the run" in lineage.check_digest(edited, tags).reason


def test_runs_complete_requires_every_stage_and_a_signed_model():
    finished = {s: ["FINISHED"] for s in lineage.REQUIRED_STAGES}
    assert lineage.check_runs_complete("FINISHED", finished, True, True).passed
    assert lineage.check_runs_complete(
        "RUNNING", finished, True, True, parent_in_progress=True
    ).passed
    c = lineage.check_runs_complete("RUNNING", finished, True, True)
    assert not c.passed and "parent run is RUNNING" in c.reason
    partial = dict(finished, train=["FAILED"])
    assert (
        "train child run is FAILED"
        in lineage.check_runs_complete("FINISHED", partial, True, True).reason
    )
    assert (
        "no signature"
        in lineage.check_runs_complete("FINISHED", finished, True, False).reason
    )
