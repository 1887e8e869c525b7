"""Serve train, nightly-retrain and reproduce from this process (no work pool):

    LINEAGEFLOW_WORKSPACE=/path/to/workspace python -m deployments.serve

The same names, parameters and schedule as prefect.yaml; flow runs execute in
subprocesses of this one, with this checkout's code.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from prefect import serve
from prefect.schedules import Cron

from flows.reproduce import reproduce_run
from flows.training import training_pipeline
from lineageflow.runs.context import resolve_workspace

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def load_specs(path: Path = PREFECT_YAML) -> list[dict]:
    """The deployments of prefect.yaml, so code and YAML cannot drift apart."""
    return yaml.safe_load(path.read_text())["deployments"]


def build_deployments(workspace: str, path: Path = PREFECT_YAML) -> list:
    flows = {
        "flows/training.py:training_pipeline": training_pipeline,
        "flows/reproduce.py:reproduce_run": reproduce_run,
    }
    built = []
    for spec in load_specs(path):
        params = {
            k: (workspace if isinstance(v, str) and "LINEAGEFLOW_WORKSPACE" in v else v)
            for k, v in (spec.get("parameters") or {}).items()
        }
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone", "UTC"))
            for s in spec.get("schedules") or []
        ]
        built.append(
            flows[spec["entrypoint"]].to_deployment(
                name=spec["name"],
                parameters=params,
                schedules=schedules or None,
                concurrency_limit=spec.get("concurrency_limit"),
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
