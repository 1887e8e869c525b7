"""The servers of the team stack, each a process in its own session stopped by
PID, every wait bounded: PostgreSQL 15 clusters of their own (``initdb`` as the
``postgres`` user), and the S3 bucket moto serves. deployments.stack composes
them with MLflow, Prefect and its workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from lineageflow.ops.procs import stop_group

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BUCKET = "lineageflow"


class Proc:
    """A server process in its own session, so its children (gunicorn, uvicorn,
    flow runs) stop with it; output goes to `log`."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        env: dict,
        cwd: Path,
        log: Path,
        interrupts: int = 1,
    ):
        self.name, self.log, self.interrupts = name, log, interrupts
        self._fh = open(log, "a")  # noqa: SIM115 - closed in stop()
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

    def stop(self, interrupts: int | None = None, timeout: float = 20) -> None:
        try:
            stop_group(
                self.pid, self.interrupts if interrupts is None else interrupts, timeout
            )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        finally:
            self._fh.close()


def loopback(port: int) -> list[str]:
    """The arguments that bind an MLflow server / UI / model server to 127.0.0.1
    with one worker."""
    return ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


class Postgres:
    """A PostgreSQL 15 cluster of its own: ``initdb`` in `base`, 127.0.0.1 only, its
    own port and socket dir. With a `password` the superuser needs it and every
    connection authenticates with scram-sha-256 (clients read passwords from the
    `pgpass` file, mode 600); without one, trust (the tests' throwaway clusters).
    ``initdb`` refuses root, so as root the cluster belongs to the ``postgres`` user."""

    def __init__(
        self,
        base: Path,
        port: int,
        password: str | None = None,
        pgpass: Path | None = None,
    ):
        self.base, self.port = base, port
        self.password, self.pgpass = password, pgpass
        self.data, self.sock = base / "data", base / "sock"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, args: list[str], timeout: float = 90) -> None:
        proc = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args], timeout)

    def init(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
        self.base.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            os.chmod(self.base, 0o755)
            shutil.chown(self.base, "postgres")
        self._run(["mkdir", "-p", str(self.sock)])
        auth = ["-A", "trust"]
        if self.password is not None:
            # the superuser's password through a file postgres reads, never argv
            pwfile = self.base / "pwfile"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:  # owner-only from the first byte
                fh.write(self.password + "\n")
            if self.as_user:
                shutil.chown(pwfile, "postgres")
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        try:
            self._run(
                [str(PG_BIN / "initdb"), "-D", str(self.data), *auth, "-U", "postgres"],
                timeout=120,
            )
        finally:
            (self.base / "pwfile").unlink(missing_ok=True)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1"
        log = str(self.base / "pg.log")
        self._ctl("-o", opts, "-l", log, "-w", "-t", "60", "start")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._ctl("-m", "fast", "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Fast restart: every client connection is dropped."""
        log = str(self.base / "pg.log")  # without -l the server would hold our pipe
        self._ctl("-m", "fast", "-l", log, "-w", "-t", "60", "restart")

    def client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.pgpass is not None:
            env["PGPASSFILE"] = str(self.pgpass)
        return env

    def createdb(self, name: str) -> str:
        subprocess.run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port)]
            + ["-U", "postgres", name],
            check=True,
            capture_output=True,
            timeout=60,
            env=self.client_env(),
        )
        return f"postgres@127.0.0.1:{self.port}/{name}"

    def sql(self, script: str, db: str = "postgres") -> None:
        """Run `script` as the superuser, fed on stdin: passwords in it never reach
        a command line."""
        proc = subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
            + ["-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-q", "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.client_env(),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr.strip()[-1000:]}")
