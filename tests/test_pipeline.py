"""training-pipeline and promote-model on real git, DVC, MLflow (sqlite) and Prefect."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import git
import pytest
import yaml
from mlflow import MlflowClient

from flows.demo import dvc
from flows.promote import promote_model
from flows.training import training_pipeline
from lineageflow.errors import DataError, PromotionRefused
from lineageflow.lineage import record as lineage

pytestmark = pytest.mark.usefixtures("prefect_api")


def versions(uri: str, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = MlflowClient(uri).search_model_versions(f"name = '{name}'")
    return {str(mv.version): mv for mv in found}


def only_version(uri, name):
    (mv,) = versions(uri, name).values()
    return mv


def read_lineage(uri: str, run_id: str) -> dict:
    c = MlflowClient(uri)
    path = c.download_artifacts(run_id, "lineage.json")
    return json.loads(Path(path).read_text())


def test_happy_path_promotes_exactly_one_version_with_true_lineage(
    make_workspace, tracking
):
    paths = make_workspace()
    ws = paths.workspace
    summary = training_pipeline(workspace=str(ws))

    assert summary["stage"] == "Staging" and all(summary["checks"].values())
    c = MlflowClient(tracking)
    mv = only_version(tracking, make_workspace.model_name)
    assert mv.current_stage == "Staging"
    assert c.get_registered_model(mv.name).aliases == {"staging": int(mv.version)}
    assert mv.tags["lineage.checks"] == "passed"

    # the record agrees with git and the .dvc file, read independently
    record = read_lineage(tracking, summary["run_id"])
    repo = git.Repo(ws)
    assert record["workspace"]["commit"] == repo.head.commit.hexsha
    assert record["workspace"]["dirty"] is False
    dvc_md5 = yaml.safe_load((ws / "data/customers.dvc").read_text())["outs"][0]["md5"]
    (data,) = record["data"]
    assert data["md5"] == dvc_md5 == data["read_md5"] and data["md5"].endswith(".dir")
    assert data["in_remote"] is True and data["remote"] == "storage"
    assert data["nfiles"] == 1 and data["size"] > 0

    run = c.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["lineage.digest"] == lineage.digest(record)
    assert run.data.tags["lineage.git_commit"] == repo.head.commit.hexsha
    assert (
        run.data.tags["prefect.flow_run_id"] == record["orchestration"]["flow_run_id"]
    )
    assert "test_roc_auc" in run.data.metrics
    # the pipeline wrote only inside .lineageflow/, which ignores itself
    assert not repo.is_dirty(untracked_files=True)


def test_child_runs_have_the_parent_even_from_worker_threads(make_workspace, tracking):
    summary = training_pipeline(workspace=str(make_workspace().workspace))
    c = MlflowClient(tracking)
    parent = c.get_run(summary["run_id"])
    children = c.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    stages = sorted(r.data.tags["lineageflow.stage"] for r in children)
    assert stages == ["evaluate", "prepare", "pull_data", "register_model", "train"]
    assert all(r.info.status == "FINISHED" for r in children)
    (pull,) = [r for r in children if r.data.tags["lineageflow.stage"] == "pull_data"]
    # pull_data is mapped, so Prefect ran it in a worker thread: the trap was live
    assert pull.data.tags["lineageflow.thread"] != "MainThread"
    assert pull.inputs.dataset_inputs[0].dataset.digest.endswith(".dir")
    # no stray top-level runs were created beside the parent
    top = c.search_runs(
        [parent.info.experiment_id], filter_string="tags.lineageflow.kind = 'pipeline'"
    )
    assert parent.info.run_id in {r.info.run_id for r in top}
    train = next(r for r in children if r.data.tags["lineageflow.stage"] == "train")
    assert "max_depth" in train.data.params  # autolog wrote into the child run


def test_dirty_workspace_stays_in_none(make_workspace, tracking):
    ws = make_workspace().workspace
    (ws / "scratch.py").write_text("print('uncommitted')\n")
    with pytest.raises(PromotionRefused, match=r"clean_tree: .*scratch.py"):
        training_pipeline(workspace=str(ws))
    mv = only_version(tracking, make_workspace.model_name)
    assert mv.current_stage == "None"
    assert mv.tags["lineage.checks"] == "failed"
    assert mv.tags["lineage.failed_checks"] == "clean_tree"
    assert mv.tags["lineage.check.clean_tree"].startswith(
        "failed: workspace had uncommitted"
    )
    # a refused promotion is not a failed run: the run is complete and promotable later
    assert MlflowClient(tracking).get_run(mv.run_id).info.status == "FINISHED"


def test_unpushed_data_is_refused_then_promoted_after_dvc_push(
    make_workspace, tracking
):
    ws = make_workspace(push=False).workspace
    md5 = yaml.safe_load((ws / "data/customers.dvc").read_text())["outs"][0]["md5"]
    with pytest.raises(PromotionRefused, match=r"data_in_remote"):
        training_pipeline(workspace=str(ws))
    mv = only_version(tracking, make_workspace.model_name)
    assert mv.current_stage == "None"
    assert mv.tags["lineage.check.data_in_remote"] == (
        f"failed: data/customers md5 {md5[:12]} is not in remote 'storage': run `dvc push`"
    )
    dvc("push", cwd=ws)
    msg = promote_model(make_workspace.model_name, mv.version, str(ws))
    assert msg.endswith("promoted to Staging")
    assert only_version(tracking, make_workspace.model_name).current_stage == "Staging"


def dvc_md5(ws: Path) -> str:
    return yaml.safe_load((ws / "data/customers.dvc").read_text())["outs"][0]["md5"]


def dvc_out_md5_now(ws: Path) -> str:
    """DVC's md5 of data/customers as it is on disk (its directory listing)."""
    import hashlib

    from lineageflow.data.dvc_files import dir_md5

    files = sorted((ws / "data/customers").iterdir())
    return dir_md5({f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in files})


