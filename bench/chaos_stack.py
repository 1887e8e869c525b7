"""The team stack as bench/chaos.py drives it: each component can be killed by
PID (SIGKILL, its whole process group) and restarted on the same port. The S3
endpoint is a relay process in front of moto (bench/relay.py): moto keeps its
objects in memory, so killing moto itself would lose the bucket by design."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from deployments.dask_stack import dask_commands
from deployments.stack import BIN, TeamStack
from lineageflow.ops.procs import alive, free_port

HERE = Path(__file__).resolve().parent


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


class ChaosStack(TeamStack):
    def start_s3(self) -> None:
        front = self.ports["s3"]
        self.ports["s3"] = self.ports.setdefault("moto", free_port())
        try:
            super().start_s3()
        finally:
            self.ports["s3"] = front
        self.start_relay()

    def start_relay(self) -> None:
        cmd = [sys.executable, str(HERE / "relay.py")]
        self._start(
            "s3-relay",
            cmd + [str(self.ports["s3"]), str(self.ports["moto"])],
            self._server_env(),  # no credential
        )
        wait_port(self.ports["s3"])

    def user_env(self) -> dict[str, str]:
        """A shell that sourced env.sh."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_"))
        }
        return env | self.client_env()

    def s3_client(self):
        import boto3

        key = self.secrets.s3_env("admin")
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=key["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"],
            region_name=key["AWS_DEFAULT_REGION"],
        )

    def _kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.stop(interrupts=0)  # reaps it, closes its log

    def kill_and_restart(self, component: str) -> None:
        if component == "postgresql":
            pid_file = self.pg.data / "postmaster.pid"
            postmaster = int(pid_file.read_text().split()[0])
            backends = children(postmaster)
            # SIGQUIT: PostgreSQL's immediate shutdown, a crash without a
            # checkpoint (recovery at the next start); a SIGKILLed postmaster
            # leaves backends holding its shared memory, and no start succeeds
            os.kill(postmaster, signal.SIGQUIT)
            deadline = time.monotonic() + 30
            while any(alive(p) for p in (postmaster, *backends)):
                if time.monotonic() > deadline:
                    raise TimeoutError("PostgreSQL processes outlived SIGKILL")
                time.sleep(0.1)
            try:
                self.pg.start()
            except RuntimeError as exc:
                log = (self.pg.base / "pg.log").read_text()[-2000:]
                raise RuntimeError(f"{exc}\n{log}") from None
        elif component == "mlflow":
            self._kill("mlflow")
            self.start_mlflow()
        elif component == "s3":
            self._kill("s3-relay")
            time.sleep(1)  # down for a moment, as a restarting store is
            self.start_relay()
        elif component == "prefect":
            self._kill("prefect")
            self.start_prefect()
        elif component == "worker":
            self._kill("worker-1")  # its group: the flow run it started too
            self.start_worker(1)
        elif component == "dask-worker":
            self._kill("dask-worker-0")
            for name, cmd, extra, interrupts in dask_commands(
                BIN,
                self.ports["dask"],
                self.ports["dask-http"],
                self.dask_workers,
                self.dask_memory_limit,
                self.base,
            ):
                if name == "dask-worker-0":
                    env = self._server_env(**extra) | self.secrets.worker_env()
                    self._start(name, cmd, env, interrupts=interrupts)
            self.wait_dask()
        else:
            raise ValueError(f"unknown component {component!r}")
