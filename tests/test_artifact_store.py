"""Artifact-store reads: a run's artifact downloaded from the store given, where
it lives, and its bytes refused unless they have the recorded digest."""

import hashlib

import mlflow
import pytest

from lineageflow.errors import LineageError
from lineageflow.runs import artifact_store as store


def test_a_stored_file_is_read_from_the_store_given_and_checked(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "blob.bin").write_bytes(b"lineage")
    mlflow.set_tracking_uri(uri)
    art = (tmp_path / "artifacts").as_uri()
    with mlflow.start_run(experiment_id=mlflow.create_experiment("e", art)) as run:
        mlflow.log_artifact(str(tmp_path / "blob.bin"), artifact_path="x")
    # another process-wide store: the one given is still the one read
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")
    stored = f"runs:/{run.info.run_id}/x/blob.bin"
    local = store.download(stored, uri, tmp_path / "dst")
    assert local.read_bytes() == b"lineage" and local.parent == tmp_path / "dst"
    where = store.artifact_location(stored, uri)
    assert where == f"{art}/{run.info.run_id}/artifacts/x/blob.bin"
    assert store.read_bytes(where, uri) == b"lineage"
    want = hashlib.sha256(b"lineage").hexdigest()
    assert store.sha256(stored, uri) == want
    assert store.verified_bytes(stored, want, "train", "blob", uri) == b"lineage"
    with pytest.raises(LineageError, match=r"^train refused input blob: its digest"):
        store.verified_bytes(stored, "0" * 64, "train", "blob", uri)
    assert store.model_location("runs:/r/model", uri) == "runs:/r/model"


def test_a_logged_model_is_read_from_the_store_given(tmp_path):
    """``models:/m-<id>``: MLflow's own resolution asks the process-wide store
    whatever tracking_uri it is given; lineageflow reads the one given."""
    from sklearn.dummy import DummyClassifier

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    art = (tmp_path / "artifacts").as_uri()
    with mlflow.start_run(experiment_id=mlflow.create_experiment("m", art)):
        fitted = DummyClassifier().fit([[0], [1]], [0, 1])
        info = mlflow.sklearn.log_model(fitted, name="model")
    assert info.model_uri.startswith("models:/m-")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")  # knows no model
    local = store.download(info.model_uri, uri, tmp_path / "whole")
    assert (local / "MLmodel").is_file()
    one = store.download(f"{info.model_uri}/MLmodel", uri, tmp_path / "one")
    assert one.name == "MLmodel" and "sklearn" in one.read_text()
