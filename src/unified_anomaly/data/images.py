"""Image and mask files: cheap checks before work starts, then decoding, mode conversion and resizing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def check_file(path: str | os.PathLike) -> tuple[tuple[int, int] | None, str | None]:
    """Returns ``((width, height), None)`` for a file that looks whole, or ``(None, what is wrong)``.

    Reads the header and the last bytes only: zero-byte, unreadable and truncated JPEG/PNG files are caught
    here, before any decoding; anything subtler is caught when the image is decoded.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        return None, f"cannot be read ({error.strerror})"
    if size == 0:
        return None, "zero-byte file"
    try:
        with Image.open(path) as image:
            dimensions, kind = image.size, image.format
    except (UnidentifiedImageError, OSError) as error:
        return None, f"not a readable image ({error})"
    with open(path, "rb") as handle:
        handle.seek(max(0, size - 64))
        tail = handle.read()
    if kind == "JPEG" and b"\xff\xd9" not in tail:
        return None, "truncated JPEG (no end-of-image marker)"
    if kind == "PNG" and b"IEND" not in tail:
        return None, "truncated PNG (no IEND chunk)"
    return dimensions, None


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """RGB uint8 from grayscale, palette, RGBA (alpha dropped), CMYK or 16-bit images."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float32)
        scale = 65535.0 if values.max(initial=0) > 255 else 255.0
        gray = np.clip(values * (255.0 / scale) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "RGBA" or image.mode == "LA" or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decodes, converts to RGB and resizes (bilinear) to ``size × size``; grayscale is resized before it is
    replicated to three channels (a third of the work)."""
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft(image.mode, (size, size))  # decoder-side downscale (DCT scaling), exact size below
        image.load()
        if image.mode == "L":
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            return np.repeat(np.asarray(image)[..., None], 3, axis=2)
        rgb = to_rgb_array(image)
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
    return rgb


def load_mask(path: str | os.PathLike, size: int, class_id: int, class_valued: bool) -> np.ndarray:
    """Class-valued uint8 mask at ``size × size``.

    Binary masks (MVTec, MTD: defect = value >= 128) are binarised at the source size, area-resized and kept
    where a pixel is at least half covered; a defect that would vanish that way (thinner than a resized
    pixel) keeps every pixel it touches, so resizing never turns an anomaly's mask empty. Class-valued masks
    (MVTec-FS) are resized with nearest neighbour.
    """
    with Image.open(path) as mask:
        mask.load()
        if mask.mode in SIXTEEN_BIT_MODES:
            values = np.asarray(mask, dtype=np.int64)
            mask = Image.fromarray(values.clip(0, 255).astype(np.uint8) if class_valued else (values > 0).astype(np.uint8) * 255)
        elif mask.mode != "L":
            mask = mask.convert("L")
        if class_valued:
            return np.asarray(mask.resize((size, size), Image.Resampling.NEAREST), dtype=np.uint8).copy()
        binary = Image.fromarray(np.where(np.asarray(mask) >= 128, np.uint8(255), np.uint8(0)))
    coverage = np.asarray(binary.resize((size, size), Image.Resampling.BOX))
    defect = coverage >= 128
    if not defect.any() and coverage.any():
        defect = coverage > 0
    return np.where(defect, np.uint8(class_id), np.uint8(0))
