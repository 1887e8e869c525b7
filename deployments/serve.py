"""Serve train, nightly-retrain, reproduce, watch and weekly (the audit) from this
process (no work pool):

    LINEAGEFLOW_WORKSPACE=/path/to/workspace python -m deployments.serve

The same names, parameters, schedules, concurrency and trigger as prefect.yaml;
flow runs execute in subprocesses of this one, with this checkout's code.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Interval

from flows.audit import audit_registry
from flows.reproduce import reproduce_run
from flows.training import training_pipeline
from flows.watch import watch_workspace
from lineageflow.runs.context import resolve_workspace

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def load_specs(path: Path = PREFECT_YAML) -> list[dict]:
    """The deployments of prefect.yaml, so code and YAML cannot drift apart."""
    return yaml.safe_load(path.read_text())["deployments"]


def _fill(value, workspace: str):
    """prefect.yaml's ``{{ $LINEAGEFLOW_WORKSPACE }}``, wherever it is, filled in."""
    if isinstance(value, dict):
        return {k: _fill(v, workspace) for k, v in value.items()}
    if isinstance(value, str) and "LINEAGEFLOW_WORKSPACE" in value:
        return workspace
    return value


def _schedule(s: dict):
    if "interval" in s:
        return Interval(s["interval"])
    return Cron(s["cron"], timezone=s.get("timezone", "UTC"))


def _concurrency(limit):
    return ConcurrencyLimitConfig(**limit) if isinstance(limit, dict) else limit


def build_deployments(workspace: str, path: Path = PREFECT_YAML) -> list:
    flows = {
        "flows/training.py:training_pipeline": training_pipeline,
        "flows/reproduce.py:reproduce_run": reproduce_run,
        "flows/watch.py:watch_workspace": watch_workspace,
        "flows/audit.py:audit_registry": audit_registry,
    }
    built = []
    for spec in load_specs(path):
        schedules = [_schedule(s) for s in spec.get("schedules") or []]
        triggers = [
            DeploymentEventTrigger(**_fill(t, workspace))
            for t in spec.get("triggers") or []
        ]
        built.append(
            flows[spec["entrypoint"]].to_deployment(
                name=spec["name"],
                parameters=_fill(spec.get("parameters") or {}, workspace),
                schedules=schedules or None,
                concurrency_limit=_concurrency(spec.get("concurrency_limit")),
                triggers=triggers or None,
                description=spec.get("description"),
                tags=spec.get("tags"),
            )
        )
    return built


def main() -> None:
    workspace = resolve_workspace(os.environ.get("LINEAGEFLOW_WORKSPACE"))
    serve(*build_deployments(workspace))


if __name__ == "__main__":
    main()
