"""Delta Lake tables, the second kind of data source (lineageflow.data.kinds).

Its params entry is a mapping ``{delta: <path or URI>, version | timestamp}``.
Read with ``deltalake`` (delta-rs: no Spark, no JVM), local or on S3: the
source side is lineageflow.data.delta_table, storage lineageflow.data.delta_store.
The record side answers for the ``data`` entries of ``kind: delta`` that runs
recorded: the checks (the recorded version still readable, the same table,
read as listed), the diff, and a reproduction, which reads the recorded version
by time travel.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator, model_validator

from lineageflow.data.kind import DataKind, Entry, Named
from lineageflow.errors import DataError, RemoteUnreachable

if TYPE_CHECKING:
    from lineageflow.data.delta_table import DeltaTableSource, DeltaVersion
    from lineageflow.workspace import Workspace

KIND = "delta"


class DeltaEntry(Entry):
    """A Delta table as a dataset (lineageflow.data.delta): an absolute path,
    ``file://`` or ``s3://`` URI, or a path relative to the workspace (which
    must then be git-ignored). Neither ``version`` nor ``timestamp``: the latest
    version at run time; the version read is what is recorded."""

    delta: str
    version: Annotated[int, Field(ge=0)] | None = None
    timestamp: str | None = None  # ISO 8601; the last version committed by then

    @field_validator("delta")
    @classmethod
    def _location(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("delta: give the table's path or URI")
        if "://" in v:
            scheme = v.split("://", 1)[0].lower()
            if scheme not in ("file", "s3", "s3a"):
                raise ValueError(
                    f"delta table {v!r}: only local paths, file:// and s3:// are read"
                )
            if "@" in v.split("://", 1)[1].split("/", 1)[0]:
                raise ValueError(
                    f"delta table URI for {v.split('@')[-1]!r} carries credentials: "
                    "put them in the environment (AWS_* or "
                    "LINEAGEFLOW_DELTA_STORAGE_OPTIONS), never in params.yaml"
                )
        elif not Path(v).is_absolute() and ".." in Path(v).parts:
            raise ValueError(f"delta table path {v!r} must stay inside the workspace")
        return v

    @field_validator("timestamp")
    @classmethod
    def _iso(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_timestamp(v)
            except ValueError:
                raise ValueError(
                    f"timestamp {v!r} is not ISO 8601 (e.g. 2026-11-01T00:00:00Z)"
                ) from None
        return v

    @model_validator(mode="after")
    def _one_of(self) -> DeltaEntry:
        if self.version is not None and self.timestamp is not None:
            raise ValueError(
                f"delta table {self.delta!r}: set version or timestamp, not both"
            )
        return self

    @property
    def name(self) -> str:
        return self.delta


def parse_timestamp(v: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (a naive one is UTC)."""
    t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def schema_change(recorded: dict[str, str], now: dict[str, str]) -> str | None:
    """The first column whose type differs between two schemas, as a phrase."""
    for col, typ in recorded.items():
        if col in now and now[col] != typ:
            return f"column {col!r} was {typ} and is now {now[col]}"
    return None


class DeltaKind(DataKind):
    tag = KIND
    entry = DeltaEntry
    shape = "a Delta table ({delta: <path or URI>})"

    # ------------------------------------------------ the params.yaml entry

    def claims(self, raw: Any) -> bool:
        return isinstance(raw, dict | DeltaEntry)

    def check(self, entry: DeltaEntry) -> None:
        """Checked as it is built (DeltaEntry's validators)."""

    def name(self, entry: DeltaEntry) -> str:
        return entry.name

    def open(
        self,
        ws: Workspace | None,
        entry: DeltaEntry,
        remote: str | None,
        expect: dict | None,
    ) -> DeltaTableSource:
        """``expect``: a reproduction reads the recorded version by time travel."""
        # deltalake, pandas and git import slowly, and delta_table imports this module
        from lineageflow.data.delta_table import DeltaTableSource

        return DeltaTableSource(ws, entry, expect)

    def named_at(
        self, ws: Workspace, entry: DeltaEntry, remote: str | None, commit: str
    ) -> Named:
        """Git does not hold a Delta table: the version a run would read now."""
        try:
            v = self.open(ws, entry, None, None).pin()
        except DataError as exc:
            raise DataError(f"{entry.name} at {commit[:12]}: {exc}") from None
        return Named(entry.name, v.md5, v.version)

    # ------------------------------------------ the record's ``data`` entries

    def owns(self, entry: dict) -> bool:
        return entry.get("kind") == KIND

    def _probe(self, entry: dict) -> str | None:
        """Why the recorded version can no longer be read as recorded, or None."""
        src = self.open(None, DeltaEntry(delta=entry["path"]), None, expect=entry)
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

    def at_commit(self, entry: dict, commit: str, ev) -> str | None:
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

    def diff_fields(self, entry: dict) -> dict:
        return {
            "md5": f"v{entry['version']} {entry['md5'][:8]}",
            "bytes": entry.get("size"),
        }

    def version_name(self, entry: dict) -> str:
        return f"v{entry['version']}"

    def pointer(self, entry: dict) -> str:
        return "params.yaml"

    def in_remote(self, entry: dict, root: Path) -> bool:
        return self._probe(entry) is None

    def remote_answers(self, entry: dict, root: Path) -> None:
        """Raise when the table's store did not answer (S3 down or refusing the
        credentials): ``in_remote`` reads that as a version that is gone."""
        src = self.open(None, DeltaEntry(delta=entry["path"]), None, expect=entry)
        try:
            src.pin()
        except RemoteUnreachable:
            raise
        except DataError:
            return

    def not_pushed_fix(self, entry: dict) -> str:
        return self._probe(entry) or (
            f"Delta table {entry['path']} version {entry['version']} is readable again"
        )

    def read_problem(self, entry: dict) -> str | None:
        if entry.get("read_md5") == entry["md5"]:
            return None
        return (
            f"Delta table {entry['path']} version {entry['version']}: the files read "
            "differ from the version's file list (changed in storage under the log): "
            "retrain on a version written by a Delta writer"
        )

    def restored_problem(self, entry: dict, version: DeltaVersion | None) -> str | None:
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

    def restore(self, tree: Path, entries: list[dict], main: Path | None) -> None:
        """Nothing to restore: a reproduction reads the recorded version by time
        travel from the recorded URI (DeltaTableSource.expect)."""
