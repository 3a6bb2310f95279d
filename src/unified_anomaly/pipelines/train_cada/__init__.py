"""train_cada: Reverse Distillation on all classes, then CADA fitted on RD and on the trained UniAD."""

from unified_anomaly.pipelines.train_cada.pipeline import create_pipeline

__all__ = ["create_pipeline"]
