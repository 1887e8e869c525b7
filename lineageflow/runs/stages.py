"""The stage pattern: one child run per stage, its inputs and outputs with digests.

Every stage (pull_data, prepare, train, evaluate, register_model) runs inside
``stage_run``: its child run under the parent (explicit parent id, see
lineageflow.runs.tracking), tagged with what it read and wrote (content digests),
the sha256 of its params section and the pipeline code (inherited from the
parent: ``lineage.stage.code``). The flow reads the child runs back into
``lineage.json``'s ``stages`` list (``collect_stages``): MLflow's child runs stay
the one source of truth and the record's digest covers them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineageflow.runs import reuse
from lineageflow.runs.tracking import TAG_STAGE, RunRef, child_run, child_runs

TAG = "lineage.stage."
ORDER = ("pull_data", "prepare", "train", "evaluate", "register_model")


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

    def earlier(self) -> reuse.Earlier | None:
        """A finished run of this stage with the same key, whose outputs the
        stage may take once each passes its digest check."""
        key = self.key()
        if key is None or not self.ref.reuse_lookup:
            return None
        ref = self.ref
        return reuse.find(ref.tracking_uri, ref.experiment_id, key, ref.run_id)

    def take_from(
        self,
        earlier: reuse.Earlier,
        copy_params: bool = True,
        datasets_also_on: str | None = None,
    ) -> None:
        """Take ``earlier``'s outputs (verified by the stage) as this run's, and
        say where they come from. The datasets it logged (schema, profile,
        digest) are logged on this run too, so MLflow's panels stay complete."""
        import mlflow

        self.reused_from = earlier.run_id
        self.outputs.extend(dict(o) for o in earlier.outputs)
        if copy_params:  # what the outputs were made with, e.g. autologged params
            mlflow.log_params(earlier.params)
        active = mlflow.active_run().info.run_id
        copy_datasets(self.ref.tracking_uri, earlier.run_id, [active, datasets_also_on])


@contextlib.contextmanager
def stage_run(
    ref: RunRef,
    stage: str,
    *,
    inputs: list[tuple[str, str]],
    params: Any = None,
    tags: dict[str, str] | None = None,
) -> Iterator[tuple[Any, StageIO]]:
    """The stage's child run (active in this thread, so autolog writes to it)."""
    import mlflow

    io = StageIO(
        inputs=[{"name": n, "digest": d} for n, d in inputs],
        stage=stage,
        params_sha256=section_sha256(params) if params is not None else None,
        ref=ref,
    )
    stage_tags = {
        TAG + "inputs": json.dumps(io.inputs, separators=(",", ":")),
        **({TAG + "params_sha256": io.params_sha256} if io.params_sha256 else {}),
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
                TAG + "inputs": json.dumps(io.inputs, separators=(",", ":")),
                TAG + "outputs": json.dumps(io.outputs, separators=(",", ":")),
                **short_tags(io),
                **({reuse.TAG_FROM: io.reused_from} if io.reused_from else {}),
                **({reuse.TAG_KEY: key} if key else {}),
            }
        )


def short_tags(io: StageIO) -> dict[str, str]:
    """One short tag per input and output (``lineage.in.train_table``,
    ``lineage.out.model``, ``lineage.out.model.uri``): MLflow's tag list cuts the
    JSON tags to a few characters, these read whole. The JSON tags stay (other
    tools read them)."""
    out: dict[str, str] = {}
    for prefix, entries in (("lineage.in.", io.inputs), ("lineage.out.", io.outputs)):
        for e in entries:
            name = re.sub(r"[^\w./ -]", "_", e["name"])[:200]
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
        "code": tags.get(TAG + "code"),
        "params_sha256": tags.get(TAG + "params_sha256"),
        "inputs": json.loads(tags.get(TAG + "inputs", "[]")),
        "outputs": json.loads(tags.get(TAG + "outputs", "[]")),
        # additive: present only on a stage that took an earlier run's outputs
        **({"reused_from": tags[reuse.TAG_FROM]} if reuse.TAG_FROM in tags else {}),
    }


def collect_stages(ref: RunRef) -> list[dict[str, Any]]:
    """Every finished stage of the parent run, in pipeline order."""
    entries = [
        _entry(r)
        for r in child_runs(ref.tracking_uri, ref.experiment_id, ref.run_id)
        if r.data.tags.get(TAG_STAGE) in ORDER and r.info.status == "FINISHED"
    ]
    key = {name: i for i, name in enumerate(ORDER)}
    return sorted(
        entries,
        key=lambda e: (key[e["name"]], e["inputs"] and e["inputs"][0]["name"] or ""),
    )


