"""Code lineage on real git, DVC, MLflow and Prefect: the pipeline code and the
workspace's own model code are recorded, checked before promotion, and pinned by
reproduction (which reruns the recorded lineageflow commit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import git
import pytest
from mlflow import MlflowClient

from flows.training import training_pipeline
from lineageflow.errors import PromotionRefused, UserCodeError
from lineageflow.lineage import checks
from lineageflow.lineage import record as lineage

pytestmark = pytest.mark.usefixtures("prefect_api")

MODELS_PY = '''
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier


class ShallowBoost(ClassifierMixin, BaseEstimator):
    """A class of the user's own: the logged model must carry it by value."""

    def __init__(self, max_iter=40, max_depth=3):
        self.max_iter = max_iter
        self.max_depth = max_depth

    def fit(self, X, y):
        self.inner_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter, max_depth=self.max_depth, random_state=0
        ).fit(X, y)
        self.classes_ = self.inner_.classes_
        return self

    def predict(self, X):
        return self.inner_.predict(X)

    def predict_proba(self, X):
        return self.inner_.predict_proba(X)


def build_model(max_iter=40, max_depth=3):
    return ShallowBoost(max_iter=max_iter, max_depth=max_depth)


def build_unseeded(n_estimators=25):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=n_estimators, max_depth=6)  # no seed


def not_an_estimator(**kw):
    return "a string"


def explodes(**kw):
    raise RuntimeError("no GPU in this sandbox")
