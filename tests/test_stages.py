"""Every stage carries its own lineage on its child run; every digest is checked
against the real object (data, tables, model, metrics, record)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from flows.training import training_pipeline
from lineageflow.config import load_params
from lineageflow.errors import LineageError
from lineageflow.lineage import checks, graph
from lineageflow.lineage import record as lineage
from lineageflow.model import ml
from lineageflow.runs.artifacts import load_table
from lineageflow.runs.stages import section_sha256
from lineageflow.runs.tracking import RunRef

pytestmark = pytest.mark.usefixtures("prefect_api")


def stage_runs(c: MlflowClient, exp: str, parent: str) -> dict:
    runs = c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    return {r.data.tags["lineageflow.stage"]: r for r in runs}


def tag_list(run, key: str) -> list[dict]:
    return json.loads(run.data.tags[f"lineage.stage.{key}"])


def test_each_stage_records_lineage_that_matches_the_real_objects(
    make_workspace, tracking
):
    ws = make_workspace().workspace
    out = training_pipeline(workspace=str(ws))
    c = MlflowClient(tracking)
    record = json.loads(
        Path(c.download_artifacts(out["run_id"], "lineage.json")).read_text()
    )
    assert c.get_run(out["run_id"]).data.tags["lineage.digest"] == lineage.digest(
        record
    )
    runs = stage_runs(c, out["experiment_id"], out["run_id"])
    assert set(runs) == {"pull_data", "prepare", "train", "evaluate", "register_model"}
    names = [s["name"] for s in record["stages"]]
    assert names == ["pull_data", "prepare", "train", "evaluate"]
    cfg = load_params(ws / "params.yaml")
    code = record["pipeline"]["commit"]
    for s in record["stages"]:
        run = runs[s["name"]]
        assert s["run_id"] == run.info.run_id and s["code"] == code
        assert s["inputs"] == tag_list(run, "inputs")
        assert s["outputs"] == tag_list(run, "outputs")
        # each input and output also as its own short tag, readable in MLflow's list
        for e in s["inputs"]:
            assert run.data.tags[f"lineage.in.{e['name']}"] == e["digest"]
        for e in s["outputs"]:
            assert run.data.tags[f"lineage.out.{e['name']}"] == e["digest"]
            if "uri" in e:
                assert run.data.tags[f"lineage.out.{e['name']}.uri"] == e["uri"]
    by = {s["name"]: s for s in record["stages"]}
    assert by["train"]["params_sha256"] == section_sha256(cfg.train)
    # the evaluate section as it ran: metric and threshold chosen for the task
    ran = cfg.evaluate.for_task("binary")
    assert ran.metric == "roc_auc" and ran.threshold == 0.6
    assert by["evaluate"]["params_sha256"] == section_sha256(ran)

    # raw data: the DVC md5 that the .dvc pointer holds
    dvc_md5 = yaml.safe_load((ws / "data/customers.dvc").read_text())["outs"][0]["md5"]
    assert by["pull_data"]["outputs"] == [
        {"name": "data/customers", "digest": f"md5:{dvc_md5}"}
    ]
    assert by["pull_data"]["inputs"] == [
        {"name": "data/customers.dvc", "digest": f"md5:{dvc_md5}"}
    ]
    assert by["prepare"]["inputs"] == by["pull_data"]["outputs"]

    # the split tables: loaded back by digest from MLflow, and rebuilt from the data
    outs = {o["name"]: o for o in by["prepare"]["outputs"]}
    frames = [pd.read_csv(p) for p in sorted((ws / "data/customers").glob("*.csv"))]
    split = ml.split_frame(pd.concat(frames, ignore_index=True), "churned", cfg.prepare)
    for part in ("train", "holdout"):
        o = outs[f"{part}_table"]
        table = load_table(o["uri"], o["digest"], "test", o["name"], tracking)
        assert len(table) == len(split.parts(part)[0])
        assert ml.table_digest(*split.parts(part)) == o["digest"]
    assert by["train"]["inputs"] == [
        {"name": "train_table", "digest": outs["train_table"]["digest"]}
    ]

    # the model: its digest is the sha256 of the model.pkl MLflow stored
    (model_out,) = by["train"]["outputs"]
    logged = c.get_logged_model(model_out["uri"].removeprefix("models:/"))
    pkl = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{logged.artifact_location}/model.pkl", tracking_uri=tracking
    )
    assert hashlib.sha256(Path(pkl).read_bytes()).hexdigest() == model_out["digest"]
    assert {"name": "model", "digest": model_out["digest"]} in by["evaluate"]["inputs"]

    # the metrics evaluate wrote, and the record register_model was handed
    metrics = {
        k: v
        for k, v in c.get_run(out["run_id"]).data.metrics.items()
        if k.startswith("test_")
    }
    blob = json.dumps(metrics, sort_keys=True).encode()
    assert by["evaluate"]["outputs"][0]["digest"] == hashlib.sha256(blob).hexdigest()
    reg = runs["register_model"]
    assert {"name": "lineage.json", "digest": lineage.digest(record)} in tag_list(
        reg, "inputs"
    )
    assert tag_list(reg, "outputs") == [
        {
            "name": "model_version",
            "digest": f"{make_workspace.model_name}/{out['version']}",
        }
    ]

    # MLflow's own lineage fields: datasets on the runs that use them, linked to
    # the logged model; the version's description; the picture on the parent
    ctx = {
        stage: {
            (
                d.dataset.name,
                next(t.value for t in d.tags if t.key == "mlflow.data.context"),
            )
            for d in runs[stage].inputs.dataset_inputs
        }
        for stage in ("train", "evaluate")
    }
    assert ("train", "training") in ctx["train"]
    assert ("holdout", "holdout") in ctx["evaluate"]
    parent_inputs = c.get_run(out["run_id"]).inputs.dataset_inputs
    assert [d.dataset.digest for d in parent_inputs] == [dvc_md5[:36]]
    assert {m.key for m in logged.metrics} >= {"test_roc_auc", "test_log_loss"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mv = c.get_model_version(make_workspace.model_name, out["version"])
    assert f"@ `{record['workspace']['commit'][:12]}`" in mv.description
    assert "| ✅ | `code_committed` |" in mv.description
    arts = {a.path for a in c.list_artifacts(out["run_id"])}
    assert {"lineage.json", "lineage.png"} <= arts


def test_a_stage_refuses_an_input_whose_digest_differs(tracking, tmp_path):
    from lineageflow.config import PrepareConfig, TrainConfig
    from lineageflow.data.synthetic import make_customers
    from tasks.model import train

    split = ml.split_frame(make_customers(800, seed=1), "churned", PrepareConfig())
    split = split.with_digests()
    tampered = split.X_train.copy()
    tampered.iloc[0, 0] += 1
    from dataclasses import replace

    bad = replace(split, X_train=tampered)
    c = MlflowClient(tracking)
    exp = c.create_experiment(f"refuse-{tmp_path.name}")
    parent = c.create_run(exp).info.run_id
    ref = RunRef(tracking, exp, parent)
    with pytest.raises(
        LineageError,
        match=r"^train refused input train_table: its digest [0-9a-f]{12} is not the recorded [0-9a-f]{12} \(changed after it was produced\): rerun the stage that made it$",
    ):
        train.fn(bad, TrainConfig(xgboost={"n_estimators": 5}), ref)
    (child,) = c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert child.info.status == "FAILED"  # ended, not left RUNNING
    c.set_terminated(parent)


def test_graph_nodes_follow_commit_data_stages_model():
    record = {
        "workspace": {"commit": "a" * 40, "branch": "main"},
        "pipeline": {"commit": "b" * 40},
        "data": [{"path": "data/x", "md5": "c" * 32}],
        "mlflow": {"parent_run_id": "r" * 32},
        "stages": [
            {"name": n, "run_id": f"{i}" * 32, "outputs": []}
            for i, n in enumerate(["pull_data", "prepare", "train", "evaluate"])
        ],
    }
    found = [
        checks.Check("clean_tree", True, ""),
        checks.Check("champion", False, "x"),
    ]
    nodes, edges = graph.nodes_and_edges(record, "m v3", found)
    assert nodes["model"]["label"] == "m v3\nNone: champion"
    kinds = [(nodes[a]["col"], nodes[b]["col"]) for a, b in edges]
    for pair in [
        ("source", "data"),
        ("data", "pull_data"),
        ("pull_data", "prepare"),
        ("prepare", "train"),
        ("train", "evaluate"),
        ("evaluate", "model"),
    ]:
        assert pair in kinds, pair


def test_concurrent_runs_logging_one_dataset_all_succeed(tmp_path):
    """MLflow's SQL store looks a dataset up, then inserts it: runs logging the
    same table at once race on its unique constraint (seen with 8 concurrent
    retrains). Eight threads at a barrier, twelve times: every log succeeds."""
    import threading

    from lineageflow.runs.artifacts import log_dataset

    uri = f"sqlite:///{tmp_path / 'race.db'}"
    c = MlflowClient(uri)
    df = pd.DataFrame({"a": range(100), "b": ["x"] * 100})
    errors: list[str] = []
    for trial in range(12):
        exp = c.create_experiment(f"race-{trial}")
        runs = [c.create_run(exp).info.run_id for _ in range(8)]
        barrier = threading.Barrier(len(runs))

        def log(run_id: str, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                log_dataset(
                    df, "holdout", "d" * 36, "holdout", run_id=run_id, tracking_uri=uri
                )
            except Exception as exc:  # collected: the assertion names them
                errors.append(str(exc).splitlines()[0])

        threads = [threading.Thread(target=log, args=(r,)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in runs:
            assert [d.dataset.name for d in c.get_run(r).inputs.dataset_inputs] == [
                "holdout"
            ]
    assert errors == []


def test_a_process_stopped_mid_run_ends_killed_saying_so(tracking, tmp_path):
    """Prefect's engine ends the flow's process with SystemExit when its worker
    dies: the parent and the running stage end KILLED, tagged with what happened."""
    from lineageflow.runs.tracking import child_run, error_text, parent_run

    worker_died = (
        "the process running the flow was stopped (SystemExit: 1): the worker "
        "died or was killed"
    )
    assert error_text(SystemExit(1)) == worker_died
    assert error_text(KeyboardInterrupt()) == (
        "the process running the flow was interrupted (KeyboardInterrupt): "
        "Ctrl-C, or SIGINT from what started it"
    )
    assert error_text(ValueError("bad")) == "ValueError: bad"
    c = MlflowClient(tracking)
    exp = c.create_experiment(f"stopped-{tmp_path.name}")
    with (
        pytest.raises(SystemExit),
        parent_run(tracking, exp, "p", {}) as ref,
        child_run(ref, "train"),
    ):
        raise SystemExit(1)
    parent = c.get_run(ref.run_id)
    (child,) = c.search_runs([exp], f"tags.mlflow.parentRunId = '{ref.run_id}'")
    for run in (parent, child):
        assert run.info.status == "KILLED"
        assert run.data.tags["lineageflow.error"] == worker_died
