"""The user's workspace: a git repository holding ``params.yaml`` and ``*.dvc`` pointers.

Everything the pipeline writes inside it lives in ``.lineageflow/``, which ignores
itself (a ``.gitignore`` of ``*`` inside it), so no user file is edited and the
tree stays clean for the next run.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import git

from lineageflow.errors import WorkspaceError

STATE_DIR = ".lineageflow"
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
FETCH_TIMEOUT = 60  # seconds: an upstream that does not answer fails this run


@dataclass(frozen=True)
class GitState:
    repo: str  # remote URL of `origin` when there is one, else the absolute path
    path: str
    commit: str
    branch: str | None
    dirty: bool
    dirty_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def git_state(repo) -> GitState:
    """Commit, branch and cleanliness of a gitpython ``Repo``.

    Untracked files count as dirty: an unadded script can change a run as much
    as an edited one.
    """
    try:
        commit = repo.head.commit.hexsha
    except ValueError:
        raise WorkspaceError(
            f"{repo.working_tree_dir} has no commits: commit params.yaml and the "
            ".dvc files first"
        ) from None
    branch = None if repo.head.is_detached else repo.active_branch.name
    changed = sorted(
        {d.a_path for d in repo.index.diff(None)}
        | {d.a_path for d in repo.index.diff("HEAD")}
        | set(repo.untracked_files)
    )
    return GitState(
        repo=origin_url(repo) or str(Path(repo.working_tree_dir)),
        path=str(Path(repo.working_tree_dir).resolve()),
        commit=commit,
        branch=branch,
        dirty=bool(changed),
        dirty_files=changed[:50],
    )


def origin_url(repo) -> str | None:
    """The ``origin`` remote's URL without credentials, if the repo has one."""
    origin = next((r for r in repo.remotes if r.name == "origin"), None)
    url = next(iter(origin.urls), None) if origin else None
    return strip_credentials(url) if url else None


