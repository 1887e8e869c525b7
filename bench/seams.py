"""The pipeline before and after a code change, in one interleaved run:
`make bench-seams`. Writes bench/SEAMS.md and bench/work/seams.json.

BEFORE is the commit SEAMS_BEFORE (default 980e375, the last commit before the
structural seams), checked out as a throwaway clone under bench/work/seams/;
AFTER is the current checkout at its HEAD (see below). Each variant's
runs start with that code first on PYTHONPATH (the editable install's finder
comes after it, as flows/pinned.py relies on), and each variant trains in a
workspace of its own, made by its own code, so the MLflow stores, DVC caches and
model registries never meet. Before any timing a probe in the same environment
prints where `lineageflow`, `flows` and `tasks` are imported from, and after the
runs every measured run's `lineage.pipeline_commit` tag must be the variant's
commit, and both variants must have ended every rep the same way (registered and
promoted, or identical to Staging): the script fails loudly otherwise.
The current checkout's pipeline code must be committed: lineageflow refuses to
promote a model trained from uncommitted code, so AFTER would take another path.

Two measures, each as bench/run.py takes it; per rep the bare script, BEFORE and
AFTER run in rotating order (rep 1: bare, before, after; rep 2: before, after,
bare; ...) so drift hits all three:

1. overhead      the whole training_pipeline in a fresh process
                 (bench/pipeline_run.py, `--no-reuse`) against a running Prefect
                 server on 127.0.0.1 and the workspace's sqlite MLflow store, on
                 BENCH_ROWS rows x 40 features, xgboost with bench/run.py's XGB;
                 against bench/bare.py on the same CSV.
2. default mode  `lineageflow train WORKSPACE --no-reuse` with no PREFECT_API_URL
                 (what a new user gets: the local server lineageflow starts, one
                 PREFECT_HOME per variant, so each variant's first rep pays its own
                 server start), on the demo's size (bench/run.py's DEFAULT_ROWS,
                 DEFAULT_XGB); against bench/bare.py on the same CSV.

Reported: the median process wall of each, and the medians of the per-rep
ratios before/bare, after/bare and after/before (each taken within one rep).

Environment (all optional):
  BENCH_REPS          reps of each measure (default 3)
  BENCH_ROWS          rows of the overhead workload (default 500000)
  SEAMS_BEFORE        the BEFORE commit (default 980e375)
  SEAMS_DEFAULT_ROWS  rows of the default-mode workload (default DEFAULT_ROWS)
  SEAMS_TREES         n_estimators of both workloads: for a quick check only

`python bench/seams.py --render` writes bench/SEAMS.md again from
bench/work/seams.json. Processes it starts (the Prefect server, each variant's
local server and its idle watcher) are stopped by PID before it exits.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from run import (
    DEFAULT_ROWS,
    DEFAULT_XGB,
    PY,
    ROOT,
    WORK,
    XGB,
    PrefectServer,
    commit_data,
    log,
    make_workspace,
    run_json,
    run_wall,
)

SEAMS = WORK / "seams"
RAW = WORK / "seams.json"
REPORT = ROOT / "bench" / "SEAMS.md"
REPS = int(os.environ.get("BENCH_REPS", "3"))
ROWS = int(os.environ.get("BENCH_ROWS", "500000"))
BEFORE = os.environ.get("SEAMS_BEFORE", "980e375")
D_ROWS = int(os.environ.get("SEAMS_DEFAULT_ROWS", str(DEFAULT_ROWS)))
TREES = os.environ.get("SEAMS_TREES")
BIG_XGB = dict(XGB, **({"n_estimators": int(TREES)} if TREES else {}))
D_XGB = dict(DEFAULT_XGB, **({"n_estimators": int(TREES)} if TREES else {}))
VARIANTS = ("before", "after")
KINDS = ("bare", *VARIANTS)
CLI = str(Path(PY).parent / "lineageflow")
# what the probe imports: every package the pipeline's code lives in
PROBE = (
    "import json, flows, flows.training, lineageflow, tasks; "
    "print(json.dumps({m.__name__: m.__file__ for m in "
    "(flows, flows.training, lineageflow, tasks)}))"
)
SERVER_MARK = b"prefect.server.api.server:create_app"  # a Prefect server's cmdline
WATCHER_MARK = b"lineageflow.ops.localserver"  # its idle watcher's


PIPELINE_DIRS = ("lineageflow", "flows", "tasks", "deployments")


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def checkout_before(dest: Path) -> str:
    """A clone of this repository at BEFORE (sharing its objects, so nothing is
    copied and the repository's own worktree list is not touched); its commit."""
    sha = git("rev-parse", "--verify", f"{BEFORE}^{{commit}}")
    git("clone", "--quiet", "--shared", "--no-checkout", str(ROOT), str(dest))
    git("checkout", "--quiet", "--detach", sha, cwd=dest)
    return sha


def code_dirty(code: Path) -> list[str]:
    """Files under the pipeline's packages that differ from the commit (what
    lineageflow records as a dirty pipeline, which refuses promotion)."""
    out = git(
        "status",
        "--porcelain",
        "--",
        *PIPELINE_DIRS,
        "pyproject.toml",
        "constraints.txt",
        cwd=code,
    )
    return [ln[3:] for ln in out.splitlines() if ln.strip()]


def with_code(env: dict, code: Path) -> dict:
    return dict(env, PYTHONPATH=os.pathsep.join([str(code), *env_paths(env)]))


def env_paths(env: dict) -> list[str]:
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def child(cmd: list[str], env: dict, cwd: Path, timeout: float, what: str):
    """``cmd`` run to its end in ``env`` (no stdin, bounded); it must succeed."""
    proc = subprocess.run(
        cmd,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def probe(env: dict, code: Path) -> dict:
    """Where a child with this environment imports the pipeline from: under
    ``code``, or this fails. Run from SEAMS (no package there) so the current
    directory decides nothing."""
    proc = child([PY, "-c", PROBE], env, SEAMS, 300, f"the import probe for {code}")
    files = json.loads(proc.stdout.strip().splitlines()[-1])
    wrong = {
        m: f for m, f in files.items() if not Path(f).resolve().is_relative_to(code)
    }
    if wrong:
        raise RuntimeError(
            f"a child meant to run {code} imports the pipeline from elsewhere: {wrong}"
        )
    return files


def variant_workspace(env: dict, base: Path, name: str, xgb: dict, csv: Path) -> Path:
    """bench/run.py's workspace, made by the variant's own code (its default
    params), with a copy of ``csv`` committed to DVC: a child of this script
    with the variant's environment (--workspace below)."""
    cmd = [PY, __file__, "--workspace", str(base), name, json.dumps(xgb), str(csv)]
    child(cmd, env, ROOT, 900, f"making the workspace {base}")
    return base / "workspace"


def make_variant_workspace(base: Path, name: str, xgb: dict, csv: Path) -> None:
    ws = make_workspace(base, None, name, xgb)
    assert ws == base / "workspace", ws
    shutil.copyfile(csv, ws / "data" / "train.csv")
    commit_data(ws, "data/train.csv")


def rotation(i: int) -> list[str]:
    k = i % len(KINDS)
    return [*KINDS[k:], *KINDS[:k]]


CLI_RUN = re.compile(r"^run ([0-9a-f]{32}): \S+ (.+?);", re.M)


def cli_outcome(stdout: str) -> tuple[str, str]:
    """(run id, outcome) from `lineageflow train`'s summary line."""
    m = CLI_RUN.search(stdout)
    if not m:
        raise RuntimeError(f"no run summary in the CLI's output:\n{stdout}")
    return m.group(1), m.group(2)


def outcome(summary: dict) -> str:
    """How a run ended, in the CLI's words: new version and stage, or identical."""
    if summary.get("identical_to"):
        return (
            f"identical to v{summary['identical_to']} (already in Staging), "
            "nothing registered"
        )
    return f"v{summary['version']} -> {summary['stage']}"


def overhead(env: dict, codes: dict, csv: Path) -> dict:
    server = PrefectServer(SEAMS / "prefect-home")
    env = dict(
        env, PREFECT_API_URL=server.api, PREFECT_HOME=str(SEAMS / "prefect-home")
    )
    out: dict = {k: [] for k in KINDS} | {"order": [], "workspace": {}}
    try:
        for v in VARIANTS:
            log(f"overhead: workspace for {v}")
            out["workspace"][v] = str(
                variant_workspace(
                    with_code(env, codes[v]),
                    SEAMS / f"overhead-{v}",
                    f"seams-{v}",
                    BIG_XGB,
                    csv,
                )
            )
        for i in range(REPS):
            order = rotation(i)
            out["order"].append(order)
            for kind in order:
                log(f"overhead rep {i + 1}/{REPS}: {kind}")
                if kind == "bare":
                    cmd = [
                        PY,
                        "bench/bare.py",
                        str(csv),
                        "churned",
                        json.dumps(BIG_XGB),
                    ]
                    out[kind].append(run_json(cmd, env))
                    continue
                ws = out["workspace"][kind]
                cmd = [PY, "bench/pipeline_run.py", "train", ws, "--no-reuse"]
                wall, d = run_json(cmd, with_code(env, codes[kind]))
                s = d["summary"]
                d["run_id"], d["outcome"] = s["run_id"], outcome(s)
                out[kind].append((wall, d))
    finally:
        server.stop()
    return out


def default_mode(env: dict, codes: dict, csv: Path) -> dict:
    out: dict = {k: [] for k in KINDS} | {"order": [], "workspace": {}, "home": {}}
    envs = {}
    for v in VARIANTS:
        home = SEAMS / f"default-{v}" / "prefect-home"
        out["home"][v] = str(home)
        envs[v] = with_code(dict(env, PREFECT_HOME=str(home)), codes[v])
        log(f"default mode: workspace for {v}")
        out["workspace"][v] = str(
            variant_workspace(
                envs[v], SEAMS / f"default-{v}", f"seams-default-{v}", D_XGB, csv
            )
        )
    try:
        for i in range(REPS):
            order = rotation(i)
            out["order"].append(order)
            for kind in order:
                log(f"default mode rep {i + 1}/{REPS}: {kind}")
                if kind == "bare":
                    cmd = [PY, "bench/bare.py", str(csv), "churned", json.dumps(D_XGB)]
                    out[kind].append(run_json(cmd, env))
                    continue
                cmd = [CLI, "train", out["workspace"][kind], "--no-reuse"]
                wall, d = run_wall(cmd, envs[kind])
                d["run_id"], d["outcome"] = cli_outcome(d["stdout"])
                out[kind].append((wall, d))
    finally:
        out["stopped"] = {v: stop_local_server(envs[v]) for v in VARIANTS}
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ends(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _cmdline(pid):
            return True
        time.sleep(0.2)
    return not _cmdline(pid)


def _stop_pid(pid: int, mark: bytes) -> None:
    """SIGTERM, then SIGKILL, to ``pid`` while it is still the process we mean."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if mark not in _cmdline(pid):
            return
        os.kill(pid, sig)
        if _ends(pid, 20):
            return


def watchers(home: Path) -> list[int]:
    """The idle watchers of this PREFECT_HOME's local server (their cwd is it)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and WATCHER_MARK in _cmdline(int(p.name)):
            try:
                if Path(os.readlink(p / "cwd")) == home:
                    found.append(int(p.name))
            except OSError:
                pass
    return found


def stop_local_server(env: dict) -> dict:
    """`lineageflow server stop` with the variant's own code, then make sure by
    PID that the server and its idle watcher are gone."""
    home = Path(env["PREFECT_HOME"])
    try:
        pid = json.loads((home / "lineageflow-server.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        pid = None
    subprocess.run(
        [CLI, "server", "stop"], env=env, cwd=ROOT, capture_output=True, timeout=120
    )
    if pid and not _ends(pid, 20):
        _stop_pid(pid, SERVER_MARK)
    for w in watchers(home):
        if not _ends(w, 10):
            _stop_pid(w, WATCHER_MARK)
    left = [p for p in [pid, *watchers(home)] if p and _cmdline(p)]
    if left:
        raise RuntimeError(f"processes for {home} still running: {left}")
    return {"server_pid": pid, "left": left}


def verify(results: dict, shas: dict) -> dict:
    """Every measured run recorded its variant's commit, and both variants ended
    each rep the same way. Returns what was checked; raises on any mismatch."""
    from mlflow import MlflowClient

    checked: dict = {}
    for measure in ("overhead", "default"):
        m = results[measure]
        for v in VARIANTS:
            db = Path(m["workspace"][v]) / ".lineageflow" / "mlflow.db"
            c = MlflowClient(f"sqlite:///{db}")
            commits, dirty = set(), set()
            for _, d in m[v]:
                tags = c.get_run(d["run_id"]).data.tags
                commits.add(tags.get("lineage.pipeline_commit"))
                dirty.add(tags.get("lineage.pipeline_dirty"))
            if commits != {shas[v]}:
                raise RuntimeError(
                    f"{measure}: the {v} runs recorded pipeline commits {commits}, "
                    f"not {shas[v]}: they did not run the {v} code"
                )
            checked[f"{measure}.{v}"] = {"commit": shas[v], "dirty": sorted(dirty)}
        ends = {v: [d["outcome"] for _, d in m[v]] for v in VARIANTS}
        if ends["before"] != ends["after"]:
            raise RuntimeError(
                f"{measure}: the variants took different paths, rep by rep: {ends}"
            )
        checked[f"{measure}.outcomes"] = ends["after"]
    return checked


def main() -> None:
    sys.path.insert(0, str(ROOT))  # this process: the current checkout's code
    from lineageflow.data.synthetic import make_classification_frame

    t_start = time.perf_counter()
    shutil.rmtree(SEAMS, ignore_errors=True)
    (SEAMS / "prefect-home").mkdir(parents=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PREFECT_")) and k != "PYTHONPATH"
    }
    env.update(
        DO_NOT_TRACK="true",
        DVC_NO_ANALYTICS="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_TELEMETRY="false",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    codes = {"before": SEAMS / "before", "after": ROOT}
    shas = {
        "before": checkout_before(codes["before"]),
        "after": git("rev-parse", "HEAD"),
    }
    if shas["before"] == shas["after"]:
        raise RuntimeError(f"BEFORE {BEFORE} is the current commit: nothing to compare")
    if code_dirty(codes["before"]):
        raise RuntimeError(f"the BEFORE checkout is not clean: {codes['before']}")
    dirty_after = code_dirty(ROOT)
    if dirty_after:  # its runs would fail the code_committed check and stop there
        raise RuntimeError(
            "the current checkout has uncommitted pipeline code, which lineageflow "
            "refuses to promote, so AFTER would not run BEFORE's path: commit it "
            f"first ({', '.join(dirty_after)})"
        )
    resolved = {}
    for v in VARIANTS:
        # bytecode for every module first: the fresh clone has none, and compiling
        # it inside BEFORE's first measured run would count against BEFORE
        pkgs = [str(codes[v] / d) for d in PIPELINE_DIRS if (codes[v] / d).is_dir()]
        subprocess.run([PY, "-m", "compileall", "-q", *pkgs], check=True, env=env)
        resolved[v] = probe(with_code(env, codes[v]), codes[v])
        log(
            f"{v} ({shas[v][:12]}) imports lineageflow from {resolved[v]['lineageflow']}"
        )

    log(f"generating {ROWS} and {D_ROWS} rows x 40 features")
    big, small = SEAMS / "overhead.csv", SEAMS / "default.csv"
    make_classification_frame(ROWS, 40, seed=0).to_csv(big, index=False)
    make_classification_frame(D_ROWS, 40, seed=1).to_csv(small, index=False)
    results: dict = {
        "before": {
            "ref": BEFORE,
            "commit": shas["before"],
            "subject": subject(shas["before"]),
        },
        "after": {
            "commit": shas["after"],
            "subject": subject(shas["after"]),
        },
        "imports": resolved,
        "code": {v: str(codes[v].relative_to(ROOT)) for v in VARIANTS},
        "reps": REPS,
        "rows": ROWS,
        "default_rows": D_ROWS,
        "xgb": BIG_XGB,
        "default_xgb": D_XGB,
    }
    results["overhead"] = overhead(env, codes, big)
    results["default"] = default_mode(env, codes, small)
    results["verified"] = verify(results, shas)
    results["elapsed"] = time.perf_counter() - t_start
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["machine"] = machine()
    RAW.write_text(json.dumps(results, indent=1, default=str))
    report = render(results)
    REPORT.write_text(report)
    print(report)
    shutil.rmtree(SEAMS, ignore_errors=True)  # the clone, workspaces and CSVs


def subject(sha: str) -> str:
    return git("log", "-1", "--format=%s", sha)


def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "libraries": {
            p: version(p) for p in ("prefect", "mlflow", "dvc", "xgboost", "pandas")
        },
    }


def figures(m: dict) -> dict:
    """Median walls, and medians (min, max) of the ratios taken within each rep."""
    walls = {k: [w for w, _ in m[k]] for k in KINDS}

    def ratio(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(walls[a], walls[b], strict=True)]

    return {
        "walls": walls,
        "median": {k: statistics.median(walls[k]) for k in KINDS},
        "ratios": {
            "before/bare": ratio("before", "bare"),
            "after/bare": ratio("after", "bare"),
            "after/before": ratio("after", "before"),
        },
    }


def render(r: dict) -> str:
    mach = r["machine"]
    libs = ", ".join(f"{p} {v}" for p, v in mach["libraries"].items())
    rows = []
    for key, label in (
        (
            "overhead",
            f"overhead: running Prefect server, {r['rows']:,} rows, "
            f"{r['xgb']['n_estimators']} trees depth {r['xgb']['max_depth']}",
        ),
        (
            "default",
            f"default mode: no server configured, {r['default_rows']:,} "
            f"rows, {r['default_xgb']['n_estimators']} trees depth "
            f"{r['default_xgb']['max_depth']}",
        ),
    ):
        f = figures(r[key])
        md = f["median"]
        cells = [
            f"{statistics.median(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"
            for xs in f["ratios"].values()
        ]
        rows.append(
            f"| {label} | {md['bare']:.2f} | {md['before']:.2f} | {md['after']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    before, after = r["before"], r["after"]
    few = (
        f"\n\n**{r['reps']} rep(s) only: too few to judge; a real run uses 3 or more.**"
        if r["reps"] < 3
        else ""
    )
    verdicts = []
    for key, name in (("overhead", "Overhead"), ("default", "Default mode")):
        ab = statistics.median(figures(r[key])["ratios"]["after/before"])
        how = "faster" if ab < 1 else "slower" if ab > 1 else "as fast"
        verdicts.append(
            f"{name}: after is {abs(ab - 1) * 100:.1f}% {how} than before "
            f"(median of the per-rep after/before ratios, {ab:.3f})."
        )
    outcomes = r["verified"]
    return f"""# lineageflow before and after a code change

Written by `make bench-seams` (bench/seams.py) from one run's figures
(bench/work/seams.json); finished {r["finished"]}, {r["elapsed"] / 60:.1f} min.{few}

- before: `{before["commit"][:12]}` ({before["ref"]}) {before["subject"]}
- after: `{after["commit"][:12]}` {after["subject"]}
- {r["reps"]} rep(s) of each measure, bare script / before / after in rotating order
  within each rep; machine: {mach["arch"]}, {mach["cores"]} cores, Python
  {mach["python"]}; {libs}.

Process wall in seconds, median over the reps; ratios are taken within each rep,
then the median (min–max over the reps). Each pipeline run is a fresh process,
`--no-reuse`, in a workspace of its variant's own; the bare script is
bench/bare.py on the same CSV.

| measure | bare s | before s | after s | before/bare | after/bare | after/before |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{chr(10).join(verdicts)}

In default mode each variant has its own PREFECT_HOME, so its first rep includes
starting its local Prefect server (as a new user's first `lineageflow train` does).

Checked by the script: imports resolved under each variant's code (before:
`{r["code"]["before"]}/`, a clone at its commit; after: this checkout), every
run recorded its variant's commit as `lineage.pipeline_commit`, and both variants
ended every rep the same way: overhead {"; ".join(outcomes["overhead.outcomes"])};
default mode {"; ".join(outcomes["default.outcomes"])}.
"""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--workspace"]:  # a child, with a variant's PYTHONPATH
        base, name, xgb, csv = sys.argv[2:6]
        make_variant_workspace(Path(base), name, json.loads(xgb), Path(csv))
    elif sys.argv[1:] == ["--render"]:  # again, from the last run's figures
        REPORT.write_text(render(json.loads(RAW.read_text())))
        print(REPORT.read_text())
    else:
        main()
