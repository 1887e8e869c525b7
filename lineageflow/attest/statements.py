"""The in-toto statements a promotion signs, and their DSSE envelopes.

Three Statement v1 documents, each about the same subject (the model as
model-signing digested it, named ``models:/NAME/VERSION``):

- provenance (SLSA provenance v1 shape): the workspace and lineageflow commits,
  every data version, the params' sha256, each stage's output digests, the
  environment, the Prefect and MLflow ids;
- verification (SLSA verification summary v1 shape): each check with its
  outcome and reason, the policy (the declared checks and their digest), the time;
- promotion: the transition(s) this promotion made and a link (sha256 of its
  envelope) to the promotion before it, so the history is a signed chain.

Each is wrapped in a DSSE envelope signed with the promotion key; the files are
JSON Lines (``*.intoto.jsonl``), one envelope per line. Pure functions only.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from lineageflow.attest.keys import keyid
from lineageflow.lineage.record import digest

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PROVENANCE = "https://slsa.dev/provenance/v1"
VERIFICATION = "https://slsa.dev/verification_summary/v1"
PROMOTION = "https://lineageflow.dev/promotion/v1"
BUILD_TYPE = "https://lineageflow.dev/training-pipeline/v1"
POLICY_URI = "https://lineageflow.dev/checks/v1"
ALIAS = "staging"  # the registry alias a promotion moves


def subject(model_name: str, version: str, sha256: str) -> list[dict]:
    return [{"name": f"models:/{model_name}/{version}", "digest": {"sha256": sha256}}]


def statement(subj: list[dict], predicate_type: str, predicate: dict) -> dict:
    return {
        "_type": STATEMENT_TYPE,
        "subject": subj,
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def provenance(record: dict, builder: str) -> dict:
    """SLSA provenance v1 of a lineage record: what the model was built from."""
    ws, code = record["workspace"], record["pipeline"]
    deps = [
        {
            "name": "workspace",
            "uri": f"git+{ws.get('repo') or ws.get('path')}",
            "digest": {"gitCommit": ws["commit"]},
        },
        {
            "name": "lineageflow",
            "uri": f"git+{code.get('repo') or code.get('path')}",
            "digest": {"gitCommit": str(code.get("commit"))},
            "annotations": {"version": code.get("version")},
        },
    ]
    for d in record.get("data", []):
        deps.append(
            {
                "name": d["path"],
                "uri": d.get("uri") or d.get("remote_url") or d["path"],
                "digest": {"md5": d["md5"]},
                "annotations": {
                    k: d[k]
                    for k in ("kind", "version", "timestamp", "dvc_file", "read_md5")
                    if d.get(k) is not None
                },
            }
        )
    outputs = [
        {"name": f"{s['name']}/{o['name']}", "digest": _digest(o["digest"])}
        for s in record.get("stages", [])
        for o in s.get("outputs", [])
        if o.get("digest")
    ]
    mids, orch = record.get("mlflow", {}), record.get("orchestration", {})
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "params": record.get("params"),
                "params_sha256": record.get("params_sha256"),
            },
            "internalParameters": {"environment": record.get("environment")},
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {"id": builder},
            "metadata": {
                "invocationId": f"mlflow-run:{mids.get('parent_run_id')}",
                "prefect_flow_run_id": orch.get("flow_run_id"),
                "mlflow_experiment_id": mids.get("experiment_id"),
                "lineage_digest": digest(record),
            },
            "byproducts": outputs,
        },
    }


def _digest(value: str) -> dict:
    """``md5:abc`` / ``sha256:abc`` / bare hex -> an in-toto DigestSet."""
    algo, _, hexd = value.rpartition(":")
    return {(algo or "sha256"): hexd}


def verification(
    checks: list[dict], policy_sha256: str, verifier: str, when: str, uri: str
) -> dict:
    """SLSA verification summary v1: the checks this promotion ran and passed."""
    passed = all(c["passed"] for c in checks)
    return {
        "verifier": {"id": verifier},
        "timeVerified": when,
        "resourceUri": uri,
        "policy": {"uri": POLICY_URI, "digest": {"sha256": policy_sha256}},
        "verificationResult": "PASSED" if passed else "FAILED",
        "verifiedLevels": ["LINEAGEFLOW_CHECKS_PASSED"] if passed else [],
        "checks": checks,
    }


def promotion(
    model_name: str,
    version: str,
    when: str,
    reason: str,
    archived: list[str],
    previous: dict | None,
    by: str,
) -> dict:
    """None -> Staging for ``version`` (alias ``staging``), Staging -> Archived
    for each of ``archived``; ``previous`` links the promotion before it."""
    return {
        "model": model_name,
        "version": version,
        "alias": ALIAS,
        "time": when,
        "by": by,
        "reason": reason,
        "transitions": [{"version": version, "from": "None", "to": "Staging"}]
        + [{"version": v, "from": "Staging", "to": "Archived"} for v in archived],
        "previous": previous,
    }


# ---------------------------------------------------------------- DSSE


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sign(doc: dict, private: ec.EllipticCurvePrivateKey) -> dict:
    """``doc`` in a DSSE envelope signed with ``private`` (its keyid: sha256 of
    the public key's DER)."""
    # securesystemslib is imported where an envelope is made or opened: every
    # module of attest/ is imported by the training flow, few runs sign
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner, SSlibKey

    public = SSlibKey.from_crypto(
        private.public_key(), keyid=keyid(private.public_key())
    )
    env = Envelope(canonical(doc), PAYLOAD_TYPE, {})
    env.sign(CryptoSigner(private, public))
    return env.to_dict()


def envelope_sha256(env: dict) -> str:
    return hashlib.sha256(canonical(env)).hexdigest()


def open_envelope(env: dict, public: ec.EllipticCurvePublicKey) -> dict:
    """The statement inside ``env`` if ``public`` signed it; ValueError (one
    line) when it did not, or when the envelope is not a statement."""
    from securesystemslib.dsse import Envelope  # see sign()
    from securesystemslib.exceptions import FormatError, VerificationError
    from securesystemslib.signer import SSlibKey

    try:
        # from_dict rewrites the signature dicts it is given: hand it a copy
        envelope = Envelope.from_dict(copy.deepcopy(env))
    except (KeyError, TypeError, ValueError, FormatError):
        raise ValueError("is not a DSSE envelope") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise ValueError(f"has payload type {envelope.payload_type}, not in-toto")
    want = keyid(public)
    key = SSlibKey.from_crypto(public, keyid=want)
    try:
        envelope.verify([key], 1)
    except VerificationError:
        signers = sorted(envelope.signatures)
        if want not in signers:
            raise ValueError(
                f"is signed by key {', '.join(s[:12] for s in signers)}, not by the "
                f"given public key ({want[:12]})"
            ) from None
        raise ValueError("signature does not verify: it was edited") from None
    try:
        doc = json.loads(envelope.payload)
    except ValueError:
        raise ValueError("payload is not JSON") from None
    if doc.get("_type") != STATEMENT_TYPE:
        raise ValueError("payload is not an in-toto Statement v1")
    return doc


def jsonl(envelopes: list[dict]) -> str:
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in envelopes)


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def bundle_subject(bundle: dict) -> dict:
    """The subject (name, sha256) inside a model-signing signature bundle."""
    payload = bundle["dsseEnvelope"]["payload"]
    return json.loads(base64.b64decode(payload))["subject"][0]


