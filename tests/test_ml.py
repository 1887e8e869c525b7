"""Pure ML functions: validation messages, the hash split, the quality gate."""

import numpy as np
import pandas as pd
import pytest

from lineageflow.config import EvaluateConfig, PrepareConfig, TrainConfig
from lineageflow.data.synthetic import TARGET, make_customers
from lineageflow.errors import DataError
from lineageflow.model import estimators, ml
from lineageflow.registry import gate


@pytest.fixture(scope="module")
def frame():
    return make_customers(4000, seed=1)


def test_synthetic_data_is_deterministic_and_has_signal(frame):
    pd.testing.assert_frame_equal(frame, make_customers(4000, seed=1))
    assert 0.1 < frame[TARGET].mean() < 0.6
    split = ml.split_frame(frame, TARGET, PrepareConfig())
    model = ml.fit(
        estimators.build_model(TrainConfig(xgboost={"n_estimators": 30})), split
    )
    assert ml.score(model, split.X_test, split.y_test)["roc_auc"] > 0.7


def test_hash_split_keeps_each_row_on_its_side_as_data_grows(frame):
    cfg = PrepareConfig(test_size=0.25, seed=3)
    grown = pd.concat(
        [frame, make_customers(2000, seed=2, drift=0.5)], ignore_index=True
    )
    small, big = ml.split_frame(frame, TARGET, cfg), ml.split_frame(grown, TARGET, cfg)
    # every v1 training row is still a training row in v2: no champion leakage
    assert set(small.X_train.index) <= set(big.X_train.index)
    assert set(small.X_test.index) <= set(big.X_test.index)
    assert abs(len(big.X_test) / len(grown) - 0.25) < 0.03


def test_split_depends_on_seed(frame):
    a = ml.split_frame(frame, TARGET, PrepareConfig(seed=1))
    b = ml.split_frame(frame, TARGET, PrepareConfig(seed=2))
    assert set(a.X_test.index) != set(b.X_test.index)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda df: df.iloc[0:0], r"has no rows"),
        (lambda df: df.drop(columns=[TARGET]), r"target column 'churned' is not in"),
        (
            lambda df: df.assign(tenure_months=np.nan),
            r"\['tenure_months'\] are entirely empty",
        ),
        (
            lambda df: df.assign(seen=pd.Timestamp("2026-01-01")),
            r"unsupported types \['seen \(datetime64",
        ),
        (
            lambda df: df.assign(**{TARGET: df[TARGET].where(df.index > 5)}),
            r"6 rows with a missing",
        ),
        (lambda df: df[[TARGET]], r"no feature columns"),
    ],
)
def test_validate_frame_refuses_bad_data(frame, mutate, match):
    with pytest.raises(DataError, match=match):
        ml.validate_frame(mutate(frame.copy()), TARGET)


def test_labels_are_encoded_for_xgboost():
    y, classes = ml.encode_labels(pd.Series(["yes", "no", "yes"]))
    assert classes == ["no", "yes"] and y.tolist() == [1, 0, 1]


def test_quality_gate_threshold_and_champion():
    cfg = EvaluateConfig(metric="roc_auc", threshold=0.7, champion_tolerance=0.01)
    assert all(c.passed for c in gate.quality_gate({"roc_auc": 0.8}, cfg))
    low = gate.quality_gate({"roc_auc": 0.6}, cfg)
    assert not low[0].passed and "misses the threshold" in low[0].reason
    worse = gate.quality_gate({"roc_auc": 0.80}, cfg, {"roc_auc": 0.82}, "3")
    assert not worse[1].passed and "worse than Staging v3" in worse[1].reason
    within = gate.quality_gate({"roc_auc": 0.815}, cfg, {"roc_auc": 0.82}, "3")
    assert within[1].passed


def test_quality_gate_lower_is_better_for_log_loss():
    cfg = EvaluateConfig(metric="log_loss", threshold=0.5)
    assert gate.quality_gate({"log_loss": 0.4}, cfg)[0].passed
    assert not gate.quality_gate({"log_loss": 0.6}, cfg)[0].passed
    assert not gate.quality_gate({"log_loss": 0.4}, cfg, {"log_loss": 0.3}, "1")[
        1
    ].passed


