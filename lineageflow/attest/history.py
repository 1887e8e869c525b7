"""The promotion history: each signed promotion links (by the sha256 of its
envelope) to the one before it; following the links back verifies which
version held ``@staging``, when and why."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from mlflow.exceptions import MlflowException

from lineageflow.attest import statements as st
from lineageflow.runs.artifact_store import download
from lineageflow.runs.store import client
from lineageflow.tags import PROMOTION_STATEMENT

HISTORY_LIMIT = 200


def follow(
    head: dict,
    pub: ec.EllipticCurvePublicKey,
    tracking_uri: str,
    dst: Path,
    failures: list[str],
) -> list[dict]:
    """Follow each promotion's link to the one before it, verifying each link's
    sha256 and signature; the chain ends at the first signed promotion."""
    entry, seen, history = head, 0, []
    while entry is not None and seen < HISTORY_LIMIT:
        history.append(
            {
                "version": entry.get("version"),
                "time": entry.get("time"),
                "reason": entry.get("reason"),
                "transitions": entry.get("transitions"),
            }
        )
        link = entry.get("previous")
        if not link or not link.get("sha256"):
            return history
        seen += 1
        try:
            local = download(link["location"], tracking_uri, dst / str(seen))
            env = st.read_jsonl(Path(local).read_text())[0]
        except (MlflowException, OSError, ValueError, IndexError):
            failures.append(
                f"history: the promotion of v{link['version']} at {link['location']} "
                "cannot be read"
            )
            return history
        if st.envelope_sha256(env) != link["sha256"]:
            failures.append(
                f"history: the promotion of v{link['version']} was edited (its sha256 "
                "differs from the link that follows it)"
            )
            return history
        try:
            entry = st.open_envelope(env, pub)["predicate"]
        except ValueError as exc:
            failures.append(f"history: the promotion of v{link['version']} {exc}")
            return history
    return history


def latest_promotion(
    tracking_uri: str,
    name: str,
    pub: ec.EllipticCurvePublicKey,
    location_tag: str,
    dst: Path,
) -> dict | None:
    """The newest signed promotion among all versions of ``name`` (each one's
    statement, verified): whom lineageflow last made ``@staging``. An alias
    that points elsewhere was moved outside lineageflow."""
    newest = None
    for mv in client(tracking_uri).search_model_versions(f"name = '{name}'"):
        where = mv.tags.get(location_tag)
        if not where:
            continue
        try:
            local = download(
                f"{where}/{PROMOTION_STATEMENT}", tracking_uri, dst / str(mv.version)
            )
            promo = st.open_envelope(st.read_jsonl(Path(local).read_text())[0], pub)
        except (MlflowException, OSError, ValueError, IndexError):
            continue  # unreadable or not ours: it cannot claim to be newer
        p = promo["predicate"]
        if newest is None or str(p.get("time")) > str(newest.get("time")):
            newest = p
    return newest
