"""The three evaluation settings of CADA's absolute-unified study, and how their metrics are named.

* ``class_separated``: metrics per category on the model's raw scores, and their mean. These carry the
  plain anomalib names (``image_AUROC`` = mean over categories), exactly as UniAD/UniADC report them.
* ``class_agnostic``: the model's own output pooled over all categories with one threshold (absolute-unified;
  e.g. a CADA-wrapped model). Names: ``pooled_<metric>`` (``pooled_image_AUROC``, ``pooled_pixel_AUROC``, ...).
* ``class_aware``: an oracle that knows each image's category divides out per-category score statistics,
  ``(s - u) / (gamma - u)`` with u / gamma = mean / max of the model's image scores on that category's normal
  images of a reference split, then pools. Names: ``class_aware_pooled_<metric>``.

Per-category metrics are invariant to a per-category positive affine map, so class-aware normalisation
changes only the pooled numbers; hence a prefix is needed only for the pooled rows, and every model logs
the same names whatever it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from unified_anomaly.models.cada import apply_class_statistics
from unified_anomaly.models.cada import class_statistics as group_statistics

CLASS_SEPARATED = "class_separated"
CLASS_AWARE = "class_aware"
CLASS_AGNOSTIC = "class_agnostic"
SETTINGS = (CLASS_SEPARATED, CLASS_AWARE, CLASS_AGNOSTIC)

POOLED_ROW = "pooled"  # class_agnostic
CLASS_AWARE_ROW = "class_aware_pooled"
ROW_PREFIXES = {POOLED_ROW: "pooled_", CLASS_AWARE_ROW: "class_aware_pooled_"}


def check_settings(settings: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        raise ValueError(f"unknown or empty evaluation settings {list(settings)}; choose from {SETTINGS}")
    return tuple(dict.fromkeys(settings))


def class_statistics(
    scores: np.ndarray, categories: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, tuple[float, float]]:
    """stats[category] = (u, gamma): mean and max of the image scores of that category's NORMAL images."""
    scores, categories = np.asarray(scores, dtype=np.float64), np.asarray(categories)
    normal = np.ones(scores.shape, bool) if labels is None else np.asarray(labels) == 0
    return group_statistics(scores[normal], categories[normal])


def class_aware_normalise(
    maps: np.ndarray | None,
    scores: np.ndarray,
    categories: np.ndarray,
    stats: Mapping[str, tuple[float, float]],
) -> tuple[np.ndarray | None, np.ndarray]:
    """Maps and scores mapped to ``(s - u) / (gamma - u)`` with their own category's (u, gamma); new arrays.

    Raises when a category has no statistics (no normal images in the reference split).
    """
    missing = sorted(set(np.asarray(categories).astype(str).tolist()) - set(stats))
    if missing:
        raise ValueError(
            f"no class-aware statistics for categories {missing}: the reference split has no normal images of "
            "them; choose another evaluate.class_aware_reference_split or drop 'class_aware' from the settings"
        )
    return apply_class_statistics(maps, np.asarray(scores, dtype=np.float64), categories, dict(stats))
