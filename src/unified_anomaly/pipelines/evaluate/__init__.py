"""evaluate: the same metrics, plots and MLflow run for every trained model."""

from unified_anomaly.pipelines.evaluate.pipeline import (
    EVALUATED_MODELS,
    create_model_evaluation,
    create_pipeline,
)

__all__ = ["EVALUATED_MODELS", "create_model_evaluation", "create_pipeline"]
