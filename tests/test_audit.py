"""audit-registry: each promoted version re-proved (offline checks, a rebuild
when due), the verdict on the version, an event when it changes. Pure verdict
logic first, then the flow on a real workspace, git, DVC remote, MLflow store
and Prefect API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lineageflow.audit.verdicts import (
    Audited,
    Finding,
    description_line,
    description_with,
    event,
    from_reproduction,
    markdown,
    rebuild_due,
    worst,
)
from lineageflow.errors import LineageError
from tests.servers import free_port
from tests.test_deployments import BIN, prefect_server  # noqa: F401 - its fixture


def _audited(verdict="exact", previous=None, cause="", reproduced=True):
    return Audited("m", "3", "Staging", "r1", verdict, cause, previous, reproduced, 0)


def test_the_most_serious_finding_wins_and_names_every_cause_of_its_kind():
    found = worst(
        [
            Finding("unverifiable", "remote down"),
            Finding("unreproducible", "data/a md5 1 gone"),
            Finding("unreproducible", "data/b md5 2 gone"),
        ]
    )
    assert found == Finding("unreproducible", "data/a md5 1 gone; data/b md5 2 gone")
    assert worst([]) is None
    tampered = worst([Finding("unreproducible", "x"), Finding("tampered", "model.pkl")])
    assert tampered.verdict == "tampered"


def test_a_rebuild_is_due_unless_the_last_exact_audit_had_this_basis():
    last = {"verdict": "exact", "basis": "b1", "since": "0"}
    assert not rebuild_due(last, "b1", 4)  # 1st audit after the rebuild
    assert not rebuild_due(last | {"since": "2"}, "b1", 4)  # 3rd
    assert rebuild_due(last | {"since": "3"}, "b1", 4)  # 4th: due
    assert rebuild_due(last, "b2", 4)  # environment or digests changed
    assert rebuild_due(last | {"verdict": "diverged"}, "b1", 4)
    assert rebuild_due({}, "b1", 4)  # never audited
    assert rebuild_due(last, "b1", 1)  # every audit rebuilds


def test_a_change_is_a_new_verdict_and_a_first_audit_that_confirms_is_none():
    assert not _audited("exact", None).changed
    assert _audited("tampered", None).changed
    assert _audited("unreproducible", "exact").changed
    assert not _audited("unreproducible", "unreproducible").changed


def test_reproduce_runs_verdicts_become_the_audits_with_their_cause():
    assert from_reproduction({"verdict": "exact"}) == Finding("exact", "")
    within = from_reproduction(
        {"verdict": "within_tolerance", "first_divergence": "train: metrics"}
    )
    assert within == Finding("within", "train: metrics")
    diverged = from_reproduction(
        {
            "verdict": "unpinned",
            "code_note": "lineageflow code not pinned",
            "environment": ["xgboost 2.1.0 -> 2.1.1"],
        }
    )
    assert diverged.verdict == "diverged"
    assert "not pinned" in diverged.cause and "xgboost 2.1.0 -> 2.1.1" in diverged.cause


def test_the_description_keeps_its_text_and_the_last_five_audit_lines():
    text = "## v3\n\nPromoted: checks passed.\n\n- data `data/c`"
    for day in range(1, 8):
        text = description_with(text, f"audited 2026-12-0{day}: exact")
    assert text == (
        "## v3\n\nPromoted: checks passed.\n\n- data `data/c`\n"
        + "\n".join(f"audited 2026-12-0{d}: exact" for d in range(3, 8))
    )
    assert description_with(None, "audited 2026-12-08: exact") == (
        "audited 2026-12-08: exact"
    )
    # a note written after the audit lines (an archived version's) stays above
    noted = description_with(
        "Promoted.\naudited 2026-12-01: exact\nArchived: v4 replaced it.",
        "audited 2026-12-08: exact",
    )
    assert noted == (
        "Promoted.\n\nArchived: v4 replaced it.\n"
        "audited 2026-12-01: exact\naudited 2026-12-08: exact"
    )
    # within MLflow's 5000 characters: older audit lines go, the text never does
    long = "x" * 4900
    full = description_with(
        long + "\naudited 2026-12-01: exact", "audited 2026-12-08: " + "y" * 200
    )
    assert full.startswith(long + "\naudited 2026-12-08: ") and len(full) <= 5000


def test_the_audit_line_is_one_line_with_its_cause_cut():
    cause = "data/c md5 ab12 is not in remote 's':\nrun `dvc push`" + " z" * 400
    line = description_line(
        datetime(2026, 12, 6, tzinfo=UTC), _audited("unreproducible", "exact", cause)
    )
    assert "\n" not in line and len(line) < 360
    assert line.startswith("audited 2026-12-06: unreproducible (data/c md5 ab12 is not")
    assert line.endswith("…)")


def test_the_event_names_model_version_verdicts_and_cause():
    a = _audited("unreproducible", "exact", "data/c md5 ab12 is gone", False)
    ev = event(a, "/ws", "fr-1")
    assert ev["event"] == "lineageflow.audit.changed"
    assert ev["resource"]["prefect.resource.id"] == "lineageflow.model-version.m/3"
    assert ev["resource"]["lineageflow.audit.verdict"] == "unreproducible"
    assert (
        ev["payload"].items()
        >= {
            "model": "m",
            "version": "3",
            "old_verdict": "exact",
            "new_verdict": "unreproducible",
            "cause": "data/c md5 ab12 is gone",
        }.items()
    )
    assert ev["id"] == event(a, "/ws", "fr-1")["id"] != event(a, "/ws", "fr-2")["id"]
    table = markdown([a, _audited()], datetime.now(UTC), ["n: none promoted"])
    assert "| `m` | 3 | Staging | **unreproducible** | exact | offline |" in table
    assert "- n: none promoted" in table


# --------------------------------------------------------------- the flow


def _versions(c: MlflowClient, name: str) -> dict[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {str(v.version): v for v in c.search_model_versions(f"name = '{name}'")}


def _where(c: MlflowClient, name: str) -> dict[str, str]:
    """Each version's stage, and the version behind the staging alias."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {v: mv.current_stage for v, mv in _versions(c, name).items()}
    out["@staging"] = str(c.get_registered_model(name).aliases.get("staging"))
    return out


