"""Delta Lake tables, the second kind of data source (lineageflow.data.source).

Read with ``deltalake`` (delta-rs: no Spark, no JVM), local or on S3. A
table's version identity is (table id, version, digest of the version's file
list); ``md5`` is the md5 of those three, so everything that compares
versions by ``md5`` (stage keys, tags, the nightly check, a reproduction's
verdict) compares Delta versions too. lineageflow only reads: it never writes
to, optimizes or vacuums a table.

Two delta-rs facts shape this module: after ``VACUUM`` the log still lists a
version whose files are gone (reading it raises a raw FileNotFoundError), so
the files are checked before a read; and a ``timestamp`` before the first
commit silently loads version 0, so it is compared with that commit's time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import git
import pandas as pd

from lineageflow.config import DeltaEntry, parse_timestamp
from lineageflow.errors import DataError
from lineageflow.workspace import Workspace

KIND = "delta"
OPTIONS_ENV = "LINEAGEFLOW_DELTA_STORAGE_OPTIONS"
VACUUM_ADVICE = (
    "keep the versions you may reproduce with `vacuum(keep_versions=[...])` or a "
    "longer `delta.deletedFileRetentionDuration`"
)


@dataclass(frozen=True)
class DeltaVersion:
    path: str  # the table as params.yaml names it (the dataset's name)
    uri: str  # where it was read (absolute; no credentials)
    version: int
    timestamp: str | None  # the version's commit time, ISO 8601 UTC
    table_id: str  # metadata().id: a table re-created at the same path differs
    files_digest: str  # sha256 of the version's file list (path, size)
    nfiles: int
    size: int
    schema: dict[str, str]  # column -> Arrow type at that version
    md5: str  # md5 of (table id, version, files digest): the version identity
    read_md5: str  # the same identity, of the files as found when read
    action: str  # how it was chosen: latest | version | timestamp | recorded
    rows: int | None = None
    format: str | None = None  # "delta", once read
    kind: str = KIND
    remote: None = None
    in_remote: bool = True  # readable by anyone with access, when recorded

    def as_record(self) -> dict:
        d = asdict(self)
        d.pop("action")
        return d

    def params(self) -> dict:
        """What pull_data logs as MLflow params."""
        return {
            "delta_version": self.version,
            "delta_table_id": self.table_id,
            "delta_files_digest": self.files_digest[:16],
        }


def identity(table_id: str, version: int, files_digest: str) -> str:
    return hashlib.md5(f"{table_id}@{version}:{files_digest}".encode()).hexdigest()


def files_digest(files: list[tuple[str, int]]) -> str:
    lines = "".join(f"{p}\t{s}\n" for p, s in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


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


def _unreachable(name: str, uri: str, exc: Exception) -> DataError:
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
        return DataError(
            f"Delta table {name}: S3 endpoint {endpoint_of(uri)} {why} ({first}): {fix}"
        )
    return DataError(f"Delta table {name} could not be read ({first}): check the path")


@dataclass(frozen=True)
class DeltaTableSource:
    """One ``{delta: ...}`` entry of ``data.datasets``. ``expect``: the recorded
    entry a reproduction must read (its version, by time travel)."""

    ws: Workspace
    entry: DeltaEntry
    expect: dict | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.entry.delta

    def location(self) -> str:
        """The table's absolute URI (a relative path is inside the workspace and
        must be git-ignored: its files are not the commit's)."""
        if self.expect is not None:
            return self.expect["uri"]
        loc = self.entry.delta
        if loc.startswith("s3a://"):
            return "s3://" + loc.removeprefix("s3a://")
        if "://" in loc:
            return loc
        path = Path(loc)
        if not path.is_absolute():
            root = self.ws.root.resolve()
            path = (root / loc).resolve()
            if not path.is_relative_to(root):
                raise DataError(
                    f"Delta table {loc} resolves outside the workspace: give an "
                    "absolute path or URI"
                )
            if path.exists() and not _ignored(self.ws.root, loc):
                raise DataError(
                    f"Delta table {loc} is inside the workspace but not git-ignored "
                    f"(its files would make the tree dirty): add '{loc}/' to .gitignore"
                )
        return path.as_uri()

    def validate(self) -> None:
        self.location()

    def pin(self) -> DeltaVersion:
        """The version to read: the recorded one (a reproduction), the one
        params.yaml names, or the latest; its files checked present."""
        uri = self.location()
        table, action = self._open(uri)
        return self._describe(uri, table, action)

    def key_input(self, version: DeltaVersion) -> dict[str, str]:
        return {
            "name": self.name,
            "digest": f"delta:{version.table_id}@{version.version}:"
            f"{version.files_digest}",
        }

    def read(self, version: DeltaVersion) -> tuple[pd.DataFrame, DeltaVersion]:
        table = self._table(version.uri, version.version)
        df = _read_ordered(table, self.name, version)
        return df, replace(version, rows=len(df), format="delta")

    @staticmethod
    def read_digest(version: DeltaVersion) -> str:
        return f"md5:{version.read_md5}"

    def mlflow_dataset(self, version: DeltaVersion):
        """(name, source) of its MLflow dataset: named with its version, as
        ``DeltaDatasetSource.to_dict()`` drops a version 0."""
        return f"{self.name}@v{version.version}", delta_source(version)

    def pinned_md5(self) -> str | None:
        """The identity of the version a run would read now (nightly check)."""
        try:
            return self.pin().md5
        except DataError:
            return None

    # ----------------------------------------------------------------- internals

    def _table(self, uri: str, version: int | None = None):
        from deltalake import DeltaTable

        try:
            return DeltaTable(
                _local(uri), version=version, storage_options=storage_options(uri)
            )
        except Exception as exc:  # noqa: BLE001 - delta-rs raises many kinds
            raise self._why_unreadable(uri, version, exc) from None

    def _why_unreadable(self, uri: str, version: int | None, exc) -> DataError:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        name, opts = self.name, storage_options(uri)
        if isinstance(exc, TableNotFoundError) or (
            uri.startswith("file:") and not Path(_local(uri)).exists()
        ):
            local = _local(uri)
            if uri.startswith("file:") and not Path(local).exists():
                return DataError(
                    f"Delta table {name}: {local} does not exist: check the path "
                    "in params.yaml (data.datasets)"
                )
            if uri.startswith("file:") or "NotFound" in type(exc).__name__:
                return DataError(
                    f"{name} is not a Delta table (no _delta_log there): list a "
                    "DVC-tracked path as a plain string, or write the table with deltalake"
                )
        if version is not None and not isinstance(exc, OSError):
            try:
                latest = DeltaTable(_local(uri), storage_options=opts).version()
            except Exception:  # noqa: BLE001
                latest = None
            if latest is not None and version > latest:
                return DataError(
                    f"Delta table {name} has no version {version} (latest is "
                    f"{latest}): set data.datasets version to one that exists"
                )
            if latest is not None:
                return DataError(
                    f"Delta table {name} version {version} is no longer in its log "
                    f"(log retention expired; latest is {latest}): it cannot be read "
                    f"again; {VACUUM_ADVICE} and a longer delta.logRetentionDuration"
                )
        return _unreachable(name, uri, exc)

    def _open(self, uri: str):
        """The table at the version to read, and how that version was chosen."""
        if self.expect is not None:
            table = self._table(uri, int(self.expect["version"]))
            if table.metadata().id != self.expect["table_id"]:
                raise DataError(recreated(self.expect, table.metadata().id))
            return table, "recorded"
        if self.entry.version is not None:
            return self._table(uri, self.entry.version), "version"
        table = self._table(uri)
        if self.entry.timestamp is None:
            return table, "latest"
        at = parse_timestamp(self.entry.timestamp)
        try:
            table.load_as_version(at)
        except Exception as exc:  # noqa: BLE001
            raise self._why_unreadable(uri, None, exc) from None
        first = commit_time(table, uri, table.version())
        if first is not None and first > at:  # delta-rs falls back to version 0
            raise DataError(
                f"Delta table {self.name}: timestamp {self.entry.timestamp} is before "
                f"its version {table.version()} (committed {iso(first)}): use a later "
                "timestamp or a version"
            )
        return table, "timestamp"

    def _describe(self, uri: str, table, action: str) -> DeltaVersion:
        import pyarrow as pa

        v = table.version()
        adds = pa.table(table.get_add_actions(flatten=False))  # arro3 -> pyarrow
        listed = list(
            zip(
                adds.column("path").to_pylist(),
                adds.column("size_bytes").to_pylist(),
                strict=True,
            )
        )
        present = _sizes_found(table, uri, [p for p, _ in listed])
        missing = [p for p, _ in listed if present.get(p) is None]
        if missing:
            raise DataError(vacuumed(self.name, v, len(missing), len(listed)))
        counts = adds.column("num_records").to_pylist()
        tid = table.metadata().id
        digest = files_digest(listed)
        found = files_digest([(p, present[p]) for p, _ in listed])
        when = commit_time(table, uri, v)
        return DeltaVersion(
            path=self.name,
            uri=uri,  # params.yaml and its URIs carry no credentials
            version=v,
            timestamp=iso(when) if when else None,
            table_id=tid,
            files_digest=digest,
            nfiles=len(listed),
            size=sum(s for _, s in listed),
            schema=schema_of(table),
            md5=identity(tid, v, digest),
            read_md5=identity(tid, v, found),
            action=action,
            rows=sum(counts) if counts and None not in counts else None,
        )


