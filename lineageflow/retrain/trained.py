"""What MLflow already holds for a change: the Staging version's lineage, and
any parent run that trained the same commit, data and params, whatever its
outcome (the durable "already trained" check; Prefect's event dedupe lasts
about half an hour)."""

from __future__ import annotations

from dataclasses import dataclass

from lineageflow.lineage.record import data_tag
from lineageflow.registry.versions import staging_run
from lineageflow.retrain.changes import Staged
from lineageflow.runs.store import client
from lineageflow.tags import (
    TAG_CHANGE_KEY,
    TAG_CHECKS,
    TAG_ERROR,
    TAG_GIT_COMMIT,
    TAG_PARAMS_SHA256,
)


@dataclass(frozen=True)
class Trained:
    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    outcome: str  # what the run's tags say it ended with

    def line(self) -> str:
        return f"run {self.run_id} ({self.status.lower()}: {self.outcome})"


def staged(tracking_uri: str, model: str, names: list[str]) -> Staged | None:
    """The current Staging version's commit, data md5s and params sha256."""
    found = staging_run(tracking_uri, model)
    if found is None:
        return None
    version, run_id, tags = found
    return Staged(
        version=version,
        run_id=run_id,
        commit=tags.get(TAG_GIT_COMMIT, ""),
        data={n: tags[data_tag(n, "md5")] for n in names if data_tag(n, "md5") in tags},
        params_sha256=tags.get(TAG_PARAMS_SHA256, ""),
    )


def already_trained(tracking_uri: str, experiment: str, key: str) -> Trained | None:
    """The newest parent run that trained this change (TAG_CHANGE_KEY), if any."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG_CHANGE_KEY}` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    tags = run.data.tags
    checks = tags.get(TAG_CHECKS)
    outcome = (
        tags.get(TAG_ERROR)
        or (f"lineage checks {checks}" if checks else None)
        or "no outcome recorded"
    )
    return Trained(run.info.run_id, run.info.status, outcome.splitlines()[0][:200])