def _events(api: str, name: str, since: datetime) -> list[dict]:
    from tests.test_deployments import rest

    return rest(
        "POST",
        f"{api}/events/filter",
        json={
            "filter": {
                "event": {"name": [name]},
                "occurred": {"since": since.isoformat()},
            },
            "limit": 50,
        },
    ).json()["events"]


def _audit_events(api: str, since: datetime, expect: int = 0) -> list[dict]:
    """The audit events the Prefect server at ``api`` stored since ``since``:
    waits (bounded) for ``expect`` of them; expecting none, until an event
    sent after the audit is stored (the server stores events in the order
    they arrive, so an audit event sent before it would be there too)."""
    from tests.test_deployments import rest

    deadline = time.monotonic() + 30
    marker = "lineageflow.test.after-audit"
    if not expect:
        sent = datetime.now(UTC)
        rest(
            "POST",
            f"{api}/events",
            json=[
                {
                    "id": str(uuid.uuid4()),
                    "occurred": sent.isoformat(),
                    "event": marker,
                    "resource": {"prefect.resource.id": "lineageflow.test"},
                }
            ],
        )
    while True:
        if expect:
            found = _events(api, "lineageflow.audit.changed", since)
            if len(found) >= expect or time.monotonic() > deadline:
                return found
        elif _events(api, marker, sent) or time.monotonic() > deadline:
            return _events(api, "lineageflow.audit.changed", since)
        time.sleep(0.25)


