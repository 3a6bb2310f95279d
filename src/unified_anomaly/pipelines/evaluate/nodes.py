"""Nodes of the per-model evaluation pipeline: thin orchestration over ``unified_anomaly.evaluation``."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from unified_anomaly.data.store import ImageStore
from unified_anomaly.evaluation import (
    CLASS_AWARE,
    calibrate_threshold,
    class_statistics,
    classify,
    evaluate_predictions,
    evaluation_figures,
    flatten_table,
    metrics_markdown,
    predict_store,
    resolve_threshold_method,
)
from unified_anomaly.evaluation.mlflow_logging import log_evaluation, run_tags
from unified_anomaly.evaluation.settings import base_model_view
from unified_anomaly.metrics import AUPRO_VARIANT
from unified_anomaly.models.bundle import ModelBundle

logger = logging.getLogger(__name__)

_CURVE_SEPARATOR = "|"


def predict_test_set(
    model: ModelBundle, images: ImageStore, params: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Test-split predictions (with maps), reference-split image scores, and the model's card (name, config, info)."""
    torch.manual_seed(int(params.get("seed", 0)))
    test_rows = images.select(split="test")
    if test_rows.size == 0:
        raise ValueError("ingested_images has no 'test' rows: run the ingest pipeline with a test split")
    run = dict(batch_size=int(params["batch_size"]), device=params.get("device", "auto"),
               progress=bool(params.get("progress", True)))
    logger.info("evaluating %s on %d test images", model.name, test_rows.size)
    test = predict_store(model.model, images, test_rows, keep_maps=True, **run)
    reference_splits = sorted({params["threshold"]["split"], params["class_aware_reference_split"]})
    reference_rows = images.select(split=reference_splits)
    reference = predict_store(model.model, images, reference_rows, keep_maps=False, **run)
    card = {"name": model.name, "config": model.config, "threshold": model.threshold, "info": model.info}
    return test, reference, card


def choose_threshold(
    model_card: dict[str, Any], reference_predictions: dict[str, np.ndarray], images: ImageStore,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The image threshold: the one stored with the model, else calibrated here on the validation split.

    A CADA model gets a second one, ``base_threshold``, for its base model's raw scores (class_separated)."""
    threshold = _threshold(model_card["name"], model_card.get("threshold"), reference_predictions, images, params)
    base = base_model_view(reference_predictions)
    if base is not None:
        stored = (model_card.get("info") or {}).get("base_threshold")
        base_threshold = _threshold(f"{model_card['name']} base", stored, base, images, params)
        threshold.update({"base_threshold": base_threshold["threshold"], "base_source": base_threshold["source"]})
    return threshold


def _threshold(name: str, stored: float | None, reference_predictions: dict[str, np.ndarray], images: ImageStore,
               params: dict[str, Any]) -> dict[str, Any]:
    options = params["threshold"]
    if options.get("use_stored", True) and stored is not None:
        return {"threshold": float(stored), "source": "model bundle (calibrated by its training pipeline)"}
    split = options["split"]
    if split == "test":
        raise ValueError("evaluate.threshold.split must not be 'test': thresholds are chosen on validation data")
    rows = _rows_of_split(reference_predictions, images, split)
    scores, labels = reference_predictions["image_scores"][rows], reference_predictions["labels"][rows]
    method = resolve_threshold_method(labels, options["method"])
    value = calibrate_threshold(scores, labels, method=method, quantile=float(options.get("quantile", 0.99)))
    logger.warning("the %s bundle stores no threshold: calibrated %.6g on %s (%s)", name, value, split, method)
    return {"threshold": value, "source": f"calibrated at evaluation on {split} ({method})"}


def compute_evaluation(
    test_predictions: dict[str, np.ndarray], reference_predictions: dict[str, np.ndarray],
    threshold: dict[str, Any], images: ImageStore, params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, float], dict[str, np.ndarray]]:
    """Metric table (categories, mean, pooled rows), the flat metric dict logged to MLflow, and plot curves."""
    settings = list(params["settings"])
    # A CADA model: class_separated and class_aware on its base model's raw outputs (evaluation/settings.py).
    base_test, base_reference = base_model_view(test_predictions), base_model_view(reference_predictions)
    reference = reference_predictions if base_reference is None else base_reference
    stats = None
    if CLASS_AWARE in settings:
        rows = _rows_of_split(reference, images, params["class_aware_reference_split"])
        categories = images.manifest["category"].to_numpy()[reference["indices"][rows]]
        stats = class_statistics(reference["image_scores"][rows], categories, reference["labels"][rows])
    classification = classify(test_predictions, images, threshold=float(params["classification"]["threshold"]))
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    table = evaluate_predictions(
        test_predictions, images, settings=settings, threshold=float(threshold["threshold"]), class_stats=stats,
        classification=classification, aupro_fpr_limit=float(params["aupro"]["fpr_limit"]),
        aupro_num_thresholds=int(params["aupro"]["num_thresholds"]), n_threads=params.get("n_threads"),
        curves=curves, base_predictions=base_test, base_threshold=threshold.get("base_threshold"),
    )
    values = flatten_table(table, per_category=bool(params.get("per_category_metrics", True)))
    flat_curves = {
        _CURVE_SEPARATOR.join((row, name, axis)): np.asarray(array)
        for row, row_curves in curves.items() for name, xy in row_curves.items() for axis, array in zip("xy", xy, strict=True)
    }
    return table.reset_index(), values, flat_curves


