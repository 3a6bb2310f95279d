"""AUPRO: area under the per-region-overlap (PRO) curve up to a false-positive-rate limit.

Variant used (logged as ``AUPRO_VARIANT``):

1. ``num_thresholds`` (200) thresholds equally spaced between the global min and max of the anomaly maps
   (``numpy.linspace`` in the maps' dtype). A pixel is predicted anomalous at threshold ``t`` iff ``s > t``.
2. Regions are the 8-connected components of each binarised ground-truth mask (``scipy.ndimage.label``).
   PRO(t) = mean over all regions of the fraction of the region's pixels predicted anomalous;
   FPR(t) = predicted-anomalous normal pixels / all normal pixels.
3. The curve, completed by the points (0, 0) (nothing predicted) and (1, 1) (everything predicted), is
   linearly interpolated at FPR = ``fpr_limit``; its trapezoidal area on [0, fpr_limit] is divided by
   ``fpr_limit`` (anomalib-style normalisation, not the reference code's min-max rescaling of the kept FPRs),
   so the result lies in [0, 1].

Speed: the per-threshold counts come from histogramming, not from a loop of ``num_thresholds`` passes over
the maps: FPRs from the sorted normal scores of a :class:`ScoreRanking`, region overlaps from one
``bincount`` of (region, threshold bin) over the anomalous pixels only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from unified_anomaly.metrics.ranking import ScoreRanking

AUPRO_VARIANT = "linspace200_strict_8conn_interp_fpr_limit"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def aupro_thresholds(min_score: float, max_score: float, num_thresholds: int, dtype: np.dtype) -> np.ndarray:
    """The thresholds of step 1, in the maps' dtype (so comparisons are exact)."""
    return np.linspace(min_score, max_score, num_thresholds).astype(dtype)


def region_ids(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """For every anomalous pixel in flattened C order, the id of its 8-connected region; and the region count.

    Regions never span two images.
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    ids, offset = [], 0
    for mask in masks:
        binary = mask > 0
        if not binary.any():
            continue
        labelled, count = ndimage.label(binary, structure=_EIGHT_CONNECTED)
        ids.append(labelled[binary].astype(np.int64) + (offset - 1))
        offset += count
    return (np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)), offset


def ranking_for_aupro(anomaly_maps: np.ndarray, masks: np.ndarray, num_thresholds: int = 200,
                      n_threads: int | None = None) -> ScoreRanking:
    """The ScoreRanking of maps and masks, with AUPRO's thresholds resolved while it is built."""
    anomaly_maps = np.asarray(anomaly_maps)
    low, high = (anomaly_maps.min(), anomaly_maps.max()) if anomaly_maps.size else (0.0, 0.0)
    thresholds = aupro_thresholds(low, high, num_thresholds, anomaly_maps.dtype)
    return ScoreRanking.from_arrays(anomaly_maps, masks, n_threads=n_threads, exact_at=thresholds)


def pro_curve(
    anomaly_maps: np.ndarray,
    masks: np.ndarray,
    num_thresholds: int = 200,
    ranking: ScoreRanking | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FPR, PRO) at the ``num_thresholds`` thresholds (ascending thresholds).

    ``ranking`` may be passed when it was already built from the same maps and masks (saves the sort).
    """
    if num_thresholds < 2:
        raise ValueError(f"num_thresholds must be >= 2, got {num_thresholds}")
    if ranking is None:
        ranking = ranking_for_aupro(anomaly_maps, masks, num_thresholds)
    dtype = ranking.positives.dtype
    thresholds = aupro_thresholds(ranking.min_score, ranking.max_score, num_thresholds, dtype)
    n_negative = ranking.n_negative
    fpr = ranking.count_negatives_above(thresholds) / n_negative if n_negative else np.full(num_thresholds, np.nan)

    ids, n_regions = region_ids(masks)
    if ids.size != ranking.n_positive:
        raise ValueError("ranking was not built from these masks (anomalous pixel counts differ)")
    if n_regions == 0:
        return thresholds, fpr, np.full(num_thresholds, np.nan)
    # bin b = number of thresholds strictly below the score: the pixel is predicted at thresholds 0..b-1
    bins = np.searchsorted(thresholds, ranking.positives, side="left")
    counts = np.bincount(ids * (num_thresholds + 1) + bins, minlength=n_regions * (num_thresholds + 1))
    counts = counts.reshape(n_regions, num_thresholds + 1)
    predicted = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1][:, 1:]  # [r, k] = #pixels of r with bin > k
    region_sizes = counts.sum(axis=1, keepdims=True)
    pro = (predicted / region_sizes).mean(axis=0)
    return thresholds, fpr, pro


def area_up_to(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Normalised trapezoidal area of the PRO curve on [0, fpr_limit], anchored at (0, 0) and (1, 1)."""
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if np.isnan(fpr).any() or np.isnan(pro).any():
        return float("nan")
    # thresholds ascend -> FPR and PRO descend; reverse, and add the two end points
    x = np.concatenate([[0.0], fpr[::-1], [1.0]])
    y = np.concatenate([[0.0], pro[::-1], [1.0]])
    inside = int(np.searchsorted(x, fpr_limit, side="right"))  # x[:inside] <= limit < x[inside]
    x_last, y_last = x[inside - 1], y[inside - 1]
    if inside < x.size:
        y_limit = y_last + (y[inside] - y_last) * (fpr_limit - x_last) / (x[inside] - x_last)
    else:
        y_limit = y_last
    xs = np.append(x[:inside], fpr_limit)
    ys = np.append(y[:inside], y_limit)
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return min(1.0, area / fpr_limit)


def aupro(
    anomaly_maps: np.ndarray,
    masks: np.ndarray,
    fpr_limit: float = 0.3,
    num_thresholds: int = 200,
    ranking: ScoreRanking | None = None,
) -> float:
    """AUPRO in [0, 1] (see the module docstring); NaN without anomalous regions or without normal pixels."""
    if ranking is None:
        ranking = ranking_for_aupro(anomaly_maps, masks, num_thresholds)
    _, fpr, pro = pro_curve(anomaly_maps, masks, num_thresholds, ranking)
    return area_up_to(fpr, pro, fpr_limit)
