"""PNG plots of an evaluation: the PR curve and the score distributions by label.

Uses matplotlib's object API (no pyplot): no global state, no display backend.
"""

import io

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def pr_curve_png(labels: np.ndarray, curves: dict[str, np.ndarray]) -> bytes:
    figure = Figure(figsize=(5, 4))
    axes = figure.subplots()
    for name, scores in curves.items():
        precision, recall, _ = precision_recall_curve(labels, scores)
        axes.plot(recall, precision, label=name)
    axes.set(xlabel="recall", ylabel="precision", title="Holdout precision-recall", ylim=(0, 1.02))
    axes.legend()
    return _png(figure)


def score_distribution_png(labels: np.ndarray, scores: np.ndarray, threshold: float) -> bytes:
    figure = Figure(figsize=(5, 4))
    axes = figure.subplots()
    bins = np.linspace(0, 1, 51).tolist()
    axes.hist(scores[labels == 0], bins=bins, alpha=0.6, density=True, label="legitimate")
    axes.hist(scores[labels == 1], bins=bins, alpha=0.6, density=True, label="fraud")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axes.set(xlabel="model score", ylabel="density", yscale="log", title="Holdout scores by label")
    axes.legend()
    return _png(figure)
