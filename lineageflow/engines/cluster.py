"""The Dask cluster of a run: connect to the team's scheduler, or start a
LocalCluster for the run; which worker holds which partition; faults as one line.

Placement is fixed: the workers sorted by name, partition i of n on worker
i*W//n (contiguous blocks, in partition order). xgboost's distributed fit
depends on which rows each worker holds and in what order (measured: the same 8
partitions placed by Dask's scheduler landed differently on each of 3 fits, and
the 3 models differed), so a fixed placement is what makes the same cluster
shape give the same model.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from lineageflow.compute_config import (
    ADDRESS_ENV,
    ComputeConfig,
    parse_bytes,
    without_credentials,
)
from lineageflow.errors import ConfigError, DataError

CONNECT_SECONDS = 5
WORKERS_SECONDS = 30
MEMORY_FIX = "raise compute.memory_limit, or write the data as smaller partitions"
POLL_SECONDS = 1.0
MEMORY_LOG_SECONDS = 5.0
SPILL_OFF = {
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
}


@dataclass
class Cluster:
    client: Any  # distributed.Client
    local: Any  # the LocalCluster started for this run, or None
    address: str  # the scheduler, as recorded (no credentials)
    log_level: int = logging.NOTSET  # distributed's, restored on close
    # the addresses the run first placed work on: a worker restarted under the
    # same name comes back at a new address, without what was placed on it
    placed_on: frozenset = frozenset()

    def workers(self) -> list[str]:
        """Worker addresses, sorted by worker name (then address)."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        found = sorted(info, key=lambda a: (_natural(str(info[a].get("name"))), a))
        if not self.placed_on:
            self.placed_on = frozenset(found)
        return found

    def shape(self) -> dict:
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        ws = [info[a] for a in self.workers()]
        return {
            "workers": len(ws),
            "threads_per_worker": sorted({w.get("nthreads") for w in ws}),
            "memory_limit": sorted({w.get("memory_limit") for w in ws}),
        }

    def close(self) -> None:
        try:
            self.client.close()
            if self.local is not None:
                self.local.close()
        finally:
            logging.getLogger("distributed").setLevel(self.log_level)


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def open_cluster(cfg: ComputeConfig) -> Cluster:
    """The cluster ``cfg`` names; an unreachable scheduler or one without
    workers is one line naming it."""
    import dask
    import distributed  # noqa: F401 - its import sets its loggers' levels

    # the scheduler must not move tasks away from the worker placement chose
    dask.config.set({"distributed.scheduler.work-stealing": False})
    # a LocalCluster's workers (its nannies pass this config on): no spilling.
    # The engine keeps one partition's rows under several keys (a split piece,
    # its sides, the fit's view of them), which Dask counts once per key, so it
    # spilled 8.9 GiB to disk at 20M rows while every row stayed in memory
    # (measured, make bench-dask). The memory limit still holds: a worker
    # pauses at 80% and is restarted at 95% (one line, lost_worker).
    dask.config.set(SPILL_OFF)
    # a LocalCluster's scheduler runs in this process: its INFO lines (every
    # worker and client coming and going) would fill the flow run's log
    log = logging.getLogger("distributed")
    level, _ = log.level, log.setLevel(logging.WARNING)
    try:
        return _open(cfg, level)
    except BaseException:
        log.setLevel(level)
        raise


def _open(cfg: ComputeConfig, level: int) -> Cluster:
    from distributed import Client, LocalCluster

    address = cfg.scheduler()
    if address is None:
        local = LocalCluster(
            n_workers=cfg.workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=parse_bytes(cfg.memory_limit),
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        return Cluster(Client(local), local, "LocalCluster", level)
    shown = without_credentials(address)
    try:
        client = Client(address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(
            f"the Dask scheduler at {shown} is unreachable ({first}): start it, or "
            f"set compute.address (or ${ADDRESS_ENV}) to a running scheduler"
        ) from None
    try:
        client.wait_for_workers(1, timeout=WORKERS_SECONDS)
    except TimeoutError:
        client.close()
        raise ConfigError(
            f"the Dask scheduler at {shown} has no workers after "
            f"{WORKERS_SECONDS} s: start `dask worker {shown}`"
        ) from None
    return Cluster(client, None, shown, level)


def gather(cluster: Cluster, futures: list, doing: str) -> list:
    """The futures' results, in order; a worker lost on the way is one line
    (over its memory limit, or killed) and nothing is retried here."""
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    try:
        return watched(cluster, lambda: cluster.client.gather(futures), doing)
    except DataError:
        raise
    except (KilledWorker, FutureCancelledError, OSError) as exc:
        raise lost_worker(cluster, doing, exc) from None


def watched(cluster: Cluster, call, doing: str):
    """``call()`` in a thread while this one watches the workers: tasks are
    pinned to a worker, so one that died (or that its nanny restarted at a new
    address, over its memory limit) would leave them waiting for ever."""
    from concurrent.futures import ThreadPoolExecutor

    before = set(cluster.workers()) | cluster.placed_on
    pool = ThreadPoolExecutor(1, thread_name_prefix="lineageflow-dask")
    try:
        job = pool.submit(call)
        while True:
            try:
                return job.result(timeout=POLL_SECONDS)
            except TimeoutError:
                if not before <= set(cluster.workers()):
                    raise lost_worker(
                        cluster, doing, RuntimeError("a worker left the cluster")
                    ) from None
    finally:
        # a call stuck on a lost worker ends when the run's client closes
        pool.shutdown(wait=False, cancel_futures=True)


def lost_worker(cluster: Cluster, doing: str, exc: BaseException) -> DataError:
    """Why a task failed when a worker died: its memory, or the worker itself."""
    if over_memory(cluster):
        return DataError(
            f"a Dask worker went over its memory limit while {doing} and was "
            f"restarted: {MEMORY_FIX}"
        )
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return DataError(
        f"a Dask worker died while {doing} ({type(exc).__name__}: {first}): check "
        "the workers at the scheduler and run again"
    )


def over_memory(cluster: Cluster, wait: float = MEMORY_LOG_SECONDS) -> bool:
    """Whether a nanny restarted its worker for memory (its log says so). A
    nanny answers only once its worker is back (about 2 s here, measured): ask
    again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            logs = cluster.client.get_worker_logs(nanny=True)
        except Exception:  # noqa: BLE001 - no nannies, or the scheduler is gone
            logs = {}
        lines = (msg for found in logs.values() for _, msg in found)
        if any("memory budget" in msg for msg in lines):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