def _local(uri: str) -> str:
    """delta-rs takes a local table as its path."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri


def _ignored(root: Path, rel: str) -> bool:
    try:
        git.Repo(root).git.check_ignore("-q", rel.rstrip("/") + "/")
        return True
    except git.GitCommandError:
        return False


def _sizes_found(table, uri: str, paths: list[str]) -> dict[str, int | None]:
    """Each listed file's size in storage (None: gone, e.g. vacuumed)."""
    from deltalake.fs import DeltaStorageHandler
    from pyarrow.fs import FileType

    handler = DeltaStorageHandler(table.table_uri, storage_options(uri))
    try:
        infos = handler.get_file_info(paths)
    except Exception as exc:  # noqa: BLE001
        raise _unreachable(uri, uri, exc) from None
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


def _read_ordered(table, name: str, version: DeltaVersion) -> pd.DataFrame:
    """The version's rows, its files read in path order: the same version reads
    as the same frame whatever order the log (or a checkpoint) lists them in."""
    import pyarrow.dataset as pads

    try:
        ds = table.to_pyarrow_dataset()
        frags = sorted(ds.get_fragments(), key=lambda f: f.path)
        ordered = pads.FileSystemDataset(frags, ds.schema, ds.format, ds.filesystem)
        return ordered.to_table().to_pandas()
    except FileNotFoundError:
        raise DataError(vacuumed(name, version.version, None, version.nfiles)) from None
    except Exception as exc:  # noqa: BLE001 - e.g. deletion vectors, unknown features
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(
            f"Delta table {name} version {version.version} could not be read "
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


def delta_source(version: DeltaVersion):
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


def schema_change(recorded: dict[str, str], now: dict[str, str]) -> str | None:
    """The first column whose type differs between two schemas, as a phrase."""
    for col, typ in recorded.items():
        if col in now and now[col] != typ:
            return f"column {col!r} was {typ} and is now {now[col]}"
    return None


# ---------------------------------------------------------------- record side


def owns(entry: dict) -> bool:
    return entry.get("kind") == KIND


def _probe(entry: dict) -> str | None:
    """Why the recorded version can no longer be read as recorded, or None."""
    src = DeltaTableSource(None, DeltaEntry(delta=entry["path"]), expect=entry)
    try:
        v = src.pin()
    except DataError as exc:
        return str(exc)
    if v.md5 != entry["md5"]:
        return (
            f"Delta table {entry['path']} version {entry['version']} lists other "
            "files than recorded (its log was rewritten): retrain"
        )
    change = schema_change(entry.get("schema") or {}, v.schema)
    if change:
        return f"Delta table {entry['path']} version {entry['version']}: {change}"
    return None


def at_commit(entry: dict, commit: str, ev) -> str | None:
    """The entry's md5 when params.yaml at ``commit`` lists this table (and the
    same version, when it pins one); else what it names instead."""
    text = ev.file_at(commit, "params.yaml")
    if text is None:
        return None
    import yaml

    try:
        doc = yaml.safe_load(text) or {}
        listed = (doc.get("data") or {}).get("datasets") or []
    except (yaml.YAMLError, AttributeError):
        return None
    for d in listed:
        if isinstance(d, dict) and d.get("delta") == entry["path"]:
            pinned = d.get("version")
            if pinned is not None and int(pinned) != entry["version"]:
                return f"version {pinned}"
            return entry["md5"]
    return None


def diff_fields(entry: dict) -> dict:
    return {
        "md5": f"v{entry['version']} {entry['md5'][:8]}",
        "bytes": entry.get("size"),
    }


def version_name(entry: dict) -> str:
    return f"v{entry['version']}"


def pointer(entry: dict) -> str:
    return "params.yaml"


def in_remote(entry: dict, root: Path) -> bool:
    return _probe(entry) is None


def not_pushed_fix(entry: dict) -> str:
    return _probe(entry) or (
        f"Delta table {entry['path']} version {entry['version']} is readable again"
    )


def read_problem(entry: dict) -> str | None:
    if entry.get("read_md5") == entry["md5"]:
        return None
    return (
        f"Delta table {entry['path']} version {entry['version']}: the files read "
        "differ from the version's file list (changed in storage under the log): "
        "retrain on a version written by a Delta writer"
    )


def restored_problem(entry: dict, version: DeltaVersion | None) -> str | None:
    v = version
    if v is None:
        return f"recorded Delta table {entry['path']} was not read"
    if v.md5 == entry["md5"] and v.read_md5 == entry["md5"]:
        change = schema_change(entry.get("schema") or {}, v.schema)
        if change:
            return (
                f"Delta table {entry['path']} version {entry['version']}: {change}: "
                "the recorded data cannot be read as it was"
            )
        return None
    return (
        f"recorded Delta table {entry['path']} version {entry['version']} "
        f"(md5 {entry['md5'][:12]}) read as version {v.version} (md5 {v.md5[:12]})"
    )


def restore(tree: Path, entries: list[dict], main: Path | None) -> None:
    """Nothing to restore: a reproduction reads the recorded version by time
    travel from the recorded URI (DeltaTableSource.expect)."""