@pytest.mark.usefixtures("prefect_api")
def test_audit_re_proves_versions_and_reports_what_changed(
    make_workspace, prefect_api_url, monkeypatch
):
    from flows.audit import audit_registry
    from flows.demo import add_data_version
    from flows.training import training_pipeline
    from lineageflow.runs.artifact_store import model_location

    paths = make_workspace(rows=1500)
    ws, name = paths.workspace, make_workspace.model_name
    first = training_pipeline(workspace=str(ws))
    add_data_version(ws, 1, 1500, seed=9, drift=0.5, message="data v2")
    second = training_pipeline(workspace=str(ws))
    assert (first["version"], second["version"]) == ("1", "2"), (first, second)
    c = MlflowClient(f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}")
    where = _where(c, name)
    assert where == {"1": "Archived", "2": "Staging", "@staging": "2"}
    since = datetime.now(UTC)

    # 1. both exact, both rebuilt; the verdict on each version
    out = audit_registry(workspace=str(ws))
    assert out["audited"] == {f"{name}/2": "exact", f"{name}/1": "exact"}, out
    assert sorted(out["rebuilt"]) == [f"{name}/1", f"{name}/2"] and not out["changed"]
    for mv in _versions(c, name).values():
        assert mv.tags["lineage.audit.verdict"] == "exact"
        assert mv.tags["lineage.audit.run"] and mv.tags["lineage.audit.at"]
        assert mv.tags["lineage.audit.since_reproduced"] == "0"
        assert mv.description.splitlines()[-1] == f"audited {since:%Y-%m-%d}: exact"

    # 2. nothing changed: offline checks only, no event
    out = audit_registry(workspace=str(ws))
    assert out["audited"] == {f"{name}/2": "exact", f"{name}/1": "exact"}
    assert out["rebuilt"] == [] and out["changed"] == []
    assert _versions(c, name)["1"].tags["lineage.audit.since_reproduced"] == "1"
    assert _audit_events(prefect_api_url, since) == []

    # 3. v1's data object pruned from the DVC remote; v2's model file edited
    record = json.loads(
        Path(
            c.download_artifacts(first["run_id"], "lineage.json", str(paths.base))
        ).read_text()
    )
    (data,) = record["data"]
    md5 = data["md5"]
    obj = paths.remote / "files" / "md5" / md5[:2] / md5[2:]
    assert obj.is_file(), sorted(paths.remote.rglob("*"))[:5]
    obj.unlink()
    mv2 = _versions(c, name)["2"]
    stored = Path(model_location(mv2.source, c.tracking_uri).removeprefix("file://"))
    (stored / "model.pkl").write_bytes((stored / "model.pkl").read_bytes() + b"\0")

    out = audit_registry(workspace=str(ws))
    assert out["audited"] == {f"{name}/2": "tampered", f"{name}/1": "unreproducible"}
    assert sorted(out["changed"]) == [f"{name}/1", f"{name}/2"]
    assert md5 in out["causes"][f"{name}/1"], out["causes"]
    assert "model.pkl" in out["causes"][f"{name}/2"], out["causes"]
    events = {
        e["payload"]["version"]: e for e in _audit_events(prefect_api_url, since, 2)
    }
    assert set(events) == {"1", "2"}
    assert events["1"]["payload"]["old_verdict"] == "exact"
    assert events["1"]["payload"]["new_verdict"] == "unreproducible"
    assert md5 in events["1"]["payload"]["cause"]
    mv1 = _versions(c, name)["1"]
    assert mv1.description.splitlines()[-1].startswith(
        f"audited {since:%Y-%m-%d}: unreproducible (data/customers md5 {md5}"
    )
    assert _where(c, name) == where  # an audit never moves a stage or alias

    # 4. again, nothing new: no event
    again = datetime.now(UTC)
    out = audit_registry(workspace=str(ws))
    assert out["audited"] == {f"{name}/2": "tampered", f"{name}/1": "unreproducible"}
    assert out["changed"] == [] and _audit_events(prefect_api_url, again) == []

    # 4b. v1's directory listing back in the remote, one of its files gone
    # instead: the file named, with the fix a plain `dvc push` would not do
    cache = ws / ".dvc" / "cache" / "files" / "md5"
    shutil.copy(cache / md5[:2] / md5[2:], obj)
    part = json.loads(obj.read_text())[0]
    _dvc_object(paths, part["md5"]).unlink()
    out = audit_registry(workspace=str(ws), models=[name])
    assert out["audited"][f"{name}/1"] == "unreproducible" and out["changed"] == []
    assert out["causes"][f"{name}/1"].startswith(
        f"data/customers md5 {md5}: 1 of its files are not in remote 'storage' "
        f"({part['relpath']} md5 {part['md5']}): DVC counts a directory whose "
        f"listing is in the remote as pushed, so delete the listing "
    ), out["causes"]

    # 5. a DVC remote that does not answer: v1 unverifiable with the reason, and
    # the audit goes on to v2
    dead = f"http://127.0.0.1:{free_port()}/dvc"
    dvc = [str(BIN / "dvc"), "remote", "modify", "--local", "storage"]
    subprocess.run([*dvc, "url", dead], cwd=ws, check=True, capture_output=True)
    try:
        out = audit_registry(workspace=str(ws))
    finally:
        subprocess.run(
            [*dvc, "--unset", "url"], cwd=ws, check=True, capture_output=True
        )
    assert out["audited"] == {f"{name}/2": "tampered", f"{name}/1": "unverifiable"}
    assert out["causes"][f"{name}/1"].startswith(
        "data/customers: DVC remote 'storage' (http://127.0.0.1) did not answer "
        "(ClientConnectorError: "
    ), out["causes"]

    # 6. a version whose run was deleted: a verdict in one line, the rest goes on
    c.delete_run(first["run_id"])
    out = audit_registry(workspace=str(ws), models=[name])
    cause = out["causes"][f"{name}/1"]
    assert cause == (
        f"v1's run {first['run_id']} was deleted: restore it with `mlflow runs "
        f"restore --run-id {first['run_id']}` before `mlflow gc` purges it"
    )
    assert out["audited"][f"{name}/2"] == "tampered"
    c.restore_run(first["run_id"])

    # 7. no usable signing key on this worker: the signature is not judged
    # (unverifiable, never "tampered"), the model file still is, by its digest
    monkeypatch.setenv("LINEAGEFLOW_SIGNING_KEY", str(paths.base / "no-such.key"))
    out = audit_registry(workspace=str(ws), models=[name])
    assert out["audited"][f"{name}/2"] == "tampered"
    assert "has sha256" in out["causes"][f"{name}/2"], out["causes"]
    assert _where(c, name) == where


