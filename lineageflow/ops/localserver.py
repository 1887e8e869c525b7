"""One local Prefect server shared by ``lineageflow`` commands (default mode).

With no ``PREFECT_API_URL``, Prefect starts a temporary server in every process
(3.5-7 s of every ``lineageflow train`` here, measured) and its runs cannot be
browsed afterwards. Instead the first command starts one server for this
``PREFECT_HOME`` with Prefect's own ``prefect server start --background`` (API,
UI and services; ``$PREFECT_HOME/prefect.db``; its PID in Prefect's
``server.pid``), and ``prefect server stop`` stops it. lineageflow adds only
what those commands lack: a free port on 127.0.0.1, recorded with the API URL in
``$PREFECT_HOME/lineageflow-server.json`` (Prefect's PID file holds no address)
so later commands find it; the idle stop (a watcher process, after
``LINEAGEFLOW_SERVER_IDLE`` s without a command, default 1800); a restart on the
same port when the server goes away while a command runs. Whether it answers is
a GET of ``/health`` (milliseconds), not ``prefect server status`` (about 2 s of
CLI start per command). ``LINEAGEFLOW_LOCAL_SERVER=0`` keeps Prefect's temporary
server; a configured ``PREFECT_API_URL`` (a team server) is used as it is, once
it answers (lineageflow.ops.prefect_api).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from lineageflow.errors import LineageflowError
from lineageflow.ops.prefect_api import check_answers, healthy
from lineageflow.ops.procs import alive, free_port

STATE = "lineageflow-server.json"
USED = "lineageflow-server.used"  # touched while a command uses the server
PREFECT_PID = "server.pid"  # prefect.cli._server_utils.SERVER_PID_FILE_NAME
IDLE_DEFAULT, START_TIMEOUT = 1800.0, 90.0


def idle_seconds() -> float:
    return float(os.environ.get("LINEAGEFLOW_SERVER_IDLE", IDLE_DEFAULT))


def enabled() -> bool:
    off = ("0", "false", "no", "off")
    return os.environ.get("LINEAGEFLOW_LOCAL_SERVER", "1").lower() not in off


def _home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser()


def _recorded(home: Path) -> dict | None:
    try:
        state = json.loads((home / STATE).read_text())
        return {"pid": int(state["pid"]), "api": str(state["api"])} | state
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(home: Path | None = None) -> dict | None:
    """The recorded server when its process lives and answers, else None."""
    state = _recorded(home or _home())
    if state and alive(state["pid"]) and _ours(state["pid"]) and healthy(state["api"]):
        return state
    return None


def _ours(pid: int) -> bool:
    """The PID is still a Prefect server (not a reused PID of something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"prefect.server.api.server:create_app" in cmdline


def _prefect(home: Path, *args: str, port: int | None = None) -> str:
    """``prefect server ...`` for this PREFECT_HOME, in a session of its own (a
    background server outlives the command, by design); its output."""
    env = dict(
        os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    if port:
        env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "server", *args],
        env=env,
        cwd=str(home),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        timeout=120,
    )
    return (proc.stdout + proc.stderr).strip()


