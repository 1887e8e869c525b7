"""Delta Lake tables, the second kind of data source (lineageflow.data.source).

Read with ``deltalake`` (delta-rs: no Spark, no JVM), local or on S3: the
source side is lineageflow.data.delta_table, storage lineageflow.data.delta_store.
This module answers for the ``data`` entries of ``kind: delta`` that runs
recorded: the checks (the recorded version still readable, the same table,
read as listed), the diff, and a reproduction, which reads the recorded version
by time travel.
"""

from __future__ import annotations

from pathlib import Path

from lineageflow.config import DeltaEntry
from lineageflow.data.delta_table import KIND, DeltaTableSource, DeltaVersion
from lineageflow.errors import DataError

__all__ = ["KIND", "DeltaTableSource", "DeltaVersion"]


def schema_change(recorded: dict[str, str], now: dict[str, str]) -> str | None:
    """The first column whose type differs between two schemas, as a phrase."""
    for col, typ in recorded.items():
        if col in now and now[col] != typ:
            return f"column {col!r} was {typ} and is now {now[col]}"
    return None


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