@pytest.mark.usefixtures("prefect_api")
def test_bad_model_names_are_one_line_each(make_workspace):
    from flows.audit import audit_registry

    ws = make_workspace(rows=200).workspace
    c = MlflowClient(f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}")
    c.create_registered_model("by-hand")
    c.create_registered_model("ours", tags={"lineageflow.managed": "true"})
    with pytest.raises(LineageError) as err:
        audit_registry(workspace=str(ws), models=["nope"])
    assert str(err.value) == (
        f"model 'nope' is not registered in the MLflow store at sqlite:///"
        f"{ws / '.lineageflow' / 'mlflow.db'}: lineageflow's models there: ours"
    )
    with pytest.raises(LineageError) as err:
        audit_registry(workspace=str(ws), models=["by-hand"])
    assert str(err.value) == (
        "model 'by-hand' has no version lineageflow registered (no lineage.run_id "
        "tag on any of its 0): audit the models lineageflow trains, or leave "
        "this name out"
    )
    out = audit_registry(workspace=str(ws))  # every managed model: none promoted
    assert out["audited"] == {}


# ---------------------------------------------------------------- deployed


def _model_file(mlf: MlflowClient, name: str, version: str) -> Path:
    from lineageflow.runs.artifact_store import model_location

    mv = _versions(mlf, name)[version]
    where = model_location(mv.source, mlf.tracking_uri).removeprefix("file://")
    return Path(where) / "model.pkl"


def _audit_artifact(api: str, flow_run_id: str) -> dict:
    """The ``audit`` artifact an audit flow run created (exactly one)."""
    from tests.test_deployments import rest

    (art,) = rest(
        "POST",
        f"{api}/artifacts/filter",
        json={
            "artifacts": {
                "flow_run_id": {"any_": [flow_run_id]},
                "key": {"any_": ["audit"]},
            }
        },
    ).json()
    return art


def _dvc_object(paths, md5: str) -> Path:
    return paths.remote / "files" / "md5" / md5[:2] / md5[2:]


