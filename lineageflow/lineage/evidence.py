"""The evidence the checks ask for, from the real workspace repo and the data
sources' remotes (lineageflow.lineage.checks.Evidence)."""

from __future__ import annotations

from pathlib import Path

import git

from lineageflow.data import source
from lineageflow.data.dvc_pointer import md5_in_dvc_text
from lineageflow.workspace import SHA_RE


class LiveEvidence:
    """Answers the checks' questions from the real workspace repo and its remotes."""

    def __init__(self, workspace_root: Path):
        self.root = workspace_root
        self.git = git.Repo(workspace_root)

    def commit_exists(self, commit: str) -> bool:
        if not SHA_RE.match(commit or ""):
            return False
        try:
            self.git.git.cat_file("-e", f"{commit}^{{commit}}")
            return True
        except git.GitCommandError:
            return False

    def dvc_md5_at(self, commit: str, dvc_file: str) -> str | None:
        text = self.file_at(commit, dvc_file)
        return None if text is None else md5_in_dvc_text(text)

    def file_at(self, commit: str, path: str) -> str | None:
        """A workspace file's text at ``commit`` (None: absent)."""
        if not self.commit_exists(commit) or not _safe_relpath(path):
            return None
        try:
            return self.git.git.show(f"{commit}:{path}")
        except git.GitCommandError:
            return None

    def in_remote(self, entry: dict) -> bool:
        return source.in_remote(entry, self.root)


def _safe_relpath(p: str) -> bool:
    pure = Path(p)
    return (
        bool(p)
        and not pure.is_absolute()
        and ".." not in pure.parts
        and not p.startswith("-")
    )
