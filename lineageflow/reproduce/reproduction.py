"""Reproduction: where the recorded code and data come from, and the verdict.

A run is rebuilt from its lineage record alone:
- the **workspace** at the recorded commit: a detached worktree of the local repo
  (the one given, else the recorded path when it exists on this machine), else a
  clone of the recorded repo URL; the recorded DVC versions are pulled into it;
- the **pipeline code** at the recorded lineageflow commit: when it is not the
  code running now, a worktree (or clone) of the pipeline repo at that commit,
  run in a subprocess of this same Python environment;
- the **verdict** compares the two lineage records (code, data, params,
  environment) and the metrics: ``exact`` only when the code was pinned and every
  metric is identical.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from mlflow.exceptions import MlflowException

from lineageflow.errors import LineageError
from lineageflow.lineage.code import code_id
from lineageflow.lineage.pins import differences as distribution_differences
from lineageflow.reproduce.divergence import first_divergence
from lineageflow.runs.store import client
from lineageflow.tags import TAG_RUN_ID

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MODEL_URI_RE = re.compile(r"^models:/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/([0-9]{1,9})$")


def validate_ref(ref: str) -> str:
    """Refuse a malformed run reference before any git, DVC or MLflow call."""
    ref = (ref or "").strip()
    if not (RUN_ID_RE.match(ref) or MODEL_URI_RE.match(ref)):
        raise LineageError(
            f"run_id {ref[:80]!r} is neither an MLflow run id (32 hex characters) "
            "nor models:/NAME/VERSION"
        )
    return ref


def resolve_run_id(ref: str, tracking_uri: str) -> str:
    """A parent run id, or ``models:/NAME/VERSION`` -> the version's run id."""
    ref = validate_ref(ref)
    m = MODEL_URI_RE.match(ref)
    if not m:
        return ref

    try:
        mv = client(tracking_uri).get_model_version(m.group(1), m.group(2))
    except MlflowException:
        raise LineageError(f"{ref} is not a registered model version") from None
    return mv.tags.get(TAG_RUN_ID) or mv.run_id


# ------------------------------------------------------------------ verdict


def compare_metrics(
    original: dict[str, float], reproduced: dict[str, float], tolerance: float
) -> tuple[str, list]:
    rows, worst = [], 0.0
    for key in sorted(set(original) | set(reproduced)):
        a, b = original.get(key), reproduced.get(key)
        if a is None or b is None:
            worst = math.inf
            rows.append((key, a, b, None))
            continue
        diff = 0.0 if (a == b or (math.isnan(a) and math.isnan(b))) else abs(a - b)
        worst = max(worst, diff)
        rows.append((key, a, b, diff))
    if worst == 0.0:
        return "exact", rows
    return ("within_tolerance" if worst <= tolerance else "diverged"), rows


def code_causes(original: dict, reproduced: dict) -> list[str]:
    """Why the code that ran again is not provably the code that ran then."""
    causes = []
    then, now = original.get("pipeline", {}), reproduced.get("pipeline", {})
    if not then.get("commit"):
        causes.append(
            f"code not pinned: recorded from an installed lineageflow "
            f"{then.get('version')} with no commit; reran lineageflow "
            f"{now.get('version')} @ {str(now.get('commit'))[:12]}"
        )
    elif then.get("dirty"):
        files = ", ".join(then.get("dirty_files", [])[:5]) or "uncommitted changes"
        causes.append(
            f"code not pinned: the recorded lineageflow code had uncommitted changes "
            f"({files}) that no commit holds; reran its commit {then['commit'][:12]}"
        )
    elif then.get("commit") != now.get("commit") or now.get("dirty"):
        causes.append(
            f"code not pinned: recorded lineageflow {then['commit'][:12]}, reran "
            f"{str(now.get('commit'))[:12]}{' (dirty)' if now.get('dirty') else ''}"
        )
    ws_then = original.get("workspace", {})
    if ws_then.get("dirty"):
        files = ", ".join(ws_then.get("dirty_files", [])[:5])
        causes.append(
            f"code not pinned: the workspace had uncommitted changes at run time "
            f"({files})"
        )
    # a notebook is named by its code cells' digest, other code by its git blob
    now = {(u["file"], code_id(u)) for u in reproduced.get("user_code", [])}
    for u in sorted(original.get("user_code", []), key=lambda u: u["file"]):
        if (u["file"], code_id(u)) not in now:
            what = "code cells" if u.get("role") == "notebook" else "blob"
            causes.append(
                f"code not pinned: workspace code {u['file']} differs from "
                f"{what} {code_id(u)}"
            )
    return causes


