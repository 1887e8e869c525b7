"""The one place that opens and closes MLflow runs.

Traps this module exists for (measured on MLflow 3.17):
- The active-run stack is thread-local (``mlflow.tracking.fluent._active_run_stack``
  is a ThreadLocalVariable) while Prefect runs submitted tasks in worker threads:
  ``start_run(nested=True)`` there silently makes a *top-level* run. Child runs are
  therefore always started with an explicit ``parent_run_id``, and the parent is
  driven through ``MlflowClient``, never as the ambient active run.
- ``MLFLOW_RUN_ID`` in the environment makes ``start_run`` resume that run,
  overriding ``parent_run_id``: it is removed before any run starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
from mlflow.entities import Param, RunTag

from lineageflow.errors import PromotionRefused
from lineageflow.runs.orchestration import process_identity
from lineageflow.runs.store import client, lost_tracking, tracking_error
from lineageflow.tags import TAG_ERROR, TAG_KIND, TAG_OWNER, TAG_STAGE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRef:
    """What a task needs to log under the parent run (picklable, no client)."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    # tags every child run repeats (MLflow's source fields: without them a child
    # started in a worker thread gets the source of whatever script started Python)
    inherited: tuple[tuple[str, str], ...] = ()
    # code + environment every stage key includes (lineageflow.runs.reuse); None: the
    # stages record no key. reuse_lookup: stages look for earlier outputs to take.
    reuse_basis: str | None = None
    reuse_lookup: bool = False


def log_params(run: RunRef, params: dict[str, str]) -> None:
    """Params on a run by the client, in MLflow's batches of at most 100."""
    c = client(run.tracking_uri)
    flat = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(flat), 100):
        c.log_batch(run.run_id, params=flat[i : i + 100])


def log_tags(run: RunRef, tags: dict[str, str]) -> None:
    """Tags on a run by the client, in one batch."""
    client(run.tracking_uri).log_batch(
        run.run_id, tags=[RunTag(k, v) for k, v in tags.items()]
    )


def _clear_ambient_run() -> None:
    if os.environ.pop("MLFLOW_RUN_ID", None):
        log.warning(
            "ignored MLFLOW_RUN_ID from the environment: runs are parented explicitly"
        )


def error_text(exc: BaseException) -> str:
    """The ``lineageflow.error`` tag: the exception, or for a run ended KILLED what
    stopped its process. Prefect's engine ends the flow's process with
    ``SystemExit`` when its worker dies; a bare ``SystemExit: 1`` read like a
    bug in the flow."""
    if isinstance(exc, SystemExit):
        return (
            f"the process running the flow was stopped (SystemExit: {exc.code}): "
            "the worker died or was killed"
        )
    if isinstance(exc, KeyboardInterrupt):
        return (
            "the process running the flow was interrupted (KeyboardInterrupt): "
            "Ctrl-C, or SIGINT from what started it"
        )
    return f"{type(exc).__name__}: {exc}"[:4000]


@contextlib.contextmanager
def parent_run(
    tracking_uri: str,
    experiment_id: str,
    run_name: str,
    tags: dict[str, str],
    inherited: dict[str, str] | None = None,
) -> Iterator[RunRef]:
    """The flow's parent run. Ends FINISHED, or FAILED with the error as a tag.

    A refused promotion is not a failed run: the run's artifacts are complete
    and can be promoted later, so it ends FINISHED while the flow run fails.
    """
    _clear_ambient_run()
    c = client(tracking_uri)
    run = c.create_run(
        experiment_id,
        run_name=run_name,
        tags={
            TAG_KIND: "pipeline",
            TAG_OWNER: process_identity(),
            **(inherited or {}),
            **tags,
        },
    )
    ref = RunRef(
        tracking_uri,
        experiment_id,
        run.info.run_id,
        tuple(sorted((inherited or {}).items())),
    )
    status = "FINISHED"
    try:
        yield ref
    except PromotionRefused:
        raise
    except (KeyboardInterrupt, SystemExit) as exc:
        # Ctrl-C, or Prefect ending the process (its worker died or cancelled it)
        status = "KILLED"
        _safe_tag(c, ref.run_id, TAG_ERROR, error_text(exc))
        raise
    except BaseException as exc:
        status = "FAILED"
        _safe_tag(c, ref.run_id, TAG_ERROR, error_text(exc))
        if lost_tracking(exc):
            raise tracking_error(tracking_uri, exc, "failed mid-run") from None
        raise
    finally:
        if status != "FINISHED":
            # a stage interrupted mid-way may never unwind its own context
            _close_running_children(c, ref, f"parent run ended {status}", status)
        _terminate(c, ref.run_id, status)