@pytest.mark.parametrize("model", ["random_forest", "logistic_regression"])
def test_sklearn_models_train(frame, model):
    split = ml.split_frame(frame, TARGET, PrepareConfig())
    fitted = ml.fit(estimators.build_model(TrainConfig(model=model)), split)
    metrics = ml.score(fitted, split.X_test, split.y_test)
    classification = set(ml.HIGHER_IS_BETTER) - set(ml.REGRESSION_METRICS)
    assert set(metrics) == classification and metrics["roc_auc"] > 0.7
    assert np.isfinite(metrics["log_loss"])


def test_a_tie_does_not_beat_the_champion():
    """A retrain scoring exactly the champion's metric (0.7766 vs 0.7766) used to
    pass and archive the champion for an equal model."""
    cfg = EvaluateConfig(metric="roc_auc", threshold=0.7)
    tie = gate.quality_gate({"roc_auc": 0.7766}, cfg, {"roc_auc": 0.7766}, "2")
    assert not tie[1].passed and "ties Staging v2" in tie[1].reason
    assert "champion_tolerance" in tie[1].reason
    assert gate.quality_gate({"roc_auc": 0.7767}, cfg, {"roc_auc": 0.7766}, "2")[
        1
    ].passed
    loss = EvaluateConfig(metric="log_loss", threshold=0.9)
    assert not gate.quality_gate({"log_loss": 0.4}, loss, {"log_loss": 0.4}, "1")[
        1
    ].passed
    # a tolerance the user set accepts a tie, as it accepts a little worse
    tol = EvaluateConfig(metric="roc_auc", threshold=0.7, champion_tolerance=0.001)
    assert gate.quality_gate({"roc_auc": 0.7766}, tol, {"roc_auc": 0.7766}, "2")[
        1
    ].passed


@pytest.mark.parametrize(
    "task, metric, threshold",
    [
        ("binary", "roc_auc", 0.70),
        ("multiclass", "roc_auc", 0.70),
        ("regression", "r2", 0.0),
    ],
)
def test_an_unset_metric_follows_the_inferred_task(task, metric, threshold):
    cfg = EvaluateConfig()
    chosen = cfg.for_task(task)
    assert (chosen.metric, chosen.threshold) == (metric, threshold)
    ml.check_metric(task, cfg.metric)  # unset: nothing to refuse
    assert f"gating a {task} model on {metric}" in cfg.chosen(task)
    assert EvaluateConfig(metric=metric, threshold=threshold).chosen(task) is None


def test_a_set_metric_keeps_its_own_default_threshold_and_is_still_checked():
    assert EvaluateConfig(metric="rmse").for_task("regression").threshold is None
    verdict = gate.quality_gate(
        {"rmse": 3.0, "mae": 2.0, "r2": 0.5}, EvaluateConfig(metric="rmse")
    )
    assert verdict[0].passed and "no threshold set for rmse" in verdict[0].reason
    with pytest.raises(
        DataError, match="evaluate.metric roc_auc does not fit a regression"
    ):
        ml.check_metric("regression", "roc_auc")


def test_row_hashes_in_blocks_are_pandas_row_hashes():
    from lineageflow.data.synthetic import make_classification_frame

    df = make_classification_frame(ml.PARALLEL_ROWS * 2 + 7, 5, seed=4)
    df["city"] = pd.Categorical(np.where(df.index % 3 == 0, "x", "y"))
    df.index = df.index * 3  # a split's index: not a range
    for index in (True, False):
        whole = pd.util.hash_pandas_object(df, index=index).to_numpy()
        np.testing.assert_array_equal(ml.row_hashes(df, index), whole)
    y = df.iloc[:, 0]
    np.testing.assert_array_equal(
        ml.row_hashes(y, True), pd.util.hash_pandas_object(y, index=True).to_numpy()
    )
