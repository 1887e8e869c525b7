"""Verify a registered version before loading it: every model file against its
signature (model-signing), the signed statements (DSSE, the same key) and their
subject, and the promotion history back to the first signed promotion.

Offline and read-only: the model and its attestation are downloaded once into a
directory; ``load_verified`` loads the pyfunc model from those very bytes.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from mlflow.exceptions import MlflowException

from lineageflow.attest import statements as st
from lineageflow.attest.files import Trust, verify_files
from lineageflow.attest.history import follow
from lineageflow.attest.keys import KEY_ENV, configured_key, keyid, load_public
from lineageflow.attest.staging import verified_staging
from lineageflow.errors import AttestationError, SigningKeyError
from lineageflow.runs.artifact_store import (
    download,
    locations,
    read_from,
    refuse_outside,
)
from lineageflow.runs.store import client, redact_uri
from lineageflow.tags import (
    LINEAGE_STATEMENT,
    MODEL_SIGNATURE,
    PROMOTION_STATEMENT,
    TAG_ATTESTATION,
)

URI_RE = re.compile(
    r"^models:/([A-Za-z0-9][A-Za-z0-9._-]{0,127})(?:/([0-9]+)|@([\w-]+))$"
)


@dataclass
class Verified:
    model_uri: str
    name: str
    version: str
    failures: list[str] = field(default_factory=list)
    location: str | None = None
    signed_by: str | None = None
    model_sha256: str | None = None
    provenance: dict | None = None
    verification: dict | None = None
    history: list[dict] = field(default_factory=list)
    model_dir: Path | None = None
    artifacts: str | None = None  # where the model files and statements were read
    # a version in Staging that no signed promotion put there, when this is not
    # a check of @staging itself (attest.staging)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        """One line for a command's output."""
        if self.ok:
            return (
                f"attestation of models:/{self.name}/{self.version} verified (every "
                f"model file and statement, key {self.signed_by[:12]})"
            )
        return (
            f"attestation of models:/{self.name}/{self.version} does not verify: "
            + "; ".join(self.failures)
        )

    def to_json(self) -> dict:
        where = self.location
        return {
            "model_uri": self.model_uri,
            "version": f"models:/{self.name}/{self.version}",
            "verified": self.ok,
            "failures": self.failures,
            "signed_by": self.signed_by,
            "model_sha256": self.model_sha256,
            "signature": f"{where}/{MODEL_SIGNATURE}" if where else None,
            "statement": f"{where}/{LINEAGE_STATEMENT}" if where else None,
            "promotion": f"{where}/{PROMOTION_STATEMENT}" if where else None,
            "provenance": self.provenance,
            "verification": self.verification,
            "history": self.history,
            "artifacts": self.artifacts,
            "warnings": self.warnings,
        }


def resolve(model_uri: str, tracking_uri: str) -> tuple[str, str, str | None]:
    """``models:/NAME/N`` or ``models:/NAME@ALIAS`` -> (name, version, alias)."""
    m = URI_RE.match(model_uri or "")
    if not m:
        raise AttestationError(
            f"{model_uri!r} is not a registered model version: pass "
            f"models:/NAME@{st.ALIAS} or models:/NAME/VERSION"
        )
    name, version, alias = m.groups()
    c = client(tracking_uri)
    try:
        mv = (
            c.get_model_version_by_alias(name, alias)
            if alias
            else c.get_model_version(name, version)
        )
    except MlflowException:
        raise AttestationError(
            f"{model_uri} is not in the MLflow registry at {redact_uri(tracking_uri)}"
        ) from None
    return name, str(mv.version), alias


def verify(
    model_uri: str,
    public_key: str | Path | ec.EllipticCurvePublicKey | None,
    tracking_uri: str,
    into: Path,
    certificate_chain: list[str | Path] | None = None,
    workspace: Path | None = None,
) -> Verified:
    """Download ``model_uri`` and its attestation into ``into`` and verify both,
    against ``public_key`` (a PEM path or key), or for a certificate-signed
    promotion against ``certificate_chain`` (the CA certificates, PEM paths);
    then that Staging is where the signed promotions put it. ``workspace``: the
    one whose store this is; its artifacts outside it are refused (a copy)."""
    trust = _trust(public_key, certificate_chain)
    name, version, alias = resolve(model_uri, tracking_uri)
    out = Verified(model_uri, name, version)
    mv = client(tracking_uri).get_model_version(name, version)
    out.location = mv.tags.get(TAG_ATTESTATION)
    where = locations([f"models:/{name}/{version}", out.location], tracking_uri)
    if workspace is not None:
        refuse_outside(tracking_uri, workspace, where)
    pub = _verify_signed(out, trust, tracking_uri, into, read_from(where))
    # Staging must hold only what the newest signed promotion put there: a hand
    # move fails a check of @staging; checking one version, it is a warning.
    # Promotions are verified with the key this version's verified with (with
    # none, e.g. the wrong key, a signed Staging is not called hand-moved)
    line = verified_staging(tracking_uri, name, pub, into / "latest").line()
    if line:
        (out.failures if alias == st.ALIAS else out.warnings).append(line)
    return out


