"""PNG plots of an evaluation: the PR curve and the score distributions by label.

Uses matplotlib's object API (no pyplot): no global state, no display backend.
"""

import base64
import io

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve


def png_markdown(title: str, png: bytes) -> str:
    """A PNG as Markdown the Dagster UI shows inline (a data URI: no file to serve)."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


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


def shadow_comparison_png(
    champion: np.ndarray, challenger: np.ndarray, labels: np.ndarray
) -> bytes:
    """Champion against challenger score per event, and both PR curves on the labelled ones
    (`labels`: 1, 0, or NaN for not labelled yet)."""
    figure = Figure(figsize=(10, 4))
    scatter, curves = figure.subplots(1, 2)
    scatter.scatter(champion, challenger, s=3, alpha=0.3)
    scatter.plot([0, 1], [0, 1], color="black", linewidth=0.8)
    scatter.set(xlabel="champion score", ylabel="challenger score", title="Shadow scores")
    known = ~np.isnan(labels)
    y = labels[known].astype(int)
    if 0 < y.sum() < len(y):
        for name, scores in (("champion", champion), ("challenger", challenger)):
            precision, recall, _ = precision_recall_curve(y, scores[known])
            curves.plot(recall, precision, label=name)
        curves.legend()
    curves.set(xlabel="recall", ylabel="precision", title="Labelled shadow traffic", ylim=(0, 1.02))
    return _png(figure)


def binned_shares_png(panels: list[tuple[str, list[str], np.ndarray, np.ndarray]]) -> bytes:
    """Reference against live share per bin, one panel per (title, bin names, reference
    shares, live shares). Bins under 0.2% on both sides are left out: a continuous feature's
    cut points hold a single reference value each."""
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.5 * columns, 3.6 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for ax, (title, names, reference, live) in zip(axes, panels, strict=False):
        kept = np.flatnonzero(np.maximum(reference, live) >= 0.002)
        x = np.arange(len(kept))
        ax.bar(x - 0.2, np.asarray(reference)[kept], width=0.4, label="reference")
        ax.bar(x + 0.2, np.asarray(live)[kept], width=0.4, label="live")
        ax.set_xticks(x, [names[i] for i in kept], rotation=60, ha="right", fontsize=7)
        ax.set(ylabel="share", title=title)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return _png(figure)
