"""Evaluation plots written as PNG files (matplotlib, headless), by task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_plots(
    model,
    X: pd.DataFrame,
    y: pd.Series,
    out_dir: Path,
    task: str = "binary",
    note: str | None = None,
) -> list[Path]:
    """The holdout plots; ``note`` says which rows they show when they are a
    sample (an engine that keeps the holdout on a cluster), in every figure."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, name: str) -> None:
        if note:
            fig.text(0.5, -0.02, f"sample: {note}", ha="center", fontsize=8)
        written.append(out_dir / name)
        fig.savefig(written[-1], dpi=80, bbox_inches="tight")
        plt.close(fig)

    if task == "regression":
        pred = np.asarray(model.predict(X), dtype="float64")
        actual = np.asarray(y, dtype="float64")
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(actual, pred, s=4, alpha=0.4)
        lo, hi = (
            float(min(actual.min(), pred.min())),
            float(max(actual.max(), pred.max())),
        )
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
        ax.set(
            xlabel="actual", ylabel="predicted", title="Predicted vs actual (holdout)"
        )
        save(fig, "predicted_vs_actual.png")
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(pred, actual - pred, s=4, alpha=0.4)
        ax.axhline(0.0, color="black", linewidth=1)
        ax.set(xlabel="predicted", ylabel="residual", title="Residuals (holdout)")
        save(fig, "residuals.png")
        return written

    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    proba = np.asarray(model.predict_proba(X))
    pred = proba.argmax(axis=1)
    fig, ax = plt.subplots(figsize=(5, 4))
    labels = getattr(model, "labels", None)
    ConfusionMatrixDisplay.from_predictions(
        y,
        pred,
        ax=ax,
        colorbar=False,
        labels=list(range(proba.shape[1])),
        display_labels=[str(v) for v in labels] if labels else None,
    )
    ax.set_title("Confusion matrix (holdout)")
    save(fig, "confusion_matrix.png")
    if proba.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(5, 4))
        RocCurveDisplay.from_predictions(y, proba[:, 1], ax=ax)
        ax.set_title("ROC curve (holdout)")
        save(fig, "roc_curve.png")
    return written
