"""The ``lineageflow`` command. Errors are one line on stderr and exit code 2.

Each command imports the flow it runs when it runs: importing the flows (Prefect,
MLflow, DVC, scikit-learn, xgboost) takes 4-5 s here (measured), and
``lineageflow --help`` or a refused workspace should answer at once.
"""

from __future__ import annotations

import atexit
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from flows import verify as attest_commands
from lineageflow.config import load_params
from lineageflow.data.source import open_source
from lineageflow.errors import as_user_error
from lineageflow.ops import localserver
from lineageflow.ops.procs import exit_now, quiet_libraries, telemetry_off
from lineageflow.runs.orchestration import one_line_user_errors
from lineageflow.workspace import default_workspace, open_workspace

app = typer.Typer(
    help="Retrain tabular models under Prefect with git + DVC lineage, promoting to "
    "MLflow Staging only when the lineage checks pass.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


_errors: list[str] = []


def _print_errors() -> None:
    for line in _errors:
        print(line, file=sys.stderr, flush=True)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        if (err := as_user_error(exc)) is None:
            raise
        _errors.append(f"error: {err}")  # printed last, after Prefect's log lines
        raise typer.Exit(2) from None


def _on_prefect(fn):
    """Run a flow-running command with no PREFECT_API_URL on the local Prefect
    server the commands share (lineageflow.ops.localserver), not a temporary one."""

    def wrapper(*args, **kwargs):
        with localserver.api_for_commands():
            return fn(*args, **kwargs)

    return wrapper


server_app = typer.Typer(
    help="The local Prefect server lineageflow commands share when no "
    "PREFECT_API_URL is set.",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")


@server_app.command("status")
def server_status() -> None:
    """Say whether the local server runs, and its API URL."""
    state = localserver.running()
    if state is None:
        typer.echo("no local Prefect server is running")
        raise typer.Exit(1)
    typer.echo(f"local Prefect server pid {state['pid']}: {state['api']}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local server (it also stops itself when idle)."""
    api = localserver.stop()
    typer.echo(f"stopped the local Prefect server {api}" if api else "none was running")


Workspace = Annotated[
    Path,
    typer.Argument(help="Path of the workspace git repo (params.yaml + .dvc files)."),
]


@app.command()
def train(
    workspace: Workspace = Path("."),
    reuse: Annotated[
        bool,
        typer.Option(
            help="Take the verified outputs of earlier stages whose inputs, params, "
            "code and libraries are unchanged; --no-reuse recomputes every stage."
        ),
    ] = True,
) -> None:
    """Run the training-pipeline flow on WORKSPACE once."""
    from flows.training import run_workspace  # lazy: Prefect+MLflow, not for --help

    one_line_user_errors()
    summary = _run(_validated(_on_prefect(run_workspace)), workspace, reuse=reuse)
    _print_summary(summary)


def _validated(fn):
    """Check the workspace and params before Prefect starts (fast, one line)."""

    def wrapper(workspace, *a, **kw):
        ws = open_workspace(workspace)
        cfg = load_params(ws.params_path())
        for d in cfg.data.datasets:
            open_source(ws, d, cfg.data.remote).validate()
        return fn(ws.root, *a, **kw)

    return wrapper


def _print_summary(s: dict) -> None:
    outcome = (
        f"identical to v{s['identical_to']} (already in Staging), nothing registered"
        if s.get("identical_to")
        else f"v{s['version']} -> {s['stage']}"
    )
    typer.echo(
        f"run {s['run_id']}: {s['model']} {outcome}; "
        + ", ".join(f"{k}={v:.4f}" for k, v in sorted(s["metrics"].items()))
    )
    if s.get("reused"):
        taken = ", ".join(f"{r['stage']} from run {r['from_run']}" for r in s["reused"])
        typer.echo(f"unchanged, outputs reused after their digest checks: {taken}")


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Model version number to re-check.")],
    workspace: Annotated[
        Path, typer.Option(help="Workspace git repo the version was trained from.")
    ] = Path("."),
) -> None:
    """Re-run the lineage checks on a registered version and promote it to Staging
    if they pass (e.g. after `dvc push` fixed a refused version)."""
    from flows.promote import promote_version  # lazy: Prefect+MLflow, not for --help

    one_line_user_errors()
    msg = _run(_on_prefect(promote_version), model, version, str(workspace))
    typer.echo(msg)


@app.command()
def reproduce(
    run_id: Annotated[
        str, typer.Argument(help="MLflow parent run id, or models:/NAME/VERSION.")
    ],
    workspace: Annotated[
        Path | None,
        typer.Option(
            help="Workspace git repo the run was trained from. Default: the current "
            "directory when it is a workspace and MLFLOW_TRACKING_URI is unset, else "
            "the recorded workspace (cloned from its recorded URL if not here)."
        ),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option(
            min=0.0, help="Largest metric difference still 'within_tolerance'."
        ),
    ] = 0.0,
) -> None:
    """Rebuild a past run from its recorded workspace commit, DVC data, params and
    lineageflow code, rerun it, and compare every metric
    (exact / within_tolerance / diverged / unpinned)."""
    from flows.reproduce import reproduce_run  # lazy: Prefect+MLflow, not for --help

    one_line_user_errors()
    workspace = default_workspace(workspace)
    out = _run(
        _on_prefect(reproduce_run),
        run_id=run_id,
        workspace=str(workspace) if workspace else None,
        tolerance=tolerance,
    )
    typer.echo(
        f"{out['verdict']}: run {out['run_id']} reproduced as {out['reproduction_run_id']}"
    )
    for note in out["notes"]:
        typer.echo(f"  {note}")


@app.command()
def diff(
    run_a: Annotated[
        str, typer.Argument(help="MLflow parent run id, or models:/NAME/VERSION.")
    ],
    run_b: Annotated[
        str, typer.Argument(help="MLflow parent run id, or models:/NAME/VERSION.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the differences as JSON.")
    ] = False,
    workspace: Annotated[
        Path | None,
        typer.Option(
            help="Workspace whose local MLflow store holds the runs (default: "
            "MLFLOW_TRACKING_URI, else the current directory)."
        ),
    ] = None,
) -> None:
    """What differs between two runs: code (commits, files changed), data (md5s,
    rows), params (key by key), environment and holdout metrics."""
    from lineageflow.reproduce.diff import collect, render  # lazy: MLflow, 2 s
    from lineageflow.runs.store import tracking_uri_for  # lazy: MLflow, 2 s

    def run():
        ws = default_workspace(workspace)
        return collect(tracking_uri_for(ws), run_a, run_b, workspace=ws)

    out = _run(run)
    typer.echo(json.dumps(out, indent=2, default=str) if as_json else render(out))


class DemoSource(StrEnum):
    dvc = "dvc"
    delta = "delta"
    notebook = "notebook"


@app.command()
def demo(
    dir: Annotated[
        Path, typer.Option("--dir", help="Where to build workspace/ and dvc-remote/.")
    ] = Path("demo"),
    rows: Annotated[
        int, typer.Option(min=1000, help="Rows of data version 1 (version 2 adds 40%).")
    ] = 60_000,
    force: Annotated[
        bool, typer.Option(help="Rebuild DIR if it holds an earlier demo.")
    ] = False,
    dvc_remote: Annotated[
        str | None,
        typer.Option(
            help="DVC remote URL, e.g. s3://bucket/dvc (endpoint and keys from the "
            "environment); default: a local dvc-remote/ directory."
        ),
    ] = None,
    source: Annotated[
        DemoSource,
        typer.Option(
            help="dvc: DVC-tracked CSV files; delta: a Delta table beside the "
            "workspace (two versions), then a reproduction of the first run; "
            "notebook: DVC files, and a committed notebook trains the model.",
        ),
    ] = DemoSource.dvc,
) -> None:
    """Build a demo workspace, train on data v1, add drifted data v2, retrain."""
    from flows.demo import run_demo  # lazy: Prefect+MLflow+DVC, not for --help

    one_line_user_errors()
    _run(
        _on_prefect(run_demo),
        dir,
        rows,
        force,
        echo=typer.echo,
        remote=dvc_remote,
        source=source.value,
    )


app.command("keygen")(attest_commands.keygen)
app.command("verify")(attest_commands.verify)


def main() -> None:
    telemetry_off()
    quiet_libraries()
    atexit.register(_print_errors)  # registered first, so it runs last (LIFO)
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        exit_now(130)
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)


if __name__ == "__main__":
    main()
