"""From predictions on the test split to one metric table: categories, mean, pooled, class-aware pooled."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from unified_anomaly.data.store import ImageStore
from unified_anomaly.evaluation.settings import (
    CLASS_AGNOSTIC,
    CLASS_AWARE,
    CLASS_AWARE_ROW,
    CLASS_SEPARATED,
    POOLED_ROW,
    ROW_PREFIXES,
    SETTINGS,
    check_settings,
    class_aware_normalise,
)
from unified_anomaly.metrics import (
    MEAN_ROW,
    category_slices,
    classification_metrics,
    compute_metrics,
    confusion_matrix,
    uniadc_class_maps,
)

logger = logging.getLogger(__name__)

COMBINED_CLASS = "combined"


@dataclass
class ClassificationResult:
    """UniADC-rule outputs of one category (test rows in prediction order)."""

    class_names: list[str]
    true_classes: np.ndarray
    predicted_classes: np.ndarray
    predicted_maps: np.ndarray
    excluded_class: int | None

    @property
    def num_classes(self) -> int:
        """Y + 1: normal plus the anomaly types, ``combined`` not counted."""
        return len(self.class_names) - (1 if self.excluded_class is not None else 0)

    def confusion(self) -> np.ndarray:
        keep = self.true_classes != (-1 if self.excluded_class is None else self.excluded_class)
        return confusion_matrix(self.true_classes[keep], self.predicted_classes[keep], len(self.class_names))


def test_rows(predictions: Mapping[str, np.ndarray], store: ImageStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(categories, true class ids, class-valued masks) of the predicted store rows, in prediction order."""
    indices = np.asarray(predictions["indices"], dtype=np.int64)
    manifest = store.manifest
    categories = manifest["category"].to_numpy()[indices].astype(str)
    class_ids = manifest["class_id"].to_numpy()[indices].astype(np.int64)
    masks = np.asarray(store.masks[indices])
    return categories, class_ids, masks


def classify(
    predictions: Mapping[str, np.ndarray],
    store: ImageStore,
    threshold: float = 0.5,
) -> dict[str, ClassificationResult]:
    """The UniADC pixel-class map rule per category (test-set min-max normalisation of that category)."""
    if "class_argmax" not in predictions:
        return {}
    categories, class_ids, _ = test_rows(predictions, store)
    # a model may threshold another map for its classes than its anomaly map (UniADC normal_memory.classify_on)
    maps = predictions.get("class_source_maps", predictions["anomaly_maps"])
    argmax = predictions["class_argmax"]
    results = {}
    for category, rows in category_slices(categories).items():
        names = list(store.class_names.get(category, []))
        excluded = names.index(COMBINED_CLASS) if COMBINED_CLASS in names else None
        predicted_maps, predicted_classes = uniadc_class_maps(maps[rows], argmax[rows], threshold=threshold)
        if not names:
            names = ["good"] + [f"class_{i}" for i in range(1, int(class_ids[rows].max(initial=0)) + 1)]
        results[category] = ClassificationResult(names, class_ids[rows], predicted_classes, predicted_maps, excluded)
    return results


