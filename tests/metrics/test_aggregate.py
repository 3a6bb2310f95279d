"""compute_metrics / per_category_metrics / flatten_metrics: names, skipping, mean and pooled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from unified_anomaly.metrics import (
    IMAGE_METRICS,
    PIXEL_METRICS,
    compute_metrics,
    f1_at_threshold,
    flatten_metrics,
    per_category_metrics,
)


def make_data(seed: int = 0, n: int = 12, size: int = 16):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    labels = np.zeros(n, dtype=np.uint8)
    for i in range(n // 2, n):
        y, x = rng.integers(0, size - 4, 2)
        masks[i, y : y + 4, x : x + 4] = 1 + i % 3
        labels[i] = 1
    labels[-1], masks[-1] = 1, 0  # an anomalous image with an empty mask (as 4 MTD "Uneven" ones)
    maps = rng.random(masks.shape).astype(np.float32) + (masks > 0)
    scores = maps.reshape(n, -1).max(axis=1) + rng.normal(0, 0.3, n)
    return scores, labels, maps, masks


def test_names_and_values_against_sklearn() -> None:
    scores, labels, maps, masks = make_data()
    metrics = compute_metrics(scores, labels, maps, masks, threshold=1.0)
    assert set(metrics) == set(IMAGE_METRICS) | set(PIXEL_METRICS) | {"image_F1Score"}
    assert metrics["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["image_AP"] == pytest.approx(average_precision_score(labels, scores))
    assert metrics["pixel_AUROC"] == pytest.approx(roc_auc_score(masks.ravel() > 0, maps.ravel()))
    assert metrics["pixel_AP"] == pytest.approx(average_precision_score(masks.ravel() > 0, maps.ravel()))
    assert 0 <= metrics["pixel_AUPRO"] <= 1
    predicted = scores >= 1.0
    tp = np.sum(predicted & (labels == 1))
    assert metrics["image_F1Score"] == pytest.approx(2 * tp / (predicted.sum() + labels.sum()))


def test_pixel_metrics_skipped_without_masks() -> None:
    scores, labels, maps, _ = make_data()
    assert set(compute_metrics(scores, labels, maps, None)) == set(IMAGE_METRICS)
    assert set(compute_metrics(scores, labels)) == set(IMAGE_METRICS)


def test_all_normal_category_gives_nan() -> None:
    scores, _, maps, masks = make_data()
    metrics = compute_metrics(scores, np.zeros_like(scores), maps, np.zeros_like(masks))
    assert np.isnan(metrics["image_AUROC"]) and np.isnan(metrics["pixel_AUROC"]) and np.isnan(metrics["pixel_AUPRO"])


def test_per_category_mean_and_pooled_rows() -> None:
    a = make_data(0)
    b = make_data(1)
    scores = np.concatenate([a[0], b[0] + 5.0])  # category b lives on another score scale
    labels = np.concatenate([a[1], b[1]])
    maps = np.concatenate([a[2], b[2] + 5.0])
    masks = np.concatenate([a[3], b[3]])
    categories = np.array(["bottle"] * 12 + ["carpet"] * 12)
    table = per_category_metrics(scores, labels, categories, maps, masks)
    assert list(table.index) == ["bottle", "carpet", "mean", "pooled"]
    for name in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"):
        assert table.loc["mean", name] == pytest.approx(table.loc[["bottle", "carpet"], name].mean())
    assert table.loc["bottle", "image_AUROC"] == pytest.approx(roc_auc_score(a[1], a[0]))
    assert table.loc["pooled", "image_AUROC"] == pytest.approx(roc_auc_score(labels, scores))
    assert table.loc["pooled", "pixel_AUROC"] == pytest.approx(roc_auc_score(masks.ravel() > 0, maps.ravel()))
    # non-contiguous categories give the same numbers
    order = np.random.default_rng(0).permutation(24)
    shuffled = per_category_metrics(scores[order], labels[order], categories[order], maps[order], masks[order])
    pd.testing.assert_frame_equal(table[["image_AUROC", "image_AP"]], shuffled[["image_AUROC", "image_AP"]])

    flat = flatten_metrics(table)
    assert flat["image_AUROC"] == table.loc["mean", "image_AUROC"]
    assert flat["pooled_pixel_AUROC"] == table.loc["pooled", "pixel_AUROC"]
    assert flat["carpet/pixel_AUPRO"] == table.loc["carpet", "pixel_AUPRO"]
    assert "carpet/pixel_AUPRO" not in flatten_metrics(table, per_category=False)


def test_single_category_pooled_equals_category() -> None:
    scores, labels, maps, masks = make_data()
    table = per_category_metrics(scores, labels, np.array(["mtd"] * 12), maps, masks)
    pd.testing.assert_series_equal(table.loc["pooled"], table.loc["mtd"], check_names=False)


def test_f1_at_threshold_without_anomalies_is_nan() -> None:
    assert np.isnan(f1_at_threshold(np.array([0.1, 0.2]), np.array([0, 0]), 0.15))