@pytest.mark.slow
def test_deployed_weekly_audit_raises_a_changed_verdict_once_and_it_is_rebuilt(
    prefect_server,  # noqa: F811 - the fixture imported above
    make_workspace,
):
    """README's "Audits" as a user runs it: `prefect deploy --all`, a worker;
    two versions trained through `train`, the `weekly` deployment run by hand.
    A DVC object pruned from the remote and an edited model file are each a
    verdict and an event, which the reproduce deployment's trigger rebuilds;
    an audit with nothing new sends nothing."""
    from flows.demo import add_data_version
    from tests.test_deployments import (
        deploy_and_start_worker,
        flow_run_logs,
        flow_runs_of,
        rest,
        run_deployment_via_api,
        service_errors,
        wait_until,
    )

    env, api = prefect_server["env"], prefect_server["api"]
    paths = make_workspace(rows=1500)
    ws, name = paths.workspace, make_workspace.model_name
    worker = deploy_and_start_worker(
        prefect_server, dict(env, LINEAGEFLOW_WORKSPACE=str(ws)), worker_env=env
    )
    mlf = MlflowClient(f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}")

    def run(deployment: str, **parameters) -> dict:
        fr = run_deployment_via_api(api, deployment, parameters)
        logs = flow_run_logs(api, fr["id"])
        assert fr["state"]["type"] == "COMPLETED", logs[-3000:] + worker.tail()
        return fr

    def audit_results(fr: dict) -> dict:
        return rest("GET", f"{api}/flow_runs/{fr['id']}").json()

    # 1. train twice (a new data version between): v1 Archived, v2 Staging
    run("training-pipeline/train")
    add_data_version(ws, 1, 1500, seed=9, drift=0.5, message="data v2")
    run("training-pipeline/train")
    where = _where(mlf, name)
    assert where == {"1": "Archived", "2": "Staging", "@staging": "2"}
    weekly = rest("GET", f"{api}/deployments/name/audit-registry/weekly").json()
    (sched,) = weekly["schedules"]
    assert sched["schedule"]["cron"] == "0 4 * * 0" and sched["active"]
    reproduce = rest("GET", f"{api}/deployments/name/reproduce-run/reproduce").json()

    # 2. the audit, by hand: both exact, rebuilt; the artifact's table
    since = datetime.now(UTC)
    first = run("audit-registry/weekly")
    for v in ("1", "2"):
        mv = _versions(mlf, name)[v]
        assert mv.tags["lineage.audit.verdict"] == "exact", mv.tags
        assert mv.tags["lineage.audit.run"] == first["id"]
        assert mv.tags["lineage.audit.reproduction"]
        assert mv.description.endswith(f"audited {since:%Y-%m-%d}: exact")
    art = _audit_artifact(api, first["id"])
    assert f"| `{name}` | 2 | Staging | exact | — | rebuilt |" in art["data"]
    assert f"| `{name}` | 1 | Archived | exact | — | rebuilt |" in art["data"]

    # 3. v1's data pruned from the DVC remote; v2's stored model file edited
    md5 = mlf.get_run(_versions(mlf, name)["1"].run_id).data.tags[
        "lineage.data.data/customers.md5"
    ]
    _dvc_object(paths, md5).unlink()
    pkl = _model_file(mlf, name, "2")
    pkl.write_bytes(pkl.read_bytes() + b"\0")
    second = run("audit-registry/weekly")
    v1, v2 = _versions(mlf, name)["1"], _versions(mlf, name)["2"]
    assert v1.tags["lineage.audit.verdict"] == "unreproducible"
    assert (
        f"data/customers md5 {md5} is not in remote" in v1.tags["lineage.audit.cause"]
    )
    assert v2.tags["lineage.audit.verdict"] == "tampered"
    assert "model.pkl" in v2.tags["lineage.audit.cause"]
    events = {e["payload"]["version"]: e for e in _audit_events(api, since, 2)}
    assert set(events) == {"1", "2"}
    assert events["1"]["payload"]["old_verdict"] == "exact"
    assert events["1"]["payload"]["new_verdict"] == "unreproducible"
    assert md5 in events["1"]["payload"]["cause"]
    assert events["2"]["payload"]["new_verdict"] == "tampered"
    assert {e["related"][0]["prefect.resource.id"] for e in events.values()} == {
        f"prefect.flow-run.{second['id']}"
    }

    # Prefect's UI, in a real browser: the audit's table, the changes in bold
    from tests.test_browser import CHROMIUM, rendered

    if CHROMIUM is not None:
        latest = _audit_artifact(api, second["id"])
        ui = api.removesuffix("/api")
        page = rendered(
            f"{ui}/artifacts/artifact/{latest['id']}",
            "unreproducible",
            prefect_server["tmp"],
        )
        assert "tampered" in page and "2 changed" in page and md5 in page

    # 4. the automation: one reproduce run per changed version, by its run id
    triggered = wait_until(
        "2 reproduce runs the audit's events triggered",
        lambda: (lambda runs: runs if len(runs) == 2 else None)(
            flow_runs_of(api, reproduce["id"])
        ),
        timeout=120,
    )
    assert {r["parameters"]["run_id"] for r in triggered} == {v1.run_id, v2.run_id}
    assert all(r["created_by"]["type"] == "AUTOMATION" for r in triggered)

    # 5. again with nothing changed (while those rebuild): the same verdicts, no
    # event, no rebuild
    quiet = datetime.now(UTC)
    run("audit-registry/weekly")
    assert _versions(mlf, name)["1"].tags["lineage.audit.verdict"] == "unreproducible"
    assert _audit_events(api, quiet) == []  # so the trigger had nothing to react to
    assert _where(mlf, name) == where  # never a stage or an alias
    rebuilt = wait_until(
        "the 2 triggered reproduce runs finished",
        lambda: (
            lambda runs: (
                runs
                if all(r["state"]["type"] in ("COMPLETED", "FAILED") for r in runs)
                else None
            )
        )(flow_runs_of(api, reproduce["id"])),
        timeout=300,
    )
    assert len(rebuilt) == 2 and {r["state"]["type"] for r in rebuilt} == {
        "COMPLETED"
    }, worker.tail()
    assert audit_results(second)["state"]["type"] == "COMPLETED"

    worker.stop(interrupts=2)
    assert service_errors(prefect_server["log"]) == []