def _close_running_children(c, ref: RunRef, why: str, status: str = "KILLED") -> None:
    try:
        children = child_runs(ref.tracking_uri, ref.experiment_id, ref.run_id)
    except Exception:  # the server may be the reason we are here
        return
    for child in children:
        if child.info.status == "RUNNING":
            _safe_tag(c, child.info.run_id, TAG_ERROR, why)
            _terminate(c, child.info.run_id, status)


@contextlib.contextmanager
def child_run(ref: RunRef, stage: str, tags: dict[str, str] | None = None):
    """A stage's child run, active *in this thread* so autolog writes to it."""
    _clear_ambient_run()
    # autolog writes through MLflow's fluent API, which reads the process-wide
    # tracking URI: the one place lineageflow sets it, to this run's own store
    mlflow.set_tracking_uri(ref.tracking_uri)
    active = mlflow.start_run(
        experiment_id=ref.experiment_id,
        run_name=stage,
        parent_run_id=ref.run_id,
        tags={**dict(ref.inherited), TAG_STAGE: stage, **(tags or {})},
    )
    try:
        yield active
    except BaseException as exc:
        _safe_tag(
            client(ref.tracking_uri), active.info.run_id, TAG_ERROR, error_text(exc)
        )
        killed = isinstance(exc, (KeyboardInterrupt, SystemExit))
        _end_active("KILLED" if killed else "FAILED")
        raise
    else:
        _end_active("FINISHED")


def _end_active(status: str) -> None:
    """End this thread's active run. MLflow pops its thread-local stack before the
    server call, so a dead server leaves no active run behind; the run itself is
    closed by the next pipeline start (close_stale_runs)."""
    try:
        mlflow.end_run(status)
    except Exception:
        log.warning("could not end the active MLflow run as %s", status, exc_info=True)


def _safe_tag(c, run_id: str, key: str, value: str) -> None:
    try:
        c.set_tag(run_id, key, value)
    except Exception:  # the error we are reporting matters more than this tag
        log.warning("could not tag run %s with %s", run_id, key, exc_info=True)


def _terminate(c, run_id: str, status: str, attempts: int = 4) -> None:
    """End a run, retrying a flaky tracking server so nothing stays RUNNING."""
    for i in range(attempts):
        try:
            c.set_terminated(run_id, status)
            return
        except Exception:
            if i == attempts - 1:
                log.error(
                    "could not end MLflow run %s as %s:\n%s",
                    run_id,
                    status,
                    traceback.format_exc(),
                )
                return
            time.sleep(2**i)


def close_stale_runs(tracking_uri: str, experiment_id: str, is_alive) -> list[str]:
    """End runs that a crashed flow left RUNNING (status KILLED, tag saying why).

    ``is_alive(run)`` answers whether the flow that owns a parent run may still
    be running; its child runs are closed with it. Returns the closed run ids.
    """
    c = client(tracking_uri)
    running = c.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.{TAG_KIND} = 'pipeline'",
        max_results=500,
    )
    closed = []
    # children still RUNNING under a parent that has ended
    for child in c.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_STAGE}` != ''",
        max_results=500,
    ):
        parent_id = child.data.tags.get("mlflow.parentRunId")
        if parent_id and c.get_run(parent_id).info.status != "RUNNING":
            _safe_tag(
                c,
                child.info.run_id,
                TAG_ERROR,
                "closed by lineageflow: its parent run had ended",
            )
            _terminate(c, child.info.run_id, "KILLED")
            closed.append(child.info.run_id)
    for run in running:
        if is_alive(run):
            continue
        flow_run_id = run.data.tags.get("prefect.flow_run_id", "?")
        why = (
            f"closed by lineageflow: Prefect flow run {flow_run_id} is no "
            "longer running (crashed or killed) and left this run RUNNING"
        )
        for child in child_runs(tracking_uri, experiment_id, run.info.run_id):
            if child.info.status == "RUNNING":
                _safe_tag(c, child.info.run_id, TAG_ERROR, why)
                _terminate(c, child.info.run_id, "KILLED")
        _safe_tag(c, run.info.run_id, TAG_ERROR, why)
        _terminate(c, run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str) -> list:
    c = client(tracking_uri)
    return c.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=200,
    )