def verified_statements(
    path: Path,
    pub: ec.EllipticCurvePublicKey,
    subject: dict,
    signed_sha: str | None,
    failures: list[str],
) -> dict[str, dict]:
    """Each statement in ``path`` whose signature verifies, by predicate type;
    a failure line for every one that does not, or is about another model."""
    found: dict[str, dict] = {}
    try:
        envelopes = read_jsonl(path.read_text())
    except ValueError:
        failures.append(f"{path.name} is not JSON Lines")
        return found
    for i, env in enumerate(envelopes, 1):
        where = f"{path.name} line {i}"
        try:
            doc = open_envelope(env, pub)
        except ValueError as exc:
            failures.append(f"{where} {exc}")
            continue
        subj = (doc.get("subject") or [{}])[0]
        if subj.get("name") != subject["name"]:
            failures.append(
                f"{where} is a statement about {subj.get('name')}, not "
                f"{subject['name']}: it was swapped in from another version"
            )
            continue
        if signed_sha and subj.get("digest", {}).get("sha256") != signed_sha:
            failures.append(
                f"{where} names model sha256 "
                f"{str(subj.get('digest', {}).get('sha256'))[:12]}, not the signed "
                f"model's {signed_sha[:12]}: it was swapped in from another model"
            )
            continue
        found[doc["predicateType"]] = doc["predicate"]
    return found
