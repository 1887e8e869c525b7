"""DVC-tracked files, the first kind of data source (lineageflow.data.kinds).

Its params entry is a plain string: a path the workspace tracks with a ``.dvc``
file. Opened, it is a lineageflow.data.dvc_files.DvcFile (pulled and read
through DVC's Python API); what a pointer names at a commit and whether a
remote holds it: lineageflow.data.dvc_pointer. The record side (``owns`` ...
``restore``) answers for the ``data`` entries this kind wrote: the checks, the
diff and a reproduction read them through lineageflow.data.source.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lineageflow.data.kind import DataKind, Named

if TYPE_CHECKING:
    from lineageflow.data.dvc_files import DataVersion, DvcFile
    from lineageflow.workspace import Workspace

KIND = "dvc"


def _heavy():
    """(dvc_files, dvc_pointer), imported when a DVC file is first opened or
    looked up: config imports this module, and DVC's import is slow (~1 s)."""
    from lineageflow.data import dvc_files, dvc_pointer  # lazy: see the docstring

    return dvc_files, dvc_pointer


class DvcKind(DataKind):
    tag = KIND
    entry = str
    shape = "a DVC-tracked path (a string)"

    # ------------------------------------------------ the params.yaml entry

    def claims(self, raw: Any) -> bool:
        return isinstance(raw, str)

    def check(self, entry: str) -> None:
        pure = Path(entry)
        if pure.is_absolute() or ".." in pure.parts or entry.strip() in ("", "."):
            raise ValueError(
                f"dataset path {entry!r} must be relative and inside the workspace"
            )

    def name(self, entry: str) -> str:
        return entry

    def open(
        self, ws: Workspace, entry: str, remote: str | None, expect: dict | None
    ) -> DvcFile:
        """A reproduction restores DVC files by their pointers: no ``expect``."""
        return _heavy()[0].DvcFile(ws, entry, remote)

    def named_at(
        self, ws: Workspace, entry: str, remote: str | None, commit: str
    ) -> Named:
        md5, pushed = _heavy()[1].named_at(ws, entry, remote, commit)
        return Named(entry, md5, None, pushed)

    # ------------------------------------------ the record's ``data`` entries

    def owns(self, entry: dict) -> bool:
        return "dvc_file" in entry

    def at_commit(self, entry: dict, commit: str, ev) -> str | None:
        """The md5 the entry's ``.dvc`` file names at ``commit`` (``ev``: the git
        evidence, lineageflow.lineage.checks.LiveEvidence)."""
        return ev.dvc_md5_at(commit, entry["dvc_file"])

    def diff_fields(self, entry: dict) -> dict:
        return {"md5": entry.get("md5"), "bytes": entry.get("size")}

    def version_name(self, entry: dict) -> None:
        return None  # the md5 is the version

    def pointer(self, entry: dict) -> str:
        return entry["dvc_file"]

    def in_remote(self, entry: dict, root: Path) -> bool:
        return _heavy()[1].in_remote_now(root, entry.get("remote"), entry["md5"])

    def remote_answers(self, entry: dict, root: Path) -> None:
        _heavy()[1].remote_answers(root, entry.get("remote"), entry["md5"])

    def missing(self, entry: dict, root: Path) -> str | None:
        return _heavy()[1].missing_files(root, entry.get("remote"), entry["md5"])

    def not_pushed_fix(self, entry: dict) -> str:
        if entry.get("remote") is None:
            return (
                f"{entry['path']} has no DVC remote to be pulled from: "
                "`dvc remote add -d storage <url>` then `dvc push`"
            )
        return f"is not in remote '{entry['remote']}': run `dvc push`"

    def read_problem(self, entry: dict) -> str | None:
        if entry.get("read_md5") == entry["md5"]:
            return None
        return (
            f"{entry['path']} was edited without `dvc add` (read md5 "
            f"{str(entry.get('read_md5'))[:12]} != .dvc md5 {entry['md5'][:12]}): "
            f"`dvc add {entry['path']}` and commit, or `dvc checkout {entry['path']}`"
        )

    def restored_problem(self, entry: dict, version: DataVersion | None) -> str | None:
        """Why a reproduction did not read exactly the recorded version, or None."""
        v = version
        if v is not None and v.md5 == entry["md5"] and v.read_md5 == entry["md5"]:
            return None
        found = v.read_md5 if v else "nothing"
        return (
            f"recorded data {entry['path']} md5 {entry['md5'][:12]} could not be "
            f"restored (read {found[:12]}): is it still in remote '{entry['remote']}'?"
        )

    def restore(self, tree: Path, entries: list[dict], main: Path | None) -> None:
        """Share the main repo's DVC cache and remote settings with ``tree``
        (lineageflow.data.dvc_files.restore)."""
        _heavy()[0].restore(tree, entries, main)
