"""What auditing one promoted version costs, against training it.

One run, one process, against a temporary Prefect server and the workspace's
sqlite MLflow store; a demo workspace of ROWS customer rows (DVC, local
remote), xgboost with TREES trees. After a warm-up training that registers and
promotes v1, REPS times, interleaved so drift hits all three:
(a) training v1 again (``training_pipeline(reuse=False)``: every stage
    recomputed; it registers nothing, the model is identical);
(b) audit-registry on that one version with a rebuild (``reproduce_every=1``):
    offline checks, reproduce-run by run id, the verdict written;
(c) audit-registry on it with the offline checks only (a version unchanged
    since its last exact rebuild, as three audits in four are by default);
(d) the offline checks alone, outside a flow (``check_version``), and an
    empty Prefect flow: what any flow run costs here (Prefect ends an
    in-process flow run on its next one-second tick), for scale.
Writes bench/AUDIT.md.

    .venv/bin/python bench/audit.py     # BENCH_AUDIT_ROWS=200000 BENCH_REPS=3
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = int(os.environ.get("BENCH_AUDIT_ROWS", "500000"))
TREES = int(os.environ.get("BENCH_AUDIT_TREES", "800"))
DEPTH = int(os.environ.get("BENCH_AUDIT_DEPTH", "8"))
REPS = int(os.environ.get("BENCH_REPS", "3"))


def main() -> None:
    for k, v in {
        "DO_NOT_TRACK": "true",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }.items():
        os.environ.setdefault(k, v)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the workspace's own store
    from prefect.testing.utilities import prefect_test_harness

    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="lineageflow-bench-audit-") as tmp,
        prefect_test_harness(server_startup_timeout=120),
    ):
        figures = measure(Path(tmp))
    text = report(figures, time.monotonic() - started)
    (ROOT / "bench" / "AUDIT.md").write_text(text)
    print(text)


def workspace(base: Path) -> tuple[Path, str]:
    from flows.demo import (
        DemoPaths,
        add_data_version,
        default_params_text,
        init_workspace,
    )

    params = yaml.safe_load(default_params_text())
    params["train"]["xgboost"].update(n_estimators=TREES, max_depth=DEPTH)
    name = "bench-audit"
    params["register"]["model_name"] = name
    paths = DemoPaths(base / "demo")
    paths.base.mkdir()
    init_workspace(paths, params_text=yaml.safe_dump(params, sort_keys=False))
    add_data_version(paths.workspace, 0, ROWS, seed=7, drift=0.0, message="data v1")
    return paths.workspace, name


def timed(fn, **kw) -> tuple[float, dict]:
    t = time.perf_counter()
    out = fn(**kw)
    return time.perf_counter() - t, out


def measure(base: Path) -> dict:
    from prefect import flow

    from flows.audit import audit_registry
    from flows.training import training_pipeline
    from lineageflow.audit.offline import check_version
    from lineageflow.runs.store import client

    @flow(name="bench-empty")
    def empty() -> None:
        return None

    ws, name = workspace(base)
    first = training_pipeline(workspace=str(ws))  # warm-up: registers v1, Staging
    assert first["version"] == "1", first
    one = {"workspace": str(ws), "models": [name], "keep": 0}
    train, rebuilt, offline, bare, checks = [], [], [], [], []
    run_train, run_rebuilt = [], []  # the MLflow runs' own durations
    uri = f"sqlite:///{ws / '.lineageflow' / 'mlflow.db'}"
    c = client(uri)
    mv = c.get_model_version(name, "1")

    def took(run_id: str) -> float:
        info = c.get_run(run_id).info
        return (info.end_time - info.start_time) / 1000

    for _ in range(REPS):
        s, out = timed(training_pipeline, workspace=str(ws), reuse=False)
        train.append(s)
        run_train.append(took(out["run_id"]))
        s, out = timed(audit_registry, **one, reproduce_every=1)
        assert out["audited"] == {f"{name}/1": "exact"} and out["rebuilt"], out
        rebuilt.append(s)
        redo = c.get_model_version(name, "1").tags["lineage.audit.reproduction"]
        run_rebuilt.append(took(redo))
        s, out = timed(audit_registry, **one, reproduce_every=1000)
        assert out["audited"] == {f"{name}/1": "exact"} and not out["rebuilt"], out
        offline.append(s)
        bare.append(timed(empty)[0])
        s, found = timed(check_version, uri=uri, mv=mv, root=ws)
        assert not found.findings, found.findings
        checks.append(s)
    return {
        "train": train,
        "rebuilt": rebuilt,
        "offline": offline,
        "checks": checks,
        "empty": bare,
        "run_train": run_train,
        "run_rebuilt": run_rebuilt,
    }


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"


def ratio(a: list[float], b: list[float]) -> str:
    r = [x / y for x, y in zip(a, b, strict=True)]
    return f"{statistics.median(r):.2f}x (min {min(r):.2f}, max {max(r):.2f})"


def report(f: dict, wall: float) -> str:
    import mlflow
    import prefect
    import xgboost

    return f"""# What auditing one version costs

Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {wall / 60:.1f} min, `make bench-audit`
(BENCH_REPS={REPS}). Machine: 2 cores, Python {sys.version.split()[0]}; prefect
{prefect.__version__}, mlflow {mlflow.__version__}, xgboost {xgboost.__version__}.

Workload: the demo workspace with {ROWS:,} customer rows (one DVC file, local remote),
xgboost {TREES} trees of depth {DEPTH}; a temporary Prefect server; MLflow's sqlite store in the
workspace. One process, after a warm-up training that promoted v1; the three measured
runs interleaved, {REPS} times; ratios run by run. Median (min, max).

| run | wall time | / training v1 |
|---|---|---|
| training v1 (every stage recomputed) | {fmt(f["train"])} | 1 |
| audit of v1 with a rebuild (`reproduce_every: 1`) | {fmt(f["rebuilt"])} | {ratio(f["rebuilt"], f["train"])} |
| audit of v1, offline checks only (unchanged since its last exact rebuild) | {fmt(f["offline"])} | {ratio(f["offline"], f["train"])} |
| the offline checks alone (no flow) | {fmt(f["checks"])} | {ratio(f["checks"], f["train"])} |
| an empty Prefect flow, for scale | {fmt(f["empty"])} | {ratio(f["empty"], f["train"])} |

Prefect ends an in-process flow run on a one-second tick, so the wall times above move
in whole seconds. The MLflow parent runs time the same work to the millisecond:

| MLflow parent run | duration | / training v1 |
|---|---|---|
| training v1 | {fmt(f["run_train"])} | 1 |
| the audit's rebuild of v1 (reproduce-run) | {fmt(f["run_rebuilt"])} | {ratio(f["run_rebuilt"], f["run_train"])} |

The rebuild is reproduce-run: every stage recomputed from the recorded commit, data and
params, then compared. The offline checks are `lineageflow verify`'s (the model files
against their signature, the signed statements), the lineage record's digest, the DVC
remote asked for every recorded md5 and each recorded commit looked up. With
`audit.reproduce_every: 4` (the default) an unchanged version costs one rebuild and three
offline audits per four weeks.
"""


if __name__ == "__main__":
    main()
