"""The evidence the checks ask for, from the real workspace repo and the data
sources' remotes: ``Evidence`` is what lineageflow.lineage.checks asks,
``LiveEvidence`` answers it."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import git

from lineageflow.data import source
from lineageflow.data.dvc_pointer import md5_in_dvc_text
from lineageflow.workspace import SHA_RE, commit_exists, file_at


class Evidence(Protocol):
    """What the checks ask git and the data sources."""

    def commit_exists(self, commit: str) -> bool: ...
    def dvc_md5_at(self, commit: str, dvc_file: str) -> str | None: ...
    def file_at(self, commit: str, path: str) -> str | None: ...
    def in_remote(self, entry: dict) -> bool: ...


class LiveEvidence:
    """Answers the checks' questions from the real workspace repo and its remotes."""

    def __init__(self, workspace_root: Path):
        self.root = workspace_root
        self.git = git.Repo(workspace_root)

    def commit_exists(self, commit: str) -> bool:
        """Only a full sha counts: a record names its commit by one."""
        return bool(SHA_RE.match(commit or "")) and commit_exists(self.git, commit)

    def dvc_md5_at(self, commit: str, dvc_file: str) -> str | None:
        text = self.file_at(commit, dvc_file)
        return None if text is None else md5_in_dvc_text(text)

    def file_at(self, commit: str, path: str) -> str | None:
        """A workspace file's text at ``commit`` (None: absent)."""
        if not self.commit_exists(commit):
            return None
        return file_at(self.git, commit, path)

    def in_remote(self, entry: dict) -> bool:
        return source.in_remote(entry, self.root)
