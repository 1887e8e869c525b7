"""The promotion history: each signed promotion links (by the sha256 of its
envelope) to the one before it; following the links back verifies which
version held ``@staging``, when and why."""

from __future__ import annotations

from pathlib import Path

import mlflow
from cryptography.hazmat.primitives.asymmetric import ec
from mlflow.exceptions import MlflowException

from lineageflow.attest import statements as st

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
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=link["location"],
                dst_path=str(dst / str(seen)),
                tracking_uri=tracking_uri,
            )
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
