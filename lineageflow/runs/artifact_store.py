"""The MLflow artifact store, read: where a stored thing lives (and a workspace's
store whose artifacts lie outside it, refused), a download of it from the store
at a given tracking URI (and only that store), and a stored file's bytes
refused unless they have the recorded digest.

``runs:/`` and ``models:/NAME/N`` are resolved by a client on the given tracking
URI: ``mlflow.artifacts.download_artifacts("models:/NAME/N", tracking_uri=X,
registry_uri=X)`` resolves the version in the process-wide registry, not X.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking.artifact_utils import get_artifact_uri

from lineageflow.errors import WorkspaceError
from lineageflow.lineage.record import verify_input
from lineageflow.runs.store import client


def artifact_location(uri: str, tracking_uri: str | None = None) -> str:
    """A ``runs:/RUN/PATH`` URI as the artifact store's own URI (file://, s3://,
    mlflow-artifacts:/): MLflow's dataset sources resolve those, not ``runs:/``,
    and without a source a Datasets panel names the Python script instead."""
    if not uri.startswith("runs:/"):
        return uri

    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    return get_artifact_uri(run_id, path, tracking_uri=tracking_uri)


def model_location(model_uri: str, tracking_uri: str | None) -> str:
    """Where a model's files are stored: a logged model's (``models:/m-...``)
    artifact location; any other model URI as it is."""
    if not model_uri.startswith("models:/m-"):
        return model_uri
    model_id = model_uri.removeprefix("models:/")
    return client(tracking_uri).get_logged_model(model_id).artifact_location


def files_at(uri: str, tracking_uri: str) -> str:
    """Where the files of ``runs:/RUN/PATH``, ``models:/NAME/N`` or a logged
    model are, as the artifact store's own URI (file://, s3://, mlflow-artifacts:/)."""
    if uri.startswith("models:/") and not uri.startswith("models:/m-"):
        name, _, version = uri.removeprefix("models:/").rpartition("/")
        return client(tracking_uri).get_model_version_download_uri(name, version)
    return model_location(artifact_location(uri, tracking_uri), tracking_uri)


def locations(uris: list[str | None], tracking_uri: str) -> list[str]:
    """``files_at`` of each URI given; one MLflow cannot resolve is left out
    (its download says why)."""
    found = []
    for uri in filter(None, uris):
        try:
            found.append(files_at(uri, tracking_uri))
        except MlflowException:
            continue
    return found


def local_path(location: str) -> Path | None:
    """A ``file://`` (or bare path) location as a path; None for any other store."""
    p = urlparse(location)
    if p.scheme not in ("", "file"):
        return None
    return Path(unquote(p.path))


def read_from(locations: list[str]) -> str | None:
    """What a person is told the files were read from: the folder local
    locations share, else the first location."""
    if not locations:
        return None
    paths = [local_path(x) for x in locations]
    if all(paths):
        return os.path.commonpath([str(p) for p in paths])
    return locations[0]


def refuse_outside(tracking_uri: str, workspace: Path, locations: list[str]) -> None:
    """A workspace's own store (its sqlite file inside it) must keep its artifacts
    inside it too. A copied workspace's ``mlflow.db`` names the original's
    absolute artifact paths: what is read there is the original's files, not the
    copy's, so it is refused in one line. A server's store (http, proxied
    artifacts) or a store outside the workspace is not the workspace's to judge."""
    if urlparse(tracking_uri).scheme != "sqlite":
        return
    root = workspace.resolve()
    db = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
    if not db.is_relative_to(root):
        return
    away = [
        str(p)
        for p in map(local_path, locations)
        if p is not None and not p.resolve().is_relative_to(root)
    ]
    if away:
        raise WorkspaceError(
            f"workspace {root}'s MLflow store ({db.relative_to(root)}) records its "
            f"artifacts outside it, at {read_from(away)} (a copied workspace's "
            f"{db.name} keeps the original's absolute paths): verify would read "
            "those files, not this workspace's; verify the workspace that holds "
            "them, or retrain here for a store of its own"
        )


def download(uri: str, tracking_uri: str | None, dst: Path) -> Path:
    """``runs:/RUN/PATH``, ``models:/NAME/N`` (or ``NAME@ALIAS``) or a storage URI,
    downloaded into ``dst`` from the store at ``tracking_uri``, and only that
    store: MLflow's own ``runs:/``/``models:/`` resolution may ask the
    process-wide one instead. None: MLflow's configured store."""
    dst.mkdir(parents=True, exist_ok=True)
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        return Path(client(tracking_uri).download_artifacts(run_id, path, str(dst)))
    if uri.startswith("models:/") and not uri.startswith("models:/m-"):
        c = client(tracking_uri)
        name, _, version = uri.removeprefix("models:/").rpartition("/")
        if not name and "@" in version:  # models:/NAME@ALIAS
            name, _, alias = version.rpartition("@")
            version = str(c.get_model_version_by_alias(name, alias).version)
        uri = c.get_model_version_download_uri(name, version)
    if uri.startswith("models:/m-"):
        # a logged model by id: MLflow's models:/ repository looks the id up in
        # the process-wide store whatever tracking_uri says (measured, 3.17)
        model_id, _, path = uri.removeprefix("models:/").partition("/")
        where = model_location(f"models:/{model_id}", tracking_uri)
        uri = where + (f"/{path}" if path else "")
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri
        )
    )


def read_bytes(uri: str, tracking_uri: str | None) -> bytes:
    """A stored file's bytes, through a temporary download."""
    with tempfile.TemporaryDirectory() as tmp:
        return download(uri, tracking_uri, Path(tmp)).read_bytes()


def sha256(uri: str, tracking_uri: str | None) -> str:
    """sha256 of a stored file as the store holds it."""
    return hashlib.sha256(read_bytes(uri, tracking_uri)).hexdigest()


def verified_bytes(
    uri: str, digest: str | None, stage: str, name: str, tracking_uri: str | None
) -> bytes:
    """A stored file's bytes, refused (``stage refused input name``) unless their
    sha256 is the recorded ``digest``."""
    data = read_bytes(uri, tracking_uri)
    verify_input(stage, name, hashlib.sha256(data).hexdigest(), digest)
    return data
