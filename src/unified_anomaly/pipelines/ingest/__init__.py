"""Ingestion: a dataset folder in any supported layout -> validated manifest -> versioned image store."""

from unified_anomaly.pipelines.ingest.pipeline import create_pipeline

__all__ = ["create_pipeline"]
