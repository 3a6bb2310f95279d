"""Evaluation figures (ROC/PR curves, score histograms, confusion matrix, overlay grid)."""

from unified_anomaly.visualization.plots import (
    figure_size_pixels,
    plot_confusion_matrix,
    plot_curves,
    plot_overlay_grid,
    plot_score_histograms,
)

__all__ = [
    "figure_size_pixels",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_overlay_grid",
    "plot_score_histograms",
]
