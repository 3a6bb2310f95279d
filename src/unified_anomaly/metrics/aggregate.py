"""One call for every image and pixel metric, per category, their mean, and pooled over all categories.

Metric names follow anomalib: ``image_AUROC``, ``image_AP``, ``image_F1Max``, ``pixel_AUROC``, ``pixel_AP``,
``pixel_F1Max``, ``pixel_AUPRO`` (+ ``image_F1Score`` at a given threshold). Pixel metrics are skipped
(absent from the result, not failed) when no maps or masks are given. Scores are used as they are (no
sigmoid, no normalisation).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from unified_anomaly.metrics.aupro import area_up_to, pro_curve, ranking_for_aupro
from unified_anomaly.metrics.ranking import ScoreRanking, as_flat_labels

IMAGE_METRICS = ("image_AUROC", "image_AP", "image_F1Max")
PIXEL_METRICS = ("pixel_AUROC", "pixel_AP", "pixel_F1Max", "pixel_AUPRO")
MEAN_ROW = "mean"
POOLED_ROW = "pooled"
POOLED_PREFIX = "pooled_"


def compute_metrics(
    image_scores: np.ndarray,
    image_labels: np.ndarray,
    anomaly_maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    *,
    threshold: float | None = None,
    aupro_fpr_limit: float = 0.3,
    aupro_num_thresholds: int = 200,
    n_threads: int | None = None,
    curves: dict | None = None,
) -> dict[str, float]:
    """Image metrics, and pixel metrics when both ``anomaly_maps`` (N×H×W) and ``masks`` (N×H×W, >0 = anomalous) are given.

    threshold: an image-score threshold chosen on validation data; adds ``image_F1Score`` (anomalous iff
    score >= threshold). Single-class inputs give NaN AUROC (and NaN AP / F1 without anomalies), never an error.
    curves: a dict to fill with the (x, y) arrays of ``image_roc``, ``image_pr`` (and ``pixel_roc``,
    ``pixel_pr``) for plots, taken from the same sorted scores.
    """
    image_scores = np.asarray(image_scores).reshape(-1)
    image_labels = as_flat_labels(image_labels)
    if image_scores.shape != image_labels.shape:
        raise ValueError(f"{image_scores.size} image scores but {image_labels.size} image labels")
    ranking = ScoreRanking.from_arrays(image_scores, image_labels, n_threads=1)
    f1, _ = ranking.f1_max()
    metrics = {"image_AUROC": ranking.auroc(), "image_AP": ranking.average_precision(), "image_F1Max": f1}
    if curves is not None:
        curves["image_roc"], curves["image_pr"] = ranking.roc_curve(), ranking.pr_curve()
    if threshold is not None:
        metrics["image_F1Score"] = f1_at_threshold(image_scores, image_labels, threshold)
    if anomaly_maps is not None and masks is not None:
        metrics.update(
            pixel_metrics(anomaly_maps, masks, aupro_fpr_limit=aupro_fpr_limit,
                          aupro_num_thresholds=aupro_num_thresholds, n_threads=n_threads, curves=curves)
        )
    return metrics


def pixel_metrics(
    anomaly_maps: np.ndarray,
    masks: np.ndarray,
    *,
    aupro_fpr_limit: float = 0.3,
    aupro_num_thresholds: int = 200,
    n_threads: int | None = None,
    curves: dict | None = None,
) -> dict[str, float]:
    """pixel AUROC / AP / F1-max / AUPRO from one shared sort of the pixel scores (``curves``: as in
    :func:`compute_metrics`)."""
    anomaly_maps, masks = np.asarray(anomaly_maps), np.asarray(masks)
    if anomaly_maps.shape != masks.shape:
        raise ValueError(f"anomaly maps {anomaly_maps.shape} and masks {masks.shape} differ in shape")
    ranking = ranking_for_aupro(anomaly_maps, masks, aupro_num_thresholds, n_threads=n_threads)
    f1, _ = ranking.f1_max()
    _, fpr, pro = pro_curve(anomaly_maps, masks, aupro_num_thresholds, ranking)
    if curves is not None:
        curves["pixel_roc"], curves["pixel_pr"] = ranking.roc_curve(), ranking.pr_curve()
    return {
        "pixel_AUROC": ranking.auroc(),
        "pixel_AP": ranking.average_precision(),
        "pixel_F1Max": f1,
        "pixel_AUPRO": area_up_to(fpr, pro, aupro_fpr_limit),
    }


def f1_at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """F1 of the prediction ``score >= threshold``; NaN without anomalies."""
    labels = as_flat_labels(labels)
    predicted = np.asarray(scores).reshape(-1) >= threshold
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    true_positive = int(np.count_nonzero(predicted & labels))
    return 2.0 * true_positive / (int(predicted.sum()) + positives)


def category_slices(categories: np.ndarray) -> dict[str, np.ndarray | slice]:
    """Rows of each category, as a slice when they are contiguous (no copy of the maps then)."""
    categories = np.asarray(categories)
    result: dict[str, np.ndarray | slice] = {}
    for category in sorted(set(categories.tolist())):
        index = np.flatnonzero(categories == category)
        contiguous = index[-1] - index[0] + 1 == index.size
        result[category] = slice(int(index[0]), int(index[-1]) + 1) if contiguous else index
    return result


def per_category_metrics(
    image_scores: np.ndarray,
    image_labels: np.ndarray,
    categories: np.ndarray,
    anomaly_maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    *,
    threshold: float | None = None,
    pooled: bool = True,
    aupro_fpr_limit: float = 0.3,
    aupro_num_thresholds: int = 200,
    n_threads: int | None = None,
) -> pd.DataFrame:
    """Rows: one per category, ``mean`` (NaN-ignoring mean over categories) and ``pooled`` (all categories
    at once, one ranking: the absolute-unified view); columns: metric names."""
    options = dict(threshold=threshold, aupro_fpr_limit=aupro_fpr_limit,
                   aupro_num_thresholds=aupro_num_thresholds, n_threads=n_threads)
    image_scores, image_labels = np.asarray(image_scores), np.asarray(image_labels)
    rows: dict[str, dict[str, float]] = {}
    parts = category_slices(categories)
    for category, rows_of in parts.items():
        rows[category] = compute_metrics(
            image_scores[rows_of], image_labels[rows_of],
            None if anomaly_maps is None else anomaly_maps[rows_of],
            None if masks is None else masks[rows_of],
            **options,
        )
    table = pd.DataFrame.from_dict(rows, orient="index")
    mean = table.mean(axis=0, skipna=True)
    table.loc[MEAN_ROW] = mean
    if pooled:
        if len(parts) == 1:
            table.loc[POOLED_ROW] = table.iloc[0]
        else:
            table.loc[POOLED_ROW] = pd.Series(
                compute_metrics(image_scores, image_labels, anomaly_maps, masks, **options)
            )
    table.index.name = "category"
    return table


def flatten_metrics(table: pd.DataFrame, per_category: bool = True) -> dict[str, float]:
    """A metric table as MLflow metric names: the mean row under the plain names (``image_AUROC``), the
    pooled row as ``pooled_<name>`` and, optionally, each category as ``<category>/<name>``."""
    flat: dict[str, float] = {}
    for row, values in table.iterrows():
        for name, value in values.items():
            if row == MEAN_ROW:
                key = str(name)
            elif row == POOLED_ROW:
                key = f"{POOLED_PREFIX}{name}"
            elif per_category:
                key = f"{row}/{name}"
            else:
                continue
            flat[key] = float(value)
    return flat
