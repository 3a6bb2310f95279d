"""The image-score threshold, chosen on the validation split (never on test) and stored with the model.

Rule everywhere in the project: an image (or pixel) is predicted anomalous iff ``score >= threshold``.
"""

from __future__ import annotations

import logging

import numpy as np

from unified_anomaly.metrics.ranking import ScoreRanking

logger = logging.getLogger(__name__)

THRESHOLD_METHODS = ("auto", "f1max", "normal_quantile", "normal_max")


def resolve_threshold_method(val_labels: np.ndarray | None, method: str = "auto") -> str:
    """``auto`` -> ``f1max`` when the validation split holds both classes, else ``normal_quantile``."""
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; choose one of {THRESHOLD_METHODS}")
    has_both = val_labels is not None and 0 < int((np.asarray(val_labels) > 0).sum()) < np.size(val_labels)
    if method == "auto":
        return "f1max" if has_both else "normal_quantile"
    if method == "f1max" and not has_both:
        raise ValueError(
            "threshold method 'f1max' needs normal and anomalous validation images; this validation split has "
            "only one class: use method 'normal_quantile' or 'normal_max' (or 'auto')"
        )
    return method


def calibrate_threshold(
    val_scores: np.ndarray,
    val_labels: np.ndarray | None = None,
    method: str = "auto",
    quantile: float = 0.99,
) -> float:
    """A threshold on image scores from VALIDATION data.

    f1max: the threshold maximising F1 (needs both classes). normal_quantile: the ``quantile`` of the normal
    scores (all scores when ``val_labels`` is None). normal_max: just above the largest normal score (no
    validation normal is flagged). auto: f1max when anomalies are available, else normal_quantile.
    """
    scores = np.asarray(val_scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError("no validation scores: the threshold must be calibrated on a non-empty validation split")
    if not np.all(np.isfinite(scores)):
        raise ValueError("validation scores contain NaN or infinite values; fix the model output first")
    labels = None if val_labels is None else np.asarray(val_labels).reshape(-1) > 0
    resolved = resolve_threshold_method(labels, method)
    if resolved == "f1max":
        _, threshold = ScoreRanking.from_arrays(scores, labels).f1_max()
    else:
        normal = scores if labels is None else scores[~labels]
        if normal.size == 0:
            raise ValueError(f"threshold method {resolved!r} needs normal validation images; there are none")
        if resolved == "normal_quantile":
            if not 0.0 < quantile <= 1.0:
                raise ValueError(f"quantile must be in (0, 1], got {quantile}")
            threshold = float(np.quantile(normal, quantile))
        else:
            threshold = float(np.nextafter(normal.max(), np.inf))
    logger.info("image threshold %.6g (method %s on %d validation images)", threshold, resolved, scores.size)
    return float(threshold)
