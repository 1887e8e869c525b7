"""Retraining when the data changes: what changed (pure), the watch flow and a
commit-triggered train on real git, DVC, MLflow and Prefect; the deployed loop
(watch -> event -> trigger -> train) against a real server and worker."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import git
import httpx
import pytest
import yaml

from flows.demo import add_data_version, dvc
from flows.training import training_pipeline
from flows.watch import watch_workspace
from lineageflow.errors import WorkspaceError
from lineageflow.retrain.changes import (
    DataAt,
    Head,
    Staged,
    change_key,
    detect,
)
from lineageflow.tags import DATA_CHANGED_EVENT
from tests.test_deployments import prefect_server  # noqa: F401 - its fixture

pytestmark = pytest.mark.usefixtures("prefect_api")


# ------------------------------------------------------------------ helpers


def with_upstream(ws: Path) -> Path:
    """A bare repo as the workspace's `origin`, its branch tracking origin/main."""
    bare = ws.parent / "upstream.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    repo = git.Repo(ws)
    repo.create_remote("origin", str(bare))
    repo.git.push("-u", "origin", "main")
    return bare


def dev_clone(bare: Path) -> Path:
    """Where a data scientist works: a clone of the upstream, pushing to it."""
    dev = bare.parent / f"dev-{uuid.uuid4().hex[:6]}"
    repo = git.Repo.clone_from(str(bare), dev)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "data scientist")
        cw.set_value("user", "email", "ds@lineageflow.invalid")
    dvc("config", "--local", "core.site_cache_dir", str(dev / ".dvc/tmp/site"), cwd=dev)
    return dev


def push_data(dev: Path, part: int, push_dvc: bool = True) -> str:
    sha = add_data_version(
        dev,
        part,
        1500,
        seed=100 + part,
        drift=0.3,
        message=f"data part {part}",
        push=push_dvc,
    )
    git.Repo(dev).git.push("origin", "main")
    return sha


def push_params(dev: Path, message: str, **changes) -> str:
    path = dev / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = params
        *keys, last = dotted.split(".")
        for k in keys:
            node = node[k]
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    repo = git.Repo(dev)
    repo.git.add("params.yaml")
    sha = repo.index.commit(message).hexsha
    repo.git.push("origin", "main")
    return sha


