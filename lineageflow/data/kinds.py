"""The registry of data kinds: adding a kind is its module and one line here.

config builds the union of ``data.datasets`` entries from ``KINDS`` (its keys
are the union's tags), lineageflow.data.source opens entries and answers for
record entries through it. The order is the order kinds are asked.
"""

from __future__ import annotations

from typing import Any

from lineageflow.data.delta import DeltaKind
from lineageflow.data.dvc import DvcKind
from lineageflow.data.kind import DataKind

KINDS: dict[str, DataKind] = {
    "dvc": DvcKind(),
    "delta": DeltaKind(),
}


def tag_of(raw: Any) -> str | None:
    """The kind a params value is (the union's discriminator); None: no kind."""
    return next((tag for tag, kind in KINDS.items() if kind.claims(raw)), None)


def kind_for(entry: Any) -> DataKind:
    """The kind of a ``data.datasets`` entry (validated by config: it has one)."""
    return KINDS[tag_of(entry)]


def dataset_name(entry: Any) -> str:
    """The name a dataset goes by: its DVC path, or its Delta table location."""
    return kind_for(entry).name(entry)


def owner(record_entry: dict) -> DataKind | None:
    """The kind that wrote a record's ``data`` entry, None for a newer kind."""
    return next((k for k in KINDS.values() if k.owns(record_entry)), None)
