"""The team stack's Dask cluster (deployments.stack): a scheduler with work
stealing off and workers named 0, 1, ... (the Dask engine places partitions on
workers sorted by name and relies on no task moving), every listener on
127.0.0.1: a scheduler or worker serves HTTP (health, metrics, its state as
JSON) even without its dashboard, on 0.0.0.0 unless told."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx

from deployments.services import Proc


def dask_commands(
    bin_dir: Path,
    port: int,
    http_port: int,
    workers: int,
    memory_limit: str,
    base: Path,
) -> list[tuple[str, list[str], dict[str, str], int]]:
    """(name, command, extra environment, SIGINTs to stop it) of each process."""
    address = f"tcp://127.0.0.1:{port}"
    out = [
        (
            "dask-scheduler",
            [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1"]
            + ["--port", str(port), "--no-dashboard"]
            + ["--dashboard-address", f"127.0.0.1:{http_port}"],
            # the engine places each partition on a worker: no task may move
            {"DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING": "False"},
            1,
        )
    ]
    for n in range(workers):
        out.append(
            (
                f"dask-worker-{n}",
                [str(bin_dir / "dask"), "worker", address]
                + ["--nworkers", "1", "--nthreads", "1"]
                + ["--memory-limit", memory_limit]
                + ["--host", "127.0.0.1", "--name", str(n)]
                + ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
                + ["--local-directory", str(base / f"dask-worker-{n}")],
                # no spilling: the engine's partitions are counted once per key
                # (lineageflow.engines.cluster.SPILL_OFF); pause 80%, restart 95%
                {
                    "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False",
                    "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
                },
                # SIGTERM: a SIGINT to the group reaches the worker process too,
                # which then hangs until its nanny kills it 8 s later (measured)
                0,
            )
        )
    return out


def wait_dask(
    procs: list[Proc], http_port: int, address: str, workers: int, timeout: float
) -> None:
    """Until the scheduler counts every worker (its HTTP JSON); a process that
    exits on the way is named with its log."""
    http = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + timeout
    [scheduler] = [p for p in procs if p.name == "dask-scheduler"]
    scheduler.wait_http(f"{http}/health", timeout=timeout)
    seen = 0
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"{proc.name} exited {proc.popen.returncode}:\n{proc.tail()}"
                )
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            counts = httpx.get(f"{http}/json/counts.json", timeout=2).json()
            seen = counts["workers"]
        if seen >= workers:
            return
        time.sleep(0.3)
    raise TimeoutError(
        f"the Dask scheduler at {address} counts {seen} of {workers} workers "
        f"after {timeout}s:\n" + "\n".join(p.tail(1500) for p in procs)
    )
