"""Reuse of unchanged stages across runs, like DVC's run-cache.

A stage's *key* is the sha256 of what decides its outputs: the stage name, its
input digests, the sha256 of its params section, and the *basis* — the pipeline
commit, the workspace code it calls, the library versions it runs on and the
commit or content hash of every library installed from a VCS URL, an editable
checkout or a local directory (lineageflow.lineage.pins.private_identity;
archives of released packages, like index releases, are named by version). A
stage that finished under the same key in the same experiment has already made
these outputs: the new run takes them instead of recomputing, after checking
each one against its recorded digest (a table is re-hashed, a model's stored
bytes are re-hashed, data is hashed by DVC). Its child run still exists and
says ``lineage.stage.reused_from`` = the run that produced them, so the lineage
never claims work that did not happen.

There is no basis, and so no key and no reuse, when the pipeline code has
uncommitted changes (its content is not named by the commit), or a library does
(an editable checkout with edits, a VCS install without a commit id). The basis
is made before the run imports anything, so this holds for every such library
installed, whether the run imports it or not. A run with
``reuse=False`` — and every reproduction, which exists to recompute — looks
nothing up but still records its keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from typing import Any

from lineageflow.lineage.environment import installed
from lineageflow.lineage.pins import private_identity
from lineageflow.lineage.record import package_versions
from lineageflow.runs.store import client
from lineageflow.tags import TAG_STAGE_KEY, TAG_STAGE_OUTPUTS, TAG_STAGE_REUSED_FROM

log = logging.getLogger(__name__)

# what a refit depends on besides inputs and params
LIBRARIES = ("numpy", "pandas", "scikit-learn", "xgboost", "mlflow", "cloudpickle")


def _sha256(doc: Any) -> str:
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def basis(pipeline: dict, user_code: list[dict]) -> str | None:
    """The code and environment every stage key includes, or None (no reuse)
    when the running pipeline code is not exactly a commit or a release."""
    if pipeline.get("dirty"):
        return None
    code = pipeline.get("commit") or (
        f"release:{pipeline['version']}" if pipeline.get("dirty") is None else None
    )
    private = private_identity(installed())
    if code is None or private is None:
        return None
    libs = package_versions(LIBRARIES)
    doc = {
        "pipeline": code,
        "user_code": sorted(
            (u["role"], u["file"], u["function"], u["sha256"]) for u in user_code
        ),
        "python": platform.python_version(),
        "libraries": libs,
    }
    if private:  # absent when there is none: keys made before it stay valid
        doc["private_libraries"] = private
    return _sha256(doc)


def stage_key(
    stage: str, inputs: list[dict[str, str]], params_sha256: str | None, base: str
) -> str:
    named = sorted((i["name"], i["digest"]) for i in inputs)
    return _sha256(
        {"stage": stage, "inputs": named, "params": params_sha256, "basis": base}
    )


@dataclass(frozen=True)
class Earlier:
    """A finished stage run with the same key: its outputs and who made them."""

    run_id: str  # the run that computed the outputs (follows reuse chains)
    outputs: list[dict[str, str]]
    params: dict[str, str]
    metrics: dict[str, float]

    def output(self, name: str) -> dict[str, str] | None:
        return next((o for o in self.outputs if o["name"] == name), None)


def find(
    tracking_uri: str, experiment_id: str, key: str, exclude_parent: str
) -> Earlier | None:
    """The latest finished stage run under ``key`` (not one of this parent's)."""
    runs = client(tracking_uri).search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_STAGE_KEY}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    for run in runs:
        tags = run.data.tags
        if tags.get("mlflow.parentRunId") == exclude_parent:
            continue
        try:
            outputs = json.loads(tags.get(TAG_STAGE_OUTPUTS, ""))
        except json.JSONDecodeError:
            continue
        if not outputs:
            continue
        return Earlier(
            run_id=tags.get(TAG_STAGE_REUSED_FROM) or run.info.run_id,
            outputs=outputs,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
        )
    return None


def declined(stage: str, earlier: Earlier, why: BaseException | str) -> None:
    """An earlier output failed its check: say so, and recompute."""
    text = str(why).splitlines()[0] if str(why) else type(why).__name__
    log.warning(
        "%s: not reusing run %s's outputs (%s): recomputing",
        stage,
        earlier.run_id,
        text,
    )