def ensure(home: Path | None = None, port: int | None = None) -> str:
    """The API URL of this PREFECT_HOME's local server, started when needed
    (on ``port`` when given: a restart keeps the address clients already use).

    A lock file serialises two commands that start at once: the second waits
    and finds the server the first started."""
    home = home or _home()
    home.mkdir(parents=True, exist_ok=True)
    if state := running(home):
        return state["api"]
    with open(home / "lineageflow-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if state := running(home):
            return state["api"]
        _forget_dead(home)
        port = port or free_port()
        api = f"http://127.0.0.1:{port}/api"
        args = ("start", "--background", "--host", "127.0.0.1", "--port", str(port))
        out = _prefect(home, *args, port=port)
        log = home / "lineageflow-server.log"
        with open(log, "a") as fh:
            fh.write(out + "\n")
        pid = _prefect_pid(home)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and pid and alive(pid):
            if healthy(api, timeout=1.0):
                state = {"pid": pid, "api": api, "started": time.time()}
                (home / STATE).write_text(json.dumps(state))
                (home / USED).touch()
                _watch(home, pid, log)
                print(
                    f"started the local Prefect server lineageflow commands share: "
                    f"UI http://127.0.0.1:{port} (stops after "
                    f"{idle_seconds() / 60:.0f} min idle, or `lineageflow server stop`)",
                    file=sys.stderr,
                    flush=True,
                )
                return api
            time.sleep(0.1)
        _stop_pid(home, pid)
        why = out.splitlines()[-1] if out else "no output"
        raise LineageflowError(
            f"the local Prefect server did not start in {START_TIMEOUT:.0f} s "
            f"({why}): see {log}, or set PREFECT_API_URL to a running server"
        )


def _prefect_pid(home: Path) -> int | None:
    try:
        return int((home / PREFECT_PID).read_text())
    except (OSError, ValueError):
        return None


def _forget_dead(home: Path) -> None:
    """Prefect refuses to start while its PID file exists: drop a file whose
    server is gone (killed, or the machine restarted), stop a server of ours
    that no longer answers, and leave anyone else's alone."""
    pid = _prefect_pid(home)
    if pid is None or not (alive(pid) and _ours(pid)):
        (home / PREFECT_PID).unlink(missing_ok=True)
        return
    state = _recorded(home)
    if state is None or state["pid"] != pid:
        raise LineageflowError(
            f"a Prefect server started with `prefect server start --background` "
            f"runs for {home} (pid {pid}): set PREFECT_API_URL to its API, or stop "
            "it with `prefect server stop`"
        )
    _stop_pid(home, pid)  # ours, but it does not answer


def _stop_pid(home: Path, pid: int | None, timeout: float = 20.0) -> None:
    """``prefect server stop`` (SIGTERM to the PID in its file), then SIGKILL if
    the server has not ended within ``timeout`` seconds."""
    if pid and alive(pid) and _ours(pid):
        if _prefect_pid(home) == pid:
            _prefect(home, "stop")
        else:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (home / PREFECT_PID).unlink(missing_ok=True)


def stop(home: Path | None = None) -> str | None:
    """Stop the recorded server; the API URL it had, or None."""
    home = home or _home()
    state = _recorded(home)
    if state is None:
        return None
    _stop_pid(home, state["pid"])
    (home / STATE).unlink(missing_ok=True)
    return state.get("api")


def _watch(home: Path, pid: int, log: Path) -> None:
    """The idle watcher: a process of its own, which ends with the server."""
    with open(log, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "lineageflow.ops.localserver", str(pid)],
            env=dict(os.environ, PREFECT_HOME=str(home)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(home),
        )


def watch_idle(home: Path, pid: int, idle: float) -> None:
    """Stop the server ``pid`` once no command has used it for ``idle`` seconds."""
    while alive(pid):
        try:
            quiet = time.time() - (home / USED).stat().st_mtime
        except OSError:
            quiet = idle + 1
        if quiet > idle:
            print(f"idle for {idle:.0f} s: stopping", flush=True)
            state = _recorded(home)
            if state and state["pid"] == pid:
                stop(home)
            else:
                _stop_pid(home, pid)
            return
        time.sleep(min(1.0, idle / 4))


@contextlib.contextmanager
def api_for_commands() -> Iterator[str | None]:
    """Point this process's Prefect client at the local server when no API URL
    is configured; yields the URL used (None: Prefect's temporary server)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured or not enabled():  # a configured API must answer: one line if not
        yield check_answers(configured) if configured else None
        return
    home = _home()
    api = ensure(home)
    (home / USED).touch()
    done = threading.Event()
    threading.Thread(target=_keep_serving, args=(home, api, done), daemon=True).start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api
    finally:
        (home / USED).touch()
        done.set()


def _keep_serving(home: Path, api: str, done: threading.Event) -> None:
    """While a command runs: keep the server from idling out (a long fit makes no
    request), and if it goes away (killed, crashed), start it again at once on
    the same port and database. The command's Prefect client retries its calls
    for about a minute, so the flow run carries on where it was; the user gets
    one line, not Prefect's retries and tracebacks."""
    port = urlparse(api).port
    every, last_touch = 1.0, time.monotonic()
    touch_every = min(30.0, idle_seconds() / 3)
    while not done.wait(every):
        state = _recorded(home)
        if state is not None and alive(state["pid"]) and _ours(state["pid"]):
            if time.monotonic() - last_touch >= touch_every:
                (home / USED).touch()
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


if __name__ == "__main__":  # the idle watcher (``_watch``)
    watch_idle(_home(), int(sys.argv[1]), idle_seconds())
