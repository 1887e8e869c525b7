"""`make stack` / `make stack-down`: the state another process needs to stop a
stack by PID (stack.json), and the files a user sources, mode 600: env.sh (the
pipeline identity), reader.env.sh (the reader), secrets.json (every secret,
the MLflow admin's included)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from deployments.access import private_file
from deployments.services import Postgres
from lineageflow.ops.procs import alive, stop_group

if TYPE_CHECKING:
    from deployments.stack import TeamStack

ENV_FILES = {"pipeline": "env.sh", "reader": "reader.env.sh"}


def save(stack: TeamStack) -> None:
    base = stack.base
    state = {
        "ports": stack.ports,
        "pids": {n: [p.pid, p.interrupts] for n, p in stack.procs.items()},
        "pg": str(stack.pg.base) if stack.pg else None,
        "dask": stack.dask_address,
    }
    (base / "stack.json").write_text(json.dumps(state, indent=2))
    stack.secrets.save(base)
    for identity, name in ENV_FILES.items():
        env = stack.client_env(identity)
        lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
        private_file(base / name, "\n".join(lines) + "\n")


def stop_saved(base: Path) -> list[str]:
    """Stop, newest first, what the stack saved in `base` started."""
    state_file = base / "stack.json"
    if not state_file.exists():
        return []
    state = json.loads(state_file.read_text())
    stopped = []
    for name, (pid, interrupts) in reversed(list(state["pids"].items())):
        if alive(pid):
            stop_group(pid, interrupts)
            stopped.append(name)
    if state.get("pg"):
        Postgres(Path(state["pg"]), state["ports"]["pg"]).stop()
        shutil.rmtree(state["pg"], ignore_errors=True)
        stopped.append("postgresql")
    state_file.unlink()
    return stopped
