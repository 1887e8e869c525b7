"""Every ``lineage.*`` / ``lineageflow.*`` MLflow tag key and prefix, event key
and artifact name lineageflow writes, in one place (after MLflow's
``mlflow/utils/mlflow_tags.py``). Prefect's own ``prefect.*`` run tags
(lineageflow.runs.orchestration) and the keys of Prefect artifacts are not here.

The values are a contract: other tools, the records of earlier runs and
tests/test_compat.py read them, so a value never changes; a new key is a new
constant. This module imports nothing of lineageflow: it is the bottom of the
import graph, so any module may name a key without pulling in another.
"""

from __future__ import annotations

# ------------------------------------------------------------------ run tags
# On a pipeline's parent run. The record's summary (lineage.record.flat_tags,
# logged by tasks.registry.record_lineage with TAG_DIGEST) is read back by the
# digest_intact check (lineage.checks), by "unchanged since Staging"
# (registry.versions) and by the retrain watcher (retrain.trained).
TAG_SCHEMA = "lineage.schema"  # the record's schema version
# the workspace commit trained (also a version tag)
TAG_GIT_COMMIT = "lineage.git_commit"
TAG_GIT_BRANCH = "lineage.git_branch"
TAG_GIT_DIRTY = "lineage.git_dirty"  # "true" | "false"
TAG_WORKSPACE_REPO = "lineage.workspace_repo"
TAG_PIPELINE_VERSION = "lineage.pipeline_version"  # lineageflow's package version
TAG_PIPELINE_COMMIT = "lineage.pipeline_commit"  # lineageflow's own commit
TAG_PIPELINE_DIRTY = "lineage.pipeline_dirty"
TAG_PARAMS_SHA256 = "lineage.params_sha256"  # also a version tag
# sha256 of lineage.json's canonical JSON (also a version tag)
TAG_DIGEST = "lineage.digest"
# ``lineage.data.<path>.<field>`` (md5, in_remote): one pair per dataset
TAG_DATA_PREFIX = "lineage.data."
# ``lineage.user_code.<role>`` = file:function@blob of the user's code
TAG_USER_CODE_PREFIX = "lineage.user_code."
# what a run trains on as one id (commit, data md5s, params); the retrain
# watcher and a triggered run (retrain.commit) look it up to train a change once
TAG_CHANGE_KEY = "lineage.change_key"
TAG_TRIGGER_COMMIT = "lineage.trigger.commit"  # the commit an event named
# the outcome, set by tasks.registry.register_model on the parent run
TAG_MODEL_VERSION = "lineage.model_version"  # <model>/<version> registered
TAG_IDENTICAL_TO = "lineage.identical_to"  # <model>/<version> it equals, none new
# one line: a version found in Staging that no signed promotion put there (moved
# by hand); the run compared with the newest signed promotion (attest.staging)
TAG_HAND_MOVED = "lineageflow.hand_moved"
# lineageflow's own bookkeeping (runs.tracking, runs.orchestration, flows.sweep)
TAG_KIND = "lineageflow.kind"  # "pipeline" on a parent run: its stale-run sweep
TAG_OWNER = "lineageflow.owner"  # host:pid:start-time of the process driving the run
TAG_ERROR = "lineageflow.error"  # one line: why a run (parent or stage) failed
TAG_SWEEP_SIZE = "lineageflow.sweep_size"  # a sweep's number of grid points

# ---------------------------------------------------------------- stage tags
# On each stage's child run. Written by runs.tracking (TAG_STAGE) and
# runs.stages; read back by runs.stages.collect_stages into the record's
# ``stages``, by runs.reuse (an earlier identical stage), by the promotion's
# run-status check and by attest.sign (the register_model run).
TAG_STAGE = "lineageflow.stage"  # the stage's name (lineageflow.pipeline)
TAG_STAGE_CODE = "lineage.stage.code"  # the pipeline commit, inherited from the parent
TAG_STAGE_PARAMS_SHA256 = "lineage.stage.params_sha256"  # of the stage's params section
TAG_STAGE_INPUTS = "lineage.stage.inputs"  # JSON [{name, digest}]
TAG_STAGE_OUTPUTS = "lineage.stage.outputs"  # JSON [{name, digest, uri?}]
TAG_STAGE_KEY = "lineage.stage.key"  # what the stage is a function of (reuse)
TAG_STAGE_REUSED_FROM = "lineage.stage.reused_from"  # the run that made the outputs
# one short tag per input / output (``lineage.in.<name>`` = digest, plus
# ``.uri``): MLflow's UI cuts the JSON tags, these read whole
TAG_INPUT_PREFIX = "lineage.in."
TAG_OUTPUT_PREFIX = "lineage.out."
TAG_DATASET = "lineageflow.dataset"  # pull_data: the dataset it pinned
TAG_THREAD = "lineageflow.thread"  # pull_data: the thread that pulled it
TAG_SWEEP_INDEX = "lineageflow.sweep_index"  # a sweep's grid point
# train's params: the seed, task and model source's code as ``lineageflow.<key>``
# (prefixed: sklearn's autolog of a Pipeline already logs its step ``model``)
PARAM_PREFIX = "lineageflow."

