"""Nodes of train_uniad: thin orchestration around ``models.uniad`` and ``models.uniad_training``.

One model is trained on the normal training images of every category mixed (the unified setting); no class
label reaches the model. The frozen backbone's features are computed once (``uniad_features``, a versioned
04_feature dataset: exact because the backbone is frozen and UniAD uses no augmentation) and every epoch
trains the transformer on them. Model selection and the image threshold use the validation split only.
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
from unified_anomaly.models.contract import count_parameters, pick_device
from unified_anomaly.models.registry import build_model
from unified_anomaly.models.uniad import UniAD
from unified_anomaly.models.uniad_training import (
    UniADTrainConfig,
    extract_feature_cache,
    seed_everything,
    train_uniad,
)

logger = logging.getLogger(__name__)


def _features(model: UniAD, store: ImageStore, rows: np.ndarray, params: dict[str, Any], what: str) -> torch.Tensor:
    if len(rows) == 0:
        return torch.zeros(0, model.feature_dim, model.grid, model.grid)
    batches = (images for _, images, _ in store.iter_batches(rows, int(params.get("feature_batch_size", 32))))
    return extract_feature_cache(
        model, batches, total=len(rows), device=params.get("device", "auto"), description=f"UniAD features ({what})"
    )


def _seeded_model(params: dict[str, Any]) -> UniAD:
    seed_everything(int(params.get("seed", 0)))
    return build_model("uniad", **dict(params["model"]))


def extract_uniad_features(ingested_images: ImageStore, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Frozen-backbone features of the train normals and of the val split, computed once per image."""
    model = _seeded_model(params)
    logger.info("UniAD backbone %s", model.weights_info.describe())
    train_rows = ingested_images.select(split="train", label=NORMAL)
    if len(train_rows) == 0:
        raise ValueError("ingested_images has no normal images in split 'train': UniAD has nothing to learn from")
    val_rows = ingested_images.select(split="val")
    categories = ingested_images.manifest["category"].to_numpy()
    logger.info(
        "UniAD (unified): %d normal training images from %d categories, %d validation images",
        len(train_rows), len(set(categories[train_rows])), len(val_rows),
    )
    started = time.perf_counter()
    train = _features(model, ingested_images, train_rows, params, "train")
    val = _features(model, ingested_images, val_rows, params, "val")
    return {
        "train": train.numpy(),
        "val": val.numpy(),
        "val_labels": ingested_images.labels(val_rows),
        "image_size": np.array(int(ingested_images.size)),
        "categories": np.array(sorted(set(categories[train_rows].tolist()))),
        "feature_seconds": np.array(time.perf_counter() - started),
    }


def train_uniad_model(uniad_features: dict[str, np.ndarray], params: dict[str, Any]) -> tuple[ModelBundle, pd.DataFrame]:
    """Trains the transformer on the cached features (epoch chosen on validation normals), calibrates the image
    threshold on the validation split and returns the bundle with what was really used."""
    training = dict(params.get("training", {}))
    training.setdefault("seed", int(params.get("seed", 0)))
    training.setdefault("device", params.get("device", "auto"))
    config = UniADTrainConfig(**training)
    train = torch.from_numpy(np.ascontiguousarray(uniad_features["train"]))
    val = torch.from_numpy(np.ascontiguousarray(uniad_features["val"]))
    val_labels = np.asarray(uniad_features["val_labels"])
    val_normals = val[torch.from_numpy(val_labels == 0)] if len(val) else None
    if config.selection == "val_loss" and (val_normals is None or len(val_normals) == 0):
        logger.warning("no normal validation images: UniAD keeps the last epoch instead of the best validation loss")
        config.selection = "last"
    model, history, summary = train_uniad(_seeded_model(params), train, val_normals, config)
    summary.update(
        {
            "train_images": int(len(train)),
            "val_images": int(len(val)),
            "categories": [str(c) for c in uniad_features["categories"]],
            "feature_seconds": round(float(uniad_features["feature_seconds"]), 2),
            "model_config": dict(params["model"]),
        }
    )
    threshold = calibrate_uniad_threshold(model, val, val_labels, int(uniad_features["image_size"]), params)
    return build_uniad_bundle(model, threshold, summary), history


@torch.no_grad()
def uniad_scores(model: UniAD, features: torch.Tensor, output_size: int, batch_size: int, device: str) -> np.ndarray:
    """Image scores from cached features, in batches."""
    device = pick_device(device)
    model.to(device).eval()
    scores = []
    for start in range(0, len(features), batch_size):
        batch = features[start : start + batch_size].to(device)
        scores.append(model.predict_features(batch, (output_size, output_size)).image_score.float().cpu().numpy())
    model.cpu()
    return np.concatenate(scores) if scores else np.zeros(0)


def calibrate_uniad_threshold(
    model: UniAD, val_features: torch.Tensor, val_labels: np.ndarray, image_size: int, params: dict[str, Any]
) -> float | None:
    """Image-score threshold from the validation split (normals, plus its anomalies when it has any)."""
    from unified_anomaly.evaluation import calibrate_threshold

    if len(val_features) == 0:
        logger.warning("no validation images: the UniAD threshold stays unset")
        return None
    scores = uniad_scores(model, val_features, image_size, int(params.get("batch_size", 32)), params.get("device", "auto"))
    labels = val_labels
    threshold = calibrate_threshold(scores, labels if labels.any() else None, **params.get("threshold", {}))
    logger.info("UniAD image threshold %s from %d validation images", threshold, len(scores))
    return None if threshold is None else float(threshold)


def build_uniad_bundle(model: UniAD, threshold: float | None, summary: dict[str, Any]) -> ModelBundle:
    """The trained model, its JSON config, the validation threshold and what was really used."""
    model = model.cpu().eval()
    weights = model.weights_info
    tags = {
        **weights.as_tags(),
        "model": "uniad",
        "setting": "unified",
        "uniad_selection": str(summary["selection"]),
        "uniad_selected_epoch": str(summary["selected_epoch"]),
    }
    info = {
        "tags": tags,
        "weights": weights.describe(),
        "train_images": summary["train_images"],
        "val_images": summary["val_images"],
        "categories": summary["categories"],
        "feature_seconds": summary["feature_seconds"],
        "train_seconds": round(float(summary["train_seconds"]), 2),
        "seconds_per_epoch": round(float(summary["seconds_per_epoch"]), 3),
        "selected_epoch": summary["selected_epoch"],
        "selection": summary["selection"],
        "device": summary["device"],
        "mixed_precision": summary["mixed_precision"],
        "training": summary["config"],
        "parameters_trainable": count_parameters(model, trainable_only=True),
        "parameters_total": count_parameters(model),
    }
    return ModelBundle("uniad", dict(summary["model_config"]), model, threshold, info)
