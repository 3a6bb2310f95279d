"""Model-agnostic evaluation: predictions from any AnomalyModel, thresholds, settings, tables, figures, MLflow."""

from unified_anomaly.evaluation.evaluate import (
    ClassificationResult,
    classify,
    evaluate_predictions,
    flatten_table,
    test_rows,
)
from unified_anomaly.evaluation.prediction import predict_store, to_model_input
from unified_anomaly.evaluation.report import evaluation_figures, metrics_markdown, worst_and_best
from unified_anomaly.evaluation.settings import (
    CLASS_AGNOSTIC,
    CLASS_AWARE,
    CLASS_SEPARATED,
    SETTINGS,
    class_aware_normalise,
    class_statistics,
)
from unified_anomaly.evaluation.thresholds import (
    THRESHOLD_METHODS,
    calibrate_threshold,
    resolve_threshold_method,
)

__all__ = [
    "CLASS_AGNOSTIC",
    "CLASS_AWARE",
    "CLASS_SEPARATED",
    "SETTINGS",
    "THRESHOLD_METHODS",
    "ClassificationResult",
    "calibrate_threshold",
    "class_aware_normalise",
    "class_statistics",
    "classify",
    "evaluate_predictions",
    "evaluation_figures",
    "flatten_table",
    "metrics_markdown",
    "predict_store",
    "resolve_threshold_method",
    "test_rows",
    "to_model_input",
    "worst_and_best",
]
