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

from lineageflow.errors import WorkspaceError
from lineageflow.workspace import check_commit_sha, commit_exists

__all__ = ["has_commit", "last_line", "tree_at"]


def has_commit(path: str | Path | None, commit: str) -> bool:
    """Whether ``path`` is a git repo on this machine that holds ``commit``."""
    if not path or not Path(path).is_dir():
        return False
    try:
        return commit_exists(git.Repo(path), commit)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False


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
            _clone_at(url, path, commit, what)
        yield path
    finally:
        if repo is not None:
            with contextlib.suppress(git.GitCommandError):
                repo.git.worktree("remove", "--force", "--", str(path))
        shutil.rmtree(tmp, ignore_errors=True)
        if repo is not None:
            with contextlib.suppress(git.GitCommandError):
                repo.git.worktree("prune")


def _clone_at(url: str | None, path: Path, commit: str, what: str) -> None:
    if not url or url.startswith("-"):
        raise WorkspaceError(
            f"recorded {what} commit {commit[:12]} is in no repository on this "
            "machine and the record names none to clone: pass the repository's path"
        )
    try:
        repo = git.Repo.clone_from(url, path, no_checkout=True, quiet=True)
    except git.GitCommandError as exc:
        raise WorkspaceError(
            f"cannot clone the recorded {what} repo {url} "
            f"({last_line(exc.stderr)}): pass a local checkout that holds "
            f"commit {commit[:12]}"
        ) from None
    try:
        repo.git.checkout("--detach", "--quiet", commit)
    except git.GitCommandError:
        raise WorkspaceError(
            f"recorded {what} commit {commit[:12]} is not in {url} (history "
            "rewritten?): restore it to reproduce this run"
        ) from None


def last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"