# -------------------------------------------------------------- version tags
# On a registered model version (and TAG_MANAGED on the registered model).
# Written by registry.versions.version_tags, registry.promotion and
# attest.sign; read by registry.versions (identity, Staging's lineage),
# reproduce (a version's run), retrain.trained, attest.verify and the demo.
TAG_RUN_ID = "lineage.run_id"  # the parent run that trained it
TAG_DATA_MD5S = "lineage.data_md5s"  # path=md5,... of its data
TAG_MODEL_DIGEST = "lineage.model_digest"  # sha256 of the model file
TAG_TRAIN_KEY = "lineage.train_key"  # the train stage's key
TAG_CHECKS = "lineage.checks"  # "passed" | "failed" (also on the parent run)
TAG_CHECK_PREFIX = "lineage.check."  # ``lineage.check.<name>`` = the check's verdict
TAG_FAILED_CHECKS = "lineage.failed_checks"  # the names, comma-separated
TAG_ATTESTATION = "lineage.attestation"  # runs:/<register run>/attestation/<stamp>
TAG_SIGNED_BY = "lineage.signed_by"  # the signing key's id
TAG_SIGNED_MODEL_SHA256 = "lineage.signed_model_sha256"
TAG_PROMOTION_SHA256 = "lineage.promotion_sha256"  # of the promotion statement
TAG_MANAGED = "lineageflow.managed"  # a registered model lineageflow created

# --------------------------------------------------------- reproduction tags
# Written by reproduce.driver (and flows.training passes the first on to
# finish); read by `lineageflow diff`, the UI and tests.
TAG_REPRODUCTION_OF = "lineage.reproduction_of"  # on the new run: the run it redid
TAG_REPRODUCED_BY = "lineage.reproduced_by"  # on the original: the new run
TAG_REPRODUCTION_VERDICT = "lineage.reproduction.verdict"  # on both
TAG_REPRODUCTION_FIRST_DIVERGENCE = "lineage.reproduction.first_divergence"

# -------------------------------------------------------------------- events
# The Prefect event the retrain watcher sends (retrain.changes) and the
# ``train`` deployment's trigger matches (prefect.yaml: ``expect``, the
# workspace label); a change's resource id names what changed.
DATA_CHANGED_EVENT = "lineageflow.data.changed"
LABEL_WORKSPACE = "lineageflow.workspace"
LABEL_MODEL = "lineageflow.model"
RESOURCE_DATASET_PREFIX = "lineageflow.dataset."  # ``lineageflow.dataset.<name>``
RESOURCE_PARAMS = "lineageflow.params"
RESOURCE_CODE = "lineageflow.code"
# The audit (flows/audit.py): sent when a version's verdict changes; its
# resource is ``lineageflow.model-version.<name>/<version>``, labelled with the
# model, the workspace and the new verdict (what a trigger can match).
AUDIT_CHANGED_EVENT = "lineageflow.audit.changed"
RESOURCE_MODEL_VERSION_PREFIX = "lineageflow.model-version."
LABEL_AUDIT_VERDICT = "lineageflow.audit.verdict"

# ------------------------------------------------------- audit (version tags)
# What the last audit found, on the model version (lineageflow.audit.results)
TAG_AUDIT_VERDICT = (
    "lineage.audit.verdict"  # exact | within | diverged | tampered | ...
)
TAG_AUDIT_AT = "lineage.audit.at"  # UTC time of that audit
TAG_AUDIT_RUN = "lineage.audit.run"  # the audit's Prefect flow run id
TAG_AUDIT_CAUSE = "lineage.audit.cause"  # why it is not exact (one line)
TAG_AUDIT_BASIS = "lineage.audit.basis"  # sha256 of what a reproduction depends on
TAG_AUDIT_SINCE = "lineage.audit.since_reproduced"  # audits since the last rebuild
TAG_AUDIT_REPRODUCTION = "lineage.audit.reproduction"  # its last rebuild's MLflow run

# ----------------------------------------------------------------- artifacts
# Names in a run's artifacts. LINEAGE_JSON is the record
# (tasks.registry.record_lineage; read by registry.versions.load_lineage and
# checked against TAG_DIGEST); the attestation files are written by
# attest.sign under ATTESTATION_DIR and read by attest.verify / attest.history.
LINEAGE_JSON = "lineage.json"  # the lineage record, at the parent run's root
LINEAGE_PNG = "lineage.png"  # its picture (runs.publish)
ATTESTATION_DIR = "attestation"  # in the register_model run: <dir>/<stamp>/
LINEAGE_STATEMENT = "lineage.intoto.jsonl"  # provenance + verification, signed
PROMOTION_STATEMENT = "promotion.intoto.jsonl"  # the promotion, signed
MODEL_SIGNATURE = "model.sig"  # model-signing's signature of the model's files
SPLIT_META = "split.json"  # prepare's split description (runs.artifacts)
TABLES_DIR = "tables"  # prepare's tables, Arrow IPC named by digest
PLOTS_DIR = "plots"  # evaluate's plots
MODEL_PICKLE = "model.pkl"  # MLflow's sklearn flavour's file in a logged model
# in the train run: the modules imported where the model was fitted outside this
# process (a notebook's kernel), for a later run that reuses the stage
FITTED_MODULES = "fitted_modules.json"

ARTIFACTS = (
    LINEAGE_JSON,
    LINEAGE_PNG,
    ATTESTATION_DIR,
    LINEAGE_STATEMENT,
    PROMOTION_STATEMENT,
    MODEL_SIGNATURE,
    SPLIT_META,
    TABLES_DIR,
    PLOTS_DIR,
    MODEL_PICKLE,
    FITTED_MODULES,
)
