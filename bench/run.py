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
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx

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
    for n in os.environ.get("BENCH_SCALE_ROWS", "100000,500000,2000000").split(",")
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


def remaining(
    rows,
    fixed,
    ratio,
    bare,
    skip,
    skip_flow,
    skip_ratio,
    speedup,
    dask_speedup,
    fit_alone,
    fit_shared,
    rss=(0.0, 0.0),
    default=None,
    reuse=None,
    scale=None,
    warm_speedup=None,
    sweep_bound=None,
) -> str:
    """The "what remains" prose, written from this run's figures (never a constant
    that drifts from the table)."""
    over = sorted(((a - b, name) for name, a, b in rows), reverse=True)
    top = "; ".join(f"{name} {cost:+.2f} s" for cost, name in over[:4] if cost > 0)
    lines = ["## What remains, and why (written from the figures above)", ""]
    verdict = "met" if ratio <= 1.10 else "not met"
    lines.append(
        f"**Overhead (goal 1.10, {verdict})**: ratio {ratio:.2f}, a fixed cost of "
        f"{fixed:.2f} s over a {bare:.1f} s bare run. A fixed cost this size reaches "
        f"1.10 once the bare run takes {fixed / 0.10:.0f} s. Largest parts: {top}."
    )
    verdict = "met" if skip <= 2.0 else "not met"
    lines.append("")
    lines.append(
        f"**Nothing changed (goal 2 s, {verdict})**: {skip:.2f} s of process wall, "
        f"of which {skip_flow:.2f} s is the flow (the check and Prefect's bookkeeping) "
        f"and {skip - skip_flow:.2f} s the interpreter, imports and exit. It creates no "
        f"MLflow run and no model version ({skip_ratio:.3f} of a full run)."
    )
    best = max(speedup, dask_speedup, warm_speedup or 0.0)
    verdict = "met" if best >= 1.8 else "not met"
    lines.append("")
    lines.append(
        f"**Sweep (goal 1.8x, {verdict})**: {warm_speedup or 0.0:.2f}x on a running "
        f"Dask cluster whose 2 workers are warm; {speedup:.2f}x on a process pool and "
        f"{dask_speedup:.2f}x on a Dask cluster started by the flow, which both pay "
        "for starting worker processes and their imports. One config's fit takes "
        f"{fit_alone:.2f} s alone and {fit_shared:.2f} s while the other core fits "
        f"({(fit_shared / fit_alone - 1) * 100 if fit_alone else 0:+.0f}%)."
        + (_sweep_bound_text(*sweep_bound) if sweep_bound else "")
    )
    rss_pipe, rss_bare = rss
    if rss_bare:
        verdict = "met" if rss_pipe / rss_bare <= 1.3 else "not met"
        lines.append("")
        lines.append(
            f"**Memory (goal 1.3, {verdict})**: peak RSS {rss_pipe:.0f} MiB against the "
            f"bare script's {rss_bare:.0f} MiB ({rss_pipe / rss_bare:.2f}x), each "
            f"process's own ru_maxrss ({rss_pipe - rss_bare:+.0f} MiB). Not yet "
            "broken down by stage."
        )
    if default:
        cli, bare_d, lo, hi, stages = default
        verdict = "met" if cli - bare_d <= 4.0 else "not met"
        lines.append("")
        lines.append(
            f"**Default mode (goal 4 s, {verdict})**: `lineageflow train` with no Prefect "
            f"server configured takes {cli:.2f} s where the bare script takes "
            f"{bare_d:.2f} s: {cli - bare_d:+.2f} s (from {lo:+.2f} s to {hi:+.2f} s "
            "over the runs; the first starts the local Prefect server). The stages "
            f"(setup, pull, prepare, fit and log, evaluate, lineage, register) take "
            f"{stages:.2f} s; the other {cli - stages:.2f} s are the interpreter, the "
            "imports (Prefect, MLflow's SQL store, DVC, scikit-learn, xgboost) and "
            "Prefect's flow and task bookkeeping."
        )
    if reuse:
        ev_w, ev_ratio, ev_train, tr_pp, full_pp = reuse
        verdict = "met" if ev_ratio <= 0.10 else "not met"
        lines.append("")
        lines.append(
            f"**Reuse (goal 0.10, {verdict})**: with only evaluation settings changed "
            f"the retrain takes {ev_w:.2f} s ({ev_ratio:.3f} of a full run); its train "
            f"stage, which takes the earlier model after re-hashing it, {ev_train:.2f} s. "
            f"With only training params changed, pull_data + prepare take {tr_pp:.2f} s "
            f"against {full_pp:.2f} s in a full run."
        )
    if scale:
        fixed_part, per_m = scale
        lines.append("")
        lines.append(
            f"**Scaling**: time outside the fit is {fixed_part:.2f} s fixed plus "
            f"{per_m:.2f} s per million rows (reading, hashing, splitting, Parquet "
            "hand-off, scoring)."
        )
    return "\n".join(lines)


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


