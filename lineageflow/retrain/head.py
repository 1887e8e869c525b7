"""The workspace's upstream branch and what its head commit names.

Only git objects and refs are read or fetched: the user's working tree, index
and branch are never touched (a ``git fetch`` moves ``refs/remotes/*`` only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import git
import yaml

from lineageflow.checkouts import last_line
from lineageflow.config import PipelineConfig, parse_params
from lineageflow.data.source import named_at
from lineageflow.errors import ConfigError, WorkspaceError
from lineageflow.retrain.changes import DataAt, Head
from lineageflow.workspace import (
    Workspace,
    file_at,
    git_state,
    resolve_commit,
    strip_credentials,
)

FETCH_TIMEOUT = 60  # seconds: an upstream that does not answer fails this run


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


def fetch(repo: git.Repo, up: Upstream, timeout: float = FETCH_TIMEOUT) -> None:
    """``git fetch --prune`` the upstream's remote (a branch deleted there stops
    being watched, not watched stale); one line when it does not answer."""
    if up.remote is None:
        return
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        repo.git.fetch(
            "--quiet", "--prune", "--", up.remote, kill_after_timeout=timeout, env=env
        )
    except git.GitCommandError as exc:
        why = last_line(exc.stderr) or f"no answer within {timeout:.0f} s"
        raise WorkspaceError(
            f"could not fetch upstream {up.describe()}: {why}: the next watch run "
            "tries again"
        ) from None


def locate(ws: Workspace, rev: str) -> tuple[Head, PipelineConfig, list[str], dict]:
    """The commit ``rev`` names (fetched from the upstream when it is not here
    yet): what it would train on, its params, the DVC versions not pushed yet
    (lineageflow.retrain.head.head_state), and the workspace a run of it
    records: repo, path, and the branch when the commit is on its upstream."""
    repo = ws.git()
    up = None if repo.head.is_detached else upstream_of(repo)
    sha = resolve_commit(repo, rev)
    if sha is None and up is not None and up.remote is not None:
        fetch(repo, up)
        sha = resolve_commit(repo, rev)
    if sha is None:
        where = f" nor in {up.describe()}" if up and up.remote else ""
        raise WorkspaceError(
            f"commit {str(rev)[:64]!r} is not in {ws.root}{where}: push it, or fix "
            "the commit the event names"
        )
    cfg = params_at(repo, sha)
    head, waiting = head_state(ws, sha, cfg, None)
    try:
        on_branch = up is not None and repo.is_ancestor(sha, up.ref)
    except git.GitCommandError:
        on_branch = False
    state = git_state(repo)  # last: it reads the workspace, not the commit
    branch = up.branch if up is not None and on_branch else None
    return (
        head,
        cfg,
        waiting,
        {"repo": state.repo, "path": state.path, "branch": branch},
    )


def params_at(repo: git.Repo, commit: str) -> PipelineConfig:
    where = f"params.yaml at {commit[:12]}"
    text = file_at(repo, commit, "params.yaml")
    if text is None:
        raise ConfigError(f"{where} does not exist: commit params.yaml")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{where}: malformed YAML") from None
    return parse_params(raw, source=where)


def code_files(repo: git.Repo, since: str | None, commit: str) -> tuple[str, ...]:
    """The workspace's Python files that differ between two commits."""
    if not since or since == commit or resolve_commit(repo, since) is None:
        return ()
    out = repo.git.diff("--name-only", since, commit, "--", "*.py")
    return tuple(sorted(p for p in out.splitlines() if p.strip()))


def head_state(
    ws: Workspace, commit: str, cfg: PipelineConfig, staged_commit: str | None
) -> tuple[Head, list[str]]:
    """What ``commit`` would train on, and each DVC version it names that is not
    in the remote yet ("data/x md5 ab12... is not in DVC remote 'storage'")."""
    repo = ws.git()
    changed = code_files(repo, staged_commit, commit)
    data, waiting = [], []
    for entry in cfg.data.datasets:
        named = named_at(ws, entry, cfg.data.remote, commit)
        data.append(DataAt(named.name, named.md5, named.version))
        if not named.pushed:
            waiting.append(f"{named.name} md5 {named.md5[:12]}")
    return Head(commit, tuple(data), cfg.sha256(), changed), waiting
