"""Real server processes for tests: bound to 127.0.0.1, bounded waits, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import pytest

from deployments.services import PG_BIN, Postgres, Proc, loopback
from lineageflow.ops.procs import free_port

__all__ = [
    "PG_BIN",
    "Proc",
    "free_port",
    "loopback",
    "mlflow_ui",
    "needs_postgres",
    "postgres",
]

needs_postgres = pytest.mark.skipif(
    not (PG_BIN / "initdb").exists(),
    reason="needs Debian's postgresql-15 (its server binaries are absent)",
)


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


class TcpGate:
    """A TCP forwarder on 127.0.0.1 in a thread: `cut()` drops every connection and
    refuses new ones (the server behind stays up, with its state), `mend()` listens
    again on the same port. For 'the object store does not answer' faults."""

    def __init__(self, target_port: int):
        import asyncio
        import threading

        self.target_port, self.port = target_port, free_port()
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._writers: set = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.mend()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _pipe(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer) -> None:
        import asyncio

        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer)
        )
        self._writers -= {writer, up_writer}

    def _call(self, coro_fn):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(10)

    def mend(self) -> None:
        import asyncio

        async def start():
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

        self._call(start)

    def cut(self) -> None:
        async def stop():
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

        self._call(stop)

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)


@contextlib.contextmanager
def mlflow_ui(db: Path, tmp: Path, env: dict):
    """`mlflow ui` on a sqlite store, on 127.0.0.1; yields its base URL."""
    bin_dir = Path(sys.executable).parent
    port = free_port()
    ui = Proc(
        "mlflow ui",
        [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{db}"]
        + loopback(port),
        dict(env, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"),
        tmp,
        tmp / "mlflow-ui.log",
    )
    try:
        ui.wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        ui.stop()
