"""record_lineage and register_model."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from lineageflow.config import EvaluateConfig, RegisterConfig
from lineageflow.data.source import Version
from lineageflow.lineage.record import digest, flat_tags
from lineageflow.model.ml import Split
from lineageflow.registry import champion, promotion
from lineageflow.reproduce.why import why_it_changed, with_why
from lineageflow.runs.context import RunContext
from lineageflow.runs.stages import stage_run
from lineageflow.runs.store import client
from lineageflow.runs.tracking import RunRef, log_tags
from lineageflow.tags import (
    LINEAGE_JSON,
    TAG_CHECKS,
    TAG_DIGEST,
    TAG_HAND_MOVED,
    TAG_IDENTICAL_TO,
    TAG_MODEL_VERSION,
)
from tasks import retry_unless_user_error
from tasks.model import TrainedModel


@task(
    name="record_lineage",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_unless_user_error,
    cache_policy=NO_CACHE,
)
def record_lineage(
    ctx: RunContext,
    run: RunRef,
    data: list[Version],
    modules: tuple[str, ...] = (),
    compute: dict | None = None,
) -> dict:
    """The run's lineage record, once every stage has recorded its own: logged as
    ``lineage.json`` at the parent run's root and as flat ``lineage.*`` tags.
    ``modules``: those imported where the model was fitted outside this process
    (a notebook's kernel), so the record names their distributions too;
    ``compute``: where the engine computed (lineageflow.engines)."""
    record = ctx.record(run, data, modules=modules, compute=compute)
    client(run.tracking_uri).log_dict(run.run_id, record, LINEAGE_JSON)
    log_tags(run, flat_tags(record) | {TAG_DIGEST: digest(record)})
    return record


@task(name="register_model", cache_policy=NO_CACHE)
def register_model(
    record: dict,
    trained: TrainedModel,
    metrics: dict[str, float],
    split: Split,
    evaluate_cfg: EvaluateConfig,
    cfg: RegisterConfig,
    run: RunRef,
    workspace: str,
) -> promotion.Decision:
    """Register a version in None; promote it to Staging only if every check passes
    (lineageflow.registry.promotion decides). Its own child run records what it
    was handed (the model and the lineage record, by digest) and the version; a
    version found moved into Staging by hand is a warning and a parent-run tag."""
    uri, name = run.tracking_uri, cfg.model_name
    inputs = [("model", trained.digest), (LINEAGE_JSON, digest(record))]
    with stage_run(run, "register_model", inputs=inputs, params=cfg) as (_, io):
        decision = promotion.register(
            uri,
            name,
            record,
            run.run_id,
            trained.model_uri,
            trained.digest,
            Path(workspace),
            in_progress=True,
            metrics=metrics,
            evaluate_cfg=evaluate_cfg.for_task(split.task),
            champion=lambda: champion.score_champion(uri, name, split),
            promote=cfg.promote,
        )
        io.output("model_version", f"{name}/{decision.version}")
    if decision.previous and not decision.identical_to:
        explain(uri, name, decision, run.run_id, workspace)
    if decision.identical_to:
        tags = {TAG_IDENTICAL_TO: f"{name}/{decision.identical_to}"}
    else:
        tags = {
            TAG_MODEL_VERSION: f"{name}/{decision.version}",
            TAG_CHECKS: "failed" if decision.failed else "passed",
        }
    if decision.hand_moved:  # said, tagged; the run went on with the signed one
        get_run_logger().warning(decision.hand_moved)
        tags[TAG_HAND_MOVED] = decision.hand_moved[:5000]
    log_tags(run, tags)
    return decision


def explain(uri: str, name: str, decision, run_id: str, workspace: str) -> None:
    """Why this version differs from the champion it was measured against: a
    Prefect artifact on the flow run and a section of the version's description."""
    try:
        why = why_it_changed(
            uri, name, decision.version, decision.previous, run_id, Path(workspace)
        )
    except Exception as exc:  # an explanation never undoes the decision made
        get_run_logger().warning("why-it-changed not written: %s", exc)
        return
    create_markdown_artifact(
        why,
        key="why-it-changed",
        description=f"{name} v{decision.version} against the champion "
        f"v{decision.previous}",
    )
    c = client(uri)
    mv = c.get_model_version(name, decision.version)
    c.update_model_version(
        name, decision.version, description=with_why(mv.description, why)
    )
