"""Few-shot synthesis ("anomaly-sample-guided"): real defect regions cut out, pasted, repainted, selected.

Following UniADC's CutPasteByMask + repaint:

1. Cut: every connected component of a support sample's mask of at least ``min_area`` pixels, its box grown
   by ``context_ratio`` of its size on each side.
2. Paste: one region per image, randomly transposed, flipped or rotated by 0–90° (and scaled), placed inside
   the foreground of a random normal image; the pasted mask is multiplied by the foreground and closed.
3. Repaint or blend: the backend's ``repaint`` (diffusion: partial noising of the pasted image; procedural:
   feathered blending after matching the local intensity).
4. Select: among the candidates, the one with the highest mean SSIM to the (transformed) source crop inside
   the pasted region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.metrics import structural_similarity

from unified_anomaly.synthesis.foreground import ForegroundGeometry
from unified_anomaly.synthesis.masks import EIGHT_CONNECTED, close_mask, sample_centre


@dataclass
class AnomalyRegion:
    """One real defect region: a crop with context and the component's mask within it."""

    image: np.ndarray  # uint8 h×w×3
    mask: np.ndarray  # bool h×w, the component only
    class_id: int
    defect_type: str
    source_index: int  # row of the support sample in the image store


def extract_regions(
    image: np.ndarray,
    class_mask: np.ndarray,
    source_index: int,
    defect_types: list[str],
    min_area: int,
    context_ratio: float = 0.25,
) -> list[AnomalyRegion]:
    """Connected components (8-connected) of a class-valued mask, each with its context crop."""
    regions = []
    height, width = class_mask.shape
    for class_id in np.unique(class_mask[class_mask > 0]):
        labels, count = ndimage.label(class_mask == class_id, EIGHT_CONNECTED)
        for component, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            component_mask = labels == component
            if component_mask.sum() < min_area:
                continue
            rows, cols = box
            grow_r = int(math.ceil((rows.stop - rows.start) * context_ratio))
            grow_c = int(math.ceil((cols.stop - cols.start) * context_ratio))
            rows = slice(max(0, rows.start - grow_r), min(height, rows.stop + grow_r))
            cols = slice(max(0, cols.start - grow_c), min(width, cols.stop + grow_c))
            regions.append(
                AnomalyRegion(
                    image=np.ascontiguousarray(image[rows, cols]),
                    mask=component_mask[rows, cols].copy(),
                    class_id=int(class_id),
                    defect_type=defect_types[int(class_id) - 1],
                    source_index=int(source_index),
                )
            )
    return regions


def augment_region(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (1.0, 1.0),
    max_rotation: float = 90.0,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Random transpose, h/v flip or rotation by 0..``max_rotation`` degrees, then a random scale."""
    choice = int(rng.integers(4))
    if choice == 0:
        image, mask, name = image.transpose(1, 0, 2), mask.T, "transpose"
    elif choice == 1:
        image, mask, name = image[:, ::-1], mask[:, ::-1], "hflip"
    elif choice == 2:
        image, mask, name = image[::-1], mask[::-1], "vflip"
    else:
        angle = float(rng.uniform(0, max_rotation))
        fill = tuple(int(v) for v in image.reshape(-1, 3).mean(0))
        image = np.asarray(Image.fromarray(image).rotate(angle, Image.BILINEAR, expand=True, fillcolor=fill))
        mask = (
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).rotate(angle, Image.NEAREST, expand=True))
            > 0
        )
        name = f"rotate{angle:.0f}"
    scale = float(rng.uniform(*scale_range))
    if abs(scale - 1.0) > 1e-3:
        height, width = mask.shape
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(new_size, Image.BILINEAR))
        mask = (
            np.asarray(
                Image.fromarray(np.ascontiguousarray(mask).astype(np.uint8) * 255).resize(
                    new_size, Image.NEAREST
                )
            )
            > 0
        )
        name += f"+scale{scale:.2f}"
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), name


@dataclass
class Paste:
    """A region pasted into a normal image: the hard-pasted image, the final mask and the reference crop."""

    pasted: np.ndarray  # uint8 S×S×3: the normal image with the region's masked pixels pasted in
    mask: np.ndarray  # bool S×S: the pasted mask (inside the foreground, closed)
    box: tuple[slice, slice]  # where the crop landed
    reference: np.ndarray  # uint8 crop (same size as the box): the transformed source crop
    description: str


def paste_region(
    target: np.ndarray,
    geometry: ForegroundGeometry,
    crop: np.ndarray,
    crop_mask: np.ndarray,
    rng: np.random.Generator,
    placement: str = "anywhere",
    closing_kernel: int = 3,
    match_intensity: bool = True,
) -> Paste | None:
    """Pastes ``crop``'s masked pixels centred on a foreground pixel; None if nothing lands on it."""
    size = target.shape[0]
    height, width = crop_mask.shape
    centre = sample_centre(geometry, placement, rng).astype(int)
    top, left = centre[0] - height // 2, centre[1] - width // 2
    rows = slice(max(0, top), min(size, top + height))
    cols = slice(max(0, left), min(size, left + width))
    crop_rows = slice(rows.start - top, rows.stop - top)
    crop_cols = slice(cols.start - left, cols.stop - left)
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return None
    mask = np.zeros((size, size), dtype=bool)
    mask[rows, cols] = crop_mask[crop_rows, crop_cols]
    mask = close_mask(mask & geometry.mask, closing_kernel) & geometry.mask
    if not mask.any():
        return None
    reference = crop[crop_rows, crop_cols].astype(np.float32)
    if match_intensity:
        reference = _match_surroundings(reference, crop_mask[crop_rows, crop_cols], target[rows, cols])
    reference = np.clip(np.rint(reference), 0, 255).astype(np.uint8)
    pasted = target.copy()
    pasted[rows, cols] = np.where(mask[rows, cols, None], reference, target[rows, cols])
    return Paste(pasted, mask, (rows, cols), reference, "")


def _match_surroundings(crop: np.ndarray, crop_mask: np.ndarray, destination: np.ndarray) -> np.ndarray:
    """Shifts the crop's intensity so its context (outside the defect) matches the destination's mean."""
    context = ~crop_mask
    if context.sum() < 8:
        return crop
    shift = destination[context].astype(np.float32).mean(0) - crop[context].mean(0)
    return crop + shift


def region_ssim(candidate: np.ndarray, paste: Paste) -> float:
    """Mean SSIM (luminance) of the candidate's pasted box to the reference crop, inside the pasted mask."""
    window = candidate[paste.box].astype(np.float32).mean(-1)
    reference = paste.reference.astype(np.float32).mean(-1)
    inside = paste.mask[paste.box]
    side = min(window.shape)
    if side < 3 or not inside.any():
        return float("nan")
    win_size = min(7, side if side % 2 else side - 1)
    _, ssim_map = structural_similarity(window, reference, data_range=255, full=True, win_size=win_size)
    return float(ssim_map[inside].mean())
