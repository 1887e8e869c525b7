"""The short chaos run (bench/chaos.py, 3 trials) as `make bench-chaos` runs it:
PostgreSQL, the Prefect worker (with the flow run it started) and the S3 endpoint
each killed by PID at a random
moment of a training run on a pool worker, then restarted; the next run completes
and promotes, nothing is left RUNNING, nothing half-promoted, nothing lost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.servers import needs_postgres
from tests.test_deployments import ROOT

pytestmark = [pytest.mark.slow, needs_postgres]


def test_three_chaos_trials_lose_nothing(tmp_path):
    report = tmp_path / "CHAOS.md"
    proc = subprocess.run(
        [sys.executable, "bench/chaos.py", "--trials", "3", "--seed", "11"]
        + ["--components", "postgresql,worker,s3", "--report", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = report.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "|---" not in ln]
    trials = [r for r in rows if r.split("|")[1].strip().isdigit()]
    assert [r.split("|")[2].strip() for r in trials] == ["postgresql", "worker", "s3"]
    expected = {  # the interrupted run, its MLflow parent run
        "postgresql": ("COMPLETED", "FINISHED"),  # rides it out
        "worker": ("CRASHED", "KILLED"),
        "s3": ("COMPLETED", "FINISHED"),  # clients retry through the restart
    }
    for row in trials:
        cells = [c.strip() for c in row.split("|")]
        assert cells[-2] == "nothing", row  # lost
        assert cells[-3] == "COMPLETED, promoted", row  # the next run
        assert cells[4] == "yes", row  # the kill landed while the run ran
        assert (cells[7], cells[8]) == expected[cells[2]], row
