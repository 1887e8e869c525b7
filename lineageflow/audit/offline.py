"""An audit's offline checks of one registered version, every time: its run is
still there and its lineage record intact; its model files and statements
verify (as ``lineageflow verify``, with the promotion key's public half); every
recorded data version can still be read from its remote (DVC remote, Delta log
and files); every recorded commit is still in its repository. Nothing is
rebuilt and nothing is written.

Each problem is a ``Finding`` (lineageflow.audit.verdicts): a store or remote
that does not answer is ``unverifiable`` for this version only.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow.exceptions import MlflowException

from lineageflow.attest.keys import KEY_ENV, configured_key
from lineageflow.attest.verify import attested
from lineageflow.audit.verdicts import (
    TAMPERED,
    UNREPRODUCIBLE,
    UNVERIFIABLE,
    Finding,
)
from lineageflow.data import source
from lineageflow.errors import (
    LineageError,
    LineageflowError,
    SigningKeyError,
    one_line,
)
from lineageflow.lineage.checks import check_digest
from lineageflow.lineage.code import pipeline_state
from lineageflow.lineage.environment import installed
from lineageflow.registry.versions import load_lineage
from lineageflow.runs.artifacts import stored_model_digest
from lineageflow.runs.store import client
from lineageflow.tags import TAG_ATTESTATION, TAG_MODEL_DIGEST, TAG_RUN_ID
from lineageflow.workspace import has_commit

# attest.verify's words for what says nothing of the files: a store that did
# not answer, or a key other than the one the promotion signed with
UNJUDGED = (
    "cannot be read",
    "not made with the given public key",
    "against the certificate chain",
)


@dataclass
class Offline:
    """What the offline checks found for one version."""

    run_id: str | None
    record: dict | None = None
    model_sha256: str | None = None
    findings: list[Finding] = field(default_factory=list)


def check_version(uri: str, mv, root: Path) -> Offline:
    """Every offline check of model version ``mv``; ``root``: the workspace the
    audit runs for."""
    version = str(mv.version)
    run_id = mv.tags.get(TAG_RUN_ID) or mv.run_id
    out = Offline(run_id)
    gone = _run_gone(uri, run_id, version)
    if gone:
        out.findings.append(gone)
        return out
    try:
        record, tags = load_lineage(uri, run_id)
    except LineageError as exc:  # lineage.json deleted or damaged
        out.findings.append(Finding(TAMPERED, f"lineage record: {exc}"))
        return out
    except Exception as exc:  # noqa: BLE001 - the store did not answer
        out.findings.append(Finding(UNVERIFIABLE, one_line(exc)))
        return out
    intact = check_digest(record, tags)
    if not intact.passed:
        out.findings.append(Finding(TAMPERED, f"lineage record: {intact.reason}"))
        return out
    out.record = record
    _model(uri, mv, out)
    where = _where(record, root)
    out.findings += data_findings(record, where)
    out.findings += commit_findings(record, where)
    return out


def _where(record: dict, root: Path) -> Path:
    """Where the run's commits and DVC remotes are: the workspace it recorded
    when it is on this machine (another workspace's version), else ``root``."""
    recorded = record["workspace"].get("path")
    return Path(recorded) if recorded and Path(recorded).is_dir() else root


def _run_gone(uri: str, run_id: str | None, version: str) -> Finding | None:
    """A version whose run was deleted (or purged) in one line."""
    restore = f"`mlflow runs restore --run-id {run_id}`"
    try:
        run = client(uri).get_run(run_id)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
            return Finding(
                UNREPRODUCIBLE,
                f"v{version}'s run {run_id} is gone from the tracking store (purged "
                "by `mlflow gc`): its lineage record went with it; retrain",
            )
        return Finding(UNVERIFIABLE, one_line(exc))
    if run.info.lifecycle_stage == "deleted":
        return Finding(
            UNREPRODUCIBLE,
            f"v{version}'s run {run_id} was deleted: restore it with {restore} "
            "before `mlflow gc` purges it",
        )
    return None


def _model(uri: str, mv, out: Offline) -> None:
    """The model files against their signature and the signed statements, with
    the promotion key's public half; without a key here (or an unsigned
    version), the stored model file against its recorded digest."""
    name, version = mv.name, str(mv.version)
    if mv.tags.get(TAG_ATTESTATION):
        try:
            key = configured_key()
            why = (
                None if key else f"no signing key here to verify it with: set {KEY_ENV}"
            )
        except SigningKeyError as exc:
            why = str(exc)
        if why is None:
            try:
                verified = attested(uri, name, version)
            except Exception as exc:  # noqa: BLE001 - the store did not answer
                out.findings.append(Finding(UNVERIFIABLE, one_line(exc)))
                return
            out.model_sha256 = verified.model_sha256
            for failure in verified.failures:
                unjudged = any(m in failure for m in UNJUDGED)
                out.findings.append(
                    Finding(UNVERIFIABLE if unjudged else TAMPERED, failure)
                )
            return
        out.findings.append(Finding(UNVERIFIABLE, f"signature not checked: {why}"))
    want = mv.tags.get(TAG_MODEL_DIGEST)
    try:
        got = stored_model_digest(mv.source, uri)
    except Exception as exc:  # noqa: BLE001
        out.findings.append(Finding(UNVERIFIABLE, one_line(exc)))
        return
    out.model_sha256 = got
    if want and got != want:
        out.findings.append(
            Finding(
                TAMPERED,
                f"the stored model file of {name} v{version} has sha256 "
                f"{got[:12]}, not the recorded {want[:12]}",
            )
        )


def data_findings(record: dict, root: Path) -> list[Finding]:
    """Each recorded data version that cannot be read from its remote now."""
    out = []
    for d in record["data"]:
        try:
            if source.in_remote(d, root):
                continue
            source.remote_answers(d, root)  # down is not gone
            part = source.missing(d, root)
            fix = part or source.not_pushed_fix(d)
        except Exception as exc:  # noqa: BLE001 - a remote that does not answer
            why = (
                str(exc)
                if isinstance(exc, LineageflowError)
                else f"its remote did not answer ({one_line(exc)})"
            )
            out.append(Finding(UNVERIFIABLE, f"{d.get('path')}: {why}"))
            continue
        # a kind's fix names the path and version itself (Delta), or follows them
        line = (
            f"{d['path']} md5 {d['md5']}: {fix}"
            if part
            else fix
            if d["path"] in fix
            else f"{d['path']} md5 {d['md5']} {fix}"
        )
        out.append(Finding(UNREPRODUCIBLE, line))
    return out


def commit_findings(record: dict, root: Path) -> list[Finding]:
    """Each recorded commit (workspace, lineageflow, a private library's
    checkout or local git URL) that is in none of its repositories now."""
    out = []
    ws = record["workspace"]
    if not has_commit(root, ws["commit"]):
        out.append(
            Finding(
                UNREPRODUCIBLE,
                f"workspace commit {ws['commit']} is not in {root} (history "
                "rewritten or force-pushed?): restore it",
            )
        )
    pipe = record.get("pipeline") or {}
    here = pipeline_state().get("path")
    places = [pipe.get("path"), here, _local(pipe.get("repo"))]
    repos = sorted({str(p) for p in places if p and Path(p).is_dir()})
    # in no repository here: a rebuild clones its recorded URL (checked then)
    if (
        pipe.get("commit")
        and repos
        and not any(has_commit(p, pipe["commit"]) for p in repos)
    ):
        out.append(
            Finding(
                UNREPRODUCIBLE,
                f"lineageflow commit {pipe['commit']} is in none of "
                f"{', '.join(repos)}: restore it",
            )
        )
    for d in record.get("environment", {}).get("distributions", []):
        commit = d.get("commit") or d.get("commit_id")
        place = d.get("path") if d.get("source") == "editable" else _local(d.get("url"))
        if commit and place and not has_commit(place, commit):
            out.append(
                Finding(
                    UNREPRODUCIBLE,
                    f"{d['name']} commit {commit} is not in {place} any more "
                    "(force-pushed away?): push it again or pin another and retrain",
                )
            )
    return out


def environment_now() -> dict:
    """The environment a rebuild here would run in: Python, every installed
    distribution and how it was installed, and lineageflow's own commit."""
    pipe = pipeline_state()
    dists = [
        [
            d["name"],
            d["version"],
            d.get("source"),
            d.get("commit") or d.get("commit_id"),
        ]
        for d in installed()
    ]
    return {
        "python": sys.version.split()[0],
        "distributions": dists,
        "lineageflow": [pipe.get("commit"), pipe.get("dirty")],
    }


def _local(url: str | None) -> str | None:
    """A repository URL's path when it is on this machine (a path, file://)."""
    if not url:
        return None
    url = url.removeprefix("git+")
    if url.startswith("file://"):
        return unquote(urlparse(url).path).split("@")[0]
    return url if url.startswith("/") else None
