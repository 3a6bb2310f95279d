"""Every figure renders to a non-empty PNG of the expected size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from unified_anomaly.metrics import ScoreRanking
from unified_anomaly.visualization import (
    figure_size_pixels,
    plot_confusion_matrix,
    plot_curves,
    plot_overlay_grid,
    plot_score_histograms,
)


def render(fig: Figure) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def assert_readable(fig: Figure, width: int, height: int) -> None:
    pixels = render(fig)
    assert pixels.shape[:2] == (height, width) == figure_size_pixels(fig)[::-1]
    assert pixels.std() > 5, "figure is blank"
    non_white = np.any(pixels < 250, axis=2).mean()
    assert non_white > 0.02, "figure has almost nothing drawn"


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(20), np.ones(20)].astype(np.uint8)
    scores = rng.normal(size=40) + labels
    categories = np.array(["bottle", "carpet"] * 20)
    return scores, labels, categories


def test_roc_and_pr_curves(data) -> None:
    scores, labels, _ = data
    ranking = ScoreRanking.from_arrays(scores, labels)
    roc = {"image": {"bottle": (*ranking.roc_curve(), ranking.auroc()), "pooled": (*ranking.roc_curve(), 0.7)},
           "pixel": {"pooled": (*ranking.roc_curve(), ranking.auroc())}}
    assert_readable(plot_curves(roc, "roc", dpi=80), 720, 360)
    pr = {"image": {"bottle": (*ranking.pr_curve(), ranking.average_precision())}}
    assert_readable(plot_curves(pr, "pr", dpi=80), 360, 360)
    with pytest.raises(ValueError):
        plot_curves(pr, "det")


def test_score_histograms(data) -> None:
    scores, labels, categories = data
    fig = plot_score_histograms(scores, labels, categories, threshold=0.5, dpi=50)
    assert_readable(fig, 400, 150)  # 2 categories side by side, 4x3 inches each


def test_confusion_matrix() -> None:
    fig = plot_confusion_matrix(np.array([[5, 1, 0], [0, 3, 2], [1, 0, 4]]), ["good", "crack", "hole"], dpi=60)
    assert_readable(fig, 258, 258)  # 0.6 in per class + 2.5 in margins = 4.3 in at 60 dpi


def test_overlay_grid() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((3, 32, 32), np.uint8)
    masks[1, 8:16, 8:16] = 1
    maps = rng.random((3, 32, 32)).astype(np.float32)
    fig = plot_overlay_grid(images, masks, maps, maps > 0.8, ["a", "b", "c"], dpi=40)
    assert_readable(fig, 400, 312)
    assert_readable(plot_overlay_grid(images[:0], masks[:0], maps[:0], maps[:0], [], dpi=40), 160, 40)
