"""A Delta table as one dataset of a run: choose its version, describe it, read it.

The version identity is (table id, version, digest of the version's file
list); ``md5`` is the md5 of those three, so everything that compares versions
by ``md5`` (stage keys, tags, the nightly check, a reproduction's verdict)
compares Delta versions too. A ``timestamp`` before the first commit silently
loads version 0 in delta-rs, so it is compared with that commit's time. Only
reads: lineageflow never writes to, optimizes or vacuums a table.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import git
import pandas as pd

from lineageflow.data.delta import KIND, DeltaEntry, parse_timestamp
from lineageflow.data.delta_store import (
    commit_time,
    delta_source,
    iso,
    local_path,
    read_ordered,
    recreated,
    schema_of,
    sizes_found,
    storage_options,
    unreachable,
    vacuumed,
)
from lineageflow.engines.partitions import Part
from lineageflow.errors import DataError
from lineageflow.workspace import Workspace


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
        df = read_ordered(table, self.name, version.version, version.nfiles)
        return df, replace(version, rows=len(df), format="delta")

    def partitions(self, version: DeltaVersion) -> list[Part]:
        """The version's files in path order (``read_ordered``'s order), one
        partition each, read by workers through delta-rs at that version."""
        table = self._table(version.uri, version.version)
        frags = sorted(table.to_pyarrow_dataset().get_fragments(), key=lambda f: f.path)
        where = local_path(version.uri)
        options = storage_options(version.uri)
        return [
            Part(self.name, f.path, f.path, "delta", where, version.version, options)
            for f in frags
        ]

    @staticmethod
    def read_files(version: DeltaVersion, md5s: dict) -> DeltaVersion:
        """The version's identity was checked when it was pinned (its files'
        sizes); the partitions' md5s are recorded beside it."""
        return replace(version, format="delta")

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
                local_path(uri), version=version, storage_options=storage_options(uri)
            )
        except Exception as exc:  # noqa: BLE001 - delta-rs raises many kinds
            raise self._why_unreadable(uri, version, exc) from None

    def _why_unreadable(self, uri: str, version: int | None, exc) -> DataError:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        name, opts, where = self.name, storage_options(uri), local_path(uri)
        if uri.startswith("file:") and not Path(where).exists():
            return DataError(
                f"Delta table {name}: {where} does not exist: check the path "
                "in params.yaml (data.datasets)"
            )
        try:  # a log without the asked version also reads as "not found"
            latest = DeltaTable(where, storage_options=opts).version()
        except TableNotFoundError:
            return DataError(
                f"{name} is not a Delta table (no _delta_log there): list a "
                "DVC-tracked path as a plain string, or write the table with deltalake"
            )
        except Exception:  # noqa: BLE001 - unreachable: said below
            latest = None
        if version is not None and latest is not None:
            if version > latest:
                return DataError(
                    f"Delta table {name} has no version {version} (latest is "
                    f"{latest}): set data.datasets version to one that exists"
                )
            return DataError(
                f"Delta table {name} version {version} is no longer in its log "
                f"(its entries expired: delta.logRetentionDuration; latest is "
                f"{latest}): it cannot be read again; keep the log longer"
            )
        return unreachable(name, uri, exc)

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
        present = sizes_found(table, uri, [p for p, _ in listed])
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


def _ignored(root: Path, rel: str) -> bool:
    try:
        git.Repo(root).git.check_ignore("-q", rel.rstrip("/") + "/")
        return True
    except git.GitCommandError:
        return False
