"""What training through a notebook costs in lineageflow, against bare scripts.

One run, REPS times each and in rotating order (so drift hits all three):
(a) lineageflow's notebook source: the train stage's ``fit`` — the training
    split written as Parquet, papermill running lineageflow's example notebook
    (``lineageflow/examples/train.ipynb``) in a fresh kernel of this
    environment, the executed notebook and its HTML stored on an MLflow run,
    the saved model loaded and checked;
(b) bare papermill: ``papermill.execute_notebook`` on the same notebook and
    Parquet file, what a team running notebooks in workflows already does;
(c) a bare script: the notebook's code cells executed in this process.
On ROWS customer rows; ratios come from this one run. Writes bench/NOTEBOOK.md.

    .venv/bin/python bench/notebook.py            # BENCH_NOTEBOOK_ROWS=200000 by default
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = int(os.environ.get("BENCH_NOTEBOOK_ROWS", "200000"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
EXAMPLE = ROOT / "lineageflow" / "examples" / "train.ipynb"


def main() -> None:
    for k, v in {
        "DO_NOT_TRACK": "true",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }.items():
        os.environ.setdefault(k, v)
    with tempfile.TemporaryDirectory(prefix="lineageflow-bench-nb-") as tmp:
        text = run(Path(tmp))
    (ROOT / "bench" / "NOTEBOOK.md").write_text(text)
    print(text)


def run(work: Path) -> str:
    import mlflow
    import nbformat
    import papermill
    from prefect import flow

    from lineageflow.config import PipelineConfig, PrepareConfig
    from lineageflow.data.synthetic import make_customers
    from lineageflow.engines import engine
    from lineageflow.lineage.notebooks import code_cells
    from lineageflow.model import ml
    from lineageflow.model.notebook import NotebookSource
    from lineageflow.model.notebook_run import kernel_manager

    ws = work / "ws"
    (ws / "notebooks").mkdir(parents=True)
    (ws / "notebooks" / "train.ipynb").write_text(EXAMPLE.read_text())
    frame = make_customers(ROWS, seed=1)
    split = ml.split_frame(frame, "churned", PrepareConfig(), "auto")
    table = work / "train.parquet"
    split.table("train").to_parquet(table)
    cfg = PipelineConfig.model_validate(
        {"train": {"model": "notebook", "notebook": "notebooks/train.ipynb"}}
    ).train
    nb = nbformat.read(EXAMPLE, as_version=4)
    params = {
        "train_table": str(table),
        "target": "churned",
        "task": split.task,
        "seed": 42,
        "params": {},
        "model_path": str(work / "bare-model.pkl"),
    }
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")

    def lineageflow_fit() -> None:
        with mlflow.start_run():
            source = NotebookSource.open(cfg, ws, split)
            source.fit(split, engine("local"))

    def bare_papermill() -> None:
        papermill.execute_notebook(
            str(EXAMPLE),
            str(work / "out.ipynb"),
            parameters=params,
            kernel_name="python3",
            progress_bar=False,
            # the same interpreter as the other two (not whatever `python3`
            # kernel the machine has), in the notebook's folder
            kernel_manager_class=kernel_manager(work, ws / "notebooks"),
        )

    def bare_script() -> None:
        scope: dict = dict(params)
        for code in code_cells(nb)[1:]:  # the parameters cell: `params` above
            exec(compile(code, "train.ipynb", "exec"), scope)

    variants = {
        "lineageflow": lineageflow_fit,
        "papermill": bare_papermill,
        "bare script": bare_script,
    }
    names = list(variants)
    walls: dict[str, list[float]] = {n: [] for n in names}

    @flow(name="bench-notebook")
    def measure() -> None:
        for rep in range(REPS):
            order = names[rep % 3 :] + names[: rep % 3]
            for name in order:
                t0 = time.perf_counter()
                variants[name]()
                walls[name].append(time.perf_counter() - t0)
                print(f"rep {rep + 1} {name}: {walls[name][-1]:.2f} s", flush=True)

    measure()
    med = {n: statistics.median(w) for n, w in walls.items()}
    ratio = {
        other: statistics.median(
            a / b for a, b in zip(walls["lineageflow"], walls[other], strict=True)
        )
        for other in ("papermill", "bare script")
    }
    rows = "\n".join(
        f"| {n} | {med[n]:.2f} | {', '.join(f'{w:.2f}' for w in walls[n])} |"
        for n in names
    )
    text = f"""# Training through a notebook: lineageflow against bare scripts

Measured {date.today()} on this machine (python {sys.version.split()[0]},
{os.cpu_count()} cores) by `bench/notebook.py`: {ROWS:,} customer rows
({len(split.X_train):,} in the training split), lineageflow's example notebook
(HistGradientBoosting, 200 iterations), {REPS} reps each in rotating order.

| variant | median wall (s) | each rep (s) |
|---|---|---|
{rows}

- lineageflow / bare papermill: **{ratio["papermill"]:.2f}x** (median of per-rep ratios)
- lineageflow / bare script: **{ratio["bare script"]:.2f}x**

What lineageflow adds to papermill: the training split written as Parquet, its
two cells (the audit hook, the report of modules and files), the executed
notebook rendered to HTML and stored with it on the MLflow run, the saved model
loaded and checked. What papermill adds to a script: a kernel started per run.
"""
    return text


if __name__ == "__main__":
    main()
