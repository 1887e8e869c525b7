"""The lineage record and the checks run before promotion. This module owns lineage.

The record is a contract read by other tools: keep its keys. It is logged as
``lineage.json`` at the parent run's root and as flat ``lineage.*`` tags, with
``lineage.digest`` = sha256 of the canonical JSON so an edit is detected.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

SCHEMA_VERSION = 1
PACKAGES = (
    "lineageflow",
    "prefect",
    "mlflow",
    "dvc",
    "gitpython",
    "scikit-learn",
    "xgboost",
    "pandas",
    "numpy",
)
REQUIRED_STAGES = ("pull_data", "prepare", "train", "evaluate")


def canonical_json(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def digest(record: dict) -> str:
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()


def package_versions(names) -> dict[str, str | None]:
    """Installed version of each distribution (None when absent)."""
    pkgs = {}
    for name in names:
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            pkgs[name] = None
    return pkgs


def environment() -> dict[str, Any]:
    pkgs = package_versions(PACKAGES)
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "packages": pkgs,
    }


def build_record(
    *,
    workspace: dict,
    data: list[dict],
    params: dict,
    params_sha256: str,
    orchestration: dict,
    mlflow_ids: dict,
    pipeline: dict | None = None,
    env: dict | None = None,
    user_code: list[dict] | None = None,
    stages: list[dict] | None = None,
) -> dict:
    record = {
        "schema": SCHEMA_VERSION,
        "workspace": {
            k: workspace[k] for k in ("repo", "path", "commit", "branch", "dirty")
        }
        | {"dirty_files": workspace.get("dirty_files", [])},
        "pipeline": pipeline if pipeline is not None else _pipeline_state(),
        "data": data,
        "params": params,
        "params_sha256": params_sha256,
        "environment": env if env is not None else environment(),
        "orchestration": orchestration,
        "mlflow": mlflow_ids,
    }
    if user_code:  # additive key: records without user code keep their digest
        record["user_code"] = user_code
    if stages:  # additive: name, run id, code, params sha256, inputs, outputs
        record["stages"] = stages
    return record


def verify_input(stage: str, name: str, got: str, want: str | None) -> None:
    """A stage refuses an input whose content is not the one recorded for it."""
    from lineageflow.errors import LineageError

    if want is not None and got != want:
        raise LineageError(
            f"{stage} refused input {name}: its digest {got[:12]} is not the "
            f"recorded {want[:12]} (changed after it was produced): rerun the "
            "stage that made it"
        )


def flat_tags(record: dict) -> dict[str, str]:
    """The record's summary as MLflow tags (everything but the digest)."""
    ws, pipe = record["workspace"], record["pipeline"]
    tags = {
        "lineage.schema": str(record["schema"]),
        "lineage.git_commit": ws["commit"],
        "lineage.git_branch": str(ws["branch"]),
        "lineage.git_dirty": str(ws["dirty"]).lower(),
        "lineage.workspace_repo": ws["repo"],
        "lineage.pipeline_version": str(pipe.get("version")),
        "lineage.pipeline_commit": str(pipe.get("commit")),
        "lineage.pipeline_dirty": str(pipe.get("dirty")).lower(),
        "lineage.params_sha256": record["params_sha256"],
    }
    for d in record["data"]:
        tags[f"lineage.data.{d['path']}.md5"] = d["md5"]
        tags[f"lineage.data.{d['path']}.in_remote"] = str(d["in_remote"]).lower()
    for u in record.get("user_code", []):
        tags[f"lineage.user_code.{u['role']}"] = (
            f"{u['file']}:{u['function']}@{str(u['blob'])[:12]}"
        )
    return tags


def flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    """Resolved params as MLflow params, one per leaf (``train.xgboost.max_depth``),
    so runs can be compared by config in MLflow's UI. Lists as JSON; values cut
    to MLflow's 6000-character limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flat_params(value, f"{name}.")
        else:
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            out[name] = text[:6000]
    return out


def source_tags(workspace: dict, entrypoint: str) -> dict[str, str]:
    """MLflow's own source fields, so its UI shows the commit the run trained from
    (the workspace commit: it pins data pointers, params and the user's code;
    the pipeline commit is ``lineage.pipeline_commit``)."""
    tags = {
        "mlflow.source.name": entrypoint,
        "mlflow.source.type": "JOB",
        "mlflow.source.git.commit": workspace["commit"],
        "mlflow.source.git.repoURL": workspace["repo"],
    }
    if workspace.get("branch"):
        tags["mlflow.source.git.branch"] = workspace["branch"]
    return tags


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    reason: str
    # a tie with the champion: not promoted, but not an error either (the
    # champion simply stays); every other failed check fails the flow run
    tie: bool = False

    def tag_value(self) -> str:
        return "passed" if self.passed else f"failed: {self.reason}"


class Evidence(Protocol):
    """What the checks need from git, DVC and MLflow (see registry.LiveEvidence)."""

    def commit_exists(self, commit: str) -> bool: ...
    def dvc_md5_at(self, commit: str, dvc_file: str) -> str | None: ...
    def in_remote(self, entry: dict) -> bool: ...


def check_clean_tree(record: dict) -> Check:
    ws = record["workspace"]
    if not ws["dirty"]:
        return Check("clean_tree", True, f"tree clean at {ws['commit'][:12]}")
    files = ", ".join(ws.get("dirty_files", [])[:5]) or "uncommitted changes"
    return Check(
        "clean_tree",
        False,
        f"workspace had uncommitted changes at run time ({files}): commit or stash "
        "them and retrain",
    )


def check_code_committed(record: dict) -> Check:
    """The code that trained the model is in a commit: the pipeline checkout was
    clean and every workspace code file named in params.yaml was committed."""
    pipe = record["pipeline"]
    problems = []
    if pipe.get("dirty"):
        files = ", ".join(pipe.get("dirty_files", [])[:5]) or "uncommitted changes"
        problems.append(
            f"lineageflow code at {str(pipe.get('commit'))[:12]} had uncommitted "
            f"changes ({files}): commit them in the lineageflow repo and retrain"
        )
    for u in record.get("user_code", []):
        if not u.get("committed"):
            state = (
                "is not in git" if u.get("blob") is None else "has uncommitted edits"
            )
            problems.append(
                f"workspace code {u['file']} (train.{u['role']}) {state}: "
                "commit it and retrain"
            )
    if problems:
        return Check("code_committed", False, "; ".join(problems))
    if pipe.get("commit"):
        where = f"lineageflow @ {pipe['commit'][:12]}"
    else:
        where = f"installed lineageflow {pipe.get('version')} (no checkout)"
    n = len(record.get("user_code", []))
    extra = f" and {n} workspace code file(s)" if n else ""
    return Check("code_committed", True, f"{where}{extra} committed")


def check_commit_exists(record: dict, ev: Evidence) -> Check:
    commit = record["workspace"]["commit"]
    if ev.commit_exists(commit):
        return Check("commit_exists", True, f"commit {commit[:12]} exists")
    return Check(
        "commit_exists",
        False,
        f"recorded commit {commit[:12]} is not in the workspace repo (history "
        "rewritten?): push or restore it",
    )


def check_data_matches_commit(record: dict, ev: Evidence) -> Check:
    commit = record["workspace"]["commit"]
    bad = []
    for d in record["data"]:
        at_commit = ev.dvc_md5_at(commit, d["dvc_file"])
        if at_commit != d["md5"]:
            bad.append(
                f"{d['path']} md5 {d['md5'][:12]} != {d['dvc_file']} at "
                f"{commit[:12]} ({(at_commit or 'missing')[:12]})"
            )
    if not bad:
        return Check(
            "data_matches_commit", True, "every md5 matches its .dvc at commit"
        )
    return Check(
        "data_matches_commit",
        False,
        "; ".join(bad) + ": commit the .dvc files that the run used",
    )


def check_data_in_remote(record: dict, ev: Evidence) -> Check:
    missing = [d for d in record["data"] if not ev.in_remote(d)]
    if not missing:
        return Check("data_in_remote", True, "every data version is in its DVC remote")
    d = missing[0]
    if d["remote"] is None:
        return Check(
            "data_in_remote",
            False,
            f"{d['path']} has no DVC remote to be pulled from: "
            "`dvc remote add -d storage <url>` then `dvc push`",
        )
    names = ", ".join(m["path"] for m in missing)
    return Check(
        "data_in_remote",
        False,
        f"{names} md5 {d['md5'][:12]} is not in remote '{d['remote']}': run `dvc push`",
    )


def check_data_read(record: dict) -> Check:
    bad = [d for d in record["data"] if d.get("read_md5") != d["md5"]]
    if not bad:
        return Check("data_read_matches", True, "the data read matched every .dvc md5")
    d = bad[0]
    return Check(
        "data_read_matches",
        False,
        f"{d['path']} was edited without `dvc add` (read md5 "
        f"{str(d.get('read_md5'))[:12]} != .dvc md5 {d['md5'][:12]}): "
        f"`dvc add {d['path']}` and commit, or `dvc checkout {d['path']}`",
    )


def check_digest(record: dict, tags: dict[str, str]) -> Check:
    want = tags.get("lineage.digest")
    got = digest(record)
    if want != got:
        return Check(
            "digest_intact",
            False,
            f"lineage.json digest {got[:12]} != tag lineage.digest "
            f"{str(want)[:12]}: the record or tag was edited after the run; retrain",
        )
    # a flat tag absent from the run claims nothing (runs made before that tag
    # existed stay verifiable); one that is present must agree with the record
    edited = sorted(
        k for k, v in flat_tags(record).items() if k in tags and tags[k] != v
    )
    if edited:
        return Check(
            "digest_intact",
            False,
            f"tag {edited[0]} differs from lineage.json (edited after the run): "
            "retrain",
        )
    return Check("digest_intact", True, f"digest {got[:12]} intact")


def check_runs_complete(
    parent_status: str,
    child_status: dict[str, list[str]],
    has_model: bool,
    has_signature: bool,
    parent_in_progress: bool = False,
) -> Check:
    ok_parent = {"FINISHED", "RUNNING"} if parent_in_progress else {"FINISHED"}
    problems = []
    if parent_status not in ok_parent:
        problems.append(f"parent run is {parent_status}")
    for stage in REQUIRED_STAGES:
        statuses = child_status.get(stage, [])
        if not statuses:
            problems.append(f"no {stage} child run")
        elif any(s != "FINISHED" for s in statuses):
            problems.append(f"{stage} child run is {','.join(statuses)}")
    if not has_model:
        problems.append("no model artifact")
    elif not has_signature:
        problems.append("model has no signature")
    if not problems:
        return Check(
            "runs_complete", True, "parent and child runs finished; model signed"
        )
    return Check(
        "runs_complete", False, "; ".join(problems) + ": retrain to get a complete run"
    )


def run_checks(
    record: dict,
    tags: dict[str, str],
    ev: Evidence,
    runs_check: Check,
) -> list[Check]:
    return [
        check_clean_tree(record),
        check_code_committed(record),
        check_commit_exists(record, ev),
        check_data_matches_commit(record, ev),
        check_data_in_remote(record, ev),
        check_data_read(record),
        check_digest(record, tags),
        runs_check,
    ]


def summary_line(checks: Iterable[Check]) -> str:
    failed = [c for c in checks if not c.passed]
    if not failed:
        return "all lineage checks passed"
    return "; ".join(f"{c.name}: {c.reason}" for c in failed)


def _pipeline_state() -> dict[str, Any]:
    from lineageflow.lineage.code import pipeline_state

    return pipeline_state()