def evaluate_predictions(
    predictions: Mapping[str, np.ndarray],
    store: ImageStore,
    *,
    settings: Sequence[str] = SETTINGS,
    threshold: float | None = None,
    class_stats: Mapping[str, tuple[float, float]] | None = None,
    classification: Mapping[str, ClassificationResult] | None = None,
    aupro_fpr_limit: float = 0.3,
    aupro_num_thresholds: int = 200,
    n_threads: int | None = None,
    curves: dict | None = None,
    base_predictions: Mapping[str, np.ndarray] | None = None,
    base_threshold: float | None = None,
) -> pd.DataFrame:
    """The metric table of one model: rows = categories + ``mean`` (class_separated), ``pooled``
    (class_agnostic), ``class_aware_pooled`` (class_aware); columns = metric names (see settings.py).

    curves: a dict to fill with ``curves[row] = {"image_roc": (x, y), ...}`` for the plots.
    base_predictions: for a CADA-wrapped model, its base model's raw predictions (``base_model_view``, same
    rows): class_separated and class_aware are computed on them (with ``base_threshold`` and ``class_stats``
    of the base's scores), class_agnostic on ``predictions`` (CADA's normalised outputs).
    """
    curves = {} if curves is None else curves
    settings = check_settings(list(settings))
    categories, class_ids, masks = test_rows(predictions, store)
    scores, labels = predictions["image_scores"], predictions["labels"]
    maps = predictions.get("anomaly_maps")
    pooled_scores, pooled_maps, pooled_threshold = scores, maps, threshold
    if base_predictions is not None:  # CADA: the base's raw outputs for the per-class and oracle settings
        if not np.array_equal(base_predictions["indices"], predictions["indices"]):
            raise ValueError("base_predictions must hold the same rows, in the same order, as predictions")
        scores, maps, threshold = base_predictions["image_scores"], base_predictions.get("anomaly_maps"), base_threshold
    if maps is not None and not masks.any():
        logger.warning("the test split has no anomalous mask pixel: pixel metrics will be NaN")
    options = dict(aupro_fpr_limit=aupro_fpr_limit, aupro_num_thresholds=aupro_num_thresholds, n_threads=n_threads)
    parts = category_slices(categories)
    rows: dict[str, dict[str, float]] = {}

    if CLASS_SEPARATED in settings:
        for category, sel in parts.items():
            logger.info("metrics of category %s (%d images)", category, len(scores[sel]))
            curves[category] = {}
            rows[category] = compute_metrics(scores[sel], labels[sel], None if maps is None else maps[sel],
                                             masks[sel], threshold=threshold, curves=curves[category], **options)
            if classification and category in classification:
                result = classification[category]
                rows[category].update(classification_metrics(
                    result.true_classes, result.predicted_classes, masks[sel], result.predicted_maps,
                    num_classes=result.num_classes, excluded_class=result.excluded_class))
        table = pd.DataFrame.from_dict(rows, orient="index")
        rows[MEAN_ROW] = table.mean(axis=0, skipna=True).to_dict()

    single = len(parts) == 1 and CLASS_SEPARATED in settings
    if CLASS_AGNOSTIC in settings:
        logger.info("pooled metrics over %d categories (class-agnostic)", len(parts))
        if single and base_predictions is None:
            rows[POOLED_ROW] = _image_pixel_only(rows[next(iter(parts))])
            curves[POOLED_ROW] = curves[next(iter(parts))]
        else:
            curves[POOLED_ROW] = {}
            rows[POOLED_ROW] = compute_metrics(pooled_scores, labels, pooled_maps, masks, threshold=pooled_threshold,
                                               curves=curves[POOLED_ROW], **options)
    if CLASS_AWARE in settings:
        if class_stats is None:
            raise ValueError("the class_aware setting needs class statistics from a reference split")
        if single:  # one category: a positive affine map changes no metric
            rows[CLASS_AWARE_ROW] = _image_pixel_only(rows[next(iter(parts))], drop=("image_F1Score",))
        else:
            logger.info("class-aware pooled metrics (oracle per-category normalisation)")
            norm_maps, norm_scores = class_aware_normalise(maps, scores, categories, class_stats)
            rows[CLASS_AWARE_ROW] = compute_metrics(norm_scores, labels, norm_maps, masks, **options)
            del norm_maps
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "category"
    return table


def _image_pixel_only(row: Mapping[str, float], drop: tuple[str, ...] = ()) -> dict[str, float]:
    """A category row reused as a pooled row: classification metrics are not pooled."""
    return {k: v for k, v in row.items() if not _is_classification(k) and k not in drop}


def flatten_table(table: pd.DataFrame, per_category: bool = True) -> dict[str, float]:
    """MLflow names: mean row -> ``<metric>``, pooled rows -> ``<prefix><metric>`` (classification metrics
    are not pooled), categories -> ``<category>/<metric>`` (optional)."""
    flat: dict[str, float] = {}
    for row, values in table.iterrows():
        for name, value in values.items():
            if row == MEAN_ROW:
                flat[str(name)] = float(value)
            elif row in ROW_PREFIXES:
                if not _is_classification(str(name)):
                    flat[f"{ROW_PREFIXES[row]}{name}"] = float(value)
            elif per_category:
                flat[f"{_metric_safe(str(row))}/{name}"] = float(value)
    return flat


def _is_classification(name: str) -> bool:
    return name.startswith("image_Class") or name == "pixel_mIoU"


def _metric_safe(name: str) -> str:
    """MLflow metric keys allow letters, digits, _ - . / and spaces."""
    return "".join(c if c.isalnum() or c in "_-. " else "_" for c in name)
