"""synthesize: anomaly images of named defect types with class-valued masks, for UniADC's discriminator."""

from unified_anomaly.pipelines.synthesize.pipeline import create_pipeline

__all__ = ["create_pipeline"]
