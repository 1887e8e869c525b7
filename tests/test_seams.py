"""The seams a new capability plugs into: stages declared once, the model-source
registry, the engine registry. Unit tests: no server, no flow."""

from __future__ import annotations

import typing

import pandas as pd
import pytest

from lineageflow import pipeline
from lineageflow.config import PrepareConfig, TrainConfig
from lineageflow.data.synthetic import TARGET, make_customers
from lineageflow.engines import ENGINES, engine
from lineageflow.errors import ConfigError, LineageError, UserCodeError
from lineageflow.lineage import checks
from lineageflow.lineage import record as lineage
from lineageflow.model import ml, sources
from lineageflow.runs.stages import stage_run
from lineageflow.runs.tracking import RunRef


def test_the_record_and_the_checks_read_the_one_declaration():
    assert tuple(s.name for s in pipeline.PIPELINE if s.recorded) == lineage.STAGES
    assert (
        tuple(s.name for s in pipeline.PIPELINE if s.required) == checks.REQUIRED_STAGES
    )
    # register_model is still running while the checks run: never required
    assert "register_model" not in checks.REQUIRED_STAGES
    assert pipeline.declared("train").reusable
    assert not pipeline.declared("evaluate").reusable


def test_stage_run_refuses_a_stage_that_is_not_declared(tmp_path):
    # refused before any store is touched (a store here would be left empty)
    ref = RunRef(f"sqlite:///{tmp_path}/nowhere.db", "0", "0" * 32)
    with (
        pytest.raises(LineageError, match=r"stage 'featurize' is not declared: add"),
        stage_run(ref, "featurize", inputs=[]),
    ):
        pass


def test_the_flow_runs_the_declared_stages_in_their_order():
    """run_stages runs lineageflow.pipeline.steps(): each declared stage in
    PIPELINE's order, the lineage record before the first stage that needs it;
    a reproduction runs only the stages declared reproduced."""
    from flows.training import STEPS, step_of

    names = [n for n, _ in pipeline.steps()]
    first = next(s.name for s in pipeline.PIPELINE if s.needs_record)
    assert names.index(pipeline.RECORD_STEP) == names.index(first) - 1
    assert [n for n in names if n != pipeline.RECORD_STEP] == [
        s.name for s in pipeline.PIPELINE
    ]
    again = [n for n, _ in pipeline.steps(reproduction=True)]
    assert again == [
        n
        for n in names
        if n not in {s.name for s in pipeline.PIPELINE if not s.reproduced}
    ]
    assert "register_model" not in again and pipeline.RECORD_STEP in again
    assert set(STEPS) == set(names)  # every step has what it runs
    with pytest.raises(
        LineageError, match="'featurize' is declared .* add it to STEPS"
    ):
        step_of("featurize")
    # the record step has no child run of its own: stage_run refuses it
    with pytest.raises(LineageError, match="stage 'lineage' is not declared"):
        pipeline.declared(pipeline.RECORD_STEP)
    assert dict(pipeline.steps())["register_model"] == "register"  # timings' key


def test_a_recorded_stage_after_the_record_is_refused(monkeypatch):
    late = pipeline.Stage("report")
    monkeypatch.setattr(pipeline, "PIPELINE", (*pipeline.PIPELINE, late))
    with pytest.raises(LineageError, match="'report' is declared recorded but comes"):
        pipeline.steps()


def test_the_picture_draws_a_stage_this_code_does_not_declare(tmp_path):
    """A record written by newer code (a stage declared there, not here) still
    draws: its stage gets a column of its own."""
    from lineageflow.lineage import graph

    record = {
        "workspace": {"commit": "a" * 40, "branch": "main"},
        "pipeline": {"commit": "b" * 40},
        "mlflow": {"parent_run_id": "d" * 32},
        "data": [{"path": "data/x", "md5": "c" * 32, "dvc_file": "data/x.dvc"}],
        "stages": [
            {"name": n, "run_id": f"{i:032x}", "outputs": []}
            for i, n in enumerate(["pull_data", "prepare", "featurize", "train"])
        ],
    }
    nodes, edges = graph.nodes_and_edges(record, "m", [])
    assert "featurize" in graph._columns(nodes)
    out = graph._draw_columns(record, nodes, edges, tmp_path / "g.png")
    assert out.is_file() and out.stat().st_size > 0


def test_every_train_model_has_a_source():
    choices = typing.get_args(TrainConfig.model_fields["model"].annotation)
    assert set(choices) == set(sources.SOURCES)


def test_model_sources_build_and_fit_through_the_engine():
    frame = make_customers(1500, seed=4)
    eng = engine("local")
    split = eng.digested(eng.split([frame], TARGET, PrepareConfig(), "auto"))
    cfg = TrainConfig(model="logistic_regression")
    src = sources.open_source(cfg, None, split)
    assert src.autolog_library() == "sklearn"
    assert src.code() == {"model": "logistic_regression"}
    model = src.fit(split, eng)
    assert eng.score(model, split)["roc_auc"] > 0.6
    assert len(eng.predict(model, split)) == len(split.X_test)


def test_a_custom_source_without_workspace_is_one_line():
    split = ml.split_frame(make_customers(300, seed=1), TARGET, PrepareConfig())
    cfg = TrainConfig(model="custom", factory="models.py:build")
    with pytest.raises(UserCodeError, match="need the workspace path"):
        sources.open_source(cfg, None, split)


def test_the_local_engine_splits_and_digests_as_the_ml_functions_do():
    frame = make_customers(2000, seed=2)
    a, b = frame.iloc[:1200], frame.iloc[1200:]
    eng = engine()
    got = eng.digested(eng.split([a, b], TARGET, PrepareConfig(), "auto"))
    want = ml.split_frame(
        pd.concat([a, b], ignore_index=True), TARGET, PrepareConfig()
    ).with_digests()
    assert got.engine == "local"
    assert got.digests == want.digests
    assert list(got.X_test.index) == list(want.X_test.index)
    assert eng.verify(got, "evaluate", "holdout") == want.digests["holdout"]


def test_an_unknown_engine_is_refused_in_one_line():
    assert "local" in ENGINES
    with pytest.raises(ConfigError, match=r"engine 'spark' is not known: use one of"):
        engine("spark")
