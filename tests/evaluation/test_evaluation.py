"""predict_store, thresholds, class-aware settings, the metric table and the figures on a toy store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from toy_data import BrightnessModel, toy_store

from unified_anomaly.evaluation import (
    calibrate_threshold,
    class_aware_normalise,
    class_statistics,
    classify,
    evaluate_predictions,
    evaluation_figures,
    flatten_table,
    metrics_markdown,
    predict_store,
    resolve_threshold_method,
    worst_and_best,
)
from unified_anomaly.models.contract import Predictions


@pytest.fixture(scope="module")
def store():
    return toy_store()


@pytest.fixture(scope="module")
def predictions(store):
    return predict_store(BrightnessModel(classes=2), store, store.select(split="test"), batch_size=5,
                         device="cpu", progress=False)


def test_predict_store_outputs(store, predictions) -> None:
    rows = store.select(split="test")
    assert predictions["anomaly_maps"].shape == (16, 32, 32) and predictions["anomaly_maps"].dtype == np.float32
    np.testing.assert_array_equal(predictions["indices"], rows)
    np.testing.assert_array_equal(predictions["labels"], store.labels(rows))
    expected = store.images[rows].astype(np.float32).mean(axis=3) / 255.0
    np.testing.assert_allclose(predictions["anomaly_maps"], expected, atol=1e-6)
    np.testing.assert_allclose(predictions["image_scores"], expected.reshape(16, -1).max(axis=1), atol=1e-6)
    assert predictions["class_argmax"].dtype == np.uint8 and predictions["class_argmax"].max() <= 1
    scores_only = predict_store(BrightnessModel(), store, rows, batch_size=7, device="cpu", progress=False,
                                keep_maps=False)
    assert "anomaly_maps" not in scores_only and "class_argmax" not in scores_only


def test_predict_store_rejects_low_resolution_maps(store) -> None:
    class Coarse(torch.nn.Module):
        def predict(self, images: torch.Tensor) -> Predictions:
            return Predictions(images[:, 0, ::2, ::2], images.flatten(1).amax(1))

    with pytest.raises(ValueError, match="input resolution"):
        predict_store(Coarse(), store, store.select(split="test"), device="cpu", progress=False)


def test_thresholds() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.8, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert calibrate_threshold(scores, labels, "f1max") == pytest.approx(0.35)
    assert resolve_threshold_method(labels, "auto") == "f1max"
    assert resolve_threshold_method(np.zeros(3), "auto") == "normal_quantile"
    assert calibrate_threshold(scores, labels, "normal_quantile", quantile=0.5) == pytest.approx(0.2)
    high = calibrate_threshold(scores, labels, "normal_max")
    assert high > 0.3 and not (0.3 >= high)  # no validation normal is flagged (anomalous iff score >= threshold)
    assert calibrate_threshold(scores[:3]) == pytest.approx(np.quantile(scores[:3], 0.99))
    with pytest.raises(ValueError, match="only one class"):
        calibrate_threshold(scores[:3], labels[:3], "f1max")
    with pytest.raises(ValueError, match="unknown threshold method"):
        calibrate_threshold(scores, labels, "median")


def test_class_aware_normalisation_fixes_pooled_auroc() -> None:
    # category b's normal scores exceed category a's anomalies: pooled raw AUROC suffers, class-aware does not
    scores = np.array([0.1, 0.2, 0.5, 0.6, 10.1, 10.2, 10.5, 10.6])
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    categories = np.array(["a"] * 4 + ["b"] * 4)
    stats = class_statistics(scores, categories, labels)
    assert stats["a"] == pytest.approx((0.15, 0.2)) and stats["b"] == pytest.approx((10.15, 10.2))
    maps = scores[:, None, None] * np.ones((8, 2, 2), np.float32)
    norm_maps, norm_scores = class_aware_normalise(maps, scores, categories, stats)
    np.testing.assert_allclose(norm_scores[:4], norm_scores[4:], atol=1e-9)
    np.testing.assert_allclose(norm_maps[:, 0, 0], norm_scores, atol=1e-5)
    assert roc_auc_score(labels, scores) < 1.0 == roc_auc_score(labels, norm_scores)
    with pytest.raises(ValueError, match="no class-aware statistics"):
        class_aware_normalise(None, scores, categories, {"a": stats["a"]})


def test_metric_table_rows_and_names(store, predictions) -> None:
    val = predict_store(BrightnessModel(), store, store.select(split="val"), device="cpu", progress=False)
    stats = class_statistics(val["image_scores"], store.manifest["category"].to_numpy()[val["indices"]])
    curves: dict = {}
    classification = classify(predictions, store)
    table = evaluate_predictions(predictions, store, threshold=0.5, class_stats=stats, curves=curves,
                                 classification=classification)
    assert list(table.index) == ["bottle", "carpet", "mean", "pooled", "class_aware_pooled"]
    for name in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_F1Score", "image_ClassAcc", "pixel_mIoU"):
        assert name in table.columns
    # the toy anomalies are brighter squares: detection is perfect per category
    assert table.loc["bottle", "image_AUROC"] == 1.0 and table.loc["carpet", "pixel_AUROC"] > 0.99
    assert table.loc["pooled", "image_AUROC"] < 1.0  # carpet normals are brighter than bottle anomalies
    assert table.loc["class_aware_pooled", "image_AUROC"] > table.loc["pooled", "image_AUROC"]
    # carpet's 'combined' images (class 2) are excluded from classification
    assert classification["carpet"].excluded_class == 2 and classification["carpet"].num_classes == 2
    flat = flatten_table(table)
    assert {"image_AUROC", "pooled_image_AUROC", "class_aware_pooled_pixel_AUROC", "bottle/pixel_AUPRO",
            "image_ClassAcc", "pixel_mIoU"} <= set(flat)
    assert not any(k.startswith("pooled_") and "Class" in k for k in flat)
    assert set(curves) == {"bottle", "carpet", "pooled"} and "pixel_roc" in curves["pooled"]
    markdown = metrics_markdown(table, title="toy")
    assert markdown.count("\n|") == len(table) + 2 and "**mean**" in markdown  # header, separator, rows

    figures = evaluation_figures(table, curves, predictions, store, threshold=0.5, overlay_count=2,
                                 classification=classification, dpi=40)
    assert set(figures) == {"roc_curves.png", "pr_curves.png", "score_histograms.png", "overlay_grid.png",
                            "confusion_matrix_bottle.png", "confusion_matrix_carpet.png"}


def test_single_setting_and_no_classifier(store) -> None:
    plain = predict_store(BrightnessModel(), store, store.select(split="test"), device="cpu", progress=False)
    table = evaluate_predictions(plain, store, settings=["class_agnostic"])
    assert list(table.index) == ["pooled"] and "image_ClassAcc" not in table.columns
    with pytest.raises(ValueError, match="class statistics"):
        evaluate_predictions(plain, store, settings=["class_aware"])
    with pytest.raises(ValueError, match="unknown or empty"):
        evaluate_predictions(plain, store, settings=["oracle"])


def test_worst_and_best() -> None:
    scores = np.array([0.9, 0.1, 0.6, 0.4])
    labels = np.array([0, 1, 1, 0])
    worst, best = worst_and_best(scores, labels, threshold=0.5, count=1)
    assert worst.tolist() == [0] or worst.tolist() == [1]  # margins: -0.4, -0.4, 0.1, 0.1
    assert set(best.tolist()) <= {2, 3} and not set(worst) & set(best)
    assert worst_and_best(scores, labels, 0.5, count=10)[0].size == 2


def test_classify_reads_the_class_source_maps_when_given(store, predictions) -> None:
    """A model whose class map thresholds another map than its anomaly map (UniADC normal_memory.classify_on):
    classification follows ``class_source_maps``, detection metrics still read ``anomaly_maps``."""
    base = classify(predictions, store)
    swapped = dict(predictions, class_source_maps=predictions["anomaly_maps"],
                   anomaly_maps=np.zeros_like(predictions["anomaly_maps"]))
    again = classify(swapped, store)
    for category, result in base.items():
        np.testing.assert_array_equal(result.predicted_classes, again[category].predicted_classes)
    blank = classify(dict(predictions, class_source_maps=np.zeros_like(predictions["anomaly_maps"])), store)
    assert all((r.predicted_classes == 0).all() for r in blank.values())
