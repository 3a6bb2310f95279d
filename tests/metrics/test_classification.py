"""UniADC class-map rule, Acc and mIoU against hand-made cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import jaccard_score

from unified_anomaly.metrics import classification_metrics, confusion_matrix, mean_iou, uniadc_class_maps


def test_class_map_rule_by_hand() -> None:
    # detection over the "test set" spans 0..10; normalised >= 0.5 means detection >= 5
    detection = np.array([[[0.0, 4.9], [5.0, 10.0]], [[1.0, 2.0], [3.0, 4.0]], [[6.0, 7.0], [8.0, 9.0]]])
    argmax = np.array([[[2, 2], [1, 0]], [[0, 0], [0, 0]], [[1, 1], [0, 2]]])
    class_maps, image_classes = uniadc_class_maps(detection, argmax)
    np.testing.assert_array_equal(class_maps[0], [[0, 0], [2, 1]])
    np.testing.assert_array_equal(class_maps[1], 0)
    np.testing.assert_array_equal(class_maps[2], [[2, 2], [1, 3]])
    # image 0: votes {2, 1} tie -> lowest id 1; image 1: nothing -> normal; image 2: class 2 wins
    np.testing.assert_array_equal(image_classes, [1, 0, 2])
    # given statistics instead of the test set's own min-max: only detection >= 10 passes
    _, with_stats = uniadc_class_maps(detection, argmax, low=0.0, high=20.0)
    np.testing.assert_array_equal(with_stats, [1, 0, 0])


def test_mean_iou_matches_sklearn_macro_jaccard() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, (5, 8, 8))
    predicted = rng.integers(0, 5, (5, 8, 8))  # 4 = a class outside the labels (e.g. "combined")
    expected = jaccard_score(true.ravel(), predicted.ravel(), labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert mean_iou(true, predicted, 4) == pytest.approx(expected)
    # a label absent from both counts 0 (as the official code's zero_division behaviour)
    expected6 = jaccard_score(true.ravel(), predicted.ravel(), labels=list(range(6)), average="macro", zero_division=0)
    assert mean_iou(true, predicted, 6) == pytest.approx(expected6)


def test_accuracy_excludes_combined_and_reports_fine_grained() -> None:
    true = np.array([0, 0, 1, 2, 3, 3])  # 3 = combined
    predicted = np.array([0, 1, 1, 1, 3, 0])
    metrics = classification_metrics(true, predicted, excluded_class=3)
    assert metrics["image_ClassAcc"] == pytest.approx(2 / 4)
    assert metrics["image_ClassAcc_anomalous"] == pytest.approx(1 / 2)
    assert "pixel_mIoU" not in metrics
    maps_true = np.zeros((6, 2, 2), int)
    maps_true[2], maps_true[3], maps_true[4] = 1, 2, 3
    maps_pred = maps_true.copy()
    maps_pred[3] = 1
    with_maps = classification_metrics(true, predicted, maps_true, maps_pred, num_classes=3, excluded_class=3)
    # pixels of images 0..3: class 0: 8/8, class 1: 4/(4+4), class 2: 0/4
    assert with_maps["pixel_mIoU"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_confusion_matrix_counts() -> None:
    cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