def _verify_signed(
    out: Verified, trust: Trust, tracking_uri: str, into: Path, where: str | None
) -> ec.EllipticCurvePublicKey | None:
    """The version's files, statements and history; the key its promotion
    statement verified with (None: none did, e.g. unsigned or the wrong key)."""
    name, version = out.name, out.version
    if not out.location:
        out.failures.append(
            f"models:/{name}/{version} is unsigned: it has no {TAG_ATTESTATION} tag "
            "(promoted before signing, or never promoted)"
        )
        return None
    att = _download_attestation(out.location, tracking_uri, into / "attestation", out)
    if att is None:
        return None
    try:
        out.model_dir = download(
            f"models:/{name}/{version}", tracking_uri, into / "model"
        )
        out.artifacts = where
    except (MlflowException, OSError) as exc:
        out.failures.append(
            f"the model files of models:/{name}/{version} cannot be read "
            f"({type(exc).__name__}): they were deleted, or the store does not answer"
        )
        return None
    signed_sha, pub = verify_files(
        out.model_dir, att / MODEL_SIGNATURE, trust, out.failures
    )
    if pub is None:  # a certificate that did not verify vouches for no statement
        return None
    subject = st.subject(name, version, signed_sha or "")[0]
    lineage = st.verified_statements(
        att / LINEAGE_STATEMENT, pub, subject, signed_sha, out.failures
    )
    out.provenance = lineage.get(st.PROVENANCE)
    out.verification = lineage.get(st.VERIFICATION)
    for kind, label in ((st.PROVENANCE, "provenance"), (st.VERIFICATION, "checks")):
        if kind not in lineage and not out.failures:
            out.failures.append(
                f"{LINEAGE_STATEMENT} has no {label} statement ({kind})"
            )
    if out.verification and out.verification.get("verificationResult") != "PASSED":
        out.failures.append(f"{LINEAGE_STATEMENT}: the checks it records did not pass")
    promo = st.verified_statements(
        att / PROMOTION_STATEMENT, pub, subject, signed_sha, out.failures
    )
    if st.PROMOTION in promo:
        out.signed_by = keyid(pub)
        out.model_sha256 = signed_sha
        out.history = follow(
            promo[st.PROMOTION], pub, tracking_uri, into / "history", out.failures
        )
    elif not out.failures:
        out.failures.append(f"{PROMOTION_STATEMENT} has no promotion statement")
    return pub if out.signed_by else None


def _trust(public_key, certificate_chain) -> Trust:
    if certificate_chain:
        for p in map(Path, certificate_chain):
            if not p.is_file():
                raise SigningKeyError(f"certificate chain file {p} does not exist")
        return Trust(chain=tuple(Path(p) for p in certificate_chain))
    if public_key is None:
        raise SigningKeyError(
            "pass the public key (--key) or the CA chain (--cert-chain)"
        )
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return Trust(public_key=public_key)
    return Trust(public_key=load_public(public_key))


def _download_attestation(
    location: str, tracking_uri: str, dst: Path, out: Verified
) -> Path | None:
    try:
        local = download(location, tracking_uri, dst)
    except (MlflowException, OSError) as exc:
        out.failures.append(
            f"the attestation at {location} cannot be read ({type(exc).__name__}): "
            "its artifacts were deleted, or the store does not answer"
        )
        return None
    for f in (MODEL_SIGNATURE, LINEAGE_STATEMENT, PROMOTION_STATEMENT):
        if not (local / f).is_file():
            out.failures.append(f"{f} is missing from the attestation at {location}")
    return None if out.failures else local


def attested(tracking_uri: str, name: str, version: str) -> Verified | None:
    """lineageflow's own gate (promote, reproduce): a version's attestation
    verified with the promotion key's public half; None when it has none."""
    mv = client(tracking_uri).get_model_version(name, version)
    if not mv.tags.get(TAG_ATTESTATION):
        return None
    uri = f"models:/{name}/{version}"
    try:
        key = configured_key()
    except SigningKeyError as exc:
        return Verified(uri, name, version, failures=[str(exc)])
    if key is None:
        why = f"no signing key here to verify it with: set {KEY_ENV}"
        return Verified(uri, name, version, failures=[why])
    chain = list(key.chain) if key.certificate else None  # its CA, for a certificate
    with tempfile.TemporaryDirectory(prefix="lineageflow-verify-") as tmp:
        return verify(uri, key.private.public_key(), tracking_uri, Path(tmp), chain)


def attested_versions(tracking_uri: str, run_id: str) -> list[Verified]:
    """Each signed version registered from run ``run_id``, verified."""
    found = client(tracking_uri).search_model_versions(f"run_id = '{run_id}'")
    checked = (attested(tracking_uri, mv.name, str(mv.version)) for mv in found)
    return [v for v in checked if v is not None]


def load_verified(
    model_uri: str,
    public_key=None,
    tracking_uri: str | None = None,
    certificate_chain: list[str | Path] | None = None,
):
    """The pyfunc model at ``model_uri``, loaded from the very bytes that were
    verified; AttestationError (one line per failure) when anything does not."""
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory(prefix="lineageflow-verified-") as tmp:
        found = verify(model_uri, public_key, uri, Path(tmp), certificate_chain)
        if not found.ok:
            raise AttestationError(
                f"{model_uri} does not verify: " + "; ".join(found.failures)
            )
        # sklearn and xgboost models are read whole: the directory may go after
        return mlflow.pyfunc.load_model(str(found.model_dir))
