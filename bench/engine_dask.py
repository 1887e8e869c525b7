"""The Dask engine on tables larger than one process should hold: `make bench-dask`.

Writes bench/DASK.md (and bench/work/dask/results.json; `python bench/engine_dask.py
--render` writes the page again from it).

Workload: a synthetic binary classification table x 40 float32 features
(lineageflow.data.synthetic.make_classification_part: one seeded numpy
generator per file, so the generator never holds the table), written as
partitioned Parquet, 64 files, DVC-tracked as one directory in a git workspace
with a local DVC remote. xgboost ``hist``, TREES trees of depth 6. The Dask
engine runs a LocalCluster of 2 worker processes, 1 thread each, memory_limit
4GiB (``compute`` in the workspace's params.yaml, address null); the local
engine fits in the flow's process on both cores.

Every run is the training-pipeline flow in a fresh process (bench/pipeline_run.py,
as a worker starts it) against a running Prefect server and the workspace's
sqlite MLflow store. While it runs, this process samples with psutil the flow
process and every process under it (the LocalCluster's workers are its spawned
children) and reads each one's kernel high-water mark (VmHWM): peaks are each
process's own, never the sum of a tree.

1. 20M rows on Dask: does the run complete, and with what outcome
2. each Dask worker's peak RSS at 20M, against its 4 GiB limit
3. the flow process's own peak RSS at 20M (goal: at most 1 GiB)
4. 5M rows: Dask engine wall / local engine wall on the same workspace files
   (goal: at most 1.3x); reps interleaved, the order alternating
5. the local engine's peak RSS at 0.5M, 1M, 2M and 5M rows, and at 20M as the
   least-squares line through them (the local engine is not run at 20M)

No timed assertions: figures, and ratios measured in this one run.

    .venv/bin/python bench/engine_dask.py     # BENCH_REPS=1 by default; ~10 min on 2 cores
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

ROOT = HERE.parent
WORK = ROOT / "bench" / "work" / "dask"
RESULTS = WORK / "results.json"
PY = sys.executable
REPS = int(os.environ.get("BENCH_REPS", "1"))
FEATURES = 40
FILES = int(os.environ.get("BENCH_DASK_FILES", "64"))
COMPARE_ROWS = int(os.environ.get("BENCH_DASK_COMPARE_ROWS", "5000000"))
BIG_ROWS = int(os.environ.get("BENCH_DASK_BIG_ROWS", "20000000"))
LOCAL_ROWS = tuple(
    int(n)
    for n in os.environ.get("BENCH_DASK_LOCAL_ROWS", "500000,1000000,2000000").split(
        ","
    )
)
TREES = int(os.environ.get("BENCH_DASK_TREES", "100"))
XGB = {"n_estimators": TREES, "max_depth": 6, "learning_rate": 0.1}
COMPUTE = {
    "engine": "local",
    "address": None,
    "workers": 2,
    "threads_per_worker": 1,
    "memory_limit": "4GiB",
}
LIMIT_MIB = 4096  # COMPUTE["memory_limit"]
FLOW_GOAL_MIB = 1024
RATIO_GOAL = 1.3
SAMPLE_EVERY = 0.2  # seconds
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
}


def log(msg: str) -> None:
    print(f"[bench-dask {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20


# ------------------------------------------------------------------ workspaces


def make_workspace(base: Path, rows: int, seed: int) -> Path:
    """A git workspace with a local DVC remote and ``rows`` x 40 float32 rows as
    FILES Parquet files in data/train, tracked by DVC as one directory and
    pushed; params.yaml with the compute section (engine local to begin with)."""
    import yaml
    from run import commit_data

    from flows.demo import DemoPaths, default_params_text, init_workspace
    from lineageflow.data.synthetic import make_classification_part

    paths = DemoPaths(base)
    base.mkdir(parents=True)
    params = yaml.safe_load(default_params_text())
    params["data"] = {"datasets": ["data/train"], "target": "churned", "remote": None}
    params["train"]["xgboost"].update(XGB)
    params["register"]["model_name"] = f"bench-dask-{rows}"
    params["evaluate"]["threshold"] = 0.5
    # the order in which the engines run decides nothing: a later run is
    # promoted even when its holdout AUC is a hair under the earlier one's
    params["evaluate"]["champion_tolerance"] = 1.0
    params["compute"] = dict(COMPUTE)
    init_workspace(paths, params_text=yaml.safe_dump(params, sort_keys=False))
    ws = paths.workspace
    data = ws / "data" / "train"
    data.mkdir(parents=True)
    base_rows, extra = divmod(rows, FILES)
    for i in range(FILES):
        n = base_rows + (i < extra)
        frame = make_classification_part(n, FEATURES, seed, i)
        frame.to_parquet(
            data / f"part-{i:03d}.parquet", index=False, use_dictionary=False
        )
        del frame
    commit_data(ws, "data/train")
    return ws


def use_engine(ws: Path, name: str) -> None:
    """compute.engine in params.yaml, committed, as a user switches it."""
    import yaml
    from run import set_params

    now = yaml.safe_load((ws / "params.yaml").read_text())["compute"]["engine"]
    if now != name:
        set_params(ws, f"Train on the {name} engine", **{"compute.engine": name})


# ------------------------------------------------------------------ measuring


def vm_hwm(pid: int) -> int | None:
    """The process's peak resident set so far (VmHWM), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


