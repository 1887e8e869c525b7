"""What a kind of versioned data declares (its registry: lineageflow.data.kinds).

A kind answers for two things. Its ``data.datasets`` entries in params.yaml: the
entry's type (config builds its union of every kind's), how an entry is opened
as a ``Source`` (which pins, reads and describes a version), its name, and the
version it names at a commit. And the ``data`` entries its sources wrote into
lineage records: what the checks, ``lineageflow diff`` and a reproduction read.

A kind's module must import cheaply (config imports it for the entry type):
DVC, deltalake and pandas are imported by its helpers, when a source is opened.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import pandas as pd

    from lineageflow.workspace import Workspace


class Entry(BaseModel):
    """Base of a kind's entry model: a typo is an error, an entry is a value."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


@dataclass(frozen=True)
class Named:
    """The version a commit names for one dataset, and whether its remote has it."""

    name: str
    md5: str
    version: int | None = None  # a Delta table's; None for DVC (the md5 is it)
    pushed: bool = True


class Version(Protocol):
    """A pinned version of one dataset, as pull_data records it."""

    path: str
    md5: str  # the version identity every comparison uses
    read_md5: str  # the same identity, of what was actually read
    size: int | None
    action: str
    format: str | None

    def params(self) -> dict: ...

    def as_record(self) -> dict: ...


class Source(Protocol):
    """One opened ``data.datasets`` entry: pins its version, then reads it."""

    name: str

    def validate(self) -> None: ...

    def pin(self) -> Version: ...

    def key_input(self, version: Any) -> dict[str, str]: ...

    def read(self, version: Any) -> tuple[pd.DataFrame, Version]: ...

    def read_digest(self, version: Any) -> str: ...

    def mlflow_dataset(self, version: Any) -> tuple[str, Any]: ...

    def pinned_md5(self) -> str | None: ...


class DataKind(ABC):
    """One kind of versioned data. ``tag``: its name in the entry union and in
    ``KINDS``; ``entry``: the type of its params entry; ``shape``: that entry as
    the error for an entry of no kind describes it."""

    tag: ClassVar[str]
    entry: ClassVar[type]
    shape: ClassVar[str]

    # ------------------------------------------------ the params.yaml entry

    @abstractmethod
    def claims(self, raw: Any) -> bool:
        """Whether a params value (raw, or an entry already built) is this kind's."""

    @abstractmethod
    def check(self, entry: Any) -> None:
        """Refuse (ValueError) an entry that parses but cannot be a dataset."""

    @abstractmethod
    def name(self, entry: Any) -> str:
        """The name a dataset goes by (its tags, its record's ``path``)."""

    @abstractmethod
    def open(
        self, ws: Workspace | None, entry: Any, remote: str | None, expect: dict | None
    ) -> Source:
        """The source of ``entry``; ``expect``: the recorded ``data`` entry a
        reproduction must read."""

    @abstractmethod
    def named_at(
        self, ws: Workspace, entry: Any, remote: str | None, commit: str
    ) -> Named:
        """The version ``entry`` names at ``commit`` (nothing pulled)."""

    # ------------------------------------------ the record's ``data`` entries

    @abstractmethod
    def owns(self, entry: dict) -> bool:
        """Whether a record's ``data`` entry was written by this kind."""

    @abstractmethod
    def at_commit(self, entry: dict, commit: str, ev) -> str | None:
        """The md5 the recorded commit names for ``entry`` (or what it names
        instead); ``ev``: the git evidence (lineageflow.lineage.evidence)."""

    @abstractmethod
    def pointer(self, entry: dict) -> str:
        """The committed file that names the version (for messages)."""

    @abstractmethod
    def in_remote(self, entry: dict, root: Path) -> bool:
        """Whether someone else could read the recorded version now."""

    def remote_answers(self, entry: dict, root: Path) -> None:
        """Raise (one line) when the remote ``in_remote`` asked did not answer,
        so a remote that is down is not taken for a version that is gone. By
        default ``in_remote`` already raises or says why (a Delta probe)."""
        return None

    def missing(self, entry: dict, root: Path) -> str | None:
        """What exactly of the recorded version the remote lacks, and its fix,
        when ``not_pushed_fix`` would not say (a DVC directory missing some
        of its files); None: ``not_pushed_fix`` says it."""
        return None

    @abstractmethod
    def not_pushed_fix(self, entry: dict) -> str:
        """What to do when ``in_remote`` is False."""

    @abstractmethod
    def read_problem(self, entry: dict) -> str | None:
        """Why what was read is not the version recorded, or None."""

    @abstractmethod
    def diff_fields(self, entry: dict) -> dict:
        """Its row in ``lineageflow diff``: ``md5`` and ``bytes``."""

    @abstractmethod
    def version_name(self, entry: dict) -> str | None:
        """A version name beside the md5 (None: the md5 is the version)."""

    @abstractmethod
    def restore(self, tree: Path, entries: list[dict], main: Path | None) -> None:
        """Make ``tree`` (a checkout of the recorded commit) able to read ``entries``."""

    @abstractmethod
    def restored_problem(self, entry: dict, version: Any) -> str | None:
        """Why a reproduction did not read exactly the recorded version, or None."""
