"""CADA: normalisation, the class-aware oracle, the failure CADA fixes on synthetic score distributions,
the wrapper contract on staged and predict-only bases, fitting without labels, and save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, roc_auc_score
from torch import nn

from unified_anomaly.models.bundle import ModelBundle, load_bundle, save_bundle
from unified_anomaly.models.cada import (
    CADAFitSettings,
    CADAModel,
    StatisticsRegressor,
    apply_class_statistics,
    class_statistics,
    denormalise,
    fit_cada,
    form_targets,
    leave_one_out_score_error,
    normalise_map,
    pool_features,
    train_regressor,
)
from unified_anomaly.models.contract import Predictions
from unified_anomaly.models.registry import build_model, register_model
from unified_anomaly.models.reverse_distillation import build_reverse_distillation

RD_TINY = {"backbone": "tiny_cnn", "weights": "random", "input_size": 32, "sigma": 1.0}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------- normalisation
def test_normalise_map_per_image_torch_and_numpy():
    maps = torch.tensor([[[1.0, 3.0]], [[10.0, 30.0]]])
    out = normalise_map(maps, torch.tensor([1.0, 10.0]), torch.tensor([3.0, 30.0]))
    assert torch.allclose(out, torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]]))
    np.testing.assert_allclose(normalise_map(np.array([2.0, 20.0]), [1.0, 10.0], [3.0, 30.0]), [0.5, 0.5])
    assert float(normalise_map(torch.tensor(5.0), 1.0, 3.0)) == pytest.approx(2.0)
    back = denormalise(out, torch.tensor([1.0, 10.0]), torch.tensor([3.0, 30.0]))
    assert torch.allclose(back, maps)
    # γ ≤ u is clamped instead of flipping the sign or dividing by zero
    assert torch.isfinite(normalise_map(maps, torch.tensor([2.0, 2.0]), torch.tensor([2.0, 1.0]))).all()


def test_class_statistics_and_oracle_normalisation():
    stats = class_statistics([1.0, 3.0, 10.0, 20.0], ["a", "a", "b", "b"])
    assert stats == {"a": (2.0, 3.0), "b": (15.0, 20.0)}
    _, scores = apply_class_statistics(None, np.array([3.0, 15.0]), ["a", "b"], stats)
    np.testing.assert_allclose(scores, [1.0, 0.0])
    with pytest.raises(KeyError, match="c"):
        apply_class_statistics(None, np.array([1.0]), ["c"], stats)


# ------------------------------------------------------------------------- acceptance: synthetic scores
def _synthetic_classes(seed: int = 0):
    """Three classes whose normal scores live on shifted and differently spread scales; every image also
    has a global feature vector that carries its class (as pooled encoder features do)."""
    rng = np.random.default_rng(seed)
    means, spreads = np.array([1.0, 3.0, 6.0]), np.array([0.1, 0.3, 0.6])
    centres = rng.normal(size=(3, 16)) * 3

    def draw(n: int, anomalous: bool):
        cls = np.repeat(np.arange(3), n)
        features = centres[cls] + rng.normal(size=(len(cls), 16)) * 0.5
        noise = rng.normal(size=len(cls))
        if anomalous:
            noise = 3.0 + rng.exponential(1.0, size=len(cls))
        return features, means[cls] + spreads[cls] * noise, cls

    return {name: draw(n, name == "anomaly") for name, n in
            (("train", 80), ("val", 30), ("normal", 40), ("anomaly", 40))}


def _pooled_auroc(normal_scores, anomaly_scores) -> float:
    labels = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomaly_scores))]
    return roc_auc_score(labels, np.r_[normal_scores, anomaly_scores])


def test_cada_recovers_pooled_auroc_on_shifted_class_distributions():
    data = _synthetic_classes()
    (_, s_norm, c_norm), (_, s_anom, c_anom) = data["normal"][:], data["anomaly"][:]

    # the failure: every class is separable on its own, the pooled ranking is not
    per_class = [_pooled_auroc(s_norm[c_norm == c], s_anom[c_anom == c]) for c in range(3)]
    raw = _pooled_auroc(s_norm, s_anom)
    assert min(per_class) > 0.99
    assert raw < 0.8

    # class-aware oracle: per-class (u, γ) from labelled validation normals
    _, val_scores, val_cls = data["val"]
    stats = class_statistics(val_scores, val_cls)
    _, n_norm = apply_class_statistics(None, s_norm, c_norm, stats)
    _, n_anom = apply_class_statistics(None, s_anom, c_anom, stats)
    oracle = _pooled_auroc(n_norm, n_anom)
    assert oracle > 0.97

    # CADA: no label anywhere; clusters of the features give the targets, the regressor predicts (u, γ)
    train_f, train_s, train_cls = data["train"]
    val_f, val_s, _ = data["val"]
    settings = CADAFitSettings(n_clusters="auto", max_clusters=6, epochs=150, seed=0)
    groups, group_stats, report = form_targets(train_f, train_s, val_f, val_s, settings)
    assert report.n_groups == 3
    assert adjusted_rand_score(train_cls, groups[: len(train_cls)]) == 1.0
    regressor = StatisticsRegressor(in_features=16, hidden=64)
    features = np.concatenate([train_f, val_f])
    train_regressor(regressor, features, group_stats[groups, 0], group_stats[groups, 1], settings, progress=False)

    def cada_scores(features, scores):
        with torch.no_grad():
            u, gamma = regressor(torch.as_tensor(features, dtype=torch.float32))
        return normalise_map(scores, u.numpy(), gamma.numpy())

    cada = _pooled_auroc(cada_scores(data["normal"][0], s_norm), cada_scores(data["anomaly"][0], s_anom))
    assert cada > raw + 0.15
    assert abs(cada - oracle) < 0.01


def _look_alike_classes(means, seed: int = 0):
    """Three classes: ``a`` and ``b`` look alike (features 3 apart, noise 0.5 per dimension), ``c`` is far from
    both; their normal scores centre on ``means``. Returns train and val (features, scores, classes)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, 16))
    centres[1, 0], centres[2, :] = 3.0, 6.0

    def draw(n: int):
        cls = np.repeat(np.arange(3), n)
        return centres[cls] + rng.normal(size=(len(cls), 16)) * 0.5, np.asarray(means)[cls] + 0.2 * rng.normal(
            size=len(cls)), cls

    return draw(60), draw(20)


