"""A version an admin puts into Staging by hand (a stage transition or the
``staging`` alias, through MLflow's own client), not by a signed promotion: one
line names it and the last signed promotion, from `lineageflow verify`, the
nightly check and the next training run; the champion stays the signed one.
Real model signing, a real sqlite MLflow store, Prefect's test server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import warnings
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from lineageflow.attest import keys
from lineageflow.attest.staging import SignedPromotion, Staging
from lineageflow.tags import TAG_HAND_MOVED
from tests.conftest import WorkspaceFactory
from tests.test_attest import LF


@pytest.fixture(scope="module")
def moved(tmp_path_factory, prefect_api):
    """v1 promoted and signed by a training run; v2 an admin's own model (fitted
    on other columns: it cannot even score the pipeline's holdout), registered
    by hand and never promoted. Each test moves v2 into Staging itself."""
    from sklearn.linear_model import LogisticRegression

    from flows.training import training_pipeline

    base = tmp_path_factory.mktemp("moved")
    keydir = base / "keys"
    priv, pub = keys.keygen(keydir)
    factory = WorkspaceFactory(base)
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("MLFLOW_")]:
            mp.delenv(k)
        mp.setenv(keys.KEY_ENV, str(priv))
        # a later version always takes Staging: the champion decides nothing else
        ws = factory(rows=2000, **{"evaluate.champion_tolerance": 1.0}).workspace
        first = training_pipeline(workspace=str(ws))
    assert first["version"] == "1" and first["stage"] == "Staging"
    uri = f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}"
    name = factory.model_name
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        # inside the workspace, as lineageflow keeps its own (a copy is refused)
        art = (ws / ".lineageflow" / "admin").as_uri()
        exp = mlflow.create_experiment("admin's notebook", artifact_location=art)
        with mlflow.start_run(experiment_id=exp):
            import pandas as pd

            X = pd.DataFrame({"other": [0.0, 1.0, 2.0, 3.0]})
            fitted = LogisticRegression().fit(X, [0, 1, 0, 1])
            info = mlflow.sklearn.log_model(fitted, name="model")
        assert mlflow.register_model(info.model_uri, name).version == 2
    finally:
        mlflow.set_tracking_uri(before)
    return {"ws": ws, "uri": uri, "name": name, "pub": pub, "key": priv}


def registry(s) -> MlflowClient:
    return MlflowClient(s["uri"], registry_uri=s["uri"])


def hand_move(s, version: str, stage: bool, alias: bool) -> None:
    """What an admin does in MLflow's UI or client: no check, no signature."""
    c = registry(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stages are deprecated
        for mv in c.search_model_versions(f"name = '{s['name']}'"):
            if mv.current_stage == "Staging" and stage:
                c.transition_model_version_stage(s["name"], mv.version, "Archived")
        if stage:
            c.transition_model_version_stage(s["name"], version, "Staging")
    if alias:
        c.set_registered_model_alias(s["name"], "staging", version)


def signed_time(s, version: str) -> str:
    """The time in the version's signed promotion statement, read from the
    stored file itself (not from the tags lineageflow reads it from)."""
    c = registry(s)
    location = c.get_model_version(s["name"], version).tags["lineage.attestation"]
    run_id, _, path = location.removeprefix("runs:/").partition("/")
    root = c.get_run(run_id).info.artifact_uri.removeprefix("file://")
    env = json.loads((Path(root) / path / "promotion.intoto.jsonl").read_text())
    return json.loads(base64.b64decode(env["payload"]))["predicate"]["time"]


def expected(s, where: str, signed: str = "1", moved: str = "2") -> str:
    name = s["name"]
    return (
        f"model '{name}' version {moved} is in Staging ({where}) without a signed "
        f"promotion: the last signed promotion is version {signed} (signed "
        f"{signed_time(s, signed)}); move it back with `lineageflow promote {name} "
        f"{signed}`, or re-promote through the checks with `lineageflow promote "
        f"{name} {moved}`"
    )


def verify_cli(s, uri: str):
    return subprocess.run(
        [LF, "verify", uri, "--key", str(s["pub"]), "--workspace", str(s["ws"])],
        capture_output=True,
        text=True,
        timeout=180,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )


def test_the_line_names_each_version_and_says_when_nothing_was_signed():
    signed = SignedPromotion("2", "2026-05-01T03:00:12.123456Z")
    assert Staging("m", signed, "2", ("2",)).line() is None
    assert Staging("m", signed, None, ()).line() is None  # nothing moved in
    assert Staging("m", None, "4", ("3", "4")).line() == (
        "model 'm' versions 3 (stage Staging) and 4 (stage Staging, alias "
        "staging) are in Staging without a signed promotion: 'm' has no signed "
        "promotion at all; promote through the checks with `lineageflow promote m "
        "<version>`, or take it out of Staging"
    )
    assert Staging("m", signed, "1", ("2",)).champion == "2"


def test_verify_names_a_version_moved_into_staging_by_hand(moved):
    s, name = moved, moved["name"]
    hand_move(s, "2", stage=False, alias=True)
    line = expected(s, "alias staging")
    proc = verify_cli(s, f"models:/{name}@staging")
    assert proc.returncode == 1
    assert f"FAILED models:/{name}/2: {line}" in proc.stdout.splitlines()
    # v1 itself still verifies; the hand move is said beside it
    proc = verify_cli(s, f"models:/{name}/1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"warning: {line}" in proc.stderr.splitlines()

    # the stage alone, the alias left where the signed promotion put it
    registry(s).set_registered_model_alias(name, "staging", "1")
    hand_move(s, "2", stage=True, alias=False)
    proc = verify_cli(s, f"models:/{name}@staging")
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"FAILED models:/{name}/1: {expected(s, 'stage Staging')}"
    ]

    # the line's own way back: a signed promotion of v1 again
    from flows.promote import promote_version

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(keys.KEY_ENV, str(s["key"]))
        msg = promote_version(name, "1", str(s["ws"]))
    assert msg.startswith(f"{name} v1 promoted to Staging")
    proc = verify_cli(s, f"models:/{name}@staging")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "v1 None -> Staging, v2 Staging -> Archived" in proc.stdout


def test_the_nightly_check_names_it_and_compares_with_the_signed_version(
    moved, monkeypatch
):
    from flows.training import training_pipeline

    s = moved
    monkeypatch.setenv(keys.KEY_ENV, str(s["key"]))
    hand_move(s, "2", stage=True, alias=True)
    out = training_pipeline(workspace=str(s["ws"]), skip_if_unchanged=True)
    # nothing changed since the signed v1 (v2's run trained nothing of this)
    assert out["skipped"] and out["version"] == "1", out
    assert out["warning"] == expected(s, "stage Staging, alias staging")


def test_a_training_run_compares_with_the_signed_version_says_so_and_promotes(
    moved, monkeypatch
):
    from flows.demo import add_data_version
    from flows.training import training_pipeline

    s, name = moved, moved["name"]
    monkeypatch.setenv(keys.KEY_ENV, str(s["key"]))
    hand_move(s, "2", stage=True, alias=True)
    line = expected(s, "stage Staging, alias staging")
    add_data_version(s["ws"], 1, 800, seed=8, drift=0.3, message="data v2")
    out = training_pipeline(workspace=str(s["ws"]))
    # not crashed on v2 (it cannot score this holdout), not measured against it
    assert out["version"] == "3" and out["stage"] == "Staging", out
    c = registry(s)
    assert c.get_run(out["run_id"]).data.tags[TAG_HAND_MOVED] == line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert c.get_model_version(name, "2").current_stage == "Archived"
    assert str(c.get_registered_model(name).aliases["staging"]) == "3"
    # the signed history goes v3 -> v1: the hand-moved v2 is no link in it
    proc = verify_cli(s, f"models:/{name}@staging")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "v3 None -> Staging, v2 Staging -> Archived" in proc.stdout
    (champ,) = [ln for ln in proc.stdout.splitlines() if "check champion:" in ln]
    assert " vs Staging v1 " in champ, champ  # the signed check names its champion
    history = [ln for ln in proc.stdout.splitlines() if ln.startswith("  promotion ")]
    assert "v1 None -> Staging" in history[1]
    assert not any("v2 None -> Staging" in h for h in history)