class Sampler(threading.Thread):
    """The flow process and every process under it, every SAMPLE_EVERY s: the
    largest RSS seen and the last VmHWM read of each, a timeline, and the size
    of the Dask workers' spill directory."""

    def __init__(self, pid: int, scratch: Path):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.scratch = scratch
        self.stop = threading.Event()
        self.procs: dict[int, dict] = {}
        self.timeline: list[tuple] = []  # (epoch s, {pid: rss bytes})
        self.spill_bytes = 0

    def run(self) -> None:
        import psutil

        last_spill = 0.0
        while not self.stop.is_set():
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            now, rss = time.time(), {}
            for p in tree:
                try:
                    r = p.memory_info().rss
                    info = self.procs.get(p.pid)
                    if info is None:
                        info = self.procs[p.pid] = {
                            "pid": p.pid,
                            "ppid": p.ppid(),
                            "cmd": " ".join(p.cmdline())[:300],
                            "create_time": p.create_time(),
                            "rss": 0,
                            "hwm": 0,
                        }
                    info["rss"] = max(info["rss"], r)
                    info["last_seen"] = now
                    info["hwm"] = max(info["hwm"], vm_hwm(p.pid) or 0)
                    rss[p.pid] = r
                except psutil.Error:
                    continue
            self.timeline.append((now, rss))
            if now - last_spill >= 1.0 and self.scratch.exists():
                self.spill_bytes = max(self.spill_bytes, dir_bytes(self.scratch))
                last_spill = now
            self.stop.wait(SAMPLE_EVERY)

    def leftovers(self) -> list[int]:
        """Processes of the run still alive after it ended (none, normally)."""
        import psutil

        alive = []
        for pid, info in self.procs.items():
            if pid == self.root.pid:
                continue
            try:
                if psutil.Process(pid).create_time() == info["create_time"]:
                    alive.append(pid)
            except psutil.Error:
                pass
        return alive


def is_worker(info: dict) -> bool:
    """A Dask worker: a process multiprocessing spawned for the LocalCluster's
    nannies (the only spawned children of the flow process)."""
    return "spawn_main" in info["cmd"]


