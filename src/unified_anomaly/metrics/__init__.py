"""The one home of evaluation metrics: exact, numpy-based, fast enough for tens of millions of pixels."""

from unified_anomaly.metrics.aggregate import (
    IMAGE_METRICS,
    MEAN_ROW,
    PIXEL_METRICS,
    POOLED_PREFIX,
    POOLED_ROW,
    category_slices,
    compute_metrics,
    f1_at_threshold,
    flatten_metrics,
    per_category_metrics,
    pixel_metrics,
)
from unified_anomaly.metrics.aupro import (
    AUPRO_VARIANT,
    area_up_to,
    aupro,
    aupro_thresholds,
    pro_curve,
    region_ids,
)
from unified_anomaly.metrics.classification import (
    classification_metrics,
    confusion_matrix,
    mean_iou,
    uniadc_class_maps,
)
from unified_anomaly.metrics.ranking import ScoreRanking, auroc, average_precision, f1_max

__all__ = [
    "AUPRO_VARIANT",
    "IMAGE_METRICS",
    "MEAN_ROW",
    "PIXEL_METRICS",
    "POOLED_PREFIX",
    "POOLED_ROW",
    "ScoreRanking",
    "area_up_to",
    "aupro",
    "aupro_thresholds",
    "auroc",
    "average_precision",
    "category_slices",
    "classification_metrics",
    "compute_metrics",
    "confusion_matrix",
    "f1_at_threshold",
    "f1_max",
    "flatten_metrics",
    "mean_iou",
    "per_category_metrics",
    "pixel_metrics",
    "pro_curve",
    "region_ids",
    "uniadc_class_maps",
]