def environment_differences(original: dict, reproduced: dict) -> list[str]:
    """Every python / package / platform difference, named; a package by its
    version and, when both records list distributions, its commit or content
    (a private library at another commit names both commits)."""
    a, b = original.get("environment", {}), reproduced.get("environment", {})
    out = []
    for key in ("python", "implementation", "platform"):
        if a.get(key) != b.get(key):
            out.append(f"{key} {a.get(key)} -> {b.get(key)}")
    by_dist = distribution_differences(a, b)
    if by_dist is not None:
        return out + by_dist
    pa, pb = a.get("packages", {}), b.get("packages", {})  # older records
    for name in sorted(set(pa) | set(pb)):
        if pa.get(name) != pb.get(name):
            out.append(f"{name} {pa.get(name)} -> {pb.get(name)}")
    return out


def cluster_differences(original: dict, reproduced: dict) -> list[str]:
    """What of where the two runs computed can change the model: the engine,
    the cluster's shape and the partitioning (xgboost's Dask fit depends on
    which rows each worker holds), named. Records without ``compute`` ran on
    the local engine."""
    a = original.get("compute") or {"engine": "local"}
    b = reproduced.get("compute") or {"engine": "local"}
    out = [
        f"{key} {a.get(key)} -> {b.get(key)}"
        for key in ("engine", "workers", "threads_per_worker")
        if a.get(key) != b.get(key)
    ]
    pa, pb = a.get("partitions"), b.get("partitions")
    if pa is not None and pb is not None:
        shape = [(p.get("file"), p.get("rows")) for p in pa]
        if shape != [(p.get("file"), p.get("rows")) for p in pb]:
            out.append(f"partitions {len(pa)} -> {len(pb)}")
    return out


@dataclass(frozen=True)
class Comparison:
    verdict: str  # exact | within_tolerance | diverged | unpinned
    metrics_verdict: str  # exact | within_tolerance | diverged
    rows: list[tuple[str, float | None, float | None, float | None]]
    causes: list[str] = field(default_factory=list)  # code not pinned
    environment: list[str] = field(default_factory=list)  # named differences
    divergence: str | None = None  # where a reproduction that is not exact split
    cluster: list[str] = field(default_factory=list)  # engine / shape differences

    def notes(self) -> list[str]:
        out = [self.divergence] if self.divergence else []
        out += self.causes
        if self.causes:
            out.append(f"metrics {self.metrics_verdict}")
        if self.environment:
            out.append("environment differs: " + ", ".join(self.environment))
        if self.cluster:
            out.append("cluster differs: " + ", ".join(self.cluster))
        return out

    def line(self) -> str:
        notes = self.notes()
        return self.verdict + (f" ({'; '.join(notes)})" if notes else "")


def judge(
    original: dict,
    reproduced: dict,
    original_metrics: dict[str, float],
    reproduced_metrics: dict[str, float],
    tolerance: float,
) -> Comparison:
    """``exact`` = same code (pinned), data, params and identical metrics."""
    metrics_verdict, rows = compare_metrics(
        original_metrics, reproduced_metrics, tolerance
    )
    causes = code_causes(original, reproduced)
    if original.get("params_sha256") != reproduced.get("params_sha256"):
        causes.append("params differ from the recorded ones")
    data_then = {d["path"]: d["md5"] for d in original.get("data", [])}
    data_now = {d["path"]: d.get("read_md5") for d in reproduced.get("data", [])}
    if data_then != data_now:
        causes.append("data read differs from the recorded versions")
    verdict = "unpinned" if causes else metrics_verdict
    env = environment_differences(original, reproduced)
    cluster = cluster_differences(original, reproduced)
    split = (
        None
        if verdict == "exact"
        else first_divergence(original, reproduced, cluster + env)
    )
    return Comparison(verdict, metrics_verdict, rows, causes, env, split, cluster)
