"""MLflow's registry and runs, read and written for promotion: register a version
with its lineage tags, read a run's lineage and metrics back, find the Staging
version lineageflow put there (the newest signed promotion) and what identifies
its model. The decision is lineageflow.registry.promotion's.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from lineageflow.attest.staging import champion as signed_champion
from lineageflow.attest.statements import ALIAS
from lineageflow.config import PipelineConfig, dataset_name
from lineageflow.data.source import open_source
from lineageflow.errors import LineageError
from lineageflow.lineage.code import pipeline_state
from lineageflow.lineage.record import data_tag, digest
from lineageflow.runs.artifact_store import download, model_location
from lineageflow.runs.store import (
    artifact_store_failure,
    client,
    redact_uri,
    tracking_error,
)
from lineageflow.tags import (
    LINEAGE_JSON,
    TAG_DATA_MD5S,
    TAG_DATA_PREFIX,
    TAG_DIGEST,
    TAG_GIT_COMMIT,
    TAG_MANAGED,
    TAG_MODEL_DIGEST,
    TAG_PARAMS_SHA256,
    TAG_PIPELINE_COMMIT,
    TAG_RUN_ID,
    TAG_STAGE_KEY,
    TAG_TRAIN_KEY,
)
from lineageflow.workspace import Workspace, git_state

STAGING_ALIAS = ALIAS  # the alias that is the promotion


# ---------------------------------------------------------------- reading runs


def load_lineage(tracking_uri: str, run_id: str) -> tuple[dict, dict[str, str]]:
    """The ``lineage.json`` artifact and the tags of a parent run."""
    c = client(tracking_uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise LineageError(
            f"MLflow run {run_id} does not exist in {redact_uri(tracking_uri)}: "
            "check the run id and MLFLOW_TRACKING_URI"
        ) from None
    tags = dict(run.data.tags)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = download(f"runs:/{run_id}/{LINEAGE_JSON}", tracking_uri, Path(tmp))
            record = json.loads(local.read_text())
    except (MlflowException, OSError, json.JSONDecodeError) as exc:
        raise _unreadable_lineage(c, tracking_uri, run_id, exc) from None
    return record, tags


def _unreadable_lineage(c, tracking_uri: str, run_id: str, exc: Exception):
    """Why lineage.json could not be read: the artifact store does not answer, the
    run has none (not made by the pipeline), or the file itself is unreadable."""
    if artifact_store_failure(exc):
        return tracking_error(tracking_uri, exc, "could not read lineage.json")
    try:
        names = {f.path for f in c.list_artifacts(run_id)}
    except Exception as list_exc:  # the listing needs the artifact store too
        return tracking_error(tracking_uri, list_exc, "could not list artifacts")
    if LINEAGE_JSON not in names:
        return LineageError(
            f"MLflow run {run_id} has no lineage.json: it was not made by the "
            "training-pipeline flow"
        )
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return LineageError(
        f"MLflow run {run_id} has an unreadable lineage.json ({type(exc).__name__}"
        f"{': ' + detail if detail else ''}): the record is damaged; retrain"
    )


# ---------------------------------------------------------------- registry


def register_version(
    tracking_uri: str,
    model_name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
):
    """Create a version (stage None) carrying the lineage summary as tags."""
    c = client(tracking_uri)
    try:
        c.get_registered_model(model_name)
    except MlflowException:
        try:
            c.create_registered_model(model_name, tags={TAG_MANAGED: "true"})
        except MlflowException as exc:  # a concurrent first run made it meanwhile
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    # MLflow 3 logged models live at models:/m-<id>; a tracking *server* refuses
    # that source unless model_id names it too (a sqlite store does not check).
    model_id = (
        model_uri.removeprefix("models:/")
        if model_uri.startswith("models:/m-")
        else None
    )
    mv = c.create_model_version(
        model_name, model_uri, run_id=run_id, tags=tags, model_id=model_id
    )
    if model_id:
        link_logged_model(c, model_id, model_name, str(mv.version))
    return str(mv.version)


def link_logged_model(c, model_id: str, model_name: str, version: str) -> None:
    """Tag the logged model with its version, as ``mlflow.register_model`` does and
    ``create_model_version`` does not: without it MLflow's UI shows the Staging
    model as "Not registered", with a Register button and no model versions."""
    model = c.get_logged_model(model_id)
    linked = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    entry = {"name": model_name, "version": version}
    if entry not in linked:
        c.set_logged_model_tags(
            model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(linked + [entry])}
        )


def staging_run(tracking_uri: str, model: str) -> tuple[str, str, dict] | None:
    """(version, its parent run id, that run's tags) of the Staging version that
    lineageflow put there: the newest signed promotion (a version moved into
    Staging by hand is not what a retrain compares with)."""
    try:
        version = signed_champion(tracking_uri, model)
    except MlflowException:
        return None
    if version is None:
        return None
    c = client(tracking_uri)
    mv = c.get_model_version(model, version)
    run_id = mv.tags.get(TAG_RUN_ID) or mv.run_id
    return version, run_id, dict(c.get_run(run_id).data.tags)


def train_identity(tracking_uri: str, record: dict) -> tuple[str | None, str | None]:
    """(model digest, train stage key) of a run's lineage record: the model file's
    sha256, and the key of everything the fit was a function of (its input table,
    train params, code and libraries; None when the code was uncommitted)."""
    train = next(
        (s for s in record.get("stages", []) if s.get("name") == "train"), None
    )
    if train is None:
        return None, None
    digest = next(
        (o.get("digest") for o in train.get("outputs", []) if o.get("name") == "model"),
        None,
    )
    key = client(tracking_uri).get_run(train["run_id"]).data.tags.get(TAG_STAGE_KEY)
    return digest, key


def version_identity(
    tracking_uri: str, model_name: str, version: str
) -> tuple[str | None, str | None]:
    """(model digest, train stage key) of a registered version: its tags
    ``lineage.model_digest`` / ``lineage.train_key``, else its run's record."""
    mv = client(tracking_uri).get_model_version(model_name, version)
    digest, key = mv.tags.get(TAG_MODEL_DIGEST), mv.tags.get(TAG_TRAIN_KEY)
    if digest:
        return digest, key
    try:
        record, _ = load_lineage(tracking_uri, mv.tags.get(TAG_RUN_ID) or mv.run_id)
    except LineageError:
        return None, None
    return train_identity(tracking_uri, record)


def unchanged_since_staging(
    ws: Workspace, cfg: PipelineConfig, tracking_uri: str
) -> str | None:
    """The Staging version trained from this very commit, data and params, if any.

    Cheap by design (the Staging version's tags, the data pointers, git): a
    nightly retrain with nothing new must cost seconds, not a training run. A
    dirty tree is never "unchanged", and neither is a new lineageflow commit.
    """
    staged = staging_run(tracking_uri, cfg.registration.model_name)
    if staged is None:
        return None
    version, _, tags = staged
    pinned = {
        data_tag(dataset_name(d), "md5"): open_source(
            ws, d, cfg.data.remote
        ).pinned_md5()
        for d in cfg.data.datasets
    }
    code = pipeline_state()
    git = git_state(ws.git())
    if git.dirty or code["dirty"]:  # uncommitted work is never "unchanged"
        return None
    recorded = {k for k in tags if k.startswith(TAG_DATA_PREFIX) and k.endswith(".md5")}
    same = (
        tags.get(TAG_GIT_COMMIT) == git.commit
        # new lineageflow code is a new model too
        and tags.get(TAG_PIPELINE_COMMIT) == str(code["commit"])
        and tags.get(TAG_PARAMS_SHA256) == cfg.sha256()
        and recorded == set(pinned)
        and all(tags[k] == v for k, v in pinned.items())
    )
    return version if same else None


def recorded_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """A run's holdout metrics as it logged them (``test_<metric>``)."""
    m = client(tracking_uri).get_run(run_id).data.metrics
    return {k: v for k, v in m.items() if k.startswith("test_")}


def version_tags(record: dict, run_id: str) -> dict[str, str]:
    """The lineage summary a registered version carries as tags."""
    return {
        TAG_RUN_ID: run_id,
        TAG_GIT_COMMIT: record["workspace"]["commit"],
        TAG_DIGEST: digest(record),
        TAG_PARAMS_SHA256: record["params_sha256"],
        TAG_DATA_MD5S: ",".join(f"{d['path']}={d['md5']}" for d in record["data"]),
    }


def load_native(model_uri: str, tracking_uri: str | None = None):
    """Load a model with its own flavor (``predict_proba`` available) from the
    store at ``tracking_uri`` (MLflow's global one when None): downloaded with
    that URI explicitly, so no process-wide MLflow setting is touched."""
    with tempfile.TemporaryDirectory() as tmp:
        local = str(download(model_uri, tracking_uri, Path(tmp)))
        flavors = Model.load(local).flavors
        if "xgboost" in flavors:
            return mlflow.xgboost.load_model(local)
        if "sklearn" in flavors:
            return mlflow.sklearn.load_model(local)
    raise LineageError(f"{model_uri} has neither an xgboost nor a sklearn flavor")


def model_meta(model_uri: str, tracking_uri: str) -> Model:
    """A model's MLmodel file (flavors, signature), read from its store: a
    logged model's (``models:/m-...``) from its artifact location."""
    where = model_location(model_uri, tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        return Model.load(
            download(f"{where.rstrip('/')}/MLmodel", tracking_uri, Path(tmp))
        )
