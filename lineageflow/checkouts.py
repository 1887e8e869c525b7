"""Temporary checkouts of a commit: a worktree of a repo on this machine that
holds it, else a clone of its URL; removed even when the body fails. A
reproduction rebuilds recorded code and workspace in them, a retrain trains
the commit an event names in one (the user's tree and branch untouched)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import git

from lineageflow.workspace import check_commit_sha, clone_at, has_commit, last_line

__all__ = ["has_commit", "last_line", "tree_at"]


@contextlib.contextmanager
def tree_at(
    commit: str, local: Path | None, url: str | None, what: str
) -> Iterator[Path]:
    """A detached checkout of ``commit`` in a temp dir: a worktree of the local
    repo when it holds the commit, else a clone of ``url``. Removed (and pruned
    from the repo's worktree list) even when the body fails."""
    check_commit_sha(commit)
    tmp = Path(tempfile.mkdtemp(prefix="lineageflow-repro-"))
    path = tmp / "tree"
    repo = git.Repo(local) if local is not None and has_commit(local, commit) else None
    try:
        if repo is not None:
            repo.git.worktree("add", "--detach", "--", str(path), commit)
        else:
            clone_at(url, path, commit, what)
        yield path
    finally:
        if repo is not None:
            with contextlib.suppress(git.GitCommandError):
                repo.git.worktree("remove", "--force", "--", str(path))
        shutil.rmtree(tmp, ignore_errors=True)
        if repo is not None:
            with contextlib.suppress(git.GitCommandError):
                repo.git.worktree("prune")
