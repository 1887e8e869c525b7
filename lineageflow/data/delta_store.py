"""Where Delta tables are stored, and the delta-rs facts lineageflow works around.

Storage options come from the environment (never from params.yaml, never into
a record); every wait is bounded. After ``VACUUM`` the log still lists a
version whose files are gone (a read raises a raw FileNotFoundError), so the
files are looked up first; a version's commit time is read from its log entry.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pandas as pd

from lineageflow.errors import DataError, RemoteUnreachable

OPTIONS_ENV = "LINEAGEFLOW_DELTA_STORAGE_OPTIONS"
VACUUM_ADVICE = (
    "keep the versions you may reproduce with `vacuum(keep_versions=[...])` or a "
    "longer `delta.deletedFileRetentionDuration`"
)


def storage_options(uri: str) -> dict[str, str] | None:
    """delta-rs options for ``uri``: ``$LINEAGEFLOW_DELTA_STORAGE_OPTIONS`` (JSON),
    else what the AWS_* environment says, with bounded waits. Never recorded."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    opts: dict[str, str] = {}
    raw = os.environ.get(OPTIONS_ENV)
    if raw:
        try:
            opts = {str(k): str(v) for k, v in json.loads(raw).items()}
        except (ValueError, AttributeError):
            raise DataError(
                f"${OPTIONS_ENV} is not a JSON object of strings: fix it "
                '(e.g. {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})'
            ) from None
    keys = {k.upper() for k in opts}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
        "AWS_ENDPOINT_URL"
    )
    if endpoint and "AWS_ENDPOINT_URL" not in keys and "AWS_ENDPOINT" not in keys:
        opts["AWS_ENDPOINT_URL"] = endpoint
    if opts.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        opts.setdefault("AWS_ALLOW_HTTP", "true")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region and "AWS_REGION" not in keys:
        opts["AWS_REGION"] = region
    # an unreachable store answers within seconds, not after minutes of retries
    for k, v in (
        ("timeout", "60s"),
        ("connect_timeout", "5s"),
        ("max_retries", "2"),
        ("retry_timeout", "15s"),
    ):
        opts.setdefault(k, v)
    return opts


def endpoint_of(uri: str) -> str:
    opts = storage_options(uri) or {}
    return opts.get("AWS_ENDPOINT_URL") or opts.get("AWS_ENDPOINT") or "AWS S3"


def unreachable(name: str, uri: str, exc: Exception) -> DataError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    if uri.startswith(("s3://", "s3a://")):
        text = str(exc)
        refused = any(
            s in text
            for s in (
                "403",
                "Forbidden",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
            )
        )
        why = "refused the credentials" if refused else "could not be reached"
        fix = (
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            if refused
            else "start it or fix AWS_ENDPOINT_URL"
        )
        return RemoteUnreachable(
            f"Delta table {name}: S3 endpoint {endpoint_of(uri)} {why} ({first}): {fix}"
        )
    return DataError(f"Delta table {name} could not be read ({first}): check the path")


def local_path(uri: str) -> str:
    """delta-rs takes a local table as its path."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri


def sizes_found(table, uri: str, paths: list[str]) -> dict[str, int | None]:
    """Each listed file's size in storage (None: gone, e.g. vacuumed)."""
    from deltalake.fs import DeltaStorageHandler
    from pyarrow.fs import FileType

    handler = DeltaStorageHandler(table.table_uri, storage_options(uri))
    try:
        infos = handler.get_file_info(paths)
    except Exception as exc:  # noqa: BLE001
        raise unreachable(uri, uri, exc) from None
    return {
        p: (i.size if i.type == FileType.File else None)
        for p, i in zip(paths, infos, strict=True)
    }


def commit_time(table, uri: str, version: int) -> datetime | None:
    """When ``version`` was committed (its commitInfo), or None when the log no
    longer holds its JSON (a checkpointed, expired entry)."""
    from deltalake.fs import DeltaStorageHandler

    handler = DeltaStorageHandler(table.table_uri, storage_options(uri))
    try:
        with handler.open_input_stream(f"_delta_log/{version:020d}.json") as fh:
            for line in fh.read().decode().splitlines():
                info = json.loads(line).get("commitInfo") if line.strip() else None
                if info and "timestamp" in info:
                    return datetime.fromtimestamp(info["timestamp"] / 1000, UTC)
    except (OSError, ValueError):
        return None
    return None


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def schema_of(table) -> dict[str, str]:
    import pyarrow as pa

    return {f.name: str(f.type) for f in pa.schema(table.schema().to_arrow())}


def read_ordered(table, name: str, version: int, nfiles: int) -> pd.DataFrame:
    """The version's rows, its files read in path order: the same version reads
    as the same frame whatever order the log (or a checkpoint) lists them in."""
    import pyarrow.dataset as pads

    try:
        ds = table.to_pyarrow_dataset()
        frags = sorted(ds.get_fragments(), key=lambda f: f.path)
        ordered = pads.FileSystemDataset(frags, ds.schema, ds.format, ds.filesystem)
        return ordered.to_table().to_pandas()
    except FileNotFoundError:
        raise DataError(vacuumed(name, version, None, nfiles)) from None
    except Exception as exc:  # noqa: BLE001 - e.g. deletion vectors, unknown features
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(
            f"Delta table {name} version {version} could not be read "
            f"({first}): lineageflow reads tables delta-rs can read as Arrow"
        ) from None


def vacuumed(name: str, version: int, missing: int | None, total: int) -> str:
    some = f"{missing} of its {total}" if missing is not None else "some of its"
    return (
        f"Delta table {name} version {version} cannot be read: VACUUM removed "
        f"{some} files; {VACUUM_ADVICE}"
    )


def recreated(entry: dict, found_id: str) -> str:
    return (
        f"Delta table {entry['path']} is not the recorded table (id "
        f"{found_id[:8]}, recorded {entry['table_id'][:8]}): it was deleted and "
        "re-created, so the recorded version is gone; retrain on the new table"
    )


def delta_source(version):
    """The MLflow dataset source of a pinned Delta version (DeltaVersion)."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource

    class _Source(DeltaDatasetSource):
        # MLflow's to_dict() drops a version 0 and a non-Unity-Catalog table id
        def to_dict(self):
            d = super().to_dict()
            d["delta_table_version"] = self.delta_table_version
            if self.delta_table_id:
                d["delta_table_id"] = self.delta_table_id
            return d

    return _Source(
        path=version.uri,
        delta_table_version=version.version,
        delta_table_id=version.table_id,
    )
