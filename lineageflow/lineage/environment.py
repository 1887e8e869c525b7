"""The Python environment a run executed in: every installed distribution, how
pip installed it (PEP 610 ``direct_url.json``) and which ones the run imported.

A private library installed from a git server, an editable checkout or a local
directory decides a model as much as the pipeline code does, so each one is
recorded with what rebuilds it: a VCS install's ``commit_id``, an editable
checkout's commit and dirty files, a local directory's content hash. The logged
model's requirements pin VCS installs by commit (``pinned_requirements``); what
reads the record back (the check environment_pinned, diffs, the reuse basis) is
lineageflow.lineage.pins.

Credentials never reach the record: ``user:token@`` is removed from every URL.
A user name alone stays for ssh (``git+ssh://git@host/...``: the key
authenticates, ``git`` is no secret) and is dropped for every other scheme
(``https://<token>@github.com/...`` passes a token as the user name). A
``${VAR}`` reference (PEP 610) names a variable, not its value: it stays. The
query (``?private_token=...``, a signed archive URL's signature) and every
fragment part but ``egg=`` and ``subdirectory=`` are dropped too, for every
scheme but ``file``: what pip needs to install it again is kept, no more.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable
from importlib.metadata import Distribution, distributions
from inspect import getmodulename
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import git

from lineageflow.lineage.import_names import path_names

# lineageflow's own checkout is the record's ``pipeline`` (commit, dirty files)
# and the check code_committed refuses it dirty; in a reproduction (or the tests)
# the code that runs is a worktree on PYTHONPATH, not the editable install's
# checkout, so that checkout's state would be a false claim here.
PIPELINE_DIST = "lineageflow"
ENV_VAR_USER = re.compile(r"^\$\{\w+\}(:\$\{\w+\})?$")
PIP_FRAGMENT = ("egg=", "subdirectory=")  # what pip reads; any other part: dropped


def canonical(name: str) -> str:
    """PEP 503 name: ``Acme_Features`` and ``acme-features`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def strip_credentials(url: str) -> str:
    """``url`` without a password or token (see the module's docstring)."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        kept = [p for p in parts.fragment.split("&") if p.startswith(PIP_FRAGMENT)]
        parts = parts._replace(query="", fragment="&".join(kept))
    if "@" in parts.netloc:
        user, _, host = parts.netloc.rpartition("@")
        ssh = parts.scheme.rpartition("+")[2] == "ssh"
        keep = (ssh and ":" not in user) or ENV_VAR_USER.match(user)
        parts = parts._replace(netloc=f"{user}@{host}" if keep else host)
    return urlunsplit(parts)


def file_path(url: str) -> str | None:
    """The local path of a ``file://`` URL."""
    parts = urlsplit(url)
    return unquote(parts.path) if parts.scheme == "file" else None


def installed_digest(dist: Distribution) -> str | None:
    """sha256 over the installed files' own hashes (RECORD): what was imported,
    whatever became of the directory or archive it was built from."""
    rows = sorted(
        f"{f} {f.hash.mode}={f.hash.value}"
        for f in dist.files or ()
        if f.hash is not None and ".dist-info/" not in f"{f}/".replace("\\", "/")
    )
    if not rows:
        return None
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _byproduct(name: str) -> bool:
    """What installing or importing leaves in a checkout: ``*.egg-info``,
    ``__pycache__``, ``.pyc``. Not the library's code or data."""
    parts = name.rstrip("/").split("/")
    return any(
        p.endswith(".egg-info") or p == "__pycache__" for p in parts
    ) or name.endswith((".pyc", ".pyo"))


def checkout_state(path: str) -> dict[str, Any]:
    """The git commit of the checkout holding ``path`` and the files under
    ``path`` that differ from it: tracked edits and every untracked file (a data
    or config file beside the code changes the library as an edit does) but
    those git ignores and ``_byproduct``s. One ``git status`` call."""
    state: dict[str, Any] = {"commit": None, "dirty": None, "dirty_files": []}
    try:
        with git.Repo(path, search_parent_directories=True) as repo:
            commit = repo.head.commit.hexsha
            out = repo.git.status(
                "--porcelain", "-z", "--untracked-files=all", "--", path
            )
    except (git.GitError, ValueError, OSError):
        return state  # no git checkout (or no commit yet): no commit to name
    files, entries = [], iter(out.split("\0"))
    for entry in entries:
        code, name = entry[:2], entry[3:]
        if code[:1] in ("R", "C"):
            next(entries, None)  # a rename's source path
        if name and not (code == "??" and _byproduct(name)):
            files.append(name)
    state.update(commit=commit, dirty=bool(files), dirty_files=sorted(files)[:50])
    return state


def describe(dist: Distribution, probe: bool = True, meta=None) -> dict[str, Any]:
    """One distribution as the record holds it. ``source``: ``index`` (no
    direct_url.json: a release from a package index), ``vcs``, ``editable``,
    ``dir`` or ``archive``. ``probe=False`` leaves an editable checkout unread;
    ``meta``: its metadata when already parsed (each read parses the file)."""
    meta = meta if meta is not None else dist.metadata
    entry: dict[str, Any] = {"name": meta["Name"], "version": meta["Version"]}
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        direct = {"url": ""}
    if not isinstance(direct, dict):
        return entry | {"source": "index"}
    url = strip_credentials(str(direct.get("url", "")))
    if direct.get("subdirectory"):  # PEP 610: the project is a monorepo's folder
        entry["subdirectory"] = str(direct["subdirectory"])
    if "vcs_info" in direct:
        vcs = direct["vcs_info"]
        return entry | {
            "source": "vcs",
            "vcs": vcs.get("vcs"),
            "url": url,
            "requested_revision": vcs.get("requested_revision"),
            "commit_id": vcs.get("commit_id"),
        }
    if "archive_info" in direct:
        return entry | {
            "source": "archive",
            "url": url,
            "sha256": installed_digest(dist),
        }
    path = file_path(url) or url
    if direct.get("dir_info", {}).get("editable"):
        entry |= {"source": "editable", "url": url, "path": path}
        if canonical(entry["name"]) == PIPELINE_DIST:
            return entry | {"pipeline": True}  # its state: the record's pipeline
        return entry | (checkout_state(path) if probe else {})
    # pip copied the directory's files when it installed them: its checkout's
    # commit now may not hold them, so none is claimed; the installed files' hash
    # names what runs (pins.unpinned refuses it: nobody can install it again)
    return entry | {
        "source": "dir",
        "url": url,
        "path": path,
        "sha256": installed_digest(dist),
    }


# per process, keyed by the import path and the mtimes of the directories that
# held distributions at the last scan (installing or removing one changes them)
_CACHE: dict[str, tuple[tuple, Any]] = {}
_SITES: list[str] = []


def _key() -> tuple:
    def mtime(d: str) -> int | None:
        try:
            return os.stat(d).st_mtime_ns
        except OSError:
            return None

    return tuple(sys.path), tuple((d, mtime(d)) for d in _SITES)


def _cached(name: str, build):
    hit = _CACHE.get(name)
    if hit is None or hit[0] != _key():
        value = build()
        hit = _CACHE[name] = (_key(), value)
    return hit[1]


def _scan() -> list[tuple[dict[str, Any], Distribution]]:
    """Each name's first distribution on ``sys.path`` (the one ``import`` finds)."""
    first: dict[str, tuple[Distribution, Any]] = {}
    for dist in distributions():
        meta = dist.metadata
        if meta["Name"]:
            first.setdefault(canonical(meta["Name"]), (dist, meta))
    _SITES[:] = sorted({str(d.locate_file("")) for d, _ in first.values()})
    return [(describe(d, False, m), d) for _, (d, m) in sorted(first.items())]


def installed() -> list[dict[str, Any]]:
    """Every distribution importable here, sorted by name. An editable
    checkout is read now, never cached: its files change while a worker lives."""
    out = []
    for entry, dist in _cached("installed", _scan):
        probe = entry.get("source") == "editable" and "pipeline" not in entry
        out.append(describe(dist) if probe else entry)
    return out


def _owners() -> dict[str, list[str]]:
    """Top-level module name -> distribution names, as the stdlib's
    ``packages_distributions`` but without its existence check of every
    RECORD line (23k ``stat`` calls, 0.28 s here, for the same answer)."""
    owners: dict[str, list[str]] = {}
    for entry, dist in _cached("installed", _scan):
        declared = (dist.read_text("top_level.txt") or "").split()
        rows = csv.reader((dist.read_text("RECORD") or "").splitlines())
        inferred = {
            row[0].split("/", 1)[0] if "/" in row[0] else getmodulename(row[0])
            for row in rows
            if row
        }
        for top in declared or inferred:
            if top and "." not in top and top != "__pycache__":
                owners.setdefault(top, []).append(entry["name"])
    return owners


def imported(modules: Iterable[str] = ()) -> list[str]:
    """The distributions (canonical names) whose modules this process imported,
    plus those of ``modules`` (e.g. what a notebook's kernel imported).

    ``sys.modules`` is the process's: in a long-lived worker, a library an
    earlier run imported counts for every later run too (stricter, never less)."""
    tops = {m.partition(".")[0] for m in [*sys.modules, *modules] if m}
    owners = _cached("owners", _owners)
    used = {canonical(d) for top in tops for d in owners.get(top, ())}
    for entry, dist in _cached("installed", _scan):
        if entry.get("source") in ("editable", "dir") and path_names(dist) & tops:
            used.add(canonical(entry["name"]))
    return sorted(used)


def pinned_requirements(
    base: list[str], dists: list[dict], imported: Iterable[str]
) -> list[str]:
    """``base`` plus every imported VCS install pinned by its commit
    (``acme-features @ git+https://git.acme/acme-features.git@<commit_id>``),
    so the environment MLflow rebuilds for the model runs the same library code.
    A pin replaces a ``base`` entry of the same package."""
    used = {canonical(n) for n in imported}
    pins = {
        canonical(d["name"]): f"{d['name']} @ {d['vcs']}+"
        f"{d['url'].partition('#')[0]}@{d['commit_id']}"
        + (f"#subdirectory={d['subdirectory']}" if d.get("subdirectory") else "")
        for d in dists
        if d.get("source") == "vcs"
        and d.get("commit_id")
        and canonical(d["name"]) in used
    }
    kept = [r for r in base if canonical(re.split(r"[\s=<>!~;@\[]", r)[0]) not in pins]
    return kept + sorted(pins.values())
