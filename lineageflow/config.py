"""The typed pipeline config, built from the workspace's ``params.yaml``.

One pydantic model per stage (``extra="forbid"`` so a typo is an error, not a
silently ignored key); each task receives only its own section.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import reduce
from operator import or_
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from lineageflow.compute_config import ComputeConfig  # a section of its own module
from lineageflow.data.kinds import KINDS, dataset_name, kind_for, tag_of
from lineageflow.errors import ConfigError
from lineageflow.train_config import TrainConfig  # a section of its own module

# MLflow accepts more, but a name that is also safe in a URL, a tag and a file
# name keeps `models:/<name>/<version>` unambiguous.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# a dataset entry is one kind's (lineageflow.data.kinds): a plain string is a DVC
# path, a mapping a Delta table; errors name that kind only
Dataset = Annotated[
    reduce(or_, (Annotated[k.entry, Tag(tag)] for tag, k in KINDS.items())),
    Discriminator(
        tag_of,
        custom_error_type="dataset_kind",
        custom_error_message="is no dataset: give "
        + " or ".join(k.shape for k in KINDS.values()),
    ),
]


class DataConfig(_Section):
    # one entry of a kind in lineageflow.data.kinds
    datasets: list[Dataset] = Field(
        default_factory=lambda: ["data/customers"], min_length=1
    )
    target: str = "churned"
    remote: str | None = None  # DVC remote name; None = the repo's default remote

    @field_validator("datasets")
    @classmethod
    def _relative_paths(cls, entries: list[Dataset]) -> list[Dataset]:
        for e in entries:
            kind_for(e).check(e)
        names = [dataset_name(e) for e in entries]
        if len(set(names)) != len(names):
            raise ValueError("dataset paths must be unique")
        return entries


class PrepareConfig(_Section):
    test_size: Fraction = 0.2
    seed: int = 42
    # "hash": a row's side depends only on its content and the seed, so a row
    # stays in the holdout as data versions grow and the Staging champion is
    # never scored on rows it trained on. "stratified": seeded random split.
    method: Literal["hash", "stratified"] = "hash"


Metric = Literal[
    "roc_auc", "accuracy", "f1", "precision", "recall", "log_loss", "rmse", "mae", "r2"
]


# What an unset evaluate.metric / evaluate.threshold becomes once prepare has
# inferred the task: roc_auc >= 0.70 for a classifier (as before), r2 >= 0.0 for a
# regressor (better than predicting the mean). rmse and mae have no scale-free
# default threshold: without one they gate on the champion alone.
DEFAULT_METRIC = {"regression": "r2", "classification": "roc_auc"}
DEFAULT_THRESHOLD: dict[str, float] = {
    "roc_auc": 0.70,
    "accuracy": 0.70,
    "f1": 0.70,
    "precision": 0.70,
    "recall": 0.70,
    "log_loss": 0.70,
    "r2": 0.0,
}


class EvaluateConfig(_Section):
    # None: chosen from the task prepare infers (see DEFAULT_METRIC)
    metric: Metric | None = None
    threshold: float | None = None  # quality gate on the holdout; None: the default
    # the challenger may be at most this much worse than the Staging champion
    champion_tolerance: Annotated[float, Field(ge=0.0)] = 0.0

    def for_task(self, task: str) -> EvaluateConfig:
        """This section with the metric and threshold a ``task`` run gates on."""
        kind = "regression" if task == "regression" else "classification"
        metric = self.metric or DEFAULT_METRIC[kind]
        threshold = (
            self.threshold
            if self.threshold is not None
            else DEFAULT_THRESHOLD.get(metric)
        )
        return self.model_copy(update={"metric": metric, "threshold": threshold})

    def chosen(self, task: str) -> str | None:
        """A line saying what was chosen for the user, or None when they set both."""
        if self.metric is not None and self.threshold is not None:
            return None
        r = self.for_task(task)
        gate = "no threshold" if r.threshold is None else f"threshold {r.threshold}"
        what = "evaluate.metric" if self.metric is None else "evaluate.threshold"
        return f"{what} not set: gating a {task} model on {r.metric} ({gate})"


class RegisterConfig(_Section):
    model_name: str = "churn-classifier"
    promote: bool = True  # False: register in None, run the checks, never promote

    @field_validator("model_name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not MODEL_NAME_RE.match(name):
            raise ValueError(
                f"registered model name {name!r} must be 1-128 characters of "
                "letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return name


class MlflowConfig(_Section):
    experiment: Annotated[str, Field(min_length=1, max_length=200)] = "lineageflow"


class AuditConfig(_Section):
    """The audit-registry flow's settings (flows/audit.py): not a training
    param, so never part of a run's params or their sha256."""

    keep: Annotated[int, Field(ge=0)] = 2  # archived versions audited per model
    reproduce_every: Annotated[int, Field(ge=1)] = 4  # audits per reproduction
    tolerance: Annotated[float, Field(ge=0.0)] = 0.0  # metric diff still `within`


