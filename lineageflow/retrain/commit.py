"""A commit an event names, made ready to train once: ``commit_run``.

Resolved in the workspace (fetching its upstream when the commit is not there
yet); its params are those committed with it; every DVC version it names must
be in the remote before a run starts, so a run that could not have read its
data never counts as "already trained". Then, holding the workspace's retrain
slot (lineageflow.retrain.queue): an earlier run of the same change ends it at
once; else a temporary worktree of the commit, reading its data through the
workspace's DVC cache, is where the stages run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from lineageflow.checkouts import tree_at
from lineageflow.config import PipelineConfig
from lineageflow.data.source import share_data
from lineageflow.errors import DataError
from lineageflow.retrain.head import locate
from lineageflow.retrain.queue import one_at_a_time
from lineageflow.retrain.trained import Trained, already_trained
from lineageflow.runs.context import experiment
from lineageflow.runs.store import check_reachable
from lineageflow.tags import TAG_CHANGE_KEY, TAG_TRIGGER_COMMIT
from lineageflow.workspace import Workspace


@dataclass(frozen=True)
class CommitRun:
    """What the stages of a commit's run take; ``done``: the run that already
    trained this change (then nothing is to run)."""

    ws: Workspace  # the worktree at the commit (the workspace itself when done)
    cfg: PipelineConfig
    tracking_uri: str
    sha: str
    key: str
    origin: dict  # the workspace the run records (not the worktree it runs in)
    done: Trained | None = None

    def tags(self) -> dict[str, str]:
        return {TAG_CHANGE_KEY: self.key, TAG_TRIGGER_COMMIT: self.sha}

    def skipped(self) -> dict:
        message = (
            f"commit {self.sha[:12]} with these data versions and params was "
            f"already trained: {self.done.line() if self.done else '?'}"
        )
        return {
            "skipped": True,
            "message": message,
            "run_id": self.done.run_id if self.done else None,
            "commit": self.sha,
            "model": self.cfg.registration.model_name,
        }


@contextlib.contextmanager
def commit_run(workspace: str | None, rev: str) -> Iterator[CommitRun]:
    at = locate(workspace, rev)
    sha, key, uri = at.head.commit, at.head.key(), at.tracking_uri
    if at.waiting:
        raise DataError(
            f"{', '.join(at.waiting)} at {sha[:12]} is not in the DVC remote yet: "
            "`dvc push` it; the next watch run sends the event again"
        )
    check_reachable(uri)
    with one_at_a_time(at.ws.root):  # a second event for it waits, then ends here
        done = already_trained(uri, at.cfg.mlflow.experiment, key)
        if done is not None:
            yield CommitRun(at.ws, at.cfg, uri, sha, key, at.origin, done)
            return
        experiment(at.ws, at.cfg, uri)  # a new one keeps its artifacts in the workspace
        with tree_at(sha, at.ws.root, None, "workspace") as tree:
            share_data(tree, at.ws.root)
            yield CommitRun(Workspace(tree), at.cfg, uri, sha, key, at.origin)
