"""Sign a promotion: the model's files (OpenSSF model signing, the promotion key),
and its lineage, checks and transition as in-toto statements (same key).

Everything is written into a fresh folder ``attestation/<UTC stamp>/`` of the
version's ``register_model`` run before the version is tagged with where it is
(``lineage.attestation``): a failed upload leaves no tag pointing at half a
signature. lineageflow.registry.promotion calls this before it moves the stage
and the alias, so a version that reaches Staging is signed.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where it signs: with statements, 0.5 s a process
    import model_signing

from lineageflow import __version__
from lineageflow.attest import statements as st
from lineageflow.attest.files import hashing
from lineageflow.attest.keys import SigningKey
from lineageflow.lineage.checks import DECLARED, Check
from lineageflow.runs.artifact_store import download
from lineageflow.runs.store import client
from lineageflow.runs.tracking import child_runs
from lineageflow.tags import (
    ATTESTATION_DIR,
    LINEAGE_STATEMENT,
    MODEL_SIGNATURE,
    PROMOTION_STATEMENT,
    TAG_ATTESTATION,
    TAG_PROMOTION_SHA256,
    TAG_SIGNED_BY,
    TAG_SIGNED_MODEL_SHA256,
    TAG_STAGE,
)

BUILDER = f"lineageflow/{__version__}"


@dataclass(frozen=True)
class Signed:
    location: str  # runs:/<register run>/attestation/<stamp>
    keyid: str
    model_sha256: str
    promotion_sha256: str

    def tags(self) -> dict[str, str]:
        return {
            TAG_ATTESTATION: self.location,
            TAG_SIGNED_BY: self.keyid,
            TAG_SIGNED_MODEL_SHA256: self.model_sha256,
            TAG_PROMOTION_SHA256: self.promotion_sha256,
        }


def signer(key: SigningKey) -> model_signing.signing.Config:
    """model-signing's key signer, or its certificate signer when the key has a
    certificate; never its default (Sigstore: network and an OIDC login)."""
    import model_signing

    cfg = model_signing.signing.Config()
    if key.certificate is not None:
        return cfg.use_certificate_signer(
            private_key=key.path,
            signing_certificate=key.certificate,
            certificate_chain=key.chain,
        )
    return cfg.use_elliptic_key_signer(private_key=key.path)


def policy_sha256() -> str:
    """The policy's version: sha256 of the declared checks (name, refuses, fix)."""
    return st.envelope_sha256(
        {"checks": [[d.name, d.refuses, d.fix] for d in DECLARED]}
    )


def register_run_id(tracking_uri: str, record: dict) -> str:
    """The ``register_model`` child run of the record's parent run: where the
    version's attestations are stored (the latest, if it ran more than once)."""
    mids = record["mlflow"]
    runs = [
        r
        for r in child_runs(tracking_uri, mids["experiment_id"], mids["parent_run_id"])
        if r.data.tags.get(TAG_STAGE) == "register_model"
    ]
    if not runs:  # a record from before stages: the parent run keeps them
        return mids["parent_run_id"]
    return max(runs, key=lambda r: r.info.start_time).info.run_id


def previous_link(
    tracking_uri: str, model_name: str, staging: str | None
) -> dict | None:
    """The link to the promotion before this one: the Staging version's latest
    promotion statement (its sha256 and where it is), or None for the first."""
    if staging is None:
        return None
    tags = client(tracking_uri).get_model_version(model_name, staging).tags
    if not tags.get(TAG_PROMOTION_SHA256):
        return {"version": staging, "sha256": None, "location": None}  # unsigned
    return {
        "version": staging,
        "sha256": tags[TAG_PROMOTION_SHA256],
        "location": f"{tags[TAG_ATTESTATION]}/{PROMOTION_STATEMENT}",
    }


def sign_promotion(
    tracking_uri: str,
    model_name: str,
    version: str,
    record: dict,
    found: list[Check],
    archived: list[str],
    previous: dict | None,
    *,
    key: SigningKey,
) -> Signed:
    """Sign version ``version``'s files and statements; store them (not yet tagged)."""
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stamp = when.replace("-", "").replace(":", "").replace(".", "")
    uri = f"models:/{model_name}/{version}"
    with tempfile.TemporaryDirectory(prefix="lineageflow-sign-") as tmp:
        model_dir = download(uri, tracking_uri, Path(tmp) / "model")
        out = Path(tmp) / "out"
        out.mkdir()
        signer(key).set_hashing_config(hashing()).sign(model_dir, out / MODEL_SIGNATURE)
        signed = st.bundle_subject(json.loads((out / MODEL_SIGNATURE).read_text()))
        sha = signed["digest"]["sha256"]
        subject = st.subject(model_name, version, sha)
        checks = [
            {"name": c.name, "passed": c.passed, "reason": c.reason} for c in found
        ]
        lineage = [
            st.statement(subject, st.PROVENANCE, st.provenance(record, BUILDER)),
            st.statement(
                subject,
                st.VERIFICATION,
                st.verification(checks, policy_sha256(), BUILDER, when, uri),
            ),
        ]
        promotion = st.sign(
            st.statement(
                subject,
                st.PROMOTION,
                st.promotion(
                    model_name,
                    version,
                    when,
                    "every lineage check and the quality gate passed",
                    archived,
                    previous,
                    BUILDER,
                ),
            ),
            key.private,
        )
        (out / LINEAGE_STATEMENT).write_text(
            st.jsonl([st.sign(s, key.private) for s in lineage])
        )
        (out / PROMOTION_STATEMENT).write_text(st.jsonl([promotion]))
        run_id = register_run_id(tracking_uri, record)
        client(tracking_uri).log_artifacts(
            run_id, str(out), f"{ATTESTATION_DIR}/{stamp}"
        )
    return Signed(
        location=f"runs:/{run_id}/{ATTESTATION_DIR}/{stamp}",
        keyid=key.keyid,
        model_sha256=sha,
        promotion_sha256=st.envelope_sha256(promotion),
    )
