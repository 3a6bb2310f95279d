"""Exact threshold-free binary metrics (AUROC, AP, F1-max) without an argsort of all scores.

Every metric needs, for each distinct anomalous (positive) score ``v``, only ``#normal scores < v`` and
``#normal scores == v``; curves and AUPRO need the same counts at a few thresholds. The positives are few
(a few % of the pixels): they are gathered in their original order and sorted. For the normal scores:

* small inputs (image scores) and float64 inputs: all scores are sorted and counted with ``searchsorted``;
* large float32 inputs (pixel maps, tens of millions): scores are mapped to order-preserving 32-bit keys and
  counted in up to 2^22 equal-width key buckets (``bincount``); only the scores that share a bucket with a
  positive score (or with a requested threshold) need an order among themselves, and only those are sorted.
  On MTD-sized maps that is a fifth of the pixels; in the worst case (positives in every bucket) everything.

Both are exact, including ties (equal values always share a key: -0.0 is mapped onto +0.0), and equal to
scikit-learn's ``roc_auc_score`` / ``average_precision_score`` / ``precision_recall_curve``. Chunks are
processed on a thread pool (numpy releases the GIL in sorts and element-wise loops).

Conventions (the same as scikit-learn's): a score ``s`` is predicted anomalous at threshold ``t`` when
``s >= t``; AP is the step-wise sum over the PR curve (not trapezoidal). With a single class present,
AUROC is NaN; AP and F1-max are NaN without positives and 1.0 without negatives.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

# Below this many scores, threads cost more than they save.
_PARALLEL_MIN_SIZE = 2_000_000
# From this many float32 scores on, the bucketed counting replaces the full sort.
_BUCKET_MIN_SIZE = 4_000_000
_BUCKET_BITS = 22  # at most 2^22 buckets: 32 MiB of int64 counts per thread
_SUB_CHUNK = 1 << 22  # elements per element-wise step inside a thread (bounds the temporaries)


def default_threads() -> int:
    """Threads for sorting: the CPUs this process may use, at most 4."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def as_flat_scores(scores: np.ndarray) -> np.ndarray:
    """A 1-D floating view of ``scores`` (no copy for contiguous float32/float64 input)."""
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    return scores.reshape(-1)


def as_flat_labels(labels: np.ndarray) -> np.ndarray:
    """1-D boolean labels: anything > 0 is anomalous (class-valued masks are binarised)."""
    labels = np.asarray(labels).reshape(-1)
    return labels if labels.dtype == np.bool_ else labels > 0


def check_finite(scores: np.ndarray, what: str) -> None:
    """NaN or inf scores make every ranking metric meaningless: fail with a clear message."""
    if scores.size and not (np.isfinite(scores.min()) and np.isfinite(scores.max())):
        raise ValueError(f"{what} contain NaN or infinite values; fix the model output before evaluating")


