"""Where MLflow's store is, whether it answers, and how its failures read.

The store a run writes to (``MLFLOW_TRACKING_URI``, else the workspace's sqlite
store), its experiment, one-line errors for an unreachable server, artifact
store or rejected credentials, and the addresses of MLflow's UI. Runs
themselves are opened and closed by lineageflow.runs.tracking.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from lineageflow.errors import (
    ArtifactStoreError,
    TrackingError,
    WorkspaceError,
    permission_denied,
)
from lineageflow.workspace import open_workspace


def tracking_uri_for(workspace: str | Path | None) -> str:
    """The store a command reads: ``MLFLOW_TRACKING_URI``, else the given
    workspace's local store; neither is one clear line."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if workspace is not None:
        return open_workspace(workspace).tracking_uri()
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


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def bounded_http_retries() -> None:
    """MLflow retries HTTP calls 7 times with backoff factor 2 by default (minutes
    of silence when a server dies). Bound it, unless the user chose otherwise:
    4 retries at 1, 2, 4, 8 s, 30 s per request. Downloads stream through the
    server rather than from presigned store URLs: a store that enforces its keys
    per identity (the team stack's) may refuse those, and each failed chunk is
    then retried for minutes (MLflow 3.17 uses them for files of any size)."""
    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer.

    MLflow's own client retries for minutes before giving up.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme not in ("http", "https"):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise TrackingError(
            f"MLflow tracking server {redact_uri(tracking_uri)} does not answer "
            f"({type(exc).__name__}): start it or fix MLFLOW_TRACKING_URI"
        ) from None


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | None) -> str:
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
    if code == "PERMISSION_DENIED" or "error code 403" in text:
        return permission_denied(f"{what} at {where}")
    if code == "UNAUTHENTICATED" or any(
        s in text for s in ("401", "Unauthorized", "credentials")
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


def lost_tracking(exc: BaseException) -> bool:
    """True for the errors MLflow's client raises when the server is unreachable."""
    if isinstance(exc, requests.exceptions.ConnectionError):
        return True
    text = str(exc)
    return "API request to" in text and (
        "Max retries exceeded" in text or "Connection refused" in text
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
