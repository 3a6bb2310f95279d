"""GAP-Lib mask priors: filter rule, foreground containment, size limits, region caps, placement, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from unified_anomaly.synthesis.foreground import ForegroundGeometry, estimate_foreground
from unified_anomaly.synthesis.masks import (
    GAP_LIBRARY,
    MaskPrior,
    MaskSettings,
    area_limits,
    close_mask,
    count_regions,
    generate_mask,
    region_cap,
    select_generators,
)

SIZE = 128


def ellipse_foreground(size: int = SIZE) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return ((rows - size / 2) ** 2 / (0.4 * size) ** 2 + (cols - size / 2) ** 2 / (0.28 * size) ** 2) < 1


def notched_foreground(size: int = SIZE) -> np.ndarray:
    """A non-convex foreground (an ellipse with narrow slots cut in), where closing could cross the gaps."""
    mask = ellipse_foreground(size)
    mask[:, size // 2] = False
    mask[size // 3, :] = False
    mask[2 * size // 3, :] = False
    return mask


@pytest.fixture(scope="module")
def geometry() -> ForegroundGeometry:
    return ForegroundGeometry.from_mask(notched_foreground())


def test_filter_rule_matches_uniadc():
    assert "FGI" not in select_generators(None)
    assert len(select_generators(None)) == len(GAP_LIBRARY) - 1
    assert select_generators(["Small"]) == sorted(n for n in GAP_LIBRARY if n.endswith("_Small"))
    assert select_generators("NearCircularEllipse") == [
        "NearCircularEllipse_Large",
        "NearCircularEllipse_Medium",
        "NearCircularEllipse_Small",
    ]
    assert select_generators(["FGI"]) == ["FGI"]
    assert set(select_generators(["Line_Long", "Brush_Tiny"])) == {"Line_Long", "Brush_Tiny"}
    with pytest.raises(ValueError, match="matches no generator"):
        select_generators(["Hexagon"])


def test_library_has_every_generator_of_the_reference():
    sizes = {
        "FGI": [""],
        "Rectangle": ["Large", "Medium", "Small"],
        "Line": ["Large", "Medium", "Small", "Long"],
        "Polygon": ["Large", "Medium", "Small"],
        "Perlin": ["Large", "Medium", "Small"],
        "Brush": ["Large", "Medium", "Small", "Tiny"],
    }
    for shape in (
        "NearCircularEllipse",
        "EccentricEllipse",
        "NearCircularHollowEllipse",
        "EccentricHollowEllipse",
    ):
        sizes[shape] = ["Large", "Medium", "Small"]
    expected = {shape if not s else f"{shape}_{s}" for shape, variants in sizes.items() for s in variants}
    assert set(GAP_LIBRARY) == expected


@pytest.mark.parametrize("placement", ["anywhere", "edge"])
def test_every_generator_stays_inside_foreground_and_limits(geometry, placement):
    settings = MaskSettings()
    rng = np.random.default_rng(0)
    for name, spec in GAP_LIBRARY.items():
        low, high = area_limits(spec, SIZE, settings)
        for _ in range(3):
            mask = generate_mask(name, geometry, rng, placement, settings)
            assert mask.dtype == bool and mask.shape == (SIZE, SIZE)
            assert not (mask & ~geometry.mask).any(), f"{name} leaves the foreground"
            assert low <= mask.sum() <= high, f"{name}: area {mask.sum()} outside [{low}, {high}]"
            assert count_regions(mask) <= region_cap(spec, settings), f"{name}: too many regions"


def test_size_limits_and_region_cap_follow_settings(geometry):
    settings = MaskSettings(max_regions=1, max_area_fraction=0.02)
    rng = np.random.default_rng(1)
    for name in ("Perlin_Small", "Brush_Medium", "Rectangle_Small", "Perlin_Large"):
        for _ in range(3):
            mask = generate_mask(name, geometry, rng, "anywhere", settings)
            assert count_regions(mask) <= 1
            assert mask.sum() <= 0.02 * SIZE * SIZE


def test_edge_placement_touches_the_outline(geometry):
    rng = np.random.default_rng(2)
    for name in ("Polygon_Medium", "Perlin_Medium", "NearCircularEllipse_Small"):
        for _ in range(4):
            mask = generate_mask(name, geometry, rng, "edge")
            assert (mask & geometry.boundary).any(), name


def test_anywhere_placement_is_not_only_on_the_edge():
    geometry = ForegroundGeometry.from_mask(ellipse_foreground())
    rng = np.random.default_rng(3)
    touching = [
        (generate_mask("NearCircularEllipse_Small", geometry, rng) & geometry.boundary).any()
        for _ in range(20)
    ]
    assert sum(touching) < 10


def test_same_seed_same_mask(geometry):
    for name in ("Perlin_Medium", "Brush_Small", "Polygon_Large", "EccentricHollowEllipse_Medium"):
        first = generate_mask(name, geometry, np.random.default_rng(7))
        second = generate_mask(name, geometry, np.random.default_rng(7))
        np.testing.assert_array_equal(first, second)


def test_prior_without_foreground_uses_the_whole_image(geometry):
    prior = MaskPrior(generators=["Rectangle_Large"], use_foreground=False)
    rng = np.random.default_rng(4)
    outside = [(prior.sample(geometry, rng)[0] & ~geometry.mask).any() for _ in range(20)]
    assert any(outside)


def test_closing_does_not_erode_at_the_image_border():
    mask = np.zeros((32, 32), dtype=bool)
    mask[:, :5] = True
    np.testing.assert_array_equal(close_mask(mask, 3), mask)
    gap = mask.copy()
    gap[10, :5] = False
    gap[10, 2] = False
    assert close_mask(gap, 3)[10, 2]


def test_foreground_estimate_finds_an_object_and_falls_back_on_textures():
    rng = np.random.default_rng(5)
    image = np.full((SIZE, SIZE, 3), 30, np.uint8) + rng.integers(0, 6, (SIZE, SIZE, 3)).astype(np.uint8)
    object_mask = ellipse_foreground()
    image[object_mask] = 200
    estimate = estimate_foreground(image)
    agreement = (estimate == object_mask).mean()
    assert agreement > 0.97
    texture = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    assert estimate_foreground(texture).all()
    tiny = np.full((SIZE, SIZE, 3), 30, np.uint8)
    tiny[60:64, 60:64] = 220  # under 5 % of the image -> whole image
    assert estimate_foreground(tiny).all()
    assert estimate_foreground(image, method="none").all()
