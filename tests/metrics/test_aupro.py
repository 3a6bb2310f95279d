"""AUPRO against a slow, obvious implementation and a hand-computed toy case."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import measure

from unified_anomaly.metrics import aupro, aupro_thresholds, pro_curve


def slow_pro_curve(maps: np.ndarray, masks: np.ndarray, num_thresholds: int) -> tuple[np.ndarray, np.ndarray]:
    """One full pass per threshold, regions from skimage (8-connectivity)."""
    thresholds = aupro_thresholds(maps.min(), maps.max(), num_thresholds, maps.dtype)
    regions = [measure.label(m > 0, connectivity=2) for m in masks]
    normal = masks == 0
    fprs, pros = [], []
    for t in thresholds:
        predicted = maps > t
        overlaps = []
        for image_pred, labelled in zip(predicted, regions, strict=True):
            for region_id in range(1, labelled.max() + 1):
                region = labelled == region_id
                overlaps.append(image_pred[region].mean())
        fprs.append((predicted & normal).sum() / normal.sum())
        pros.append(np.mean(overlaps))
    return np.array(fprs), np.array(pros)


def slow_area(fprs: np.ndarray, pros: np.ndarray, limit: float) -> float:
    """Walks the segments of the anchored curve and clips the one crossing ``limit``."""
    points = sorted([(0.0, 0.0), (1.0, 1.0), *zip(fprs.tolist(), pros.tolist(), strict=True)])
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def test_hand_computed_toy_case() -> None:
    # one region {0, 1}; thresholds 0, 0.5, 1 (strict >):
    #   t=0   -> region pixels 1.0, 0.4 predicted: PRO 1,   normal 0.6 predicted: FPR 1/2
    #   t=0.5 -> region pixel 1.0 predicted:        PRO 1/2, FPR 1/2
    #   t=1   -> nothing:                           PRO 0,   FPR 0
    maps = np.array([[[1.0, 0.4, 0.6, 0.0]]], dtype=np.float32)
    masks = np.array([[[1, 1, 0, 0]]], dtype=np.uint8)
    _, fpr, pro = pro_curve(maps, masks, num_thresholds=3)
    np.testing.assert_allclose(fpr, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(pro, [1.0, 0.5, 0.0])
    # limit 0.3: triangle to (0.3, 0.3) -> 0.045 / 0.3
    assert aupro(maps, masks, fpr_limit=0.3, num_thresholds=3) == pytest.approx(0.15)
    # limit 0.6: 0.125 (to (0.5, 0.5)) + vertical jump + 0.1 * 1.0 -> 0.225 / 0.6
    assert aupro(maps, masks, fpr_limit=0.6, num_thresholds=3) == pytest.approx(0.375)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("limit", [0.3, 1.0])
def test_matches_slow_implementation(seed: int, limit: float) -> None:
    rng = np.random.default_rng(seed)
    masks = np.zeros((5, 24, 24), dtype=np.uint8)
    masks[0, 3:8, 3:8] = 1
    masks[0, 8, 8] = 2  # touches diagonally: same 8-connected region, class-valued mask
    masks[1, 10:20, 2:5] = 3
    masks[1, 0:2, 20:24] = 1
    masks[3, 5:15, 5:15] = 1  # image 2 and 4 are normal
    maps = rng.normal(size=masks.shape).astype(np.float32) + 1.5 * (masks > 0)
    if seed == 2:
        maps = np.round(maps, 1)  # many ties, also on the thresholds themselves
    fprs, pros = slow_pro_curve(maps, masks, 40)
    _, fpr, pro = pro_curve(maps, masks, num_thresholds=40)
    np.testing.assert_allclose(fpr, fprs, atol=1e-12)
    np.testing.assert_allclose(pro, pros, atol=1e-12)
    assert aupro(maps, masks, fpr_limit=limit, num_thresholds=40) == pytest.approx(slow_area(fprs, pros, limit))


def test_bounds_perfect_and_worst() -> None:
    masks = np.zeros((2, 16, 16), dtype=np.uint8)
    masks[0, 4:8, 4:8] = 1
    perfect = masks.astype(np.float32)
    assert aupro(perfect, masks) == pytest.approx(1.0)
    assert aupro(1 - perfect, masks) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        value = aupro(rng.random(masks.shape).astype(np.float32), masks)
        assert 0.0 <= value <= 1.0


def test_empty_masks_and_no_normals_give_nan() -> None:
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    assert np.isnan(aupro(maps, np.zeros((2, 8, 8), np.uint8)))
    assert np.isnan(aupro(maps, np.ones((2, 8, 8), np.uint8)))


def test_invalid_limit() -> None:
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, 0, 0] = 1
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(np.random.default_rng(0).random((1, 4, 4)), masks, fpr_limit=0.0)


def test_bucketed_ranking_gives_the_same_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    from unified_anomaly.metrics import ranking as ranking_module

    rng = np.random.default_rng(5)
    masks = np.zeros((4, 20, 20), dtype=np.uint8)
    masks[0, 2:9, 3:7] = 1
    masks[2, 10:18, 10:18] = 2
    maps = np.round(rng.normal(size=masks.shape) + 1.2 * (masks > 0), 1).astype(np.float32)
    fprs, pros = slow_pro_curve(maps, masks, 30)
    monkeypatch.setattr(ranking_module, "_BUCKET_MIN_SIZE", 10)
    monkeypatch.setattr(ranking_module, "_BUCKET_BITS", 5)
    _, fpr, pro = pro_curve(maps, masks, num_thresholds=30)
    np.testing.assert_allclose(fpr, fprs, atol=1e-12)
    np.testing.assert_allclose(pro, pros, atol=1e-12)
