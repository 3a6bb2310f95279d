"""AUROC / AP / F1-max against scikit-learn on random, tied and edge-case inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from unified_anomaly.metrics import ScoreRanking, auroc, average_precision, f1_max
from unified_anomaly.metrics import ranking as ranking_module


def sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    best = int(np.argmax(f1[:-1]))
    return float(f1[best]), float(thresholds[best])


CASES = {
    "random_continuous": lambda rng: (rng.random(500), rng.random(500) < 0.3),
    "heavy_ties": lambda rng: (rng.integers(0, 5, 400).astype(np.float32), rng.random(400) < 0.5),
    "float32_pixels": lambda rng: (rng.normal(size=(6, 16, 16)).astype(np.float32), rng.random((6, 16, 16)) < 0.1),
    "separable": lambda rng: (np.r_[np.zeros(10), np.ones(5)], np.r_[np.zeros(10), np.ones(5)].astype(bool)),
    "inverted": lambda rng: (np.r_[np.ones(10), np.zeros(5)], np.r_[np.zeros(10), np.ones(5)].astype(bool)),
    "all_scores_equal": lambda rng: (np.full(20, 0.3), np.arange(20) % 3 == 0),
    "negative_zero": lambda rng: (np.array([-0.0, 0.0, 0.0, -0.0, 1.0]), np.array([1, 0, 1, 0, 1]).astype(bool)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_sklearn(case: str) -> None:
    rng = np.random.default_rng(0)
    scores, labels = CASES[case](rng)
    flat_scores, flat_labels = scores.reshape(-1), labels.reshape(-1).astype(int)
    ranking = ScoreRanking.from_arrays(scores, labels)
    assert ranking.auroc() == pytest.approx(roc_auc_score(flat_labels, flat_scores), abs=1e-12)
    assert ranking.average_precision() == pytest.approx(average_precision_score(flat_labels, flat_scores), abs=1e-12)
    value, threshold = ranking.f1_max()
    expected_value, _ = sklearn_f1_max(flat_labels, flat_scores)
    assert value == pytest.approx(expected_value, abs=1e-12)
    # the returned threshold reproduces the maximum with the rule score >= threshold
    predicted = flat_scores >= threshold
    tp = np.sum(predicted & (flat_labels == 1))
    assert 2 * tp / (predicted.sum() + flat_labels.sum()) == pytest.approx(value, abs=1e-12)


def test_hand_computed_auroc_with_tie() -> None:
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs won 1 + 1 + 0.5 (tie) + 1 = 3.5 of 4
    scores = np.array([0.8, 0.4, 0.4, 0.1])
    labels = np.array([1, 1, 0, 0])
    assert auroc(scores, labels) == pytest.approx(3.5 / 4)
    # AP: threshold 0.8 -> P=1, R=.5; threshold 0.4 -> P=2/3, R=1 => 0.5*1 + 0.5*2/3
    assert average_precision(scores, labels) == pytest.approx(0.5 + 1 / 3)
    value, threshold = f1_max(scores, labels)
    assert value == pytest.approx(max(2 * 1 / (1 + 2), 2 * 2 / (3 + 2)))
    assert threshold == pytest.approx(0.4)


def test_single_class_gives_nan_not_error() -> None:
    scores = np.array([0.1, 0.5, 0.9])
    all_normal = ScoreRanking.from_arrays(scores, np.zeros(3, bool))
    assert np.isnan(all_normal.auroc()) and np.isnan(all_normal.average_precision())
    assert np.isnan(all_normal.f1_max()[0])
    all_anomalous = ScoreRanking.from_arrays(scores, np.ones(3, bool))
    assert np.isnan(all_anomalous.auroc())
    assert all_anomalous.average_precision() == 1.0 and all_anomalous.f1_max()[0] == 1.0
    empty = ScoreRanking.from_arrays(np.zeros(0), np.zeros(0, bool))
    assert np.isnan(empty.auroc())


def test_nan_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        auroc(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 1]))


def test_threaded_path_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranking_module, "_PARALLEL_MIN_SIZE", 10)
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 50, size=(7, 20, 20)).astype(np.float32)  # ties across chunk borders
    labels = rng.random((7, 20, 20)) < 0.2
    threaded = ScoreRanking.from_arrays(scores, labels, n_threads=2)
    assert len(threaded.index.sorted_chunks) == 4
    assert threaded.auroc() == pytest.approx(roc_auc_score(labels.ravel(), scores.ravel()), abs=1e-12)
    assert threaded.average_precision() == pytest.approx(average_precision_score(labels.ravel(), scores.ravel()))
    # positives keep their original order (AUPRO relies on it)
    np.testing.assert_array_equal(threaded.positives, scores[labels])


def test_curves_match_sklearn_end_points_and_area() -> None:
    rng = np.random.default_rng(2)
    scores, labels = rng.random(300), rng.random(300) < 0.4
    ranking = ScoreRanking.from_arrays(scores, labels)
    fpr, tpr = ranking.roc_curve()
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    sk_fpr, sk_tpr, _ = roc_curve(labels, scores)
    assert np.interp(0.3, fpr, tpr) == pytest.approx(np.interp(0.3, sk_fpr, sk_tpr), abs=1e-9)
    recall, precision = ranking.pr_curve()
    assert np.all(np.diff(recall) >= 0) and recall[-1] == 1.0
    thinned_fpr, _ = ranking.roc_curve(max_points=50)
    assert thinned_fpr.size <= 50


@pytest.mark.parametrize("bits", [3, 8, 22])
@pytest.mark.parametrize("case", ["continuous", "ties", "signed_zeros", "constant"])
def test_bucketed_path_is_exact(monkeypatch: pytest.MonkeyPatch, bits: int, case: str) -> None:
    """The large-input path (coarse key buckets, sorting only shared buckets) on small inputs, with few bits
    (wide buckets), sub-chunks and threads forced, against scikit-learn and brute-force counts."""
    monkeypatch.setattr(ranking_module, "_BUCKET_MIN_SIZE", 10)
    monkeypatch.setattr(ranking_module, "_PARALLEL_MIN_SIZE", 10)
    monkeypatch.setattr(ranking_module, "_SUB_CHUNK", 97)
    monkeypatch.setattr(ranking_module, "_BUCKET_BITS", bits)
    rng = np.random.default_rng(bits)
    shape = (5, 24, 24)
    if case == "continuous":
        scores = (rng.normal(size=shape) * 3).astype(np.float32)
    elif case == "ties":
        scores = rng.integers(-20, 20, size=shape).astype(np.float32) / 4
    elif case == "signed_zeros":
        scores = rng.choice(np.array([-0.0, 0.0, -1.5, 2.0, 1e-30, -1e-30], np.float32), size=shape)
    else:
        scores = np.full(shape, 0.25, np.float32)
    labels = rng.random(shape) < 0.15
    thresholds = np.linspace(scores.min(), scores.max(), 7).astype(np.float32)
    ranking = ScoreRanking.from_arrays(scores, labels, n_threads=2, exact_at=thresholds[:4])
    assert type(ranking.index).__name__ == "_BucketIndex"
    flat, flat_labels = scores.ravel(), labels.ravel()
    assert ranking.auroc() == pytest.approx(roc_auc_score(flat_labels, flat), abs=1e-12)
    assert ranking.average_precision() == pytest.approx(average_precision_score(flat_labels, flat), abs=1e-12)
    assert ranking.f1_max()[0] == pytest.approx(sklearn_f1_max(flat_labels, flat)[0], abs=1e-12)
    np.testing.assert_array_equal(ranking.positives, scores[labels])
    # announced thresholds, unannounced ones (scanned), and thresholds outside the range
    queries = np.concatenate([thresholds, [-1e9, 1e9], flat[:5]]).astype(np.float32)
    expected = [np.count_nonzero(flat[~flat_labels] > t) for t in queries]
    np.testing.assert_array_equal(ranking.count_negatives_above(queries), expected)
