"""Project pipelines: discovered from ``pipelines/<name>/``, plus the end-to-end default."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The order a default run chains them in; a pipeline missing from the folder is skipped.
DEFAULT_CHAIN = ("ingest", "synthesize", "train_uniad", "train_cada", "train_uniadc", "evaluate")


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    try:
        from unified_anomaly.pipelines.evaluate.pipeline import EVALUATED_MODELS, create_model_evaluation
    except ImportError:
        pass
    else:
        for model in EVALUATED_MODELS:
            pipelines[f"evaluate_{model}"] = create_model_evaluation(model)
    pipelines["__default__"] = sum((pipelines[name] for name in DEFAULT_CHAIN if name in pipelines), Pipeline([]))
    return pipelines
