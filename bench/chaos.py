"""A chaos run on the team stack: in each trial a training run starts on a Prefect
worker and, at a random moment, one of PostgreSQL, the MLflow server, the S3
store, the Prefect server, the worker or a Dask worker is killed by PID and
restarted. After each trial: the next run completes and promotes; no MLflow run
is left RUNNING; no version is half-promoted (a Staging stage without its alias,
an alias without a signed promotion, a signature without its statements: the
signed history verifies); nothing that existed before the trial is gone.

    python bench/chaos.py [--trials 20] [--seed 7] [--report bench/CHAOS.md]

Exit code 0 when every trial kept every invariant. moto keeps its objects in
memory, so the S3 trials kill and restart the endpoint every client uses (a relay
process in front of moto, bench/relay.py), not moto itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chaos_stack import ChaosStack  # noqa: E402

BIN = Path(sys.executable).parent
COMPONENTS = ("postgresql", "mlflow", "s3", "prefect", "worker", "dask-worker")


def prefect(stack: ChaosStack, method: str, path: str, **kw):
    import httpx

    user, _, password = stack.secrets.prefect.partition(":")
    for attempt in range(30):  # the server may be the one restarting
        try:
            resp = httpx.request(
                method,
                f"{stack.prefect_api}{path}",
                auth=(user, password),
                timeout=10,
                **kw,
            )
            if resp.status_code < 500:
                resp.raise_for_status()
                return resp.json()
        except httpx.TransportError:
            pass
        time.sleep(min(1 + attempt, 5))
    raise RuntimeError(f"Prefect API {path} did not answer")


def make_workspace(stack: ChaosStack, base: Path, name: str, **params) -> Path:
    import yaml

    from flows.demo import (
        DemoPaths,
        add_data_version,
        default_params_text,
        init_workspace,
    )

    text = yaml.safe_load(default_params_text())
    text["train"]["xgboost"].update(n_estimators=25, max_depth=4)
    text["register"]["model_name"] = name
    text["evaluate"]["threshold"] = 0.6
    text["evaluate"]["champion_tolerance"] = 1.0  # every retrain may promote
    text.update(params)
    paths = DemoPaths(base / name)
    paths.base.mkdir(parents=True)
    saved = dict(os.environ)
    os.environ.update(stack.client_env())  # dvc push to the stack's S3
    try:
        init_workspace(paths, yaml.safe_dump(text), remote=stack.dvc_remote)
        add_data_version(paths.workspace, 0, 2000, seed=7, drift=0.0, message="v1")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return paths.workspace


def bump(ws: Path, n: int) -> None:
    """A material change, committed: every run registers a version of its own."""
    import git
    import yaml

    params = ws / "params.yaml"
    data = yaml.safe_load(params.read_text())
    data["train"]["xgboost"]["n_estimators"] = 20 + n
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    repo = git.Repo(ws)
    repo.index.add(["params.yaml"])
    repo.index.commit(f"n_estimators {20 + n}")


def start_run(stack: ChaosStack, deployment: dict, ws: Path) -> str:
    fr = prefect(
        stack,
        "POST",
        f"/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"workspace": str(ws)}},
    )
    return fr["id"]


def wait_state(stack, flow_run: str, want: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = prefect(stack, "GET", f"/flow_runs/{flow_run}")["state"]
        if state["type"] in want or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def snapshot(stack: ChaosStack, name: str) -> dict:
    """What must survive a trial: the versions and their runs, the DVC objects."""
    from mlflow import MlflowClient

    c = MlflowClient(stack.mlflow_uri)
    versions = {
        mv.version: mv.run_id for mv in c.search_model_versions(f"name = '{name}'")
    }
    s3 = stack.s3_client()
    objects = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket="lineageflow", Prefix="dvc/"
        )
        for o in page.get("Contents", [])
    }
    return {"versions": versions, "objects": objects}


def invariants(stack: ChaosStack, name: str, before: dict, env: dict) -> list[str]:
    """What is wrong after a trial (nothing, when it held)."""
    from mlflow import MlflowClient

    c = MlflowClient(stack.mlflow_uri)
    wrong = []
    exp = c.get_experiment_by_name("lineageflow")
    running = c.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    wrong += [f"run {r.info.run_id} left RUNNING" for r in running]
    staged = [
        mv.version
        for mv in c.search_model_versions(f"name = '{name}'")
        if mv.current_stage == "Staging"
    ]
    alias = c.get_registered_model(name).aliases.get("staging")
    if staged != [alias]:
        wrong.append(f"stage Staging on {staged}, alias staging on {alias}")
    from lineageflow.attest import keys

    pub = keys.state_dir() / keys.PUBLIC_NAME  # the workers' default signing key
    proc = subprocess.run(
        [str(BIN / "lineageflow"), "verify", f"models:/{name}@staging", "--json"]
        + ["--key", str(pub)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        wrong.append(f"verify: {(proc.stderr or proc.stdout).strip()[-300:]}")
    after = snapshot(stack, name)
    for version, run in before["versions"].items():
        if after["versions"].get(version) != run:
            wrong.append(f"version {version} lost")
    if before["objects"] - after["objects"]:
        wrong.append(
            f"DVC objects lost: {sorted(before['objects'] - after['objects'])}"
        )
    return wrong


def trial(stack, deployment, ws, name, component, delay, counter, env) -> dict:
    from mlflow import MlflowClient

    began = time.monotonic()
    before = snapshot(stack, name)
    bump(ws, next(counter))
    fr = start_run(stack, deployment, ws)
    state = wait_state(stack, fr, ("RUNNING", *FINAL), 300)
    time.sleep(delay)
    in_flight = wait_state(stack, fr, (), 0)["type"] == "RUNNING"
    started = time.monotonic()
    stack.kill_and_restart(component)
    restart_s = time.monotonic() - started
    # a flow run whose process died with its worker never reports again
    state = wait_state(stack, fr, FINAL, 45 if component == "worker" else 420)
    parent = _parent_run(MlflowClient(stack.mlflow_uri), fr)
    outcome = {
        "component": component,
        "delay_s": round(delay, 1),
        "in_flight": in_flight,
        "restart_s": round(restart_s, 1),
        "interrupted": state["type"],
        "mlflow_parent": parent.info.status if parent else "(never started)",
        "line": (state.get("message") or "").strip().splitlines()[-1:],
    }
    if state["type"] not in FINAL:  # the flow's process died with its worker
        prefect(
            stack,
            "POST",
            f"/flow_runs/{fr}/set_state",
            json={"state": {"type": "CRASHED", "message": "chaos: never finished"}},
        )
    # the next run completes and promotes (its start sweeps stale runs)
    bump(ws, next(counter))
    nxt = start_run(stack, deployment, ws)
    done = wait_state(stack, nxt, FINAL, 600)
    outcome["next"] = done["type"]
    c = MlflowClient(stack.mlflow_uri)
    alias = c.get_registered_model(name).aliases.get("staging")
    promoted = alias and c.get_model_version(name, alias).run_id == _run_id(c, nxt)
    outcome["next_promoted"] = bool(promoted)
    outcome["lost"] = invariants(stack, name, before, env)
    if not promoted:
        outcome["lost"].append(f"the next run did not promote ({done.get('message')})")
    outcome["wall_s"] = round(time.monotonic() - began)
    return outcome


def _parent_run(c, flow_run: str):
    exp = c.get_experiment_by_name("lineageflow")
    runs = c.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`prefect.flow_run_id` = '{flow_run}' "
        "and tags.`lineageflow.kind` = 'pipeline'",
    )
    return runs[0] if runs else None


def _run_id(c, flow_run: str) -> str | None:
    run = _parent_run(c, flow_run)
    return run.info.run_id if run else None


def report(rows: list[dict], seed: int, trials: int, wall: float) -> str:
    lines = [
        "# Chaos on the team stack",
        "",
        f"`python bench/chaos.py --trials {trials} --seed {seed}`: {trials} trials in "
        f"{wall / 60:.1f} min. In each, a training run on a pool worker; after a "
        "random delay one component is killed by PID (SIGKILL to its process group; "
        "SIGQUIT, PostgreSQL's crash-like immediate shutdown, to the postmaster) and "
        "restarted; then "
        "the next run must complete and promote, no MLflow run may stay RUNNING, "
        "Staging stage and alias must agree and verify as signed, and no version "
        "or DVC object that existed before may be gone.",
        "",
        "| # | component | killed after | in flight | restart | trial | interrupted run "
        "| MLflow parent | line the user saw | next run | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        line = (r["line"][0] if r["line"] else "").replace("|", "\\|")[:160]
        lines.append(
            f"| {i} | {r['component']} | {r['delay_s']} s "
            f"| {'yes' if r.get('in_flight', True) else 'no: it had ended'} "
            f"| {r['restart_s']} s "
            f"| {r['wall_s']} s "
            f"| {r['interrupted']} | {r['mlflow_parent']} | {line} "
            f"| {r['next']}{', promoted' if r['next_promoted'] else ''} "
            f"| {'; '.join(r['lost']) or 'nothing'} |"
        )
    lines += [
        "",
        "| component | trials | interrupted runs | lines the user saw | lost |",
        "|---|---|---|---|---|",
    ]
    for comp in COMPONENTS:
        mine = [r for r in rows if r["component"] == comp]
        if not mine:
            continue
        outcomes = [r["interrupted"] for r in mine]
        counts = ", ".join(f"{outcomes.count(o)} {o}" for o in sorted(set(outcomes)))
        seen = sorted({r["line"][0] for r in mine if r["line"]})
        said = "; ".join(f"`{x[:120]}`" for x in seen).replace("|", "\\|")
        lost = sum(bool(r["lost"]) for r in mine)
        lines.append(
            f"| {comp} | {len(mine)} | {counts} | {said or '(none: it completed)'} | "
            f"{'nothing' if not lost else f'{lost} trials'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/chaos.py")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "CHAOS.md")
    parser.add_argument("--components", default=",".join(COMPONENTS))
    parser.add_argument(
        "--render",
        type=Path,
        metavar="LOG",
        help="write the report again from a run's output (its JSON lines)",
    )
    parser.add_argument("--wall-min", type=float, default=0.0, help="with --render")
    args = parser.parse_args(argv)
    if args.render:
        rows = [
            json.loads(line)
            for line in args.render.read_text().splitlines()
            if line.startswith('{"component"')
        ]
        text = report(rows, args.seed, len(rows), args.wall_min * 60)
        args.report.write_text(text)
        print(text)
        return 0
    components = args.components.split(",")
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="lineageflow-chaos-"))
    os.environ.update(DO_NOT_TRACK="true", DVC_NO_ANALYTICS="1")
    started = time.monotonic()
    stack = ChaosStack(base / "stack", workers=1).up()
    rows: list[dict] = []
    try:
        env = stack.user_env()
        os.environ.update({k: v for k, v in env.items() if k.startswith("MLFLOW_")})
        spaces = {"local": make_workspace(stack, base, "chaos-local")}
        if "dask-worker" in components:
            spaces["dask"] = make_workspace(
                stack, base, "chaos-dask", compute={"engine": "dask"}
            )
        subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "train"],
            cwd=ROOT,
            env=env | {"LINEAGEFLOW_WORKSPACE": str(spaces["local"])},
            check=True,
            capture_output=True,
            timeout=300,
        )
        dep = prefect(stack, "GET", "/deployments/name/training-pipeline/train")
        counter = iter(range(1, 10_000))
        baseline = {}  # a run's seconds from RUNNING to its end, per workspace
        for ws_kind, ws in spaces.items():  # a first Staging version for each
            bump(ws, next(counter))
            fr = start_run(stack, dep, ws)
            wait_state(stack, fr, ("RUNNING", *FINAL), 300)
            began = time.monotonic()
            state = wait_state(stack, fr, FINAL, 600)
            baseline[ws_kind] = time.monotonic() - began
            if state["type"] != "COMPLETED":
                raise RuntimeError(f"first {ws_kind} run: {state.get('message')}")
        for i in range(args.trials):
            comp = components[i % len(components)]
            kind = "dask" if comp == "dask-worker" else "local"
            ws = spaces[kind]
            name = ws.parent.name
            # a moment inside the run, as the first run took: up to 60% of it,
            # since a later run is warm and shorter (at 90% a kill once landed
            # after the run had ended)
            delay = rng.uniform(0.05, 0.6) * baseline[kind]
            row = trial(stack, dep, ws, name, comp, delay, counter, env)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stack.down()
        if rows and not any(r["lost"] for r in rows):
            shutil.rmtree(base, ignore_errors=True)  # kept to look into otherwise
    text = report(rows, args.seed, args.trials, time.monotonic() - started)
    args.report.write_text(text)
    print(text)
    return 0 if rows and not any(r["lost"] for r in rows) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
