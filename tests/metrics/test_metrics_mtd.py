"""Pixel metrics on real MTD masks (antialiased, 4 empty Uneven masks) against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from unified_anomaly.metrics import compute_metrics

MTD = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mtd"


@pytest.mark.integration
def test_pixel_metrics_on_real_mtd_masks() -> None:
    if not (MTD / "split.csv").is_file():
        pytest.skip(f"the real MTD dataset is not at {MTD.resolve()}")
    import pandas as pd
    from PIL import Image
    from scipy import ndimage

    rows = pd.read_csv(MTD / "split.csv")
    test = rows[rows["split"] == "test"]
    chosen = pd.concat([test[test["label"] == "normal"].head(20), test[test["label"] == "anomaly"].iloc[::9]])
    size = 128
    masks = np.zeros((len(chosen), size, size), np.uint8)
    for i, (label, mask) in enumerate(zip(chosen["label"], chosen["mask"], strict=True)):
        if label == "anomaly":
            image = Image.open(MTD / mask).convert("L").resize((size, size), Image.BILINEAR)
            masks[i] = np.asarray(image) >= 128
    rng = np.random.default_rng(0)
    maps = np.stack([ndimage.gaussian_filter(m.astype(np.float32), 3) for m in masks])
    maps += rng.normal(0, 0.2, maps.shape).astype(np.float32)
    maps = np.round(maps, 2)  # ties
    labels = (chosen["label"] == "anomaly").to_numpy()
    scores = maps.reshape(len(maps), -1).max(axis=1)
    metrics = compute_metrics(scores, labels, maps, masks)
    assert metrics["pixel_AUROC"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert metrics["pixel_AP"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert metrics["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert 0.0 <= metrics["pixel_AUPRO"] <= 1.0