'''

FEATURES_PY = """
def add_features(df):
    out = df.copy()
    out["charge_per_month_of_tenure"] = out["monthly_charges"] / (out["tenure_months"] + 1)
    return out
"""


def commit_files(ws: Path, files: dict[str, str], message: str) -> str:
    repo = git.Repo(ws)
    for name, text in files.items():
        (ws / name).write_text(textwrap.dedent(text))
        repo.git.add(name)
    return repo.index.commit(message).hexsha


def custom_workspace(make_workspace, **overrides):
    params = {
        "train.model": "custom",
        "train.factory": "models.py:build_model",
        "train.custom": {"max_iter": 30, "max_depth": 3},
        **overrides,
    }
    paths = make_workspace(**params)
    commit_files(
        paths.workspace,
        {"models.py": MODELS_PY, "features.py": FEATURES_PY},
        "Model code",
    )
    return paths


def versions(uri: str, name: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = MlflowClient(uri).search_model_versions(f"name = '{name}'")
    return {str(mv.version): mv for mv in found}


def read_record(uri: str, run_id: str) -> dict:
    path = MlflowClient(uri).download_artifacts(run_id, "lineage.json")
    return json.loads(Path(path).read_text())


# ------------------------------------------------------------ the check itself


def test_code_committed_names_the_dirty_files_and_the_fix():
    record = {
        "pipeline": {
            "version": "0.1.0",
            "commit": "a" * 40,
            "dirty": True,
            "dirty_files": ["lineageflow/ml.py"],
        },
        "user_code": [
            {"role": "factory", "file": "models.py", "blob": None, "committed": False}
        ],
    }
    check = checks.check_code_committed(record)
    assert not check.passed
    assert "lineageflow code at aaaaaaaaaaaa had uncommitted changes" in check.reason
    assert "(lineageflow/ml.py): commit them in the lineageflow repo" in check.reason
    assert "models.py (train.factory) is not in git: commit it" in check.reason
    clean = {"pipeline": {"version": "0.1.0", "commit": "a" * 40, "dirty": False}}
    assert checks.check_code_committed(clean).passed
    installed = {"pipeline": {"version": "0.1.0", "commit": None, "dirty": None}}
    check = checks.check_code_committed(installed)
    assert check.passed and "installed lineageflow 0.1.0" in check.reason


# ------------------------------------------------------------ the user's model code


def test_committed_custom_estimator_trains_registers_and_serves(
    make_workspace, tracking, tmp_path
):
    paths = custom_workspace(
        make_workspace, **{"train.features": "features.py:add_features"}
    )
    ws = paths.workspace
    out = training_pipeline(workspace=str(ws))
    assert out["stage"] == "Staging" and out["checks"]["code_committed"], out

    record = read_record(tracking, out["run_id"])
    head = git.Repo(ws).head.commit
    by_role = {u["role"]: u for u in record["user_code"]}
    assert by_role["factory"]["file"] == "models.py"
    assert by_role["factory"]["function"] == "build_model"
    assert by_role["factory"]["blob"] == head.tree["models.py"].hexsha
    assert by_role["features"]["blob"] == head.tree["features.py"].hexsha
    run = MlflowClient(tracking).get_run(out["run_id"])
    assert run.data.tags["lineage.digest"] == lineage.digest(record)
    assert run.data.tags["lineage.user_code.factory"].startswith(
        "models.py:build_model@"
    )
    assert run.data.tags["mlflow.source.git.commit"] == head.hexsha
    assert run.data.tags["mlflow.source.name"] == "flows/training.py:training_pipeline"

    # MLflow's own pyfunc, in a fresh process where the workspace is not
    # importable: the user's class and feature function travel inside the model
    script = textwrap.dedent(
        f"""
        import sys, pandas as pd, mlflow
        assert not any("{ws}" in p for p in sys.path)
        model = mlflow.pyfunc.load_model("models:/{make_workspace.model_name}@staging")
        rows = pd.read_csv(sorted(__import__("pathlib").Path("{ws}/data/customers").glob("*.csv"))[0])
        X = rows.drop(columns=["churned"]).head(25)  # raw rows, ints as read
        pred = model.predict(X)
        raw = model.get_raw_model()
        print(type(raw.estimator).__name__, len(pred), *sorted({{int(v) for v in pred}}))
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
    kind, n, *labels = proc.stdout.split()
    assert kind == "Pipeline" and n == "25"  # features step + the user's class
    assert set(labels) <= {"0", "1"} and labels  # the data's own labels


def test_an_uncommitted_edit_of_the_model_code_is_refused(make_workspace, tracking):
    ws = custom_workspace(make_workspace).workspace
    (ws / "models.py").write_text(MODELS_PY.replace("max_iter=40", "max_iter=41"))
    with pytest.raises(
        PromotionRefused, match=r"code_committed: workspace code models.py"
    ):
        training_pipeline(workspace=str(ws))
    (mv,) = versions(tracking, make_workspace.model_name).values()
    assert mv.current_stage == "None"
    assert mv.tags["lineage.check.code_committed"].startswith(
        "failed: workspace code models.py (train.factory) has uncommitted edits"
    )
    assert mv.tags["lineage.check.clean_tree"].startswith("failed:")
    assert mv.tags["lineage.checks"] == "failed"


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("missing.py:build_model", r"missing.py does not exist in the workspace"),
        ("models.py:nope", r"models.py has no function 'nope' \(callables there: "),
        ("models.py:not_an_estimator", r"returned str, not a classifier"),
        ("models.py:explodes", r"raised RuntimeError: no GPU in this sandbox"),
    ],
)
def test_broken_model_code_is_one_line_and_registers_nothing(
    make_workspace, tracking, factory, message
):
    ws = custom_workspace(make_workspace, **{"train.factory": factory}).workspace
    with pytest.raises(UserCodeError, match=message) as err:
        training_pipeline(workspace=str(ws))
    assert "\n" not in str(err.value)
    assert versions(tracking, make_workspace.model_name) == {}
    c = MlflowClient(tracking)
    exp = c.get_experiment_by_name("lineageflow")
    running = c.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    assert running == []


def test_custom_without_factory_is_a_config_error(make_workspace):
    from lineageflow.config import parse_params
    from lineageflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.model is custom but train.factory"):
        parse_params({"train": {"model": "custom"}})
    with pytest.raises(ConfigError, match=r"must be '<file>.py:<function>'"):
        parse_params({"train": {"model": "custom", "factory": "../x.py:f"}})


# ------------------------------------------------------------ the pipeline's code


class Pipeline:
    """A clone of the lineageflow code under test that the test may edit and
    commit; the CLI runs from it (PYTHONPATH) in a subprocess."""

    def __init__(self, tmp_path: Path, tracking: str, prefect_api_url: str):
        self.root = tmp_path / "lineageflow-clone"
        git.Repo.clone_from(os.environ["LINEAGEFLOW_TEST_PIPELINE"], self.root)
        self.repo = git.Repo(self.root)
        self.env = dict(
            os.environ,
            PYTHONPATH=str(self.root),
            MLFLOW_TRACKING_URI=tracking,
            PREFECT_API_URL=prefect_api_url,
        )

    def edit_fit(self) -> None:
        """The edit of the issue: `fit` trains on every second row."""
        ml = self.root / "lineageflow" / "model" / "ml.py"
        text = ml.read_text()
        old = "    model.fit(split.X_train, split.y_train)\n"
        assert old in text
        ml.write_text(
            text.replace(
                old, "    model.fit(split.X_train.iloc[::2], split.y_train.iloc[::2])\n"
            )
        )

    def commit(self, message: str) -> str:
        self.repo.git.add(A=True)
        return self.repo.index.commit(message).hexsha

    def nightly(self, ws: Path, cwd: Path) -> dict:
        """The nightly deployment's flow call, with this clone's code."""
        script = (
            "import json; from flows.training import training_pipeline; "
            f"print(json.dumps(training_pipeline(workspace={str(ws)!r}, "
            "skip_if_unchanged=True)))"
        )
        proc = self.python("-c", script, cwd=cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def python(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        """This interpreter, importing lineageflow from the clone."""
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )

    def cli(self, *args: str, cwd: Path, ok: bool = True):
        proc = self.python("-m", "flows.cli", *args, cwd=cwd)
        if ok:
            assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return proc


@pytest.fixture
def pipeline(tmp_path, tracking, prefect_api_url) -> Pipeline:
    return Pipeline(tmp_path, tracking, prefect_api_url)


def run_id_of(stdout: str) -> str:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("run "))
    return line.split()[1].rstrip(":")


def test_uncommitted_pipeline_code_is_refused_and_its_reproduction_says_why(
    make_workspace, tracking, pipeline, tmp_path
):
    ws = make_workspace().workspace
    pipeline.edit_fit()
    proc = pipeline.cli("train", str(ws), cwd=tmp_path, ok=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "stays in None: code_committed: " in last
    assert "(lineageflow/model/ml.py): commit them in the lineageflow repo" in last
    (mv,) = versions(tracking, make_workspace.model_name).values()
    assert mv.current_stage == "None"
    run = MlflowClient(tracking).get_run(mv.run_id)
    assert run.data.tags["lineage.pipeline_dirty"] == "true"
    assert run.data.tags["lineage.pipeline_commit"] == pipeline.repo.head.commit.hexsha

    # the edit is reverted: the recorded commit is the code at hand, but the
    # code that trained the run is gone, and the verdict says so
    pipeline.repo.git.checkout("--", ".")
    proc = pipeline.cli("reproduce", mv.run_id, cwd=tmp_path)
    first = proc.stdout.strip().splitlines()[0]
    assert first.startswith("unpinned: run "), proc.stdout
    assert (
        "uncommitted changes (lineageflow/model/ml.py) that no commit holds"
        in proc.stdout
    )
    assert "metrics diverged" in proc.stdout


def test_reproduction_reruns_the_recorded_pipeline_commit(
    make_workspace, tracking, pipeline, tmp_path
):
    ws = make_workspace(**{"evaluate.champion_tolerance": 1.0}).workspace
    c = MlflowClient(tracking)
    a = run_id_of(pipeline.cli("train", str(ws), cwd=tmp_path).stdout)
    commit_a = pipeline.repo.head.commit.hexsha
    assert pipeline.nightly(ws, tmp_path).get("skipped") is True  # nothing new yet
    pipeline.edit_fit()
    commit_b = pipeline.commit("fit on every second row")
    # new pipeline code is a new model: the nightly retrains
    b = pipeline.nightly(ws, tmp_path)["run_id"]
    metrics = {r: c.get_run(r).data.metrics["test_roc_auc"] for r in (a, b)}
    assert metrics[a] != metrics[b]
    assert c.get_run(a).data.tags["lineage.pipeline_commit"] == commit_a
    assert c.get_run(b).data.tags["lineage.pipeline_commit"] == commit_b

    # with B's code checked out, and from a directory that is no workspace:
    # the run id alone names the workspace, the data and the code
    for run_id, commit in ((a, commit_a), (b, commit_b)):
        proc = pipeline.cli("reproduce", run_id, cwd=tmp_path)
        assert proc.stdout.startswith(f"exact: run {run_id} reproduced as "), (
            proc.stdout + proc.stderr[-2000:]
        )
        new = c.get_run(c.get_run(run_id).data.tags["lineage.reproduced_by"])
        assert new.data.tags["lineage.pipeline_commit"] == commit
        assert new.data.tags["lineage.pipeline_dirty"] == "false"
        assert new.data.metrics["test_roc_auc"] == metrics[run_id]
    # the temporary checkout of the recorded code is gone
    assert len(pipeline.repo.git.worktree("list").splitlines()) == 1


def test_reproduction_from_the_run_id_alone_clones_and_pulls(
    make_workspace, tracking, tmp_path
):
    """Another machine: the workspace is not here and no DVC cache exists; the
    recorded repo URL and DVC remote are all there is."""
    from flows.reproduce import reproduce_run

    paths = make_workspace()
    ws = paths.workspace
    origin = tmp_path / "origin.git"
    git.Repo.init(origin, bare=True)
    repo = git.Repo(ws)
    repo.create_remote("origin", str(origin))
    repo.git.push("origin", "HEAD:main")
    first = training_pipeline(workspace=str(ws))
    record = read_record(tracking, first["run_id"])
    assert record["workspace"]["repo"] == str(origin)

    moved = tmp_path / "elsewhere"
    ws.rename(moved)  # neither the workspace nor its DVC cache is on this "machine"
    out = reproduce_run(run_id=first["run_id"])
    assert out["verdict"] == "exact", out
    c = MlflowClient(tracking)
    pulls = c.search_runs(
        [first["experiment_id"]],
        f"tags.mlflow.parentRunId = '{out['reproduction_run_id']}' "
        "and tags.`lineageflow.stage` = 'pull_data'",
    )
    assert [r.data.params["action"] for r in pulls] == ["pulled"]
    assert not ws.exists()  # nothing was recreated where the workspace used to be


def test_run_id_is_validated_before_anything_else(monkeypatch, tmp_path):
    """No workspace, no tracking store: a bad run id still says what is wrong."""
    from flows.reproduce import reproduce_run
    from lineageflow.errors import LineageError, WorkspaceError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LINEAGEFLOW_WORKSPACE", raising=False)
    with pytest.raises(LineageError, match=r"is neither an MLflow run id"):
        reproduce_run(run_id="not-a-run")
    with pytest.raises(
        WorkspaceError, match=r"no MLflow store .* set MLFLOW_TRACKING_URI"
    ):
        reproduce_run(run_id="0" * 32)


def test_a_reproduction_of_an_unseeded_fit_names_train_as_where_it_diverged(
    make_workspace, tracking
):
    """The factory has no random_state: the data, the split and the params come
    back the same, the model does not; the verdict says where, and why."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.reproduce import reproduce_run

    ws = custom_workspace(
        make_workspace,
        **{"train.factory": "models.py:build_unseeded", "train.custom": {}},
    ).workspace
    first = training_pipeline(workspace=str(ws))
    out = reproduce_run(run_id=first["run_id"], workspace=str(ws))
    assert out["verdict"] == "diverged", out
    want = (
        "first diverged at train: same train_table and params, different model: "
        "the fit is not deterministic"
    )
    assert out["first_divergence"].startswith(want)
    assert any(n.startswith(want) for n in out["notes"]), out["notes"]
    c = MlflowClient(tracking)
    for rid in (first["run_id"], out["reproduction_run_id"]):
        tags = c.get_run(rid).data.tags
        assert tags["lineage.reproduction.first_divergence"].startswith(want)
        assert tags["lineage.reproduction.verdict"].startswith(f"diverged ({want}")

    async def markdown():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["reproduction"])
                )
            )
        return [a.data for a in found]

    assert any(want in str(text) for text in asyncio.run(markdown()))
