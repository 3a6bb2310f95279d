"""A tiny in-memory ImageStore and trivial models for evaluation tests (shared with tests/pipelines/evaluate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from unified_anomaly.data.manifest import MANIFEST_COLUMNS
from unified_anomaly.data.store import ImageStore
from unified_anomaly.models.bundle import ModelBundle
from unified_anomaly.models.contract import Predictions
from unified_anomaly.models.registry import register_model

CLASS_NAMES = {"bottle": ["good", "crack", "hole"], "carpet": ["good", "cut", "combined"]}


def toy_store(size: int = 32, seed: int = 0, offset: dict[str, float] | None = None) -> ImageStore:
    """Two categories; per category 2 train + 3 val normals, 4 normal + 4 anomalous test images.

    Anomalies are bright squares (mask value = class id); ``offset`` brightens a whole category, so the
    categories live on different score scales (what class-aware normalisation corrects).
    """
    rng = np.random.default_rng(seed)
    offset = offset or {"bottle": 0.0, "carpet": 150.0}
    rows, images, masks = [], [], []
    for category, names in CLASS_NAMES.items():
        plan = [("train", 0)] * 2 + [("val", 0)] * 3 + [("test", 0)] * 4 + [("test", 1), ("test", 1), ("test", 2), ("test", 2)]
        ranks: dict[tuple[str, int], int] = {}
        for split, class_id in plan:
            image = rng.integers(20, 80, (size, size, 3)).astype(np.float64) + offset[category]
            mask = np.zeros((size, size), np.uint8)
            if class_id:
                y, x = rng.integers(2, size - 10, 2)
                mask[y : y + 8, x : x + 8] = class_id
                image[mask > 0] += 120
                if class_id == 2 and category == "bottle":
                    image[mask > 0, 0] += 40  # red-ish: the toy classifier's second class
            rank = ranks.setdefault((split, class_id), 0)
            ranks[(split, class_id)] += 1
            rows.append({"dataset": "toy", "category": category, "split": split, "rank": rank,
                         "label": "anomaly" if class_id else "normal", "defect_type": names[class_id],
                         "class_id": class_id, "image_path": f"/toy/{category}/{len(rows)}.png", "mask_path": "",
                         "width": size, "height": size})
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            masks.append(mask)
    manifest = pd.DataFrame(rows)[MANIFEST_COLUMNS]
    return ImageStore(manifest=manifest, images=np.stack(images), masks=np.stack(masks),
                      class_names=CLASS_NAMES, size=size, dataset="toy")


class BrightnessModel(nn.Module):
    """Anomaly map = grey level; image score = max of the map; optionally 2 classes (red vs green dominance)."""

    def __init__(self, classes: int = 0) -> None:
        super().__init__()
        self.classes = classes
        self.scale = nn.Parameter(torch.ones(1))

    def predict(self, images: torch.Tensor) -> Predictions:
        anomaly_map = images.mean(dim=1) * self.scale
        score = anomaly_map.flatten(1).amax(dim=1)
        logits = None
        if self.classes:
            logits = torch.stack([images[:, 1], images[:, 0]], dim=1)[:, : self.classes]
        return Predictions(anomaly_map=anomaly_map, image_score=score, class_logits=logits)


@register_model("toy_brightness")
def build_toy_brightness(classes: int = 0) -> BrightnessModel:
    return BrightnessModel(classes)


def toy_bundle(classes: int = 0, threshold: float | None = None) -> ModelBundle:
    info = {"weights": "none (toy)", "backbone": "identity", "setting": "unified",
            "tags": {"weights.source": "test"}}
    return ModelBundle("toy_brightness", {"classes": classes}, BrightnessModel(classes), threshold, info)
