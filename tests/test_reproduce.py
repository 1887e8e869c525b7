"""reproduce-run and the nightly "nothing changed" path, on real git/DVC/MLflow/Prefect."""

from __future__ import annotations

import shutil
import warnings

import git
import pytest
from mlflow import MlflowClient

from flows.demo import add_data_version
from flows.reproduce import reproduce_run
from flows.training import training_pipeline
from lineageflow.errors import DataError, LineageError, WorkspaceError

pytestmark = pytest.mark.usefixtures("prefect_api")


def n_versions(uri, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return len(MlflowClient(uri).search_model_versions(f"name = '{name}'"))


def snapshot(root):
    """Every file of the user's working tree with its bytes and mtime (not git's,
    DVC's or lineageflow's internal state: .git/, .dvc/tmp, .dvc/cache, .lineageflow/)."""
    internal = {".git", ".lineageflow"}
    return {
        p: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
        and not internal & set(p.relative_to(root).parts)
        and p.relative_to(root).parts[:2] not in ((".dvc", "tmp"), (".dvc", "cache"))
    }


def test_reproduction_of_an_older_run_is_exact_and_leaves_the_tree_alone(
    make_workspace, tracking
):
    paths = make_workspace()
    ws = paths.workspace
    first = training_pipeline(workspace=str(ws))
    head_then = git.Repo(ws).head.commit.hexsha
    # the workspace moves on: new data, new commit; the old run must still rebuild
    add_data_version(ws, 1, 1500, seed=9, drift=0.5, message="data v2")
    before = snapshot(ws)
    head = git.Repo(ws).head.commit.hexsha

    out = reproduce_run(run_id=first["run_id"], workspace=str(ws))

    assert out["verdict"] == "exact", out
    assert set(out["metrics"]) >= {"test_roc_auc", "test_accuracy", "test_log_loss"}
    c = MlflowClient(tracking)
    orig, repro = c.get_run(first["run_id"]), c.get_run(out["reproduction_run_id"])
    assert orig.data.tags["lineage.reproduced_by"] == repro.info.run_id
    assert orig.data.tags["lineage.reproduction.verdict"] == "exact"
    # MLflow's own source fields carry the workspace commit, on children too
    assert repro.data.tags["mlflow.source.git.commit"] == head_then
    assert repro.data.tags["mlflow.source.name"] == "flows/reproduce.py:reproduce_run"
    assert repro.data.tags["lineage.reproduction_of"] == first["run_id"]
    assert repro.data.tags["lineage.git_commit"] == orig.data.tags["lineage.git_commit"]
    assert (
        repro.data.tags["lineage.data.data/customers.md5"]
        == orig.data.tags["lineage.data.data/customers.md5"]
    )
    assert repro.info.status == "FINISHED"
    assert n_versions(tracking, make_workspace.model_name) == 1  # never registers
    # user's tree untouched, temp worktree gone
    repo = git.Repo(ws)
    assert repo.head.commit.hexsha == head and snapshot(ws) == before
    assert len(repo.git.worktree("list").splitlines()) == 1


def test_reproduce_accepts_a_model_uri(make_workspace, tracking):
    ws = make_workspace().workspace
    first = training_pipeline(workspace=str(ws))
    out = reproduce_run(
        run_id=f"models:/{make_workspace.model_name}/{first['version']}",
        workspace=str(ws),
    )
    assert out["run_id"] == first["run_id"] and out["verdict"] == "exact"


@pytest.mark.parametrize(
    "bad", ["; rm -rf /", "../etc", "--upload-pack=x", "0" * 31, "models:/x/../1"]
)
def test_malformed_run_ids_are_refused_before_git_or_mlflow(
    make_workspace, tracking, bad
):
    ws = make_workspace().workspace
    with pytest.raises(LineageError, match=r"is neither an MLflow run id"):
        reproduce_run(run_id=bad, workspace=str(ws))


def test_unknown_run_and_run_without_lineage(make_workspace, tracking):
    ws = make_workspace().workspace
    with pytest.raises(LineageError, match=r"does not exist"):
        reproduce_run(run_id="0" * 32, workspace=str(ws))
    c = MlflowClient(tracking)
    exp = c.create_experiment(f"outside-{make_workspace.model_name}")
    stray = c.create_run(exp).info.run_id
    c.set_terminated(stray)
    with pytest.raises(LineageError, match=r"has no lineage.json: it was not made by"):
        reproduce_run(run_id=stray, workspace=str(ws))


def test_forged_record_is_not_reproduced(make_workspace, tracking):
    ws = make_workspace().workspace
    first = training_pipeline(workspace=str(ws))
    MlflowClient(tracking).set_tag(first["run_id"], "lineage.git_commit", "f" * 40)
    with pytest.raises(
        LineageError, match=r"cannot be reproduced: tag lineage.git_commit differs"
    ):
        reproduce_run(run_id=first["run_id"], workspace=str(ws))


def test_rewritten_history_and_lost_data_are_clear(make_workspace, tracking, tmp_path):
    paths = make_workspace()
    ws = paths.workspace
    first = training_pipeline(workspace=str(ws))
    # data gone from the remote and from the cache: nothing to rebuild it from
    shutil.rmtree(paths.remote)
    shutil.rmtree(ws / ".dvc" / "cache")
    with pytest.raises(
        DataError, match=r"could not be pulled from DVC remote 'storage'"
    ):
        reproduce_run(run_id=first["run_id"], workspace=str(ws))
    assert (
        len(git.Repo(ws).git.worktree("list").splitlines()) == 1
    )  # cleaned up on failure
    # history rewritten: the recorded commit is gone
    repo = git.Repo(ws)
    (ws / "extra.txt").write_text("x")
    repo.git.add("extra.txt")
    repo.git.commit("--amend", "-m", "rewritten")
    repo.git.reflog("expire", "--expire=now", "--all")
    repo.git.gc("--prune=now", "--quiet")
    with pytest.raises(WorkspaceError, match=r"is not in .* \(history rewritten\?\)"):
        reproduce_run(run_id=first["run_id"], workspace=str(ws))


def test_nightly_with_nothing_changed_registers_nothing(make_workspace, tracking):
    paths = make_workspace()
    ws = paths.workspace
    first = training_pipeline(workspace=str(ws))
    runs_before = len(MlflowClient(tracking).search_runs([first["experiment_id"]]))
    out = training_pipeline(workspace=str(ws), skip_if_unchanged=True)
    assert (
        out["skipped"]
        and out["message"] == f"nothing changed since version {first['version']}"
    )
    assert n_versions(tracking, make_workspace.model_name) == 1
    assert (
        len(MlflowClient(tracking).search_runs([first["experiment_id"]])) == runs_before
    )
    # new data: the nightly retrains
    add_data_version(ws, 1, 1500, seed=9, drift=0.3, message="data v2")
    try:
        out = training_pipeline(workspace=str(ws), skip_if_unchanged=True)
        assert "skipped" not in out
    except Exception as exc:  # a refused challenger still trained and registered
        assert "champion" in str(exc)
    assert n_versions(tracking, make_workspace.model_name) == 2


def test_compare_metrics_verdicts():
    from lineageflow.reproduce.reproduction import compare_metrics

    a = {"m": 0.5, "n": 1.0}
    assert compare_metrics(a, dict(a), 0.0)[0] == "exact"
    assert compare_metrics(a, {"m": 0.5001, "n": 1.0}, 0.001)[0] == "within_tolerance"
    assert compare_metrics(a, {"m": 0.6, "n": 1.0}, 0.001)[0] == "diverged"
    assert compare_metrics(a, {"m": 0.5}, 1.0)[0] == "diverged"


def _rec(commit="a" * 40, dirty=False, files=(), env=None, **extra):
    return {
        "pipeline": {
            "version": "0.1.0",
            "commit": commit,
            "dirty": dirty,
            "dirty_files": list(files),
        },
        "workspace": {"dirty": False},
        "params_sha256": "p",
        "data": [{"path": "d", "md5": "m", "read_md5": "m"}],
        "environment": env
        or {"python": "3.11.7", "packages": {"xgboost": "3.2.0", "mlflow": "3.17.2"}},
        **extra,
    }


def test_verdict_is_exact_only_for_pinned_code_and_names_every_difference():
    from lineageflow.reproduce.reproduction import judge

    m = {"test_roc_auc": 0.75}
    assert judge(_rec(), _rec(), m, dict(m), 0.0).line() == "exact"
    assert judge(_rec(), _rec(), m, {"test_roc_auc": 0.7}, 0.0).verdict == "diverged"

    dirty = judge(_rec(dirty=True, files=["lineageflow/ml.py"]), _rec(), m, m, 0.0)
    assert dirty.verdict == "unpinned" and dirty.metrics_verdict == "exact"
    assert (
        "uncommitted changes (lineageflow/ml.py) that no commit holds" in dirty.line()
    )
    wheel = judge(_rec(commit=None), _rec(), m, m, 0.0)
    assert "installed lineageflow 0.1.0 with no commit" in wheel.line()
    other = judge(_rec(), _rec(commit="b" * 40), m, m, 0.0)
    assert other.verdict == "unpinned" and "recorded lineageflow aaaaaaaaaaaa" in (
        other.line()
    )

    newer = _rec(env={"python": "3.11.9", "packages": {"xgboost": "3.1.0"}})
    cmp = judge(_rec(), newer, m, m, 0.0)
    assert cmp.verdict == "exact"  # the environment is named, not pinned
    assert cmp.environment == [
        "python 3.11.7 -> 3.11.9",
        "mlflow 3.17.2 -> None",
        "xgboost 3.2.0 -> 3.1.0",
    ]
    assert cmp.line().startswith("exact (environment differs: python 3.11.7 -> 3.11.9")

    blob_then = _rec(user_code=[{"file": "models.py", "blob": "1" * 40}])
    blob_now = _rec(user_code=[{"file": "models.py", "blob": "2" * 40}])
    assert (
        "models.py differs from blob 1111" in judge(blob_then, blob_now, m, m, 0).line()
    )


def test_first_divergence_names_the_first_stage_that_split():
    from lineageflow.reproduce.divergence import first_divergence

    def stage(name, ins, outs, params="p"):
        return {
            "name": name,
            "params_sha256": params,
            "inputs": [{"name": k, "digest": v} for k, v in ins.items()],
            "outputs": [{"name": k, "digest": v} for k, v in outs.items()],
        }

    def rec(model="m1", table="t1", params="p", pulled="d1"):
        return {
            "stages": [
                stage("pull_data", {"a.dvc": "x"}, {"a": "d1"}),
                stage("pull_data", {"b.dvc": "y"}, {"b": pulled}),
                stage("prepare", {"a": "d1", "b": pulled}, {"train_table": table}),
                stage("train", {"train_table": table}, {"model": model}, params),
                stage("evaluate", {"model": model}, {"metrics": "z" + model}),
            ]
        }

    assert first_divergence(rec(), rec(), []) is None
    assert first_divergence(rec(), rec(model="m2"), ["xgboost 3.2.0 -> 3.1.0"]) == (
        "first diverged at train: same train_table and params, different model: "
        "the fit is not deterministic, or xgboost 3.2.0 -> 3.1.0"
    )
    # the second pull_data (by occurrence, not by name) read other data
    assert first_divergence(rec(), rec(pulled="d2"), []) == (
        "first diverged at pull_data: same b.dvc and params, different b: "
        "pull_data is not deterministic"
    )
    assert first_divergence(rec(), rec(table="t2"), []).startswith(
        "first diverged at prepare: same a and b and params, different train_table"
    )
    assert first_divergence(rec(), rec(params="q"), []) == (
        "first differed at train's params"
    )
    assert first_divergence(rec(), {"stages": rec()["stages"][:3]}, []) == (
        "first diverged at train: the reproduction has no train stage"
    )