def test_k_chosen_by_held_out_scores_splits_look_alikes_that_score_differently():
    """The silhouette merges the two look-alike classes; choosing k by how well the groups predict the
    held-out normal scores keeps them apart when their score levels differ, with no label and no anomaly."""
    (train_f, train_s, train_cls), (val_f, val_s, _) = _look_alike_classes([1.0, 2.0, 1.5])
    by_silhouette = form_targets(train_f, train_s, val_f, val_s,
                                 CADAFitSettings(k_selection="silhouette", max_clusters=6))[2]
    assert by_silhouette.n_groups == 2  # a and b merged: one (u, γ) for two score levels
    groups, stats, report = form_targets(train_f, train_s, val_f, val_s, CADAFitSettings(max_clusters=6))
    assert report.n_groups == 3
    assert adjusted_rand_score(train_cls, groups[: len(train_cls)]) == 1.0
    assert report.score_error[3] < report.score_error[2] / 2 and report.score_error[3] < report.score_error[1] / 2
    assert sorted(stats[:, 0]) == pytest.approx([1.0, 1.5, 2.0], abs=0.15)  # one u per score level


def test_k_chosen_by_held_out_scores_keeps_one_group_when_scores_do_not_differ():
    (train_f, train_s, _), (val_f, val_s, _) = _look_alike_classes([1.0, 1.0, 1.0])
    report = form_targets(train_f, train_s, val_f, val_s, CADAFitSettings(max_clusters=6))[2]
    assert report.n_groups == 1 and report.score_error[1] == min(report.score_error.values())


def test_leave_one_out_score_error_counts_the_cost_of_small_groups():
    scores = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0])
    two = np.array([0, 0, 0, 1, 1, 1])
    # each score predicted by the mean of the other two of its group: errors 1.5², 0, 1.5² per group
    assert leave_one_out_score_error(scores, two) == pytest.approx(4 * 2.25 / 6)
    assert leave_one_out_score_error(scores, two, min_per_group=4) == np.inf
    assert leave_one_out_score_error(scores, two, n_groups=3) == np.inf  # a group without any held-out score
    assert leave_one_out_score_error(np.zeros(0), np.zeros(0, int)) == np.inf
    assert leave_one_out_score_error(scores, np.zeros(6, int)) > leave_one_out_score_error(scores, two)


