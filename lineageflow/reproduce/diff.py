"""``lineageflow diff``: what differs between two runs' lineage and results.

Pure functions over two lineage records (plus what MLflow and git add: metrics,
row counts, files changed between commits), so the same answer is printed as a
table or as JSON.
"""

from __future__ import annotations

from typing import Any

import git

from lineageflow.checkouts import has_commit
from lineageflow.data.source import data_diff_row
from lineageflow.lineage.code import code_id, pipeline_state
from lineageflow.registry.versions import load_lineage
from lineageflow.reproduce.reproduction import (
    environment_differences,
    resolve_run_id,
    validate_ref,
)
from lineageflow.runs.store import client
from lineageflow.runs.tracking import child_runs


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"seed": 1}}`` -> ``{"train.seed": 1}`` (lists stay values)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"key": k, "a": a.get(k), "b": b.get(k)}
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def diff_records(
    a: dict,
    b: dict,
    *,
    metrics: tuple[dict[str, float], dict[str, float]],
    rows: tuple[dict[str, int], dict[str, int]],
    files_changed: dict[str, list[str] | None],
) -> dict[str, Any]:
    """Every difference between records ``a`` and ``b``, section by section.

    ``files_changed`` maps "workspace"/"pipeline" to the files changed between
    the two commits (None when the repo is not on this machine).
    """
    ws_a, ws_b = a["workspace"], b["workspace"]
    pa, pb = a.get("pipeline", {}), b.get("pipeline", {})
    code = {
        "workspace": {
            "a": ws_a["commit"],
            "b": ws_b["commit"],
            "dirty": [ws_a.get("dirty"), ws_b.get("dirty")],
            "files_changed": files_changed.get("workspace"),
        },
        "pipeline": {
            "a": pa.get("commit") or pa.get("version"),
            "b": pb.get("commit") or pb.get("version"),
            "dirty": [pa.get("dirty"), pb.get("dirty")],
            "files_changed": files_changed.get("pipeline"),
        },
        "user_code": _changes(
            {u["file"]: code_id(u) for u in a.get("user_code", [])},
            {u["file"]: code_id(u) for u in b.get("user_code", [])},
        ),
    }
    da = {d["path"]: d for d in a.get("data", [])}
    db = {d["path"]: d for d in b.get("data", [])}
    data = []
    for p in sorted(set(da) | set(db)):
        row = data_diff_row(da.get(p), db.get(p))
        data.append(
            {
                "path": p,
                "md5": row["md5"],
                "rows": [rows[0].get(p), rows[1].get(p)],
                "bytes": row["bytes"],
            }
        )
    ma, mb = metrics
    metric_rows = [
        {
            "metric": k,
            "a": ma.get(k),
            "b": mb.get(k),
            "delta": (mb[k] - ma[k]) if k in ma and k in mb else None,
        }
        for k in sorted(set(ma) | set(mb))
    ]
    return {
        "runs": [a["mlflow"]["parent_run_id"], b["mlflow"]["parent_run_id"]],
        "code": code,
        "data": data,
        "params": _changes(flatten(a.get("params", {})), flatten(b.get("params", {}))),
        "environment": environment_differences(a, b),
        "metrics": metric_rows,
    }


def _short(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return s[:12] if len(s) == 40 and all(c in "0123456789abcdef" for c in s) else s


def render(diff: dict[str, Any]) -> str:
    """The diff as aligned text tables, one section each."""
    a, b = diff["runs"]
    lines = [f"A = run {a}", f"B = run {b}", ""]

    def table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
        lines.append(title)
        if not rows:
            lines.extend(["  (no difference)", ""])
            return
        cells = [tuple(_short(c) for c in r) for r in [header, *rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        for r in cells:
            lines.append(
                "  "
                + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            )
        lines.append("")

    code_rows = []
    for part in ("workspace", "pipeline"):
        c = diff["code"][part]
        same = c["a"] == c["b"] and c["dirty"][0] == c["dirty"][1]
        files = c["files_changed"]
        changed = "—" if files is None else (", ".join(files[:6]) or "none")
        if files and len(files) > 6:
            changed += f" (+{len(files) - 6} more)"
        if not same:
            code_rows.append(
                (part, c["a"], c["b"], "dirty" if any(c["dirty"]) else "", changed)
            )
    code_rows += [
        (f"user code {u['key']}", u["a"], u["b"], "", "")
        for u in diff["code"]["user_code"]
    ]
    table("code", ("", "A", "B", "", "files changed"), code_rows)
    table(
        "data",
        ("path", "md5 A", "md5 B", "rows A", "rows B"),
        [
            (d["path"], d["md5"][0], d["md5"][1], d["rows"][0], d["rows"][1])
            for d in diff["data"]
            if d["md5"][0] != d["md5"][1] or d["rows"][0] != d["rows"][1]
        ],
    )
    table(
        "params",
        ("key", "A", "B"),
        [(p["key"], p["a"], p["b"]) for p in diff["params"]],
    )
    table("environment", ("difference",), [(e,) for e in diff["environment"]])
    table(
        "metrics (holdout)",
        ("metric", "A", "B", "B - A"),
        [(m["metric"], m["a"], m["b"], m["delta"]) for m in diff["metrics"]],
    )
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------ gathering


def _files_between(paths: list[str | None], a: str | None, b: str | None):
    """Files changed from commit ``a`` to ``b`` in the first repo holding both."""
    if not a or not b or len(a) != 40 or len(b) != 40:
        return None
    if a == b:
        return []
    for path in paths:
        if has_commit(path, a) and has_commit(path, b):
            out = git.Repo(path).git.diff("--name-only", a, b, "--")
            return [f for f in out.splitlines() if f]
    return None


def collect(tracking_uri: str, ref_a: str, ref_b: str, workspace=None) -> dict:
    """Read both runs (ids or models:/NAME/VERSION) and diff them."""
    refs = [validate_ref(ref_a), validate_ref(ref_b)]  # both, before any call
    c = client(tracking_uri)
    records, metrics, rows = [], [], []
    for ref in refs:
        run_id = resolve_run_id(ref, tracking_uri)
        record, _ = load_lineage(tracking_uri, run_id)
        records.append(record)
        m = c.get_run(run_id).data.metrics
        metrics.append({k: v for k, v in m.items() if k.startswith("test_")})
        pulls = child_runs(tracking_uri, record["mlflow"]["experiment_id"], run_id)
        rows.append(
            {
                r.data.params["dataset"]: int(r.data.metrics["rows"])
                for r in pulls
                if "dataset" in r.data.params and "rows" in r.data.metrics
            }
        )
    a, b = records
    ws_paths = [str(workspace) if workspace else None]
    ws_paths += [a["workspace"].get("path"), b["workspace"].get("path")]
    pipe_paths = [
        pipeline_state()["path"],
        a.get("pipeline", {}).get("path"),
        b.get("pipeline", {}).get("path"),
    ]
    files = {
        "workspace": _files_between(
            ws_paths, a["workspace"]["commit"], b["workspace"]["commit"]
        ),
        "pipeline": _files_between(
            pipe_paths,
            a.get("pipeline", {}).get("commit"),
            b.get("pipeline", {}).get("commit"),
        ),
    }
    return diff_records(
        a,
        b,
        metrics=(metrics[0], metrics[1]),
        rows=(rows[0], rows[1]),
        files_changed=files,
    )
