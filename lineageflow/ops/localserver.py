"""One local Prefect server shared by ``lineageflow`` commands (default mode).

With no ``PREFECT_API_URL``, Prefect starts a temporary server in every process
and stops it at exit: 3.5-7 s of every ``lineageflow train`` on this machine
(measured), and the runs cannot be browsed afterwards. Instead the first
command starts one server for this ``PREFECT_HOME`` (same database as the
temporary one: ``$PREFECT_HOME/prefect.db``), bound to 127.0.0.1 on a free
port, as ``prefect server start`` runs it (API, UI, services), and records it in
``$PREFECT_HOME/lineageflow-server.json``. Later commands find it there and
start nothing. It stops itself after ``LINEAGEFLOW_SERVER_IDLE`` seconds without
a request (default 1800), or on ``lineageflow server stop``.

``LINEAGEFLOW_LOCAL_SERVER=0`` keeps Prefect's own temporary server. A
configured ``PREFECT_API_URL`` (a team server) is always used as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from lineageflow.ops.procs import alive, free_port, stop_group

STATE = "lineageflow-server.json"
IDLE_DEFAULT = 1800.0
START_TIMEOUT = 90.0


def idle_seconds() -> float:
    return float(os.environ.get("LINEAGEFLOW_SERVER_IDLE", IDLE_DEFAULT))


def enabled() -> bool:
    return os.environ.get("LINEAGEFLOW_LOCAL_SERVER", "1").lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


def _home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser()


def _healthy(url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def running(home: Path | None = None) -> dict | None:
    """The recorded server when its process lives and answers, else None."""
    path = (home or _home()) / STATE
    try:
        state = json.loads(path.read_text())
        pid, api = int(state["pid"]), str(state["api"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if alive(pid) and _ours(pid) and _healthy(api):
        return state
    return None


def ensure(home: Path | None = None, port: int | None = None) -> str:
    """The API URL of this PREFECT_HOME's local server, started when needed
    (on ``port`` when given: a restart keeps the address clients already use).

    A lock file serialises two commands that start at once: the second waits
    and finds the server the first started."""
    import fcntl

    from lineageflow.errors import LineageflowError

    home = home or _home()
    home.mkdir(parents=True, exist_ok=True)
    if state := running(home):
        return state["api"]
    with open(home / "lineageflow-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if state := running(home):
            return state["api"]
        port = port or free_port()
        api = f"http://127.0.0.1:{port}/api"
        log = home / "lineageflow-server.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lineageflow.ops.localserver", str(port)],
                env=dict(
                    os.environ,
                    PREFECT_HOME=str(home),
                    PREFECT_SERVER_API_HOST="127.0.0.1",
                    PREFECT_SERVER_API_PORT=str(port),
                    PREFECT_UI_API_URL=api,
                    PREFECT_SERVER_ANALYTICS_ENABLED="false",
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives this command, by design
                cwd=str(home),
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LineageflowError(
                    f"the local Prefect server exited ({proc.returncode}) while "
                    f"starting: see {log}, or set PREFECT_API_URL to a running server"
                )
            if _healthy(api, timeout=1.0):
                state = {"pid": proc.pid, "api": api, "started": time.time()}
                (home / STATE).write_text(json.dumps(state))
                print(
                    f"started the local Prefect server lineageflow commands share: "
                    f"UI http://127.0.0.1:{port} (stops after "
                    f"{idle_seconds() / 60:.0f} min idle, or `lineageflow server stop`)",
                    file=sys.stderr,
                    flush=True,
                )
                return api
            time.sleep(0.1)
        stop_group(proc.pid, interrupts=0, timeout=10)
        raise LineageflowError(
            f"the local Prefect server did not answer in {START_TIMEOUT:.0f} s: see "
            f"{log}, or set PREFECT_API_URL to a running server"
        )


def _ours(pid: int) -> bool:
    """The PID is still our server (not a reused PID of something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"lineageflow.ops.localserver" in cmdline


def stop(home: Path | None = None) -> str | None:
    """Stop the recorded server (by PID); the API URL it had, or None."""
    home = home or _home()
    path = home / STATE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(state.get("pid", 0))
    if pid > 0 and alive(pid) and _ours(pid):
        stop_group(pid, interrupts=0, timeout=10)
    path.unlink(missing_ok=True)
    return state.get("api")


@contextlib.contextmanager
def api_for_commands() -> Iterator[str | None]:
    """Point this process's Prefect client at the local server when no API URL
    is configured; yields the URL used (None: Prefect's temporary server)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value() or not enabled():
        yield PREFECT_API_URL.value() or None
        return
    home = _home()
    api = ensure(home)
    done = threading.Event()
    threading.Thread(target=_keep_serving, args=(home, api, done), daemon=True).start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api
    finally:
        done.set()


def _keep_serving(home: Path, api: str, done: threading.Event) -> None:
    """While a command runs: keep the server from idling out (a long fit makes no
    request), and if it goes away (killed, crashed), start it again at once on
    the same port and database. The command's Prefect client retries its calls
    for about a minute, so the flow run carries on where it was; the user gets
    one line, not Prefect's retries and tracebacks."""
    from urllib.parse import urlparse

    port = urlparse(api).port
    every, last_touch = 1.0, time.monotonic()
    touch_every = min(30.0, idle_seconds() / 3)
    while not done.wait(every):
        state = _recorded(home)
        if state is not None and alive(state["pid"]) and _ours(state["pid"]):
            if time.monotonic() - last_touch >= touch_every:
                _healthy(api)
                last_touch = time.monotonic()
            continue
        if done.is_set():
            return
        gone = state["pid"] if state else "?"
        print(
            f"the local Prefect server (pid {gone}) stopped while this command ran: "
            f"starting it again on {api} and carrying on",
            file=sys.stderr,
            flush=True,
        )
        try:
            ensure(home, port=port)
        except Exception as exc:  # noqa: BLE001 - one line, the command's own error follows
            print(f"could not start it again: {exc}", file=sys.stderr, flush=True)
            return


def _recorded(home: Path) -> dict | None:
    try:
        state = json.loads((home / STATE).read_text())
        return {"pid": int(state["pid"]), "api": str(state["api"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- the server


def serve(port: int, idle: float) -> None:
    """Prefect's server as ``prefect server start`` runs it (API, UI and its
    services: webserver-only would record no task runs, as the task run recorder
    and event persister are services) until idle for ``idle`` s."""
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app(final=True)
    last = [time.monotonic()]

    async def touched(scope, receive, send):
        last[0] = time.monotonic()
        await app(scope, receive, send)

    config = uvicorn.Config(
        touched, host="127.0.0.1", port=port, log_level="error", lifespan="on"
    )
    server = uvicorn.Server(config)

    def watchdog() -> None:
        while not (server.started or server.should_exit):  # startup is not idling
            time.sleep(0.1)
        last[0] = time.monotonic()
        while not server.should_exit:
            if time.monotonic() - last[0] > idle:
                print(f"idle for {idle:.0f} s: stopping", flush=True)
                server.should_exit = True
            time.sleep(min(1.0, idle / 4))

    threading.Thread(target=watchdog, daemon=True).start()
    server.run()


if __name__ == "__main__":
    serve(int(sys.argv[1]), idle_seconds())