def test_k_selection_falls_back_to_the_silhouette_without_enough_held_out_normals():
    (train_f, train_s, _), (val_f, val_s, val_cls) = _look_alike_classes([1.0, 2.0, 1.5])
    report = form_targets(train_f, train_s, np.zeros((0, 16)), np.zeros(0), CADAFitSettings(max_clusters=6))[2]
    assert report.n_groups == 2 and not report.score_error
    few = np.concatenate([np.flatnonzero(val_cls == c)[:3] for c in range(3)])  # 3 per class, 5 needed
    report = form_targets(train_f, train_s, val_f[few], val_s[few], CADAFitSettings(max_clusters=6))[2]
    assert report.n_groups == 2 and not report.score_error  # not k = 1 by default: the silhouette decides
    with pytest.raises(ValueError, match="k_selection"):
        form_targets(train_f, train_s, train_f, train_s, CADAFitSettings(k_selection="elbow"))
    with pytest.raises(ValueError, match="n_clusters=500"):
        form_targets(train_f, train_s, val_f, val_s, CADAFitSettings(n_clusters=500))
    fixed = form_targets(train_f, train_s, val_f, val_s, CADAFitSettings(n_clusters=3))[2]
    assert fixed.n_groups == 3 and not fixed.score_error and not fixed.silhouette


def test_single_group_cannot_fix_the_pooled_ranking():
    """The control: one global (u, γ) is a monotone map of all scores and changes no AUROC."""
    data = _synthetic_classes()
    train_f, train_s, _ = data["train"]
    val_f, val_s, _ = data["val"]
    _, group_stats, report = form_targets(train_f, train_s, val_f, val_s, CADAFitSettings(target_method="single"))
    assert report.n_groups == 1
    u, gamma = group_stats[0]
    (_, s_norm, _), (_, s_anom, _) = data["normal"], data["anomaly"]
    assert _pooled_auroc(normalise_map(s_norm, u, gamma), normalise_map(s_anom, u, gamma)) == pytest.approx(
        _pooled_auroc(s_norm, s_anom))


def test_labels_method_uses_true_classes_and_held_out_scores():
    data = _synthetic_classes()
    train_f, train_s, train_cls = data["train"]
    val_f, val_s, val_cls = data["val"]
    names = np.array(["a", "b", "c"])
    _, stats, report = form_targets(train_f, train_s, val_f, val_s, CADAFitSettings(target_method="labels"),
                                    list(names[train_cls]), list(names[val_cls]))
    expected = class_statistics(val_s, names[val_cls])
    for index, name in enumerate(names):
        assert stats[index] == pytest.approx(expected[name])
    assert report.composition["0"] == {"a": 110}


# --------------------------------------------------------------------------------------- wrapper contract
class MapOnly(nn.Module):
    """A base model that exposes only ``predict`` (like a black-box UniAD) around an RD."""

    def __init__(self, **config) -> None:
        super().__init__()
        self.inner = build_reverse_distillation(**config)

    def predict(self, images: torch.Tensor) -> Predictions:
        return self.inner.predict(images)


