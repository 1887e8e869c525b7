"""The lineage graph as a picture: commit -> data versions -> stages -> model version.

Laid out by Graphviz's ``dot`` when it is installed (Debian's ``graphviz``): edges
route around the boxes. Without it, drawn with matplotlib (already a dependency
for the evaluation plots) in fixed columns, so a worker needs nothing more.
People look at this before they read tags.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from lineageflow.data.source import version_of
from lineageflow.pipeline import RECORDED

# columns of the picture, left to right: a column per recorded stage, in the
# declared order (lineageflow.pipeline)
_COLS = ("source", "data", *RECORDED, "model")


def _columns(nodes: dict[str, dict[str, Any]]) -> list[str]:
    """The columns in use, left to right; a stage this code does not declare
    (a record written by newer code) gets a column before the model's."""
    known = [c for c in _COLS if any(n["col"] == c for n in nodes.values())]
    extra = [n["col"] for n in nodes.values() if n["col"] not in _COLS]
    return (
        [c for c in known if c != "model"]
        + list(dict.fromkeys(extra))
        + (["model"] if "model" in known else [])
    )


def nodes_and_edges(
    record: dict, model: str | None, checks: list | None
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """Pure: the graph's nodes (id -> label, column, colour) and edges."""
    ws, pipe = record["workspace"], record.get("pipeline", {})
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[tuple[str, str]] = []

    def add(nid: str, col: str, label: str, color: str = "#dbe9f6") -> None:
        nodes[nid] = {"col": col, "label": label, "color": color}

    add("commit", "source", f"workspace\n{ws['commit'][:10]}\n{ws.get('branch') or ''}")
    code = pipe.get("commit") or pipe.get("version")
    add("code", "source", f"lineageflow\n{str(code)[:10]}\nruns every stage", "#e8e0f3")
    for d in record.get("data", []):
        nid = f"data:{d['path']}"
        name = " ".join(filter(None, [version_of(d), f"md5 {d['md5'][:10]}"]))
        add(nid, "data", f"{d['path']}\n{name}", "#fff2cc")
        edges.append(("commit", nid))
    stages = record.get("stages", [])
    for s in stages:
        nid = f"stage:{s['name']}:{s['run_id']}"
        outs = ", ".join(o["name"] for o in s.get("outputs", [])[:2])
        if "reused_from" in s:  # grey: outputs taken from an earlier run
            how = f"reused from run {s['reused_from'][:8]}"
            add(nid, s["name"], f"{s['name']}\n{how}\n{outs}", "#e7e6e6")
        else:
            run = f"MLflow run {s['run_id'][:8]}"
            add(nid, s["name"], f"{s['name']}\n{run}\n{outs}", "#d9ead3")
        if s["name"] == "pull_data":  # one arrow: the same code runs every stage
            edges.append(("code", nid))
    by_name: dict[str, list[str]] = {}
    for nid, n in nodes.items():
        if nid.startswith("stage:"):
            by_name.setdefault(n["col"], []).append(nid)
    for st in stages:
        if st["name"] != "pull_data":
            continue
        read = {o["name"] for o in st.get("outputs", [])}
        for d in record.get("data", []):
            if d["path"] in read or not read:
                edges.append((f"data:{d['path']}", f"stage:pull_data:{st['run_id']}"))
    chain = [c for c in RECORDED if c in by_name]  # the stages this run recorded
    for a, b in zip(chain, chain[1:], strict=False):
        for x in by_name.get(a, []):
            for y in by_name.get(b, []):
                edges.append((x, y))
    if model:
        passed = checks is not None and all(c.passed for c in checks)
        failed = [c.name for c in checks or [] if not c.passed]
        mark = "Staging ✓" if passed else ("None: " + ", ".join(failed[:3]))
        add("model", "model", f"{model}\n{mark}", "#b6d7a8" if passed else "#f4cccc")
        for x in by_name.get(chain[-1] if chain else "", []):
            edges.append((x, "model"))
    return nodes, edges


def to_dot(nodes: dict[str, dict[str, Any]], edges: list[tuple[str, str]]) -> str:
    """Pure: the graph in Graphviz's language, left to right, one rank per column."""

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "digraph lineage {",
        "  rankdir=LR; nodesep=0.25; ranksep=0.45;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", '
        'fontsize=10, color="#444444"];',
        '  edge [color="#666666", arrowsize=0.7];',
    ]
    for col in _columns(nodes):
        members = [nid for nid, n in nodes.items() if n["col"] == col]
        if members:
            lines.append("  { rank=same; " + " ".join(q(m) for m in members) + " }")
    for nid, n in nodes.items():
        label = q(n["label"]).replace("\n", "\\n")
        lines.append(f"  {q(nid)} [label={label}, fillcolor={q(n['color'])}];")
    lines += [f"  {q(a)} -> {q(b)};" for a, b in edges]
    return "\n".join(lines) + "\n}\n"


def draw(record: dict, out: Path, model: str | None = None, checks=None) -> Path:
    """The picture as PNG: Graphviz's layout when ``dot`` is on PATH, else
    matplotlib's fixed columns."""
    nodes, edges = nodes_and_edges(record, model, checks)
    dot = shutil.which("dot")
    if dot:
        out.parent.mkdir(parents=True, exist_ok=True)
        src = to_dot(nodes, edges)
        done = subprocess.run(
            [dot, "-Tpng", "-Gdpi=110", "-o", str(out)],
            input=src.encode(),
            capture_output=True,
            timeout=60,
        )
        if done.returncode == 0:
            return out
    return _draw_columns(record, nodes, edges, out)


def _draw_columns(record: dict, nodes, edges, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(nodes)
    pos: dict[str, tuple[float, float]] = {}
    for x, col in enumerate(cols):
        members = [nid for nid, n in nodes.items() if n["col"] == col]
        for i, nid in enumerate(members):
            pos[nid] = (x * 2.2, -(i - (len(members) - 1) / 2) * 1.3)
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(cols)), 3.4))
    for a, b in edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate(
            "",
            xy=(x1 - 0.85, y1),
            xytext=(x0 + 0.85, y0),
            arrowprops={"arrowstyle": "->", "color": "#666666", "lw": 1},
        )
    for nid, n in nodes.items():
        x, y = pos[nid]
        ax.text(
            x,
            y,
            n["label"],
            ha="center",
            va="center",
            fontsize=7.5,
            bbox={"boxstyle": "round,pad=0.4", "fc": n["color"], "ec": "#444444"},
        )
    ax.set_xlim(-1.2, (len(cols) - 1) * 2.2 + 1.2)
    ys = [p[1] for p in pos.values()] or [0]
    ax.set_ylim(min(ys) - 1, max(ys) + 1)
    ax.axis("off")
    ax.set_title(f"lineage of run {record['mlflow']['parent_run_id']}", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
