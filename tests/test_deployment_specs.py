"""prefect.yaml and deployments.serve describe the same three deployments."""

from deployments.serve import build_deployments, load_specs


def test_prefect_yaml_declares_the_three_deployments():
    specs = {s["name"]: s for s in load_specs()}
    assert set(specs) == {"train", "nightly-retrain", "reproduce"}
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


def test_serve_builds_the_same_deployments(tmp_path):
    built = {d.name: d for d in build_deployments(str(tmp_path))}
    assert set(built) == {"train", "nightly-retrain", "reproduce"}
    assert built["train"].parameters == {"workspace": str(tmp_path)}
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