def flow_run(ws: Path, env: dict, label: str) -> dict:
    """The training-pipeline flow in a fresh process; its wall time, outcome,
    stage timings and the peak memory of it and of each process under it."""
    scratch = WORK / "scratch" / label
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = dict(env, DASK_TEMPORARY_DIRECTORY=str(scratch))
    out_path, err_path = WORK / f"{label}.out", WORK / f"{label}.err"
    cmd = [PY, str(HERE / "pipeline_run.py"), "train", str(ws), "--no-reuse"]
    load = os.getloadavg()[0]  # the machine is shared: what else ran
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        sampler = Sampler(proc.pid, scratch)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            sampler.stop.set()
            sampler.join(10)
        wall = time.perf_counter() - t0
    stop_leftovers(sampler)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = out_path.read_text(), err_path.read_text()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")]
    data = json.loads(lines[-1].removeprefix("BENCH_JSON ")) if lines else {}
    flow = sampler.procs.get(proc.pid, {"rss": 0, "hwm": 0})
    others = [i for pid, i in sampler.procs.items() if pid != proc.pid]
    workers = [i for i in others if is_worker(i)]
    res = {
        "label": label,
        "wall": wall,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "returncode": proc.returncode,
        "error": "" if proc.returncode == 0 else _last_error(stderr),
        "data": data,
        "flow_peak_mib": mib(max(flow["hwm"], flow["rss"])),
        "flow_sampled_mib": mib(flow["rss"]),
        # wait4's ru_maxrss: the flow's own or any waited-for child's (a worker's)
        "tree_maxrss_mib": usage.ru_maxrss / 1024,
        "workers": [
            {
                "pid": i["pid"],
                "peak_mib": mib(max(i["hwm"], i["rss"])),
                "sampled_mib": mib(i["rss"]),
            }
            for i in sorted(workers, key=lambda i: i["create_time"])
        ],
        "others": [
            {"cmd": i["cmd"][:120], "peak_mib": mib(max(i["hwm"], i["rss"]))}
            for i in others
            if not is_worker(i)
        ],
        # every process seen under the flow: when it started and was last seen
        # (s after the flow process started), its parent and command line
        "procs": [
            {
                "pid": i["pid"],
                "ppid": i["ppid"],
                "cmd": i["cmd"][:200],
                "from_s": i["create_time"] - flow.get("create_time", 0.0),
                "to_s": i.get("last_seen", 0.0) - flow.get("create_time", 0.0),
                "peak_mib": mib(max(i["hwm"], i["rss"])),
            }
            for i in sorted(sampler.procs.values(), key=lambda i: i["create_time"])
        ],
        "spill_mib": mib(sampler.spill_bytes),
        "samples": len(sampler.timeline),
        # about once a second: (s after start, flow MiB, each worker's MiB)
        "timeline": [
            (
                round(at - sampler.timeline[0][0], 1),
                round(mib(rss.get(proc.pid, 0))),
                *(round(mib(rss.get(w["pid"], 0))) for w in workers),
            )
            for at, rss in sampler.timeline[:: max(1, round(1 / SAMPLE_EVERY))]
        ],
    }
    stages = stage_windows(ws, data)
    res["stages"] = stages
    res["peaks_in"] = peak_stages(sampler, proc.pid, workers, stages)
    shutil.rmtree(scratch, ignore_errors=True)
    return res


def stop_leftovers(sampler: Sampler) -> None:
    """What the flow started and left running, ours to stop by PID: given 10 s
    to go by itself (multiprocessing's resource tracker leaves just after its
    parent), then SIGTERM, then SIGKILL."""
    deadline = time.monotonic() + 10
    while sampler.leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = sampler.leftovers()
        for pid in pids:
            log(f"sending {sig.name} to pid {pid}, left running by the flow")
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        if pids:
            time.sleep(3)


def _last_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    said = [ln for ln in lines if "error" in ln.lower()]
    return (said or lines or ["(no output)"])[-1][:400]


def stage_windows(ws: Path, data: dict) -> dict[str, tuple[float, float]]:
    """Each stage's child run's (start, end), epoch seconds, from MLflow."""
    run_id = (data.get("summary") or {}).get("run_id")
    if not run_id:
        return {}
    from mlflow import MlflowClient

    from lineageflow.tags import TAG_STAGE
    from lineageflow.workspace import open_workspace

    c = MlflowClient(open_workspace(ws).tracking_uri())
    kids = c.search_runs(
        [data["summary"]["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
    )
    return {
        k.data.tags.get(TAG_STAGE, k.info.run_name): (
            k.info.start_time / 1e3,
            (k.info.end_time or k.info.start_time) / 1e3,
        )
        for k in kids
    }


def peak_stages(sampler: Sampler, flow_pid: int, workers: list, stages: dict) -> dict:
    """In which stage's run each process's sampled RSS was highest."""

    def where(pid: int) -> str:
        best = max(
            ((rss.get(pid, 0), t) for t, rss in sampler.timeline), default=(0, 0)
        )
        for name, (a, b) in stages.items():
            if a <= best[1] <= b:
                return name
        return "between stages"

    out = {"flow": where(flow_pid)}
    for n, w in enumerate(sorted(workers, key=lambda i: i["create_time"])):
        out[f"worker {n}"] = where(w["pid"])
    return out


# ------------------------------------------------------------------ the run


def child_env() -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))
    }
    env.update(TELEMETRY_OFF)
    env.update(
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        PREFECT_HOME=str(WORK / "prefect-home"),
        PREFECT_LOGGING_LEVEL="WARNING",
        # this checkout's code, whichever checkout the venv was installed from
        PYTHONPATH=os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    )
    return env


