"""reproduce-run: rebuild a past run from its recorded commit and data, compare metrics.

Prefect's "Copy to new run" reruns a deployment with *today's* code and data;
this flow pins the recorded git commit itself (a detached `git worktree` in a
temp dir) and pulls exactly the recorded DVC versions, so the user's working
tree is never touched. It never registers or promotes.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from lineageflow import lineage
from lineageflow.config import parse_params
from lineageflow.errors import LineageError, WorkspaceError
from lineageflow.registry import load_lineage
from lineageflow.tracking import client, default_tracking_uri, run_url
from lineageflow.workspace import Workspace, check_commit_sha, open_workspace

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MODEL_URI_RE = re.compile(r"^models:/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/([0-9]{1,9})$")


def resolve_run_id(ref: str, tracking_uri: str) -> str:
    """A parent run id, or ``models:/<name>/<version>`` -> the version's run id."""
    ref = (ref or "").strip()
    if RUN_ID_RE.match(ref):
        return ref
    m = MODEL_URI_RE.match(ref)
    if not m:
        raise LineageError(
            f"run_id {ref[:80]!r} is neither an MLflow run id (32 hex characters) "
            "nor models:/<name>/<version>"
        )
    from mlflow.exceptions import MlflowException

    try:
        mv = client(tracking_uri).get_model_version(m.group(1), m.group(2))
    except MlflowException:
        raise LineageError(f"{ref} is not a registered model version") from None
    return mv.tags.get("lineage.run_id") or mv.run_id


@contextlib.contextmanager
def worktree_at(ws: Workspace, commit: str) -> Iterator[Path]:
    """A detached worktree of ``commit`` in a temp dir, sharing the DVC cache.

    Removed (and pruned from the repo's worktree list) even when the body fails.
    """
    import git

    repo = ws.git()
    check_commit_sha(commit)
    try:
        repo.git.cat_file("-e", f"{commit}^{{commit}}")
    except git.GitCommandError:
        raise WorkspaceError(
            f"recorded commit {commit[:12]} is not in {ws.root} (history rewritten?): "
            "restore it to reproduce this run"
        ) from None
    tmp = Path(tempfile.mkdtemp(prefix="lineageflow-repro-"))
    path = tmp / "worktree"
    repo.git.worktree("add", "--detach", "--", str(path), commit)
    try:
        yield path
    finally:
        with contextlib.suppress(git.GitCommandError):
            repo.git.worktree("remove", "--force", "--", str(path))
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(git.GitCommandError):
            repo.git.worktree("prune")


def share_dvc_state(main: Path, worktree: Path, record: dict) -> None:
    """Point the worktree at the main DVC cache and the recorded remote URLs.

    A worktree has its own (empty) `.dvc/cache` unless told otherwise, and a
    relative local remote URL would resolve against the temp dir.
    """
    from dvc.repo import Repo

    main_cache = _cache_dir(main)
    with Repo(str(worktree)) as repo, repo.config.edit("local") as conf:
        conf.setdefault("cache", {})["dir"] = main_cache
        conf.setdefault("core", {})["site_cache_dir"] = str(
            main / ".dvc" / "tmp" / "site"
        )
        for d in record["data"]:
            url = d.get("remote_url")
            if d.get("remote") and url and "://" not in url:
                conf.setdefault("remote", {}).setdefault(d["remote"], {})["url"] = url


def _cache_dir(root: Path) -> str:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.cache.local.path


@dataclass(frozen=True)
class Comparison:
    verdict: str  # exact | within_tolerance | diverged
    rows: list[tuple[str, float | None, float | None, float | None]]
    code_note: str

    def line(self) -> str:
        return self.verdict + (f" ({self.code_note})" if self.code_note else "")


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


def code_note(record: dict) -> str:
    then, now = record.get("pipeline", {}), lineage.pipeline_state()
    if then.get("commit") and now.get("commit") and then["commit"] != now["commit"]:
        return (
            f"pipeline code differs: recorded lineageflow {then['commit'][:12]}, "
            f"ran {now['commit'][:12]}"
        )
    if then.get("version") != now.get("version"):
        return (
            f"pipeline code differs: recorded lineageflow {then.get('version')}, "
            f"ran {now.get('version')}"
        )
    return ""


def _markdown(run_id: str, new_id: str, exp_id: str, uri: str, cmp: Comparison) -> str:
    def fmt(v):
        return "—" if v is None else f"{v:.10g}"

    def link(rid):
        return f"[{rid}]({run_url(uri, exp_id, rid)})"

    table = "\n".join(
        f"| `{k}` | {fmt(a)} | {fmt(b)} | {fmt(d)} |" for k, a, b, d in cmp.rows
    )
    return (
        f"## Reproduction: **{cmp.verdict}**\n\n"
        f"- original run: {link(run_id)}\n- reproduction: {link(new_id)}\n"
        + (f"- note: {cmp.code_note}\n" if cmp.code_note else "")
        + "\n| metric | original | reproduction | abs diff |\n|---|---|---|---|\n"
        + table
        + "\n"
    )


def _test_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    m = client(tracking_uri).get_run(run_id).data.metrics
    return {k: v for k, v in m.items() if k.startswith("test_")}


@flow(name="reproduce-run", log_prints=True)
def reproduce_run(
    run_id: str, workspace: str | None = None, tolerance: float = 0.0
) -> dict:
    """Rebuild a past training run at its recorded commit and data; compare metrics.

    Args:
        run_id: an MLflow parent run id, or models:/<name>/<version>.
        workspace: the workspace git repo (default: $LINEAGEFLOW_WORKSPACE).
        tolerance: largest absolute metric difference still called within_tolerance.
    """
    from flows.training import resolve_workspace, run_stages

    logger = get_run_logger()
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise LineageError(f"tolerance must be a finite number >= 0, got {tolerance}")
    ws = open_workspace(resolve_workspace(workspace))
    uri = default_tracking_uri(ws.state_dir)
    run_id = resolve_run_id(run_id, uri)
    record, tags = load_lineage(uri, run_id)
    intact = lineage.check_digest(record, tags)
    if not intact.passed:
        raise LineageError(f"run {run_id} cannot be reproduced: {intact.reason}")
    cfg = parse_params(record["params"], source=f"run {run_id} params")
    commit = record["workspace"]["commit"]
    note = code_note(record)
    with worktree_at(ws, commit) as tree:
        share_dvc_state(ws.root, tree, record)
        result = run_stages(
            Workspace(tree),
            cfg,
            uri,
            register=False,
            run_name=f"reproduce-{run_id[:8]}",
            extra_tags={"lineage.reproduction_of": run_id},
            expect_data=record["data"],
        )
    verdict, rows = compare_metrics(
        _test_metrics(uri, run_id), _test_metrics(uri, result.run_id), tolerance
    )
    cmp = Comparison(verdict, rows, note)
    c = client(uri)
    for rid, key, value in (
        (run_id, "lineage.reproduced_by", result.run_id),
        (run_id, "lineage.reproduction.verdict", cmp.line()),
        (result.run_id, "lineage.reproduction.verdict", cmp.line()),
    ):
        c.set_tag(rid, key, value)
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        _markdown(run_id, result.run_id, result.experiment_id, uri, cmp),
        key="reproduction",
        description=f"reproduction of MLflow run {run_id}",
    )
    logger.info("reproduction of %s: %s", run_id, cmp.line())
    return {
        "run_id": run_id,
        "reproduction_run_id": result.run_id,
        "verdict": cmp.verdict,
        "code_note": cmp.code_note,
        "metrics": {k: (a, b) for k, a, b, _ in rows},
    }
