"""What a finished run tells its caller and both UIs.

The flow's result (``PipelineResult``), its outcome in plain words, the lineage
picture on the parent run, the run's description in MLflow's UI, the Prefect
artifacts (picture, lineage summary with the checks, link to MLflow), and the
wall time of each stage as parent-run metrics.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
)

from lineageflow.errors import PromotionRefused
from lineageflow.lineage import report
from lineageflow.lineage.checks import Check
from lineageflow.lineage.graph import draw
from lineageflow.runs.orchestration import run_logger
from lineageflow.runs.store import artifact_url, client, run_url
from lineageflow.runs.tracking import RunRef
from lineageflow.tags import LINEAGE_PNG


@dataclass
class PipelineResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    metrics: dict[str, float]
    record: dict
    model_name: str | None = None
    model_version: str | None = None
    promoted: bool = False
    identical_to: str | None = None  # the Staging version this run's model equals
    outcome: str = "trained, not registered"  # in plain words, for both UIs
    checks: list[Check] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def refuse_if_failed(self) -> None:
        """Fail the flow run when a check failed; a tie with the champion only
        keeps the champion (the version stays in None, tagged why): no error."""
        PromotionRefused.unless_passed(self.checks, self.outcome, self.model_version)

    def summary(self) -> dict:
        return {
            "timings": self.timings,
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "metrics": self.metrics,
            "model": self.model_name,
            "version": self.model_version,
            "stage": "Staging" if self.promoted or self.identical_to else "None",
            "identical_to": self.identical_to,
            "checks": {c.name: c.passed for c in self.checks},
            "reused": [
                {"stage": s["name"], "from_run": s["reused_from"]}
                for s in self.record.get("stages", [])
                if "reused_from" in s
            ],
        }


class Clock:
    """Wall time per stage, kept on the result and logged as parent metrics."""

    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(time.perf_counter() - t0, 4)


def finish(
    run: RunRef,
    record: dict,
    metrics: dict[str, float],
    decision,
    model_name: str,
    timings: dict[str, float],
    reproduction_of: str | None = None,
) -> PipelineResult:
    """The run's result and its outcome, published: Prefect artifacts, the
    MLflow description, the reused stages and the timings, logged.
    ``decision``: the registry's (lineageflow.registry.promotion.Decision), or
    None for a run that registers nothing."""
    result = PipelineResult(
        run.run_id,
        run.experiment_id,
        run.tracking_uri,
        metrics,
        record,
        timings=timings,
    )
    logger = run_logger()
    for stage in result.record.get("stages", []):
        if "reused_from" in stage:
            logger.info(
                "%s: unchanged since run %s, its outputs reused (digests checked)",
                stage["name"],
                stage["reused_from"],
            )
    if decision is not None:
        result.model_name = model_name
        result.model_version = decision.version
        result.promoted = decision.promoted
        result.identical_to = decision.identical_to
        result.outcome = decision.message(model_name)
        result.checks = decision.checks
    elif reproduction_of:
        result.outcome = (
            f"reproduction of run {reproduction_of} (a reproduction never registers)"
        )
    publish(result)
    if decision is not None:
        logger.info(result.outcome)
    c = client(run.tracking_uri)
    for stage, seconds in result.timings.items():
        c.log_metric(run.run_id, f"time_{stage}_s", seconds)
    return result


def publish(result: PipelineResult) -> None:
    """The lineage picture on the parent run; Prefect artifacts: the picture, the
    lineage summary with the checks, and a link to MLflow."""
    uri = result.tracking_uri
    model = (
        f"{result.model_name} v{result.model_version}" if result.model_version else None
    )
    with tempfile.TemporaryDirectory() as tmp:
        png = draw(result.record, Path(tmp) / LINEAGE_PNG, model, result.checks)
        client(uri).log_artifact(result.run_id, str(png))
    create_image_artifact(
        artifact_url(uri, result.run_id, LINEAGE_PNG),
        key="lineage-graph",
        description=f"commit -> data -> stages -> model of MLflow run {result.run_id}",
    )
    summary = report.markdown_summary(
        result.record, result.checks, outcome=result.outcome, metrics=result.metrics
    )
    # the parent run's description in MLflow's UI (its "mlflow.note.content")
    client(uri).set_tag(result.run_id, "mlflow.note.content", summary)
    create_markdown_artifact(
        summary,
        key="lineage-summary",
        description=f"{result.outcome}: lineage and checks of MLflow run {result.run_id}",
    )
    create_link_artifact(
        run_url(uri, result.experiment_id, result.run_id),
        link_text=f"MLflow run {result.run_id}",
        key="mlflow-run",
    )
