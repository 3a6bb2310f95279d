"""Nodes of train_cada: thin orchestration around ``models.reverse_distillation`` and ``models.cada``.

Class labels never reach a model here: RD trains on the normals of all categories mixed, and CADA forms its
targets by clustering (``targets.target_method: clusters``). Categories are read only to report how the
clusters line up with them, and by the ``labels`` ablation when it is configured explicitly.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from unified_anomaly.data.manifest import NORMAL
from unified_anomaly.data.store import ImageStore
from unified_anomaly.models.bundle import ModelBundle
from unified_anomaly.models.cada import CADAFitSettings, CADAModel, fit_cada
from unified_anomaly.models.contract import count_parameters, pick_device, to_model_input
from unified_anomaly.models.registry import build_model
from unified_anomaly.models.reverse_distillation import model_summary, train_reverse_distillation

logger = logging.getLogger(__name__)


def _normals(store: ImageStore, split: str, per_category: int | None, seed: int) -> np.ndarray:
    """Row indices of the normal images of a split, optionally at most ``per_category`` per category."""
    indices = store.select(split=split, label=NORMAL)
    if per_category is None or len(indices) == 0:
        return indices
    rng = np.random.default_rng(seed)
    categories = store.manifest["category"].to_numpy()[indices]
    kept = []
    for category in sorted(set(categories)):
        rows = indices[categories == category]
        kept.append(np.sort(rng.choice(rows, size=min(per_category, len(rows)), replace=False)))
    return np.sort(np.concatenate(kept))


def _images(store: ImageStore, indices: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(store.images[np.sort(indices)]) if len(indices) else np.zeros((0, 1, 1, 3), np.uint8)


@torch.no_grad()
def _image_scores(model: Any, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    scores = []
    for start in range(0, len(images), batch_size):
        batch = to_model_input(images[start : start + batch_size], device)
        scores.append(model.predict(batch).image_score.float().cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)


def _threshold(model: Any, store: ImageStore, params: dict[str, Any], device: torch.device) -> float | None:
    """Image-score threshold from the validation split (normals, plus anomalies when it has any)."""
    from unified_anomaly.evaluation import calibrate_threshold

    indices = np.sort(store.select(split="val"))
    if len(indices) == 0:
        logger.warning("no validation images: the threshold stays unset")
        return None
    scores = _image_scores(model, _images(store, indices), int(params.get("batch_size", 16)), device)
    labels = store.labels(indices)
    threshold = calibrate_threshold(scores, labels if labels.any() else None, **params.get("threshold", {}))
    return None if threshold is None else float(threshold)


def train_rd(ingested_images: ImageStore, params: dict[str, Any]) -> tuple[ModelBundle, pd.DataFrame]:
    """Trains Reverse Distillation on the normal training images of every category, mixed, without labels."""
    seed = int(params.get("seed", 0))
    torch.manual_seed(seed)
    device = pick_device(params.get("device", "auto"))
    config = dict(params["rd"])
    training = dict(params.get("rd_training", {}))
    model = build_model("rd", **config)
    train_rows = _normals(ingested_images, "train", training.get("max_train_per_category"), seed)
    images = _images(ingested_images, train_rows)
    logger.info("RD: %d normal training images from %d categories, %s", len(images),
                ingested_images.manifest["category"].iloc[train_rows].nunique(), model.encoder.weights.describe())
    started = time.perf_counter()
    history = train_reverse_distillation(
        model, images, epochs=int(training.get("epochs", 10)), batch_size=int(training.get("batch_size", 16)),
        lr=float(training.get("lr", 0.005)), betas=tuple(training.get("betas", (0.5, 0.999))), seed=seed,
        device=device, cache_features=bool(training.get("cache_features", True)),
    )
    train_seconds = time.perf_counter() - started
    threshold = _threshold(model, ingested_images, params, device)
    info = {
        "tags": {**model.encoder.weights.as_tags(), "model": "rd", "base_model": "rd",
                 "setting": "class_agnostic"},
        "weights": model.encoder.weights.describe(),
        "train_images": int(len(images)),
        "categories": sorted(ingested_images.manifest["category"].iloc[train_rows].unique().tolist()),
        "train_seconds": round(train_seconds, 2),
        "final_loss": history[-1] if history else None,
        "device": str(device),
        **model_summary(model),
    }
    history_table = pd.DataFrame({"epoch": np.arange(1, len(history) + 1), "loss": history})
    return ModelBundle("rd", config, model.cpu().eval(), threshold, info), history_table


def fit_cada_on_base(
    base_model: ModelBundle, ingested_images: ImageStore, params: dict[str, Any]
) -> tuple[ModelBundle, pd.DataFrame]:
    """Fits CADA's regressor on a trained base model (RD, UniAD, ...) from the normal train and val images."""
    if base_model.name == "cada":
        raise ValueError("the base model is already a CADA model; give the plain base model's bundle")
    seed = int(params.get("seed", 0))
    torch.manual_seed(seed)
    device = pick_device(params.get("device", "auto"))
    config = {"base_name": base_model.name, "base_config": base_model.config,
              "regressor": dict(params.get("regressor", {}))}
    model: CADAModel = build_model("cada", **config)
    model.base.load_state_dict(base_model.model.state_dict(), strict=True)
    settings = CADAFitSettings(**params.get("targets", {}))
    per_category = params.get("rd_training", {}).get("max_train_per_category")
    train_rows = _normals(ingested_images, "train", per_category, seed)
    val_rows = _normals(ingested_images, "val", None, seed)
    categories = ingested_images.manifest["category"].to_numpy()
    started = time.perf_counter()
    report = fit_cada(
        model, _images(ingested_images, train_rows), _images(ingested_images, val_rows), settings,
        train_categories=list(categories[train_rows]), val_categories=list(categories[val_rows]),
        batch_size=int(params.get("batch_size", 16)), device=device,
    )
    fit_seconds = time.perf_counter() - started
    threshold = _threshold(model, ingested_images, params, device)
    base_tags = dict(base_model.info.get("tags", {}))
    regressor_extractor = model.regressor.extractor
    tags = {
        **base_tags,
        "model": f"{base_model.name}+cada",
        "base_model": base_model.name,
        "setting": "class_agnostic",
        "cada_target_method": settings.target_method,
        "cada_score_source": settings.score_source,
        "cada_feature_source": model.feature_source,
        "cada_groups": str(report.n_groups),
    }
    if settings.target_method == "clusters" and settings.n_clusters == "auto":
        tags["cada_k_selection"] = settings.k_selection
    if regressor_extractor is not None:
        tags.update({f"cada_regressor_{k}": v for k, v in regressor_extractor.weights.as_tags().items()})
    info = {
        "tags": tags,
        "base_info": base_model.info,
        "base_threshold": base_model.threshold,
        "fit_settings": vars(settings),
        "fit_report": report.as_dict(),
        "fit_seconds": round(fit_seconds, 2),
        "parameters_regressor_head": count_parameters(model.regressor.head),
        "parameters_regressor_total": count_parameters(model.regressor),
        "parameters_base": count_parameters(model.base),
        "device": str(device),
    }
    logger.info("CADA on %s: %d groups, composition %s", base_model.name, report.n_groups, report.composition)
    return ModelBundle("cada", config, model.cpu().eval(), threshold, info), groups_table(report)


def groups_table(report: Any) -> pd.DataFrame:
    """One row per CADA group: size, u, γ and how many normal images of each category it holds."""
    rows = []
    for group, (u, gamma) in report.group_stats.items():
        row = {"group": group, "images": report.group_sizes.get(group, 0), "u": u, "gamma": gamma,
               "fallback_train_scores": group in report.fallback_groups}
        row.update({f"n_{c}": n for c, n in report.composition.get(group, {}).items()})
        rows.append(row)
    return pd.DataFrame(rows).fillna(0)
