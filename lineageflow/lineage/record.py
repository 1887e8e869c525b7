"""The lineage record. This module owns what a run records (the checks that read
it back are lineageflow.lineage.checks).

The record is a contract read by other tools: keep its keys. It is logged as
``lineage.json`` at the parent run's root and as flat ``lineage.*`` tags, with
``lineage.digest`` = sha256 of the canonical JSON so an edit is detected.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from lineageflow.errors import LineageError
from lineageflow.lineage.code import pipeline_state
from lineageflow.lineage.environment import imported, installed
from lineageflow.pipeline import RECORDED
from lineageflow.tags import (
    TAG_CHANGE_KEY,
    TAG_DATA_PREFIX,
    TAG_GIT_BRANCH,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_PARAMS_SHA256,
    TAG_PIPELINE_COMMIT,
    TAG_PIPELINE_DIRTY,
    TAG_PIPELINE_VERSION,
    TAG_SCHEMA,
    TAG_USER_CODE_PREFIX,
    TAG_WORKSPACE_REPO,
)

SCHEMA_VERSION = 1
# the record's ``stages`` list, in pipeline order (declared in lineageflow.pipeline)
STAGES = RECORDED
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
    "deltalake",
)


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


def environment(modules: Iterable[str] = ()) -> dict[str, Any]:
    """Python, the fixed ``packages`` list (older readers use it) and every
    installed distribution with the ones imported (lineage.environment);
    ``modules``: more module names the run imported (e.g. a notebook's kernel)."""
    pkgs = package_versions(PACKAGES)
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "packages": pkgs,
        "distributions": installed(),
        "imported": imported(modules),
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
    modules: Iterable[str] = (),
    compute: dict | None = None,
) -> dict:
    record = {
        "schema": SCHEMA_VERSION,
        "workspace": {
            k: workspace[k] for k in ("repo", "path", "commit", "branch", "dirty")
        }
        | {"dirty_files": workspace.get("dirty_files", [])},
        "pipeline": pipeline if pipeline is not None else pipeline_state(),
        "data": data,
        "params": params,
        "params_sha256": params_sha256,
        "environment": env if env is not None else environment(modules),
        "orchestration": orchestration,
        "mlflow": mlflow_ids,
    }
    if user_code:  # additive key: records without user code keep their digest
        record["user_code"] = user_code
    if stages:  # additive: name, run id, code, params sha256, inputs, outputs
        record["stages"] = stages
    if compute:  # additive: where a run beyond this process computed (its engine)
        record["compute"] = compute
    return record


def verify_input(stage: str, name: str, got: str, want: str | None) -> None:
    """A stage refuses an input whose content is not the one recorded for it."""
    if want is not None and got != want:
        raise LineageError(
            f"{stage} refused input {name}: its digest {got[:12]} is not the "
            f"recorded {want[:12]} (changed after it was produced): rerun the "
            "stage that made it"
        )


def data_tag(path: str, field: str) -> str:
    """``lineage.data.<path>.<field>``; a URI's ``//`` collapsed, as MLflow refuses
    a key that a path normalisation would change (``s3://b/t`` -> ``s3:/b/t``)."""
    return f"{TAG_DATA_PREFIX}{re.sub('/{2,}', '/', path)}.{field}"


def change_key(commit: str, data: dict[str, str], params_sha256: str) -> str:
    """What a run trains on, as one id: the commit, each dataset's version (md5)
    and the params' sha256. A change with a run of this key was trained."""
    doc = {
        "commit": commit,
        "data": dict(sorted(data.items())),
        "params": params_sha256,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def flat_tags(record: dict) -> dict[str, str]:
    """The record's summary as MLflow tags (everything but the digest)."""
    ws, pipe = record["workspace"], record["pipeline"]
    tags = {
        TAG_SCHEMA: str(record["schema"]),
        TAG_GIT_COMMIT: ws["commit"],
        TAG_GIT_BRANCH: str(ws["branch"]),
        TAG_GIT_DIRTY: str(ws["dirty"]).lower(),
        TAG_WORKSPACE_REPO: ws["repo"],
        TAG_PIPELINE_VERSION: str(pipe.get("version")),
        TAG_PIPELINE_COMMIT: str(pipe.get("commit")),
        TAG_PIPELINE_DIRTY: str(pipe.get("dirty")).lower(),
        TAG_PARAMS_SHA256: record["params_sha256"],
    }
    if not ws["dirty"]:  # uncommitted work trained no commit
        data = {d["path"]: d["md5"] for d in record["data"]}
        tags[TAG_CHANGE_KEY] = change_key(ws["commit"], data, record["params_sha256"])
    for d in record["data"]:
        tags[data_tag(d["path"], "md5")] = d["md5"]
        tags[data_tag(d["path"], "in_remote")] = str(d["in_remote"]).lower()
    for u in record.get("user_code", []):
        where = f"{u['file']}:{u['function']}" if u["function"] else u["file"]
        tags[f"{TAG_USER_CODE_PREFIX}{u['role']}"] = f"{where}@{str(u['blob'])[:12]}"
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
