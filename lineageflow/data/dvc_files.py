"""DVC-tracked files read through DVC's Python API (the DVC kind's heavy side:
lineageflow.data.dvc opens them; DVC's import is slow, so only this module does).

Pull a dataset, hash what is read, ask the remote; give a checkout what its DVC
needs to read the recorded data. DVC's state database caches file hashes by
inode/mtime/size, so an unchanged 1 GB file is not re-hashed on every run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
from dvc.exceptions import DvcException
from dvc.repo import Repo

from lineageflow.data.dvc_pointer import (
    _repo,
    md5_in_dvc_text,
    remote_has,
    resolve_remote,
)
from lineageflow.data.tabular import read_table, table_files
from lineageflow.engines.partitions import Part
from lineageflow.errors import DataError
from lineageflow.workspace import Workspace


@dataclass(frozen=True)
class DataVersion:
    path: str  # relative to the workspace root
    dvc_file: str
    md5: str  # as recorded in the .dvc file (".dir" suffix for directories)
    size: int | None
    nfiles: int | None
    remote: str | None
    remote_url: str | None
    in_remote: bool
    read_md5: str  # md5 of what the pipeline actually read
    action: str  # "present" or "pulled" (data that differs is refused, not read)
    format: str | None = None  # csv | parquet, once read

    def params(self) -> dict:
        """What pull_data logs as MLflow params."""
        return {"dvc_md5": self.md5}

    def as_record(self) -> dict:
        d = asdict(self)
        d.pop("action")
        if d["format"] is None:  # additive key: absent until the data was read
            d.pop("format")
        return d


@dataclass(frozen=True)
class DvcFile:
    """One dataset of ``data.datasets``: a path the workspace tracks with a
    ``.dvc`` file, pulled from ``remote`` (None: the repo's default)."""

    ws: Workspace
    name: str
    remote: str | None = None

    def paths(self) -> tuple[Path, Path]:
        return self.ws.dataset(self.name)

    def pin(self) -> DataVersion:
        """The version the ``.dvc`` file names, present in the workspace."""
        data_path, dvc_file = self.paths()
        return pull_dataset(self.ws.root, data_path, dvc_file, self.remote)

    def key_input(self, version: DataVersion) -> dict[str, str]:
        """Its part of a stage key: the pointer and the version it names."""
        _, dvc_file = self.paths()
        pointer = str(dvc_file.relative_to(self.ws.root))
        return {"name": pointer, "digest": f"md5:{version.md5}"}

    def read(self, version: DataVersion) -> tuple[pd.DataFrame, DataVersion]:
        df, fmt = read_table(self.paths()[0])
        return df, replace(version, format=fmt)

    def partitions(self, version: DataVersion) -> list[Part]:
        """Its files (a directory's in name order), one partition each, for an
        engine that reads them where its workers run."""
        data_path = self.paths()[0]
        files, fmt = table_files(data_path)
        base = data_path if data_path.is_dir() else data_path.parent
        return [
            Part(self.name, f.relative_to(base).as_posix(), str(f), fmt) for f in files
        ]

    def read_files(
        self, version: DataVersion, md5s: dict[str, str | None]
    ) -> DataVersion:
        """``version`` with ``read_md5`` made from the md5s of the files as
        read elsewhere (by relative path), the way DVC hashes a directory: what
        the data check compares with the ``.dvc`` md5. Kept as DVC hashed it
        here when the cache has no listing of the recorded directory."""
        fmt = table_files(self.paths()[0])[1]
        if not version.md5.endswith(".dir"):
            [(_, md5)] = md5s.items()
            return replace(version, read_md5=md5 or version.read_md5, format=fmt)
        listing = dir_listing(self.ws.root, version.md5)
        if listing is None or None in md5s.values():
            return replace(version, format=fmt)
        listing.update(md5s)
        return replace(version, read_md5=dir_md5(listing), format=fmt)

    @staticmethod
    def read_digest(version: DataVersion) -> str:
        """The digest of what was read (DVC's md5 of the file as it is)."""
        return f"md5:{version.read_md5}"

    def validate(self) -> None:
        self.paths()

    def mlflow_dataset(self, version: DataVersion) -> tuple[str, str]:
        """(name, source) of its MLflow dataset."""
        return self.name, str(self.paths()[0])

    def pinned_md5(self) -> str | None:
        """The md5 the ``.dvc`` file names now (nothing pulled or hashed)."""
        return md5_in_dvc_text(self.paths()[1].read_text())


def dir_md5(listing: dict[str, str]) -> str:
    """DVC's md5 of a directory from its files' md5s by relative path (the md5
    of its sorted JSON listing, dvc_data's Tree.as_bytes)."""
    entries = [{"md5": m, "relpath": p} for p, m in sorted(listing.items())]
    blob = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(blob).hexdigest() + ".dir"


def dir_listing(root: Path, md5: str) -> dict[str, str] | None:
    """The files of a directory version in the DVC cache (relative path -> md5);
    None when the cache lacks it or it does not hash back to ``md5``."""
    value = md5.removesuffix(".dir")
    path = Path(_cache_dir(root)) / "files" / "md5" / value[:2] / (value[2:] + ".dir")
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    listing = {e["relpath"]: e["md5"] for e in entries}
    return listing if dir_md5(listing) == md5 else None


def dvc_out(repo, dvc_file: Path):
    stages = repo.stage.collect(str(dvc_file))
    if not stages or not stages[0].outs:
        raise DataError(f"{dvc_file.name} declares no outputs: re-run `dvc add`")
    return stages[0].outs[0]


def pull_dataset(
    root: Path, data_path: Path, dvc_file: Path, remote: str | None
) -> DataVersion:
    """Make ``data_path`` hold its ``.dvc`` version, then say what was read.

    A present and unchanged dataset is not touched. A dataset that differs from
    its ``.dvc`` file (a file edited, added or deleted without `dvc add`) is
    *not* overwritten (the edit is theirs) and not trained on: one line names
    what differs, before anything is read or fitted (data_read_matches would
    refuse the model only after the whole fit).
    """
    rel = str(data_path.relative_to(root))
    with _repo(root) as repo:
        remote, url = resolve_remote(repo, remote)
        out = dvc_out(repo, dvc_file)
        want = out.hash_info.value
        if not want:
            raise DataError(f"{dvc_file.name} has no md5: run `dvc add {rel}`")
        action = "present"
        if not data_path.exists():
            try:
                repo.pull(targets=[str(dvc_file)], remote=remote)
            except DvcException as exc:
                raise DataError(
                    f"{rel} md5 {want} could not be pulled from DVC remote "
                    f"'{remote}' ({url}): {str(exc).splitlines()[0].rstrip(':')}: run `dvc push` "
                    "where the data was added"
                ) from None
            action = "pulled"
            out = dvc_out(repo, dvc_file)
        got = out.get_hash().value
        if got != want:
            pointer = str(dvc_file.relative_to(root))
            raise DataError(unpinned(repo, rel, pointer, got, want))
        in_remote = remote_has(repo, remote, want)
        return DataVersion(
            path=rel,
            dvc_file=str(dvc_file.relative_to(root)),
            md5=want,
            size=out.meta.size,
            nfiles=out.meta.nfiles,
            remote=remote,
            remote_url=url,
            in_remote=in_remote,
            read_md5=got,
            action=action,
        )


def unpinned(repo, rel: str, pointer: str, got: str, want: str) -> str:
    """The line refusing a dataset that is not what its ``.dvc`` file names."""
    changed = _changed_files(repo, rel)
    return (
        f"{rel} does not match {pointer} ({changed}read md5 "
        f"{got[:12]}, .dvc md5 {want[:12]}): run `dvc checkout {rel}` (`dvc pull "
        f"{rel}` if the cache lacks it) to train on the committed version, or "
        f"`dvc add {rel}` and commit to pin what is there"
    )


def _changed_files(repo, rel: str, most: int = 3) -> str:
    """The files of a directory that differ from its pointer, as DVC's data
    status names them ("part-001.csv deleted; "), or "" (a single file, or
    a status DVC cannot give)."""
    try:
        status = repo.data_status(targets=[rel], granular=True)
    except DvcException:
        return ""
    prefix = rel.rstrip("/") + "/"
    found = [
        f"{path.removeprefix(prefix)} {what}"
        for what in ("deleted", "modified", "added")
        for path in status.get("uncommitted", {}).get(what, [])
        if path.startswith(prefix) and path != prefix
    ]
    if not found:
        return ""
    more = f" and {len(found) - most} more" if len(found) > most else ""
    return ", ".join(found[:most]) + more + "; "


def restore(tree: Path, entries: list[dict], main: Path | None) -> None:
    """Give a worktree or clone what its DVC needs to read the recorded data.

    A worktree shares the main repo's cache (so nothing is pulled twice) and,
    being on the same machine, its remotes' local settings (``endpointurl``,
    keys: ``.dvc/config.local``, which git does not carry; never recorded). A
    clone keeps its own empty cache, pulls from the remote and takes those
    settings from its machine's environment. A local remote recorded as an
    absolute path is written back; DVC's site cache stays inside the tree.
    """
    main_cache = _cache_dir(main) if main is not None else None
    main_remotes = _local_remotes(main) if main is not None else {}
    site = (main or tree) / ".dvc" / "tmp" / "site"
    with Repo(str(tree)) as repo, repo.config.edit("local") as conf:
        if main_cache:
            conf.setdefault("cache", {})["dir"] = main_cache
        conf.setdefault("core", {})["site_cache_dir"] = str(site)
        for name, settings in main_remotes.items():
            conf.setdefault("remote", {}).setdefault(name, {}).update(settings)
        for d in entries:
            url = d.get("remote_url")
            if d.get("remote") and url and "://" not in url:
                conf.setdefault("remote", {}).setdefault(d["remote"], {})["url"] = url


def _local_remotes(root: Path) -> dict[str, dict]:
    """The remotes' settings in ``root``'s ``.dvc/config.local``."""
    with Repo(str(root)) as repo:
        return dict(repo.config.load_one("local").get("remote", {}))


def _cache_dir(root: Path) -> str:
    """``dvc cache dir``: DVC 3 keeps its objects under ``files/md5/`` in it
    (``repo.cache.local.path`` is that subfolder, not the cache dir)."""
    with Repo(str(root)) as repo:
        return repo.cache.local_cache_dir
