"""train_uniadc: UniADC's multi-task discriminator on real normals plus synthetic (and few-shot real) anomalies."""

from unified_anomaly.pipelines.train_uniadc.pipeline import create_pipeline

__all__ = ["create_pipeline"]