def log_dataset(
    df,
    name: str,
    digest: str,
    context: str,
    source: str | None = None,
    model_id: str | None = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
):
    """``mlflow.log_input`` of a frame (digest = ours) on the active run, or on
    ``run_id``; linked to a logged model when one is given, so MLflow's Datasets
    and Logged models panels show what produced what."""
    import warnings

    import mlflow
    from mlflow.entities import DatasetInput, InputTag, LoggedModelInput
    from mlflow.models import infer_signature

    from lineageflow.data.tabular import signature_frame

    source = dataset_source(source, tracking_uri) if source else source
    with warnings.catch_warnings():
        # a local path matches two equivalent MLflow source types; either is fine
        # (and the integer-columns hint concerns serving, not a logged input)
        warnings.simplefilter("ignore", UserWarning)
        ds = mlflow.data.from_pandas(df, source=source, name=name, digest=digest[:36])
        # MLflow infers the schema over every cell: 11.9 s for 500k x 41 (measured).
        # A frame's dtypes decide it: infer it from a sample, seed the cached property.
        ds.__dict__["schema"] = infer_signature(signature_frame(df.head(1000))).inputs
        if run_id is None:
            model = LoggedModelInput(model_id) if model_id else None
            _once_inserted(lambda: mlflow.log_input(ds, context=context, model=model))
            return ds
        from lineageflow.runs.tracking import client

        tag = InputTag(key="mlflow.data.context", value=context)
        entity = DatasetInput(ds._to_mlflow_entity(), [tag])
        _once_inserted(lambda: client(tracking_uri).log_inputs(run_id, [entity]))
        return ds


def artifact_location(uri: str, tracking_uri: str | None = None) -> str:
    """A ``runs:/RUN/PATH`` URI as the artifact store's own URI (file://, s3://,
    mlflow-artifacts:/): MLflow's dataset sources resolve those, not ``runs:/``,
    and without a source a Datasets panel names the Python script instead."""
    if not uri.startswith("runs:/"):
        return uri
    from mlflow.tracking.artifact_utils import get_artifact_uri

    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    return get_artifact_uri(run_id, path, tracking_uri=tracking_uri)


def dataset_source(uri: str, tracking_uri: str | None = None) -> str | None:
    """A source MLflow's dataset registry resolves, for a stored table's URI:
    its artifact-store URI (file://, s3://), or for artifacts proxied by a
    tracking server (``mlflow-artifacts:/``, which the client registers no
    dataset source for) the server's own download URL. None when neither
    resolves: the dataset is still logged, with MLflow's default source."""
    from urllib.parse import urlparse

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    loc = artifact_location(uri, tracking_uri)
    if loc.startswith("mlflow-artifacts:"):
        from lineageflow.runs.tracking import redact_uri

        server = redact_uri(tracking_uri or mlflow.get_tracking_uri())
        parsed = urlparse(loc)
        if urlparse(server).scheme not in ("http", "https") or parsed.netloc:
            return None
        path = parsed.path.lstrip("/")
        loc = f"{server.rstrip('/')}/api/2.0/mlflow-artifacts/artifacts/{path}"
    import warnings

    try:
        with warnings.catch_warnings():
            # a local path matches two equivalent source types; either is fine
            warnings.simplefilter("ignore", UserWarning)
            resolve_dataset_source(loc)
    except Exception:  # noqa: BLE001 - no resolver for this scheme
        return None
    return loc


def copy_datasets(tracking_uri: str, source_run: str, to_runs: list) -> None:
    """The dataset inputs ``source_run`` logged, logged again on ``to_runs``."""
    from lineageflow.runs.tracking import client

    c = client(tracking_uri)
    inputs = list(c.get_run(source_run).inputs.dataset_inputs)
    for to in filter(None, to_runs):
        if inputs:
            _once_inserted(lambda to=to: c.log_inputs(to, inputs))


