"""prefect.yaml and deployments.serve describe the same five deployments."""

from deployments.serve import build_deployments, load_specs

FIVE = {"train", "nightly-retrain", "reproduce", "watch", "weekly"}


def test_prefect_yaml_declares_the_five_deployments():
    specs = {s["name"]: s for s in load_specs()}
    assert set(specs) == FIVE
    assert specs["watch"]["schedules"] == [{"interval": 600, "active": True}]
    (trigger,) = specs["train"]["triggers"]
    assert trigger["expect"] == ["lineageflow.data.changed"]
    assert trigger["match"]["lineageflow.workspace"] == "{{ $LINEAGEFLOW_WORKSPACE }}"
    assert trigger["parameters"] == {"commit": "{{ event.payload.commit }}"}
    # triggered runs queue on a per-workspace limit (lineageflow.retrain.queue),
    # not a deployment limit a killed worker would hold for 5 minutes
    assert "concurrency_limit" not in specs["train"]
    assert specs["nightly-retrain"]["schedules"][0] == {
        "cron": "0 3 * * *",
        "timezone": "UTC",
        "active": True,
    }
    assert specs["nightly-retrain"]["parameters"]["skip_if_unchanged"] is True
    assert all(s["work_pool"]["name"] == "lineageflow-process" for s in specs.values())
    assert "run_id" not in specs["reproduce"].get(
        "parameters", {}
    )  # asked for at run time
    # the audit: weekly, one at a time; a changed verdict rebuilds that version
    assert specs["weekly"]["entrypoint"] == "flows/audit.py:audit_registry"
    assert specs["weekly"]["schedules"] == [
        {"cron": "0 4 * * 0", "timezone": "UTC", "active": True}
    ]
    (rebuild,) = specs["reproduce"]["triggers"]
    assert rebuild["expect"] == ["lineageflow.audit.changed"]
    assert rebuild["parameters"] == {"run_id": "{{ event.payload.run_id }}"}
    assert "exact" not in rebuild["match"]["lineageflow.audit.verdict"]


def test_serve_builds_the_same_deployments(tmp_path):
    built = {d.name: d for d in build_deployments(str(tmp_path))}
    assert set(built) == FIVE
    assert built["train"].parameters == {"workspace": str(tmp_path)}
    (trigger,) = built["train"].triggers
    assert trigger.match.root["lineageflow.workspace"] == str(tmp_path)
    assert trigger.parameters == {"commit": "{{ event.payload.commit }}"}
    (watch,) = built["watch"].schedules
    assert watch.schedule.interval.total_seconds() == 600
    assert built["nightly-retrain"].parameters == {
        "workspace": str(tmp_path),
        "skip_if_unchanged": True,
    }
    (sched,) = built["nightly-retrain"].schedules
    assert sched.schedule.cron == "0 3 * * *" and sched.schedule.timezone == "UTC"
    assert (
        built["reproduce"].entrypoint.endswith("reproduce_run")
        or built["reproduce"].flow_name == "reproduce-run"
    )
    (rebuild,) = built["reproduce"].triggers
    assert rebuild.match.root["lineageflow.workspace"] == str(tmp_path)
    assert built["weekly"].flow_name == "audit-registry"
    assert built["weekly"].parameters == {"workspace": str(tmp_path)}
    (weekly,) = built["weekly"].schedules
    assert weekly.schedule.cron == "0 4 * * 0"


def test_reproduce_carries_the_deploy_time_workspace(tmp_path):
    """A worker started as README says has no MLFLOW_TRACKING_URI: the run id alone
    is found through the workspace (its local store) recorded at deploy time."""
    specs = {s["name"]: s for s in load_specs()}
    assert specs["reproduce"]["parameters"] == {
        "workspace": "{{ $LINEAGEFLOW_WORKSPACE }}"
    }
    env = specs["reproduce"]["work_pool"]["job_variables"]["env"]
    assert env["LINEAGEFLOW_MLFLOW_UI_URL"] == "{{ $LINEAGEFLOW_MLFLOW_UI_URL }}"
    built = {d.name: d for d in build_deployments(str(tmp_path))}
    assert built["reproduce"].parameters == {"workspace": str(tmp_path)}


def test_an_unfilled_ui_address_falls_back_to_mlflow_ui(monkeypatch):
    from lineageflow.runs.store import mlflow_ui_url, run_url

    monkeypatch.setenv("LINEAGEFLOW_MLFLOW_UI_URL", "{{ $LINEAGEFLOW_MLFLOW_UI_URL }}")
    assert mlflow_ui_url() == "http://127.0.0.1:5000"
    monkeypatch.setenv("LINEAGEFLOW_MLFLOW_UI_URL", "http://127.0.0.1:5123/")
    assert run_url("sqlite:///x.db", "1", "r") == (
        "http://127.0.0.1:5123/#/experiments/1/runs/r"
    )


def test_parameter_descriptions_survive_the_ui_html_rendering(tmp_path):
    """The Prefect UI renders descriptions as HTML: `<name>` would vanish."""
    from prefect.utilities.callables import parameter_schema

    from flows.promote import promote_model
    from flows.reproduce import reproduce_run
    from flows.training import training_pipeline

    for fl in (training_pipeline, reproduce_run, promote_model):
        props = parameter_schema(fl.fn).model_dump()["properties"]
        for name, prop in props.items():
            text = prop.get("description") or ""
            assert text, f"{fl.name}.{name} has no description"
            assert "<" not in text and ">" not in text, (fl.name, name, text)
    for d in build_deployments(str(tmp_path)):
        assert "<" not in (d.description or ""), d.name
    run_id = parameter_schema(reproduce_run.fn).model_dump()["properties"]["run_id"]
    assert run_id["description"] == "an MLflow parent run id, or models:/NAME/VERSION."
