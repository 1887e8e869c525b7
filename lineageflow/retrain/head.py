"""The workspace's upstream branch and what its head commit names.

Only git objects and refs are read or fetched: the user's working tree, index
and branch are never touched (a ``git fetch`` moves ``refs/remotes/*`` only).
"""

from __future__ import annotations

from dataclasses import dataclass

import git
import yaml

from lineageflow.config import PipelineConfig, parse_params
from lineageflow.data.source import named_at
from lineageflow.errors import ConfigError, WorkspaceError
from lineageflow.lineage.notebooks import code_changed
from lineageflow.retrain.changes import DataAt, Head
from lineageflow.runs.context import workspace_store
from lineageflow.workspace import (
    Workspace,
    fetch_remote,
    file_at,
    git_state,
    resolve_commit,
    strip_credentials,
)


@dataclass(frozen=True)
class Upstream:
    branch: str  # the workspace's local branch
    ref: str  # what is compared: "origin/main", or the local branch itself
    remote: str | None = None  # None: no upstream; the local branch is compared
    url: str | None = None

    def describe(self) -> str:
        return f"{self.ref} ({self.url})" if self.remote else f"local branch {self.ref}"


def upstream_of(repo: git.Repo) -> Upstream:
    if repo.head.is_detached:
        raise WorkspaceError(
            f"{repo.working_tree_dir} is on a detached HEAD: check out the branch "
            "whose upstream should be watched"
        )
    branch = repo.active_branch
    tracking = branch.tracking_branch()
    if tracking is None:
        return Upstream(branch.name, branch.name)
    remote = tracking.remote_name
    url = next(iter(repo.remote(remote).urls), None)
    return Upstream(branch.name, tracking.name, remote, strip_credentials(url or ""))


def fetch(repo: git.Repo, up: Upstream) -> None:
    """``git fetch --prune`` the upstream's remote (lineageflow.workspace owns
    the git calls); one line when it does not answer."""
    fetch_remote(repo, up.remote, up.describe())


@dataclass(frozen=True)
class Located:
    """A commit found in a workspace, and what a run of it needs."""

    ws: Workspace
    tracking_uri: str  # the workspace's MLflow store
    head: Head  # what the commit would train on
    cfg: PipelineConfig  # its params
    waiting: list[str]  # each DVC version it names that is not pushed yet
    origin: dict  # the workspace a run of it records: repo, path, branch


def locate(workspace: str | None, rev: str) -> Located:
    """The workspace a flow was given, and the commit ``rev`` names in it
    (fetched from the upstream when it is not here yet): what it would train
    on, its params, the DVC versions not pushed yet (``head_state``), and the
    workspace a run of it records: repo, path, and the branch when the commit
    is on its upstream."""
    ws, uri = workspace_store(workspace)
    repo = ws.git()
    up = None if repo.head.is_detached else upstream_of(repo)
    # not here yet: fetched from the upstream, then looked up again
    sha = resolve_commit(repo, rev, (up.remote, up.describe()) if up else None)
    if sha is None:
        where = f" nor in {up.describe()}" if up and up.remote else ""
        raise WorkspaceError(
            f"commit {str(rev)[:64]!r} is not in {ws.root}{where}: push it, or fix "
            "the commit the event names"
        )
    params = file_at(repo, sha, "params.yaml")
    try:
        on_branch = up is not None and repo.is_ancestor(sha, up.ref)
    except git.GitCommandError:
        on_branch = False
    state = git_state(repo)  # the workspace's own (repo, path), not the commit's
    cfg = parse_params_at(params, sha)
    head, waiting = head_state(ws, sha, cfg)
    branch = up.branch if up is not None and on_branch else None
    origin = {"repo": state.repo, "path": state.path, "branch": branch}
    return Located(ws, uri, head, cfg, waiting, origin)


def params_at(repo: git.Repo, commit: str) -> PipelineConfig:
    return parse_params_at(file_at(repo, commit, "params.yaml"), commit)


def parse_params_at(text: str | None, commit: str) -> PipelineConfig:
    """The params committed at ``commit`` (``text``: params.yaml there, or None)."""
    where = f"params.yaml at {commit[:12]}"
    if text is None:
        raise ConfigError(f"{where} does not exist: commit params.yaml")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{where}: malformed YAML") from None
    return parse_params(raw, source=where)


def code_files(
    repo: git.Repo, since: str | None, commit: str, notebook: str | None = None
) -> tuple[str, ...]:
    """The workspace's Python files that differ between two commits, and the
    ``notebook`` the config trains with when its code cells differ (a notebook
    committed again with new outputs is no code change)."""
    if not since or since == commit or resolve_commit(repo, since) is None:
        return ()
    paths = ["*.py", *([notebook] if notebook else [])]
    out = repo.git.diff("--name-only", since, commit, "--", *paths)
    files = {p for p in out.splitlines() if p.strip()}
    if notebook in files and not code_changed(repo, since, commit, notebook):
        files.discard(notebook)
    return tuple(sorted(files))


def head_state(
    ws: Workspace, commit: str, cfg: PipelineConfig, changed: tuple[str, ...] = ()
) -> tuple[Head, list[str]]:
    """What ``commit`` would train on (``changed``: its Python files that differ
    from the Staging version's commit, ``code_files``), and each DVC version it
    names that is not in the remote yet ("data/x md5 ab12... is not in DVC
    remote 'storage'")."""
    params_sha256 = cfg.sha256()
    data, waiting = [], []
    for entry in cfg.data.datasets:
        named = named_at(ws, entry, cfg.data.remote, commit)
        data.append(DataAt(named.name, named.md5, named.version))
        if not named.pushed:
            waiting.append(f"{named.name} md5 {named.md5[:12]}")
    return Head(commit, tuple(data), params_sha256, changed), waiting
