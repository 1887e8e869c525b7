"""``lineageflow demo``: a real git + DVC workspace with two data versions.

Layout under ``--dir``: ``workspace/`` (git repo, DVC, params.yaml, data pointers)
and ``dvc-remote/`` (a local-directory DVC remote). With ``--source delta`` the
same customers are a Delta table ``lake/customers`` beside the workspace, with
two versions (an append with drift); the first run is then reproduced by time
travel. With ``--source notebook`` a committed notebook (lineageflow's
``examples/train.ipynb``) is the model code. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import git
from dvc.cli import main as dvc_main

from flows.demo_report import describe
from flows.reproduce import reproduce_run
from flows.training import run_workspace
from lineageflow.data.synthetic import make_customers
from lineageflow.errors import LineageflowError, PromotionRefused, WorkspaceError
from lineageflow.workspace import Workspace

MARKER = ".lineageflow-demo"
DATASET = "data/customers"
NOTEBOOK, EXAMPLE = "notebooks/train.ipynb", "examples/train.ipynb"


def dvc(*args: str, cwd: Path) -> None:
    """Run a DVC command in-process (saves a ~1 s interpreter start per call).

    Quietly: `dvc init` prints its banner even with ``-q``, and a second time
    through Prefect's log handler; the demo says what happened in its own lines.
    On failure DVC's own output is part of the error."""
    here, out = os.getcwd(), io.StringIO()
    dvc_logger = logging.getLogger("dvc")
    level, propagate = dvc_logger.level, dvc_logger.propagate
    dvc_logger.setLevel(logging.WARNING)
    dvc_logger.propagate = False
    try:
        with contextlib.redirect_stdout(out):
            code = dvc_main(["--cd", str(cwd), "-q", *args])
    finally:
        os.chdir(here)  # `--cd` changes this process's directory and leaves it there
        dvc_logger.setLevel(level)
        dvc_logger.propagate = propagate
    if code != 0:
        said = " ".join(out.getvalue().split())[-300:]
        raise LineageflowError(
            f"`dvc {' '.join(args)}` failed in {cwd} (exit {code})"
            + (f": {said}" if said else "")
        )


def default_params_text() -> str:
    return files("lineageflow").joinpath("params.default.yaml").read_text()


def notebook_params() -> str:
    """The default params with the demo's notebook as the model code."""
    model = "  model: notebook\n  notebook: " + NOTEBOOK
    return re.sub(r"(?m)^  model: xgboost.*$", model, default_params_text())


@dataclass(frozen=True)
class DemoPaths:
    base: Path

    @property
    def workspace(self) -> Path:
        return self.base / "workspace"

    @property
    def remote(self) -> Path:
        return self.base / "dvc-remote"


def prepare_dir(base: Path, force: bool) -> DemoPaths:
    """Refuse to write over anything that is not an earlier demo."""
    paths = DemoPaths(base.resolve())
    if paths.base.exists() and any(paths.base.iterdir()):
        if not (paths.base / MARKER).exists():
            raise WorkspaceError(
                f"{paths.base} exists and is not a lineageflow demo: pass another --dir"
            )
        if not force:
            raise WorkspaceError(
                f"{paths.base} holds an earlier demo: pass --force to rebuild it"
            )
        shutil.rmtree(paths.base)
    paths.base.mkdir(parents=True, exist_ok=True)
    (paths.base / MARKER).write_text("made by `lineageflow demo`; safe to delete\n")
    return paths


def init_workspace(
    paths: DemoPaths, params_text: str | None = None, remote: str | None = None
) -> None:
    """A git repo with DVC, params.yaml and a default DVC remote: `remote` (a URL
    such as ``s3://bucket/path``; its endpoint and keys come from the environment
    or ``dvc remote modify --local``, never from a committed file) or the local
    ``dvc-remote/`` directory."""
    ws = paths.workspace
    ws.mkdir(parents=True)
    repo = git.Repo.init(ws, initial_branch="main")
    with repo.config_writer() as cw:  # a demo identity, local to this repo only
        cw.set_value("user", "name", "lineageflow demo")
        cw.set_value("user", "email", "demo@lineageflow.invalid")
    dvc("init", cwd=ws)
    dvc("remote", "add", "-d", "storage", remote or str(paths.remote), cwd=ws)
    # DVC's state DB and locks default to /var/tmp/dvc: keep them in the workspace
    # (config.local is git-ignored by DVC itself).
    dvc(
        "config",
        "--local",
        "core.site_cache_dir",
        str(ws / ".dvc" / "tmp" / "site"),
        cwd=ws,
    )
    dvc("config", "core.autostage", "true", cwd=ws)  # `dvc add` stages its .dvc file
    (ws / "params.yaml").write_text(params_text or default_params_text())
    (ws / ".gitignore").write_text(
        "# lineageflow writes its local stores here\n.lineageflow/\n"
    )
    (ws / "README.md").write_text(
        "# Demo workspace\n\nData pointers (`data/*.dvc`) and `params.yaml` for "
        "lineageflow's `training-pipeline` flow.\n"
    )
    repo.git.add(A=True)
    kind = "an S3" if (remote or "").startswith("s3://") else "a local"
    repo.index.commit(f"Initialise workspace: DVC with {kind} remote, params.yaml")


