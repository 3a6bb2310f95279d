"""Evaluation figures a person can read (matplotlib, Agg backend); every function returns a Figure.

Figures are created with ``matplotlib.figure.Figure`` directly (not pyplot), so nothing accumulates in a
global figure registry and the functions are safe in pipelines and threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Curve = tuple[np.ndarray, np.ndarray, float]  # (x, y, area) of one line


def _figure(width: float, height: float, dpi: int) -> Figure:
    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def plot_curves(
    panels: Mapping[str, Mapping[str, Curve]],
    kind: str,
    dpi: int = 100,
) -> Figure:
    """ROC (``kind="roc"``) or PR (``kind="pr"``) curves: one panel per level (e.g. "image", "pixel"), one line
    per category (and "pooled"); the legend shows each line's area (AUROC / AP)."""
    if kind not in ("roc", "pr"):
        raise ValueError(f"kind must be 'roc' or 'pr', got {kind!r}")
    n = max(1, len(panels))
    fig = _figure(4.5 * n, 4.5, dpi)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    area_name, x_label, y_label = ("AUROC", "false positive rate", "true positive rate") if kind == "roc" else (
        "AP", "recall", "precision")
    for ax, (level, lines) in zip(axes, panels.items(), strict=False):
        for label, (x, y, area) in lines.items():
            style = {"color": "black", "linewidth": 2.0} if label == "pooled" else {"linewidth": 1.2}
            drawstyle = "steps-post" if kind == "pr" else "default"
            ax.plot(x, y, drawstyle=drawstyle, label=f"{label} ({area_name} {area:.3f})", **style)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=x_label, ylabel=y_label, title=f"{level} {kind.upper()}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=7)
    return fig


def plot_score_histograms(
    scores: np.ndarray,
    labels: np.ndarray,
    categories: np.ndarray,
    threshold: float | None = None,
    bins: int = 40,
    dpi: int = 100,
) -> Figure:
    """Per category: histogram of image scores, normal vs anomalous, and the decision threshold."""
    scores, labels, categories = np.asarray(scores, float), np.asarray(labels) > 0, np.asarray(categories)
    names = sorted(set(categories.tolist()))
    columns = min(4, len(names))
    rows = int(np.ceil(len(names) / columns))
    fig = _figure(4.0 * columns, 3.0 * rows, dpi)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    for ax, name in zip(axes, names, strict=False):
        in_category = categories == name
        values = scores[in_category]
        edges = np.histogram_bin_edges(values, bins=bins) if values.size else bins
        for selected, label, color in ((~labels, "normal", "tab:blue"), (labels, "anomalous", "tab:red")):
            part = scores[in_category & selected]
            ax.hist(part, bins=edges, alpha=0.55, color=color, label=f"{label} (n={part.size})")
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3g}")
        ax.set(title=name, xlabel="image score", ylabel="images")
        ax.legend(fontsize=7)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    return fig


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str = "", dpi: int = 100) -> Figure:
    """Image-level confusion matrix (rows: true class, columns: predicted), counts and row-normalised colour."""
    matrix = np.asarray(matrix)
    size = max(4.0, 0.6 * len(class_names) + 2.5)
    fig = _figure(size, size, dpi)
    ax = fig.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if shares[i, j] > 0.5 else "black")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, labels=class_names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title or "confusion matrix")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    return fig


def plot_overlay_grid(
    images: np.ndarray,
    masks: np.ndarray,
    anomaly_maps: np.ndarray,
    predicted_masks: np.ndarray,
    titles: Sequence[str],
    map_range: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Figure:
    """One row per image: image | ground truth | heatmap over the image | predicted mask.

    images: N×H×W×3 uint8; masks / predicted_masks: N×H×W (> 0 = anomalous); anomaly_maps: N×H×W raw scores.
    map_range: the (low, high) of the heatmap colour scale, shared by all rows so rows are comparable
    (default: min and max over the shown maps).
    """
    n = len(images)
    if n == 0:
        fig = _figure(4, 1, dpi)
        fig.text(0.5, 0.5, "no images to show", ha="center", va="center")
        return fig
    low, high = map_range if map_range is not None else (float(np.min(anomaly_maps)), float(np.max(anomaly_maps)))
    fig = _figure(10.0, 2.6 * n, dpi)
    axes = fig.subplots(n, 4, squeeze=False)
    headers = ("image", "ground truth", "anomaly map", "predicted mask")
    for row in range(n):
        image = np.asarray(images[row])
        panels = (
            dict(X=image),
            dict(X=np.asarray(masks[row]) > 0, cmap="gray", vmin=0, vmax=1),
            None,
            dict(X=np.asarray(predicted_masks[row]) > 0, cmap="gray", vmin=0, vmax=1),
        )
        for column, ax in enumerate(axes[row]):
            if column == 2:
                ax.imshow(image)
                heat = ax.imshow(anomaly_maps[row], cmap="jet", alpha=0.5, vmin=low, vmax=high)
            else:
                ax.imshow(**panels[column])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(headers[column], fontsize=9)
        axes[row][0].set_ylabel(titles[row], fontsize=7)
    fig.colorbar(heat, ax=axes[:, 2].tolist(), fraction=0.046, label="anomaly score")
    return fig


def figure_size_pixels(fig: Figure) -> tuple[int, int]:
    """(width, height) in pixels of the figure when saved at its own dpi."""
    width, height = fig.get_size_inches() * fig.dpi
    return int(round(width)), int(round(height))
