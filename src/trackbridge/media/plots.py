"""The task figures, drawn with matplotlib's object API on an Agg canvas (never pyplot).

Each function takes the numbers a figure shows (NumPy arrays) and returns a Figure; it runs
in the run's render process (or on the media thread when there is none). Matplotlib is imported inside the functions, on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Most points a scatter draws (every point stays in the figure's data file).
MAX_SCATTER_POINTS = 20_000
# Beyond this many classes a confusion matrix shows colours only, no counts.
MAX_ANNOTATED_CLASSES = 30


def new_figure(
    width: float = 6.0,
    height: float = 4.5,
    *,
    left: float = 0.11,
    right: float = 0.97,
    bottom: float = 0.12,
    top: float = 0.91,
    dpi: int = 100,
) -> Figure:
    """A Figure on its own Agg canvas: no pyplot, no global state, safe off the main thread.

    Margins are fixed fractions of the figure: a layout engine would measure every text
    twice, and the drawing time is what the training thread shares through the GIL.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    figure.subplots_adjust(left=left, right=right, bottom=bottom, top=top)
    FigureCanvasAgg(figure)
    return figure


def confusion_matrix_figure(matrix: np.ndarray, labels: Sequence[str], title: str) -> Figure:
    """Counts (rows = true class) annotated; colour = share of the true class (row-normalised).

    No colour bar: the counts carry the numbers, and a second axes doubles the drawing time.
    """
    n = len(labels)
    side = min(12.0, max(4.5, 0.42 * n + 2.5))
    figure = new_figure(side, side, left=0.14, right=0.97, bottom=0.13, top=0.93)
    ax = figure.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    if n <= MAX_ANNOTATED_CLASSES:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(count)}", ha="center", va="center", color=colour, fontsize=8)
    ticks = np.arange(n)
    slanted = n > 5 and max(len(label) for label in labels) > 2  # long names would overlap
    ax.set_xticks(ticks, labels, rotation=45 if slanted else 0, ha="right" if slanted else "center")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return figure


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, title: str) -> Figure:
    """The ROC curve over the chance diagonal."""
    figure = new_figure(5.0, 5.0, left=0.13, bottom=0.11, top=0.92)
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    ax.plot(fpr, tpr, color="C0", linewidth=2, label="model")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return figure


def histogram_figure(
    edges: np.ndarray, counts: Sequence[np.ndarray], labels: Sequence[str], xlabel: str, title: str
) -> Figure:
    """Overlaid histograms sharing ``edges`` (one per label)."""
    figure = new_figure(6.0, 4.0, left=0.1, bottom=0.13)
    ax = figure.add_subplot()
    for k, (count, label) in enumerate(zip(counts, labels)):
        ax.stairs(count, edges, fill=True, alpha=0.45, color=f"C{k}", label=f"{label} ({int(np.sum(count))})")
        ax.stairs(count, edges, color=f"C{k}", linewidth=1.2)
    ax.set(xlabel=xlabel, ylabel="samples", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def pr_curve_figure(
    recall: np.ndarray, precision: np.ndarray, labels: Sequence[str], ap: Sequence[float], title: str
) -> Figure:
    """One precision-recall curve per class (``precision``: (classes, points)) and their mean."""
    figure = new_figure(6.0, 5.0, left=0.1, bottom=0.1, top=0.93)
    ax = figure.add_subplot()
    for k, (curve, label, score) in enumerate(zip(precision, labels, ap)):
        ax.plot(recall, curve, color=f"C{k % 10}", linewidth=1.2, label=f"{label}  AP {score:.3f}")
    if len(precision) > 1:
        mean = np.mean(precision, axis=0)
        ax.plot(recall, mean, color="black", linewidth=2.5, label=f"all classes  mAP {np.mean(ap):.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return figure


def per_class_bar_figure(
    values: Sequence[float | None], labels: Sequence[str], ylabel: str, title: str
) -> Figure:
    """One bar per class in [0, 1]; a class with no value (``None``) is marked n/a."""
    n = len(labels)
    figure = new_figure(min(14.0, max(5.0, 0.5 * n + 2.0)), 4.0, bottom=0.2 if n > 6 else 0.1)
    ax = figure.add_subplot()
    x = np.arange(n)
    heights = [v if v is not None else 0.0 for v in values]
    bars = ax.bar(x, heights, color=[f"C{k % 10}" for k in range(n)])
    texts = [f"{v:.3f}" if v is not None else "n/a" for v in values]
    ax.bar_label(bars, texts, fontsize=8, padding=2)
    ax.set_xticks(x, labels, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set(ylim=(0, 1.1), ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    return figure


def pred_vs_true_figure(
    pred: np.ndarray, true: np.ndarray, edges: np.ndarray, counts: np.ndarray, title: str
) -> Figure:
    """Left: prediction against truth with the identity line. Right: the residual distribution."""
    figure = new_figure(10.0, 4.5, left=0.07, right=0.98, bottom=0.12)
    scatter_ax, hist_ax = figure.subplots(1, 2, width_ratios=(1.2, 1.0), gridspec_kw={"wspace": 0.22})
    shown = np.arange(len(pred))
    if len(shown) > MAX_SCATTER_POINTS:  # an even subsample: the file keeps every point
        shown = np.linspace(0, len(pred) - 1, MAX_SCATTER_POINTS).astype(int)
    scatter_ax.plot(true[shown], pred[shown], ".", markersize=4, alpha=0.6, color="C0")
    low = float(min(true.min(), pred.min())) if len(pred) else 0.0
    high = float(max(true.max(), pred.max())) if len(pred) else 1.0
    scatter_ax.plot([low, high], [low, high], linestyle="--", color="0.4", linewidth=1, label="prediction = truth")
    scatter_ax.set(xlabel="truth", ylabel="prediction", title=title)
    scatter_ax.grid(alpha=0.3)
    scatter_ax.legend(loc="upper left")
    hist_ax.stairs(counts, edges, fill=True, alpha=0.6, color="C1")
    hist_ax.axvline(0.0, color="0.3", linewidth=1)
    hist_ax.set(xlabel="residual (prediction - truth)", ylabel="samples", title="residuals")
    hist_ax.grid(alpha=0.3)
    return figure
