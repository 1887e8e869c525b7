"""lineageflow benchmarks: `make bench`. Prints a table and writes bench/RESULTS.md.

Workload: a synthetic tabular classification table (scikit-learn's
make_classification, seeded) of 500,000 rows x 40 float features, as one CSV
tracked by DVC in a git workspace with a local DVC remote; xgboost `hist`,
800 trees of depth 8 (bare training ~27 s on 2 cores). Every figure is measured
BENCH_REPS times (default 3) in this one run, ratios from the same run, with
bare and pipeline runs interleaved so drift hits both.

1. overhead     the whole training_pipeline in a fresh process (as a worker starts
                it), against a running Prefect server and a sqlite MLflow store,
                / a bare script reading the same CSV and fitting the same model
2. unchanged    a nightly retrain with nothing changed / a full run
3. reproduction reproduce_run / the original run, and whether metrics are identical
4. lineage 1 GB lineage capture of an unchanged 1 GiB file, next to `md5sum`
5. sweep        8 xgboost configs as Prefect tasks, 2 processes or 2 Dask worker
                processes / 1 at a time
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from report import render

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"
PY = sys.executable
REPS = int(os.environ.get("BENCH_REPS", "3"))
ROWS = int(os.environ.get("BENCH_ROWS", "500000"))
XGB = {"n_estimators": 800, "max_depth": 8, "learning_rate": 0.1, "tree_method": "hist"}
SWEEP_ROWS = 200_000
# goal 1: a new user's first command, on the demo's size (84,000 rows, 200 trees)
DEFAULT_ROWS = 84_000
DEFAULT_XGB = {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.1}
# goal 7: non-fit time against rows; few trees, the fit is not what is measured
SCALE_ROWS = tuple(
    int(n)
    for n in os.environ.get("BENCH_SCALE_ROWS", "500000,2000000,5000000").split(",")
)
SCALE_XGB = {"n_estimators": 20, "max_depth": 6, "learning_rate": 0.3}
GRID = [
    {
        "n_estimators": 200,
        "max_depth": d,
        "learning_rate": lr,
        "n_jobs": 1,
        "tree_method": "hist",
    }
    for d in (4, 6, 8, 10)
    for lr in (0.05, 0.2)
]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_workspace(base: Path, frame, name: str, xgb: dict) -> Path:
    import yaml

    from flows.demo import DemoPaths, default_params_text, init_workspace

    paths = DemoPaths(base)
    base.mkdir(parents=True)
    params = yaml.safe_load(default_params_text())
    params["data"] = {
        "datasets": ["data/train.csv"],
        "target": "churned",
        "remote": None,
    }
    params["train"]["xgboost"].update(xgb)
    params["register"]["model_name"] = name
    params["evaluate"]["threshold"] = 0.5
    init_workspace(paths, params_text=yaml.safe_dump(params, sort_keys=False))
    ws = paths.workspace
    (ws / "data").mkdir()
    if frame is not None:
        frame.to_csv(ws / "data" / "train.csv", index=False)
    return ws


def commit_data(ws: Path, rel: str) -> None:
    import git

    from flows.demo import dvc

    dvc("add", rel, cwd=ws)
    git.Repo(ws).index.commit(f"data: {rel}")
    dvc("push", cwd=ws)


def set_params(ws: Path, message: str, **dotted) -> None:
    """Edit params.yaml (dotted keys) and commit it, as a user changes a setting."""
    import git
    import yaml

    path = ws / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in dotted.items():
        node = params
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    repo = git.Repo(ws)
    repo.git.add("params.yaml")
    repo.index.commit(message)


def run_json(cmd: list[str], env: dict, need_json: bool = True) -> tuple[float, dict]:
    """Run one measured process; (wall seconds, its JSON line + peak_rss_mib).

    Waited with wait4, so the peak RSS is that process's own (ru_maxrss), not the
    largest of every child this benchmark has waited for."""
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln for ln in stdout.splitlines() if ln.startswith(("BENCH_JSON ", "{"))]
    if not need_json and proc.returncode == 0:
        lines = lines or ["{}"]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{cmd} failed ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}"
        )
    data = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    data["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB
    return wall, data


class DaskCluster:
    """bench/dask_cluster.py in its own session, stopped by PID."""

    def __init__(self, env: dict):
        self.env = env

    def __enter__(self) -> str:
        addr = WORK / "dask-address"
        addr.unlink(missing_ok=True)
        self.log = open(WORK / "dask-cluster.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PY, "bench/dask_cluster.py", str(addr)],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if addr.exists() and addr.read_text():
                return addr.read_text()
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(
            "the Dask cluster did not start: see bench/work/dask-cluster.log"
        )

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class PrefectServer:
    def __init__(self, home: Path):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.api = f"http://127.0.0.1:{self.port}/api"
        env = dict(
            os.environ,
            PREFECT_HOME=str(home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
        )
        self.log = open(home.parent / "prefect-server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(Path(PY).parent / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("prefect server did not start in 120 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def main() -> None:
    from lineageflow.data.synthetic import make_classification_frame

    t_start = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "prefect-home").mkdir()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))
    }
    env.update(
        DO_NOT_TRACK="true",
        DVC_NO_ANALYTICS="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        PREFECT_HOME=str(WORK / "prefect-home"),
        PREFECT_LOGGING_LEVEL="WARNING",
    )

    log(f"generating {ROWS} x 40 rows")
    frame = make_classification_frame(ROWS, 40, seed=0)
    ws = make_workspace(WORK / "main", frame, "bench-model", XGB)
    commit_data(ws, "data/train.csv")
    csv = ws / "data" / "train.csv"
    sweep_ws = make_workspace(
        WORK / "sweep", frame.head(SWEEP_ROWS), "bench-sweep", XGB
    )
    commit_data(sweep_ws, "data/train.csv")
    del frame

    server = PrefectServer(WORK / "prefect-home")
    env["PREFECT_API_URL"] = server.api
    results: dict = {}
    try:
        # 1. overhead, interleaved
        bare, pipe, anchor = [], [], []
        anchor_uri = f"sqlite:///{WORK / 'anchor.db'}"
        for i in range(REPS):
            log(f"overhead rep {i + 1}/{REPS}: bare script")
            bare.append(
                run_json(
                    [PY, "bench/bare.py", str(csv), "churned", json.dumps(XGB)], env
                )
            )
            log(f"overhead rep {i + 1}/{REPS}: bare script + MLflow autolog, log_model")
            anchor.append(
                run_json(
                    [
                        PY,
                        "bench/anchor.py",
                        str(csv),
                        "churned",
                        json.dumps(XGB),
                        anchor_uri,
                    ],
                    env,
                )
            )
            log(f"overhead rep {i + 1}/{REPS}: training_pipeline")
            pipe.append(
                run_json(
                    [PY, "bench/pipeline_run.py", "train", str(ws), "--no-reuse"], env
                )
            )
        results["overhead"] = (bare, pipe)
        results["anchor"] = anchor
        # 2. nothing changed
        skip = []
        for i in range(REPS):
            log(f"unchanged rep {i + 1}/{REPS}")
            skip.append(
                run_json([PY, "bench/pipeline_run.py", "train", str(ws), "--skip"], env)
            )
        assert all(s[1]["summary"].get("skipped") for s in skip), skip
        results["skip"] = skip
        # 3. reproduction of the last full run
        run_id = pipe[-1][1]["summary"]["run_id"]
        repro = []
        for i in range(REPS):
            log(f"reproduction rep {i + 1}/{REPS}")
            repro.append(
                run_json(
                    [PY, "bench/pipeline_run.py", "reproduce", str(ws), run_id], env
                )
            )
        results["repro"] = repro
        # 4b. reuse of unchanged stages: only evaluation settings changed, then
        # only training params (a new seed: the same fit cost, a different model)
        evals, trains = [], []
        for i in range(REPS):
            set_params(
                ws, "Evaluation threshold", **{"evaluate.threshold": 0.49 - i / 100}
            )
            log(f"reuse rep {i + 1}/{REPS}: only evaluation settings changed")
            evals.append(run_json([PY, "bench/pipeline_run.py", "train", str(ws)], env))
            set_params(
                ws,
                "Training seed",
                **{"train.seed": 43 + i, "register.promote": False},
            )
            log(f"reuse rep {i + 1}/{REPS}: only training params changed")
            trains.append(
                run_json([PY, "bench/pipeline_run.py", "train", str(ws)], env)
            )
        for _, d in evals:
            assert {r["stage"] for r in d["summary"]["reused"]} >= {
                "pull_data",
                "prepare",
                "train",
            }, d["summary"]
        for _, d in trains:
            got = {r["stage"] for r in d["summary"]["reused"]}
            assert got == {"pull_data", "prepare"}, d["summary"]
        results["reuse"] = {"evaluate": evals, "train": trains}
        # 5. sweep
        sweeps = {"parallel": [], "sequential": []}
        for i in range(REPS):
            for mode in ("sequential", "parallel"):
                log(f"sweep rep {i + 1}/{REPS}: {mode}")
                sweeps[mode].append(
                    run_json(
                        [
                            PY,
                            "bench/pipeline_run.py",
                            "sweep",
                            str(sweep_ws),
                            mode,
                            json.dumps(GRID),
                        ],
                        env,
                    )
                )
        # on a running cluster whose workers have imported what a fit needs (one
        # untimed sweep first), as a team's long-lived Dask cluster
        sweeps["dask_warm"] = []
        with DaskCluster(env) as address:
            for i in range(REPS + 1):
                log(f"sweep on a running Dask cluster: {'warm-up' if i == 0 else i}")
                out = run_json(
                    [
                        PY,
                        "bench/pipeline_run.py",
                        "sweep",
                        str(sweep_ws),
                        "dask",
                        json.dumps(GRID),
                        address,
                    ],
                    env,
                )
                if i:
                    sweeps["dask_warm"].append(out)
        results["sweep"] = sweeps
    finally:
        server.stop()
    # 1b. default mode: no PREFECT_API_URL, as a new user runs `lineageflow train`
    results["default"] = default_mode(env, csv, ws)
    # 7. scaling: non-fit time against rows (a running server again)
    results["scaling"] = scaling(env)
    # 4. lineage capture on 1 GiB unchanged
    log("lineage capture on 1 GiB")
    results["lineage"] = lineage_capture()
    elapsed = time.perf_counter() - t_start
    results["elapsed"] = elapsed
    results["csv_mb"] = csv.stat().st_size / 1e6
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (WORK / "results.json").write_text(json.dumps(results, default=str))
    report = render(results, elapsed)
    (ROOT / "bench" / "RESULTS.md").write_text(report)
    print(report)


def default_mode(env: dict, big_csv: Path, big_ws: Path) -> dict:
    """`lineageflow train` with no Prefect server configured against the bare
    script on the same CSV, each a fresh process, interleaved: on the demo's size
    (the first run starts the local server), then on the bench workload (server
    warm, as on a user's second run)."""
    from lineageflow.data.synthetic import make_classification_frame

    frame = make_classification_frame(DEFAULT_ROWS, 40, seed=1)
    ws = make_workspace(WORK / "default", frame, "bench-default", DEFAULT_XGB)
    commit_data(ws, "data/train.csv")
    del frame
    plain = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    plain["PREFECT_HOME"] = str(WORK / "default" / "prefect-home")
    cli = str(Path(PY).parent / "lineageflow")
    bare, cmd = [], []
    for i in range(REPS):
        log(f"default mode rep {i + 1}/{REPS}: bare script")
        bare.append(
            run_json(
                [
                    PY,
                    "bench/bare.py",
                    str(ws / "data" / "train.csv"),
                    "churned",
                    json.dumps(DEFAULT_XGB),
                ],
                plain,
            )
        )
        log(f"default mode rep {i + 1}/{REPS}: lineageflow train")
        cmd.append(run_wall([cli, "train", str(ws), "--no-reuse"], plain))
    big_bare, big_cli = [], []
    for i in range(REPS):
        log(f"default mode on the workload, rep {i + 1}/{REPS}: bare script")
        big_bare.append(
            run_json(
                [PY, "bench/bare.py", str(big_csv), "churned", json.dumps(XGB)], plain
            )
        )
        log(f"default mode on the workload, rep {i + 1}/{REPS}: lineageflow train")
        big_cli.append(
            run_json([cli, "train", str(big_ws), "--no-reuse"], plain, need_json=False)
        )
    subprocess.run([cli, "server", "stop"], env=plain, capture_output=True, timeout=60)
    # each run's stage timings, as the flow logged them on its parent run
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}")
    parents = [
        r
        for r in c.search_runs([c.get_experiment_by_name("lineageflow").experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    stages = [
        sum(v for k, v in r.data.metrics.items() if k.startswith("time_"))
        for r in parents
    ]
    return {
        "bare": bare,
        "cli": cmd,
        "stages": stages,
        "big_bare": big_bare,
        "big_cli": big_cli,
    }


def run_wall(cmd: list[str], env: dict) -> tuple[float, dict]:
    """Wall time of a command that prints no JSON (the CLI, as a user runs it)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{cmd} failed: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return wall, {"stdout": proc.stdout[-500:]}


def scaling(env: dict) -> dict:
    """Process wall minus the fit, at each size in SCALE_ROWS (full runs)."""
    from lineageflow.data.synthetic import make_classification_frame

    out: dict = {}
    server = PrefectServer(WORK / "prefect-home")
    env = dict(env, PREFECT_API_URL=server.api)
    try:
        for rows in SCALE_ROWS:
            log(f"scaling: generating {rows} rows")
            frame = make_classification_frame(rows, 40, seed=2)
            ws = make_workspace(
                WORK / f"scale-{rows}", frame, f"bench-{rows}", SCALE_XGB
            )
            del frame
            commit_data(ws, "data/train.csv")
            runs, bare = [], []
            for i in range(REPS):
                log(f"scaling {rows} rows: rep {i + 1}/{REPS}: bare script")
                wall, d = run_json(
                    [
                        PY,
                        "bench/bare.py",
                        str(ws / "data" / "train.csv"),
                        "churned",
                        json.dumps(SCALE_XGB),
                    ],
                    env,
                )
                d["non_fit_s"] = wall - d["fit_s"]
                bare.append((wall, d))
                log(f"scaling {rows} rows: rep {i + 1}/{REPS}: training_pipeline")
                wall, d = run_json(
                    [PY, "bench/pipeline_run.py", "train", str(ws), "--no-reuse"], env
                )
                d["non_fit_s"] = wall - d.get("train.fit_seconds", 0.0)
                runs.append((wall, d))
            out[str(rows)] = runs
            out[f"bare-{rows}"] = bare
            shutil.rmtree(WORK / f"scale-{rows}", ignore_errors=True)
    finally:
        server.stop()
    return out


def lineage_capture() -> dict:
    from lineageflow.data.dvc_files import pull_dataset
    from lineageflow.workspace import git_state, open_workspace

    ws = make_workspace(WORK / "big", None, "bench-big", XGB)
    big = ws / "data" / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(1024):
            fh.write(os.urandom(1 << 20))
    commit_data(ws, "data/big.bin")
    w = open_workspace(ws)
    data_path, dvc_file = w.dataset("data/big.bin")
    capture, md5sum = [], []
    for _ in range(max(REPS, 3)):
        t0 = time.perf_counter()
        v = pull_dataset(w.root, data_path, dvc_file, None)
        git_state(w.git())
        capture.append(time.perf_counter() - t0)
        assert v.action == "present" and v.read_md5 == v.md5 and v.in_remote
        t0 = time.perf_counter()
        subprocess.run(["md5sum", str(big)], check=True, capture_output=True)
        md5sum.append(time.perf_counter() - t0)
    return {"capture": capture, "md5sum": md5sum}


if __name__ == "__main__":
    if sys.argv[1:] == ["--render"]:  # again, from the last run's figures
        saved = json.loads((WORK / "results.json").read_text())
        report = render(saved, saved["elapsed"])
        (ROOT / "bench" / "RESULTS.md").write_text(report)
        print(report)
    else:
        main()
