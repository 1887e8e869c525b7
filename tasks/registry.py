"""record_lineage and register_model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lineageflow import lineage, ml, registry
from lineageflow.config import EvaluateConfig, RegisterConfig
from lineageflow.stages import stage_run
from lineageflow.tracking import RunRef, client
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


@contextlib.contextmanager
def promotion_slot(model_name: str) -> Iterator[None]:
    """One promotion per model across machines, via a Prefect global concurrency
    limit of 1 when a Prefect server is in use (the file lock in
    ``registry.promotion_lock`` covers one machine and the ephemeral API)."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        yield
        return
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = f"lineageflow-promote-{model_name}"
    with get_client(sync_client=True) as pc:
        try:
            pc.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            # a missing limit would make `concurrency` a silent no-op
            with contextlib.suppress(ObjectAlreadyExists):
                pc.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
    with concurrency(name, occupy=1, timeout_seconds=900, strict=True):
        yield


def _champion_metrics(tracking_uri: str, model_name: str, split: ml.Split):
    """Score the current Staging version on *this* holdout (same rows, same labels)."""
    version = registry.current_staging(tracking_uri, model_name)
    if version is None:
        return None, None
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    model = registry.load_native(f"models:/{model_name}/{version}")
    try:
        return ml.score(model, split.X_test, split.y_test, split.task), version
    except Exception as exc:  # e.g. the feature set changed between versions
        raise ValueError(
            f"Staging v{version} cannot score this holdout ({type(exc).__name__}: {exc})"
        ) from exc


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
) -> registry.Decision:
    """Register a version in None; promote it to Staging only if every check passes.

    Its own child run records what it was handed (the model and the lineage
    record, by digest) and the version it made."""
    uri = run.tracking_uri
    inputs = [("model", model_digest), ("lineage.json", lineage.digest(record))]
    with stage_run(run, "register_model", inputs=inputs, params=cfg) as (_, io):
        decision = _register(
            workspace, record, model_uri, metrics, split, evaluate_cfg, cfg, run
        )
        io.output("model_version", f"{cfg.model_name}/{decision.version}")
    c = client(uri)
    c.set_tag(
        run.run_id, "lineage.model_version", f"{cfg.model_name}/{decision.version}"
    )
    c.set_tag(run.run_id, "lineage.checks", "failed" if decision.failed else "passed")
    return decision


def _register(
    workspace: str,
    record: dict,
    model_uri: str,
    metrics: dict[str, float],
    split: ml.Split,
    evaluate_cfg: EvaluateConfig,
    cfg: RegisterConfig,
    run: RunRef,
) -> registry.Decision:
    uri = run.tracking_uri
    tags = {
        "lineage.run_id": run.run_id,
        "lineage.git_commit": record["workspace"]["commit"],
        "lineage.digest": lineage.digest(record),
        "lineage.params_sha256": record["params_sha256"],
        "lineage.data_md5s": ",".join(
            f"{d['path']}={d['md5']}" for d in record["data"]
        ),
    }
    version = registry.register_version(
        uri, cfg.model_name, model_uri, run.run_id, tags
    )
    with promotion_slot(cfg.model_name), registry.promotion_lock(uri, cfg.model_name):
        stored, stored_tags = registry.load_lineage(uri, run.run_id)
        checks = lineage.run_checks(
            stored,
            stored_tags,
            registry.LiveEvidence(Path(workspace)),
            registry.runs_check(uri, stored, model_uri, in_progress=True),
        )
        try:
            champion, champ_version = _champion_metrics(uri, cfg.model_name, split)
            gate = ml.quality_gate(metrics, evaluate_cfg, champion, champ_version)
        except ValueError as exc:
            gate = ml.quality_gate(metrics, evaluate_cfg)[:1] + [
                lineage.Check("champion", False, f"{exc}: promote by hand if intended")
            ]
        checks += gate
        return registry.apply_decision(
            uri,
            cfg.model_name,
            version,
            checks,
            cfg.promote,
            description=lineage.version_description,
            record=stored,
        )
