"""Signed promotions, verified before load: real model-signing, real DSSE, a real
MLflow store (the workspace's sqlite) and Prefect; each attack done to the
stored artifacts themselves, then undone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mlflow import MlflowClient

from lineageflow.attest import keys
from lineageflow.attest import statements as st
from lineageflow.errors import SigningKeyError
from tests.conftest import WorkspaceFactory

LF = str(Path(sys.executable).parent / "lineageflow")
MODEL_SIGNING = str(Path(sys.executable).parent / "model_signing")


# ---------------------------------------------------------------- keys, DSSE


def write_key(path: Path, key, password: bytes | None = None) -> Path:
    enc = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )
    )
    return path


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path,
):
    priv, pub = keys.keygen(tmp_path / "k")
    assert oct(priv.stat().st_mode & 0o777) == "0o600"
    assert keys.load_private(priv).keyid == keys.keyid(keys.load_public(pub))
    with pytest.raises(SigningKeyError, match="exists: keygen never overwrites"):
        keys.keygen(tmp_path / "k")
    for curve in ("P-384", "P-521"):
        p, _ = keys.keygen(tmp_path / curve, curve)
        assert keys.load_private(p).private.curve.name in keys.CURVES


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda p: write_key(p, ec.generate_private_key(ec.SECP256R1()), b"pw"),
            r"is passphrase-protected: promotion signs unattended; set "
            r"LINEAGEFLOW_SIGNING_KEY",
        ),
        (
            lambda p: write_key(p, rsa.generate_private_key(65537, 2048)),
            r"is not an elliptic-curve key \(RSA\): model signing takes EC P-256",
        ),
        (
            lambda p: write_key(p, ec.generate_private_key(ec.SECP256K1())),
            r"is on curve secp256k1: model signing takes EC P-256, P-384 or P-521",
        ),
        (lambda p: p.write_text("not a key"), r"is not a PEM private key"),
        (lambda p: None, r"does not exist"),
    ],
    ids=["passphrase", "rsa", "secp256k1", "garbage", "missing"],
)
def test_a_key_that_cannot_sign_is_one_line(tmp_path, make, expected):
    path = tmp_path / "key.pem"
    make(path)
    with pytest.raises(SigningKeyError, match=expected) as err:
        keys.load_private(path)
    assert "\n" not in str(err.value)


def test_verifying_with_a_private_key_is_refused(tmp_path):
    priv, _ = keys.keygen(tmp_path)
    with pytest.raises(
        SigningKeyError, match="is a private key: verify with the public"
    ):
        keys.load_public(priv)


def test_the_default_key_is_made_once_outside_any_git_tree(tmp_path, monkeypatch):
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    key, made = keys.signing_key()
    again, made_again = keys.signing_key()
    assert made and not made_again and key.keyid == again.keyid
    assert oct(key.path.stat().st_mode & 0o777) == "0o600"
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "repo" / "state"))
    with pytest.raises(SigningKeyError, match="is inside the git tree"):
        keys.signing_key()


def test_a_dsse_statement_refuses_an_edit_and_another_key():
    key = ec.generate_private_key(ec.SECP384R1())
    doc = st.statement(st.subject("m", "1", "ab" * 32), st.PROMOTION, {"version": "1"})
    env = st.sign(doc, key)
    assert st.open_envelope(env, key.public_key()) == doc
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(ValueError, match=r"is signed by key \w{12}, not by the given"):
        st.open_envelope(env, other)
    edited = dict(env, payload=env["payload"][:-4] + "AAA=")
    with pytest.raises(ValueError, match="signature does not verify: it was edited"):
        st.open_envelope(edited, key.public_key())


# ---------------------------------------------------------------- promoted twice


@pytest.fixture(scope="module")
def signed(tmp_path_factory, prefect_api):
    """One workspace, two promotions (v1, then v2 with v1 archived), signed
    with a key from `lineageflow keygen`; tests undo what they tamper with."""
    from flows.demo import add_data_version
    from flows.training import training_pipeline

    base = tmp_path_factory.mktemp("attest")
    keydir = base / "keys"
    proc = subprocess.run([LF, "keygen", str(keydir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"export LINEAGEFLOW_SIGNING_KEY={keydir / 'signing.key'}" in proc.stdout
    factory = WorkspaceFactory(base)
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("MLFLOW_")]:
            mp.delenv(k)
        mp.setenv(keys.KEY_ENV, str(keydir / "signing.key"))
        # a later version always takes Staging: two promotions, one history
        paths = factory(rows=2500, **{"evaluate.champion_tolerance": 1.0})
        ws = paths.workspace
        first = training_pipeline(workspace=str(ws))
        add_data_version(ws, 1, 1000, seed=8, drift=0.3, message="data v2")
        second = training_pipeline(workspace=str(ws))
    uri = f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}"
    return {
        "ws": ws,
        "uri": uri,
        "name": factory.model_name,
        "pub": keydir / "signing.pub",
        "key": keydir / "signing.key",
        "runs": (first["run_id"], second["run_id"]),
    }


def verify_cli(
    s, uri: str, *extra: str, key: Path | None = None, ws: Path | None = None
):
    return subprocess.run(
        [
            LF,
            "verify",
            uri,
            "--key",
            str(key or s["pub"]),
            "--workspace",
            str(ws or s["ws"]),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )


def model_signing_verifies(model: Path, signature: str, public_key: Path) -> None:
    """model-signing's own command accepts the signature, with nothing of ours."""
    proc = subprocess.run(
        [MODEL_SIGNING, "verify", "key", str(model), "--signature", str(signature)]
        + ["--public_key", str(public_key), "--ignore-paths", "registered_model_meta"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "succeeded" in (proc.stdout + proc.stderr).lower()


def model_dir(s, version: str) -> Path:
    c = MlflowClient(s["uri"], registry_uri=s["uri"])
    where = c.get_model_version_download_uri(s["name"], version)
    return Path(where.removeprefix("file://"))


def test_promotion_signs_and_the_staging_model_verifies_with_its_history(signed):
    s = signed
    c = MlflowClient(s["uri"], registry_uri=s["uri"])
    v2 = c.get_model_version_by_alias(s["name"], "staging")
    assert v2.version == 2 and v2.tags["lineage.attestation"].startswith("runs:/")
    assert v2.tags["lineage.check.signing_key"].startswith("passed")

    proc = verify_cli(s, f"models:/{s['name']}@staging")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.startswith(f"verified models:/{s['name']}/2 ")
    assert "from workspace: gitCommit:" in out and "from data/customers: md5:" in out
    assert "check data_in_remote: passed" in out
    assert "v2 None -> Staging, v1 Staging -> Archived" in out
    assert "v1 None -> Staging" in out  # the history reaches the first promotion

    as_json = json.loads(verify_cli(s, f"models:/{s['name']}/2", "--json").stdout)
    assert as_json["verified"] is True and as_json["failures"] == []
    assert as_json["signature"] == v2.tags["lineage.attestation"] + "/model.sig"
    assert [h["version"] for h in as_json["history"]] == ["2", "1"]
    prov = as_json["provenance"]["buildDefinition"]
    assert (
        prov["externalParameters"]["params_sha256"] == v2.tags["lineage.params_sha256"]
    )

    # v1, Archived, still verifies: its files and its own promotion
    assert verify_cli(s, f"models:/{s['name']}/1").returncode == 0


def test_the_model_signing_command_verifies_the_stored_model(signed, tmp_path):
    s = signed
    c = MlflowClient(s["uri"])
    location = c.get_model_version(s["name"], "2").tags["lineage.attestation"]
    run_id, _, path = location.removeprefix("runs:/").partition("/")
    sig = c.download_artifacts(run_id, f"{path}/model.sig", str(tmp_path))
    model_signing_verifies(model_dir(s, "2"), sig, s["pub"])


def test_load_verified_predicts_on_raw_rows(signed, monkeypatch):
    import lineageflow

    s = signed
    model = lineageflow.load_verified(
        f"models:/{s['name']}@staging", public_key=s["pub"], tracking_uri=s["uri"]
    )
    rows = pd.read_csv(next((s["ws"] / "data" / "customers").glob("*.csv")))
    X = rows.drop(columns=["churned"]).head(20)
    assert len(model.predict(X)) == 20


@pytest.mark.parametrize("attack", ["edit", "add", "remove"])
def test_a_model_file_changed_after_promotion_is_named(signed, attack):
    s = signed
    d = model_dir(s, "2")
    target = d / "MLmodel"
    saved = target.read_bytes()
    try:
        if attack == "edit":
            target.write_bytes(saved + b"\n# edited\n")
            want = "model file MLmodel was changed after promotion"
        elif attack == "add":
            (d / "backdoor.py").write_text("print('hi')\n")
            want = "model file backdoor.py was added after promotion"
        else:
            target.unlink()
            want = "model file MLmodel was removed after promotion"
        proc = verify_cli(s, f"models:/{s['name']}@staging")
        assert proc.returncode == 1
        assert f"FAILED models:/{s['name']}/2: {want}" in proc.stdout.splitlines()
        with pytest.raises(Exception, match=want):
            import lineageflow

            lineageflow.load_verified(
                f"models:/{s['name']}/2", public_key=s["pub"], tracking_uri=s["uri"]
            )
    finally:
        target.write_bytes(saved)
        (d / "backdoor.py").unlink(missing_ok=True)
    assert verify_cli(s, f"models:/{s['name']}/2").returncode == 0


def test_a_copied_workspace_is_refused_not_checked_against_the_original(
    signed, tmp_path
):
    """A copy's mlflow.db names the original's absolute artifact paths: verify
    on the copy would check the original's files and miss the copy's edit."""
    s = signed
    ws, copy = s["ws"].resolve(), (tmp_path / "copy").resolve()
    shutil.copytree(ws, copy, symlinks=True)
    model = model_dir(s, "2").resolve()
    edited = copy / model.relative_to(ws) / "MLmodel"
    edited.write_bytes(edited.read_bytes() + b"\n# edited in the copy\n")
    store = ws / ".lineageflow" / "artifacts"

    proc = verify_cli(s, f"models:/{s['name']}@staging", ws=copy)
    assert proc.returncode == 2 and "verified" not in proc.stdout
    assert proc.stderr.splitlines() == [
        f"error: workspace {copy}'s MLflow store (.lineageflow/mlflow.db) records "
        f"its artifacts outside it, at {store} (a copied workspace's mlflow.db "
        "keeps the original's absolute paths): verify would read those files, "
        "not this workspace's; verify the workspace that holds them, or retrain "
        "here for a store of its own"
    ]
    # the original still verifies, and says where it read from
    proc = verify_cli(s, f"models:/{s['name']}@staging")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"  artifacts read from {store}" in proc.stdout.splitlines()


def test_verify_through_a_tracking_server_is_not_refused(signed, tmp_path):
    """MLFLOW_TRACKING_URI = a server on the workspace's store: its artifact
    locations are the server's business, read as they are, not refused."""
    from tests.servers import mlflow_ui

    s = signed
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    db = s["ws"] / ".lineageflow" / "mlflow.db"
    with mlflow_ui(db, tmp_path, env) as server:
        proc = subprocess.run(
            [LF, "verify", f"models:/{s['name']}@staging", "--key", str(s["pub"])]
            + ["--workspace", str(s["ws"])],
            capture_output=True,
            text=True,
            timeout=180,
            env=dict(env, MLFLOW_TRACKING_URI=server),
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"verified models:/{s['name']}/2 ")
    store = s["ws"].resolve() / ".lineageflow" / "artifacts"
    assert f"  artifacts read from {store}" in proc.stdout.splitlines()


def test_a_store_outside_the_workspace_or_a_server_is_not_refused(tmp_path):
    from lineageflow.errors import WorkspaceError
    from lineageflow.runs.artifact_store import read_from, refuse_outside

    ws = tmp_path / "ws"
    away = [(tmp_path / "orig" / "artifacts" / "1" / "m").as_uri()]
    inside = f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}"
    with pytest.raises(WorkspaceError, match=r"records its artifacts outside it"):
        refuse_outside(inside, ws, away)
    refuse_outside(inside, ws, [(ws / ".lineageflow" / "artifacts").as_uri()])
    # a server proxies its artifacts; a store elsewhere is not the workspace's
    refuse_outside("http://127.0.0.1:5000", ws, ["mlflow-artifacts:/1/m"])
    refuse_outside(f"sqlite:///{tmp_path / 'mlflow.db'}", ws, away)
    assert read_from(["mlflow-artifacts:/1/m", "mlflow-artifacts:/1/r"]) == (
        "mlflow-artifacts:/1/m"
    )


def attestation_file(s, version: str, name: str) -> Path:
    c = MlflowClient(s["uri"])
    location = c.get_model_version(s["name"], version).tags["lineage.attestation"]
    run_id, _, path = location.removeprefix("runs:/").partition("/")
    root = c.get_run(run_id).info.artifact_uri.removeprefix("file://")
    return Path(root) / path / name


def test_an_edited_statement_is_refused(signed):
    s = signed
    f = attestation_file(s, "2", "lineage.intoto.jsonl")
    saved = f.read_text()
    first = json.loads(saved.splitlines()[0])
    import base64

    doc = json.loads(base64.b64decode(first["payload"]))
    doc["predicate"]["buildDefinition"]["externalParameters"]["params_sha256"] = (
        "0" * 64
    )
    first["payload"] = base64.b64encode(st.canonical(doc)).decode()
    try:
        f.write_text(
            json.dumps(first) + "\n" + "\n".join(saved.splitlines()[1:]) + "\n"
        )
        proc = verify_cli(s, f"models:/{s['name']}/2")
        assert proc.returncode == 1
        assert (
            "lineage.intoto.jsonl line 1 signature does not verify: it was edited"
            in proc.stdout
        )
    finally:
        f.write_text(saved)


def test_an_attestation_swapped_in_from_another_version_is_refused(signed):
    s = signed
    c = MlflowClient(s["uri"])
    mine = c.get_model_version(s["name"], "2").tags["lineage.attestation"]
    theirs = c.get_model_version(s["name"], "1").tags["lineage.attestation"]
    try:
        c.set_model_version_tag(s["name"], "2", "lineage.attestation", theirs)
        proc = verify_cli(s, f"models:/{s['name']}/2")
        assert proc.returncode == 1
        # v1's signature does not match v2's files
        assert "was changed after promotion" in proc.stdout
        # and the statements name v1
        assert (
            f"is a statement about models:/{s['name']}/1, not models:/{s['name']}/2"
            in (proc.stdout)
        )
    finally:
        c.set_model_version_tag(s["name"], "2", "lineage.attestation", mine)
    # only the statement swapped in: it names another version
    f = attestation_file(s, "2", "lineage.intoto.jsonl")
    saved = f.read_text()
    try:
        f.write_text(attestation_file(s, "1", "lineage.intoto.jsonl").read_text())
        proc = verify_cli(s, f"models:/{s['name']}/2")
        assert proc.returncode == 1
        assert "it was swapped in from another version" in proc.stdout
    finally:
        f.write_text(saved)


def test_the_wrong_public_key_and_an_unsigned_version_exit_1(signed, tmp_path):
    s = signed
    _, other = keys.keygen(tmp_path / "other")
    proc = verify_cli(s, f"models:/{s['name']}@staging", key=other)
    assert proc.returncode == 1
    assert "model.sig was not made with the given public key" in proc.stdout
    # nothing verifies with that key: that is not "Staging was moved by hand"
    assert "without a signed promotion" not in proc.stdout + proc.stderr

    c = MlflowClient(s["uri"])
    tag = c.get_model_version(s["name"], "1").tags["lineage.attestation"]
    try:  # as a version promoted before signing existed
        c.delete_model_version_tag(s["name"], "1", "lineage.attestation")
        proc = verify_cli(s, f"models:/{s['name']}/1")
        assert proc.returncode == 1
        assert proc.stdout.strip() == (
            f"FAILED models:/{s['name']}/1: models:/{s['name']}/1 is unsigned: it has "
            "no lineage.attestation tag (promoted before signing, or never promoted)"
        )
    finally:
        c.set_model_version_tag(s["name"], "1", "lineage.attestation", tag)

    proc = verify_cli(s, "runs:/abc/model")
    assert proc.returncode == 2
    assert "is not a registered model version: pass models:/NAME@staging" in proc.stderr


def test_an_alias_moved_outside_lineageflow_is_refused(signed):
    s = signed
    c = MlflowClient(s["uri"], registry_uri=s["uri"])
    try:  # v1 verifies on its own, but lineageflow's last promotion made v2 Staging
        c.set_registered_model_alias(s["name"], "staging", "1")
        proc = verify_cli(s, f"models:/{s['name']}@staging")
        assert proc.returncode == 1
        assert (
            f"FAILED models:/{s['name']}/1: model '{s['name']}' version 1 is in "
            "Staging (alias staging) without a signed promotion: the last signed "
            "promotion is version 2 (signed "
        ) in proc.stdout
        one = verify_cli(s, f"models:/{s['name']}/1")
        assert one.returncode == 0
        assert one.stderr.startswith(f"warning: model '{s['name']}' version 1 is in")
    finally:
        c.set_registered_model_alias(s["name"], "staging", "2")


def test_promote_and_reproduce_verify_an_existing_attestation(signed, monkeypatch):
    from flows.promote import promote_model
    from flows.reproduce import reproduce_run
    from lineageflow.errors import PromotionRefused

    s = signed
    monkeypatch.setenv(keys.KEY_ENV, str(s["key"]))
    d = model_dir(s, "1")
    target = d / "MLmodel"
    saved = target.read_bytes()
    try:
        target.write_bytes(saved + b"\n")
        with pytest.raises(PromotionRefused, match="model file MLmodel was changed"):
            promote_model(s["name"], "1", str(s["ws"]))
    finally:
        target.write_bytes(saved)
    # intact: verified, said so, then re-promoted (tolerance 1.0: it wins)
    msg = promote_model(s["name"], "1", str(s["ws"]))
    assert msg.startswith(f"{s['name']} v1 promoted to Staging (attestation of ")
    assert "verified (every model file and statement, key" in msg
    proc = verify_cli(s, f"models:/{s['name']}@staging")
    assert proc.returncode == 0, proc.stdout
    # the history now has three promotions: v1 again, v2, v1
    assert proc.stdout.count("  promotion ") == 3

    monkeypatch.setenv("MLFLOW_TRACKING_URI", s["uri"])
    out = reproduce_run(run_id=s["runs"][0], workspace=str(s["ws"]))
    assert any(
        n.startswith(f"attestation of models:/{s['name']}/1 verified")
        for n in out["notes"]
    ), out["notes"]


@pytest.mark.usefixtures("prefect_api")  # a flow run: the session server
def test_a_passphrase_key_refuses_the_promotion_and_signs_nothing(
    make_workspace, tracking, tmp_path, monkeypatch
):
    from flows.training import training_pipeline
    from lineageflow.errors import PromotionRefused

    key = write_key(tmp_path / "k.pem", ec.generate_private_key(ec.SECP256R1()), b"pw")
    monkeypatch.setenv(keys.KEY_ENV, str(key))
    ws = make_workspace(rows=1500).workspace
    with pytest.raises(
        PromotionRefused, match="signing_key: signing key .* is passphrase"
    ):
        training_pipeline(workspace=str(ws))
    c = MlflowClient(tracking)
    (mv,) = c.search_model_versions(f"name = '{make_workspace.model_name}'")
    assert mv.current_stage == "None" and mv.aliases == []
    assert mv.tags["lineage.failed_checks"] == "signing_key"
    assert mv.tags["lineage.checks"] == "failed"
    assert "lineage.attestation" not in mv.tags
    # nothing half-signed: no attestation in this run or any of its stages' runs
    # (the session's store holds other tests' signed runs)
    exp = c.get_run(mv.run_id).info.experiment_id
    mine = c.search_runs([exp], f"tags.mlflow.parentRunId = '{mv.run_id}'")
    assert len(mine) == 5
    assert not any(
        a.path == "attestation"
        for run_id in [mv.run_id, *(r.info.run_id for r in mine)]
        for a in c.list_artifacts(run_id)
    )


def make_ca(tmp: Path, cn: str = "lineageflow test CA"):
    """A CA (self-signed) and a code-signing leaf certificate it issued."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def usage(**on):
        flags = dict.fromkeys(
            [
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
                "encipher_only",
                "decipher_only",
            ],
            False,
        )
        return x509.KeyUsage(**(flags | on))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + 30 * day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("lineageflow promotions"))
        .issuer_name(name(cn))
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + 30 * day)
        .add_extension(usage(digital_signature=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return write_key(tmp / "leaf.key", leaf_key), tmp / "leaf.pem", tmp / "ca.pem"


@pytest.mark.usefixtures("prefect_api")  # a flow run: the session server
def test_a_certificate_signed_promotion_verifies_against_its_ca(
    make_workspace, tmp_path, monkeypatch
):
    from flows.training import training_pipeline

    key, leaf, ca = make_ca(tmp_path / "pki")
    _, _, other_ca = make_ca(tmp_path / "other", cn="another CA")
    monkeypatch.setenv(keys.KEY_ENV, str(key))
    monkeypatch.setenv(keys.CERT_ENV, str(leaf))
    monkeypatch.setenv(keys.CHAIN_ENV, str(ca))
    ws = make_workspace(rows=1500).workspace
    training_pipeline(workspace=str(ws))
    uri = f"models:/{make_workspace.model_name}@staging"

    def run(*args):
        return subprocess.run(
            [LF, "verify", uri, "--workspace", str(ws), *args],
            capture_output=True,
            text=True,
            timeout=180,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        )

    ok = run("--cert-chain", str(ca))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(f"verified models:/{make_workspace.model_name}/1 ")
    wrong = run("--cert-chain", str(other_ca))
    assert wrong.returncode == 1
    assert "model.sig does not verify against the certificate chain ca.pem" in (
        wrong.stdout
    )
    # the certificate's key is no substitute for the chain: a bare key refuses it
    pub = tmp_path / "leaf.pub"
    pub.write_bytes(keys.public_pem(keys.load_private(key).private.public_key()))
    assert run("--key", str(pub)).returncode == 1


def test_a_certificate_for_another_key_is_refused(tmp_path, monkeypatch):
    key, _, _ = make_ca(tmp_path / "a")
    _, leaf_b, _ = make_ca(tmp_path / "b")
    monkeypatch.setenv(keys.KEY_ENV, str(key))
    monkeypatch.setenv(keys.CERT_ENV, str(leaf_b))
    with pytest.raises(SigningKeyError, match="is not for the signing key"):
        keys.signing_key()
