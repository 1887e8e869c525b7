"""Real tools in temp dirs: git repos, `dvc init` with a local remote, MLflow on a
temp sqlite store, and Prefect's test harness (a real temporary API server)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def pipeline_snapshot() -> Path | None:
    """The lineageflow code under test, committed in a git repo of its own.

    Runs record the pipeline commit and refuse uncommitted pipeline code
    (check code_committed), so tests that expect a promotion must not depend on
    whether the developer's checkout has uncommitted edits. Every file git would
    commit (tracked or new, as it is on disk) is copied and committed; this
    process and its subprocesses import lineageflow from there (PYTHONPATH
    comes before the editable install's finder; pytest's import mode is
    `append`, so it does not put the checkout back in front). None outside a git
    checkout.
    """
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return None
    dest = Path(tempfile.mkdtemp(prefix="lineageflow-tests-pipeline-")) / "lineageflow"
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if rel.startswith("tests/"):  # the tests themselves run from the checkout
            continue
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "lineageflow under test"],
    ):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest


PIPELINE = pipeline_snapshot()
if PIPELINE is not None:
    import atexit
    import sys

    atexit.register(shutil.rmtree, PIPELINE.parent, ignore_errors=True)
    sys.path.insert(0, str(PIPELINE))
    os.environ["LINEAGEFLOW_TEST_PIPELINE"] = str(PIPELINE)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PIPELINE), os.environ.get("PYTHONPATH")) if p
    )

# a shell that sourced the team stack's env.sh names its Dask scheduler: the
# suite's dask runs start their own LocalCluster unless a test names one
os.environ.pop("LINEAGEFLOW_DASK_ADDRESS", None)
os.environ.update(
    {
        # subprocesses (CLI, workers) must not write into the user's ~/.prefect
        "PREFECT_HOME": tempfile.mkdtemp(prefix="lineageflow-tests-prefect-"),
        "DO_NOT_TRACK": "true",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # commits made by tests need an identity; never touch the global git config
        "GIT_AUTHOR_NAME": "lineageflow tests",
        "GIT_AUTHOR_EMAIL": "tests@lineageflow.invalid",
        "GIT_COMMITTER_NAME": "lineageflow tests",
        "GIT_COMMITTER_EMAIL": "tests@lineageflow.invalid",
        # local Prefect servers a CLI test starts (lineageflow.ops.localserver) carry
        # this mark, so the session stops every one of them; idle ones end sooner
        "LINEAGEFLOW_TEST_SESSION": uuid.uuid4().hex,
        "LINEAGEFLOW_SERVER_IDLE": "600",
        # the default promotion signing key is generated here, not in ~/.local/state
        "XDG_STATE_HOME": tempfile.mkdtemp(prefix="lineageflow-tests-state-"),
    }
)


def local_servers_of_this_session() -> list[int]:
    mark = f"LINEAGEFLOW_TEST_SESSION={os.environ['LINEAGEFLOW_TEST_SESSION']}"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        ours = (b"prefect.server.api.server:create_app", b"lineageflow.ops.localserver")
        if any(o in cmdline for o in ours) and mark.encode() in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def stop_local_servers():
    """Stop, by PID, the local Prefect servers this session's commands started."""
    yield
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = local_servers_of_this_session()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = local_servers_of_this_session()
            time.sleep(0.2)


# a test that uses one of these starts (or shares) a real server: not a unit test
SERVER_FIXTURES = {"prefect_api", "prefect_api_url"}


def pytest_collection_modifyitems(items) -> None:
    """Mark every test that needs a server ``server`` (``make test-unit`` runs
    the others: no server, no README run)."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def team(tmp_path_factory):
    """The team stack (deployments/stack.py) with two workers, shared by the
    modules that test the product on it (test_team_faults restarts its MLflow
    server, and starts it again as it was)."""
    from deployments.stack import TeamStack

    stack = TeamStack(tmp_path_factory.mktemp("stack"), workers=2).up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API for the session (starting one costs ~6-9 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_api) -> str:
    """The harness's API address, for subprocesses that should share it."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def session_tracking_uri(tmp_path_factory) -> str:
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return f"sqlite:///{db}"


@pytest.fixture(autouse=True)
def clean_mlflow(monkeypatch):
    """No MLFLOW_* from the environment leaks in; no active run leaks out."""
    for key in list(os.environ):
        if key.startswith("MLFLOW_") and key not in (
            "MLFLOW_ENABLE_TELEMETRY",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
        ):
            monkeypatch.delenv(key)
    yield
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()


def small_params(model_name: str, **overrides) -> str:
    from flows.demo import default_params_text

    params = yaml.safe_load(default_params_text())
    params["train"]["xgboost"].update(n_estimators=25, max_depth=4)
    params["register"]["model_name"] = model_name
    params["evaluate"]["threshold"] = 0.6
    for dotted, value in overrides.items():
        node = params
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})  # a section the defaults leave out
        node[last] = value
    return yaml.safe_dump(params, sort_keys=False)


class WorkspaceFactory:
    """Builds real workspaces: git repo, DVC, local remote, committed data."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path

    def __call__(
        self,
        rows: int = 3000,
        push: bool = True,
        remote: str | None = None,
        **overrides,
    ):
        from flows.demo import DemoPaths, add_data_version, init_workspace

        paths = DemoPaths(self.tmp_path / f"ws-{uuid.uuid4().hex[:6]}")
        paths.base.mkdir()
        self.model_name = f"model-{uuid.uuid4().hex[:8]}"
        init_workspace(
            paths,
            params_text=small_params(self.model_name, **overrides),
            remote=remote,
        )
        add_data_version(
            paths.workspace, 0, rows, seed=7, drift=0.0, message="data v1", push=push
        )
        return paths


@pytest.fixture
def make_workspace(tmp_path) -> WorkspaceFactory:
    return WorkspaceFactory(tmp_path)


@pytest.fixture
def tracking(monkeypatch, session_tracking_uri) -> str:
    """Point the pipeline at the session's sqlite store via MLflow's own variable."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", session_tracking_uri)
    return session_tracking_uri


def pytest_terminal_summary(terminalreporter) -> None:
    """A skip for a missing Debian package is no pass: name the tests that did not
    run and the one command that installs what they need."""
    import re

    missing: dict[str, list[str]] = {}
    for rep in terminalreporter.stats.get("skipped", []):
        reason = (
            rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        )
        found = re.search(r"needs Debian's (\S+)", reason)
        if found:
            missing.setdefault(found.group(1), []).append(rep.nodeid)
    if not missing:
        return
    tr = terminalreporter
    count = sum(len(v) for v in missing.values())
    tr.write_sep("=", f"{count} tests NOT RUN: Debian packages missing", red=True)
    for pkg, ids in sorted(missing.items()):
        tr.write_line(f"{pkg}: {len(ids)} tests, e.g. {ids[0]}")
    tr.write_line(
        "install them (as .ci/run does), then rerun `make test`: "
        f"apt-get install -y --no-install-recommends {' '.join(sorted(missing))}"
    )
