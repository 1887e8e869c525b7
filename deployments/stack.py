"""The team stack on one machine, every server bound to 127.0.0.1:

    python -m deployments.up [--dir .stack]          # or: make stack
    source .stack/env.sh                             # the pipeline (reader.env.sh: the reader)
    python -m deployments.up down [--dir .stack]     # or: make stack-down

- PostgreSQL 15: a cluster of its own (``initdb`` in a temp dir, its own port), one
  role and database for MLflow (and its users) and one for Prefect;
- an S3-compatible object store (``moto_server``) enforcing IAM, bucket
  ``lineageflow``: MLflow's artifacts under ``mlflow/``, the DVC remote under ``dvc/``;
- an MLflow tracking server with its basic-auth app on PostgreSQL with
  ``--artifacts-destination s3://…`` (proxied artifacts: clients need no S3 keys);
- a Prefect server on PostgreSQL (``PREFECT_API_DATABASE_CONNECTION_URL``) behind an
  auth string, a process work pool ``lineageflow-process`` and two workers;
- a Dask scheduler (work stealing off) and two Dask workers named ``0`` and ``1``,
  one thread each, for ``compute.engine: dask``: ``LINEAGEFLOW_DASK_ADDRESS`` names
  the scheduler to the Prefect workers' flow runs and in env.sh.

Secure by default (deployments.access): every service wants credentials, each
identity gets the least it needs, every secret is in a mode-600 file.

Every process is started in its own session and stopped by PID (a prefect worker
takes two SIGINTs, a Dask worker a SIGTERM); every wait is bounded. moto keeps objects in memory: stopping
the stack drops them. For a real cluster the same variables point at real servers
(README, "Scaling out").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deployments.access import (
    S3_BOOTSTRAP_REQUESTS,
    Secrets,
    create_mlflow_identities,
    create_s3_identities,
    pgpass_text,
    private_file,
    roles_sql,
    write_auth_ini,
)
from deployments.dask_stack import dask_commands, wait_dask
from deployments.services import BUCKET, Postgres, Proc, loopback
from deployments.state import save
from lineageflow.compute_config import ADDRESS_ENV, parse_bytes
from lineageflow.ops.procs import TELEMETRY_OFF, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "lineageflow-process"


@dataclass
class TeamStack:
    """Start, describe and stop the stack; `procs` by name while this process owns
    them, `pids` (from stack.json) when another process started them."""

    base: Path
    workers: int = 2
    # the Dask engine places partitions on workers sorted by name: 0, 1, ...
    dask_workers: int = 2
    dask_memory_limit: str = "4GiB"  # per Dask worker
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    pg: Postgres | None = None
    secrets: Secrets = field(default_factory=Secrets.generate)

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.ports['prefect']}/api"

    @property
    def dvc_remote(self) -> str:
        return f"s3://{BUCKET}/dvc"

    @property
    def dask_address(self) -> str:
        return f"tcp://127.0.0.1:{self.ports['dask']}"

    def client_env(self, identity: str = "pipeline") -> dict[str, str]:
        """What a client, a worker or a user's shell needs: env.sh for `pipeline`,
        reader.env.sh for `reader` (no Prefect credential: it has only one)."""
        sec = self.secrets
        env = {
            **TELEMETRY_OFF,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            **sec.mlflow_env(identity),
            # moto's IAM check cannot read MLflow's presigned download URLs
            "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_HOME": str(self.base / "prefect-home"),
            # the DVC remote: botocore reads the endpoint and keys from here
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            **(sec.s3_env(identity) if identity in sec.s3 else {}),
            # a run with compute.engine: dask trains on the stack's cluster
            ADDRESS_ENV: self.dask_address,
        }
        if identity == "pipeline":
            env["PREFECT_API_AUTH_STRING"] = sec.prefect
        return env

    def _env(self, **extra: str) -> dict[str, str]:
        """A server's environment: the pipeline's, plus `extra`."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_", "PG"))
        }
        return env | self.client_env() | extra

    def _start(self, name: str, cmd: list[str], env: dict, interrupts: int = 1):
        proc = Proc(name, cmd, env, ROOT, self.base / f"{name}.log", interrupts)
        self.procs[name] = proc
        return proc

    def start_s3(self) -> None:
        s3 = self._start(
            "s3",
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["s3"])],
            self._env(INITIAL_NO_AUTH_ACTION_COUNT=str(S3_BOOTSTRAP_REQUESTS)),
        )
        s3.wait_http(f"{self.s3_endpoint}/moto-api/", timeout=60)
        self.secrets.s3 = create_s3_identities(self.s3_endpoint, BUCKET)

    def start_mlflow(self, s3_endpoint: str | None = None) -> None:
        """`s3_endpoint`: where the server reaches the object store (default: the
        stack's own). Its own S3 keys; no client credential in its environment."""
        server = self._start(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--app-name",
                "basic-auth",
                "--backend-store-uri",
                f"postgresql+psycopg://{self.dsn('mlflow')}",
                "--artifacts-destination",
                f"s3://{BUCKET}/mlflow",
                *loopback(self.ports["mlflow"]),
            ],
            self._server_env(
                MLFLOW_S3_ENDPOINT_URL=s3_endpoint or self.s3_endpoint,
                MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
                MLFLOW_AUTH_CONFIG_PATH=str(self.base / "mlflow-auth.ini"),
                MLFLOW_FLASK_SERVER_SECRET_KEY=self.secrets.flask,
                PGPASSFILE=str(self.base / "pgpass-mlflow"),
                **self.secrets.s3_env("mlflow"),
            ),
        )
        server.wait_http(f"{self.mlflow_uri}/health", timeout=180)

    def _server_env(self, **extra: str) -> dict[str, str]:
        env = self._env()
        for key in [k for k in env if k.startswith(("MLFLOW_TRACKING_", "AWS_"))]:
            del env[key]
        env.pop("PREFECT_API_AUTH_STRING", None)
        return env | extra

    def start_prefect(self) -> None:
        port = self.ports["prefect"]
        server = self._start(
            "prefect",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            self._server_env(
                PREFECT_API_DATABASE_CONNECTION_URL=(
                    f"postgresql+asyncpg://{self.dsn('prefect')}"
                ),
                PREFECT_UI_API_URL=self.prefect_api,
                PGPASSFILE=str(self.base / "pgpass-prefect"),
                PREFECT_SERVER_API_AUTH_STRING=self.secrets.prefect,
                PREFECT_API_AUTH_STRING=self.secrets.prefect,
            ),
        )
        server.wait_http(f"{self.prefect_api}/health", timeout=180)

    def start_worker(self, n: int) -> Proc:
        return self._start(
            f"worker-{n}",
            [str(BIN / "prefect"), "worker", "start", "--pool", POOL]
            + ["--name", f"worker-{n}"],
            self._env(PREFECT_WORKER_QUERY_SECONDS="1"),
            interrupts=2,  # a prefect worker needs two SIGINTs
        )

    def start_dask(self) -> None:
        """The Dask scheduler and workers (deployments.dask_stack), started
        without waiting: they import while the other servers start."""
        http = self.ports["dask-http"]
        for name, cmd, extra, interrupts in dask_commands(
            BIN,
            self.ports["dask"],
            http,
            self.dask_workers,
            self.dask_memory_limit,
            self.base,
        ):
            env = self._server_env(**extra)
            if name != "dask-scheduler":  # workers read data, sweeps log runs
                env |= self.secrets.worker_env()
            self._start(name, cmd, env, interrupts=interrupts)

    def wait_dask(self, timeout: float = 120) -> None:
        procs = [p for n, p in self.procs.items() if n.startswith("dask-")]
        wait_dask(
            procs,
            self.ports["dask-http"],
            self.dask_address,
            self.dask_workers,
            timeout,
        )

    def create_pool(self, tries: int = 5) -> None:
        """The process work pool; retried, since a Prefect server answering
        /health may still refuse its first writes."""
        cmd = [str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process"]
        for attempt in range(tries):
            proc = subprocess.run(
                [*cmd, "--overwrite"],
                env=self._env(),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if proc.returncode == 0:
                return
            time.sleep(1 + attempt)
        raise RuntimeError(
            f"`{' '.join(cmd[1:])}` failed: {(proc.stdout + proc.stderr)[-2000:]}"
        )

    def dsn(self, db: str) -> str:  # no password: each server has a pgpass file
        role = "prefect" if db == "prefect" else "mlflow"
        return f"{role}@127.0.0.1:{self.ports['pg']}/{db}"

    def start_postgres(self) -> None:
        # its own temp dir: as root the cluster runs as `postgres`, which must
        # reach it (a pytest or home directory is often private to root)
        pg_base = Path(tempfile.mkdtemp(prefix="lineageflow-pg-"))
        port, sec = self.ports["pg"], self.secrets
        for role in ("postgres", "mlflow", "prefect"):  # a file per role
            name = "pgpass" if role == "postgres" else f"pgpass-{role}"
            private_file(self.base / name, pgpass_text(port, sec.pg, role))
        pgpass = self.base / "pgpass"  # the superuser's: this process's only
        self.pg = Postgres(pg_base, port, sec.pg["postgres"], pgpass)
        self.pg.init()
        self.pg.start()
        self.pg.sql(roles_sql(sec.pg))
        auth_db = f"postgresql+psycopg://{self.dsn('mlflow_auth')}"
        write_auth_ini(self.base / "mlflow-auth.ini", auth_db, sec.mlflow["admin"])

    def up(self) -> TeamStack:
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o700)  # secrets inside
        parse_bytes(self.dask_memory_limit)  # a malformed size, before anything starts
        self.ports = {
            k: free_port()
            for k in ("pg", "s3", "mlflow", "prefect", "dask", "dask-http")
        }
        try:
            self.start_postgres()
            self.start_s3()
            self.start_dask()  # after S3: its workers get the pipeline's keys
            self.start_mlflow()
            create_mlflow_identities(self.mlflow_uri, self.secrets)
            self.start_prefect()
            self.create_pool()
            self.wait_dask()
            for n in range(1, self.workers + 1):
                self.start_worker(n)
        except BaseException:
            self.down()
            raise
        save(self)
        return self

    def down(self) -> None:
        """Stop everything this stack started, newest first, then the database."""
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.procs.clear()
        if self.pg is not None:
            self.pg.stop()
            shutil.rmtree(self.pg.base, ignore_errors=True)
