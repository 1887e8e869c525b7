"""``model: notebook``: a committed notebook fits the estimator, run by papermill.

The train stage runs the notebook in a Jupyter kernel of this very environment
(``sys.executable``; never whatever ``python3`` kernel a machine has installed)
with papermill, which injects the parameters after the cell tagged
``parameters`` (before the first cell when none is tagged):

- ``train_table``: path of the training split as a Parquet file (target last,
  in the data's own labels);
- ``target``, ``task`` (binary | multiclass | regression), ``seed``;
- ``params``: ``train.notebook_params``;
- ``model_path``: where the notebook saves the fitted estimator with joblib or
  cloudpickle.

The saved object must have ``predict`` (and ``predict_proba`` for a classifier)
and predict the holdout's raw columns; the stage then logs it as every model is
logged. The executed notebook (outputs included) and its HTML rendering are
stored on the train child run, also when a cell raised.

What this cannot see: files the notebook opens besides ``train_table``. A
notebook that reads other data trains on something the lineage does not name;
README says so, and the data must come in through ``data.datasets``.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from prefect.artifacts import create_link_artifact

from lineageflow.errors import UserCodeError
from lineageflow.lineage.notebooks import code_cells, code_digest, read_notebook
from lineageflow.model.ml import Split
from lineageflow.model.notebook_run import RECORD_TAG, execute, last_line, tagged
from lineageflow.runs.store import artifact_url
from lineageflow.train_config import TrainConfig

NOTEBOOK_DIR = "notebook"  # the train child run's artifact folder


class NotebookSource:
    """The estimator the workspace's notebook fits and saves."""

    def __init__(self, cfg: TrainConfig, root: Path, nb):
        self.cfg = cfg
        self.root = root
        self.nb = nb
        self.digest = code_digest(code_cells(nb))
        self.modules: tuple[str, ...] = ()  # what the kernel imported, once run

    @classmethod
    def open(cls, cfg: TrainConfig, workspace: Path | None, split: Split):
        if workspace is None:
            raise UserCodeError("train.notebook needs the workspace path")
        if split.engine != "local":
            raise UserCodeError(
                f"train.model notebook runs on the local engine only (the split is "
                f"on {split.engine!r}): set compute.engine to local"
            )
        if importlib.util.find_spec("ipykernel") is None:
            raise UserCodeError(
                f"train.notebook {cfg.notebook}: no Jupyter kernel in this "
                f"environment ({sys.executable}): install ipykernel "
                "(pip install -c constraints.txt ipykernel)"
            )
        return cls(cfg, workspace, read_notebook(workspace, cfg.notebook))

    def autolog_library(self) -> str:
        return "sklearn"  # the fit runs in the kernel: nothing to autolog here

    def code(self) -> dict[str, str]:
        return {"model": "notebook", "notebook": self.cfg.notebook} | {
            "notebook_code_sha256": self.digest
        }

    def fit(self, split: Split, engine) -> Any:
        """Run the notebook on the training split; store what it executed; load,
        check and return what it saved at ``model_path``."""
        with tempfile.TemporaryDirectory(prefix="lineageflow-nb-") as tmp:
            work = Path(tmp)
            X, y = split.parts("train")
            if split.labels:  # the data's own labels, not prepare's codes
                y = y.map(dict(enumerate(split.labels)))
            train_table = work / "train.parquet"
            X.assign(**{split.target: y}).to_parquet(train_table)
            params = {
                "train_table": str(train_table),
                "target": split.target,
                "task": split.task,
                "seed": self.cfg.seed,
                "params": dict(self.cfg.notebook_params),
                "model_path": str(work / "model.pkl"),
            }
            executed = self._execute(work, params)
            self._store(executed)
            return self._load(work / "model.pkl", split)

    def _execute(self, work: Path, params: dict[str, Any]) -> Path:
        executed, kernel = execute(
            self.nb,
            self.cfg.notebook,
            self.root,
            work,
            params,
            self.cfg.notebook_timeout,
            self._store,
        )
        self.modules = tuple(kernel["modules"])
        return executed

    def _store(self, executed: Path) -> None:
        """The executed notebook (without the record cell) and its HTML on the
        active (train) run; MLflow's source fields name the notebook."""
        import nbformat
        from nbconvert import HTMLExporter

        if not executed.is_file():
            return
        nb = nbformat.read(executed, as_version=4)
        nb.cells = [c for c in nb.cells if not tagged(c, RECORD_TAG)]
        nbformat.write(nb, executed)
        html = executed.with_suffix(".html")
        html.write_text(HTMLExporter().from_notebook_node(nb)[0])
        mlflow.log_artifact(str(executed), artifact_path=NOTEBOOK_DIR)
        mlflow.log_artifact(str(html), artifact_path=NOTEBOOK_DIR)
        mlflow.set_tags(
            {"mlflow.source.name": self.cfg.notebook, "mlflow.source.type": "NOTEBOOK"}
        )
        run_id = mlflow.active_run().info.run_id
        where = f"{NOTEBOOK_DIR}/{html.name}"
        create_link_artifact(
            artifact_url(mlflow.get_tracking_uri(), run_id, where),
            link_text=f"executed notebook {self.cfg.notebook} (MLflow run {run_id})",
            key="notebook",
            description=f"{self.cfg.notebook} as the train stage ran it, outputs included",
        )

    def _load(self, path: Path, split: Split) -> Any:
        file = self.cfg.notebook
        if not path.is_file():
            raise UserCodeError(
                f"train.notebook {file}: nothing was written to model_path: save "
                "the fitted estimator there with joblib.dump or cloudpickle.dump"
            )
        import joblib

        try:
            model = joblib.load(path)
        except Exception as exc:
            raise UserCodeError(
                f"train.notebook {file}: the object saved at model_path does not "
                f"load here ({type(exc).__name__}: {last_line(exc)}); a class "
                "defined in the notebook needs cloudpickle.dump, not joblib.dump"
            ) from None
        return check_model(model, split, file)


def check_model(model: Any, split: Split, file: str) -> Any:
    """The saved object predicts the holdout's raw columns (with probabilities,
    in the data's classes, for a classifier)."""
    wanted = ["predict"] + (["predict_proba"] if split.task != "regression" else [])
    lacks = [m for m in wanted if not callable(getattr(model, m, None))]
    if lacks:
        raise UserCodeError(
            f"train.notebook {file}: the saved {type(model).__name__} has no "
            f"{' or '.join(lacks)}: save the fitted estimator (e.g. a scikit-learn "
            "Pipeline), not its parts"
        )
    classes = getattr(model, "classes_", None)
    if split.labels and classes is not None:
        got = [str(c) for c in classes]
        if got != [str(c) for c in split.labels]:
            raise UserCodeError(
                f"train.notebook {file}: the model's classes {got[:5]} are not the "
                f"training table's {[str(c) for c in split.labels][:5]}: fit on "
                "train_table's target as it is"
            )
    head = split.X_test.head(5)
    try:
        for m in wanted:
            getattr(model, m)(head)
    except Exception as exc:
        raise UserCodeError(
            f"train.notebook {file}: the saved model cannot predict the holdout's "
            f"columns ({type(exc).__name__}: {last_line(exc)}): fit it on "
            "train_table's columns as they are"
        ) from None
    return model
