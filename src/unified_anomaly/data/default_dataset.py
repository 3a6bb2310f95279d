"""The embedded default dataset, generated reproducibly in MVTec layout from scikit-image's texture photos.

Two categories (``brick``, ``gravel``: real photographs shipped in scikit-image's wheel, public domain /
BSD-licensed) cut into normal tiles, and three defect types drawn into test tiles with exact masks:
``scratch`` (thin line), ``stain`` (dark soft blotch) and ``hole`` (dark disc with a bright rim).
Defect pixels are painted, so the masks are exact. A few MB; seeded, so every machine gets the same files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from unified_anomaly.atomic import atomic_write

logger = logging.getLogger(__name__)

CATEGORIES = ("brick", "gravel")
DEFECTS = ("scratch", "stain", "hole")
MARKER = "default_dataset.json"


def ensure_default_dataset(
    root: str | Path,
    seed: int = 0,
    size: int = 256,
    train_normals: int = 24,
    test_normals: int = 8,
    defects_per_type: int = 5,
) -> Path:
    """Generates the dataset into ``root`` unless it is already there (atomically: a complete folder or none)."""
    root = Path(root)
    spec = {"seed": seed, "size": size, "train_normals": train_normals, "test_normals": test_normals,
            "defects_per_type": defects_per_type, "version": 1}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    if root.exists():
        raise FileExistsError(f"{root} exists but is not the default dataset with {spec}; move it away or point "
                              "ingest.source.path elsewhere")
    logger.info("Generating the embedded default dataset into %s (seed %d)", root, seed)

    def write(tmp: Path) -> None:
        for index, category in enumerate(CATEGORIES):
            _write_category(tmp / category, _texture(category), np.random.default_rng([seed, index]), size,
                            train_normals, test_normals, defects_per_type)
        (tmp / MARKER).write_text(json.dumps(spec))
        (tmp / "README.md").write_text(__doc__ or "")

    atomic_write(root, write)
    return root


def _texture(category: str) -> np.ndarray:
    from skimage import data

    return np.asarray({"brick": data.brick, "gravel": data.gravel}[category](), dtype=np.uint8)


def _tile(texture: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    h, w = texture.shape
    crop = int(size * rng.uniform(1.0, 1.5))
    y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    tile = Image.fromarray(texture[y : y + crop, x : x + crop]).resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(tile, dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out * rng.uniform(0.9, 1.1) + rng.uniform(-8, 8)
    return np.clip(out, 0, 255).astype(np.uint8)


def _defect(tile: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = tile.shape[0]
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = (int(v) for v in rng.integers(size // 5, 4 * size // 5, size=2))
    image = tile.astype(np.float32)
    if kind == "scratch":
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.3, 0.6) * size
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=int(rng.integers(3, 6)))
        region = np.asarray(mask) > 0
        image[region] = 235 if image.mean() < 128 else 25
    elif kind == "stain":
        rx, ry = (float(v) for v in rng.uniform(0.07, 0.14, size=2) * size)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        region = np.asarray(mask) > 0
        soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(rx / 3)), dtype=np.float32) / 255.0
        image = image * (1 - 0.6 * soft) + 20 * soft
        region &= soft > 0.25
        mask = Image.fromarray(region.astype(np.uint8) * 255)
    else:  # hole
        r = float(rng.uniform(0.05, 0.09) * size)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        region = np.asarray(mask) > 0
        rim = np.asarray(mask.filter(ImageFilter.MaxFilter(5)), dtype=bool) & ~region
        image[region] = 8
        image[rim] = 220
        region |= rim
        mask = Image.fromarray(region.astype(np.uint8) * 255)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(mask)


def _write_category(folder: Path, texture: np.ndarray, rng: np.random.Generator, size: int,
                    train_normals: int, test_normals: int, defects_per_type: int) -> None:
    def save(array: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path, optimize=True)

    for i in range(train_normals):
        save(_tile(texture, rng, size), folder / "train" / "good" / f"{i:03d}.png")
    for i in range(test_normals):
        save(_tile(texture, rng, size), folder / "test" / "good" / f"{i:03d}.png")
    for kind in DEFECTS:
        for i in range(defects_per_type):
            image, mask = _defect(_tile(texture, rng, size), kind, rng)
            save(image, folder / "test" / kind / f"{i:03d}.png")
            save(mask, folder / "ground_truth" / kind / f"{i:03d}_mask.png")