def strip_credentials(url: str) -> str:
    # https://user:token@host/x.git must never reach a tag or an artifact
    return re.sub(r"^([a-z+]+://)[^/@]+@", r"\1", url)


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def state_dir(self) -> Path:
        """Where the pipeline may write inside the workspace; git-ignored by itself."""
        d = self.root / STATE_DIR
        d.mkdir(exist_ok=True)
        ignore = d / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# written by lineageflow: ignore everything here\n*\n")
        return d

    def git(self):
        return git.Repo(self.root)

    def params_path(self) -> Path:
        return self.root / "params.yaml"

    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` when set (MLflow's convention), else a sqlite
        store in the workspace's git-ignored ``.lineageflow/``."""
        return os.environ.get("MLFLOW_TRACKING_URI") or (
            f"sqlite:///{self.state_dir / 'mlflow.db'}"
        )

    def dataset(self, rel: str) -> tuple[Path, Path]:
        """The data path and its ``.dvc`` file, refusing anything outside the root."""
        root = self.root.resolve()
        target = (root / rel).resolve()
        if not target.is_relative_to(root) or target == root:
            raise WorkspaceError(
                f"dataset path '{rel}' resolves outside the workspace ({target}): "
                "datasets must live inside the workspace"
            )
        dvc_file = root / f"{rel}.dvc"
        if dvc_file.is_symlink() or not dvc_file.resolve().is_relative_to(root):
            raise WorkspaceError(
                f"'{rel}.dvc' is a link out of the workspace: datasets must live inside it"
            )
        if not dvc_file.is_file():
            raise WorkspaceError(
                f"dataset '{rel}' has no .dvc file ({rel}.dvc): run `dvc add {rel}` "
                "and commit the .dvc file"
            )
        return root / rel, dvc_file


def open_workspace(path: str | Path) -> Workspace:
    """Validate that ``path`` is the root of a git repository with DVC initialised."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise WorkspaceError(
            f"workspace {p} does not exist: pass the path of a git repo"
        )
    if not p.is_dir():
        raise WorkspaceError(f"workspace {p} is not a directory")
    p = p.resolve()
    try:
        # a subfolder of a repo is found too, so it is named as one (not `git init`)
        repo = git.Repo(p, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise WorkspaceError(
            f"workspace {p} is not a git repository: run `git init` there "
            "(or pass the repository's root)"
        ) from None
    top = Path(repo.working_tree_dir or p).resolve()
    if top != p:
        raise WorkspaceError(
            f"workspace {p} is inside the git repository {top}: pass the repository root"
        )
    if not (p / ".dvc").is_dir():
        raise WorkspaceError(
            f"workspace {p} has no DVC: run `dvc init` there and commit .dvc/"
        )
    return Workspace(p)


def check_commit_sha(value: str) -> str:
    """A commit read back from MLflow goes to git only as a full hex sha."""
    if not isinstance(value, str) or not SHA_RE.match(value):
        raise WorkspaceError(f"recorded commit {value!r} is not a 40-character git sha")
    return value


def resolve_commit(repo, rev: str, upstream=None) -> str | None:
    """The full sha of ``rev`` when it names a commit in the repo, else None.
    An option-like rev (``--upload-pack=...``) is refused, never passed to git.
    ``upstream`` (a remote name and how to name it, ``(remote, described)``):
    when ``rev`` is not here, fetch that remote and look again."""
    rev = (rev or "").strip()
    if not rev or rev.startswith("-") or len(rev) > 200:
        return None
    try:
        return repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")
    except git.GitCommandError:
        if upstream is None or upstream[0] is None:
            return None
    fetch_remote(repo, *upstream)
    return resolve_commit(repo, rev)


def fetch_remote(
    repo, remote: str | None, described: str, timeout: float = FETCH_TIMEOUT
) -> None:
    """``git fetch --prune`` ``remote`` (only ``refs/remotes/*`` move: the user's
    branch, index and tree are never touched; a branch deleted there stops being
    watched, not watched stale); one line when it does not answer."""
    if remote is None:
        return
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        repo.git.fetch(
            "--quiet", "--prune", "--", remote, kill_after_timeout=timeout, env=env
        )
    except git.GitCommandError as exc:
        raise WorkspaceError(
            f"could not fetch upstream {described}: {last_line(exc.stderr)}: the "
            "next watch run "
            "tries again"
        ) from None


def commit_exists(repo, commit: str) -> bool:
    """Whether ``commit`` names a commit in the repo (refused like ``resolve_commit``)."""
    return resolve_commit(repo, commit) is not None


def has_commit(path: str | Path | None, commit: str) -> bool:
    """Whether ``path`` is a git repo on this machine that holds ``commit``."""
    if not path or not Path(path).is_dir():
        return False
    try:
        return commit_exists(git.Repo(path), commit)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False


def clone_at(url: str | None, path: Path, commit: str, what: str) -> None:
    """A clone of ``url`` at ``path`` with ``commit`` checked out (detached);
    one line when it cannot be had."""
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


def file_at(repo, commit: str, path: str) -> str | None:
    """A file's text at ``commit`` (None: absent). An option-like commit, or a
    path that is absolute or climbs out with ``..``, is never passed to git."""
    if not commit or commit.startswith("-") or not _safe_relpath(path):
        return None
    try:
        return repo.git.show(f"{commit}:{path}")
    except git.GitCommandError:
        return None


def last_line(text: str | None) -> str:
    """The last non-empty line of a command's output (what it says went wrong)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def _safe_relpath(p: str) -> bool:
    pure = Path(p)
    return (
        bool(p)
        and not pure.is_absolute()
        and ".." not in pure.parts
        and not p.startswith("-")
    )


def default_workspace(workspace: Path | None) -> Path | None:
    """A command given no --workspace: the current directory when it is a workspace and
    MLFLOW_TRACKING_URI is unset (its local store is the one meant)."""
    if (
        workspace is None
        and not os.environ.get("MLFLOW_TRACKING_URI")
        and (Path(".dvc").is_dir() and Path(".git").exists())
    ):
        return Path(".")
    return workspace
