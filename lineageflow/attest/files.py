"""A model directory's files against model-signing's signature: its verdict,
and when it refuses, one line per file that was changed, added or removed.
The directory itself is downloaded by lineageflow.runs.artifact_store."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where it signs or verifies: 0.33 s a process
    import model_signing
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from lineageflow.attest.keys import keyid, public_pem
from lineageflow.tags import MODEL_SIGNATURE

# MLflow writes it into a models:/ download; it is not part of the stored model
IGNORED = ["registered_model_meta"]


def hashing() -> model_signing.hashing.Config:
    import model_signing

    return model_signing.hashing.Config().set_ignored_paths(
        paths=IGNORED, ignore_git_paths=True
    )


@dataclass(frozen=True)
class Trust:
    """What a signature must verify against: the promotion key's public half, or
    the CA certificate(s) a certificate-signed promotion must chain to."""

    public_key: ec.EllipticCurvePublicKey | None = None
    chain: tuple[Path, ...] = ()

    def verifier(self, pem_file: str) -> model_signing.verifying.Config:
        import model_signing

        cfg = model_signing.verifying.Config()
        if self.chain:
            return cfg.use_certificate_verifier(certificate_chain=self.chain)
        return cfg.use_elliptic_key_verifier(public_key=pem_file)

    def refusal(self, exc: Exception) -> str:
        if self.chain:
            names = ", ".join(p.name for p in self.chain)
            return (
                f"{MODEL_SIGNATURE} does not verify against the certificate chain {names} "
                f"({str(exc).strip()[:200]}): use the CA the promotion's certificate "
                "was issued by"
            )
        if str(exc).startswith("Key mismatch"):
            return (
                f"{MODEL_SIGNATURE} was not made with the given public key "
                f"({keyid(self.public_key)[:12]}): use the key the promotion signed with"
            )
        return f"{MODEL_SIGNATURE} does not verify with the given public key ({exc})"[
            :300
        ]


def verify_files(
    model_dir: Path, sig: Path, trust: Trust, failures: list[str]
) -> tuple[str | None, ec.EllipticCurvePublicKey | None]:
    """model-signing's verdict on every file; one line per file when it fails.
    The signed model's sha256 (the subject the statements must name) and the
    key the statements must be signed with (for a certificate: its key)."""
    try:
        bundle = json.loads(sig.read_text())
        payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        signed = payload["subject"][0]["digest"]["sha256"]
    except (KeyError, IndexError, TypeError, ValueError):
        failures.append(f"{MODEL_SIGNATURE} is not a model-signing signature")
        return None, None
    with tempfile.NamedTemporaryFile("wb", suffix=".pub") as f:
        if trust.public_key is not None:
            f.write(public_pem(trust.public_key))
            f.flush()
        try:
            trust.verifier(f.name).set_hashing_config(hashing()).verify(model_dir, sig)
        except Exception as exc:  # model-signing: ValueError; OpenSSL for a chain
            if str(exc).startswith("Signature mismatch"):
                failures.extend(
                    file_changes(model_dir, payload)
                    or [f"{MODEL_SIGNATURE}: {exc}"[:300]]
                )
            else:
                failures.append(trust.refusal(exc))
            # a public key still checks the statements; an unverified chain does not
            return None, trust.public_key
    return signed, trust.public_key or leaf_key(bundle)


def leaf_key(bundle: dict) -> ec.EllipticCurvePublicKey:
    """The signing certificate's key, from a bundle model-signing verified."""
    material = bundle["verificationMaterial"]
    raw = (material.get("x509CertificateChain") or {}).get("certificates", [{}])[0]
    raw = raw.get("rawBytes") or material["certificate"]["rawBytes"]
    return x509.load_der_x509_certificate(base64.b64decode(raw)).public_key()


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