@dataclass
class ScoreRanking:
    """Sorted positive scores and the counts every ranking metric needs; the shared input of AUROC, AP,
    F1-max, curves and AUPRO.

    positives: anomalous scores in their original (flattened, C) order; sorted_positives: the same, ascending.
    unique_positives: distinct anomalous scores, ascending; positive_counts: how often each occurs.
    negatives_below / negatives_equal: for each distinct anomalous score, #normal scores < it / == it.
    """

    positives: np.ndarray
    sorted_positives: np.ndarray
    unique_positives: np.ndarray
    positive_counts: np.ndarray
    negatives_below: np.ndarray
    negatives_equal: np.ndarray
    n_scores: int
    min_score: float
    max_score: float
    index: _FullSortIndex | _BucketIndex

    @property
    def n_positive(self) -> int:
        return int(self.positives.size)

    @property
    def n_negative(self) -> int:
        return self.n_scores - self.n_positive

    @classmethod
    def from_arrays(
        cls,
        scores: np.ndarray,
        labels: np.ndarray,
        n_threads: int | None = None,
        exact_at: np.ndarray | None = None,
    ) -> ScoreRanking:
        """Counts; ``scores`` and ``labels`` may be of any (equal) shape, e.g. N×H×W maps and masks (labels:
        bool, or class-valued with > 0 = anomalous). ``exact_at``: thresholds that ``count_negatives_above``
        will be asked about (e.g. AUPRO's), resolved during construction instead of by a later scan."""
        flat_scores = as_flat_scores(scores)
        raw_labels = np.asarray(labels).reshape(-1)
        if flat_scores.shape != raw_labels.shape:
            raise ValueError(f"scores {np.shape(scores)} and labels {np.shape(labels)} differ in size")
        check_finite(flat_scores, "scores")
        n_threads = default_threads() if n_threads is None else max(1, int(n_threads))
        if flat_scores.size < _PARALLEL_MIN_SIZE:
            n_threads = 1
        if flat_scores.dtype == np.float32 and flat_scores.size >= _BUCKET_MIN_SIZE:
            index, positives = _BucketIndex.build(flat_scores, raw_labels, n_threads, exact_at)
        else:
            index, positives = _FullSortIndex.build(flat_scores, raw_labels, n_threads)
        sorted_positives = np.sort(positives)
        unique_positives, positive_counts = _unique_sorted(sorted_positives)
        below, below_or_equal = index.count(unique_positives, n_threads)
        positives_below = np.cumsum(positive_counts) - positive_counts
        return cls(
            positives=positives,
            sorted_positives=sorted_positives,
            unique_positives=unique_positives,
            positive_counts=positive_counts,
            negatives_below=below - positives_below,
            negatives_equal=below_or_equal - below - positive_counts,
            n_scores=int(flat_scores.size),
            min_score=index.min_score,
            max_score=index.max_score,
            index=index,
        )

    # ------------------------------------------------------------------ counts at the distinct positive scores
    def _true_positives(self) -> np.ndarray:
        """#positives >= v for each distinct positive score v (ascending v)."""
        below = np.cumsum(self.positive_counts) - self.positive_counts
        return self.n_positive - below

    def _false_positives(self) -> np.ndarray:
        """#negatives >= v for each distinct positive score v."""
        return self.n_negative - self.negatives_below

    def count_negatives_above(self, thresholds: np.ndarray) -> np.ndarray:
        """#negatives strictly greater than each threshold (thresholds in the scores' dtype)."""
        thresholds = np.asarray(thresholds).astype(self.sorted_positives.dtype)
        _, at_most = self.index.count(thresholds, n_threads=1)
        positives_above = self.n_positive - np.searchsorted(self.sorted_positives, thresholds, side="right")
        return (self.n_scores - at_most) - positives_above

    # ------------------------------------------------------------------ metrics
    def auroc(self) -> float:
        """Area under the ROC curve = P(s+ > s-) + 0.5 P(s+ = s-); NaN with a single class."""
        n_pos, n_neg = self.n_positive, self.n_negative
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        # integer arithmetic up to the last division: exact for any realistic size (< 2^63)
        twice_wins = 2 * np.dot(self.positive_counts, self.negatives_below) + np.dot(
            self.positive_counts, self.negatives_equal
        )
        return float(twice_wins) / (2.0 * n_pos * n_neg)

    def average_precision(self) -> float:
        """Step-wise AP: sum over distinct thresholds of (recall increase) x precision (scikit-learn's)."""
        if self.n_positive == 0:
            return float("nan")
        tp = self._true_positives().astype(np.float64)
        precision = tp / (tp + self._false_positives())
        return float(np.dot(self.positive_counts, precision) / self.n_positive)

    def f1_max(self) -> tuple[float, float]:
        """(max F1 over all thresholds, the lowest threshold reaching it); predicted anomalous iff s >= t."""
        if self.n_positive == 0:
            return float("nan"), float("nan")
        tp = self._true_positives().astype(np.float64)
        f1 = 2.0 * tp / (tp + self._false_positives() + self.n_positive)
        best = int(np.argmax(f1))
        return float(f1[best]), float(self.unique_positives[best])

    # ------------------------------------------------------------------ curves (for plots)
    def roc_curve(self, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """(FPR, TPR) from (0, 0) to (1, 1), the corners at every distinct positive score, thinned."""
        n_pos, n_neg = self.n_positive, self.n_negative
        if n_pos == 0 or n_neg == 0:
            return np.array([0.0, 1.0]), np.array([0.0, 1.0])
        tp_at, fp_at = self._true_positives()[::-1], self._false_positives()[::-1]  # descending thresholds
        tp_before = tp_at - self.positive_counts[::-1]
        fp_before = fp_at - self.negatives_equal[::-1]
        fp = np.concatenate([[0], np.stack([fp_before, fp_at], axis=1).reshape(-1), [n_neg]])
        tp = np.concatenate([[0], np.stack([tp_before, tp_at], axis=1).reshape(-1), [n_pos]])
        keep = _thin(fp.size, max_points)
        return fp[keep] / n_neg, tp[keep] / n_pos

    def pr_curve(self, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) at every distinct positive score, by increasing recall, thinned."""
        if self.n_positive == 0:
            return np.array([0.0]), np.array([1.0])
        tp = self._true_positives()[::-1].astype(np.float64)
        precision = tp / (tp + self._false_positives()[::-1])
        recall = tp / self.n_positive
        keep = _thin(recall.size, max_points)
        return np.concatenate([[0.0], recall[keep]]), np.concatenate([[1.0], precision[keep]])


class _FullSortIndex:
    """All scores, sorted in chunks: counts by ``searchsorted``."""

    def __init__(self, sorted_chunks: list[np.ndarray]) -> None:
        self.sorted_chunks = sorted_chunks
        self.min_score = float(min(c[0] for c in sorted_chunks)) if sorted_chunks else float("nan")
        self.max_score = float(max(c[-1] for c in sorted_chunks)) if sorted_chunks else float("nan")

    @classmethod
    def build(cls, flat_scores: np.ndarray, raw_labels: np.ndarray, n_threads: int) -> tuple[_FullSortIndex, np.ndarray]:
        def gather_and_sort(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
            part, part_labels = flat_scores[span[0] : span[1]], raw_labels[span[0] : span[1]]
            return part[_is_positive(part_labels)], np.sort(part)

        parts = _map(gather_and_sort, _spans(flat_scores.size, n_threads), n_threads)
        positives = np.concatenate([p for p, _ in parts]) if parts else flat_scores[:0]
        return cls([c for _, c in parts if c.size]), positives

    def count(self, values: np.ndarray, n_threads: int) -> tuple[np.ndarray, np.ndarray]:
        """(#scores < v, #scores <= v) for each value v."""
        def count_chunk(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.searchsorted(chunk, values, side="left"), np.searchsorted(chunk, values, side="right")

        below = np.zeros(values.shape, dtype=np.int64)
        at_most = np.zeros(values.shape, dtype=np.int64)
        for left, right in _map(count_chunk, self.sorted_chunks, n_threads):
            below += left
            at_most += right
        return below, at_most


def _float32_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of float32 values; -0.0 gets the key of +0.0 (equal values, equal keys)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    flip = (np.uint32(0) - (bits >> np.uint32(31))) | np.uint32(0x80000000)  # negatives: all bits; else sign
    keys = bits ^ flip
    keys[keys == np.uint32(0x7FFFFFFF)] = np.uint32(0x80000000)
    return keys


def _bucket_of(values: np.ndarray, key_min: np.uint32, shift: np.uint32) -> np.ndarray:
    """Bucket number of each value (values within [min, max] of the indexed scores)."""
    return (_float32_keys(values) - key_min) >> shift


class _BucketIndex:
    """Counts per equal-width key bucket for everything, plus the sorted scores of the buckets that hold a
    positive score or a requested threshold ("resolved" buckets); see the module docstring."""

    def __init__(self, flat_scores, key_min, shift, counts, resolved, sorted_chunks, min_score, max_score):
        self.flat_scores = flat_scores  # a view, for the (rare) scan of an unresolved threshold
        self.key_min, self.shift = key_min, shift
        self.resolved = resolved
        self.sorted_chunks = sorted_chunks
        self.all_before = np.cumsum(counts) - counts  # scores in earlier buckets
        resolved_counts = np.where(resolved, counts, 0)
        self.resolved_before = np.cumsum(resolved_counts) - resolved_counts  # sorted scores in earlier buckets
        self.min_score, self.max_score = min_score, max_score

    def bucket_of(self, values: np.ndarray) -> np.ndarray:
        return _bucket_of(values, self.key_min, self.shift)

    @classmethod
    def build(cls, flat_scores: np.ndarray, raw_labels: np.ndarray, n_threads: int,
              exact_at: np.ndarray | None) -> tuple[_BucketIndex, np.ndarray]:
        low, high = flat_scores.min(), flat_scores.max()
        key_min, key_max = (int(k) for k in _float32_keys(np.array([low, high], dtype=np.float32)))
        shift = max(0, (key_max - key_min).bit_length() - _BUCKET_BITS)
        n_buckets = ((key_max - key_min) >> shift) + 1
        key_min, shift = np.uint32(key_min), np.uint32(shift)
        spans = _spans(flat_scores.size, n_threads)

        def count_span(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            counts = np.zeros(n_buckets, dtype=np.int64)
            positives, positive_buckets = [], []
            for start in range(span[0], span[1], _SUB_CHUNK):
                part = flat_scores[start : min(span[1], start + _SUB_CHUNK)]
                buckets = _bucket_of(part, key_min, shift)
                counts += np.bincount(buckets, minlength=n_buckets)
                positive = _is_positive(raw_labels[start : start + part.size])
                positives.append(part[positive])
                positive_buckets.append(buckets[positive])
            return counts, _concat(positives, flat_scores.dtype), _concat(positive_buckets, np.uint32)

        parts = _map(count_span, spans, n_threads)
        counts = parts[0][0]
        for other, _, _ in parts[1:]:
            counts += other
        positives = _concat([p for _, p, _ in parts], flat_scores.dtype)
        resolved = np.zeros(n_buckets, dtype=bool)
        for _, _, buckets in parts:
            resolved[buckets] = True
        if exact_at is not None:
            wanted = np.asarray(exact_at, dtype=np.float32)
            wanted = wanted[(wanted >= low) & (wanted <= high)]
            resolved[_bucket_of(wanted, key_min, shift)] = True

        def gather_and_sort(span: tuple[int, int]) -> np.ndarray:
            kept = []
            for start in range(span[0], span[1], _SUB_CHUNK):
                part = flat_scores[start : min(span[1], start + _SUB_CHUNK)]
                kept.append(part[resolved[_bucket_of(part, key_min, shift)]])
            chunk = _concat(kept, flat_scores.dtype)
            chunk.sort()
            return chunk

        sorted_chunks = [c for c in _map(gather_and_sort, spans, n_threads) if c.size]
        return cls(flat_scores, key_min, shift, counts, resolved, sorted_chunks, float(low), float(high)), positives

    def count(self, values: np.ndarray, n_threads: int) -> tuple[np.ndarray, np.ndarray]:
        """(#scores < v, #scores <= v) for each float32 value v."""
        values = np.asarray(values, dtype=np.float32)
        below = np.zeros(values.shape, dtype=np.int64)
        at_most = np.zeros(values.shape, dtype=np.int64)
        n = self.flat_scores.size
        above_all, below_all = values > self.max_score, values < self.min_score
        below[above_all], at_most[above_all] = n, n
        inside = np.flatnonzero(~(above_all | below_all))
        if inside.size == 0:
            return below, at_most
        buckets = self.bucket_of(values[inside])
        is_resolved = self.resolved[buckets]
        known, unknown = inside[is_resolved], inside[~is_resolved]
        if known.size:
            known_buckets = buckets[is_resolved]
            left, right = np.zeros(known.size, np.int64), np.zeros(known.size, np.int64)
            for chunk in self.sorted_chunks:
                left += np.searchsorted(chunk, values[known], side="left")
                right += np.searchsorted(chunk, values[known], side="right")
            offset = self.all_before[known_buckets] - self.resolved_before[known_buckets]
            below[known], at_most[known] = offset + left, offset + right
        for position in unknown:  # a threshold nobody announced: one exact scan each
            below[position] = np.count_nonzero(self.flat_scores < values[position])
            at_most[position] = np.count_nonzero(self.flat_scores <= values[position])
        return below, at_most


def _is_positive(labels: np.ndarray) -> np.ndarray:
    return labels if labels.dtype == np.bool_ else labels > 0


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _spans(size: int, n_threads: int) -> list[tuple[int, int]]:
    """Contiguous ranges in order: 2 per thread (smaller sorts are cheaper and balance better)."""
    bounds = np.linspace(0, size, 2 * n_threads + 1 if n_threads > 1 else 2).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC-AUC (ties count one half); NaN when only one class is present."""
    return ScoreRanking.from_arrays(scores, labels).auroc()


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact step-wise average precision (scikit-learn's definition)."""
    return ScoreRanking.from_arrays(scores, labels).average_precision()


def f1_max(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(F1-max, its threshold); a score is predicted anomalous iff score >= threshold."""
    return ScoreRanking.from_arrays(scores, labels).f1_max()


def _unique_sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts of an ascending array, without another sort."""
    if values.size == 0:
        return values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    counts = np.diff(np.append(starts, values.size)).astype(np.int64)
    return values[starts], counts


def _thin(n: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` evenly spaced indices of 0..n-1, first and last kept."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def _map(func, items, n_threads: int) -> list:
    items = list(items)
    if n_threads <= 1 or len(items) <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(pool.map(func, items))
