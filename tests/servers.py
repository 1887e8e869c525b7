"""Real server processes for tests: bound to 127.0.0.1, bounded waits, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process in its own session, so its children (gunicorn, uvicorn) stop with it."""

    def __init__(self, name: str, cmd: list[str], env: dict, cwd: Path, log: Path):
        self.name, self.log = name, log
        self._fh = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text()[-n:] if self.log.exists() else ""

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited {self.popen.returncode}:\n{self.tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            time.sleep(0.5)
        raise TimeoutError(
            f"{self.name} not ready at {url} after {timeout}s:\n{self.tail()}"
        )

    def stop(self, interrupts: int = 1, timeout: float = 20) -> None:
        """SIGINT `interrupts` times (a prefect worker needs two), then SIGTERM, SIGKILL."""
        try:
            for _ in range(interrupts):
                if self.popen.poll() is None:
                    os.killpg(self.pid, signal.SIGINT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.popen.wait(timeout / 2)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.pid, sig)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.popen.wait(timeout)
            # children left in the group (e.g. a flow run the worker started)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        finally:
            self._fh.close()


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


def loopback(port: int) -> list[str]:
    """The arguments that bind an MLflow server / UI / model server to 127.0.0.1
    with one worker."""
    return ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@contextlib.contextmanager
def postgres(port: int, db: str = "mlflow"):
    """A PostgreSQL 15 cluster of its own: initdb in a temp dir, 127.0.0.1 only,
    its own port and socket dir; stopped (fast) and removed afterwards.

    initdb refuses root, so as root the cluster runs as the `postgres` user."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="lineageflow-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(base, 0o755)
        shutil.chown(base, "postgres")
    data, sock = base / "data", base / "sock"
    run = subprocess.run
    ctl = [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data)]
    try:
        run([*as_user, "mkdir", str(sock)], check=True)
        run(
            [
                *as_user,
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
        run(
            [*ctl, "-o", opts, "-l", str(base / "pg.log"), "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
            timeout=90,
        )
        run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                db,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgres@127.0.0.1:{port}/{db}"
    finally:
        run([*ctl, "-m", "fast", "-w", "-t", "60", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
