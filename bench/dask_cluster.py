"""A running Dask cluster for the sweep benchmark, as a team keeps one up: a
LocalCluster of 2 worker processes (1 thread each) on 127.0.0.1, no dashboard.

usage: dask_cluster.py ADDRESS_FILE — writes the scheduler address there, then
serves until SIGTERM."""

import signal
import sys
import threading
from pathlib import Path


def main() -> None:
    from distributed import LocalCluster

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        Path(sys.argv[1]).write_text(cluster.scheduler_address)
        stop.wait()


if __name__ == "__main__":
    main()
