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
        repo = git.Repo(p)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise WorkspaceError(
            f"workspace {p} is not a git repository: run `git init` there "
            "(or pass the repository's root)"
        ) from None
    top = Path(repo.working_tree_dir).resolve()
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


def resolve_commit(repo, rev: str) -> str | None:
    """The full sha of ``rev`` when it names a commit in the repo, else None.
    An option-like rev (``--upload-pack=...``) is refused, never passed to git."""
    rev = (rev or "").strip()
    if not rev or rev.startswith("-") or len(rev) > 200:
        return None
    try:
        return repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")
    except git.GitCommandError:
        return None


def commit_exists(repo, commit: str) -> bool:
    """Whether ``commit`` names a commit in the repo (refused like ``resolve_commit``)."""
    return resolve_commit(repo, commit) is not None


def file_at(repo, commit: str, path: str) -> str | None:
    """A file's text at ``commit`` (None: absent). An option-like commit, or a
    path that is absolute or climbs out with ``..``, is never passed to git."""
    if not commit or commit.startswith("-") or not _safe_relpath(path):
        return None
    try:
        return repo.git.show(f"{commit}:{path}")
    except git.GitCommandError:
        return None


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
