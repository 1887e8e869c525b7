"""The model's files against model-signing's signature: its verdict, and when
it refuses, one line per file that was changed, added or removed."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path

import model_signing
from cryptography.hazmat.primitives.asymmetric import ec

from lineageflow.attest.keys import keyid, public_pem
from lineageflow.attest.sign import SIGNATURE, hashing


def verify_files(
    model_dir: Path, sig: Path, pub: ec.EllipticCurvePublicKey, failures: list[str]
) -> str | None:
    """model-signing's verdict on every file; one line per file when it fails.
    The signed model's sha256 (the subject the statements must name)."""
    try:
        bundle = json.loads(sig.read_text())
        payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        signed = payload["subject"][0]["digest"]["sha256"]
    except (KeyError, IndexError, TypeError, ValueError):
        failures.append(f"{SIGNATURE} is not a model-signing signature")
        return None
    with tempfile.NamedTemporaryFile("wb", suffix=".pub") as f:
        f.write(public_pem(pub))
        f.flush()
        try:
            (
                model_signing.verifying.Config()
                .use_elliptic_key_verifier(public_key=f.name)
                .set_hashing_config(hashing())
                .verify(model_dir, sig)
            )
            return signed
        except ValueError as exc:
            if str(exc).startswith("Key mismatch"):
                failures.append(
                    f"{SIGNATURE} was not made with the given public key "
                    f"({keyid(pub)[:12]}): use the key the promotion signed with"
                )
                return None
            failures.extend(
                file_changes(model_dir, payload) or [f"{SIGNATURE}: {exc}"[:300]]
            )
            return None


def file_changes(model_dir: Path, payload: dict) -> list[str]:
    """Each file the signed manifest and the downloaded model disagree on."""
    signed = {r["name"]: r["digest"] for r in payload["predicate"]["resources"]}
    ignored = set(payload["predicate"]["serialization"].get("ignore_paths", []))
    found = {
        p.relative_to(model_dir).as_posix(): p
        for p in model_dir.rglob("*")
        if p.is_file() and p.relative_to(model_dir).parts[0] not in ignored
    }
    lines = []
    for rel in sorted(set(signed) | set(found)):
        if rel not in found:
            lines.append(f"model file {rel} was removed after promotion")
        elif rel not in signed:
            lines.append(f"model file {rel} was added after promotion")
        elif hashlib.sha256(found[rel].read_bytes()).hexdigest() != signed[rel]:
            lines.append(f"model file {rel} was changed after promotion")
    return lines
