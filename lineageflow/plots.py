"""Evaluation plots written as PNG files (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_plots(model, X: pd.DataFrame, y: pd.Series, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    out_dir.mkdir(parents=True, exist_ok=True)
    proba = np.asarray(model.predict_proba(X))
    pred = proba.argmax(axis=1)
    written = []

    fig, ax = plt.subplots(figsize=(5, 4))
    ConfusionMatrixDisplay.from_predictions(y, pred, ax=ax, colorbar=False)
    ax.set_title("Confusion matrix (holdout)")
    written.append(out_dir / "confusion_matrix.png")
    fig.savefig(written[-1], dpi=80, bbox_inches="tight")
    plt.close(fig)

    if proba.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(5, 4))
        RocCurveDisplay.from_predictions(y, proba[:, 1], ax=ax)
        ax.set_title("ROC curve (holdout)")
        written.append(out_dir / "roc_curve.png")
        fig.savefig(written[-1], dpi=80, bbox_inches="tight")
        plt.close(fig)
    return written
