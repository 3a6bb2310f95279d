"""Nodes of the synthesize pipeline: thin wrappers around ``unified_anomaly.synthesis``."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from unified_anomaly.data.store import ImageStore
from unified_anomaly.synthesis.contact_sheet import contact_sheet
from unified_anomaly.synthesis.runner import synthesize_store

logger = logging.getLogger(__name__)


def synthesize_anomalies(
    ingested_images: ImageStore, params: dict[str, Any]
) -> tuple[ImageStore, pd.DataFrame]:
    """Synthetic anomalies of every defect type (class-valued masks) and their metadata table."""
    synthetic, metadata, info = synthesize_store(ingested_images, params)
    _log_run_info(info)
    return synthetic, metadata


def make_contact_sheets(
    synthetic_images: ImageStore, synthesis_metadata: pd.DataFrame, params: dict[str, Any]
) -> dict[str, Figure]:
    """One contact sheet per category (``<category>.png``), also logged to the active MLflow run."""
    metadata = synthesis_metadata.reset_index(drop=True)
    backend = str(metadata["backend"].iloc[0]) if len(metadata) else str(params["backend"])
    figures = {}
    for category in synthetic_images.class_names:
        title = (
            f"{synthetic_images.dataset}/{category}: {params['setting']}, {backend}, seed {params['seed']}"
        )
        figures[f"{category}.png"] = contact_sheet(
            synthetic_images.images,
            synthetic_images.masks,
            metadata,
            category,
            synthetic_images.class_names[category],
            int(params.get("contact_sheet_columns", 8)),
            title,
        )
    _log_figures(figures, backend)
    return figures


def _log_run_info(info: dict[str, Any]) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.set_tags(info["tags"])
    mlflow.log_metrics(
        {"synthesis_images": float(info["images"]), "synthesis_images_per_s": info["images_per_s"]}
    )


def _log_figures(figures: dict[str, Figure], backend: str) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.set_tag("synthesis_backend", backend)
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"synthesis/contact_sheets/{name}")
