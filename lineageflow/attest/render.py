"""``lineageflow verify``'s text: the verdict, then what was verified, or each
failure (lineageflow.attest.verify does the verifying)."""

from __future__ import annotations

from lineageflow.attest.verify import Verified
from lineageflow.tags import LINEAGE_STATEMENT, MODEL_SIGNATURE, PROMOTION_STATEMENT


def render(v: Verified) -> str:
    """What a person reads: the verdict, then what was verified, or each failure."""
    head = f"models:/{v.name}/{v.version}"
    if not v.ok:
        return "\n".join(f"FAILED {head}: {f}" for f in v.failures)
    lines = [
        f"verified {head} ({v.model_uri}): every model file matches its signature; "
        f"statements signed by key {v.signed_by[:12]}",
        f"  model sha256 {v.model_sha256}",
        f"  stored at {v.location} ({MODEL_SIGNATURE}, {LINEAGE_STATEMENT}, {PROMOTION_STATEMENT})",
        f"  artifacts read from {v.artifacts}",
    ]
    prov = v.provenance or {}
    deps = prov.get("buildDefinition", {}).get("resolvedDependencies", [])
    for d in deps:
        digest = ", ".join(f"{k}:{val}" for k, val in d.get("digest", {}).items())
        lines.append(f"  from {d.get('name')}: {digest}")
    params = prov.get("buildDefinition", {}).get("externalParameters", {})
    lines.append(f"  params sha256 {params.get('params_sha256')}")
    outputs = prov.get("runDetails", {}).get("byproducts", [])
    lines.append(f"  stage outputs: {len(outputs)} digests")
    for c in (v.verification or {}).get("checks", []):
        mark = "passed" if c.get("passed") else "FAILED"
        lines.append(f"  check {c.get('name')}: {mark}: {c.get('reason')}")
    for h in v.history:
        moves = ", ".join(
            f"v{t['version']} {t['from']} -> {t['to']}"
            for t in h.get("transitions", [])
        )
        lines.append(f"  promotion {h.get('time')}: {moves} ({h.get('reason')})")
    return "\n".join(lines)