def report_to_mlflow(
    model_name: str, metrics_table: pd.DataFrame, metric_values: dict[str, float], curves: dict[str, np.ndarray],
    test_predictions: dict[str, np.ndarray], threshold: dict[str, Any], model_card: dict[str, Any],
    images: ImageStore, params: dict[str, Any],
) -> tuple[str, dict[str, Figure]]:
    """Markdown table and figures; logs them, the metrics and the comparison tags to a nested MLflow run."""
    table = metrics_table.set_index("category")
    markdown = metrics_markdown(table, title=f"{model_name} on {images.dataset or 'dataset'} (test split)")
    classification = classify(test_predictions, images, threshold=float(params["classification"]["threshold"]))
    figures = evaluation_figures(
        table, _unflatten_curves(curves), test_predictions, images, float(threshold["threshold"]),
        overlay_count=int(params["overlay_images"]), classification=classification,
        dpi=int(params.get("figure_dpi", 100)),
    )
    if params.get("log_to_mlflow", True):
        tags = run_tags(model_name, model_card, images.dataset, extra={
            "evaluation_settings": ",".join(params["settings"]),
            "threshold_source": threshold["source"],
            # CADA models: class_separated / class_aware rows come from the base model's raw outputs
            "class_separated_scores": "base model (raw)" if "base_threshold" in threshold else "model",
            "aupro_variant": AUPRO_VARIANT,
            "classification_normalisation": "test-set min-max per category (UniADC rule)"
            if classification else "not a classifying model",
        })
        run_params = {"threshold": threshold["threshold"], "aupro_fpr_limit": params["aupro"]["fpr_limit"],
                      "aupro_num_thresholds": params["aupro"]["num_thresholds"],
                      "class_aware_reference_split": params["class_aware_reference_split"],
                      "test_images": int(len(test_predictions["indices"]))}
        log_evaluation(model_name, metric_values, tags, run_params, table, markdown, figures)
    return markdown, figures


def _rows_of_split(predictions: dict[str, np.ndarray], images: ImageStore, split: str) -> np.ndarray:
    splits = images.manifest["split"].to_numpy()[predictions["indices"]]
    rows = np.flatnonzero(splits == split)
    if rows.size == 0:
        raise ValueError(f"ingested_images has no '{split}' rows to calibrate on; choose another split in "
                         "conf/base/parameters_evaluate.yml (evaluate.threshold.split / class_aware_reference_split)")
    return rows


def _unflatten_curves(flat: dict[str, np.ndarray]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    curves: dict[str, dict[str, list]] = {}
    for key, array in flat.items():
        row, name, axis = key.rsplit(_CURVE_SEPARATOR, 2)
        curves.setdefault(row, {}).setdefault(name, [None, None])["xy".index(axis)] = array
    return {row: {name: (xy[0], xy[1]) for name, xy in c.items()} for row, c in curves.items()}
