"""evaluate: one namespaced evaluation pipeline per trained model, all with the same nodes and metric names.

``<model>_model`` (a ModelBundle written by a training pipeline) + ``ingested_images`` →
``<model>.test_predictions`` → ``<model>.threshold`` → ``<model>.metrics_table`` → ``<model>.plots`` and a
nested MLflow run ``evaluate <model>``. Run one with ``kedro run --pipeline evaluate_uniad`` or
``kedro run --pipeline evaluate --namespaces uniad``.
"""

from __future__ import annotations

from functools import partial

from kedro.pipeline import Node, Pipeline

from unified_anomaly.pipelines.evaluate.nodes import (
    choose_threshold,
    compute_evaluation,
    predict_test_set,
    report_to_mlflow,
)

# Models evaluated by ``kedro run --pipeline evaluate``; the registry adds ``evaluate_<model>`` for each.
EVALUATED_MODELS = ("uniad", "rd", "rd_cada", "uniad_cada", "uniadc")


def create_model_evaluation(model_name: str) -> Pipeline:
    """The evaluation of ``<model_name>_model``, namespaced ``<model_name>`` (nodes ``<model_name>.predict_test_set``...)."""
    report = _bind_model_name(report_to_mlflow, model_name)
    nodes = [
        Node(
            predict_test_set,
            inputs=["model", "ingested_images", "params:evaluate"],
            outputs=["test_predictions", "reference_predictions", "model_card"],
            name="predict_test_set",
        ),
        Node(
            choose_threshold,
            inputs=["model_card", "reference_predictions", "ingested_images", "params:evaluate"],
            outputs="threshold",
            name="choose_threshold",
        ),
        Node(
            compute_evaluation,
            inputs=["test_predictions", "reference_predictions", "threshold", "ingested_images", "params:evaluate"],
            outputs=["metrics_table", "metric_values", "curves"],
            name="compute_metrics",
        ),
        Node(
            report,
            inputs=["metrics_table", "metric_values", "curves", "test_predictions", "threshold", "model_card",
                    "ingested_images", "params:evaluate"],
            outputs=["metrics_markdown", "plots"],
            name="report_to_mlflow",
        ),
    ]
    return Pipeline(
        nodes,
        namespace=model_name,
        inputs={"model": f"{model_name}_model", "ingested_images": "ingested_images"},
        parameters={"params:evaluate"},
        tags=["evaluate", f"evaluate_{model_name}"],
    )


def _bind_model_name(func, model_name: str):
    """``func`` with its first argument bound; named like ``func`` but WITHOUT ``__wrapped__``, so that
    ``inspect.signature`` (used by Kedro's parameter validation) sees only the remaining arguments."""
    bound = partial(func, model_name)
    for attribute in ("__name__", "__qualname__", "__module__", "__doc__"):
        setattr(bound, attribute, getattr(func, attribute))
    return bound


def create_pipeline(**kwargs) -> Pipeline:
    return sum((create_model_evaluation(model) for model in EVALUATED_MODELS), Pipeline([]))
