"""Procedural backend: changes stay in the mask (up to the blend width), every style draws, seeds repeat."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from unified_anomaly.synthesis import build_backend
from unified_anomaly.synthesis.procedural import (
    STYLES,
    ProceduralBackend,
    blend,
    choose_style,
    feather,
    is_grayscale,
)

SIZE = 96


def textured(seed: int, grayscale: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(128, 40, (SIZE, SIZE, 1 if grayscale else 3)), (2, 2, 0))
    image = np.clip(base, 0, 255).astype(np.uint8)
    return np.repeat(image, 3, axis=-1) if grayscale else image


def disc_mask(centre=(40, 50), radius=12) -> np.ndarray:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def changed_outside(source: np.ndarray, output: np.ndarray, mask: np.ndarray, width: float) -> int:
    """Pixels that differ farther than ``width`` (Euclidean) from the mask."""
    grown = ndimage.distance_transform_edt(~mask) <= width
    return int((source != output).any(-1)[~grown].sum())


@pytest.mark.parametrize("style", STYLES)
def test_each_style_changes_only_the_masked_region(style):
    backend = ProceduralBackend(blend_width=3)
    image, mask = textured(0), disc_mask()
    out, used = backend.inpaint(image[None], mask[None], ["a defect"], [11], styles=[[style]])
    assert out.dtype == np.uint8 and out.shape == (1, SIZE, SIZE, 3)
    assert changed_outside(image, out[0], mask, 3) == 0
    change = np.abs(out[0].astype(int) - image.astype(int)).mean(-1)[mask].mean()
    assert change >= 5, f"{used[0]} barely changes the region ({change:.1f})"


def test_blend_width_zero_is_pixel_exact():
    backend = ProceduralBackend(blend_width=0)
    image, mask = textured(1), disc_mask(radius=6)
    out, _ = backend.inpaint(image[None], mask[None], ["black hole"], [3])
    assert changed_outside(image, out[0], mask, 0) == 0


def test_feather_is_one_inside_and_zero_beyond_the_width():
    mask = disc_mask(radius=10)
    alpha = feather(mask, 4)
    assert (alpha[mask] == 1).all()
    far = ndimage.distance_transform_edt(~mask) > 4
    assert (alpha[far] == 0).all()
    assert ((alpha > 0) & (alpha < 1)).any()


def test_same_seed_same_image_and_different_seed_differs():
    backend = build_backend("procedural")
    image, mask = textured(2), disc_mask()
    first, _ = backend.inpaint(image[None], mask[None], ["red stain"], [5])
    second, _ = backend.inpaint(image[None], mask[None], ["red stain"], [5])
    third, _ = backend.inpaint(image[None], mask[None], ["red stain"], [6])
    np.testing.assert_array_equal(first, second)
    assert (first != third).any()


def test_grayscale_sources_stay_grayscale():
    backend = ProceduralBackend()
    image = textured(3, grayscale=True)
    masks = np.stack([disc_mask()] * 6)
    out, _ = backend.inpaint(np.stack([image] * 6), masks, ["red stain"] * 6, list(range(6)))
    assert all(is_grayscale(o) for o in out)


def test_style_keywords_pick_styles():
    rng = np.random.default_rng(0)
    assert choose_style("a small dark pore", rng, {"dark": ["pore"], "bright": ["white"]}) == "dark"
    assert choose_style("transparent glue", rng) == "gloss"
    keywords = {"colour": ["red"], "dark": ["stain"]}
    assert {choose_style("red stain", rng, keywords, grayscale=True) for _ in range(20)} == {"dark"}
    assert {choose_style("red stain", rng, keywords) for _ in range(40)} == {"colour", "dark"}
    assert choose_style("zzz", rng) in STYLES
    with pytest.raises(ValueError, match="unknown procedural styles"):
        choose_style("x", rng, allowed=["sparkle"])


def test_repaint_blends_pasted_pixels_only_near_the_mask():
    backend = ProceduralBackend(blend_width=2)
    original, pasted = textured(4), textured(5)
    mask = disc_mask(radius=8)
    out, _ = backend.repaint(original[None], pasted[None], mask[None], ["x"], [0])
    assert changed_outside(original, out[0], mask, 2) == 0
    np.testing.assert_array_equal(out[0][mask], pasted[mask])


def test_blend_of_empty_mask_is_identity():
    image = textured(6)
    np.testing.assert_array_equal(blend(image, textured(7), np.zeros((SIZE, SIZE), bool), 3), image)