def events_of(api: str, commit: str, timeout: float = 30) -> list[dict]:
    """The lineageflow.data.changed events Prefect holds for a commit (its
    persister writes them in batches: polled, bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = httpx.post(
            f"{api}/events/filter",
            json={"filter": {"event": {"name": [DATA_CHANGED_EVENT]}}, "limit": 50},
            timeout=10,
        )
        resp.raise_for_status()
        found = [
            e for e in resp.json()["events"] if e["payload"].get("commit") == commit
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


# ------------------------------------------------------------------ pure


HEAD = Head("c" * 40, (DataAt("data/customers", "a" * 32 + ".dir"),), "p" * 64)


def staged_as(**kw) -> Staged:
    base = dict(
        version="3",
        run_id="r" * 32,
        commit="b" * 40,
        data={"data/customers": "a" * 32 + ".dir"},
        params_sha256="p" * 64,
    )
    return Staged(**(base | kw))


def test_nothing_changed_is_no_change_even_on_a_new_commit():
    # a README-only commit names the same data, params and code
    assert detect(HEAD, staged_as()) == []


def test_each_change_is_one_event_with_a_deterministic_id():
    head = Head(HEAD.commit, HEAD.data, "q" * 64, ("model_code.py",))
    changes = detect(head, staged_as(data={"data/customers": "0" * 32 + ".dir"}))
    assert [c.resource_id for c in changes] == [
        "lineageflow.dataset.data/customers",
        "lineageflow.params",
        "lineageflow.code",
    ]
    data = changes[0]
    assert "data/customers md5 aaaaaaaaaaaa (Staging v3: md5 000000000000)" in (
        data.reason
    )
    event = data.event("/srv/ws", "churn")
    assert event["event"] == DATA_CHANGED_EVENT
    assert event["resource"]["lineageflow.workspace"] == "/srv/ws"
    assert event["payload"]["commit"] == HEAD.commit
    assert event["payload"]["md5"] == HEAD.data[0].md5
    # the same change seen again is the same event; another workspace's is not
    assert data.event("/srv/ws", "churn")["id"] == event["id"]
    assert data.event("/srv/other", "churn")["id"] != event["id"]
    assert changes[2].payload["files"] == ["model_code.py"]


def test_nothing_staged_yet_every_dataset_is_a_change():
    (only,) = detect(HEAD, None)
    assert only.reason.endswith("no Staging version yet")


def test_a_delta_table_change_names_its_version():
    head = Head(HEAD.commit, (DataAt("/t/sales", "d" * 64, 4),), HEAD.params_sha256)
    (c,) = detect(head, staged_as(data={"/t/sales": "e" * 64}))
    assert c.payload["version"] == 4 and c.reason.startswith("/t/sales v4")


def test_the_change_key_is_commit_data_and_params():
    k = change_key("c" * 40, {"a": "1", "b": "2"}, "p")
    assert k == change_key("c" * 40, {"b": "2", "a": "1"}, "p")
    assert k != change_key("c" * 40, {"a": "1", "b": "3"}, "p")
    assert k != change_key("d" * 40, {"a": "1", "b": "2"}, "p")


# ------------------------------------------------------------------ flows


def test_watch_sends_one_event_per_change_and_nothing_while_unpushed(
    make_workspace, prefect_api_url
):
    paths = make_workspace(rows=1500)
    ws = paths.workspace
    bare = with_upstream(ws)
    dev = dev_clone(bare)
    before = git.Repo(ws).head.commit.hexsha

    # nothing staged yet: the upstream head's one dataset is one change
    out = watch_workspace(workspace=str(ws))
    assert out["upstream"] == f"origin/main ({bare})"
    assert len(out["events"]) == 1 and out["waiting"] == []
    (sent,) = events_of(prefect_api_url, out["commit"])
    assert sent["id"] == out["events"][0]
    assert (
        sent["resource"]["prefect.resource.id"] == "lineageflow.dataset.data/customers"
    )
    assert sent["resource"]["lineageflow.workspace"] == str(ws)

    # a commit whose data is not pushed yet: no event until it is, and it says so
    sha = push_data(dev, 1, push_dvc=False)
    out = watch_workspace(workspace=str(ws))
    assert out["commit"] == sha and out["events"] == []
    assert len(out["waiting"]) == 1 and out["waiting"][0].startswith(
        "data/customers md5 "
    )
    dvc("push", cwd=dev)
    out = watch_workspace(workspace=str(ws))
    assert out["commit"] == sha and len(out["events"]) == 1
    # the fetch moved origin/main only: the user's branch and tree are as they were
    repo = git.Repo(ws)
    assert repo.head.commit.hexsha == before and not repo.is_dirty(untracked_files=True)


def test_watch_without_an_upstream_compares_the_local_branch(make_workspace):
    ws = make_workspace(rows=1500).workspace
    out = watch_workspace(workspace=str(ws))
    assert out["upstream"] == "local branch main"
    assert out["commit"] == git.Repo(ws).head.commit.hexsha and len(out["events"]) == 1


def test_an_upstream_that_does_not_answer_fails_the_watch_in_one_line(make_workspace):
    ws = make_workspace(rows=1500).workspace
    repo = git.Repo(ws)
    repo.create_remote("origin", str(ws.parent / "gone.git"))
    with repo.config_writer() as cw:
        cw.set_value('branch "main"', "remote", "origin")
        cw.set_value('branch "main"', "merge", "refs/heads/main")
    with pytest.raises(WorkspaceError) as err:
        watch_workspace(workspace=str(ws))
    line = str(err.value)
    assert line.startswith("could not fetch upstream origin/main (")
    assert line.endswith("the next watch run tries again") and "\n" not in line


def test_an_upstream_branch_deleted_is_one_line(make_workspace):
    ws = make_workspace(rows=1500).workspace
    bare = with_upstream(ws)
    git.Repo(bare).git.branch("-m", "main", "renamed")
    with pytest.raises(WorkspaceError, match=r"^origin/main \(.*\) names no commit"):
        watch_workspace(workspace=str(ws))


def test_an_event_naming_a_commit_not_in_the_repo_is_one_line(make_workspace):
    ws = make_workspace(rows=1500).workspace
    for bad in ("0" * 40, "--upload-pack=touch /tmp/x", "no-such-branch"):
        with pytest.raises(WorkspaceError, match="is not in .*: push it, or fix the"):
            training_pipeline(workspace=str(ws), commit=bad)


def test_a_commit_is_trained_once_in_a_worktree_whatever_the_events(make_workspace):
    from mlflow import MlflowClient

    paths = make_workspace(rows=1500)
    ws = paths.workspace
    bare = with_upstream(ws)
    dev = dev_clone(bare)
    sha = push_data(dev, 1)
    first = training_pipeline(workspace=str(ws), commit=sha)
    assert first["stage"] == "Staging"
    uri = f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(first["run_id"])
    # it trained the commit it was given, recorded as the workspace (not the worktree)
    assert run.data.tags["lineage.git_commit"] == sha
    assert run.data.tags["lineage.workspace_repo"] == str(bare)
    assert run.data.tags["lineage.trigger.commit"] == sha
    repo = git.Repo(ws)
    assert repo.head.commit.hexsha != sha and not repo.is_dirty(untracked_files=True)
    assert len(repo.git.worktree("list").splitlines()) == 1  # the worktree is gone

    again = training_pipeline(workspace=str(ws), commit=sha[:12])
    assert again["skipped"] is True and again["run_id"] == first["run_id"]
    assert "already trained: run " in again["message"]
    # and the watch sends nothing for it: the Staging version is this commit
    out = watch_workspace(workspace=str(ws))
    assert out["commit"] == sha and out["events"] == [] and out["changes"] == []


def test_a_new_delta_table_version_is_one_change_and_one_retrain(
    tmp_path, prefect_api_url
):
    from deltalake import write_deltalake

    from lineageflow.data.synthetic import make_customers
    from tests.test_delta import delta_workspace

    table = tmp_path / "lake" / "customers"
    write_deltalake(table, make_customers(1500, seed=1, drift=0.0))
    paths, _ = delta_workspace(tmp_path, [{"delta": str(table)}])
    ws = paths.workspace
    assert training_pipeline(workspace=str(ws))["stage"] == "Staging"
    assert watch_workspace(workspace=str(ws))["changes"] == []

    # an append is a new table version on the same commit: one event
    write_deltalake(table, make_customers(800, seed=2, drift=0.5), mode="append")
    out = watch_workspace(workspace=str(ws))
    assert len(out["events"]) == 1, out
    (sent,) = events_of(prefect_api_url, out["commit"])
    assert sent["resource"]["prefect.resource.id"] == f"lineageflow.dataset.{table}"
    assert sent["payload"]["version"] == 1
    retrained = training_pipeline(workspace=str(ws), commit=out["commit"])
    assert retrained["stage"] == "Staging" and str(retrained["version"]) == "2"
    assert watch_workspace(workspace=str(ws))["changes"] == []


# ------------------------------------------------------------------ deployed


def train_runs(api: str, dep_id: str, n: int, timeout: float = 300) -> list[dict]:
    """Wait (bounded) for n train flow runs to exist and be finished."""
    from tests.test_deployments import flow_runs_of, wait_until

    final = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

    def finished():
        runs = flow_runs_of(api, dep_id)
        done = [r for r in runs if r["state"]["type"] in final]
        return runs if len(runs) >= n and len(done) == len(runs) else None

    return sorted(wait_until(f"{n} train runs", finished, timeout), key=_started)


def _started(run: dict) -> str:
    return run["expected_start_time"] or ""


def post_event(api: str, event: dict) -> None:
    from tests.test_deployments import rest

    rest("POST", f"{api}/events", json=[event])


@pytest.mark.slow
def test_deployed_watch_triggers_one_retrain_per_change_and_never_loops(
    prefect_server,  # noqa: F811 - the fixture imported above
    make_workspace,
):
    """README's "Retrain when data changes" as a user sets it up: `prefect deploy
    --all`, a worker, nothing else: each watch run the user (or its 10-minute
    schedule) starts; the server's trigger and the worker do the rest."""
    from mlflow import MlflowClient

    from tests.test_deployments import (
        cli,
        deploy_and_start_worker,
        flow_run_logs,
        rest,
        run_deployment_via_api,
        service_errors,
        staging_versions,
    )

    env, api = prefect_server["env"], prefect_server["api"]
    paths = make_workspace(rows=1500)
    ws, name = paths.workspace, make_workspace.model_name
    bare = with_upstream(ws)
    dev = dev_clone(bare)
    head = git.Repo(ws).head.commit.hexsha
    deploy_env = dict(env, LINEAGEFLOW_WORKSPACE=str(ws))
    worker = deploy_and_start_worker(prefect_server, deploy_env, worker_env=env)
    train = rest("GET", f"{api}/deployments/name/training-pipeline/train").json()
    watch = rest("GET", f"{api}/deployments/name/watch-workspace/watch").json()
    (sched,) = watch["schedules"]
    assert sched["schedule"]["interval"] == 600.0 and sched["active"]
    automations = rest("POST", f"{api}/automations/filter", json={}).json()
    assert sorted(a["name"] for a in automations) == [
        "rebuild a version whose audit verdict changed",
        "retrain when the data changes",
    ]
    mlf = MlflowClient(f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}")

    def watch_now(expect: str) -> dict:
        fr = run_deployment_via_api(api, "watch-workspace/watch", {})
        assert fr["state"]["type"] == "COMPLETED", flow_run_logs(api, fr["id"])[-2000:]
        logs = flow_run_logs(api, fr["id"], expect=expect)
        assert expect in logs, logs[-2000:]
        return fr

    # 1. nothing staged yet: one event, and one train run the trigger started
    # trains the upstream head into Staging v1
    watch_now("data/customers md5")
    try:
        (first,) = train_runs(api, train["id"], 1, timeout=120)
    except TimeoutError:
        raise AssertionError(
            worker.tail() + prefect_server["log"].read_text()[-5000:]
        ) from None
    assert first["state"]["type"] == "COMPLETED", worker.tail()
    assert first["parameters"]["commit"] == head
    assert first["created_by"] is None or first["created_by"]["type"] == "AUTOMATION"
    _, staged = staging_versions(mlf, name)
    assert [str(m.version) for m in staged] == ["1"]

    # 2. a new data version pushed upstream: one event, one train run, v2
    v2 = push_data(dev, 1)
    watch_now("lineageflow.data.changed: data/customers md5")
    runs = train_runs(api, train["id"], 2)
    assert runs[-1]["state"]["type"] == "COMPLETED", worker.tail()
    assert runs[-1]["parameters"]["commit"] == v2
    _, staged = staging_versions(mlf, name)
    assert [str(m.version) for m in staged] == ["2"]
    assert mlf.get_run(staged[0].run_id).data.tags["lineage.git_commit"] == v2
    repo = git.Repo(ws)  # the deployed workspace's branch and tree: untouched
    assert repo.head.commit.hexsha == head and not repo.is_dirty(untracked_files=True)

    # 3. watch again: nothing to send. The same event twice: Prefect drops it;
    # the same change under a new id: a run that ends at once, training nothing
    watch_now("names what Staging v2 was trained on")
    (sent,) = events_of(api, v2)
    resent = {k: sent[k] for k in ("id", "occurred", "event", "resource", "payload")}
    post_event(api, resent)
    post_event(api, resent)
    time.sleep(8)  # a trigger reacts within seconds of the event
    assert len(train_runs(api, train["id"], 2)) == 2
    parents_before = len(mlf.search_runs([_exp(mlf)]))
    # as README's CI step sends it: `prefect event emit` (a new id each time)
    resource = {"prefect.resource.id": sent["resource"]["prefect.resource.id"]}
    resource["lineageflow.workspace"] = str(ws)
    cli(
        [
            str(Path(sys.executable).parent / "prefect"),
            "event",
            "emit",
            DATA_CHANGED_EVENT,
            "--resource",
            json.dumps(resource),
            "--payload",
            json.dumps({"commit": v2}),
        ],
        env,
    )
    runs = train_runs(api, train["id"], 3)
    assert runs[-1]["state"]["type"] == "COMPLETED", worker.tail()
    said = flow_run_logs(api, runs[-1]["id"], expect="already trained")
    assert f"commit {v2[:12]} with these data versions and params was already" in said
    assert len(mlf.search_runs([_exp(mlf)])) == parents_before

    # 4. a params-only commit: one retrain, however many events arrive at once
    # (the second run waits for the workspace's slot, then finds the first)
    v3 = push_params(dev, "more trees", **{"train.xgboost.n_estimators": 30})
    watch_now("lineageflow.data.changed: params sha256")
    (sent,) = events_of(api, v3)
    post_event(api, {k: sent[k] for k in resent} | {"id": str(uuid.uuid4())})
    runs = train_runs(api, train["id"], 5)
    assert [r["parameters"]["commit"] for r in runs[-2:]] == [v3, v3]
    assert {r["state"]["type"] for r in runs[-2:]} == {"COMPLETED"}, worker.tail()
    assert [str(m.version) for m in staging_versions(mlf, name)[1]] == ["3"]
    trained = mlf.search_runs(
        [_exp(mlf)], filter_string=f"tags.`lineage.trigger.commit` = '{v3}'"
    )
    assert len(trained) == 1
    said = "already trained: run " + trained[0].info.run_id
    waited = [flow_run_logs(api, r["id"], expect=said, timeout=20) for r in runs[-2:]]
    assert sum(said in t for t in waited) == 1, waited

    # 5. a retrain the gate refuses fails once and is not retried in a loop
    v4 = push_params(
        dev,
        "impossible gate",
        **{"train.xgboost.n_estimators": 20, "evaluate.threshold": 0.999},
    )
    watch_now("lineageflow.data.changed: params sha256")
    runs = train_runs(api, train["id"], 6)
    assert runs[-1]["parameters"]["commit"] == v4
    assert runs[-1]["state"]["type"] == "FAILED"
    assert [str(m.version) for m in staging_versions(mlf, name)[1]] == ["3"]
    watch_now(f"at {v4[:12]} was already trained by run ")
    time.sleep(6)
    assert len(train_runs(api, train["id"], 6)) == 6

    # 6. Prefect's UI, in a real browser: the trigger, and what the watch sent
    from tests.test_browser import CHROMIUM, rendered

    if CHROMIUM is not None:
        ui, tmp = api.removesuffix("/api"), prefect_server["tmp"]
        rendered(f"{ui}/automations", "retrain when the data changes", tmp)
        latest = rest(
            "POST",
            f"{api}/artifacts/latest/filter",
            json={"artifacts": {"key": {"any_": ["data-changed"]}}},
        ).json()
        (art,) = latest
        page = rendered(f"{ui}/artifacts/artifact/{art['latest_id']}", v4[:12], tmp)
        assert "lineageflow.params" in page and "(Staging v3:" in page

    worker.stop(interrupts=2)
    assert service_errors(prefect_server["log"]) == []


def _exp(mlf) -> str:
    return mlf.get_experiment_by_name("lineageflow").experiment_id
