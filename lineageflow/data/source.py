"""The data-source seam: everything the pipeline knows about a versioned input.

A *source* is one configured input of a run: it pins its version (``pin``),
reads it (``read``), names its part of a stage key (``key_input``) and the
digest of what was read (``read_digest``), its MLflow dataset source, and the
version the workspace names now (``pinned_md5``, for the nightly "nothing
changed" check) or a commit names (``named_at``, for the watch).

A *kind* answers for the ``data`` entries its sources wrote into lineage
records: the checks that concern data (the version at the recorded commit, in
the remote, read as pinned), a reproduction's restore and its verification.
The checks, ``lineageflow diff`` and reproduction reach data only through the
functions below (``lineageflow diff`` its rows: ``data_diff_row``).

The kinds (lineageflow.data.kinds): DVC-tracked files (lineageflow.data.dvc)
and Delta tables (lineageflow.data.delta), each one ``DataKind``
(lineageflow.data.kind). A further kind is one module implementing it, plus its
line in ``KINDS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lineageflow.data.kind import DataKind, Named, Source, Version
from lineageflow.data.kinds import KINDS, kind_for, owner
from lineageflow.errors import DataError
from lineageflow.workspace import Workspace

__all__ = ["Named", "Source", "Version"]


def open_source(
    ws: Workspace,
    entry: Any,
    remote: str | None,
    expect: dict | None = None,
) -> Source:
    """The source of one ``data.datasets`` entry. ``expect``: the recorded
    ``data`` entry a reproduction must read (a Delta table is read at its
    recorded version; DVC files are restored by their pointers)."""
    return kind_for(entry).open(ws, entry, remote, expect)


def named_at(ws: Workspace, entry: Any, remote: str | None, commit: str) -> Named:
    """The version ``entry`` names at ``commit`` (git and the remote only,
    nothing pulled); a Delta table, which git does not hold: its version now."""
    return kind_for(entry).named_at(ws, entry, remote, commit)


def kind_of(entry: dict) -> DataKind:
    """The kind that wrote a record's ``data`` entry."""
    kind = owner(entry)
    if kind is not None:
        return kind
    raise DataError(
        f"data entry {entry.get('path')!r} is of no known kind "
        f"({', '.join(KINDS)}): upgrade lineageflow to read it"
    )


def at_commit_mismatches(record: dict, ev) -> list[str]:
    """Each entry whose version differs from what its pointer names at the
    recorded commit, as "path md5 X != pointer at C (Y)"."""
    commit = record["workspace"]["commit"]
    bad = []
    for d in record["data"]:
        kind = kind_of(d)
        at_commit = kind.at_commit(d, commit, ev)
        if at_commit != d["md5"]:
            bad.append(
                f"{d['path']} md5 {d['md5'][:12]} != {kind.pointer(d)} at "
                f"{commit[:12]} ({(at_commit or 'missing')[:12]})"
            )
    return bad


def not_in_remote(record: dict, ev) -> list[dict]:
    return [d for d in record["data"] if not ev.in_remote(d)]


def in_remote(entry: dict, root: Path) -> bool:
    return kind_of(entry).in_remote(entry, root)


def remote_answers(entry: dict, root: Path) -> None:
    kind_of(entry).remote_answers(entry, root)


def missing(entry: dict, root: Path) -> str | None:
    return kind_of(entry).missing(entry, root)


def not_pushed_fix(entry: dict) -> str:
    return kind_of(entry).not_pushed_fix(entry)


def read_problems(record: dict) -> list[str]:
    found = (kind_of(d).read_problem(d) for d in record["data"])
    return [p for p in found if p]


def data_diff_row(a: dict | None, b: dict | None) -> dict:
    """One input's row in ``lineageflow diff``: its version identity in each run
    (``md5``: the kind's version digest) and its size."""
    side = [_diff_fields(d) if d else {} for d in (a, b)]
    return {k: [side[0].get(k), side[1].get(k)] for k in ("md5", "bytes")}


def version_of(entry: dict) -> str | None:
    """A record entry's version name beside its md5 (a Delta table's ``v3``;
    None for a DVC file, whose md5 is its version)."""
    kind = owner(entry)
    return kind.version_name(entry) if kind else None


def _diff_fields(entry: dict) -> dict:
    # a diff shows what it can of an entry no kind here owns (a newer kind)
    kind = owner(entry)
    if kind is None:
        return {"md5": entry.get("md5"), "bytes": entry.get("size")}
    return kind.diff_fields(entry)


def restore(tree: Path, record: dict, main: Path | None) -> None:
    """Make ``tree`` (a worktree or clone at the recorded commit) able to read
    every recorded data version."""
    for kind in KINDS.values():
        entries = [d for d in record["data"] if kind.owns(d)]
        if entries:
            kind.restore(tree, entries, main)


def share_data(tree: Path, main: Path) -> None:
    """Let a worktree of the workspace at another commit read its data through
    the main repo's DVC cache and remote settings (nothing pulled twice): each
    kind's restore of no recorded entries."""
    for kind in KINDS.values():
        kind.restore(tree, [], main)


def verify_restored(expected: list[dict], got) -> None:
    """A reproduction must read exactly the recorded data versions."""
    have = {v.path: v for v in got}
    for d in expected:
        problem = kind_of(d).restored_problem(d, have.get(d["path"]))
        if problem:
            raise DataError(problem)
