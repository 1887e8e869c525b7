"""DVC through its Python API: pull a dataset, hash what is read, ask the remote.

DVC's state database caches file hashes by inode/mtime/size, so an unchanged
1 GB file is not re-hashed on every run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from lineageflow.errors import DataError, WorkspaceError


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
    action: str  # "present", "pulled" or "modified" (left as the user had it)
    format: str | None = None  # csv | parquet, once read

    def as_record(self) -> dict:
        d = asdict(self)
        d.pop("action")
        if d["format"] is None:  # additive key: absent until the data was read
            d.pop("format")
        return d


def _repo(root: Path):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise WorkspaceError(f"{root} has no DVC: run `dvc init` there") from None


def resolve_remote(repo, name: str | None) -> tuple[str | None, str | None]:
    """(remote name, URL) for ``name`` or the repo's default remote."""
    remotes = repo.config.get("remote", {})
    name = name or repo.config.get("core", {}).get("remote")
    if name is None:
        return None, None
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise DataError(
            f"DVC remote '{name}' does not exist (configured: {known}): "
            f"`dvc remote add {name} <url>` or set data.remote in params.yaml"
        )
    url = remotes[name].get("url")
    if url and "://" not in url and not os.path.isabs(url):
        # DVC resolves a relative local URL against the config file's directory
        url = os.path.normpath(os.path.join(repo.dvc_dir, url))
    return name, url


def remote_has(repo, remote: str | None, md5: str) -> bool:
    """True when the object (and, for a directory, every file in it) is in the remote."""
    if remote is None:
        return False
    odb = repo.cloud.get_remote_odb(remote)
    if not odb.exists(md5):
        return False
    if not md5.endswith(".dir"):
        return True
    with odb.fs.open(odb.oid_to_path(md5), "r") as fh:
        entries = json.load(fh)
    oids = {e["md5"] for e in entries}
    return set(odb.oids_exist(oids)) == oids


def dvc_out(repo, dvc_file: Path):
    stages = repo.stage.collect(str(dvc_file))
    if not stages or not stages[0].outs:
        raise DataError(f"{dvc_file.name} declares no outputs: re-run `dvc add`")
    return stages[0].outs[0]


def pull_dataset(
    root: Path, data_path: Path, dvc_file: Path, remote: str | None
) -> DataVersion:
    """Make ``data_path`` hold its ``.dvc`` version, then say what was read.

    A present and unchanged dataset is not touched. A dataset the user edited
    without `dvc add` is *not* overwritten (their edit is theirs): it is read as
    it is and recorded with its real md5, which the lineage check then refuses.
    """
    from dvc.exceptions import DvcException

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
                    f"'{remote}' ({url}): {str(exc).splitlines()[0]}: run `dvc push` "
                    "where the data was added"
                ) from None
            action = "pulled"
            out = dvc_out(repo, dvc_file)
        got = out.get_hash().value
        if got != want:
            action = "modified"
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


def md5_in_dvc_text(text: str) -> str | None:
    """The md5 of the first output of a ``.dvc`` file's text."""
    try:
        doc = yaml.safe_load(text) or {}
        return doc["outs"][0]["md5"]
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


def in_remote_now(root: Path, remote: str | None, md5: str) -> bool:
    with _repo(root) as repo:
        return remote_has(repo, remote, md5)
