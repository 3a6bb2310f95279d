"""The procedural backend: defects drawn from the image itself, no generative model.

This is the offline default, used because no diffusion weights can be had here. It is NOT UniADC's
inpainting and is always named ``procedural (no diffusion)`` in logs and MLflow. Inside a prior mask it draws
one of a few defect styles, chosen from keywords of the defect type and its prompt:

- ``dark`` / ``bright``: intensity pulled towards black or white, deeper towards the region's centre;
- ``texture``: the image's own texture, moved, flipped and with its contrast changed (NSA/CutPaste-like);
- ``noise``: low-frequency Perlin modulation of intensity plus grain (uneven, rough surfaces);
- ``colour``: a tint (stains), turned into an intensity change on grayscale images;
- ``gloss``: a blurred, slightly brightened film with highlights (glue, liquid).

The result is blended in with a feathered mask: outside the mask dilated by ``blend_width`` pixels the image
is unchanged, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from unified_anomaly.synthesis.masks import perlin_noise

STYLES = ("dark", "bright", "texture", "noise", "colour", "gloss")

DEFAULT_STYLE_KEYWORDS: dict[str, list[str]] = {
    "dark": [
        "black",
        "dark",
        "hole",
        "pore",
        "blowhole",
        "void",
        "crack",
        "missing",
        "broken",
        "break",
        "chipped",
        "cut",
        "puncture",
        "poke",
        "ink",
        "line",
        "thread",
        "string",
    ],
    "bright": ["white", "bright", "scratch", "fray", "worn", "tear", "flecked", "spot"],
    "texture": [
        "damage",
        "fold",
        "fray",
        "contamination",
        "foreign",
        "metal",
        "misplaced",
        "swap",
        "squeez",
        "bent",
        "bending",
        "deformed",
        "broken",
        "protrusion",
    ],
    "noise": ["uneven", "rough", "grinding", "wear", "flecked", "crease"],
    "colour": ["red", "yellow", "brown", "stain", "color", "colour", "oil", "mold", "print", "font"],
    "gloss": ["glue", "transparent", "liquid", "glossy"],
}

TINTS: dict[str, tuple[int, int, int]] = {
    "red": (190, 40, 35),
    "yellow": (215, 190, 60),
    "brown": (120, 80, 45),
    "black": (25, 25, 25),
    "white": (235, 235, 235),
    "pink": (220, 130, 160),
    "green": (70, 140, 60),
    "blue": (50, 80, 180),
}


def is_grayscale(image: np.ndarray, tolerance: int = 2) -> bool:
    """True when the three channels agree (MTD's tiles are grayscale stored as RGB)."""
    channels = image.astype(np.int16)
    return bool(
        np.abs(channels[..., 0] - channels[..., 1]).max() <= tolerance
        and np.abs(channels[..., 1] - channels[..., 2]).max() <= tolerance
    )


def choose_style(
    text: str,
    rng: np.random.Generator,
    keywords: dict[str, Sequence[str]] | None = None,
    allowed: Sequence[str] | None = None,
    grayscale: bool = False,
) -> str:
    """A style whose keywords occur in ``text`` (type + prompt), else any; ``allowed`` restricts the pool."""
    keywords = DEFAULT_STYLE_KEYWORDS if keywords is None else keywords
    text = text.lower().replace("_", " ")
    pool = list(allowed) if allowed else [s for s, words in keywords.items() if any(w in text for w in words)]
    if not pool:
        pool = list(STYLES)
    if grayscale and len(pool) > 1 and "colour" in pool:
        pool.remove("colour")
    unknown = set(pool) - set(STYLES)
    if unknown:
        raise ValueError(f"unknown procedural styles {sorted(unknown)}; known: {STYLES}")
    return pool[int(rng.integers(len(pool)))]


def feather(mask: np.ndarray, blend_width: float) -> np.ndarray:
    """Alpha: 1 inside the mask, falling to 0 within ``blend_width`` pixels outside, exactly 0 beyond."""
    inside = mask.astype(np.float32)
    if blend_width <= 0:
        return inside
    alpha = np.clip(2.0 * ndimage.gaussian_filter(inside, blend_width / 2.0), 0.0, 1.0)
    reach = ndimage.binary_dilation(mask, _disc(int(math.ceil(blend_width))))
    return np.maximum(alpha * reach, inside)


def _disc(radius: int) -> np.ndarray:
    grid = np.arange(-radius, radius + 1)
    return (grid[:, None] ** 2 + grid[None, :] ** 2) <= radius * radius


def crop_box(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The mask's bounding box grown by ``margin`` pixels, clipped to the image."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    height, width = mask.shape
    return (
        slice(max(0, rows[0] - margin), min(height, rows[-1] + margin + 1)),
        slice(max(0, cols[0] - margin), min(width, cols[-1] + margin + 1)),
    )


def blend(
    base: np.ndarray, overlay: np.ndarray, mask: np.ndarray, blend_width: float, opacity: float = 1.0
) -> np.ndarray:
    """``base`` with ``overlay`` laid in through a feathered ``mask`` (uint8 H×W×3 in and out)."""
    if not mask.any():
        return base.copy()
    margin = int(math.ceil(blend_width)) + 2
    box = crop_box(mask, margin)
    alpha = feather(mask[box], blend_width)[..., None] * opacity
    out = base.copy()
    region = base[box].astype(np.float32)
    out[box] = np.clip(np.rint(region + alpha * (overlay[box].astype(np.float32) - region)), 0, 255).astype(
        np.uint8
    )
    return out


def _profile(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Depth profile in [0, 1]: 0 at the region's rim, rising towards its inside."""
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    scale = rng.uniform(1.0, 4.0)
    return (1.0 - np.exp(-distance / scale)).astype(np.float32)


def _field(
    shape: tuple[int, int], rng: np.random.Generator, cells: tuple[int, int] = (2, 6), stretch: int = 1
) -> np.ndarray:
    """Smooth noise in about [-1, 1] over a (possibly non-square) crop; ``stretch`` > 1 gives streaks."""
    side = max(shape)
    base = int(rng.integers(cells[0], cells[1] + 1))
    resolution = (base, base * stretch)
    return perlin_noise(side, resolution, rng.uniform(0, math.pi), rng)[: shape[0], : shape[1]]


def moved_texture(image: np.ndarray, box: tuple[slice, slice], rng: np.random.Generator) -> np.ndarray:
    """The crop ``box`` of the whole image shifted by a random offset and flipped: texture from elsewhere."""
    height, width = image.shape[:2]
    shift = (
        int(rng.integers(height // 8, height - height // 8 + 1)),
        int(rng.integers(width // 8, width - width // 8 + 1)),
    )
    moved = np.roll(image, shift, axis=(0, 1))
    if rng.random() < 0.5:
        moved = moved[::-1]
    if rng.random() < 0.5:
        moved = moved[:, ::-1]
    return moved[box]


def render_style(
    image: np.ndarray,
    mask: np.ndarray,
    style: str,
    rng: np.random.Generator,
    text: str = "",
    texture: np.ndarray | None = None,
) -> np.ndarray:
    """The defect's full-opacity appearance on the crop (float32 H×W×3, 0..255); only the masked part is used.

    ``texture``: a same-size crop from elsewhere in the image, for the ``texture`` style (default: flipped).
    """
    pixels = image.astype(np.float32)
    grain = rng.normal(0.0, rng.uniform(1.0, 5.0), mask.shape).astype(np.float32)[..., None]
    if style in {"dark", "bright"}:
        depth = rng.uniform(0.35, 0.85) * (0.75 + 0.25 * _field(mask.shape, rng))
        depth = (depth * (0.5 + 0.5 * _profile(mask, rng)))[..., None]
        target = 0.0 if style == "dark" else 255.0
        return pixels + depth * (target - pixels) + grain
    if style == "texture":
        source = pixels[::-1, ::-1] if texture is None else texture.astype(np.float32)
        mean = source.mean(axis=(0, 1), keepdims=True)
        return mean + (source - mean) * rng.uniform(0.4, 2.0) + rng.uniform(-45, 45) + grain
    if style == "noise":
        amplitude = rng.uniform(0.15, 0.45)
        mix = rng.uniform(0.0, 0.7)  # share of streaks (grinding marks) in the modulation
        field = (1 - mix) * _field(mask.shape, rng, (3, 10)) + mix * _field(
            mask.shape, rng, (2, 4), stretch=8
        )
        return pixels * (1.0 + amplitude * field[..., None]) + 2 * grain
    if style == "colour":
        names = [name for name in TINTS if name in text.lower()]
        tint = np.array(TINTS[names[0]] if names else rng.integers(20, 236, 3), dtype=np.float32)
        shade = pixels.mean(-1, keepdims=True) / max(float(pixels.mean()), 1.0)
        strength = rng.uniform(0.45, 0.85) * (0.8 + 0.2 * _field(mask.shape, rng))[..., None]
        return pixels * (1 - strength) + tint * shade * strength + grain
    if style == "gloss":
        blurred = ndimage.gaussian_filter(pixels, (rng.uniform(1.5, 4.0),) * 2 + (0,))
        highlight = np.clip(_field(mask.shape, rng, (4, 12)) - 0.3, 0, None)[..., None] * rng.uniform(60, 140)
        return blurred * rng.uniform(1.0, 1.15) + highlight
    raise ValueError(f"unknown procedural style {style!r}; known: {STYLES}")


class ProceduralBackend:
    """Zero-shot defects from the image's own intensities and textures; few-shot pastes blended in."""

    kind = "procedural"

    def __init__(
        self,
        blend_width: float = 3.0,
        opacity: tuple[float, float] = (0.75, 1.0),
        style_keywords: dict[str, Sequence[str]] | None = None,
        min_change: float = 12.0,
    ) -> None:
        self.blend_width = float(blend_width)
        self.opacity = (float(opacity[0]), float(opacity[1]))
        self.style_keywords = dict(style_keywords) if style_keywords else dict(DEFAULT_STYLE_KEYWORDS)
        self.min_change = float(min_change)

    @property
    def label(self) -> str:
        return "procedural (no diffusion)"

    @property
    def tags(self) -> dict[str, str]:
        return {"synthesis_backend": self.label, "synthesis_weights": "none (procedural)"}

    def inpaint(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        prompts: Sequence[str],
        seeds: Sequence[int],
        strengths: Sequence[float] | None = None,
        negative_prompts: Sequence[str | None] | None = None,
        styles: Sequence[Sequence[str] | None] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Draws a defect inside each mask. Returns (images N×S×S×3 uint8, the style used per image)."""
        outputs, used = np.empty_like(images), []
        for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
            rng = np.random.default_rng(int(seeds[index]))
            allowed = styles[index] if styles is not None else None
            out, style = self._draw(image, mask.astype(bool), prompts[index], rng, allowed)
            outputs[index] = out
            used.append(style)
        return outputs, used

    def _draw(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        text: str,
        rng: np.random.Generator,
        allowed: Sequence[str] | None,
    ) -> tuple[np.ndarray, str]:
        if not mask.any():
            return image.copy(), "none"
        grayscale = is_grayscale(image)
        style = choose_style(text, rng, self.style_keywords, allowed, grayscale)
        box = crop_box(mask, int(math.ceil(self.blend_width)) + 2)
        crop, crop_mask = image[box], mask[box]
        texture = moved_texture(image, box, rng) if style == "texture" else None
        defect = render_style(crop, crop_mask, style, rng, text, texture)
        change = np.abs(defect - crop.astype(np.float32)).mean(-1)[crop_mask].mean()
        if change < self.min_change:  # too faint to be a defect: darken or brighten instead
            style = "dark" if crop[crop_mask].mean() > 110 else "bright"
            defect = render_style(crop, crop_mask, style, rng, text)
        if grayscale:
            defect = np.repeat(defect.mean(-1, keepdims=True), 3, axis=-1)
        overlay = image.astype(np.float32)
        overlay[box] = defect
        opacity = rng.uniform(*self.opacity)
        return blend(image, np.clip(overlay, 0, 255), mask, self.blend_width, opacity), style

    def repaint(
        self,
        originals: np.ndarray,
        pasted: np.ndarray,
        masks: np.ndarray,
        prompts: Sequence[str],
        seeds: Sequence[int],
        strengths: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Few-shot: the pasted pixels blended into the original through a feathered mask."""
        outputs = np.empty_like(originals)
        for index, (original, paste, mask) in enumerate(zip(originals, pasted, masks, strict=True)):
            outputs[index] = blend(original, paste, mask.astype(bool), self.blend_width)
        return outputs, ["blend"] * len(originals)
