"""``lineageflow keygen`` and ``lineageflow verify``: the signing key pair, and
a registered version checked before anyone loads it (README "Verifying a model
before you load it"). Registered on the ``lineageflow`` command by flows.cli."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from lineageflow.attest.keys import KEY_ENV
from lineageflow.attest.keys import keygen as make
from lineageflow.errors import LineageflowError
from lineageflow.workspace import default_workspace


def _one_line(fn):
    """A bad key, URI or path is one line on stderr and exit code 2 (as every
    ``lineageflow`` command); a model that does not verify is exit code 1."""

    @functools.wraps(fn)
    def command(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LineageflowError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return command


@_one_line
def keygen(
    directory: Annotated[
        Path,
        typer.Argument(help="Directory for signing.key (mode 600) and signing.pub."),
    ],
    curve: Annotated[
        str, typer.Option(help="P-256, P-384 or P-521 (model signing's EC curves).")
    ] = "P-256",
) -> None:
    """Write an EC signing key pair; promotions sign with it once
    LINEAGEFLOW_SIGNING_KEY names the private key."""
    priv, pub = make(directory, curve)
    typer.echo(f"private key {priv} (mode 600): export {KEY_ENV}={priv.resolve()}")
    typer.echo(f"public key  {pub}: hand it to whoever loads the models")


@_one_line
def verify(
    model_uri: Annotated[
        str, typer.Argument(help="models:/NAME@staging or models:/NAME/VERSION.")
    ],
    key: Annotated[
        Path | None,
        typer.Option("--key", help="The public key (PEM) promotions sign with."),
    ] = None,
    cert_chain: Annotated[
        list[Path] | None,
        typer.Option(
            "--cert-chain",
            metavar="CA.pem",
            help="For certificate-signed promotions: the CA certificate(s) (PEM) "
            "the signing certificate must chain to; repeat for several.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON.")
    ] = False,
    workspace: Annotated[
        Path | None,
        typer.Option(
            help="Workspace whose local MLflow store holds the model (default: "
            "MLFLOW_TRACKING_URI, else the current directory)."
        ),
    ] = None,
) -> None:
    """Check every model file against its signature and the signed lineage,
    checks and promotion history; exit 0 only if everything verifies."""
    # lazy, all: they import MLflow (2 s), which `lineageflow --help` never needs
    from lineageflow.attest import verify as attestation
    from lineageflow.attest.render import render
    from lineageflow.runs.store import tracking_uri_for

    ws = default_workspace(workspace)
    uri = tracking_uri_for(ws)
    with tempfile.TemporaryDirectory(prefix="lineageflow-verify-") as tmp:
        found = attestation.verify(
            model_uri, key, uri, Path(tmp), cert_chain or None, workspace=ws
        )
    out = found.to_json()
    typer.echo(json.dumps(out, indent=2) if as_json else render(found))
    if not as_json:  # stdout stays the verdict's lines; JSON carries both
        for line in found.warnings:
            typer.echo(f"warning: {line}", err=True)
        if found.artifacts and not found.ok:
            typer.echo(f"artifacts read from {found.artifacts}", err=True)
    if not found.ok:
        raise typer.Exit(1)