class PipelineConfig(_Section):
    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    # `register` would shadow BaseModel.register (ABC): keep the YAML key, rename
    # the attribute.
    registration: RegisterConfig = Field(default=RegisterConfig(), alias="register")
    mlflow: MlflowConfig = MlflowConfig()
    compute: ComputeConfig = ComputeConfig()
    audit: AuditConfig = AuditConfig()

    @model_validator(mode="after")
    def _engine_fits_model(self) -> PipelineConfig:
        if self.compute.engine == "dask" and (
            self.train.model != "xgboost" or self.train.features
        ):
            what = (
                "train.features"
                if self.train.model == "xgboost"
                else f"train.model {self.train.model}"
            )
            raise ValueError(
                f"{what} cannot train on compute.engine dask, which fits "
                "xgboost's own Dask interface: set train.model: xgboost (without "
                "train.features), or compute.engine: local"
            )
        if self.compute.engine == "dask" and self.prepare.method != "hash":
            raise ValueError(
                "prepare.method stratified needs the whole table in one process: "
                "use prepare.method: hash with compute.engine dask"
            )
        return self

    def as_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", by_alias=True, exclude={"audit"})
        if self.compute.is_default():  # configs from before engines keep digests
            out.pop("compute")
        return out

    def sha256(self) -> str:
        return params_sha256(self.as_dict())


def params_sha256(params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the resolved params."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _where(err: dict) -> str:
    loc = list(err["loc"])
    # a dataset's kind (the union's tag) is not a key the user wrote
    loc = [
        p
        for i, p in enumerate(loc)
        if not (i and isinstance(loc[i - 1], int) and p in KINDS)
    ]
    return ".".join(str(p) for p in loc) or "(top level)"


def _error_line(exc: ValidationError, source: str) -> str:
    """Every unknown key at once (two typos are one fix, not two runs), else the
    first error."""
    errors = exc.errors()
    unknown = list(
        dict.fromkeys(_where(e) for e in errors if e["type"] == "extra_forbidden")
    )
    if len(unknown) == 1:
        return f"{source}: unknown key '{unknown[0]}': remove it or fix its spelling"
    if unknown:
        keys = ", ".join(f"'{k}'" for k in unknown)
        return f"{source}: unknown keys {keys}: remove them or fix their spelling"
    err = errors[0]
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if isinstance(got, dict) or "credentials" in msg:
        # a whole section (cross-field check), or a value not to be echoed
        return f"{source}: {msg}"
    return f"{source}: '{_where(err)}' {msg} (got {got!r})"


def parse_params(raw: Any, source: str = "params.yaml") -> PipelineConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: top level must be a mapping of sections "
            f"(data, prepare, train, evaluate, register, mlflow, compute, audit), got {type(raw).__name__}"
        )
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_error_line(exc, source)) from None


def load_params(path: Path) -> PipelineConfig:
    """Read and validate ``params.yaml``; every failure is one actionable line."""
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: create it (see params.yaml in the lineageflow repo)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path.name}: malformed YAML{where}: {problem}") from None
    return parse_params(raw, source=path.name)