class NoEncoder(nn.Module):
    """A base without a FeatureExtractor: the regressor must bring its own encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def predict(self, images: torch.Tensor) -> Predictions:
        maps = images.mean(dim=1) * self.scale
        return Predictions(anomaly_map=maps, image_score=maps.flatten(1).max(dim=1).values)


register_model("test_cada_map_only")(lambda **config: MapOnly(**config))
register_model("test_cada_no_encoder")(lambda: NoEncoder())


def _images(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(n))


def test_wrapper_speaks_the_contract_and_keeps_raw_scores():
    model = build_model("cada", base_name="rd", base_config=RD_TINY)
    assert isinstance(model, CADAModel) and model.staged and model.feature_source == "base"
    images = _images(3, 40)
    out = model.predict(images)
    assert out.anomaly_map.shape == (3, 40, 40) and out.image_score.shape == (3,)
    assert set(out.extras) >= {"cada_u", "cada_gamma", "raw_image_score"}
    assert (out.extras["cada_gamma"] > out.extras["cada_u"]).all()
    base = model.base.predict(images)
    assert torch.allclose(out.extras["raw_image_score"], base.image_score, atol=1e-4)
    expected = normalise_map(base.anomaly_map, out.extras["cada_u"], out.extras["cada_gamma"])
    assert torch.allclose(out.anomaly_map, expected, atol=1e-4)
    # the regressor shares the base's encoder: no second copy of its weights in the state dict
    assert not any(k.startswith("regressor.extractor") for k in model.state_dict())


def test_predict_only_base_gives_the_same_numbers_as_the_staged_route():
    staged = build_model("cada", base_name="rd", base_config=RD_TINY)
    black_box = build_model("cada", base_name="test_cada_map_only", base_config=RD_TINY)
    assert not black_box.staged and black_box.feature_source == "base"
    black_box.base.inner.load_state_dict(staged.base.state_dict())
    black_box.regressor.load_state_dict(staged.regressor.state_dict())
    images = _images(2)
    a, b = staged.predict(images), black_box.predict(images)
    assert torch.allclose(a.image_score, b.image_score, atol=1e-4)
    assert torch.allclose(a.anomaly_map, b.anomaly_map, atol=1e-4)


def test_base_without_encoder_uses_the_regressors_own(tmp_path):
    config = {"base_name": "test_cada_no_encoder", "base_config": {},
              "regressor": {"backbone": "tiny_cnn", "weights": "random", "input_size": 32}}
    model = build_model("cada", **config)
    assert model.feature_source == "own" and model.regressor.extractor is not None
    assert model.predict(_images(2)).anomaly_map.shape == (2, 32, 32)
    with pytest.raises(ValueError, match="FeatureExtractor"):
        build_model("cada", base_name="test_cada_no_encoder", base_config={}, regressor={"feature_source": "base"})
    save_bundle(tmp_path / "own", ModelBundle("cada", config, model))
    loaded = load_bundle(tmp_path / "own")
    assert torch.allclose(loaded.model.predict(_images(2)).image_score, model.predict(_images(2)).image_score)


def _two_looks(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Half dark striped images, half bright checkered ones: two classes with different normal statistics."""
    rng = np.random.default_rng(seed)
    dark = np.full((n, 32, 32, 3), 40, np.uint8)
    dark[:, ::4] = 90
    bright = np.full((n, 32, 32, 3), 200, np.uint8)
    bright[:, ::8, ::8] = 255
    images = np.concatenate([dark, bright]).astype(np.int16) + rng.integers(-10, 10, (2 * n, 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), ["dark"] * n + ["bright"] * n


def test_fit_without_labels_finds_the_classes_and_round_trips(tmp_path):
    config = {"base_name": "rd", "base_config": RD_TINY, "regressor": {"hidden": 16}}
    model = build_model("cada", **config)
    train, train_cats = _two_looks(12, 0)
    val, val_cats = _two_looks(6, 1)
    settings = CADAFitSettings(max_clusters=4, min_cluster_size=3, epochs=40, seed=0)
    before = {k: v.clone() for k, v in model.base.state_dict().items()}
    report = fit_cada(model, train, val, settings, train_cats, val_cats, batch_size=8, progress=False)
    assert report.n_groups == 2
    assert all(len(categories) == 1 for categories in report.composition.values())  # pure clusters
    assert not report.fallback_groups  # 6 held-out normals per group
    for key, value in model.base.state_dict().items():
        assert torch.equal(value, before[key]), f"fitting CADA changed the base model ({key})"
    save_bundle(tmp_path / "cada", ModelBundle("cada", config, model, 1.0, {"tags": {"setting": "class_agnostic"}}))
    loaded = load_bundle(tmp_path / "cada")
    images = _images(2)
    assert torch.allclose(loaded.model.predict(images).anomaly_map, model.predict(images).anomaly_map, atol=1e-6)
    assert loaded.info["tags"]["setting"] == "class_agnostic"


def test_targets_use_held_out_scores_fall_back_when_few_and_take_the_gamma_quantile():
    """u, γ from a group's validation scores; a group with too few of them falls back to train + val;
    ``gamma_quantile`` < 1 replaces the maximum by that quantile."""
    train_scores = np.array([0.0, 0.0, 0.0, 10.0, 10.0, 10.0])
    train_cats = ["a"] * 3 + ["b"] * 3
    val_scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 20.0])
    val_cats = ["a"] * 5 + ["b"]
    features = np.zeros((6, 2)), np.zeros((6, 2))
    settings = CADAFitSettings(target_method="labels", min_scores_per_group=3)
    _, stats, report = form_targets(features[0], train_scores, features[1], val_scores, settings, train_cats, val_cats)
    assert tuple(stats[0]) == (3.0, 5.0)  # a: held-out scores only (mean 3, max 5), not the biased train ones
    assert tuple(stats[1]) == (12.5, 20.0) and report.fallback_groups == ["1"]  # b: 1 held-out score < 3
    settings = CADAFitSettings(target_method="labels", min_scores_per_group=3, gamma_quantile=0.5)
    _, stats, _ = form_targets(features[0], train_scores, features[1], val_scores, settings, train_cats, val_cats)
    assert tuple(stats[0]) == (3.0, 3.0)


def test_pool_features_are_channel_means_and_population_stds_in_any_layout():
    torch.manual_seed(0)
    maps = [torch.randn(2, 3, 8, 8) * 5 + 2, torch.randn(2, 4, 4, 4).to(memory_format=torch.channels_last)]
    expected = torch.cat([p for f in maps for p in (f.flatten(2).mean(2), f.flatten(2).std(2, unbiased=False))], 1)
    assert torch.allclose(pool_features(maps), expected, atol=1e-5)
    assert torch.allclose(pool_features(maps, "mean"), torch.cat([f.flatten(2).mean(2) for f in maps], 1), atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        pool_features(maps, "max")
