"""Reuse of unchanged stages (lineageflow.runs.reuse): keyed on input digests, the
params section, code and libraries; outputs verified by digest before reuse;
the lineage says what was reused and from which run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import git
import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from flows.training import training_pipeline
from lineageflow.lineage import graph, report
from lineageflow.registry.versions import load_native
from lineageflow.runs import reuse
from lineageflow.tags import TAG_STAGE_REUSED_FROM

pytestmark = pytest.mark.usefixtures("prefect_api")


# ------------------------------------------------------------------ unit


def test_stage_key_changes_with_each_part_and_not_with_input_order():
    a = [{"name": "t", "digest": "1"}, {"name": "h", "digest": "2"}]
    key = reuse.stage_key("train", a, "p", "b")
    assert key == reuse.stage_key("train", list(reversed(a)), "p", "b")
    changed = [
        reuse.stage_key("evaluate", a, "p", "b"),
        reuse.stage_key("train", [{"name": "t", "digest": "9"}], "p", "b"),
        reuse.stage_key("train", a, "q", "b"),
        reuse.stage_key("train", a, "p", "c"),
    ]
    assert key not in changed and len(set(changed)) == 4


def test_no_basis_for_uncommitted_pipeline_code_and_user_code_is_part_of_it():
    clean = {"commit": "abc", "dirty": False, "version": "0.3.0"}
    assert reuse.basis(clean | {"dirty": True}, []) is None
    release = reuse.basis({"commit": None, "dirty": None, "version": "0.3.0"}, [])
    assert release is not None and release != reuse.basis(clean, [])
    code = {"role": "factory", "file": "m.py", "function": "f", "sha256": "1"}
    assert reuse.basis(clean, [code]) != reuse.basis(clean, [code | {"sha256": "2"}])
    assert reuse.basis(clean, [code]) == reuse.basis(clean, [dict(code)])


def test_a_table_digest_covers_column_names_and_dtypes():
    """pandas' row hashes alone equal for a category column and its strings: a
    train stage keyed on them took a model whose signature refused Parquet rows."""
    import pandas as pd

    from lineageflow.model.ml import table_digest

    X = pd.DataFrame({"plan": ["a", "b", "a"], "n": [1, 2, 3]})
    y = pd.Series([0, 1, 0])
    base = table_digest(X, y)
    assert base == table_digest(X.copy(), y.copy())
    assert base != table_digest(X.astype({"plan": "category"}), y)
    assert base != table_digest(X.rename(columns={"n": "m"}), y)
    assert base != table_digest(X, y.astype("float64"))


# ------------------------------------------------------------------ flow


def set_params(ws: Path, message: str, **dotted) -> None:
    path = ws / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in dotted.items():
        node = params
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})  # a section the defaults leave out
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    repo = git.Repo(ws)
    repo.git.add("params.yaml")
    repo.index.commit(message)


def stages_of(out: dict) -> dict[str, dict]:
    c = MlflowClient(out["tracking_uri"])
    runs = c.search_runs(
        [out["experiment_id"]], f"tags.mlflow.parentRunId = '{out['run_id']}'"
    )
    return {r.data.tags["lineageflow.stage"]: r for r in runs}


def record_of(out: dict) -> dict:
    c = MlflowClient(out["tracking_uri"])
    return json.loads(
        Path(c.download_artifacts(out["run_id"], "lineage.json")).read_text()
    )


def run(ws: Path, **kw) -> dict:
    out = training_pipeline(workspace=str(ws), **kw)
    out["tracking_uri"] = f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}"
    return out


def test_only_evaluation_settings_changed_nothing_is_refit(
    make_workspace, caplog, monkeypatch
):
    ws = make_workspace().workspace
    first = run(ws)
    assert first["reused"] == [] and first["stage"] == "Staging"
    before = stages_of(first)

    set_params(ws, "Lower the threshold", **{"evaluate.threshold": 0.55})
    with caplog.at_level(logging.INFO):
        second = run(ws)
    # the very model in Staging: nothing new registered, the champion stays
    assert second["stage"] == "Staging" and second["version"] == "1"
    assert second["identical_to"] == "1"
    assert "identical to v1" in caplog.text
    after = stages_of(second)
    reused = {"pull_data", "prepare", "train"}
    assert {r["stage"] for r in second["reused"]} == reused
    for stage in reused:
        tags = after[stage].data.tags
        assert tags[TAG_STAGE_REUSED_FROM] == before[stage].info.run_id
        # the same outputs, by digest and URI, as the run that made them
        assert (
            tags["lineage.stage.outputs"]
            == (before[stage].data.tags["lineage.stage.outputs"])
        )
        assert after[stage].info.status == "FINISHED"
    assert TAG_STAGE_REUSED_FROM not in after["evaluate"].data.tags  # scored again
    # no fit happened: the refit's own metrics are absent; autologged params kept
    assert "fit_seconds" in before["train"].data.metrics
    assert "fit_seconds" not in after["train"].data.metrics
    assert after["train"].data.params == before["train"].data.params
    # MLflow's Datasets panel of the reused stage is complete too
    panel = {
        (d.dataset.name, {t.key: t.value for t in d.tags}["mlflow.data.context"])
        for d in after["train"].inputs.dataset_inputs
    }
    assert ("train", "training") in panel
    # the data was not read again either
    assert after["pull_data"].data.params["action"] == "present"
    record = record_of(second)
    by = {s["name"]: s for s in record["stages"]}
    assert by["train"]["reused_from"] == before["train"].info.run_id
    assert "reused_from" not in by["evaluate"]
    assert "unchanged since run" in caplog.text
    # and where people read lineage: the Prefect summary and the picture
    text = report.markdown_summary(record, [])
    assert f"outputs reused from run `{before['train'].info.run_id}`" in text
    nodes, _ = graph.nodes_and_edges(record, None, None)
    labels = [n["label"] for n in nodes.values() if n["col"] == "train"]
    assert labels and labels[0].startswith("train\nreused from")
    # no duplicate version of the same logged model; the Staging one still loads
    c = MlflowClient(second["tracking_uri"])
    versions = c.search_model_versions(f"name = '{second['model']}'")
    assert [str(v.version) for v in versions] == ["1"]
    v1 = versions[0]
    assert v1.current_stage == "Staging"
    model_uri = json.loads(before["train"].data.tags["lineage.stage.outputs"])[0]
    assert v1.source == model_uri["uri"]
    assert second["metrics"] == first["metrics"]
    parent = c.get_run(second["run_id"]).data.tags
    assert parent["lineage.identical_to"] == f"{second['model']}/1"
    assert "lineage.checks" not in parent  # no check ran: no tag says one passed
    mlflow.set_tracking_uri(second["tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{second['model']}@staging")
    assert f"models:/{model.metadata.model_id}" == v1.source
    load_native(f"models:/{second['model']}/1")
    # the store given is the one read, even when the process-wide registry is
    # another (MLflow's own models:/ download would ask that one)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{ws}/.lineageflow/x.db")
    load_native(f"models:/{second['model']}/1", second["tracking_uri"])


def test_only_training_params_changed_refits_without_re_preparing(make_workspace):
    ws = make_workspace().workspace
    first = run(ws)
    set_params(ws, "More trees", **{"train.xgboost.n_estimators": 30})
    second = run(ws)
    assert {r["stage"] for r in second["reused"]} == {"pull_data", "prepare"}
    before, after = stages_of(first), stages_of(second)
    assert TAG_STAGE_REUSED_FROM not in after["train"].data.tags
    assert "fit_seconds" in after["train"].data.metrics
    assert after["train"].data.params != before["train"].data.params
    sha = "lineage.stage.params_sha256"
    assert after["train"].data.tags[sha] != before["train"].data.tags[sha]
    assert (
        after["prepare"].data.tags["lineage.stage.outputs"]
        == before["prepare"].data.tags["lineage.stage.outputs"]
    )


def test_a_changed_output_is_not_reused_but_recomputed(make_workspace, caplog):
    """The earlier model file was edited in the artifact store: train refuses it
    by digest and fits again; the run still reaches Staging."""
    ws = make_workspace().workspace
    first = run(ws)
    before = stages_of(first)
    model_uri = json.loads(before["train"].data.tags["lineage.stage.outputs"])[0]
    c = MlflowClient(first["tracking_uri"])
    logged = c.get_logged_model(model_uri["uri"].removeprefix("models:/"))
    pkl = Path(logged.artifact_location.removeprefix("file://")) / "model.pkl"
    pkl.write_bytes(pkl.read_bytes() + b"\0")

    set_params(ws, "Lower the threshold", **{"evaluate.threshold": 0.55})
    with caplog.at_level(logging.WARNING):
        second = run(ws)
    assert {r["stage"] for r in second["reused"]} == {"pull_data", "prepare"}
    assert "train: not reusing run" in caplog.text
    assert "refused input model" in caplog.text
    assert "fit_seconds" in stages_of(second)["train"].data.metrics
    # a refit of the same train table, params, code and libraries is v1's model
    # (its pickle bytes may differ): nothing new is registered
    assert second["identical_to"] == "1" and second["stage"] == "Staging"
    assert [
        v.version for v in c.search_model_versions(f"name = '{second['model']}'")
    ] == [1]


def test_reuse_off_recomputes_every_stage_and_later_runs_reuse_that(
    make_workspace,
):
    ws = make_workspace().workspace
    run(ws)
    again = run(ws, reuse=False)
    assert again["reused"] == []
    recomputed = stages_of(again)
    assert all(TAG_STAGE_REUSED_FROM not in r.data.tags for r in recomputed.values())
    assert "fit_seconds" in recomputed["train"].data.metrics
    third = stages_of(run(ws))  # the latest run with the same key is the source
    assert third["train"].data.tags[TAG_STAGE_REUSED_FROM] == (
        recomputed["train"].info.run_id
    )


def test_a_reproduction_recomputes_every_stage(make_workspace):
    from flows.reproduce import reproduce_run

    ws = make_workspace().workspace
    first = run(ws)
    out = reproduce_run(run_id=first["run_id"], workspace=str(ws))
    assert out["verdict"] == "exact"
    rebuilt = stages_of(dict(first, run_id=out["reproduction_run_id"]))
    assert {"pull_data", "prepare", "train"} <= set(rebuilt)
    assert all(TAG_STAGE_REUSED_FROM not in r.data.tags for r in rebuilt.values())
    assert "fit_seconds" in rebuilt["train"].data.metrics