def run_json(cmd: list[str], env: dict) -> tuple[float, dict]:
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


def stats(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def fmt(xs: list[float], unit: str = "s") -> str:
    lo, med, hi = stats(xs)
    return (
        f"{med:.3f}{unit} (min {lo:.3f}, max {hi:.3f})"
        if unit == ""
        else f"{med:.2f} {unit} (min {lo:.2f}, max {hi:.2f})"
    )


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
        bare, pipe = [], []
        for i in range(REPS):
            log(f"overhead rep {i + 1}/{REPS}: bare script")
            bare.append(
                run_json(
                    [PY, "bench/bare.py", str(csv), "churned", json.dumps(XGB)], env
                )
            )
            log(f"overhead rep {i + 1}/{REPS}: training_pipeline")
            pipe.append(
                run_json(
                    [PY, "bench/pipeline_run.py", "train", str(ws), "--no-reuse"], env
                )
            )
        results["overhead"] = (bare, pipe)
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
        sweeps = {"parallel": [], "sequential": [], "dask": []}
        for i in range(REPS):
            for mode in ("sequential", "parallel", "dask"):
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
    results["default"] = default_mode(env)
    # 7. scaling: non-fit time against rows (a running server again)
    results["scaling"] = scaling(env)
    # 4. lineage capture on 1 GiB unchanged
    log("lineage capture on 1 GiB")
    results["lineage"] = lineage_capture()
    elapsed = time.perf_counter() - t_start
    (WORK / "results.json").write_text(json.dumps(results, default=str))
    report = render(results, elapsed)
    (ROOT / "bench" / "RESULTS.md").write_text(report)
    print(report)


def default_mode(env: dict) -> dict:
    """`lineageflow train` with no Prefect server configured against the bare
    script on the same CSV, each a fresh process, interleaved."""
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
    return {"bare": bare, "cli": cmd, "stages": stages}


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
            runs = []
            for i in range(REPS):
                log(f"scaling {rows} rows: rep {i + 1}/{REPS}")
                wall, d = run_json(
                    [PY, "bench/pipeline_run.py", "train", str(ws), "--no-reuse"], env
                )
                d["non_fit_s"] = wall - d.get("train.fit_seconds", 0.0)
                runs.append((wall, d))
            out[str(rows)] = runs
            shutil.rmtree(WORK / f"scale-{rows}", ignore_errors=True)
    finally:
        server.stop()
    return out


def lineage_capture() -> dict:
    from lineageflow.data.dvc import pull_dataset
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


def _sweep_bound_text(alone: float, shared: float, bound: float) -> str:
    return (
        f" The 8 configs' child runs add up to {alone:.1f} s one at a time and "
        f"{shared:.1f} s two at a time ({(shared / alone - 1) * 100:+.0f}%: two fits "
        "share caches and memory bandwidth), so even with no worker ever idle 2 cores "
        f"give at most {bound:.2f}x here."
    )


def render(r: dict, elapsed: float) -> str:
    bare, pipe = r["overhead"]
    bare_w = [w for w, _ in bare]
    pipe_w = [w for w, _ in pipe]
    ratio = [p / b for p, b in zip(pipe_w, bare_w, strict=True)]
    skip_w = [w for w, _ in r["skip"]]
    skip_ratio = [s / statistics.median(pipe_w) for s in skip_w]
    skip_flow = [d["flow_s"] for _, d in r["skip"]]
    repro_w = [w for w, _ in r["repro"]]
    repro_ratio = [x / statistics.median(pipe_w) for x in repro_w]
    verdicts = sorted({d["summary"]["verdict"] for _, d in r["repro"]})
    seq = [d["flow_s"] for _, d in r["sweep"]["sequential"]]
    par = [d["flow_s"] for _, d in r["sweep"]["parallel"]]
    speedup = [s / p for s, p in zip(seq, par, strict=True)]
    dask = [d["flow_s"] for _, d in r["sweep"]["dask"]]
    dask_speedup = [s / p for s, p in zip(seq, dask, strict=True)]
    warm = [d["flow_s"] for _, d in r["sweep"]["dask_warm"]]
    warm_speedup = [s / p for s, p in zip(seq, warm, strict=True)]
    # the best a 2-worker sweep could do: the warm run with its configs' child runs
    # (each slower than alone, as two run at once) split evenly, no idle worker
    seq_fit_sum = statistics.median(
        [d["children_sum"] for _, d in r["sweep"]["sequential"]]
    )
    par_fit_sum = statistics.median(
        [d["children_sum"] for _, d in r["sweep"]["dask_warm"]]
    )
    ideal = [
        d["flow_s"] - d["children_span"] + d["children_sum"] / 2
        for _, d in r["sweep"]["dask_warm"]
    ]
    bound = statistics.median(seq) / statistics.median(ideal)
    fit_seq = [d["fit_seconds_median"] for _, d in r["sweep"]["sequential"]]
    fit_par = [d["fit_seconds_median"] for _, d in r["sweep"]["parallel"]]
    complete = [
        d["complete_children"]
        for _, d in r["sweep"]["parallel"]
        + r["sweep"]["sequential"]
        + r["sweep"]["dask"]
        + r["sweep"]["dask_warm"]
    ]
    cap, md5 = r["lineage"]["capture"], r["lineage"]["md5sum"]

    def med(xs):
        return statistics.median(xs)

    # 1b. default mode
    d_bare = [w for w, _ in r["default"]["bare"]]
    d_cli = [w for w, _ in r["default"]["cli"]]
    d_over = [c - b for c, b in zip(d_cli, d_bare, strict=True)]
    d_stages = statistics.median(r["default"].get("stages") or [0.0])
    # 4b. reuse
    full = med(pipe_w)
    ev = r["reuse"]["evaluate"]
    tr = r["reuse"]["train"]
    ev_w = [w for w, _ in ev]
    ev_ratio = [w / full for w in ev_w]
    tr_w = [w for w, _ in tr]

    def stage_s(runs, *names):
        return [
            sum(d["summary"]["timings"].get(n, 0.0) for n in names) for _, d in runs
        ]

    full_pp = stage_s(pipe, "pull_data", "prepare")
    tr_pp = stage_s(tr, "pull_data", "prepare")
    ev_train = stage_s(ev, "train")
    # 7. scaling
    sizes = sorted(r["scaling"], key=int)
    non_fit = {n: [d["non_fit_s"] for _, d in r["scaling"][n]] for n in sizes}
    scale_rows = "\n".join(
        f"| {int(n):,} | {fmt(non_fit[n])} | "
        f"{med([d.get('train.fit_seconds', 0.0) for _, d in r['scaling'][n]]):.2f} s | "
        f"{fmt([w for w, _ in r['scaling'][n]])} |"
        for n in sizes
    )
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        per_m = (med(non_fit[hi]) - med(non_fit[lo])) / ((int(hi) - int(lo)) / 1e6)
        fixed_part = med(non_fit[lo]) - per_m * int(lo) / 1e6
    else:
        per_m = fixed_part = float("nan")

    # where the fixed cost goes (medians, seconds)
    P = [d for _, d in pipe]
    B = [d for _, d in bare]
    t = {
        k: med([d["summary"]["timings"].get(k, 0.0) for d in P])
        for k in (
            "setup",
            "pull_data",
            "lineage",
            "prepare",
            "train",
            "evaluate",
            "register",
        )
    }
    fit = med([d.get("train.fit_seconds", 0.0) for d in P])
    read = med([d.get("pull_data.read_seconds", 0.0) for d in P])
    dvc_s = med([d.get("pull_data.dvc_seconds", 0.0) for d in P])
    flow_s, imp = med([d["flow_s"] for d in P]), med([d["import_s"] for d in P])
    proc = med(pipe_w) - imp - flow_s
    bare_proc = (
        med(bare_w)
        - med([d["import_s"] for d in B])
        - sum(med([d[k] for d in B]) for k in ("read_s", "split_s", "fit_s", "score_s"))
    )
    rows = [
        ("interpreter start + exit", proc, bare_proc),
        ("imports", imp, med([d["import_s"] for d in B])),
        ("Prefect engine (flow − stages)", flow_s - sum(t.values()), 0.0),
        ("setup: MLflow experiment, git state, stale-run sweep", t["setup"], 0.0),
        ("DVC: status, hash (state DB), remote check", dvc_s, 0.0),
        ("read CSV", read, med([d["read_s"] for d in B])),
        ("pull_data: MLflow child run, log_input", t["pull_data"] - dvc_s - read, 0.0),
        ("lineage record + tags + lineage.json", t["lineage"], 0.0),
        (
            "prepare: checks, hash split, digests, logging",
            t["prepare"],
            med([d["split_s"] for d in B]),
        ),
        ("fit", fit, med([d["fit_s"] for d in B])),
        ("train: autolog, signature, log_model", t["train"] - fit, 0.0),
        (
            "evaluate: metrics, plots, logging",
            t["evaluate"],
            med([d["score_s"] for d in B]),
        ),
        ("register: version, 7 checks, champion, promotion", t["register"], 0.0),
    ]
    breakdown = "\n".join(
        f"| {name} | {a:.2f} | {b:.2f} | {a - b:+.2f} |" for name, a, b in rows
    )
    fixed = med(pipe_w) - med(bare_w)

    rss_bare = [d["peak_rss_mib"] for _, d in bare]
    rss_pipe = [d["peak_rss_mib"] for _, d in pipe]
    rss_ratio = [p / b for p, b in zip(rss_pipe, rss_bare, strict=True)]

    def goal(ok):
        return "met" if ok else "**not met**"

    analysis = remaining(
        rows,
        fixed,
        med(ratio),
        med(bare_w),
        med(skip_w),
        med(skip_flow),
        med(skip_ratio),
        med(speedup),
        med(dask_speedup),
        med(fit_seq),
        med(fit_par),
        rss=(med(rss_pipe), med(rss_bare)),
        default=(med(d_cli), med(d_bare), min(d_over), max(d_over), d_stages),
        reuse=(med(ev_w), med(ev_ratio), med(ev_train), med(tr_pp), med(full_pp)),
        scale=(fixed_part, per_m),
        warm_speedup=med(warm_speedup),
        sweep_bound=(seq_fit_sum, par_fit_sum, bound),
    )

    return f"""# lineageflow benchmarks

Last run: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {elapsed / 60:.1f} min, `make bench`
(BENCH_REPS={REPS}). Machine: {platform.machine()}, {os.cpu_count()} cores, Python
{platform.python_version()}; prefect {version("prefect")}, mlflow {version("mlflow")}, dvc {version("dvc")},
xgboost {version("xgboost")}, scikit-learn {version("scikit-learn")}, pandas {version("pandas")}.

Workload: {ROWS:,} rows x 40 float features (`make_classification`, seed 0), one CSV of
{(WORK / "main/workspace/data/train.csv").stat().st_size / 1e6:.0f} MB tracked by DVC (local remote);
xgboost `hist`, {XGB["n_estimators"]} trees, depth {XGB["max_depth"]}, all cores. Prefect: a running
`prefect server` on 127.0.0.1; MLflow: sqlite store in the workspace. Each process is started
fresh, as a worker starts a flow run. Figures: median (min, max) over {REPS} runs.

| # | measure | result | goal |
|---|---|---|---|
| 1 | bare script (process wall) | {fmt(bare_w)} | |
| 1 | training_pipeline (process wall) | {fmt(pipe_w)} | |
| 1 | **overhead ratio** pipeline / bare | {fmt(ratio, "")} | ≤ 1.10: {goal(med(ratio) <= 1.10)} |
| 1 | fixed cost (pipeline − bare, medians) | {fixed:.2f} s | |
| 1 | default mode (no Prefect server configured): bare script on the demo-sized CSV | {fmt(d_bare)} | |
| 1 | default mode: `lineageflow train` | {fmt(d_cli)} | |
| 1 | **default mode, over the bare script** | {fmt(d_over)} | ≤ 4 s: {goal(med(d_over) <= 4.0)} |
| 6 | peak RSS: bare script / training_pipeline | {fmt(rss_bare, "MiB")} / {fmt(rss_pipe, "MiB")} | |
| 6 | **peak RSS ratio** pipeline / bare | {fmt(rss_ratio, "")} | ≤ 1.3: {goal(med(rss_ratio) <= 1.3)} |
| 2 | **nightly retrain, nothing changed** (process wall) | {fmt(skip_w)} | ≤ 2 s: {goal(med(skip_w) <= 2.0)} |
| 2 | of which the flow itself | {fmt(skip_flow)} | |
| 2 | unchanged ratio / full run | {fmt(skip_ratio, "")} | |
| 3 | reproduce_run (process wall) | {fmt(repro_w)} | |
| 3 | **reproduction ratio** / original run | {fmt(repro_ratio, "")} | ≤ 1.25: {goal(med(repro_ratio) <= 1.25)} |
| 3 | metrics bit-identical | verdicts: {", ".join(verdicts)} | identical: {goal(verdicts == ["exact"])} |
| 4 | only evaluation settings changed: retrain (process wall) | {fmt(ev_w)} | |
| 4 | of which the train stage (reused: no fit) | {fmt(ev_train)} | |
| 4 | **reuse ratio** / full run | {fmt(ev_ratio, "")} | ≤ 0.10: {goal(med(ev_ratio) <= 0.10)} |
| 4 | only training params changed: retrain (process wall) | {fmt(tr_w)} | |
| 4 | **pull_data + prepare**, reused / in a full run | {fmt(tr_pp)} / {fmt(full_pp)} | not redone: {goal(med(tr_pp) < 0.5 * med(full_pp))} |
| 4 | **lineage capture**, 1 GiB unchanged (state DB, no rehash) | {fmt(cap)} | ≤ 0.3 s: {goal(med(cap) <= 0.3)} |
| 4 | `md5sum` of the same file | {fmt(md5)} | |
| 5 | sweep of 8 configs, 1 at a time (flow) | {fmt(seq)} | |
| 5 | sweep of 8 configs, 2 processes (flow) | {fmt(par)} | |
| 5 | sweep speed-up, 2 processes | {fmt(speedup, "")} | |
| 5 | sweep of 8 configs, Dask LocalCluster of 2 worker processes (flow, cluster start included) | {fmt(dask)} | |
| 5 | sweep speed-up on Dask | {fmt(dask_speedup, "")} | |
| 5 | sweep of 8 configs on a running Dask cluster, 2 warm worker processes (flow) | {fmt(warm)} | |
| 5 | **sweep speed-up on a running Dask cluster** | {fmt(warm_speedup, "")} | ≥ 1.8x: {goal(med(warm_speedup) >= 1.8)} |
| 5 | one config's fit, alone / while the other core fits too | {med(fit_seq):.2f} s / {med(fit_par):.2f} s | |
| 5 | the 8 configs' child runs summed, one at a time / two at a time (running cluster) | {seq_fit_sum:.1f} s / {par_fit_sum:.1f} s | |
| 5 | best possible speed-up on 2 cores (those child runs split evenly, no idle worker) | {bound:.2f}x | |
| 5 | child runs complete (of 8, every sweep) | {min(complete)}–{max(complete)} | 8, 0 lost: {goal(min(complete) == 8)} |

{analysis}

## Scaling: time outside the fit against rows (goal 7)

Full runs (`--no-reuse`) with a running server, {SCALE_XGB["n_estimators"]} trees: the fit is not
what is measured. Non-fit = process wall − the train stage's `fit_seconds`.

| rows | non-fit time | fit | process wall |
|---|---|---|---|
{scale_rows}

Fitted line through the smallest and largest size: **{fixed_part:.2f} s fixed + {per_m:.2f} s per
million rows**.

## Where the time goes (medians, seconds)

| step | pipeline | bare | overhead |
|---|---|---|---|
{breakdown}
| **total (process wall)** | {med(pipe_w):.2f} | {med(bare_w):.2f} | {fixed:+.2f} |

Sweep: {SWEEP_ROWS:,} rows, 8 configs (depth 4/6/8/10 x learning rate 0.05/0.2, 200 trees,
`n_jobs=1` each); "2 processes" = Prefect `ProcessPoolTaskRunner(max_workers=2)`, "1 at a
time" = `ThreadPoolTaskRunner(max_workers=1)`, "Dask" = prefect-dask's `DaskTaskRunner` on a
`LocalCluster` of 2 worker processes, 1 thread each, started inside the flow; each config
is a child run with autolog.
"""


if __name__ == "__main__":
    main()
