"""Log one model's evaluation to MLflow so that any two runs compare side by side.

Each model gets its own run, NESTED in the active run when there is one (kedro-mlflow opens one per
``kedro run``), a top-level run otherwise. Every model logs the same metric names (see
``evaluation/settings.py``) and the same tag keys (``TAG_KEYS``), so the MLflow UI's compare view lines
them up directly.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

TAG_KEYS = ("model", "registry_name", "dataset", "setting", "backbone", "weights", "evaluation_settings",
            "threshold_source", "aupro_variant")
UNSPECIFIED = "unspecified"


def _text(value: Any) -> str:
    """Tag values are strings; dicts and lists as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return UNSPECIFIED
    return json.dumps(value, sort_keys=True, default=str)


def _first(*candidates: Any) -> Any:
    for candidate in candidates:
        if candidate not in (None, "", {}, []):
            return candidate
    return None


def run_tags(model_name: str, model_card: Mapping[str, Any], dataset: str, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The comparison tags. ``model_card`` = {"name", "config", "info", ...} of the ModelBundle; the bundle's
    ``info["tags"]`` (model-specific tags) are added as they are and win over the defaults below."""
    config = dict(model_card.get("config") or {})
    info = dict(model_card.get("info") or {})
    model_tags = dict(info.get("tags") or {})
    tags = {
        "model": model_name,
        "registry_name": _first(model_card.get("name"), model_name),
        "dataset": _first(dataset, info.get("dataset"), config.get("dataset")),
        "setting": _first(info.get("setting"), config.get("setting")),
        "backbone": _first(info.get("backbone"), config.get("backbone")),
        # what was really loaded wins over what was asked for ("default")
        "weights": _first(info.get("weights"), model_tags.get("weights"), model_tags.get("weights_source"),
                          config.get("weights")),
    }
    tags.update(extra or {})
    tags.update(model_tags)
    return {str(k): _text(v) for k, v in tags.items()}


def _start_run(run_name: str):
    import mlflow

    nested = mlflow.active_run() is not None
    return mlflow.start_run(run_name=run_name, nested=nested)


def log_evaluation(
    model_name: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    table: pd.DataFrame,
    markdown: str,
    figures: Mapping[str, Figure],
) -> str:
    """Opens ``evaluate <model>`` (nested when a run is active), logs everything, closes it; returns its run id.

    NaN metrics (e.g. AUROC of a single-class category) are logged as NaN, so every run has every name.
    """
    import mlflow

    with _start_run(f"evaluate {model_name}") as run:
        mlflow.set_tags(dict(tags))
        mlflow.log_params({k: _text(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) if v is not None else math.nan for k, v in metrics.items()})
        buffer = io.StringIO()
        table.to_csv(buffer)
        mlflow.log_text(buffer.getvalue(), "metrics/metrics.csv")
        mlflow.log_text(markdown, "metrics/metrics.md")
        for name, figure in figures.items():
            mlflow.log_figure(figure, f"plots/{name}")
        logger.info("logged the evaluation of %s to MLflow run %s", model_name, run.info.run_id)
        return run.info.run_id
