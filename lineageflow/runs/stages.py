"""The stage pattern: one child run per stage, its inputs and outputs by digest,
and reuse of an earlier identical stage — written once, here.

Every stage (pull_data, prepare, train, evaluate, register_model, and each
sweep configuration) runs inside ``stage_run``: its child run under the parent
(explicit parent id, see lineageflow.runs.tracking), tagged with what it read
and wrote (content digests), the sha256 of its params section and the pipeline
code (inherited from the parent: ``lineage.stage.code``). A stage declares its
inputs and, to be reusable, how to load an earlier run's outputs
(``StageIO.reuse``): the key, the lookup, the verification, taking the outputs
over and the "not reusing" message live here. The flow reads the child runs
back into ``lineage.json``'s ``stages`` list (``collect_stages``): MLflow's
child runs stay the one source of truth and the record's digest covers them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import mlflow

from lineageflow.pipeline import RECORDED, declared
from lineageflow.runs import reuse
from lineageflow.runs.artifacts import copy_datasets
from lineageflow.runs.tracking import RunRef, child_run, child_runs
from lineageflow.tags import (
    TAG_INPUT_PREFIX,
    TAG_OUTPUT_PREFIX,
    TAG_STAGE,
    TAG_STAGE_CODE,
    TAG_STAGE_INPUTS,
    TAG_STAGE_KEY,
    TAG_STAGE_OUTPUTS,
    TAG_STAGE_PARAMS_SHA256,
    TAG_STAGE_REUSED_FROM,
)

T = TypeVar("T")


def section_sha256(section: Any) -> str:
    """sha256 of a params section's canonical JSON (a pydantic model or a dict)."""
    if hasattr(section, "model_dump"):
        section = section.model_dump(mode="json")
    blob = json.dumps(section, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class StageIO:
    """What one stage read and wrote; outputs are added as they are made."""

    inputs: list[dict[str, str]] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)
    stage: str = ""
    params_sha256: str | None = None
    ref: RunRef | None = None
    reused_from: str | None = None

    def output(self, name: str, digest: str, uri: str | None = None) -> str:
        entry = {"name": name, "digest": digest} | ({"uri": uri} if uri else {})
        self.outputs.append(entry)
        return digest

    def key(self) -> str | None:
        """This stage's reuse key for its inputs so far (None: reuse is off)."""
        if self.ref is None or not self.ref.reuse_basis:
            return None
        return reuse.stage_key(
            self.stage, self.inputs, self.params_sha256, self.ref.reuse_basis
        )

    def reuse(
        self,
        load: Callable[[reuse.Earlier], T],
        *,
        copy_params: bool = True,
        datasets_also_on: str | None = None,
    ) -> T | None:
        """An earlier identical stage's outputs, or None: compute them.

        ``load(earlier)`` loads and verifies the earlier outputs (each against its
        recorded digest) and raises when it cannot; then this run takes them over
        (``lineage.stage.reused_from``, the earlier run's params and datasets),
        else the stage says why it recomputes."""
        key = self.key()
        ref = self.ref
        if key is None or not ref.reuse_lookup or not declared(self.stage).reusable:
            return None
        earlier = reuse.find(ref.tracking_uri, ref.experiment_id, key, ref.run_id)
        if earlier is None:
            return None
        try:
            value = load(earlier)
        except Exception as exc:  # gone, damaged or changed: recompute
            reuse.declined(self.stage, earlier, exc)
            return None
        self.reused_from = earlier.run_id
        self.outputs.extend(dict(o) for o in earlier.outputs)
        if copy_params:  # what the outputs were made with, e.g. autologged params
            mlflow.log_params(earlier.params)
        # the datasets it logged (schema, profile, digest): MLflow's panels stay whole
        active = mlflow.active_run().info.run_id
        copy_datasets(ref.tracking_uri, earlier.run_id, [active, datasets_also_on])
        return value


@contextlib.contextmanager
def stage_run(
    ref: RunRef,
    stage: str,
    *,
    inputs: list[tuple[str, str]],
    params: Any = None,
    tags: dict[str, str] | None = None,
) -> Iterator[tuple[Any, StageIO]]:
    """The stage's child run (active in this thread, so autolog writes to it).
    ``stage`` must be declared in lineageflow.pipeline."""
    declared(stage)
    io = StageIO(
        inputs=[{"name": n, "digest": d} for n, d in inputs],
        stage=stage,
        params_sha256=section_sha256(params) if params is not None else None,
        ref=ref,
    )
    stage_tags = {
        TAG_STAGE_INPUTS: json.dumps(io.inputs, separators=(",", ":")),
        **({TAG_STAGE_PARAMS_SHA256: io.params_sha256} if io.params_sha256 else {}),
        **(tags or {}),
    }
    with child_run(ref, stage, tags=stage_tags) as active:
        yield active, io
        # both again at the end: a stage may learn an input as it runs (pull_data
        # knows the .dvc md5 once DVC has answered)
        # the key last: only a stage that ended well can be reused
        key = io.key()
        mlflow.set_tags(
            {
                TAG_STAGE_INPUTS: json.dumps(io.inputs, separators=(",", ":")),
                TAG_STAGE_OUTPUTS: json.dumps(io.outputs, separators=(",", ":")),
                **short_tags(io),
                **({TAG_STAGE_REUSED_FROM: io.reused_from} if io.reused_from else {}),
                **({TAG_STAGE_KEY: key} if key else {}),
            }
        )


def short_tags(io: StageIO) -> dict[str, str]:
    """One short tag per input and output (``lineage.in.train_table``,
    ``lineage.out.model``, ``lineage.out.model.uri``): MLflow's tag list cuts the
    JSON tags to a few characters, these read whole. The JSON tags stay (other
    tools read them)."""
    out: dict[str, str] = {}
    for prefix, entries in (
        (TAG_INPUT_PREFIX, io.inputs),
        (TAG_OUTPUT_PREFIX, io.outputs),
    ):
        for e in entries:
            # MLflow refuses a key a path normalisation would change (s3://)
            name = re.sub(r"/{2,}", "/", re.sub(r"[^\w./ -]", "_", e["name"]))[:200]
            out[prefix + name] = e["digest"]
            if e.get("uri"):
                out[prefix + name + ".uri"] = e["uri"][:5000]
    return out


def _entry(run) -> dict[str, Any]:
    tags = run.data.tags
    return {
        "name": tags.get(TAG_STAGE),
        "run_id": run.info.run_id,
        "status": run.info.status,
        "code": tags.get(TAG_STAGE_CODE),
        "params_sha256": tags.get(TAG_STAGE_PARAMS_SHA256),
        "inputs": json.loads(tags.get(TAG_STAGE_INPUTS, "[]")),
        "outputs": json.loads(tags.get(TAG_STAGE_OUTPUTS, "[]")),
        # additive: present only on a stage that took an earlier run's outputs
        **(
            {"reused_from": tags[TAG_STAGE_REUSED_FROM]}
            if TAG_STAGE_REUSED_FROM in tags
            else {}
        ),
    }


def collect_stages(ref: RunRef) -> list[dict[str, Any]]:
    """Every finished stage of the parent run that the record lists, in pipeline
    order (lineageflow.pipeline)."""
    entries = [
        _entry(r)
        for r in child_runs(ref.tracking_uri, ref.experiment_id, ref.run_id)
        if r.data.tags.get(TAG_STAGE) in RECORDED and r.info.status == "FINISHED"
    ]
    key = {name: i for i, name in enumerate(RECORDED)}
    return sorted(
        entries,
        key=lambda e: (key[e["name"]], e["inputs"] and e["inputs"][0]["name"] or ""),
    )
