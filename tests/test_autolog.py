"""Autolog as the stages turn it on: the estimator's params and metrics reach the
run, and the training frame is not copied to do it."""

import tracemalloc

import mlflow
import numpy as np
import pandas as pd
import pytest
from xgboost import XGBClassifier

from lineageflow.runs.autolog import autolog, fit_arguments


@pytest.fixture
def wide():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        rng.normal(size=(200_000, 20)), columns=[f"f{i}" for i in range(20)]
    )
    return X, pd.Series((X["f0"] > 0).astype("int64"), name="y")


def test_autologged_xgboost_fit_does_not_copy_the_training_frame(tmp_path, wide):
    X, y = wide
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        autolog("xgboost")
        try:  # a first fit imports what autolog needs (matplotlib for its plot)
            XGBClassifier(n_estimators=2, max_depth=2).fit(X.head(500), y.head(500))
            tracemalloc.start()
            XGBClassifier(n_estimators=2, max_depth=2, n_jobs=1).fit(X, y)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            autolog("xgboost", disable=True)
    # numpy reports its buffers to tracemalloc; xgboost's own matrix does not
    assert peak < X.memory_usage().sum() / 4, (
        f"the autologged fit allocated {peak / 2**20:.0f} MiB of Python-side "
        f"memory for a {X.memory_usage().sum() / 2**20:.0f} MiB frame: a copy"
    )
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.params["max_depth"] == "2"  # autolog still wrote what it writes
    assert "feature_importance_weight.json" in str(
        [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
    )


def test_fit_arguments_reads_what_mlflow_reads_without_copying(wide):
    X, y = wide
    w = np.ones(len(y))
    model = XGBClassifier()
    for args, kwargs in (
        ((X, y), {"sample_weight": w}),
        ((X,), {"y": y, "sample_weight": w}),
        ((), {"X": X, "y": y, "sample_weight": w}),
    ):
        got = fit_arguments(model.fit, args, kwargs)
        assert got[0] is X and got[1] is y and got[2] is w
