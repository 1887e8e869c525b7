"""`make stack` / `make stack-down`: start the team stack (deployments.stack)
and leave it running, or stop one another process started, by PID.

    python -m deployments.up [up] [--dir .stack] [--workers 2]
        [--dask-workers 2] [--dask-memory-limit 4GiB]
    python -m deployments.up down [--dir .stack]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from deployments.services import BUCKET
from deployments.stack import POOL, ROOT, TeamStack
from deployments.state import stop_saved
from lineageflow.compute_config import parse_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.up")
    parser.add_argument("action", nargs="?", default="up", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=ROOT / ".stack")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--dask-workers", type=int, default=2, help="Dask workers, named 0, 1, ..."
    )
    parser.add_argument(
        "--dask-memory-limit", default="4GiB", help="per Dask worker (default 4GiB)"
    )
    args = parser.parse_args(argv)
    if args.dask_workers < 1:
        parser.error("--dask-workers must be at least 1")
    try:
        parse_bytes(args.dask_memory_limit)
    except ValueError as exc:
        parser.error(str(exc))
    base = args.dir.resolve()
    if args.action == "down":
        stopped = stop_saved(base)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        if stopped:
            shutil.rmtree(base, ignore_errors=True)
        return 0
    if (base / "stack.json").exists():
        print(
            f"error: a stack is already up in {base}: `make stack-down` first",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(base, ignore_errors=True)
    try:
        stack = TeamStack(
            base,
            workers=args.workers,
            dask_workers=args.dask_workers,
            dask_memory_limit=args.dask_memory_limit,
        ).up()  # stops what it started when a piece fails
    except Exception as exc:  # a server that would not start: its log says why
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        print(
            f"error: the stack did not start: {first} (logs in {base})", file=sys.stderr
        )
        return 1
    print(
        f"PostgreSQL 127.0.0.1:{stack.ports['pg']} (databases mlflow, prefect)\n"
        f"S3 (moto)  {stack.s3_endpoint}  bucket {BUCKET}; DVC remote {stack.dvc_remote}\n"
        f"MLflow     {stack.mlflow_uri}\n"
        f"Prefect    {stack.prefect_api.removesuffix('/api')}  pool {POOL}, "
        f"{args.workers} workers\n"
        f"Dask       {stack.dask_address}  {args.dask_workers} workers, 1 thread "
        f"and {args.dask_memory_limit} each\n"
        f"logs in {base}; now: source {base / 'env.sh'} (the pipeline identity; "
        f"{base / 'reader.env.sh'}: the reader). MLflow, Prefect, PostgreSQL "
        "and S3 want credentials: they are in mode-600 files there"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
