"""reproduce-run: rebuild a past run from its recorded code, data and params.

Prefect's "Copy to new run" reruns a deployment with *today's* code and data;
this flow pins all three itself (see lineageflow.reproduce.reproduction): the workspace
at the recorded commit in a temp worktree or clone, the recorded DVC versions, and
the recorded lineageflow commit (run in a subprocess when it is not the code
running now). The user's working tree is never touched; nothing is registered.
Its steps are lineageflow.reproduce.driver's.
"""

from __future__ import annotations

from prefect import flow

from flows.pinned import run_recorded_code
from flows.training import run_stages
from lineageflow.reproduce.driver import (
    Rerunners,
    compare,
    open_reproduction,
    publish,
    rebuild,
)
from lineageflow.runs.flowstart import flow_setup

ENTRYPOINT = "flows/reproduce.py:reproduce_run"


@flow(name="reproduce-run", log_prints=True)
def reproduce_run(
    run_id: str, workspace: str | None = None, tolerance: float = 0.0
) -> dict:
    """Rebuild a past training run from its recorded code, data and params, and
    compare every metric (exact / within_tolerance / diverged / unpinned).

    Args:
        run_id: an MLflow parent run id, or models:/NAME/VERSION.
        workspace: the workspace git repo. Default: $LINEAGEFLOW_WORKSPACE, else
            the recorded one when it is on this machine, else a clone of its
            recorded URL.
        tolerance: largest absolute metric difference still called within_tolerance.
    """
    flow_setup()
    job = open_reproduction(run_id, workspace, tolerance)
    new_id = rebuild(job, Rerunners(run_stages, run_recorded_code, ENTRYPOINT))
    done = compare(job, new_id)
    return publish(done)
