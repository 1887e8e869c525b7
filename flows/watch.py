"""watch-workspace: send one event per change the upstream brings; never train.

Every 10 minutes (deployment ``watch``) it fetches the workspace's upstream
branch and compares its head with the lineage of the current Staging version:
a ``.dvc`` md5, a Delta table version, the params, the workspace's Python
code. Each change becomes a ``lineageflow.data.changed`` event with a
deterministic id; the ``train`` deployment's trigger runs that commit. Nothing
is sent while a data version is not in its remote yet, nor for a change a run
already trained, whatever its outcome (so a failed retrain is not retried in a
loop, and a retrain, which commits nothing, never causes another).
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from lineageflow.config import dataset_name
from lineageflow.errors import WorkspaceError
from lineageflow.ops.procs import no_collection_at_exit
from lineageflow.retrain.changes import EVENT, Change, detect
from lineageflow.retrain.events import api_url, send
from lineageflow.retrain.head import (
    fetch,
    head_state,
    params_at,
    resolve_commit,
    upstream_of,
)
from lineageflow.retrain.trained import already_trained, staged
from lineageflow.runs.context import resolve_workspace
from lineageflow.runs.orchestration import one_line_user_errors, run_logger
from lineageflow.runs.store import bounded_http_retries, check_reachable
from lineageflow.workspace import open_workspace


@flow(name="watch-workspace", log_prints=True)
def watch_workspace(workspace: str | None = None) -> dict:
    """Fetch the workspace's upstream branch and compare its head with the
    lineage of the current Staging version; send one `lineageflow.data.changed`
    event per change (dataset version, params, code). It never trains itself.

    Args:
        workspace: path of the git repository holding params.yaml and the .dvc
            files (default: $LINEAGEFLOW_WORKSPACE). The `train` deployment's
            trigger matches it, as given, to the workspace it was deployed with.
    """
    one_line_user_errors()  # a refusal reaches Prefect's UI as its one line
    no_collection_at_exit()
    logger = run_logger()
    bounded_http_retries()
    label = resolve_workspace(workspace)
    ws = open_workspace(label)
    api_url()  # no server, no trigger: say so before fetching anything
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
    cfg = params_at(repo, commit)
    uri = ws.tracking_uri()
    check_reachable(uri)
    model = cfg.registration.model_name
    names = [dataset_name(e) for e in cfg.data.datasets]
    st = staged(uri, model, names)
    head, waiting = head_state(ws, commit, cfg, st.commit if st else None)
    out = {
        "commit": commit,
        "upstream": up.describe(),
        "staging_version": st.version if st else None,
        "changes": [],
        "events": [],
        "waiting": waiting,
        "already_trained": None,
    }
    if waiting:
        logger.warning(
            "%s at %s not in the DVC remote yet: no event until it is pushed "
            "(`dvc push`)",
            ", ".join(waiting),
            commit[:12],
        )
        return out
    changes = detect(head, st)
    if not changes:
        logger.info(
            "nothing to retrain: %s at %s names what Staging v%s was trained on",
            up.describe(),
            commit[:12],
            st.version if st else "?",
        )
        return out
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
        return out
    events = [c.event(label, model) for c in changes]
    send(events)
    out["events"] = [e["id"] for e in events]
    for c, e in zip(changes, events, strict=True):
        logger.info("%s: %s (event %s)", EVENT, c.reason, e["id"])
    create_markdown_artifact(
        _markdown(commit, up.describe(), changes, events),
        key="data-changed",
        description=f"changes at {commit[:12]} sent as {EVENT} events",
    )
    return out


def _markdown(commit: str, where: str, changes: list[Change], events: list[dict]):
    rows = "\n".join(
        f"| `{c.resource_id}` | {c.reason} | `{e['id']}` |"
        for c, e in zip(changes, events, strict=True)
    )
    return (
        f"## {len(changes)} change(s) at `{commit[:12]}` ({where})\n\n"
        f"Each was sent as one `{EVENT}` event; the `train` deployment's trigger "
        "trains this commit once.\n\n| resource | change | event id |\n|---|---|---|\n"
        + rows
        + "\n"
    )