PARTS = ("compare", "local", "big")


def main() -> None:
    """Every part (BENCH_DASK_PARTS, default all: compare,local,big); a subset
    runs again into the last run's results.json, the rest kept as they were."""
    os.environ.update(TELEMETRY_OFF)  # DVC and Prefect in this process too
    from run import PrefectServer

    parts = [p for p in os.environ.get("BENCH_DASK_PARTS", ",".join(PARTS)).split(",")]
    if set(parts) - set(PARTS):
        sys.exit(f"BENCH_DASK_PARTS: choose from {', '.join(PARTS)}")
    results: dict = {
        "reps": REPS,
        "files": FILES,
        "trees": TREES,
        "xgb": XGB,
        "compute": COMPUTE | {"engine": "dask"},
        "rows": {"compare": COMPARE_ROWS, "big": BIG_ROWS, "local": list(LOCAL_ROWS)},
        "generate": {},
        "parts": {},
    }
    if set(parts) == set(PARTS):
        shutil.rmtree(WORK, ignore_errors=True)
    else:
        results = json.loads(RESULTS.read_text())
    (WORK / "prefect-home").mkdir(parents=True, exist_ok=True)
    results["machine"] = machine()
    env = child_env()
    os.environ["PREFECT_HOME"] = env["PREFECT_HOME"]
    keep = os.environ.get("BENCH_KEEP") == "1"

    def workspace(rows: int, seed: int) -> Path:
        log(
            f"writing {rows:,} rows x {FEATURES} as {FILES} Parquet files, dvc add, push"
        )
        t0 = time.perf_counter()
        base = WORK / f"ws-{rows}"
        shutil.rmtree(base, ignore_errors=True)
        ws = make_workspace(base, rows, seed)
        results["generate"][str(rows)] = {
            "seconds": time.perf_counter() - t0,
            "mib": mib(dir_bytes(ws / "data" / "train")),
        }
        return ws

    def drop(ws: Path) -> None:
        if not keep:  # the data, its DVC cache and remote: gigabytes
            shutil.rmtree(ws.parent, ignore_errors=True)  # WORK/ws-N

    def compare() -> dict:
        """4. and 5.: the same workspace files on both engines, interleaved,
        the order alternating from rep to rep."""
        ws = workspace(COMPARE_ROWS, seed=5)
        out: dict[str, list] = {"local": [], "dask": []}
        for rep in range(REPS):
            order = ("local", "dask") if rep % 2 == 0 else ("dask", "local")
            for name in order:
                use_engine(ws, name)
                log(f"{COMPARE_ROWS:,} rows, rep {rep + 1}/{REPS}: {name} engine")
                out[name].append(
                    flow_run(ws, env, f"{name}-{COMPARE_ROWS}-rep{rep + 1}")
                )
                say(out[name][-1])
        drop(ws)
        return out

    def local() -> dict:
        """5.: the local engine's memory against rows."""
        out: dict[str, list] = {str(n): [] for n in LOCAL_ROWS}
        spaces = {n: workspace(n, seed=10 + i) for i, n in enumerate(LOCAL_ROWS)}
        for rep in range(REPS):
            for n in LOCAL_ROWS:
                log(f"{n:,} rows, rep {rep + 1}/{REPS}: local engine")
                out[str(n)].append(flow_run(spaces[n], env, f"local-{n}-rep{rep + 1}"))
                say(out[str(n)][-1])
        for ws in spaces.values():
            drop(ws)
        return out

    def big() -> list:
        """1.-3.: BIG_ROWS on Dask."""
        ws = workspace(BIG_ROWS, seed=20)
        use_engine(ws, "dask")
        out = []
        for rep in range(REPS):
            log(f"{BIG_ROWS:,} rows, rep {rep + 1}/{REPS}: dask engine")
            out.append(flow_run(ws, env, f"dask-{BIG_ROWS}-rep{rep + 1}"))
            say(out[-1])
        drop(ws)
        return out

    server = PrefectServer(WORK / "prefect-home")
    env["PREFECT_API_URL"] = server.api
    run_part = {"compare": compare, "local": local, "big": big}
    key = {"compare": "compare", "local": "local_scaling", "big": "big"}
    try:
        for part in PARTS:
            if part in parts:
                t0 = time.perf_counter()
                results[key[part]] = run_part[part]()
                results["parts"][part] = {
                    "seconds": time.perf_counter() - t0,
                    "commit": results["machine"]["commit"],
                    "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                }
    finally:
        server.stop()
    results["elapsed"] = sum(p["seconds"] for p in results["parts"].values())
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    text = render(results)
    (HERE / "DASK.md").write_text(text)
    print(text)


def say(r: dict) -> None:
    s = (r["data"].get("summary") or {}) if r["data"] else {}
    ws = ", ".join(f"{w['peak_mib']:.0f}" for w in r["workers"]) or "-"
    log(
        f"  {r['label']}: {r['wall']:.1f} s, exit {r['returncode']}, "
        f"stage {s.get('stage', '-')}, flow peak {r['flow_peak_mib']:.0f} MiB, "
        f"workers {ws} MiB, spilled {r['spill_mib']:.0f} MiB"
        + (f"; {r['error']}" if r["error"] else "")
    )


def machine() -> dict:
    from importlib.metadata import version

    import psutil

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    libs = (
        "dask",
        "distributed",
        "xgboost",
        "pandas",
        "numpy",
        "pyarrow",
        "mlflow",
        "prefect",
        "dvc",
    )
    return {
        "cores": os.cpu_count(),
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "cpu": cpu,
        "arch": platform.machine(),
        "python": platform.python_version(),
        "versions": {lib: version(lib) for lib in libs},
        "commit": commit,
    }


# ------------------------------------------------------------------ the page


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def short(n: int) -> str:
    """20000000 -> 20M, 500000 -> 0.5M, 50000 -> 50k."""
    return f"{n / 1e6:g}M" if n >= 100_000 else f"{n / 1e3:g}k"


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares (intercept, slope) through (x, y) points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - slope * mx, slope


def summary(r: dict) -> dict:
    return r["data"].get("summary") or {} if r["data"] else {}


def outcome(r: dict) -> str:
    if r["returncode"] != 0:
        return f"failed: {r['error']}"
    s = summary(r)
    auc = (s.get("metrics") or {}).get("roc_auc")
    auc_s = f", holdout AUC {auc:.4f}" if auc is not None else ""
    return f"v{s.get('version')} {s.get('stage')}{auc_s}"


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


STAGE_KEYS = ("setup", "pull_data", "prepare", "train", "evaluate", "lineage")
STAGE_KEYS += ("register",)


def figures(res: dict) -> dict:
    """Everything the page states, computed from the run's results."""
    cmp = res.get("compare", {})
    local, dask = cmp.get("local", []), cmp.get("dask", [])
    big = res.get("big", [])
    ok = [
        (d, lo)
        for d, lo in zip(dask, local, strict=False)
        if d["returncode"] == 0 and lo["returncode"] == 0
    ]
    ratios = [d["wall"] / lo["wall"] for d, lo in ok]
    points = [
        (int(n), med([r["flow_peak_mib"] for r in rs]))
        for n, rs in res.get("local_scaling", {}).items()
    ]
    if local:  # the compared size, on the local engine, is one more point
        points.append(
            (res["rows"]["compare"], med([r["flow_peak_mib"] for r in local]))
        )
    points.sort()
    a, b = fit_line(points) if len(points) > 1 else (float("nan"), float("nan"))
    big_workers = [w["peak_mib"] for r in big for w in r["workers"]]
    big_flow = [r["flow_peak_mib"] for r in big]
    return {
        "local": local,
        "dask": dask,
        "big": big,
        "big_done": bool(big) and all(r["returncode"] == 0 for r in big),
        "ratios": ratios,
        "ratio": med(ratios),
        "points": points,
        "a": a,
        "b": b,
        "at_big": a + b * res["rows"]["big"],
        "big_workers": big_workers,
        "big_flow": big_flow,
        "workers_ok": bool(big_workers) and max(big_workers) < LIMIT_MIB,
        "flow_ok": bool(big_flow) and max(big_flow) <= FLOW_GOAL_MIB,
    }


def render(res: dict) -> str:
    m, v, f = res["machine"], res["machine"]["versions"], figures(res)
    n_cmp, n_big = res["rows"]["compare"], res["rows"]["big"]
    S, C = short(n_big), short(n_cmp)
    big = f["big"]

    def workers(r):
        return " / ".join(f"{w['peak_mib']:,.0f}" for w in r["workers"]) or "–"

    runs = []
    for engine, rows, rs in (
        ("local", n_cmp, f["local"]),
        ("dask", n_cmp, f["dask"]),
        ("dask", n_big, big),
    ):
        for r in rs:
            fit = r["data"].get("train.fit_seconds")
            runs.append(
                f"| {short(rows)} | {engine} | {r['wall']:.1f} | "
                + (f"{fit:.1f}" if fit is not None else "–")
                + f" | {r['flow_peak_mib']:,.0f} | {workers(r)} | "
                f"{r['spill_mib']:,.0f} | {r['load_before']:.1f} | {outcome(r)} |"
            )

    def stage_cells(rs):
        cells = []
        for k in STAGE_KEYS:
            vals = [
                summary(r)["timings"][k]
                for r in rs
                if k in summary(r).get("timings", {})
            ]
            cells.append(f"{med(vals):.1f}" if vals else "–")
        rest = [
            r["wall"] - sum(summary(r)["timings"].values()) for r in rs if summary(r)
        ]
        cells.append(f"{med(rest):.1f}" if rest else "–")
        return " | ".join(cells)

    breakdown = "\n".join(
        f"| {engine} {short(rows)} | {stage_cells(rs)} |"
        for engine, rows, rs in (
            ("local", n_cmp, f["local"]),
            ("dask", n_cmp, f["dask"]),
            ("dask", n_big, big),
        )
        if rs
    )
    scale_rows = "\n".join(f"| {short(n)} | {y:,.0f} |" for n, y in f["points"])
    peaks_in = ", ".join(
        f"{k} in `{where}`"
        for k, where in (big[0].get("peaks_in", {}) if big else {}).items()
    )
    n_workers = sorted({len(r["workers"]) for r in big})
    gen = ", ".join(
        f"{short(int(k))} rows {g['mib']:,.0f} MiB in {g['seconds']:.0f} s"
        for k, g in sorted(res["generate"].items(), key=lambda kv: int(kv[0]))
    )
    per_worker = n_big / res["compute"]["workers"]
    f64 = n_big * FEATURES * 8
    trees_note = (
        "" if res["trees"] == 100 else f" ({res['trees']} trees rather than 100)"
    )
    goals = [
        (
            f"1. {S} rows complete on Dask",
            "; ".join(outcome(r) for r in big) or "not run",
            "completes",
            met(f["big_done"]),
        ),
        (
            f"2. each worker's peak RSS at {S}",
            (", ".join(f"{w:,.0f}" for w in f["big_workers"]) or "–") + " MiB",
            f"under its {LIMIT_MIB:,} MiB limit",
            met(f["workers_ok"]),
        ),
        (
            f"3. the flow process's own peak RSS at {S}",
            (", ".join(f"{x:,.0f}" for x in f["big_flow"]) or "–") + " MiB",
            f"≤ {FLOW_GOAL_MIB:,} MiB",
            met(f["flow_ok"]),
        ),
        (
            f"4. wall at {C} rows, Dask / local engine",
            f"**{f['ratio']:.2f}x**"
            + (
                f" (reps {', '.join(f'{x:.2f}' for x in f['ratios'])})"
                if len(f["ratios"]) > 1
                else ""
            ),
            f"≤ {RATIO_GOAL}x",
            met(f["ratio"] <= RATIO_GOAL),
        ),
        (
            f"5. the local engine's peak RSS at {S}, extrapolated",
            f"**{f['at_big'] / 1024:,.1f} GiB** (not run)",
            f"(this machine: {m['ram_gib']:.1f} GiB)",
            "stated",
        ),
    ]
    goal_rows = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in goals)
    commits: dict[str, list] = {}
    for part, p in res.get("parts", {}).items():
        commits.setdefault(p["commit"], []).append(part)
    code = (
        f"lineageflow {next(iter(commits), m['commit'])}"
        if len(commits) <= 1
        else "lineageflow "
        + ", ".join(f"{c} ({', '.join(ps)})" for c, ps in commits.items())
    )
    return f"""# The Dask engine: {S} rows on two 4 GiB workers

Measured {res["finished"]} by `bench/engine_dask.py` (`make bench-dask`), BENCH_REPS={res["reps"]},
{code}; the whole bench took {res["elapsed"] / 60:.1f} min. Machine:
{m["cores"]} cores ({m["cpu"] or m["arch"]}), {m["ram_gib"]:.1f} GiB RAM, shared (the load
column is the 1-minute load average as each run started). Python {m["python"]}, dask
{v["dask"]}, distributed {v["distributed"]}, xgboost {v["xgboost"]}, pandas {v["pandas"]},
numpy {v["numpy"]}, pyarrow {v["pyarrow"]}, mlflow {v["mlflow"]}, prefect {v["prefect"]},
dvc {v["dvc"]}.

**Workload.** A synthetic binary classification table
(`lineageflow/data/synthetic.py:make_classification_part`), 40 features and an int64
label, written as **{res["files"]} Parquet files** (snappy, no dictionary), DVC-tracked as
one directory (`data/train`) in a git workspace with a local DVC remote, committed and
pushed ({gen}: written, `dvc add`ed and pushed). Each file comes from its own seeded
numpy generator, so the generator never holds the table; each size is its own draw
(its own seed, so its own ground truth: AUCs differ between sizes). The features are
**float32**: at {S} x {FEATURES} the float64 features alone are {f64 / 1e9:.1f} GB,
{f64 / 2 / 1e9:.1f} GB per worker as read, {f64 / 2 / 2**32:.0%} of a 4 GiB worker before
the split's copies sit beside them (Dask spills from 60% of the limit, pauses a worker
at 80% and restarts it at 95%); as float32 they are {f64 / 2e9:.1f} GB, {f64 / 4 / 1e9:.1f} GB
per worker ({per_worker / 1e6:g}M rows). xgboost `hist`, {res["trees"]} trees of depth
{res["xgb"]["max_depth"]}, learning rate {res["xgb"]["learning_rate"]}{trees_note}.

- **Dask engine**: `compute: {{engine: dask, address: null, workers: 2,
  threads_per_worker: 1, memory_limit: 4GiB}}` in the workspace's params.yaml: a
  LocalCluster that the run starts and stops.
- **Local engine**: the same workspace and files with `compute.engine: local`
  (committed, as a user switches it); the fit uses both cores in the flow's process.

Every run is the training-pipeline flow in a fresh process (`bench/pipeline_run.py
train WS --no-reuse`, as a worker starts it) against a running Prefect server and the
workspace's sqlite MLflow store, to the end: evaluation over every holdout row,
registration, the checks and promotion (`champion_tolerance: 1.0`, so the order in
which the engines run decides no promotion). Peak RSS is each process's own kernel
high-water mark (VmHWM), read by psutil sampling, every {SAMPLE_EVERY} s, of the flow
process and every process under it: the LocalCluster's workers are the flow process's
spawned children. No figure is the sum of a process tree, nor the flow's `ru_maxrss`
(that counts a waited-for worker's). Spilled: the most the workers' spill directory held.

## Goals

| what | measured | goal | |
|---|---|---|---|
{goal_rows}

## Runs

| rows | engine | wall (s) | fit (s) | flow process peak (MiB) | each worker's peak (MiB) | spilled (MiB) | load | outcome |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(runs)}

Where the time goes (median seconds, the flow's own stage clock; "rest" is the
process's wall outside its stages: interpreter start and imports, opening the engine
— the LocalCluster's start and stop — and the Prefect flow run's own bookkeeping):

| run | setup | pull_data | prepare | train | evaluate | lineage | register | rest |
|---|---|---|---|---|---|---|---|---|
{breakdown}

At {S} each process's highest sampled RSS fell in these stages' runs: {peaks_in or "–"}.
Worker processes seen under the flow: {", ".join(map(str, n_workers)) or "–"} (a worker its
nanny restarted would be one more).

## The local engine's memory against rows

| rows | flow process peak (MiB) |
|---|---|
{scale_rows}

Least squares through these: {f["a"]:,.0f} MiB + {f["b"] * 1e6:,.0f} MiB per million rows,
so **{f["at_big"] / 1024:,.1f} GiB at {S} rows** on the local engine (not run).

## What this shows

{what_it_shows(res, f)}
"""