def refused_before_the_fit(uri: str, ws: Path, model: str, message: str) -> None:
    """pull_data failed with ``message``; the parent run ended FAILED saying so,
    no stage after it ran, nothing was registered, nothing is left RUNNING."""
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("lineageflow").experiment_id
    head = git.Repo(ws).head.commit.hexsha
    [parent] = c.search_runs(
        [exp],
        f"tags.`mlflow.source.git.commit` = '{head}' "
        "and tags.`lineageflow.kind` = 'pipeline'",
    )
    assert parent.info.status == "FAILED"
    assert parent.data.tags["lineageflow.error"] == f"DataError: {message}"
    children = c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [(r.data.tags["lineageflow.stage"], r.info.status) for r in children] == [
        ("pull_data", "FAILED")
    ]
    assert not c.search_runs([exp], "attributes.status = 'RUNNING'")
    assert versions(uri, model) == {}


def test_data_edited_without_dvc_add_is_refused_before_the_fit_and_left_as_is(
    make_workspace, tracking
):
    ws = make_workspace().workspace
    part = ws / "data/customers/part-000.csv"
    with part.open("a") as fh:
        fh.write(part.read_text().splitlines()[1] + "\n")  # one duplicated row
    edited = part.read_bytes()
    with pytest.raises(DataError) as err:
        training_pipeline(workspace=str(ws))
    read = dvc_out_md5_now(ws)
    message = (
        f"data/customers does not match data/customers.dvc (part-000.csv modified; "
        f"read md5 {read[:12]}, .dvc md5 {dvc_md5(ws)[:12]}): run `dvc checkout "
        "data/customers` (`dvc pull data/customers` if the cache lacks it) to train "
        "on the committed version, or `dvc add data/customers` and commit to pin "
        "what is there"
    )
    assert str(err.value) == message
    refused_before_the_fit(tracking, ws, make_workspace.model_name, message)
    assert part.read_bytes() == edited  # the user's edit was not checked out over


