"""The whole table's checks and decisions from its partitions' summaries: plain
functions, no cluster. What the local engine decides on one frame (the schema
checks, the task, the classes, whether both sides are usable), decided on what
each partition's worker reported (lineageflow.engines.partitions.summarize)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lineageflow.data.tabular import check_table, infer_task
from lineageflow.model import ml

SIDES = ("train", "holdout")


@dataclass(frozen=True)
class Decided:
    task: str
    reason: str
    labels: list | None  # classes in code order; None for a regressor
    rows: dict  # rows of each side
    categories: dict  # categorical feature -> its training values, sorted


def combine(
    sums: list[dict],
    meta: pd.DataFrame,
    target: str,
    task_setting: str,
    test_size: float,
    name: str,
) -> Decided:
    """Refuse what the local engine refuses, in its words; decide what it
    decides. ``meta``: the table's zero-row frame (its common dtypes)."""
    empty = set.intersection(*(set(s["empty"]) for s in sums))
    missing = sum(s["missing_labels"] for s in sums)
    check_table(meta, target, missing, sorted(empty), name)
    y = pd.Series(
        list(dict.fromkeys(v for s in sums for v in s["labels"])),
        dtype=meta[target].dtype,
    )
    task, reason = infer_task(y, task_setting, target)
    labels = None if task == "regression" else ml.label_order(y.tolist())
    rows = {k: sum(s["rows"][k] for s in sums) for k in SIDES}
    total = sum(rows.values())
    if not rows["train"] or not rows["holdout"]:
        raise ml.cannot_split(total, test_size)
    if labels is not None:
        seen = {k: {v for s in sums for v in s["sides"][k]} for k in SIDES}
        if len(seen["train"]) < 2:
            raise ml.cannot_split(total, test_size)
        only = [c for c in labels if c in seen["holdout"] - seen["train"]]
        if only:
            raise ml.only_in_holdout(only, target)
    cats: dict[str, set] = {}
    for s in sums:
        for c, values in s["categories"].items():
            cats.setdefault(c, set()).update(values)
    return Decided(task, reason, labels, rows, {c: sorted(v) for c, v in cats.items()})
