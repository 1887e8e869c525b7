"""A notebook as the model code, on real git, DVC, MLflow, Prefect and a real
Jupyter kernel (papermill): trained, checked, promoted, served by MLflow's
pyfunc and reproduced; its failures are one line and register nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import git
import nbformat
import pytest
from mlflow import MlflowClient

from flows.training import training_pipeline
from lineageflow.errors import PromotionRefused, UserCodeError
from lineageflow.lineage import notebooks

needs_prefect = pytest.mark.usefixtures("prefect_api")

PARAMETERS = """\
train_table = "train.parquet"
target = "churned"
task = "binary"
seed = 0
params = {}
model_path = "model.pkl"
"""
IMPORTS = """\
import joblib
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

df = pd.read_parquet(train_table)
X, y = df.drop(columns=[target]), df[target]
print(len(df), "rows")
"""
FIT = """\
model = make_pipeline(
    StandardScaler(),
    LogisticRegression(max_iter=params.get("max_iter", 100), random_state=seed),
)
model.fit(X, y)
joblib.dump(model, model_path)
"""


def ipynb(cells: list[tuple[str, str]], outputs: str | None = None) -> str:
    """An .ipynb with ``cells`` ((kind, source); the first code cell tagged
    ``parameters``); ``outputs`` adds a stream output to every code cell, as
    an interactive run leaves it."""
    nb = nbformat.v4.new_notebook()
    tagged = False
    for kind, source in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
            continue
        cell = nbformat.v4.new_code_cell(source)
        if not tagged:
            cell.metadata["tags"] = ["parameters"]
            tagged = True
        if outputs is not None:
            cell.outputs = [nbformat.v4.new_output("stream", text=outputs)]
            cell.execution_count = 7
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return nbformat.writes(nb)


TRAIN_IPYNB = ipynb(
    [
        ("code", PARAMETERS),
        ("markdown", "# Churn\nA logistic regression on the raw columns."),
        ("code", IMPORTS),
        ("code", FIT),
    ]
)
TRAIN_PY = (
    '# %% tags=["parameters"]\n'
    + PARAMETERS
    + "\n# %% [markdown]\n# # Churn\n\n# %%\n"
    + IMPORTS
    + "\n# %%\n"
    + FIT
)


def commit_files(ws: Path, files: dict[str, str], message: str) -> str:
    repo = git.Repo(ws)
    for name, text in files.items():
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(text)
        repo.git.add(name)
    return repo.index.commit(message).hexsha


def notebook_workspace(
    make_workspace, file="notebooks/train.ipynb", text=TRAIN_IPYNB, **kw
):
    paths = make_workspace(
        **{
            "train.model": "notebook",
            "train.notebook": file,
            "train.notebook_params": {"max_iter": 200},
            **kw,
        }
    )
    commit_files(paths.workspace, {file: text}, "Training notebook")
    return paths


def read_record(uri: str, run_id: str) -> dict:
    path = MlflowClient(uri).download_artifacts(run_id, "lineage.json")
    return json.loads(Path(path).read_text())


def child(uri: str, parent: str, stage: str):
    c = MlflowClient(uri)
    exp = c.get_run(parent).info.experiment_id
    runs = c.search_runs(
        [exp],
        f"tags.mlflow.parentRunId = '{parent}' and tags.mlflow.runName = '{stage}'",
    )
    assert len(runs) == 1, runs
    return runs[0]


def versions(uri: str, name: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = MlflowClient(uri).search_model_versions(f"name = '{name}'")
    return {str(mv.version): mv for mv in found}


def prefect_links(key: str) -> list[str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )

    return [str(a.data) for a in asyncio.run(read())]


def no_run_left_running(uri: str, experiment_id: str) -> None:
    running = MlflowClient(uri).search_runs(
        [experiment_id], "attributes.status = 'RUNNING'"
    )
    assert running == [], [r.info.run_name for r in running]


# ------------------------------------------------------------ reading notebooks


def test_the_code_digest_is_the_code_cells_only():
    nb = notebooks.parse_notebook(TRAIN_IPYNB, "t.ipynb")
    run_again = notebooks.parse_notebook(
        ipynb(
            [
                ("code", PARAMETERS),
                ("markdown", "# Churn, rewritten prose"),
                ("code", IMPORTS),
                ("code", FIT),
            ],
            outputs="3000 rows\n",
        ),
        "t.ipynb",
    )
    py = notebooks.parse_notebook(TRAIN_PY, "t.py")
    digest = notebooks.code_digest(notebooks.code_cells(nb))
    assert notebooks.code_digest(notebooks.code_cells(run_again)) == digest
    assert notebooks.code_digest(notebooks.code_cells(py)) == digest
    edited = notebooks.code_cells(nb)
    edited[2] = edited[2].replace("max_iter", "max_iter_")
    assert notebooks.code_digest(edited) != digest
    assert notebooks.first_changed_cell(notebooks.code_cells(nb), edited) == 3
    assert notebooks.first_changed_cell(edited[:2], edited) == 3


def test_a_databricks_export_is_a_notebook():
    text = (
        "# Databricks notebook source\n"
        + PARAMETERS
        + "\n# COMMAND ----------\n\n# MAGIC %md\n# MAGIC # Churn\n"
        + "\n# COMMAND ----------\n\n"
        + IMPORTS
        + "\n# COMMAND ----------\n\n"
        + FIT
    )
    nb = notebooks.parse_notebook(text, "train.py")
    assert [c.cell_type for c in nb.cells] == ["code", "markdown", "code", "code"]
    assert nb.cells[1].source == "# Churn"
    assert notebooks.code_cells(nb) == notebooks.code_cells(
        notebooks.parse_notebook(TRAIN_IPYNB, "t.ipynb")
    )
    sql = text.replace("# MAGIC %md", "# MAGIC %sql\n# MAGIC select 1")
    with pytest.raises(UserCodeError, match=r"cell 2 is a Databricks %sql cell"):
        notebooks.parse_notebook(sql, "train.py")


@pytest.mark.parametrize(
    "file,text,says",
    [
        ("t.ipynb", "{not json", "is not a Jupyter notebook (NotJSONError)"),
        ("t.ipynb", '{"cells": 3}', "is not a Jupyter notebook"),
        (
            "t.py",
            "import os\nx = 1\n",
            "has no cell markers: a .py notebook needs '# %%'",
        ),
        ("t.py", "# %% [markdown]\n# only prose\n", "has no code cells"),
    ],
)
def test_what_is_not_a_notebook_is_one_line(file, text, says):
    with pytest.raises(UserCodeError) as err:
        notebooks.parse_notebook(text, file)
    assert str(err.value).startswith(f"train.notebook {file}: ")
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_notebook_outside_the_workspace_or_missing_is_one_line(tmp_path):
    from lineageflow.config import parse_params

    with pytest.raises(Exception, match=r"relative to the workspace root"):
        parse_params({"train": {"model": "notebook", "notebook": "../x.ipynb"}})
    with pytest.raises(Exception, match=r"train.notebook is not set"):
        parse_params({"train": {"model": "notebook"}})
    (tmp_path / "ws").mkdir()
    (tmp_path / "outside.ipynb").write_text(TRAIN_IPYNB)
    (tmp_path / "ws" / "link.ipynb").symlink_to(tmp_path / "outside.ipynb")
    with pytest.raises(UserCodeError, match=r"link.ipynb: is outside the workspace"):
        notebooks.read_notebook(tmp_path / "ws", "link.ipynb")
    with pytest.raises(UserCodeError, match=r"nb.ipynb: does not exist in the work"):
        notebooks.read_notebook(tmp_path / "ws", "nb.ipynb")


def test_unused_notebook_keys_leave_every_digest_as_it_was():
    """A config without a notebook dumps exactly as before notebooks existed: the
    digests below were computed by the code before them (aee6464)."""
    from lineageflow.config import parse_params
    from lineageflow.runs.stages import section_sha256

    cfg = parse_params({})
    assert not {"notebook", "notebook_params", "notebook_timeout"} & set(
        cfg.as_dict()["train"]
    )
    assert cfg.sha256().startswith("f4c83b1050433b46")
    assert section_sha256(cfg.train).startswith("f22d020780c7a3a1")
    custom = parse_params(
        {"train": {"model": "custom", "factory": "m.py:f", "features": "f.py:g"}}
    )
    assert custom.sha256().startswith("555e9bcbb3c7febf")
    assert section_sha256(custom.train).startswith("68c68a133a0934f2")
    with pytest.raises(Exception, match=r"train.features does not apply to"):
        parse_params(
            {
                "train": {
                    "model": "notebook",
                    "notebook": "n.ipynb",
                    "features": "f.py:g",
                }
            }
        )
    nb = parse_params({"train": {"model": "notebook", "notebook": "n.ipynb"}})
    assert nb.as_dict()["train"]["notebook"] == "n.ipynb"
    assert nb.train.code_refs() == {"notebook": "n.ipynb"}


def test_the_watch_sees_a_notebook_code_change_not_new_outputs(tmp_path):
    from lineageflow.retrain.head import code_files

    repo = git.Repo.init(tmp_path)
    nb = "notebooks/train.ipynb"
    a = commit_files(tmp_path, {nb: TRAIN_IPYNB}, "notebook")
    cells = [("code", PARAMETERS), ("code", IMPORTS), ("code", FIT)]
    b = commit_files(tmp_path, {nb: ipynb(cells, outputs="1 rows\n")}, "ran it")
    edited = [("code", PARAMETERS), ("code", IMPORTS), ("code", FIT + "print(1)\n")]
    c = commit_files(tmp_path, {nb: ipynb(edited)}, "edited a cell")
    assert code_files(repo, a, b, nb) == ()
    assert code_files(repo, a, c, nb) == (nb,)
    assert code_files(repo, a, c) == ()  # a notebook the config does not train with


def test_no_kernel_in_the_environment_is_one_line(monkeypatch, tmp_path):
    import importlib.util

    from lineageflow.config import parse_params
    from lineageflow.model.ml import Split
    from lineageflow.model.notebook import NotebookSource

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ipykernel" else find_spec(name, *a),
    )
    cfg = parse_params({"train": {"model": "notebook", "notebook": "t.ipynb"}}).train
    split = Split(*[None] * 4)
    with pytest.raises(UserCodeError) as err:
        NotebookSource.open(cfg, tmp_path, split)
    assert str(err.value).startswith(
        "train.notebook t.ipynb: no Jupyter kernel in this environment ("
    )
    assert "install ipykernel" in str(err.value)


# ------------------------------------------------------------ through the pipeline


@needs_prefect
def test_writes_and_workspace_helpers_are_not_unnamed_reads(make_workspace, tracking):
    """Saving a file and importing a helper module committed beside the notebook
    is no data read; neither leaves bytecode in the workspace."""
    fit = FIT + (
        "import os, tempfile\n"
        "from helpers import n_rows\n"
        "out = os.path.join(tempfile.gettempdir(), f'lf-preds-{os.getpid()}.csv')\n"
        "pd.DataFrame({'n': [n_rows(X)]}).to_csv(out)\n"
        "os.remove(out)\n"
    )
    text = ipynb([("code", PARAMETERS), ("code", IMPORTS), ("code", fit)])
    ws = notebook_workspace(make_workspace, text=text).workspace
    commit_files(
        ws, {"notebooks/helpers.py": "def n_rows(df):\n    return len(df)\n"}, "h"
    )
    out = training_pipeline(workspace=str(ws))
    assert out["stage"] == "Staging", out
    assert not (ws / "notebooks" / "__pycache__").exists()
    assert git.Repo(ws).untracked_files == []


@needs_prefect
@pytest.mark.parametrize(
    "file,text",
    [("notebooks/train.ipynb", TRAIN_IPYNB), ("notebooks/train.py", TRAIN_PY)],
)
def test_a_notebook_trains_promotes_serves_and_reproduces(
    make_workspace, tracking, tmp_path, file, text
):
    from flows.reproduce import reproduce_run

    ws = notebook_workspace(make_workspace, file, text).workspace
    out = training_pipeline(workspace=str(ws))
    assert out["stage"] == "Staging" and out["checks"]["code_committed"], out
    head = git.Repo(ws).head.commit

    record = read_record(tracking, out["run_id"])
    (nb,) = record["user_code"]
    assert nb["role"] == "notebook" and nb["file"] == file and nb["committed"]
    assert nb["blob"] == head.tree[file].hexsha and nb["code_cells"] == 3
    cells = notebooks.code_cells(notebooks.parse_notebook(text, file))
    assert nb["sha256"] == notebooks.code_digest(cells)
    # what the kernel imported is named too (ipykernel: only the kernel runs it)
    assert {"ipykernel", "scikit-learn"} <= set(record["environment"]["imported"])

    c = MlflowClient(tracking)
    train = child(tracking, out["run_id"], "train")
    tags = train.data.tags
    assert tags["mlflow.source.name"] == file
    assert tags["mlflow.source.type"] == "NOTEBOOK"
    assert tags["mlflow.source.git.commit"] == head.hexsha
    assert train.data.params["lineageflow.notebook"] == file
    assert train.data.params["lineageflow.notebook_code_sha256"] == nb["sha256"]
    parent = c.get_run(out["run_id"]).data.tags
    assert parent["lineage.user_code.notebook"] == f"{file}@{nb['blob'][:12]}"

    # the notebook as it ran: the injected parameters, its outputs, no extra cell
    stored = Path(c.download_artifacts(train.info.run_id, "notebook", str(tmp_path)))
    assert sorted(p.name for p in stored.iterdir()) == ["train.html", "train.ipynb"]
    ran = nbformat.read(stored / "train.ipynb", as_version=4)
    injected = [
        cell
        for cell in ran.cells
        if "injected-parameters" in cell.metadata.get("tags", [])
    ]
    assert len(injected) == 1 and "model_path = " in injected[0].source
    assert "max_iter" in injected[0].source
    printed = "".join(
        o.get("text", "") for cell in ran.cells for o in cell.get("outputs", [])
    )
    assert " rows" in printed
    assert not any("lineageflow-record" in str(cell.metadata) for cell in ran.cells)
    assert "rows" in (stored / "train.html").read_text()
    links = prefect_links("notebook")
    assert any(train.info.run_id in link and "train.html" in link for link in links)

    # MLflow's own pyfunc, in a fresh process, on raw rows as pandas reads them
    script = textwrap.dedent(
        f"""
        import pathlib, pandas as pd, mlflow
        model = mlflow.pyfunc.load_model("models:/{make_workspace.model_name}@staging")
        csv = sorted(pathlib.Path("{ws}/data/customers").glob("*.csv"))[0]
        X = pd.read_csv(csv).drop(columns=["churned"]).head(20)
        print(len(model.predict(X)), *sorted({{int(v) for v in model.predict(X)}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=dict(os.environ, MLFLOW_TRACKING_URI=tracking),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    n, *labels = proc.stdout.split()
    assert n == "20" and labels and set(labels) <= {"0", "1"}

    # the notebook seeds itself from `seed`: rerun at the recorded commit, exact
    again = reproduce_run(run_id=out["run_id"])
    assert again["verdict"] == "exact", again


def failing_run(make_workspace, tracking, fit: str, **kw):
    """Train with ``fit`` as the notebook's last cell; the one-line error, after
    checking that nothing was registered and no run is left RUNNING."""
    text = ipynb([("code", PARAMETERS), ("code", IMPORTS), ("code", fit)])
    ws = notebook_workspace(make_workspace, text=text, **kw).workspace
    with pytest.raises(UserCodeError) as err:
        training_pipeline(workspace=str(ws))
    assert versions(tracking, make_workspace.model_name) == {}
    exp = MlflowClient(tracking).get_experiment_by_name("lineageflow")
    no_run_left_running(tracking, exp.experiment_id)
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        "train.notebook notebooks/train.ipynb: "
    ), message
    return message, exp


@needs_prefect
def test_a_cell_that_raises_fails_the_stage_in_one_line(
    make_workspace, tracking, tmp_path
):
    fit = FIT.replace("model.fit(X, y)", "raise ValueError('no such column: plan')")
    message, exp = failing_run(make_workspace, tracking, fit)
    assert message == (
        "train.notebook notebooks/train.ipynb: code cell 3 raised ValueError: no "
        "such column: plan: fix it and commit"
    )
    # the notebook executed up to that cell is on the failed train run
    c = MlflowClient(tracking)
    (train,) = c.search_runs(
        [exp.experiment_id], "tags.`lineageflow.stage` = 'train'", max_results=1
    )
    assert train.info.status == "FAILED"
    stored = c.download_artifacts(
        train.info.run_id, "notebook/train.ipynb", str(tmp_path)
    )
    ran = nbformat.read(stored, as_version=4)
    errors = [
        o
        for cell in ran.cells
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert errors and errors[0]["ename"] == "ValueError"


@needs_prefect
@pytest.mark.parametrize(
    "fit,says",
    [
        (IMPORTS.split("\n")[0] + "\nx = 1", "nothing was written to model_path"),
        (
            "import joblib\njoblib.dump({'weights': [1, 2]}, model_path)",
            "the saved dict has no predict or predict_proba",
        ),
        (
            "import time\ntime.sleep(30)",
            "a cell ran longer than train.notebook_timeout (2 s)",
        ),
        ("import os\nos._exit(3)", "the kernel died while running it"),
        (
            "import glob\nextra = pd.read_csv(sorted(glob.glob('../data/customers/*.csv'))[0])",
            "it read data/customers/part-000.csv, which data.datasets does not name",
        ),
    ],
    ids=["nothing-saved", "no-predict", "timeout", "dead-kernel", "unnamed-data"],
)
def test_notebook_failures_are_one_line_and_register_nothing(
    make_workspace, tracking, fit, says
):
    message, _ = failing_run(
        make_workspace, tracking, fit, **{"train.notebook_timeout": 2}
    )
    assert says in message, message


@needs_prefect
def test_an_edited_cell_is_refused_and_new_outputs_are_no_code_change(
    make_workspace, tracking
):
    ws = notebook_workspace(make_workspace).workspace
    nb_path = ws / "notebooks" / "train.ipynb"
    first = training_pipeline(workspace=str(ws), reuse=True)
    assert first["stage"] == "Staging", first

    # an edited code cell, not committed: refused, naming the notebook and cell
    nb_path.write_text(
        TRAIN_IPYNB.replace("max_iter=params", "tol=1e-3, max_iter=params")
    )
    with pytest.raises(PromotionRefused) as err:
        training_pipeline(workspace=str(ws))
    assert (
        "workspace code notebooks/train.ipynb (train.notebook) differs from the "
        "commit at code cell 3: commit it and retrain" in str(err.value)
    ), err.value
    assert versions(tracking, make_workspace.model_name)["2"].current_stage == "None"

    # saved again after an interactive run, and committed: same code
    nb_path.write_text(
        ipynb(
            [
                ("code", PARAMETERS),
                ("markdown", "# Churn\nA logistic regression on the raw columns."),
                ("code", IMPORTS),
                ("code", FIT),
            ],
            outputs="2400 rows\n",
        )
    )
    repo = git.Repo(ws)
    repo.git.add("notebooks/train.ipynb")
    repo.index.commit("Run the notebook again")
    again = training_pipeline(workspace=str(ws), reuse=True)
    record = read_record(tracking, again["run_id"])
    was = read_record(tracking, first["run_id"])
    assert record["user_code"][0]["sha256"] == was["user_code"][0]["sha256"]
    assert record["user_code"][0]["blob"] != was["user_code"][0]["blob"]
    train = child(tracking, again["run_id"], "train")
    assert train.data.tags.get("lineage.stage.reused_from"), "train ran again"
    # the reused stage still names what the kernel imported (ipykernel: only
    # the kernel imports it)
    assert "ipykernel" in record["environment"]["imported"]
    print(again)
    from lineageflow.reproduce.diff import collect

    d = collect(tracking, first["run_id"], again["run_id"])
    assert d["code"]["user_code"] == [], d["code"]


@pytest.mark.slow
def test_the_notebook_demo_trains_both_versions_and_mlflow_shows_the_notebook(
    tmp_path,
):
    """`lineageflow demo --source notebook`, as README shows it, from a clean shell;
    MLflow's own run page (headless Chromium) names the notebook as the source."""
    import re

    from tests.servers import mlflow_ui
    from tests.test_browser import CHROMIUM, rendered
    from tests.test_e2e import clean_env

    env = clean_env(PREFECT_HOME=str(tmp_path / "prefect-home"))
    lf = Path(sys.executable).parent / "lineageflow"
    proc = subprocess.run(
        [str(lf), "demo", "--dir", str(tmp_path / "d"), "--rows", "2000"]
        + ["--source", "notebook"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(" -> Staging") == 2, proc.stdout[-2000:]
    first = re.search(r"^  ([0-9a-f]{32})  ", proc.stdout, re.M).group(1)
    db = tmp_path / "d" / "workspace" / ".lineageflow" / "mlflow.db"
    uri = f"sqlite:///{db}"
    record = read_record(uri, first)
    assert record["user_code"][0]["file"] == "notebooks/train.ipynb"
    train = child(uri, first, "train")
    assert train.data.tags["mlflow.source.type"] == "NOTEBOOK"
    if CHROMIUM:
        exp = train.info.experiment_id
        with mlflow_ui(db, tmp_path, env) as server:
            page = f"{server}/#/experiments/{exp}/runs/{train.info.run_id}"
            shown = rendered(page, "notebooks/train.ipynb", tmp_path)
        assert "notebooks/train.ipynb" in shown
