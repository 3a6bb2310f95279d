"""UniADC's detection + classification outputs and metrics (methods.md §1 and §6 rows 3-4).

* :func:`uniadc_class_maps`: the pixel-class map rule. Detection maps are min-max normalised over the
  category's test set (or with given statistics), pixels with a normalised value >= 0.5 get
  ``argmax_c(class logits) + 1``, others 0; an image's class is the majority vote over its anomalous pixels
  (ties: the lowest class id), or 0 (normal) when no pixel passes.
* :func:`classification_metrics`: ``image_ClassAcc`` (UniADC "Acc": all test images, normal ones included,
  ``combined`` excluded), ``image_ClassAcc_anomalous`` (fine-grained accuracy on anomalous images only) and
  ``pixel_mIoU`` (macro Jaccard over the labels 0..Y, normal included, over all pixels of the non-combined
  images; a class absent from both prediction and ground truth counts 0, as scikit-learn's
  ``jaccard_score(average="macro", labels=..., zero_division=0)`` used by the official code).
"""

from __future__ import annotations

import numpy as np

_CHUNK = 64  # images per chunk: keeps the float64 / int64 temporaries small


def uniadc_class_maps(
    detection_maps: np.ndarray,
    class_argmax: np.ndarray,
    threshold: float = 0.5,
    low: float | None = None,
    high: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(pixel class maps uint8 N×H×W, image classes int64 N) by the UniADC rule.

    class_argmax: N×H×W index of the highest class logit over the anomaly classes (0-based, normal excluded).
    low / high: normalisation statistics; default: min and max of ``detection_maps`` (UniADC's transductive
    test-set normalisation; pass statistics from validation data for the inductive variant).
    """
    detection_maps = np.asarray(detection_maps)
    class_argmax = np.asarray(class_argmax)
    if detection_maps.shape != class_argmax.shape:
        raise ValueError(f"detection maps {detection_maps.shape} and class maps {class_argmax.shape} differ")
    n = detection_maps.shape[0]
    low = float(detection_maps.min()) if low is None else float(low)
    high = float(detection_maps.max()) if high is None else float(high)
    span = high - low if high > low else 1.0
    class_maps = np.zeros(detection_maps.shape, dtype=np.uint8)
    image_classes = np.zeros(n, dtype=np.int64)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        normalised = (detection_maps[start:stop].astype(np.float64) - low) / span
        anomalous = normalised >= threshold
        class_maps[start:stop] = np.where(anomalous, class_argmax[start:stop].astype(np.int64) + 1, 0)
        for i in range(start, stop):
            votes = class_maps[i][anomalous[i - start]]
            if votes.size:
                image_classes[i] = int(np.argmax(np.bincount(votes)[1:])) + 1
    return class_maps, image_classes


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """num_classes × num_classes counts, rows = true class, columns = predicted class (ids >= num_classes are dropped)."""
    true = np.asarray(true).reshape(-1).astype(np.int64)
    predicted = np.asarray(predicted).reshape(-1).astype(np.int64)
    keep = (true < num_classes) & (predicted < num_classes) & (true >= 0) & (predicted >= 0)
    flat = np.bincount(true[keep] * num_classes + predicted[keep], minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def mean_iou(true_maps: np.ndarray, predicted_maps: np.ndarray, num_classes: int) -> float:
    """Macro Jaccard over labels 0..num_classes-1 over all pixels (absent classes count 0, see module doc)."""
    true_maps, predicted_maps = np.asarray(true_maps), np.asarray(predicted_maps)
    if true_maps.shape != predicted_maps.shape:
        raise ValueError(f"class maps differ in shape: {true_maps.shape} vs {predicted_maps.shape}")
    size = int(max(num_classes, int(predicted_maps.max(initial=0)) + 1, int(true_maps.max(initial=0)) + 1))
    matrix = np.zeros((size, size), dtype=np.int64)
    for start in range(0, true_maps.shape[0] if true_maps.ndim else 1, _CHUNK):
        t = true_maps[start : start + _CHUNK].reshape(-1).astype(np.int64)
        p = predicted_maps[start : start + _CHUNK].reshape(-1).astype(np.int64)
        matrix += np.bincount(t * size + p, minlength=size * size).reshape(size, size)
    hits = np.diag(matrix)[:num_classes].astype(np.float64)
    union = matrix.sum(axis=1)[:num_classes] + matrix.sum(axis=0)[:num_classes] - hits
    iou = np.divide(hits, union, out=np.zeros_like(hits), where=union > 0)
    return float(iou.mean())


def classification_metrics(
    true_classes: np.ndarray,
    predicted_classes: np.ndarray,
    true_maps: np.ndarray | None = None,
    predicted_maps: np.ndarray | None = None,
    num_classes: int | None = None,
    excluded_class: int | None = None,
) -> dict[str, float]:
    """UniADC Acc, fine-grained Acc on anomalous images, and mIoU (when maps are given); see module doc.

    num_classes: Y + 1 (normal included, ``combined`` not); default: 1 + the largest true class id.
    excluded_class: the id of a ``combined`` class, whose images are left out of every metric.
    """
    true_classes = np.asarray(true_classes).astype(np.int64)
    predicted_classes = np.asarray(predicted_classes).astype(np.int64)
    keep = np.ones(true_classes.shape, dtype=bool) if excluded_class is None else true_classes != excluded_class
    if num_classes is None:
        num_classes = int(true_classes[keep].max(initial=0)) + 1
    correct = true_classes[keep] == predicted_classes[keep]
    anomalous = true_classes[keep] > 0
    metrics = {
        "image_ClassAcc": float(correct.mean()) if correct.size else float("nan"),
        "image_ClassAcc_anomalous": float(correct[anomalous].mean()) if anomalous.any() else float("nan"),
    }
    if true_maps is not None and predicted_maps is not None:
        index = np.flatnonzero(keep)
        metrics["pixel_mIoU"] = (
            mean_iou(np.asarray(true_maps)[index], np.asarray(predicted_maps)[index], num_classes)
            if index.size
            else float("nan")
        )
    return metrics
