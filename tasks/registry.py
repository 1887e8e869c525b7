"""record_lineage and register_model."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lineageflow.config import EvaluateConfig, RegisterConfig
from lineageflow.lineage import record as lineage
from lineageflow.model import ml
from lineageflow.registry import promotion
from lineageflow.registry import versions as registry
from lineageflow.runs.stages import stage_run
from lineageflow.runs.tracking import RunRef, client
from tasks import retry_unless_user_error


@task(
    name="record_lineage",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_unless_user_error,
    cache_policy=NO_CACHE,
)
def record_lineage(record: dict, run: RunRef) -> str:
    """Log ``lineage.json`` at the parent run's root and the flat ``lineage.*`` tags."""
    from mlflow.entities import RunTag

    c = client(run.tracking_uri)
    c.log_dict(run.run_id, record, "lineage.json")
    tags = lineage.flat_tags(record) | {"lineage.digest": lineage.digest(record)}
    c.log_batch(run.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    return tags["lineage.digest"]


@task(name="register_model", cache_policy=NO_CACHE)
def register_model(
    workspace: str,
    record: dict,
    model_uri: str,
    metrics: dict[str, float],
    split: ml.Split,
    evaluate_cfg: EvaluateConfig,
    cfg: RegisterConfig,
    run: RunRef,
    model_digest: str = "",
) -> promotion.Decision:
    """Register a version in None; promote it to Staging only if every check passes.

    Its own child run records what it was handed (the model and the lineage
    record, by digest) and the version it made."""
    uri = run.tracking_uri
    inputs = [("model", model_digest), ("lineage.json", lineage.digest(record))]
    with stage_run(run, "register_model", inputs=inputs, params=cfg) as (_, io):
        _, train_key = registry.train_identity(uri, record)
        same = promotion.identical_champion(
            uri, cfg.model_name, model_digest, train_key
        )
        if same is not None:
            io.output("model_version", f"{cfg.model_name}/{same}")
            decision = promotion.Decision(same, False, [], same, identical_to=same)
            client(uri).set_tag(
                run.run_id, "lineage.identical_to", f"{cfg.model_name}/{same}"
            )
            return decision
        tags = version_tags(record, run.run_id)
        if model_digest:  # lets a later identical retrain be recognised
            tags["lineage.model_digest"] = model_digest
        if train_key:
            tags["lineage.train_key"] = train_key
        version = registry.register_version(
            uri, cfg.model_name, model_uri, run.run_id, tags
        )
        decision = promotion.decide(
            uri,
            cfg.model_name,
            version,
            run.run_id,
            Path(workspace),
            model_uri,
            in_progress=True,
            metrics=metrics,
            evaluate_cfg=evaluate_cfg,
            champion=lambda: promotion.score_champion(uri, cfg.model_name, split),
            promote=cfg.promote,
        )
        io.output("model_version", f"{cfg.model_name}/{decision.version}")
    c = client(uri)
    c.set_tag(
        run.run_id, "lineage.model_version", f"{cfg.model_name}/{decision.version}"
    )
    c.set_tag(run.run_id, "lineage.checks", "failed" if decision.failed else "passed")
    return decision


def version_tags(record: dict, run_id: str) -> dict[str, str]:
    """The lineage summary a registered version carries as tags."""
    return {
        "lineage.run_id": run_id,
        "lineage.git_commit": record["workspace"]["commit"],
        "lineage.digest": lineage.digest(record),
        "lineage.params_sha256": record["params_sha256"],
        "lineage.data_md5s": ",".join(
            f"{d['path']}={d['md5']}" for d in record["data"]
        ),
    }
