"""Contact sheets: a figure per category, a row per defect type, synthetic images with the mask outlined."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files and MLflow, never shown

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import ndimage  # noqa: E402


def outline(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """The image with the mask's one-pixel outline drawn in."""
    region = mask > 0
    edge = region & ~ndimage.binary_erosion(region, np.ones((3, 3), dtype=bool), border_value=0)
    out = image.copy()
    out[edge] = colour
    return out


def contact_sheet(
    images: np.ndarray,
    masks: np.ndarray,
    metadata: pd.DataFrame,
    category: str,
    class_names: list[str],
    columns: int = 8,
    title: str = "",
) -> Figure:
    """A figure of up to ``columns`` examples per defect type of one category (rows in class-id order).

    ``metadata`` needs the columns ``index`` (row in ``images``), ``category``, ``class_id`` and optionally
    ``score``.
    """
    rows = [(cid, name) for cid, name in enumerate(class_names) if cid > 0]
    figure, axes = plt.subplots(
        max(1, len(rows)), columns, figsize=(1.6 * columns, 1.8 * max(1, len(rows))), squeeze=False
    )
    for axis in axes.ravel():
        axis.axis("off")
    for row, (class_id, name) in enumerate(rows):
        chosen = metadata[(metadata["category"] == category) & (metadata["class_id"].astype(int) == class_id)]
        chosen = chosen.iloc[:columns]
        axes[row, 0].set_title(f"{name} ({len(chosen)} shown)", fontsize=7, loc="left")
        scores = pd.to_numeric(chosen.get("score", pd.Series(np.nan, index=chosen.index)), errors="coerce")
        for col, (index, score) in enumerate(zip(chosen["index"].astype(int), scores, strict=True)):
            axes[row, col].imshow(outline(images[index], masks[index]))
            if pd.notna(score):
                axes[row, col].text(2, 12, f"{score:.2f}", color="yellow", fontsize=6)
    figure.suptitle(title or category, fontsize=9)
    figure.tight_layout()
    return figure
