"""What every flow does first, in one place.

Not in lineageflow.runs.orchestration: that module answers the ``lineageflow``
command at once and so imports neither Prefect nor MLflow at import time, while
this one needs MLflow's store settings (lineageflow.runs.store).

The workspace, its params and its MLflow store are then resolved by each flow
with one call of lineageflow.runs.context (``settings``, ``workspace_store``,
``resolve_workspace``), when and as that flow needs them: training-pipeline only
when no commit is given, watch-workspace only after fetching, reproduce-run with
the workspace as a hint.
"""

from __future__ import annotations

import logging

from lineageflow.ops.procs import no_collection_at_exit
from lineageflow.runs.orchestration import one_line_user_errors, run_logger
from lineageflow.runs.store import bounded_http_retries


def flow_setup() -> logging.Logger | logging.LoggerAdapter:
    """Set up this process for a flow run; return the run's logger.

    A refusal reaches Prefect's UI as its one line; the process skips its last
    garbage collection (lineageflow.ops.procs); MLflow's HTTP retries are bounded,
    so a dead tracking server is one line in seconds, not minutes of retries.
    Idempotent: a flow called from another flow may call it again."""
    one_line_user_errors()
    no_collection_at_exit()
    bounded_http_retries()
    return run_logger()