def test_a_file_deleted_from_a_dvc_directory_is_refused_before_the_fit(
    make_workspace, tracking
):
    from flows.demo import add_data_version

    ws = make_workspace().workspace
    add_data_version(ws, 1, 600, seed=8, drift=0.0, message="data v2")
    (ws / "data/customers/part-001.csv").unlink()
    with pytest.raises(DataError) as err:
        training_pipeline(workspace=str(ws))
    message = (
        f"data/customers does not match data/customers.dvc (part-001.csv deleted; "
        f"read md5 {dvc_out_md5_now(ws)[:12]}, .dvc md5 {dvc_md5(ws)[:12]}): run "
        "`dvc checkout data/customers` (`dvc pull data/customers` if the cache "
        "lacks it) to train on the committed version, or `dvc add data/customers` "
        "and commit to pin what is there"
    )
    assert str(err.value) == message
    refused_before_the_fit(tracking, ws, make_workspace.model_name, message)
    dvc("checkout", "data/customers", cwd=ws)  # the fix the line names
    assert training_pipeline(workspace=str(ws))["stage"] == "Staging"


def test_lineage_tag_edited_after_the_run_is_refused(make_workspace, tracking):
    ws = make_workspace(push=False).workspace
    with pytest.raises(PromotionRefused):
        training_pipeline(workspace=str(ws))
    mv = only_version(tracking, make_workspace.model_name)
    dvc("push", cwd=ws)  # the original cause is fixed ...
    MlflowClient(tracking).set_tag(
        mv.run_id, "lineage.params_sha256", "0" * 64
    )  # ... but a tag is forged
    with pytest.raises(
        PromotionRefused, match=r"digest_intact: tag lineage.params_sha256 differs"
    ):
        promote_model(make_workspace.model_name, mv.version, str(ws))
    mv = only_version(tracking, make_workspace.model_name)
    assert mv.current_stage == "None"
    assert "digest_intact" in mv.tags["lineage.failed_checks"]


def test_missing_data_is_pulled_from_the_remote(make_workspace, tracking):
    import shutil

    ws = make_workspace().workspace
    shutil.rmtree(ws / "data/customers")
    summary = training_pipeline(workspace=str(ws))
    assert summary["stage"] == "Staging"
    assert (ws / "data/customers/part-000.csv").exists()


def test_second_data_version_challenges_the_champion(make_workspace, tracking):
    from flows.demo import add_data_version

    paths = make_workspace(rows=4000)
    first = training_pipeline(workspace=str(paths.workspace))
    add_data_version(paths.workspace, 1, 2000, seed=8, drift=0.6, message="data v2")
    try:
        second = training_pipeline(workspace=str(paths.workspace))
    except PromotionRefused as exc:
        assert "champion" in str(exc)  # a worse challenger is refused, not promoted
        second = None
    vs = versions(tracking, make_workspace.model_name)
    staged = [v for v in vs.values() if v.current_stage == "Staging"]
    assert len(staged) == 1
    alias = (
        MlflowClient(tracking)
        .get_registered_model(make_workspace.model_name)
        .aliases["staging"]
    )
    assert str(alias) == str(staged[0].version)
    if second:
        assert vs[first["version"]].current_stage == "Archived"
        assert str(staged[0].version) == str(second["version"])
    # promoted or refused, v2 says why it differs from the champion v1: in MLflow
    # (its description) and in Prefect (an artifact of the flow run)
    why = vs["2"].description.split("### Why it differs from the champion (v1)", 1)
    assert len(why) == 2, vs["2"].description
    assert f"champion **v1** (A, run `{first['run_id']}`)" in why[1]
    assert "data/customers" in why[1] and "test_roc_auc" in why[1]
    assert "metrics (holdout)" in why[1] and "B - A" in why[1]
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["why-it-changed"])
                )
            )

    texts = [str(a.data) for a in asyncio.run(artifacts())]
    assert any(f"run `{first['run_id']}`" in t for t in texts)


@pytest.mark.parametrize("model", ["random_forest", "logistic_regression"])
def test_sklearn_models_register_and_promote(make_workspace, tracking, model):
    ws = make_workspace(**{"train.model": model}).workspace
    summary = training_pipeline(workspace=str(ws))
    assert summary["stage"] == "Staging"
    mv = only_version(tracking, make_workspace.model_name)
    from mlflow.models import get_model_info

    assert "sklearn" in get_model_info(mv.source).flavors
