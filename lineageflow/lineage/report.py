"""Lineage as people read it: the Prefect markdown summary of a run and the
registry page's description of a version."""

from __future__ import annotations

from collections.abc import Iterable

from lineageflow.data.source import version_of
from lineageflow.lineage.checks import Check
from lineageflow.lineage.record import digest
from lineageflow.tags import TAG_ATTESTATION, TAG_SIGNED_BY, TAG_SIGNED_MODEL_SHA256


def yes_no(value) -> str:
    """A flag as people read it (not Python's True/False)."""
    return "unknown" if value is None else ("yes" if value else "no")


def outcome_lines(outcome: str | None, metrics: dict[str, float] | None) -> str:
    """The run's result first, in plain words: which version, which stage, and the
    holdout metrics."""
    text = f"**{outcome}**\n\n" if outcome else ""
    if metrics:
        text += (
            "holdout metrics: "
            + ", ".join(f"{k} **{v:.4f}**" for k, v in sorted(metrics.items()))
            + "\n\n"
        )
    return text


def _where(entry: dict) -> str:
    """Where a data version lives: a DVC remote, or a table's own version."""
    version = version_of(entry)
    return f"{entry.get('kind')} {version}" if version else str(entry.get("remote"))


def markdown_summary(
    record: dict,
    checks: Iterable[Check],
    extra: str = "",
    *,
    outcome: str | None = None,
    metrics: dict[str, float] | None = None,
) -> str:
    ws = record["workspace"]
    rows = "\n".join(
        f"| {'✅' if c.passed else '❌'} | `{c.name}` | {c.reason} |" for c in checks
    )
    data = "\n".join(
        f"| `{d['path']}` | `{d['md5']}` | {d['size']} | {d['nfiles'] or 1} | "
        f"{_where(d)} | {yes_no(d['in_remote'])} |"
        for d in record["data"]
    )
    return (
        f"## Lineage of MLflow run `{record['mlflow']['parent_run_id']}`\n\n"
        + outcome_lines(outcome, metrics)
        + f"- workspace: `{ws['repo']}` @ `{ws['commit']}` "
        + (f"(branch `{ws['branch']}`, " if ws.get("branch") else "(detached, ")
        + f"uncommitted changes: {yes_no(ws['dirty'])})\n"
        f"- pipeline: lineageflow {record['pipeline'].get('version')} "
        f"@ `{record['pipeline'].get('commit')}` "
        f"(uncommitted changes: {yes_no(record['pipeline'].get('dirty'))})\n"
        + "".join(
            f"- workspace code: `{u['file']}:{u['function']}` "
            f"(train.{u['role']}, blob `{u['blob']}`)\n"
            for u in record.get("user_code", [])
        )
        + "".join(
            f"- stage `{s['name']}` unchanged: outputs reused from run "
            f"`{s['reused_from']}` (digests checked)\n"
            for s in record.get("stages", [])
            if "reused_from" in s
        )
        + f"- params sha256: `{record['params_sha256']}`\n"
        f"- digest: `{digest(record)}`\n\n"
        "| path | md5 | bytes | files | remote | in remote |\n|---|---|---|---|---|---|\n"
        f"{data}\n\n"
        "| | check | result |\n|---|---|---|\n"
        f"{rows}\n{extra}"
    )


def version_description(
    record: dict,
    checks: Iterable[Check],
    promoted: bool,
    signed: dict[str, str] | None = None,
) -> str:
    """Short markdown for the registry page: commit, data, checks with marks,
    and where the signature is (``signed``: the attestation's version tags)."""
    ws, pipe = record["workspace"], record.get("pipeline", {})
    checks = list(checks)
    state = "promoted to **Staging**" if promoted else "left in **None**"
    lines = [
        f"**Lineage** ({state}) — run `{record['mlflow']['parent_run_id']}`",
        "",
        f"- workspace `{ws['repo']}` @ `{ws['commit'][:12]}`"
        + (f" (branch `{ws['branch']}`)" if ws.get("branch") else ""),
        f"- lineageflow `{pipe.get('commit') or pipe.get('version')}`"
        + (" (uncommitted changes)" if pipe.get("dirty") else ""),
    ]
    lines += [
        f"- data `{d['path']}` "
        + (f"{v} " if (v := version_of(d)) else "")
        + f"md5 `{d['md5']}`"
        + (f" ({d['format']})" if d.get("format") else "")
        for d in record.get("data", [])
    ]
    lines += [
        f"- params sha256 `{record['params_sha256'][:16]}`",
        "",
        "| | check | result |",
        "|---|---|---|",
    ]
    lines += [
        f"| {'✅' if c.passed else '❌'} | `{c.name}` | {c.reason} |" for c in checks
    ]
    if signed:
        lines += [
            "",
            f"**Signed** by key `{signed[TAG_SIGNED_BY][:12]}`: model sha256 "
            f"`{signed[TAG_SIGNED_MODEL_SHA256][:16]}`, attestation "
            f"`{signed[TAG_ATTESTATION]}`. Verify before loading: "
            f"`lineageflow verify models:/{_model_name(record)}@staging "
            "--key <public key>`",
        ]
    return "\n".join(lines) + "\n"


ARCHIVED_NOTE = "\n_Archived: Staging moved to v{by}._\n"


def _model_name(record: dict) -> str:
    return record.get("params", {}).get("register", {}).get("model_name") or "NAME"


def archived_description(description: str | None, by: str) -> str:
    """A version's description once a later version took Staging from it: it no
    longer claims to be in Staging."""
    text = (description or "").replace(
        "(promoted to **Staging**)", "(was in **Staging**; now **Archived**)"
    )
    return text + ARCHIVED_NOTE.format(by=by)
