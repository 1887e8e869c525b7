"""params.yaml parsing: every bad input is one line naming the key and the fix."""

from pathlib import Path

import pytest

from lineageflow.config import PipelineConfig, load_params, parse_params
from lineageflow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_are_the_defaults():
    assert load_params(ROOT / "params.yaml") == PipelineConfig()


def test_sha256_changes_with_any_param():
    a = parse_params({})
    b = parse_params({"train": {"xgboost": {"max_depth": 5}}})
    assert a.sha256() != b.sha256()
    assert a.sha256() == parse_params({}).sha256()


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("data: [unclosed", r"malformed YAML at line 1"),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("trian: {}\n", r"unknown key 'trian'"),
        ("train: {xgboost: {n_estimators: many}}\n", r"'train.xgboost.n_estimators'"),
        ("train: {xgboost: {n_estimators: -5}}\n", r"greater than or equal to 1"),
        ("prepare: {test_size: 1.0}\n", r"'prepare.test_size' .*less than 1"),
        ("train: {model: catboost}\n", r"'train.model'"),
        ("register: {model_name: 'bad name/../x'}\n", r"registered model name"),
        ("data: {datasets: ['../../etc/passwd']}\n", r"must be relative and inside"),
        ("data: {datasets: ['/etc/passwd']}\n", r"must be relative and inside"),
    ],
)
def test_bad_params_give_one_clear_line(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_params(write(tmp_path, text))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "train: {modle: xgboost}\nevaluate: {treshold: 0.7}\n",
            "params.yaml: unknown keys 'train.modle', 'evaluate.treshold': remove "
            "them or fix their spelling",
        ),
        (
            "evaluate: {treshold: 0.7, metirc: roc_auc}\n",
            "params.yaml: unknown keys 'evaluate.treshold', 'evaluate.metirc': "
            "remove them or fix their spelling",
        ),
        (  # unknown keys come before any other error: one edit fixes them all
            "prepare: {test_size: 2}\ntrain: {xgboost: {n_estimator: 5}}\n",
            "params.yaml: unknown key 'train.xgboost.n_estimator': remove it or fix "
            "its spelling",
        ),
    ],
)
def test_every_misspelled_key_is_named_in_one_line(tmp_path, text, line):
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, text))
    assert str(err.value) == line


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match=r"params.yaml not found"):
        load_params(tmp_path / "params.yaml")


def test_the_audit_section_is_no_training_param():
    """audit.* is read by the weekly audit only: it never enters a run's params
    or their sha256, so changing it retrains nothing."""
    tuned = parse_params(
        {"audit": {"keep": 0, "reproduce_every": 1, "tolerance": 0.01}}
    )
    assert tuned.audit.keep == 0 and tuned.audit.reproduce_every == 1
    assert tuned.sha256() == PipelineConfig().sha256()
    assert "audit" not in tuned.as_dict()
    with pytest.raises(ConfigError) as exc:
        parse_params({"audit": {"reproduce_every": 0}})
    assert str(exc.value) == (
        "params.yaml: 'audit.reproduce_every' Input should be greater than or "
        "equal to 1 (got 0)"
    )
    with pytest.raises(ConfigError, match=r"unknown key 'audit.kep'"):
        parse_params({"audit": {"kep": 3}})
