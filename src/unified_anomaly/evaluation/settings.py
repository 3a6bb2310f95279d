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

A CADA-wrapped model (``rd_cada``, ``uniad_cada``) is evaluated as the study defines it: class_separated and
class_aware on its BASE model's raw outputs, class_agnostic on its CADA-normalised outputs. Its predictions
carry the per-image ``cada_u``/``cada_gamma``, so :func:`base_model_view` recovers the base's raw maps and
scores without a second pass (the normalisation is a per-image positive affine map).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from unified_anomaly.models.cada import PER_IMAGE_EXTRAS, apply_class_statistics, denormalise
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


def base_model_view(predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The BASE model's raw predictions behind a CADA model's normalised ones, or None for a plain model.

    ``s = u + (γ − u)·s'`` per image with CADA's own ``cada_u``/``cada_gamma``: the base's raw maps and image
    scores up to float rounding (``tests/evaluation/test_evaluation.py`` checks it against the base itself)."""
    if not all(name in predictions for name in PER_IMAGE_EXTRAS):
        return None
    u, gamma = (np.asarray(predictions[name], dtype=np.float64) for name in PER_IMAGE_EXTRAS)
    view = {k: v for k, v in predictions.items() if k not in PER_IMAGE_EXTRAS}
    view["image_scores"] = denormalise(np.asarray(predictions["image_scores"], dtype=np.float64), u, gamma)
    if "anomaly_maps" in predictions:
        view["anomaly_maps"] = denormalise(np.asarray(predictions["anomaly_maps"]), u, gamma)
    return view