def what_it_shows(res: dict, f: dict) -> str:
    """The page's last section: bullets, each a sentence computed from figures."""
    m, big = res["machine"], f["big"]
    n_big, n_cmp = res["rows"]["big"], res["rows"]["compare"]
    S, C = short(n_big), short(n_cmp)
    out = []
    if f["big_done"]:
        worst = max(f["big_workers"])
        out.append(
            f"The {S}-row table trains on the Dask engine, is evaluated over every "
            f"holdout row and ends in {summary(big[0]).get('stage')}. "
            + (
                f"No worker went above {worst:,.0f} MiB ({worst / LIMIT_MIB:.0%} of "
                f"its {LIMIT_MIB:,} MiB limit)"
                if f["workers_ok"]
                else f"A worker reached {worst:,.0f} MiB against its "
                f"{LIMIT_MIB:,} MiB limit"
            )
            + (
                f", and the flow's own process stayed at {max(f['big_flow']):,.0f} MiB"
                " (per-partition summaries, row hashes streamed one partition at a"
                " time, the holdout's predictions: never the table)."
                if f["flow_ok"]
                else f"; the flow's own process reached {max(f['big_flow']):,.0f} MiB, "
                f"over the {FLOW_GOAL_MIB:,} MiB goal."
            )
        )
    elif big:
        out.append(f"The {S}-row run on Dask did not complete: {big[0]['error']}.")
    spill = max((r["spill_mib"] for r in big), default=0.0)
    table = res["generate"].get(str(n_big), {}).get("mib")
    if spill and table:

        def per_m(rs, rows):
            vals = [summary(r)["timings"]["prepare"] for r in rs if summary(r)]
            return med(vals) / (rows / 1e6) if vals else float("nan")

        out.append(
            f"It spilled: the workers' spill directory held up to {spill / 1024:,.1f} "
            f"GiB at once, {spill / table:.1f}x the whole table's {table / 1024:,.1f} "
            "GiB of Parquet, so the same rows went to disk more than once while they "
            "stayed in memory (Dask's memory target counts each key's size, and the "
            "engine's keys share frames: a partition's split and the sides picked from "
            "it, the sides and their cast for the fit, xgboost's per-partition "
            "dicts). It cost time, not the run: prepare took "
            f"{per_m(big, n_big):.1f} s per million rows against "
            f"{per_m(f['dask'], n_cmp):.1f} s at {C}, where nothing spilled."
        )
    flows = [r for r in f["dask"] if r["returncode"] == 0]
    if f["big_done"] and flows:
        lo, hi = med([r["flow_peak_mib"] for r in flows]), max(f["big_flow"])
        slope = (hi - lo) / ((n_big - n_cmp) / 1e6)
        where = big[0].get("peaks_in", {}).get("flow", "?")
        cross = n_big / 1e6 + (FLOW_GOAL_MIB - hi) / slope if slope > 0 else None
        out.append(
            f"The flow's own peak does grow with rows: {lo:,.0f} MiB at {C}, "
            f"{hi:,.0f} at {S} (in `{where}` there), {slope:,.0f} MiB per million "
            "rows; on those two points it would pass "
            f"{FLOW_GOAL_MIB:,} MiB near {cross:,.0f}M rows."
            if cross
            else f"The flow's own peak: {lo:,.0f} MiB at {C}, {hi:,.0f} at {S}."
        )
    if f["at_big"] == f["at_big"]:  # not NaN
        biggest = max(f["big_workers"] + f["big_flow"], default=float("nan"))
        out.append(
            "The local engine's peak grows linearly with rows, "
            f"{f['b'] * 1e6:,.0f} MiB per million: about {f['at_big'] / 1024:,.1f} GiB "
            f"in one process for the {S}-row table. That would fit this "
            f"{m['ram_gib']:.1f} GiB machine, but not a 4 GiB worker; on Dask the "
            f"largest process held {biggest / 1024:,.1f} GiB."
        )
    if f["ratio"] == f["ratio"]:
        verdict = "within" if f["ratio"] <= RATIO_GOAL else "outside"
        reps = len(f["ratios"])
        out.append(
            f"Where both fit, at {C} rows, the Dask engine took {f['ratio']:.2f}x the "
            f"local engine's wall time on the same two cores, {verdict} the "
            f"{RATIO_GOAL}x goal ("
            + (
                "one pair of runs"
                if reps == 1
                else f"median of {reps} interleaved pairs"
            )
            + " on a shared machine)."
        )
    return "\n".join(f"- {s}" for s in out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--render"]:  # again, from the last run's figures
        text = render(json.loads(RESULTS.read_text()))
        (HERE / "DASK.md").write_text(text)
        print(text)
    else:
        main()
