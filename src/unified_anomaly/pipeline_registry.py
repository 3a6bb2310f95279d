"""Project pipelines: one per folder under ``pipelines/``, one evaluation per model, and the default chain."""

from __future__ import annotations

import importlib
from pathlib import Path

from kedro.pipeline import Pipeline

# The order a default run chains them in.
DEFAULT_CHAIN = ("ingest", "synthesize", "train_uniad", "train_cada", "train_uniadc", "evaluate")


def discover_pipelines() -> dict[str, Pipeline]:
    """``create_pipeline()`` of every ``pipelines/<name>/pipeline.py``.

    Kedro's ``find_pipelines`` would only import the folder named on the command line, which cannot serve the
    derived ``evaluate_<model>`` pipelines; importing every folder costs a second and fails loudly on errors.
    """
    pipelines = {}
    for folder in sorted((Path(__file__).parent / "pipelines").iterdir()):
        if (folder / "pipeline.py").is_file():
            module = importlib.import_module(f"unified_anomaly.pipelines.{folder.name}.pipeline")
            pipelines[folder.name] = module.create_pipeline()
    return pipelines


def register_pipelines() -> dict[str, Pipeline]:
    from unified_anomaly.pipelines.evaluate.pipeline import EVALUATED_MODELS, create_model_evaluation

    pipelines = discover_pipelines()
    for model in EVALUATED_MODELS:
        pipelines[f"evaluate_{model}"] = create_model_evaluation(model)
    pipelines["__default__"] = sum((pipelines[name] for name in DEFAULT_CHAIN), Pipeline([]))
    return pipelines
