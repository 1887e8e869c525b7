"""The promotion decision: the one module that moves a version to Staging.

Register (or recognise an identical Staging model), run every lineage check on
the *stored* record, the quality gate against the champion, then None ->
Staging (stage and alias ``staging``) only if every one passed, one promotion
at a time per model (lineageflow.registry.locks). MLflow 3 keeps stages
(deprecated since 2.9, hidden in the new UI) and recommends aliases, so a
promotion does both on the same version.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mlflow.exceptions import MlflowException

from lineageflow.attest.sign import Signed, previous_link, sign_promotion
from lineageflow.attest.staging import staging
from lineageflow.config import EvaluateConfig
from lineageflow.errors import LineageflowError, PromotionRefused
from lineageflow.lineage import checks, report
from lineageflow.lineage.checks import Check
from lineageflow.lineage.evidence import LiveEvidence
from lineageflow.registry import champion, versions
from lineageflow.registry import gate as quality
from lineageflow.registry.champion import Champion
from lineageflow.registry.locks import promotion_lock, promotion_slot
from lineageflow.registry.versions import STAGING_ALIAS
from lineageflow.runs.store import client
from lineageflow.runs.tracking import child_runs
from lineageflow.tags import (
    TAG_CHECK_PREFIX,
    TAG_CHECKS,
    TAG_FAILED_CHECKS,
    TAG_MODEL_DIGEST,
    TAG_STAGE,
    TAG_TRAIN_KEY,
)

# (checks, versions it archives, link to the promotion before) -> where it is
Sign = Callable[[list[Check], list[str], dict | None], Signed]


@dataclass(frozen=True)
class Decision:
    version: str
    promoted: bool
    checks: list[Check]
    previous: str | None
    # the Staging version whose model has this run's model digest: nothing was
    # registered and nothing was checked (the champion stays as it is)
    identical_to: str | None = None
    # a version found in Staging that no signed promotion put there, as one line
    # (lineageflow.attest.staging); the champion was the signed one all the same
    hand_moved: str | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def message(self, model_name: str) -> str:
        if self.identical_to:
            return (
                f"{model_name}: identical to v{self.identical_to}, the Staging "
                "version (the same model, or a fit of the same train table, params, "
                "code and libraries): nothing registered"
            )
        if self.promoted:
            return f"{model_name} v{self.version} promoted to Staging"
        return f"{model_name} v{self.version} stays in None: " + checks.summary_line(
            self.failed
        )


def register(
    tracking_uri: str,
    model_name: str,
    record: dict,
    run_id: str,
    model_uri: str,
    model_digest: str,
    workspace: Path,
    **decide_kw,
) -> Decision:
    """A trained model's way to the registry: nothing when the Staging version
    is the same model (its digest, or a fit with the same train stage key);
    else a version in None carrying its lineage tags, then ``decide``."""
    _, train_key = versions.train_identity(tracking_uri, record)
    found = staging(tracking_uri, model_name)
    same = champion.identical_champion(
        tracking_uri, model_name, model_digest, train_key, found.champion
    )
    if same is not None:
        return Decision(
            same, False, [], same, identical_to=same, hand_moved=found.line()
        )
    tags = versions.version_tags(record, run_id)
    if model_digest:  # lets a later identical retrain be recognised
        tags[TAG_MODEL_DIGEST] = model_digest
    if train_key:
        tags[TAG_TRAIN_KEY] = train_key
    version = versions.register_version(
        tracking_uri, model_name, model_uri, run_id, tags
    )
    return decide(
        tracking_uri, model_name, version, run_id, workspace, model_uri, **decide_kw
    )


def decide(
    tracking_uri: str,
    model_name: str,
    version: str,
    run_id: str,
    workspace: Path,
    model_uri: str | None,
    *,
    in_progress: bool,
    metrics: dict[str, float],
    evaluate_cfg: EvaluateConfig,
    champion: Champion,
    promote: bool,
) -> Decision:
    """Every check on the *stored* record (an edit since the run is caught), the
    gate, and the decision written onto the version: one promotion at a time."""
    with promotion_slot(model_name), promotion_lock(tracking_uri, model_name):
        record, tags = versions.load_lineage(tracking_uri, run_id)
        runs = runs_complete(tracking_uri, record, model_uri, in_progress=in_progress)
        evidence = LiveEvidence(workspace)
        found = checks.run_checks(record, tags, evidence, runs)
        found += gate(metrics, evaluate_cfg, champion)
        key = None
        if promote:
            key, key_check = quality.signing_key_check()
            found.append(key_check)
        return apply_decision(
            tracking_uri,
            model_name,
            version,
            found,
            promote,
            description=report.version_description,
            record=record,
            sign=key
            and partial(
                sign_promotion, tracking_uri, model_name, version, record, key=key
            ),
        )


def gate(
    metrics: dict[str, float], cfg: EvaluateConfig, champion: Champion
) -> list[Check]:
    """The quality threshold, then champion/challenger (``champion()`` gives the
    Staging version's metrics to beat, or raises ValueError when it cannot)."""
    try:
        best, version = champion()
        return quality.quality_gate(metrics, cfg, best, version)
    except ValueError as exc:
        return quality.quality_gate(metrics, cfg)[:1] + [
            Check("champion", False, f"{exc}: promote by hand if intended")
        ]


def runs_complete(
    tracking_uri: str, record: dict, model_uri: str | None, in_progress: bool
) -> Check:
    """The runs_complete check's evidence: run statuses and the model's signature."""
    mids = record["mlflow"]
    parent = client(tracking_uri).get_run(mids["parent_run_id"])
    children: dict[str, list[str]] = {}
    for run in child_runs(tracking_uri, mids["experiment_id"], mids["parent_run_id"]):
        stage = run.data.tags.get(TAG_STAGE, "")
        children.setdefault(stage, []).append(run.info.status)
    has_model = has_sig = False
    if model_uri:
        try:
            meta = versions.model_meta(model_uri, tracking_uri)
            has_model, has_sig = True, meta.signature is not None
        except (MlflowException, OSError):
            pass
    return checks.check_runs_complete(
        parent.info.status, children, has_model, has_sig, parent_in_progress=in_progress
    )


def apply_decision(
    tracking_uri: str,
    model_name: str,
    version: str,
    found: list[Check],
    promote: bool,
    description=None,
    record: dict | None = None,
    sign: Sign | None = None,
) -> Decision:
    """Write the checks onto the version, then promote only if every one passed.

    Order matters for "no half-promoted model": each check's tag first (so a
    version in Staging always says why), then stage, then alias, and only then
    ``lineage.checks=passed``: a version that did not reach Staging never says
    it passed. ``sign`` signs the model and the promotion before anything is
    written (a failure is the ``signing_key`` check's); its tags are written
    once the stage and alias moved. ``description(record, checks, promoted,
    signed)`` writes the markdown the registry page shows.
    """
    c = client(tracking_uri)
    now = staging(tracking_uri, model_name)  # the champion: the newest signed one
    previous, hand_moved = now.champion, now.line()
    staged, signed = _other_staging(c, model_name, keep=version), None
    if promote and sign is not None and all(ch.passed for ch in found):
        try:
            signed = sign(
                found, staged, previous_link(tracking_uri, model_name, previous)
            )
        except (LineageflowError, MlflowException, OSError, ValueError) as exc:
            found = _signing_failed(found, exc)
    failed = [ch for ch in found if not ch.passed]
    for ch in found:
        c.set_model_version_tag(
            model_name, version, TAG_CHECK_PREFIX + ch.name, ch.tag_value()[:5000]
        )
    will_promote = promote and not failed
    if description is not None and record is not None:
        text = description(record, found, will_promote, signed and signed.tags())
        c.update_model_version(model_name, version, description=text)
    if not will_promote:
        c.set_model_version_tag(
            model_name, version, TAG_CHECKS, "failed" if failed else "passed"
        )
        if failed:
            c.set_model_version_tag(
                model_name,
                version,
                TAG_FAILED_CHECKS,
                ",".join(ch.name for ch in failed),
            )
        return Decision(version, False, found, previous, hand_moved=hand_moved)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stages are deprecated, still the UI's Staging
        _archive_staging(c, model_name, staged, keep=version)
        c.transition_model_version_stage(
            model_name, version, "Staging", archive_existing_versions=False
        )
    c.set_registered_model_alias(model_name, STAGING_ALIAS, version)
    for k, v in (signed.tags() if signed else {}).items():
        c.set_model_version_tag(model_name, version, k, v)
    c.set_model_version_tag(model_name, version, TAG_CHECKS, "passed")
    return Decision(version, True, found, previous, hand_moved=hand_moved)


def _signing_failed(found: list[Check], exc: Exception) -> list[Check]:
    """Signing failed: nothing is moved; check ``signing_key`` says why."""
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    why = f"signing failed ({type(exc).__name__}: {detail})"
    return [ch for ch in found if ch.name != "signing_key"] + [
        Check("signing_key", False, why)
    ]


def _other_staging(c, model_name: str, keep: str) -> list[str]:
    found = c.search_model_versions(f"name = '{model_name}'")
    return [
        str(mv.version)
        for mv in found
        if mv.current_stage == "Staging" and str(mv.version) != str(keep)
    ]


def _archive_staging(c, model_name: str, staged: list[str], keep: str) -> None:
    """Move every other Staging version to Archived, one by one.

    Not ``archive_existing_versions=True``: an MLflow 3.17 server on PostgreSQL
    with psycopg 3 compares the version column with a string there and fails
    ("operator does not exist: integer <> character varying",
    https://github.com/mlflow/mlflow/issues/24592; reproduced here). Done under
    the promotion lock, so no other promotion interleaves.
    """
    for v in staged:
        c.transition_model_version_stage(model_name, v, "Archived")
        mv = c.get_model_version(model_name, v)
        c.update_model_version(
            model_name, v, description=report.archived_description(mv.description, keep)
        )


def refuse_if_failed(decision: Decision, model_name: str) -> None:
    """Fail the flow run when a check failed; a tie with the champion only keeps
    the champion (the version stays in None, tagged why), it is no error."""
    PromotionRefused.unless_passed(
        decision.checks, decision.message(model_name), decision.version
    )
