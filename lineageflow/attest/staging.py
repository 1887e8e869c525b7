"""Which version lineageflow's signed promotions put in Staging, and a version
in Staging that none put there: moved by hand (an admin's stage transition or
``staging`` alias, in MLflow's UI or client), which no check or signature saw.

The newest signed promotion is the champion a challenger must beat and the
version a retrain compares with. A run reads it from the tags a signed promotion
writes on its version (``lineage.attestation``, whose folder is the promotion's
UTC time, and ``lineage.promotion_sha256``): an admin who moves a stage or an
alias writes neither. ``lineageflow verify`` reads the newest promotion whose
statement verifies with the key the version it checks verified with
(lineageflow.attest.history).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from mlflow.exceptions import MlflowException

from lineageflow.attest.history import latest_promotion
from lineageflow.attest.statements import ALIAS
from lineageflow.runs.store import client
from lineageflow.tags import TAG_ATTESTATION, TAG_PROMOTION_SHA256

STAMP = "%Y%m%dT%H%M%S%fZ"  # attestation/<stamp>, as lineageflow.attest.sign names it
TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # the promotion statement's ``time``


@dataclass(frozen=True)
class SignedPromotion:
    version: str
    time: str  # the promotion statement's time (UTC)


@dataclass(frozen=True)
class Staging:
    """One model's Staging as the registry holds it, and as signed."""

    model: str
    signed: SignedPromotion | None  # the newest signed promotion
    alias: str | None  # the version behind alias ``staging``
    stage: tuple[str, ...] = ()  # the versions in stage Staging

    @property
    def champion(self) -> str | None:
        """The version a challenger must beat: the newest signed promotion's."""
        return self.signed.version if self.signed else None

    def hand_moved(self) -> list[str]:
        """Versions in Staging (stage or alias) that no signed promotion put there."""
        there = set(self.stage) | ({self.alias} if self.alias else set())
        return sorted(there - {self.champion}, key=int)

    def where(self, version: str) -> str:
        marks = [
            m
            for m, on in (
                ("stage Staging", version in self.stage),
                (f"alias {ALIAS}", version == self.alias),
            )
            if on
        ]
        return ", ".join(marks)

    def line(self) -> str | None:
        """One line naming each hand-moved version and the last signed promotion;
        None when Staging is where the signed promotions put it."""
        moved = self.hand_moved()
        if not moved:
            return None
        if len(moved) == 1:
            what = f"version {moved[0]} is in Staging ({self.where(moved[0])})"
        else:
            each = " and ".join(f"{v} ({self.where(v)})" for v in moved)
            what = f"versions {each} are in Staging"
        head = f"model '{self.model}' {what} without a signed promotion"
        again = moved[0] if len(moved) == 1 else "<version>"
        through = f"`lineageflow promote {self.model} {again}`"
        if self.signed is None:
            return (
                f"{head}: '{self.model}' has no signed promotion at all; promote "
                f"through the checks with {through}, or take it out of Staging"
            )
        return (
            f"{head}: the last signed promotion is version {self.signed.version} "
            f"(signed {self.signed.time}); move it back with `lineageflow promote "
            f"{self.model} {self.signed.version}`, or re-promote through the "
            f"checks with {through}"
        )


def staging(
    tracking_uri: str,
    model: str,
    newest: Callable[[list], SignedPromotion | None] | None = None,
) -> Staging:
    """``model``'s Staging: the newest signed promotion (``newest(versions)``
    when the caller verified the statements, else read from the versions'
    tags), the version behind the alias, the versions in the stage."""
    c = client(tracking_uri)
    try:
        aliases = c.get_registered_model(model).aliases
    except MlflowException:  # no such model: nothing is in Staging
        return Staging(model, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stages are deprecated (FutureWarning)
        found = c.search_model_versions(f"name = '{model}'")
        stage = tuple(str(mv.version) for mv in found if mv.current_stage == "Staging")
    alias = aliases.get(ALIAS)
    signed = (newest or newest_signed)(found)
    return Staging(model, signed, str(alias) if alias is not None else None, stage)


def verified_staging(
    tracking_uri: str, model: str, pub: ec.EllipticCurvePublicKey | None, dst: Path
) -> Staging:
    """``staging`` as ``lineageflow verify`` sees it: the newest promotion whose
    statement verifies with ``pub`` (with no key to check one with, the tags)."""
    if pub is None:
        return staging(tracking_uri, model)
    p = latest_promotion(tracking_uri, model, pub, TAG_ATTESTATION, dst)
    signed = p and SignedPromotion(str(p.get("version")), str(p.get("time")))
    return staging(tracking_uri, model, lambda _versions: signed)


def champion(tracking_uri: str, model: str) -> str | None:
    """The newest signed promotion's version: what a retrain compares with."""
    return staging(tracking_uri, model).champion


def newest_signed(found) -> SignedPromotion | None:
    """The newest promotion among model versions ``found``, by the tags it wrote."""
    newest = None
    for mv in found:
        where = mv.tags.get(TAG_ATTESTATION) or ""
        if not mv.tags.get(TAG_PROMOTION_SHA256):
            continue
        try:
            when = datetime.strptime(where.rstrip("/").rsplit("/", 1)[-1], STAMP)
        except ValueError:  # not a folder a promotion named: it claims nothing
            continue
        if newest is None or when > newest[0]:
            newest = (when, str(mv.version))
    if newest is None:
        return None
    return SignedPromotion(newest[1], newest[0].strftime(TIME))
