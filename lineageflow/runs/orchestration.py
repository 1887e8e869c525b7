"""The Prefect side of a run's lifecycle: its ids for the lineage record and the
MLflow tags, and whether the flow that owns an MLflow run is still alive.

Prefect is imported in the functions that use it: the ``lineageflow`` command
imports this module to answer at once (``prefect`` takes 1.4 s to import here).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path

from lineageflow.errors import LineageflowError
from lineageflow.tags import TAG_OWNER

log = logging.getLogger(__name__)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger (its lines reach Prefect's UI), or this module's
    outside a flow run."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return log


def orchestration_info() -> dict:
    """Prefect ids of the current flow run (URL only when a server/UI is used)."""
    from prefect.runtime import deployment, flow_run
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url  # None with the ephemeral API
    return {
        "flow_run_id": flow_run.get_id(),
        "flow_run_name": flow_run.get_name(),
        "flow_name": flow_run.get_flow_name(),
        "flow_run_url": flow_run.get_flow_run_ui_url() if api else None,
        "deployment": deployment.get_name(),
    }


def flow_run_alive(run) -> bool:
    """Whether the flow that owns an MLflow parent run may still be running.

    On this host the owner process answers (a flow killed with its worker leaves
    Prefect saying RUNNING forever; its flow run is then marked Crashed here, as
    the worker would have). Elsewhere Prefect's state answers; unknown to this
    Prefect API, a run is presumed alive for a day so a flow on another server
    is never cut off.
    """
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    tags = run.data.tags
    local = owner_alive(tags)
    if local is True:
        return True
    state = None
    try:
        fid = uuid.UUID(tags.get("prefect.flow_run_id", ""))
        with get_client(sync_client=True) as pc:
            state = pc.read_flow_run(fid).state
            if local is False and state is not None and not state.is_final():
                pc.set_flow_run_state(
                    fid,
                    Crashed(
                        message="flow process is gone (killed); found by lineageflow"
                    ),
                    force=True,
                )
    except (ValueError, ObjectNotFound):
        pass
    if local is False:
        return False
    if state is not None:
        return not state.is_final()
    return time.time() - (run.info.start_time or 0) / 1000 < STALE_AFTER_S


def prefect_tags(orch: dict) -> dict[str, str]:
    tags = {
        "prefect.flow_run_id": str(orch["flow_run_id"]),
        "prefect.flow_run_name": str(orch["flow_run_name"]),
    }
    if orch.get("flow_run_url"):
        tags["prefect.flow_run_url"] = orch["flow_run_url"]
    if orch.get("deployment"):
        tags["prefect.deployment"] = orch["deployment"]
    return tags


STALE_AFTER_S = 24 * 3600


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): with the
    pid it identifies a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_identity() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid) or '?'}"


def owner_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process that drove a run still lives: None when it ran on
    another host (or before owners were recorded), so only the orchestrator knows."""
    host, _, rest = tags.get(TAG_OWNER, "").partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return _proc_start(int(pid)) == start


class _OneLineUserErrors(logging.Filter):
    """Prefect logs a flow's exception with its traceback; for a user error the
    one-line message is the whole story, so drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, LineageflowError):
            record.exc_info = None
            record.exc_text = None
        return True


_USER_ERRORS = _OneLineUserErrors()


def one_line_user_errors() -> None:
    """A lineageflow error reaches Prefect's logs (and so its UI) as its one line,
    in the CLI and in a flow run a worker started alike. Idempotent."""
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if _USER_ERRORS not in target.filters:
                target.addFilter(_USER_ERRORS)
