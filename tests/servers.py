"""Real server processes for tests: bound to 127.0.0.1, bounded waits, stopped by PID."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from deployments.stack import PG_BIN, Postgres, Proc, free_port, loopback

__all__ = ["PG_BIN", "Proc", "free_port", "loopback", "postgres"]


def wait_for_parent_of_stage(
    client, stage: str, timeout: float, keep_going=lambda: True
):
    """Poll MLflow until some run has reached `stage`; return its parent run id (or None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and keep_going():
        exp = client.get_experiment_by_name("lineageflow")
        if exp is not None:
            runs = client.search_runs(
                [exp.experiment_id],
                filter_string=f"tags.`lineageflow.stage` = '{stage}'",
            )
            if runs:
                return runs[0].data.tags["mlflow.parentRunId"]
        time.sleep(0.2)
    return None


@contextlib.contextmanager
def postgres(port: int, db: str = "mlflow"):
    """A PostgreSQL 15 cluster of its own in a temp dir (deployments.stack.Postgres),
    stopped (fast) and removed afterwards; yields ``user@host:port/db``."""
    import shutil
    import tempfile

    pg = Postgres(Path(tempfile.mkdtemp(prefix="lineageflow-pg-")), port)
    try:
        pg.init()
        pg.start()
        yield pg.createdb(db)
    finally:
        pg.stop()
        shutil.rmtree(pg.base, ignore_errors=True)
