"""Human-readable outputs of an evaluation: the Markdown table and the figures."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from unified_anomaly.data.store import ImageStore
from unified_anomaly.evaluation.evaluate import ClassificationResult, test_rows
from unified_anomaly.evaluation.settings import POOLED_ROW
from unified_anomaly.metrics import MEAN_ROW
from unified_anomaly.visualization import (
    plot_confusion_matrix,
    plot_curves,
    plot_overlay_grid,
    plot_score_histograms,
)


def metrics_markdown(table: pd.DataFrame, title: str = "", digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table: one row per table row, one column per metric."""
    header = ["category", *map(str, table.columns)]
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, values in table.iterrows():
        cells = ["nan" if pd.isna(v) else f"{float(v):.{digits}f}" for v in values]
        label = f"**{row}**" if row in (MEAN_ROW, POOLED_ROW) else str(row)
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines) + "\n"


def worst_and_best(scores: np.ndarray, labels: np.ndarray, threshold: float, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``count`` most wrong and ``count`` most clearly right images (by signed margin to the
    threshold: anomalous images should score above it, normal ones below); disjoint."""
    scores = np.asarray(scores, dtype=np.float64)
    margin = np.where(np.asarray(labels) > 0, scores - threshold, threshold - scores)
    order = np.argsort(margin, kind="stable")
    count = max(0, min(count, order.size // 2))
    return order[:count], order[::-1][:count]


def curve_figures(table: pd.DataFrame, curves: Mapping[str, Mapping[str, tuple]], dpi: int = 100) -> dict[str, Figure]:
    """``roc_curves.png`` and ``pr_curves.png``: image and pixel panels, one line per category and pooled."""
    figures = {}
    for kind, area in (("roc", "AUROC"), ("pr", "AP")):
        panels: dict[str, dict[str, tuple]] = {}
        for level in ("image", "pixel"):
            lines = {}
            for row, row_curves in curves.items():
                key = f"{level}_{kind}"
                if key in row_curves and row in table.index:
                    x, y = row_curves[key]
                    lines[str(row)] = (x, y, float(table.loc[row, f"{level}_{area}"]))
            if lines:
                panels[level] = lines
        figures[f"{kind}_curves.png"] = plot_curves(panels, kind, dpi=dpi)
    return figures


def evaluation_figures(
    table: pd.DataFrame,
    curves: Mapping[str, Mapping[str, tuple]],
    predictions: Mapping[str, np.ndarray],
    store: ImageStore,
    threshold: float,
    overlay_count: int = 4,
    classification: Mapping[str, ClassificationResult] | None = None,
    dpi: int = 100,
) -> dict[str, Figure]:
    """All figures of one model's evaluation, keyed by file name."""
    categories, _, masks = test_rows(predictions, store)
    scores, labels = predictions["image_scores"], predictions["labels"]
    figures = curve_figures(table, curves, dpi=dpi)
    figures["score_histograms.png"] = plot_score_histograms(scores, labels, categories, threshold, dpi=dpi)
    if "anomaly_maps" in predictions and overlay_count > 0:
        figures["overlay_grid.png"] = overlay_figure(predictions, store, threshold, overlay_count, masks, dpi)
    for category, result in (classification or {}).items():
        name = "confusion_matrix.png" if len(classification) == 1 else f"confusion_matrix_{category}.png"
        figures[name] = plot_confusion_matrix(result.confusion(), result.class_names,
                                              title=f"{category}: image classes (UniADC rule)", dpi=dpi)
    return figures


def overlay_figure(
    predictions: Mapping[str, np.ndarray],
    store: ImageStore,
    threshold: float,
    count: int,
    masks: np.ndarray,
    dpi: int = 100,
) -> Figure:
    """Worst then best test images: image | ground truth | heatmap | predicted mask (score >= threshold)."""
    scores, labels, maps = predictions["image_scores"], predictions["labels"], predictions["anomaly_maps"]
    worst, best = worst_and_best(scores, labels, threshold, count)
    chosen = np.concatenate([worst, best]).astype(np.int64)
    rows = np.asarray(predictions["indices"])[chosen]
    manifest = store.manifest.iloc[rows]
    titles = [
        f"{'worst' if i < len(worst) else 'best'} | {cat}/{defect}\nscore {scores[p]:.4g} (thr {threshold:.4g})"
        for i, (p, cat, defect) in enumerate(zip(chosen, manifest["category"], manifest["defect_type"], strict=True))
    ]
    shown_maps = maps[chosen]
    return plot_overlay_grid(
        np.asarray(store.images[rows]), masks[chosen], shown_maps, shown_maps >= threshold, titles,
        map_range=(float(maps.min()), float(maps.max())), dpi=dpi,
    )