def test_selection_is_what_a_promotion_put_there_and_this_workspaces(tmp_path):
    """Staging and the newest `keep` Archived versions a lineageflow promotion
    put there (a passed check alone is no promotion); a version another
    workspace trained is left to that workspace's audit, in one line."""
    from lineageflow.audit.registry import recorded_elsewhere, select

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    c.create_registered_model("m", tags={"lineageflow.managed": "true"})
    exp = c.create_experiment("e")

    def version(stage: str, repo: str, promoted: bool = True) -> str:
        run = c.create_run(exp, tags={"lineage.workspace_repo": repo})
        c.set_terminated(run.info.run_id)
        tags = {"lineage.run_id": run.info.run_id, "lineage.checks": "passed"}
        if promoted:
            tags["lineage.promotion_sha256"] = "ab" * 32
        mv = c.create_model_version("m", f"runs:/{run.info.run_id}/model", tags=tags)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c.transition_model_version_stage("m", mv.version, stage)
        return str(mv.version)

    here = str(tmp_path / "ws")
    old = [version("Archived", here) for _ in range(3)]  # 1, 2, 3
    tie = version("Archived", here, promoted=False)  # checks passed, never promoted
    theirs = version("Archived", "/elsewhere/ws")
    staged = version("Staging", here)
    chosen = select(uri, None, keep=2)
    picked = [str(mv.version) for mv in chosen.versions]
    assert picked == [staged, theirs, old[2]] and tie not in picked
    by_version = {str(mv.version): mv for mv in chosen.versions}
    assert recorded_elsewhere(uri, by_version[staged], frozenset({here})) is None
    assert recorded_elsewhere(uri, by_version[theirs], frozenset({here})) == (
        f"m v{theirs}: trained in workspace /elsewhere/ws; its own audit re-proves it"
    )