def _once_inserted(log, attempts: int = 4) -> None:
    """Run ``log``, retrying when a concurrent run inserted the same dataset.

    MLflow's SQL store looks a dataset (experiment, name, digest) up and then
    inserts it: two runs logging the same table at once both insert, and one
    fails on the unique constraint (seen with 8 concurrent retrains on one data
    version). The retry finds the row the other run wrote.
    """
    import time

    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            log()
            return
        except MlflowException as exc:
            text = str(exc)
            duplicate = "UNIQUE constraint failed: datasets" in text or (
                "duplicate key value" in text and "datasets" in text
            )
            if not duplicate or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def persist_table(df, digest: str, name: str) -> str:
    """Write a table as Parquet into this stage's run artifacts, named by its
    digest; returns the ``runs:/`` URI a stage elsewhere loads it from.

    MLflow artifacts, not a local cache: every worker that reaches the tracking
    server reaches them (proxied artifacts need no storage credentials)."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}-{digest[:16]}.parquet"
        df.to_parquet(path)
        mlflow.log_artifact(str(path), artifact_path="tables")
    return f"runs:/{mlflow.active_run().info.run_id}/tables/{path.name}"


def load_table(uri: str, digest: str, stage: str, name: str, tracking_uri: str):
    """A persisted table, refused unless its content has the recorded digest."""
    import tempfile

    import mlflow
    import pandas as pd

    from lineageflow.lineage.record import verify_input
    from lineageflow.model.ml import table_digest

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri
        )
        df = pd.read_parquet(local)
    X, y = df.iloc[:, :-1], df.iloc[:, -1]
    verify_input(stage, name, table_digest(X, y), digest)
    return df


def _model_file(model_uri: str, tracking_uri: str, dst: str) -> Path:
    """The model.pkl of a logged model (``models:/m-...``), downloaded to ``dst``."""
    import mlflow

    from lineageflow.runs.tracking import client

    logged = client(tracking_uri).get_logged_model(model_uri.removeprefix("models:/"))
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{logged.artifact_location}/model.pkl",
            dst_path=dst,
            tracking_uri=tracking_uri,
        )
    )


def stored_model_digest(model_uri: str, tracking_uri: str) -> str:
    """sha256 of the model file as MLflow stored it: the model's digest."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = _model_file(model_uri, tracking_uri, tmp).read_bytes()
    return hashlib.sha256(data).hexdigest()


def load_model(model_uri: str, digest: str, stage: str, tracking_uri: str):
    """The logged model, loaded from its stored bytes and refused unless they
    have the recorded digest (so a stage elsewhere evaluates *that* model)."""
    import tempfile

    import cloudpickle

    from lineageflow.lineage.record import verify_input

    with tempfile.TemporaryDirectory() as tmp:
        data = _model_file(model_uri, tracking_uri, tmp).read_bytes()
    verify_input(stage, "model", hashlib.sha256(data).hexdigest(), digest)
    return cloudpickle.loads(data)


SPLIT_META = "split.json"


def persist_split_meta(split) -> None:
    """What a later run needs to rebuild this split from its two tables (the
    task, why, the label order); not written when the labels are not plain JSON,
    which makes this prepare run not reusable."""
    import mlflow

    meta = {
        "task": split.task,
        "task_reason": split.task_reason,
        "target": split.target,
        "labels": split.labels,
    }
    try:
        blob = json.dumps(meta)
    except (TypeError, ValueError):
        return
    if json.loads(blob) != meta:
        return
    mlflow.log_dict(meta, SPLIT_META)


def load_split(earlier: reuse.Earlier, tracking_uri: str):
    """An earlier prepare's split, each table refused unless it has its recorded
    digest (``load_table``)."""
    import tempfile

    import mlflow

    from lineageflow.model.ml import Split

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{earlier.run_id}/{SPLIT_META}",
            dst_path=tmp,
            tracking_uri=tracking_uri,
        )
        meta = json.loads(Path(local).read_text())
    parts = {}
    for part in ("train", "holdout"):
        out = earlier.output(f"{part}_table")
        if out is None or "uri" not in out:
            raise LookupError(f"no {part}_table output")
        df = load_table(out["uri"], out["digest"], "prepare", part, tracking_uri)
        parts[part] = (df.iloc[:, :-1], df.iloc[:, -1].rename(meta["target"]))
    return Split(
        X_train=parts["train"][0],
        X_test=parts["holdout"][0],
        y_train=parts["train"][1],
        y_test=parts["holdout"][1],
        task=meta["task"],
        labels=meta["labels"],
        task_reason=meta["task_reason"],
        target=meta["target"],
        digests={p: earlier.output(f"{p}_table")["digest"] for p in parts},
        uris={p: earlier.output(f"{p}_table")["uri"] for p in parts},
    )
