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
import re
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lineageflow.errors import ArtifactStoreError, PromotionRefused, TrackingError
from lineageflow.runs.orchestration import TAG_OWNER, process_identity

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
    # tags every child run repeats (MLflow's source fields: without them a child
    # started in a worker thread gets the source of whatever script started Python)
    inherited: tuple[tuple[str, str], ...] = ()
    # code + environment every stage key includes (lineageflow.runs.reuse); None: the
    # stages record no key. reuse_lookup: stages look for earlier outputs to take.
    reuse_basis: str | None = None
    reuse_lookup: bool = False


def default_tracking_uri(state_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set (MLflow's convention), else a sqlite store
    in the workspace's git-ignored ``.lineageflow/``."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir / 'mlflow.db'}"
    )


def tracking_uri_for(workspace: str | Path | None) -> str:
    """The store a command reads: ``MLFLOW_TRACKING_URI``, else the given
    workspace's local store; neither is one clear line."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if workspace is not None:
        from lineageflow.workspace import open_workspace

        return default_tracking_uri(open_workspace(workspace).state_dir)
    from lineageflow.errors import WorkspaceError

    raise WorkspaceError(
        "no MLflow store to read the run from: set MLFLOW_TRACKING_URI, or pass "
        "the workspace whose local store holds it"
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


def bounded_http_retries() -> None:
    """MLflow retries HTTP calls 7 times with backoff factor 2 by default (minutes
    of silence when a server dies). Bound it, unless the user chose otherwise:
    4 retries at 1, 2, 4, 8 s, 30 s per request."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def log_params(run: RunRef, params: dict[str, str]) -> None:
    """Params on a run by the client, in MLflow's batches of at most 100."""
    from mlflow.entities import Param

    c = client(run.tracking_uri)
    flat = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(flat), 100):
        c.log_batch(run.run_id, params=flat[i : i + 100])


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
        raise tracking_error(
            tracking_uri, exc, f"refused experiment '{name}'"
        ) from None
    except Exception as exc:  # requests' ConnectionError after MLflow's retries
        raise tracking_error(tracking_uri, exc, "does not answer") from None


def tracking_error(tracking_uri: str, exc: BaseException, what: str) -> TrackingError:
    """One line for an MLflow failure; credentials get their own advice."""
    text = str(getattr(exc, "message", exc))
    where = redact_uri(tracking_uri)
    code = getattr(exc, "error_code", "")
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED") or any(
        s in text for s in ("401", "403", "Unauthorized", "credentials")
    ):
        return TrackingError(
            f"MLflow tracking server {where} rejected the credentials: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    store = artifact_store_failure(exc)
    if store is not None:
        return ArtifactStoreError(
            f"the artifact store {store} {where} does not answer "
            f"({_short(text)}): check that store is up, then rerun"
        )
    if "Max retries exceeded" in text or "ConnectionError" in type(exc).__name__:
        return TrackingError(
            f"MLflow tracking server {where} does not answer: start it or fix "
            "MLFLOW_TRACKING_URI"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return TrackingError(f"MLflow at {where} {what}: {first[:300]}")


def artifact_store_failure(exc: BaseException) -> str | None:
    """How to name the artifact store when `exc` is a failure to reach it, else None.

    Through a tracking server with proxied artifacts (``mlflow-artifacts:``) the
    server answers 500 when *its* store is down: that is not the server's fault."""
    text = str(getattr(exc, "message", exc))
    if "/mlflow-artifacts/" in text:
        return "behind MLflow tracking server"
    chain, seen = exc, 0
    while chain is not None and seen < 8:
        if type(chain).__module__.split(".")[0] in ("botocore", "boto3", "s3transfer"):
            return "(S3) used by"
        chain, seen = chain.__cause__ or chain.__context__, seen + 1
    return None


def _short(text: str) -> str:
    """The gist of a long HTTP failure: 'too many 500 error responses', or the
    first line, without the URL."""
    m = re.search(r"Caused by \w+\('([^']+)'", text)
    if m:
        return m.group(1)
    first = text.strip().splitlines()[0] if text.strip() else "no detail"
    return re.sub(r"https?://\S+", "<url>", first)[:200]


def _error_text(exc: BaseException) -> str:
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
        _safe_tag(c, ref.run_id, TAG_ERROR, _error_text(exc))
        raise
    except BaseException as exc:
        status = "FAILED"
        _safe_tag(c, ref.run_id, TAG_ERROR, _error_text(exc))
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
    import mlflow

    _clear_ambient_run()
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
            client(ref.tracking_uri), active.info.run_id, TAG_ERROR, _error_text(exc)
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
    import mlflow

    try:
        mlflow.end_run(status)
    except Exception:
        log.warning("could not end the active MLflow run as %s", status, exc_info=True)


def lost_tracking(exc: BaseException) -> bool:
    """True for the errors MLflow's client raises when the server is unreachable."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError):
        return True
    text = str(exc)
    return "API request to" in text and (
        "Max retries exceeded" in text or "Connection refused" in text
    )


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


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default


def mlflow_ui_url() -> str:
    """Where people open MLflow's UI for a local store: ``LINEAGEFLOW_MLFLOW_UI_URL``
    (a deployment carries the value it had at `prefect deploy`), else `mlflow ui`'s
    default address. An unfilled deployment template counts as unset."""
    value = os.environ.get("LINEAGEFLOW_MLFLOW_UI_URL") or ""
    return (LOCAL_UI if not value or "{{" in value else value).rstrip("/")


def _ui_base(tracking_uri: str) -> str:
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return redact_uri(tracking_uri).rstrip("/")
    return mlflow_ui_url()


def artifact_url(tracking_uri: str, run_id: str, path: str) -> str:
    """Where the MLflow UI / server serves one of a run's artifacts."""
    return f"{_ui_base(tracking_uri)}/get-artifact?path={path}&run_uuid={run_id}"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI address of a run: the tracking server itself when it is one,
    else ``$LINEAGEFLOW_MLFLOW_UI_URL``, else the local `mlflow ui` default."""
    return f"{_ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"