def add_data_version(
    ws: Path,
    part: int,
    rows: int,
    seed: int,
    drift: float,
    message: str,
    push: bool = True,
) -> str:
    """Write one more partition, `dvc add`, commit, `dvc push`; return the commit."""
    target = ws / DATASET
    target.mkdir(parents=True, exist_ok=True)
    make_customers(rows, seed=seed, drift=drift).to_csv(
        target / f"part-{part:03d}.csv", index=False
    )
    dvc("add", DATASET, cwd=ws)
    repo = git.Repo(ws)
    repo.git.add(f"{DATASET}.dvc", "data/.gitignore")
    commit = repo.index.commit(message).hexsha
    if push:
        dvc("push", cwd=ws)
    return commit


def run_demo(
    base: Path,
    rows: int,
    force: bool,
    echo=print,
    remote: str | None = None,
    source: str = "dvc",
) -> list[dict]:
    """The whole demo: workspace, v1, train, v2 (new rows with drift), retrain.
    ``source="notebook"``: a committed notebook trains the model."""
    paths = prepare_dir(base, force)
    if source == "delta":
        return _delta_demo(paths, rows, echo)
    init_workspace(
        paths,
        remote=remote,
        params_text=notebook_params() if source == "notebook" else None,
    )
    ws = paths.workspace
    if source == "notebook":
        (ws / NOTEBOOK).parent.mkdir()
        (ws / NOTEBOOK).write_text(files("lineageflow").joinpath(EXAMPLE).read_text())
        git.Repo(ws).git.add(NOTEBOOK)
        git.Repo(ws).index.commit("Training notebook: the model's code")

    def commit(part: int, n: int, drift: float, message: str) -> str:
        sha = add_data_version(
            ws, part, n, seed=1000 + part, drift=drift, message=message
        )
        return f"commit {sha[:10]}"

    return _train_each_version(ws, rows, commit, echo)


def _train_each_version(ws: Path, rows: int, add_version, echo) -> list[dict]:
    """Data v1 (``rows``) then v2 (40% more, drifted), each added by
    ``add_version(part, rows, drift, message)`` (which says where it went) and
    trained on; then the runs and versions, described."""
    versions = [
        (rows, 0.0, "Data v1: customers snapshot"),
        (
            int(rows * 0.4),
            0.6,
            "Data v2: new customers, prices and support load drifted",
        ),
    ]
    summaries = []
    for part, (n, drift, message) in enumerate(versions):
        where = add_version(part, n, drift, message)
        echo(f"== {message} ({n} rows, {where}): training")
        try:
            summaries.append(run_workspace(ws))
        except PromotionRefused as exc:
            echo(f"   not promoted: {exc}")
    echo(describe(Workspace(ws).tracking_uri(), summaries, ws))
    return summaries


def _delta_demo(paths: DemoPaths, rows: int, echo) -> list[dict]:
    """The demo on a Delta table outside the workspace: version 0, train; an
    append with drift (version 1), retrain; reproduce the first run."""
    from deltalake import write_deltalake

    table = paths.base / "lake" / "customers"
    params = default_params_text().replace(
        "datasets: [data/customers]   # DVC-tracked paths: a .csv/.parquet file, or a "
        "directory of them",
        f"datasets: [{{delta: '{table}'}}]   # a Delta table: version = the latest",
    )
    init_workspace(paths, params_text=params)
    ws = paths.workspace

    def append(part: int, n: int, drift: float, message: str) -> str:
        frame = make_customers(n, seed=1000 + part, drift=drift)
        write_deltalake(table, frame, mode="append")
        return f"Delta version {part} of {table}"

    summaries = _train_each_version(ws, rows, append, echo)
    if summaries:
        first = summaries[0]["run_id"]
        echo(f"\n== reproducing run {first} (Delta version 0, by time travel)")
        result = reproduce_run(first, workspace=str(ws))
        echo(f"   verdict: {result['verdict']}")
    return summaries
