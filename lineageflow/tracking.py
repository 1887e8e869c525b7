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
from pathlib import Path
from urllib.parse import urlparse

from lineageflow.errors import PromotionRefused, TrackingError

log = logging.getLogger(__name__)

TAG_STAGE = "lineageflow.stage"
TAG_ERROR = "lineageflow.error"
TAG_KIND = "lineageflow.kind"


@dataclass(frozen=True)
class RunRef:
    """What a task needs to log under the parent run (picklable, no client)."""

    tracking_uri: str
    experiment_id: str
    run_id: str


def default_tracking_uri(state_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set (MLflow's convention), else a sqlite store
    in the workspace's git-ignored ``.lineageflow/``."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir / 'mlflow.db'}"
    )


def artifact_root_for(tracking_uri: str, state_dir: Path | None) -> str | None:
    """Artifact location for new experiments on a local store; a server decides its own."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if state_dir is not None and db.parent == state_dir:
            return (state_dir / "artifacts").as_uri()
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def redact_uri(uri: str) -> str:
    """The URI without user:password, fit for a message or a tag."""
    p = urlparse(uri)
    if not (p.username or p.password):
        return uri
    netloc = (p.hostname or "") + (f":{p.port}" if p.port else "")
    return p._replace(netloc=netloc).geturl()


def client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _clear_ambient_run() -> None:
    if os.environ.pop("MLFLOW_RUN_ID", None):
        log.warning(
            "ignored MLFLOW_RUN_ID from the environment: runs are parented explicitly"
        )


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer.

    MLflow's own client retries for minutes before giving up.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme not in ("http", "https"):
        return
    import requests

    url = tracking_uri.rstrip("/") + "/health"
    try:
        requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise TrackingError(
            f"MLflow tracking server {redact_uri(tracking_uri)} does not answer "
            f"({type(exc).__name__}): start it or fix MLFLOW_TRACKING_URI"
        ) from None


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | None) -> str:
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"MLflow experiment '{name}' is deleted: restore it "
                    "(`mlflow experiments restore`) or set mlflow.experiment"
                )
            return exp.experiment_id
        return c.create_experiment(name, artifact_location=artifact_root)
    except MlflowException as exc:
        raise TrackingError(
            f"MLflow at {redact_uri(tracking_uri)} refused experiment '{name}': "
            f"{exc.message.splitlines()[0]}"
        ) from None


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]


@contextlib.contextmanager
def parent_run(
    tracking_uri: str, experiment_id: str, run_name: str, tags: dict[str, str]
) -> Iterator[RunRef]:
    """The flow's parent run. Ends FINISHED, or FAILED with the error as a tag.

    A refused promotion is not a failed run: the run's artifacts are complete
    and can be promoted later, so it ends FINISHED while the flow run fails.
    """
    _clear_ambient_run()
    c = client(tracking_uri)
    run = c.create_run(
        experiment_id, run_name=run_name, tags={TAG_KIND: "pipeline", **tags}
    )
    ref = RunRef(tracking_uri, experiment_id, run.info.run_id)
    status = "FINISHED"
    try:
        yield ref
    except PromotionRefused:
        raise
    except KeyboardInterrupt as exc:
        status = "KILLED"
        _safe_tag(c, ref.run_id, TAG_ERROR, _error_text(exc))
        raise
    except BaseException as exc:
        status = "FAILED"
        _safe_tag(c, ref.run_id, TAG_ERROR, _error_text(exc))
        raise
    finally:
        _terminate(c, ref.run_id, status)


@contextlib.contextmanager
def child_run(ref: RunRef, stage: str, tags: dict[str, str] | None = None):
    """A stage's child run, active *in this thread* so autolog writes to it."""
    import mlflow

    _clear_ambient_run()
    mlflow.set_tracking_uri(ref.tracking_uri)
    active = mlflow.start_run(
        experiment_id=ref.experiment_id,
        run_name=stage,
        parent_run_id=ref.run_id,
        tags={TAG_STAGE: stage, **(tags or {})},
    )
    try:
        yield active
    except BaseException as exc:
        _safe_tag(
            client(ref.tracking_uri), active.info.run_id, TAG_ERROR, _error_text(exc)
        )
        mlflow.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


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


def child_runs(tracking_uri: str, experiment_id: str, parent_run_id: str) -> list:
    c = client(tracking_uri)
    return c.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=200,
    )


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI address of a run: the tracking server itself when it is one,
    else ``$LINEAGEFLOW_MLFLOW_UI_URL``, else the local `mlflow ui` default."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        base = redact_uri(tracking_uri)
    else:
        base = os.environ.get("LINEAGEFLOW_MLFLOW_UI_URL") or LOCAL_UI
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
