"""What a promotion needs beyond lineage: the quality gate (two checks on the
model's holdout metric) and a key to sign it with, declared with the lineage
checks (lineageflow.lineage.checks) and run by the promotion decision
(lineageflow.registry.promotion) after them."""

from __future__ import annotations

import sys

from lineageflow.attest import keys
from lineageflow.attest.keys import SigningKey
from lineageflow.config import EvaluateConfig
from lineageflow.errors import SigningKeyError
from lineageflow.lineage.checks import Check, declare
from lineageflow.model.ml import HIGHER_IS_BETTER

declare(
    "quality_threshold",
    "the holdout metric misses `evaluate.threshold`",
    "improve the model/data, or change the threshold",
)
declare(
    "champion",
    "the model scores worse than the current Staging version on the same holdout, "
    "or only ties it (a tie keeps the champion and completes the run)",
    "keep the champion, or raise `evaluate.champion_tolerance`",
)
declare(
    "signing_key",
    "the promotion key cannot sign: unreadable, passphrase-protected, or not an EC "
    "P-256/384/521 key (nothing is signed, nothing moves)",
    "set `LINEAGEFLOW_SIGNING_KEY` to an unencrypted EC PEM key "
    "(`lineageflow keygen DIR`), then `lineageflow promote <model> <version>`",
)


def check_signing_key(problem: str | None, keyid: str | None) -> Check:
    """The promotion key, loaded before anything is signed or moved."""
    if problem:
        return Check("signing_key", False, problem)
    return Check("signing_key", True, f"signs with key {keyid[:12]}")


def quality_gate(
    metrics: dict[str, float],
    cfg: EvaluateConfig,
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
) -> list[Check]:
    """Threshold on the configured metric, then champion/challenger on one holdout."""
    # an unset metric or threshold as the run chose it (regression scores have r2)
    cfg = cfg.for_task("regression" if "r2" in metrics else "classification")
    name, higher = cfg.metric, HIGHER_IS_BETTER[cfg.metric]
    value = metrics.get(name, float("nan"))
    op = ">=" if higher else "<="
    if cfg.threshold is None:
        results = [
            Check(
                "quality_threshold",
                True,
                f"{name} {value:.4f}: no threshold set for {name} "
                "(set evaluate.threshold to gate on one)",
            )
        ]
    else:
        ok = value >= cfg.threshold if higher else value <= cfg.threshold
        results = [
            Check(
                "quality_threshold",
                bool(ok),
                f"{name} {value:.4f} {op} threshold {cfg.threshold}"
                if ok
                else f"{name} {value:.4f} misses the threshold {op} {cfg.threshold}"
                ": improve the model or data, or lower evaluate.threshold",
            )
        ]
    if champion is None:
        results.append(Check("champion", True, "no signed Staging version to beat"))
        return results
    best = champion.get(name, float("nan"))
    tol = cfg.champion_tolerance
    # A tie does not beat the champion: with no tolerance a challenger must be
    # strictly better, so an equal retrain never archives the version in Staging.
    if tol > 0:
        beats = value >= best - tol if higher else value <= best + tol
    else:
        beats = value > best if higher else value < best
    tie = not beats and value == best
    if beats:
        why = f"{name} {value:.4f} vs Staging v{champion_version} {best:.4f} on this holdout"
    elif tie:
        why = (
            f"{name} {value:.4f} ties Staging v{champion_version} on this holdout: "
            "the champion stays; a challenger must beat it (or set "
            "evaluate.champion_tolerance to accept ties)"
        )
    else:
        why = (
            f"{name} {value:.4f} is worse than Staging v{champion_version} "
            f"({best:.4f}) on this holdout: keep the champion, or raise "
            "evaluate.champion_tolerance"
        )
    results.append(Check("champion", bool(beats), why, tie=bool(tie)))
    return results


def signing_key_check() -> tuple[SigningKey | None, Check]:
    """The promotion key and the ``signing_key`` check: a key that cannot sign
    refuses the promotion (the version stays in None with the reason)."""
    try:
        key, made = keys.signing_key()
    except SigningKeyError as exc:
        return None, check_signing_key(str(exc), None)
    if made:
        print(
            f"lineageflow: generated a signing key pair in {key.path.parent}; "
            f"verify with its public key {key.path.with_name(keys.PUBLIC_NAME)}",
            file=sys.stderr,
        )
    return key, check_signing_key(None, key.keyid)
