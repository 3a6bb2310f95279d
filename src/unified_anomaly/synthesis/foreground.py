"""A cheap, offline foreground estimate, and the geometry the mask priors need from it.

UniADC segments the object with BiRefNet (sigmoid > 0.5) and falls back to the whole image when the
foreground covers less than 5 % of it. No segmentation weights can be had offline, so the default here is
a border-colour model: the image border is assumed to be background, each pixel's colour distance to the
border's median colour is thresholded with Otsu, and the result is cleaned and hole-filled. Images whose
border is not a uniform background (textures, tight crops such as MTD tiles) fail the separation check and
count as all-foreground, which is what UniADC's segmenter yields for them too. A real segmenter can be
plugged in through :func:`estimate_foreground`'s ``segmenter`` argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Segmenter = Callable[[np.ndarray], np.ndarray]  # H×W×3 uint8 -> H×W foreground probability in [0, 1]


def _otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of a 1-D sample (histogram based)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def border_colour_foreground(
    image: np.ndarray, border: int = 4, min_contrast: float = 25.0, max_border_foreground: float = 0.2
) -> np.ndarray | None:
    """Foreground as "far from the border's colour", or None when the border is no uniform background."""
    pixels = image.astype(np.float32)
    ring = np.concatenate(
        [
            pixels[:border].reshape(-1, 3),
            pixels[-border:].reshape(-1, 3),
            pixels[:, :border].reshape(-1, 3),
            pixels[:, -border:].reshape(-1, 3),
        ]
    )
    background = np.median(ring, axis=0)
    distance = np.sqrt(((pixels - background) ** 2).sum(axis=-1))
    # A textured or object-filled border shows as a large spread of distances on the border itself.
    ring_distance = np.sqrt(((ring - background) ** 2).sum(axis=-1))
    threshold = max(_otsu_threshold(distance.ravel()), float(np.percentile(ring_distance, 95)))
    foreground = distance > threshold
    if foreground.sum() == 0 or foreground.all():
        return None
    contrast = float(distance[foreground].mean() - distance[~foreground].mean())
    border_band = np.zeros_like(foreground)
    border_band[:border], border_band[-border:], border_band[:, :border], border_band[:, -border:] = (
        1,
        1,
        1,
        1,
    )
    if contrast < min_contrast or foreground[border_band].mean() > max_border_foreground:
        return None
    structure = np.ones((3, 3), dtype=bool)
    foreground = ndimage.binary_opening(foreground, structure, iterations=2)
    foreground = ndimage.binary_fill_holes(ndimage.binary_closing(foreground, structure, iterations=2))
    return foreground


def estimate_foreground(
    image: np.ndarray,
    method: str = "border_colour",
    min_fraction: float = 0.05,
    threshold: float = 0.5,
    segmenter: Segmenter | None = None,
) -> np.ndarray:
    """Boolean H×W foreground of an RGB uint8 image; the whole image when it covers < ``min_fraction``.

    ``method``: ``border_colour`` (offline default), ``none`` (whole image) or ``segmenter`` (calls
    ``segmenter(image)``, thresholded at ``threshold`` like UniADC's BiRefNet sigmoid).
    """
    height, width = image.shape[:2]
    whole = np.ones((height, width), dtype=bool)
    if method == "none":
        return whole
    if method == "segmenter":
        if segmenter is None:
            raise ValueError("foreground method 'segmenter' needs a segmenter callable")
        foreground = np.asarray(segmenter(image)) > threshold
    elif method == "border_colour":
        foreground = border_colour_foreground(image)
    else:
        raise ValueError(f"unknown foreground method {method!r}; use border_colour, segmenter or none")
    if foreground is None or foreground.mean() < min_fraction:
        return whole
    return foreground.astype(bool)


@dataclass
class ForegroundGeometry:
    """A foreground with what mask placement needs: its pixels, its boundary and a band along it."""

    mask: np.ndarray  # bool H×W
    points: np.ndarray  # K×2 (row, col) of every foreground pixel
    boundary: np.ndarray  # bool H×W: foreground pixels on its outline (the image border counts)
    boundary_points: np.ndarray  # M×2
    distance_to_boundary: np.ndarray  # float H×W, 0 outside the foreground

    @property
    def area(self) -> int:
        return int(self.points.shape[0])

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> ForegroundGeometry:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError("the foreground is empty; estimate_foreground never returns an empty one")
        padded = np.pad(mask, 1, constant_values=False)  # outside the image counts as background
        inner = ndimage.binary_erosion(padded, np.ones((3, 3), dtype=bool))[1:-1, 1:-1]
        boundary = mask & ~inner
        distance = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
        return cls(mask, np.argwhere(mask), boundary, np.argwhere(boundary), distance.astype(np.float32))
