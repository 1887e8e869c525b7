"""What a DVC pointer names and whether a remote holds it: read from git and
the remote alone, nothing pulled (lineageflow.data.dvc pulls and reads)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import git
import yaml
from dvc.exceptions import NotDvcRepoError
from dvc.repo import Repo

from lineageflow.errors import DataError, RemoteUnreachable, WorkspaceError, one_line
from lineageflow.workspace import Workspace


def _repo(root: Path):
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


def md5_in_dvc_text(text: str) -> str | None:
    """The md5 of the first output of a ``.dvc`` file's text."""
    try:
        doc = yaml.safe_load(text) or {}
        return doc["outs"][0]["md5"]
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


def named_at(ws: Workspace, name: str, remote: str | None, commit: str):
    """(md5, pushed): the md5 ``<name>.dvc`` names at ``commit``, and whether
    the remote (``remote``, else the repo's default) holds it."""
    try:
        md5 = md5_in_dvc_text(ws.git().git.show(f"{commit}:{name}.dvc"))
    except git.GitCommandError:
        md5 = None
    if md5 is None:
        raise DataError(
            f"{name}.dvc at {commit[:12]} is missing or names no md5: "
            f"`dvc add {name}` and commit the .dvc file"
        )
    with _repo(ws.root) as repo:
        return md5, remote_has(repo, resolve_remote(repo, remote)[0], md5)


def in_remote_now(root: Path, remote: str | None, md5: str) -> bool:
    with _repo(root) as repo:
        return remote_has(repo, remote, md5)


def missing_files(root: Path, remote: str | None, md5: str) -> str | None:
    """For a directory whose listing is in the remote but some of whose files
    are not: those files and how to push them again (DVC takes a directory
    whose listing is in the remote as pushed whole, so a plain ``dvc push``
    says "Everything is up to date"). None otherwise."""
    if not md5.endswith(".dir"):
        return None
    with _repo(root) as repo:
        name, _url = resolve_remote(repo, remote)
        if name is None:
            return None
        odb = repo.cloud.get_remote_odb(name)
        listing = odb.oid_to_path(md5)
        if not odb.exists(md5):
            return None
        with odb.fs.open(listing, "r") as fh:
            entries = json.load(fh)
        have = set(odb.oids_exist({e["md5"] for e in entries}))
    gone = [e for e in entries if e["md5"] not in have]
    if not gone:
        return None
    each = ", ".join(f"{e['relpath']} md5 {e['md5']}" for e in gone[:3])
    more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
    return (
        f"{len(gone)} of its files are not in remote '{name}' ({each}{more}): "
        f"DVC counts a directory whose listing is in the remote as pushed, so "
        f"delete the listing {md5[:2]}/{md5[2:]} from the remote, then `dvc push`"
    )


def remote_answers(root: Path, remote: str | None, md5: str) -> None:
    """Raise DataError when the remote holding ``md5`` does not answer, so a
    remote that is down is not taken for an object that is gone. (fsspec's
    HTTP filesystem reports an unreachable server as a missing file; the
    connection error is its cause.)"""
    with _repo(root) as repo:
        name, url = resolve_remote(repo, remote)
        if name is None:
            return
        odb = repo.cloud.get_remote_odb(name)
        try:
            odb.fs.info(odb.oid_to_path(md5))
            return
        except FileNotFoundError as exc:
            err = exc.__cause__ or exc.__context__
            if not isinstance(err, OSError) or isinstance(err, FileNotFoundError):
                return  # truly not there
        except Exception as exc:  # noqa: BLE001 - a connection, credentials, a 5xx
            err = exc
    host = urlsplit(url or "")
    where = f"{host.scheme}://{host.hostname}" if host.hostname else url
    raise RemoteUnreachable(
        f"DVC remote '{name}' ({where}) did not answer ({one_line(err)})"
    )
