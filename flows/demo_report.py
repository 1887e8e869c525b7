"""What ``lineageflow demo`` prints at the end: the runs, the model versions
with their stage, checks and signer, and how to verify and browse them."""

from __future__ import annotations

import warnings
from pathlib import Path

from lineageflow.attest import keys
from lineageflow.runs.store import client, redact_uri
from lineageflow.tags import TAG_CHECKS, TAG_GIT_COMMIT, TAG_SIGNED_BY


def describe(tracking_uri: str, summaries: list[dict], ws: Path) -> str:
    """A short report: runs, model versions and stages, how to open the UI."""
    c = client(tracking_uri)
    lines = [
        "",
        f"workspace: {ws}",
        f"MLflow:    {redact_uri(tracking_uri)}",
        "",
        "runs:",
    ]
    for s in summaries:
        lines.append(
            f"  {s['run_id']}  {s['model']} v{s['version']} -> {s['stage']:8s} "
            f"roc_auc={s['metrics']['roc_auc']:.4f}"
        )
    names = sorted({s["model"] for s in summaries if s.get("model")})
    lines.append("model versions:")
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mvs = c.search_model_versions(f"name = '{name}'")
        # search results carry no aliases on every store: read them off the model
        by_version: dict[str, list[str]] = {}
        for alias, v in c.get_registered_model(name).aliases.items():
            by_version.setdefault(str(v), []).append(alias)
        for mv in sorted(mvs, key=lambda m: int(m.version)):
            aliases = ",".join(by_version.get(str(mv.version), [])) or "-"
            lines.append(
                f"  {name} v{mv.version}: stage={mv.current_stage:9s} aliases={aliases:8s} "
                f"checks={mv.tags.get(TAG_CHECKS)} "
                f"commit={mv.tags.get(TAG_GIT_COMMIT, '')[:10]} "
                f"signed_by={mv.tags.get(TAG_SIGNED_BY, '-')[:12]}"
            )
        pub = keys.public_path()
        if name and pub is not None and c.get_registered_model(name).aliases:
            lines += [
                "",
                "verify the Staging model before you load it:",
                f"  lineageflow verify models:/{name}@staging --key {pub} "
                f"--workspace {ws}",
            ]
    if tracking_uri.startswith("sqlite:"):
        lines += [
            "",
            "open the MLflow UI with:",
            f"  mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1",
        ]
    return "\n".join(lines)
