"""watch-workspace: send one event per change the upstream brings; never train.

Every 10 minutes (deployment ``watch``) it fetches the workspace's upstream
branch and compares its head with the lineage of the current Staging version:
a ``.dvc`` md5, a Delta table version, the params, the workspace's Python
code. Each change becomes a ``lineageflow.data.changed`` event with a
deterministic id; the ``train`` deployment's trigger runs that commit. Nothing
is sent while a data version is not in its remote yet, nor for a change a run
already trained, whatever its outcome (so a failed retrain is not retried in a
loop, and a retrain, which commits nothing, never causes another). The steps
are lineageflow.retrain.watch's.
"""

from __future__ import annotations

from prefect import flow

from lineageflow.retrain.events import api_url
from lineageflow.retrain.watch import announce, compare_with_staging, fetch_head
from lineageflow.runs.context import resolve_workspace
from lineageflow.runs.flowstart import flow_setup
from lineageflow.runs.store import check_reachable
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
    flow_setup()
    label = resolve_workspace(workspace)
    ws = open_workspace(label)
    api_url()  # no server, no trigger: say so before fetching anything
    up, commit, cfg = fetch_head(ws)
    uri = ws.tracking_uri()
    check_reachable(uri)
    seen = compare_with_staging(ws, up, commit, cfg, uri)
    if not seen.to_send:
        return seen.summary
    return announce(seen, label)
