"""What watch-workspace does (flows/watch.py composes these steps): fetch the
workspace's upstream head, compare it with the lineage of the current Staging
version, and send one ``lineageflow.data.changed`` event per change, shown as an
artifact in Prefect's UI. Nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect.artifacts import create_markdown_artifact

from lineageflow.config import PipelineConfig, dataset_name
from lineageflow.errors import WorkspaceError
from lineageflow.retrain.changes import Change, detect
from lineageflow.retrain.events import send
from lineageflow.retrain.head import (
    Upstream,
    code_files,
    fetch,
    head_state,
    params_at,
    resolve_commit,
    upstream_of,
)
from lineageflow.retrain.trained import already_trained, staged
from lineageflow.runs.orchestration import run_logger
from lineageflow.tags import DATA_CHANGED_EVENT
from lineageflow.workspace import Workspace


@dataclass
class Watch:
    """What one watch found. ``summary`` is the flow's return value; ``to_send``
    the changes to announce (none while a data version waits for its push, when
    nothing changed, or when a run already trained them)."""

    commit: str
    upstream: str  # Upstream.describe()
    model: str
    summary: dict
    to_send: list[Change] = field(default_factory=list)


def fetch_head(ws: Workspace) -> tuple[Upstream, str, PipelineConfig]:
    """Fetch the workspace's upstream branch: the upstream, its head commit and
    the params at that commit."""
    logger = run_logger()
    repo = ws.git()
    up = upstream_of(repo)
    if up.remote is None:
        logger.warning(
            "branch %s has no upstream remote: comparing the local branch "
            "(`git branch --set-upstream-to origin/%s` to watch a remote)",
            up.branch,
            up.branch,
        )
    fetch(repo, up)
    commit = resolve_commit(repo, up.ref)
    if commit is None:
        raise WorkspaceError(
            f"{up.describe()} names no commit (branch deleted upstream?): push the "
            f"branch, or `git branch --set-upstream-to` another for {up.branch}"
        )
    return up, commit, params_at(repo, commit)


def compare_with_staging(
    ws: Workspace, up: Upstream, commit: str, cfg: PipelineConfig, uri: str
) -> Watch:
    """What the head changes against the Staging version's lineage, and which of
    those changes are to be sent."""
    logger = run_logger()
    model = cfg.registration.model_name
    names = [dataset_name(e) for e in cfg.data.datasets]
    st = staged(uri, model, names)
    notebook = cfg.train.code_refs().get("notebook")
    changed = code_files(ws.git(), st.commit if st else None, commit, notebook)
    head, waiting = head_state(ws, commit, cfg, changed)
    out = {
        "commit": commit,
        "upstream": up.describe(),
        "staging_version": st.version if st else None,
        "changes": [],
        "events": [],
        "waiting": waiting,
        "already_trained": None,
    }
    seen = Watch(commit, up.describe(), model, out)
    if waiting:
        logger.warning(
            "%s at %s not in the DVC remote yet: no event until it is pushed "
            "(`dvc push`)",
            ", ".join(waiting),
            commit[:12],
        )
        return seen
    changes = detect(head, st)
    if not changes:
        logger.info(
            "nothing to retrain: %s at %s names what Staging v%s was trained on",
            up.describe(),
            commit[:12],
            st.version if st else "?",
        )
        return seen
    out["changes"] = [c.reason for c in changes]
    done = already_trained(uri, cfg.mlflow.experiment, head.key())
    if done is not None:
        out["already_trained"] = done.run_id
        logger.info(
            "%s at %s was already trained by %s: no event (a change is trained "
            "once, whatever its outcome)",
            up.describe(),
            commit[:12],
            done.line(),
        )
        return seen
    seen.to_send = changes
    return seen


def announce(seen: Watch, label: str) -> dict:
    """Send one event per change to send (for the workspace ``label``, as the flow
    was given it: the ``train`` trigger matches it), log each, show them as the
    ``data-changed`` artifact; return the watch's summary with the event ids."""
    logger = run_logger()
    events = [c.event(label, seen.model) for c in seen.to_send]
    send(events)
    seen.summary["events"] = [e["id"] for e in events]
    for c, e in zip(seen.to_send, events, strict=True):
        logger.info("%s: %s (event %s)", DATA_CHANGED_EVENT, c.reason, e["id"])
    create_markdown_artifact(
        _markdown(seen.commit, seen.upstream, seen.to_send, events),
        key="data-changed",
        description=f"changes at {seen.commit[:12]} sent as {DATA_CHANGED_EVENT} events",
    )
    return seen.summary


def _markdown(commit: str, where: str, changes: list[Change], events: list[dict]):
    rows = "\n".join(
        f"| `{c.resource_id}` | {c.reason} | `{e['id']}` |"
        for c, e in zip(changes, events, strict=True)
    )
    return (
        f"## {len(changes)} change(s) at `{commit[:12]}` ({where})\n\n"
        f"Each was sent as one `{DATA_CHANGED_EVENT}` event; the `train` deployment's trigger "
        "trains this commit once.\n\n| resource | change | event id |\n|---|---|---|\n"
        + rows
        + "\n"
    )
