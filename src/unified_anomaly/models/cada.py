"""CADA: class-agnostic distribution alignment (Guo et al., arXiv 2404.00724), a plug-in for any base model.

One model trained on many classes gives each class's normal images scores on a different scale, so a single
threshold (pooled, "absolute-unified" evaluation) fails even when every class is well separated on its own.
CADA learns a regressor that looks at one image, normal or anomalous, and predicts two statistics of the
normal scores of that image's implicit class, their mean ``u`` and maximum ``γ``; the base model's anomaly
map is then normalised as ``(s − u) / (γ − u)``, which puts every class on one scale.

No official code exists: the regressor architecture, how its targets are formed without class labels and
where the normalisation sits are this project's reconstructions, argued in ``docs/methods/cada.md``.

Public pieces:
- :func:`normalise_map` / :func:`denormalise` — the pure normalisation (torch or numpy), used by the evaluation.
- :func:`class_statistics` / :func:`apply_class_statistics` — the class-aware oracle (per-class u, γ from labels).
- :class:`StatisticsRegressor`, :class:`CADAModel` (registered as ``"cada"``) and :func:`fit_cada`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from unified_anomaly.models.backbones import FeatureExtractor, build_feature_extractor
from unified_anomaly.models.contract import Predictions, to_model_input
from unified_anomaly.models.registry import build_model, register_model

logger = logging.getLogger(__name__)

FEATURE_SOURCES = ("auto", "base", "own")
POOLINGS = ("mean", "mean_std")
HEADS = ("prototypes", "mlp")
TARGET_METHODS = ("clusters", "labels", "single")
SCORE_SOURCES = ("val", "train", "train+val")
K_SELECTIONS = ("held_out_scores", "silhouette")
# Per-image statistics a CADA prediction carries in ``Predictions.extras`` (kept by the evaluation).
PER_IMAGE_EXTRAS = ("cada_u", "cada_gamma")


# ------------------------------------------------------------------------------------------- normalisation
def _per_image(value: Any, like: Any) -> Any:
    """Reshapes per-image statistics (shape B, or a scalar) to broadcast against ``like`` (B×...)."""
    if isinstance(like, torch.Tensor):
        value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    else:  # float32 maps stay float32 (no float64 copy of a test set's maps)
        value = np.asarray(value, dtype=like.dtype if np.issubdtype(np.asarray(like).dtype, np.floating) else np.float64)
    if value.ndim == 0:
        return value
    return value.reshape(value.shape + (1,) * (like.ndim - value.ndim))


def normalise_map(maps: Any, u: Any, gamma: Any, eps: float = 1e-8) -> Any:
    """CADA normalisation ``(s − u) / (γ − u)`` of maps ``B×H×W`` or scores ``B`` (torch or numpy).

    ``u`` and ``gamma`` are per image (shape ``B``) or scalars; ``γ − u`` is clamped at ``eps``. After it,
    a normal image of a well-predicted class has scores mostly below 1 and a mean near 0."""
    u_b, g_b = _per_image(u, maps), _per_image(gamma, maps)
    gap = g_b - u_b
    gap = gap.clamp_min(eps) if isinstance(gap, torch.Tensor) else np.maximum(gap, eps)
    return (maps - u_b) / gap


def denormalise(normalised: Any, u: Any, gamma: Any, eps: float = 1e-8) -> Any:
    """Inverse of :func:`normalise_map` (exact, same clamp)."""
    u_b, g_b = _per_image(u, normalised), _per_image(gamma, normalised)
    gap = g_b - u_b
    gap = gap.clamp_min(eps) if isinstance(gap, torch.Tensor) else np.maximum(gap, eps)
    return normalised * gap + u_b


def class_statistics(
    scores: Sequence[float] | np.ndarray, groups: Sequence[Any] | np.ndarray, gamma_quantile: float = 1.0
) -> dict[str, tuple[float, float]]:
    """Per group (class label or cluster id): ``(u, γ)`` = mean and maximum (or ``gamma_quantile``) of the
    given normal image scores. The class-aware oracle calls it with true class labels."""
    scores = np.asarray(scores, dtype=np.float64)
    groups = np.asarray(groups).astype(str)
    if scores.shape != groups.shape:
        raise ValueError(f"scores {scores.shape} and groups {groups.shape} differ in shape")
    stats: dict[str, tuple[float, float]] = {}
    for group in np.unique(groups):
        values = scores[groups == group]
        gamma = float(values.max() if gamma_quantile >= 1.0 else np.quantile(values, gamma_quantile))
        stats[str(group)] = (float(values.mean()), gamma)
    return stats


def apply_class_statistics(
    maps: Any, scores: Any, groups: Sequence[Any] | np.ndarray, stats: dict[str, tuple[float, float]]
) -> tuple[Any, Any]:
    """Class-aware (oracle) normalisation: each image's map and score by its own class's ``(u, γ)``."""
    groups = np.asarray(groups).astype(str)
    missing = sorted(set(groups) - set(stats))
    if missing:
        raise KeyError(f"no normal statistics for classes {missing}; compute them on those classes' normals")
    u = np.array([stats[g][0] for g in groups])
    gamma = np.array([stats[g][1] for g in groups])
    out_maps = None if maps is None else normalise_map(maps, u, gamma)
    out_scores = None if scores is None else normalise_map(scores, u, gamma)
    return out_maps, out_scores


# ----------------------------------------------------------------------------------------------- regressor
def pool_features(features: Sequence[torch.Tensor], pooling: str = "mean_std") -> torch.Tensor:
    """Global descriptor of an image: per scale, channel means (and standard deviations), concatenated."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    parts = []
    for f in features:
        f32 = f.float()  # mean reductions over (H, W), two-pass std: ~6× faster than flatten + std on the
        mean = f32.mean(dim=(2, 3), keepdim=True)  # channels-last maps the backbones return
        parts.append(mean.flatten(1))
        if pooling == "mean_std":
            parts.append((f32 - mean).square_().mean(dim=(2, 3)).sqrt_())
    return torch.cat(parts, dim=1)


class PrototypeHead(nn.Module):
    """MLP → softmax over ``prototypes`` learned output values: a regressor whose output is a convex
    combination of a few learned ``(u, log(γ − u))`` pairs, so it stays flat inside a class and moves only
    between classes (targets are constant per class; a plain MLP output wanders with the features)."""

    def __init__(self, in_features: int, hidden: int, prototypes: int, dropout: float) -> None:
        super().__init__()
        self.assign = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, prototypes)
        )
        self.values = nn.Parameter(torch.randn(prototypes, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.assign(x), dim=1) @ self.values


class StatisticsRegressor(nn.Module):
    """Pooled frozen-encoder features → head → ``(u, log(γ − u))``, so ``γ > u`` always.

    ``head``: ``prototypes`` (:class:`PrototypeHead`, default) or ``mlp`` (a plain two-output MLP). Input and targets are standardised with buffers fitted on the training normals (saved in the bundle).
    ``extractor`` is its own frozen encoder, or None when the features are taken from the base model's."""

    def __init__(
        self,
        in_features: int,
        hidden: int = 128,
        dropout: float = 0.1,
        pooling: str = "mean_std",
        extractor: FeatureExtractor | None = None,
        input_size: int = 224,
        head: str = "prototypes",
        prototypes: int = 16,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.input_size = int(input_size)
        self.extractor = extractor
        if extractor is not None:
            for parameter in extractor.parameters():
                parameter.requires_grad_(False)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head: nn.Module = (
            PrototypeHead(in_features, hidden, prototypes, dropout) if head == "prototypes"
            else nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                               nn.Linear(hidden, 2))
        )
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))
        self.register_buffer("target_mean", torch.zeros(2))  # (u, log gap)
        self.register_buffer("target_std", torch.ones(2))

    def train(self, mode: bool = True) -> StatisticsRegressor:
        super().train(mode)
        if self.extractor is not None:
            self.extractor.eval()
        return self

    @torch.no_grad()
    def own_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of images in [0, 1] from the regressor's own encoder."""
        if self.extractor is None:
            raise RuntimeError("this regressor reads the base model's features; it has no encoder of its own")
        x = images
        if tuple(x.shape[-2:]) != (self.input_size,) * 2:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return pool_features(self.extractor(self.extractor.normalise(x)), self.pooling)

    def standardised_output(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head((pooled - self.feature_mean) / self.feature_std)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, γ)`` per image from pooled features ``B×D``."""
        out = self.standardised_output(pooled) * self.target_std + self.target_mean
        u = out[:, 0]
        return u, u + torch.exp(out[:, 1])


def find_feature_extractor(model: nn.Module) -> FeatureExtractor | None:
    """The first :class:`FeatureExtractor` inside a model (its frozen encoder), or None."""
    for module in model.modules():
        if isinstance(module, FeatureExtractor):
            return module
    return None


# ----------------------------------------------------------------------------------------------- wrapper
class CADAModel(nn.Module):
    """A base model whose anomaly maps are CADA-normalised per image; speaks the prediction contract.

    When the base exposes ``raw_anomaly_map(images)`` and ``finalise(maps, size)`` (as RD does), the map is
    normalised before smoothing and pooling, as in the first author's code. Otherwise the final map and the
    image score are normalised: the normalisation is a per-image ``a·s + b`` with ``a > 0``, so it commutes
    with max, top-k mean, average pooling, bilinear resizing and smoothing by a kernel that sums to one, and
    both routes give the same numbers (up to the borders of zero-padded filters)."""

    def __init__(self, base: nn.Module, regressor: StatisticsRegressor, feature_source: str = "base") -> None:
        super().__init__()
        if feature_source not in ("base", "own"):
            raise ValueError(f"feature_source must be 'base' or 'own' once built, got {feature_source!r}")
        self.base = base
        self.regressor = regressor
        self.feature_source = feature_source
        # Kept in a tuple so that nn.Module does not register it twice (the base already owns it).
        self._base_extractor_ref = (find_feature_extractor(base) if feature_source == "base" else None,)
        if feature_source == "base" and self._base_extractor is None:
            raise ValueError("feature_source 'base' needs a FeatureExtractor inside the base model; use 'own'")

    @property
    def _base_extractor(self) -> FeatureExtractor | None:
        return self._base_extractor_ref[0]

    @property
    def staged(self) -> bool:
        """True when the base exposes its map before smoothing and pooling."""
        return hasattr(self.base, "raw_anomaly_map") and hasattr(self.base, "finalise")

    def train(self, mode: bool = True) -> CADAModel:
        """The base is frozen: only the regressor changes mode."""
        super().train(mode)
        self.base.eval()
        return self

    @torch.no_grad()
    def _base_pass(self, images: torch.Tensor) -> tuple[torch.Tensor | None, Predictions | None, torch.Tensor]:
        """Runs the base once: (raw map or None, final predictions or None, pooled regressor features)."""
        captured: list[Any] = []
        handle = None
        if self._base_extractor is not None:
            handle = self._base_extractor.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            if self.staged:
                raw, final = self.base.raw_anomaly_map(images), None
            else:
                raw, final = None, self.base.predict(images)
        finally:
            if handle is not None:
                handle.remove()
        if self._base_extractor is not None:
            if not captured:
                raise RuntimeError("the base model did not call its feature extractor; use feature_source 'own'")
            pooled = torch.cat([pool_features(f, self.regressor.pooling) for f in captured])
            if len(pooled) != len(images):
                raise RuntimeError(
                    f"the base's extractor saw {len(pooled)} images for a batch of {len(images)}; "
                    "use feature_source 'own'"
                )
        else:
            pooled = self.regressor.own_features(images)
        return raw, final, pooled

    @torch.no_grad()
    def raw_scores_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The base model's own image scores and the regressor's pooled features (to fit the regressor)."""
        self.base.eval()
        raw, final, pooled = self._base_pass(images)
        if final is None:
            final = self.base.finalise(raw, images.shape[-2:])
        return final.image_score, pooled

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Predictions:
        self.eval()
        raw, final, pooled = self._base_pass(images)
        u, gamma = self.regressor(pooled)
        if raw is not None:
            predictions = self.base.finalise(normalise_map(raw, u, gamma), images.shape[-2:])
        else:
            assert final is not None
            predictions = Predictions(
                anomaly_map=normalise_map(final.anomaly_map, u, gamma),
                image_score=normalise_map(final.image_score, u, gamma),
                class_logits=final.class_logits,
                image_class=final.image_class,
                extras=dict(final.extras),
            )
        predictions.extras["cada_u"] = u
        predictions.extras["cada_gamma"] = gamma
        predictions.extras["raw_image_score"] = denormalise(predictions.image_score, u, gamma)
        return predictions


def _regressor_in_features(extractor: FeatureExtractor, pooling: str) -> int:
    return sum(extractor.channels) * (2 if pooling == "mean_std" else 1)


@register_model("cada")
def build_cada(base_name: str, base_config: dict[str, Any], regressor: dict[str, Any] | None = None) -> CADAModel:
    """Registry factory: rebuilds the base (``build_model(base_name, **base_config)``) and the regressor.

    ``regressor`` keys: feature_source (auto|base|own; auto = the base's encoder when it has one),
    pooling, hidden, dropout, and for an own encoder backbone, weights, weights_path, out_indices, input_size."""
    config = dict(regressor or {})
    base = build_model(base_name, **base_config)
    source = config.get("feature_source", "auto")
    if source not in FEATURE_SOURCES:
        raise ValueError(f"feature_source must be one of {FEATURE_SOURCES}, got {source!r}")
    if source == "auto":
        source = "base" if find_feature_extractor(base) is not None else "own"
    pooling = config.get("pooling", "mean_std")
    own: FeatureExtractor | None = None
    if source == "own":
        own = build_feature_extractor(
            config.get("backbone", "tf_efficientnet_lite0"),
            out_indices=config.get("out_indices"),
            weights=config.get("weights", "default"),
            weights_path=config.get("weights_path"),
        )
        extractor = own
    else:
        extractor = find_feature_extractor(base)
        if extractor is None:
            raise ValueError(f"base model {base_name!r} has no FeatureExtractor; set regressor.feature_source: own")
    head = StatisticsRegressor(
        _regressor_in_features(extractor, pooling),
        hidden=int(config.get("hidden", 128)),
        dropout=float(config.get("dropout", 0.1)),
        pooling=pooling,
        extractor=own,
        input_size=int(config.get("input_size", 224)),
        head=config.get("head", "prototypes"),
        prototypes=int(config.get("prototypes", 16)),
    )
    return CADAModel(base, head, feature_source=source)


# ----------------------------------------------------------------------------------------------- fitting
@dataclass
class CADAFitSettings:
    """How targets are formed and the regressor trained (see ``docs/methods/cada.md``)."""

    target_method: str = "clusters"  # clusters (no labels) | labels (ablation: true classes) | single
    n_clusters: int | str = "auto"  # an int, or "auto": chosen in [1, max_clusters] by ``k_selection``
    k_selection: str = "held_out_scores"  # held_out_scores (k-means groups that best predict normal scores) | silhouette
    max_clusters: int = 8
    min_cluster_size: int = 5
    pca_components: int = 32
    score_source: str = "val"  # which normal images give u and γ: val | train | train+val
    min_scores_per_group: int = 5  # fewer held-out scores in a group: that group falls back to train+val
    gamma_quantile: float = 1.0  # 1.0 = maximum, as in the paper
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    loss_beta: float = 0.1  # smooth-L1 transition point
    seed: int = 0


@dataclass
class CADAFitReport:
    """What fitting decided: the groups, their statistics, and how they line up with the true classes."""

    n_groups: int
    group_stats: dict[str, tuple[float, float]]
    group_sizes: dict[str, int]
    composition: dict[str, dict[str, int]] = field(default_factory=dict)  # group → category → count
    silhouette: dict[int, float] = field(default_factory=dict)
    score_error: dict[int, float] = field(default_factory=dict)  # k → leave-one-out error of the normal scores
    fallback_groups: list[str] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    regressor_train_mae: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_groups": self.n_groups,
            "group_stats": {k: {"u": v[0], "gamma": v[1]} for k, v in self.group_stats.items()},
            "group_sizes": self.group_sizes,
            "composition": self.composition,
            "silhouette": {str(k): v for k, v in self.silhouette.items()},
            "score_error": {str(k): v for k, v in self.score_error.items()},
            "fallback_groups": self.fallback_groups,
            "final_loss": self.history[-1] if self.history else None,
            "regressor_train_mae": self.regressor_train_mae,
        }


@torch.no_grad()
def collect_scores_and_features(
    model: CADAModel, images: np.ndarray, batch_size: int = 16, device: torch.device | str = "cpu",
    progress: bool = True, desc: str = "CADA: base scores",
) -> tuple[np.ndarray, np.ndarray]:
    """Base image scores and pooled regressor features of uint8 ``N×S×S×3`` images."""
    device = torch.device(device)
    model.to(device).eval()
    scores, pooled = [], []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress):
        s, f = model.raw_scores_and_features(to_model_input(images[start : start + batch_size], device))
        scores.append(s.float().cpu().numpy())
        pooled.append(f.float().cpu().numpy())
    if not scores:
        return np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(scores), np.concatenate(pooled)


def leave_one_out_score_error(
    scores: np.ndarray, groups: np.ndarray, min_per_group: int = 2, n_groups: int | None = None
) -> float:
    """Mean squared error of predicting each normal image's score by the mean of the *other* scores of its
    group: how well a grouping explains the score levels, with the cost of small groups included (an
    over-split group's mean is noisier). ``inf`` when one of the ``n_groups`` groups (default: those present)
    holds fewer than ``min_per_group`` scores."""
    scores, groups = np.asarray(scores, dtype=float), np.asarray(groups, dtype=int)
    counts = np.bincount(groups, minlength=n_groups or 0)
    if not len(scores) or counts.min() < max(2, min_per_group):
        return float("inf")
    total = 0.0
    for g, n in enumerate(counts):
        values = scores[groups == g]
        total += (n / (n - 1)) ** 2 * float(((values - values.mean()) ** 2).sum())
    return total / len(scores)


@dataclass
class Clustering:
    """k-means on standardised, PCA-reduced global features, for every k tried."""

    reducer: Any
    models: dict[int, Any]  # k → fitted KMeans (k = 1 needs none)
    reduced: np.ndarray

    def labels(self, k: int) -> np.ndarray:
        return np.zeros(len(self.reduced), int) if k == 1 else self.models[k].labels_.astype(int)

    def assign(self, k: int, features: np.ndarray) -> np.ndarray:
        if k == 1 or not len(features):
            return np.zeros(len(features), int)
        return self.models[k].predict(self.reducer.transform(features)).astype(int)


def fit_clusterings(features: np.ndarray, ks: Sequence[int], pca_components: int, seed: int) -> Clustering:
    """One k-means per k in ``ks`` (k ≤ number of images − 1) on the same reduced features."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = len(features)
    components = max(1, min(pca_components, n - 1, features.shape[1]))
    reducer = make_pipeline(StandardScaler(), PCA(n_components=components, random_state=seed))
    reduced = reducer.fit_transform(features)
    models = {k: KMeans(n_clusters=k, n_init=10, random_state=seed).fit(reduced) for k in ks if 1 < k < n}
    return Clustering(reducer, models, reduced)


def cluster_features(
    features: np.ndarray, n_clusters: int | str, max_clusters: int, min_cluster_size: int, pca_components: int,
    seed: int, k_selection: str = "silhouette", held_out_features: np.ndarray | None = None,
    held_out_scores: np.ndarray | None = None, min_held_out_per_group: int = 2,
) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray, dict[int, float], dict[int, float]]:
    """k-means groups of normal images standing in for classes.

    ``n_clusters="auto"`` tries k in [2, max_clusters] (and k = 1 for ``held_out_scores``), keeping the k
    whose clusters all hold ``min_cluster_size`` images, and picks by ``k_selection``:

    - ``silhouette``: the best-separated clusters in feature space;
    - ``held_out_scores``: the clusters that best predict the base's scores of the held-out normals
      (:func:`leave_one_out_score_error`, every cluster needing ``min_held_out_per_group`` of them; ties go to
      the smaller k). CADA's targets are score statistics, so classes that look alike but score differently
      must not be merged, and classes that score alike need not be split. Needs no label and no anomaly.
      When too few held-out normals leave no k ≥ 2 to compare, the silhouette decides (with a warning).

    Returns (assign function for new features, labels of ``features``, silhouette per k, score error per k)."""
    from sklearn.metrics import silhouette_score

    if k_selection not in K_SELECTIONS:
        raise ValueError(f"k_selection must be one of {K_SELECTIONS}, got {k_selection!r}")
    n = len(features)
    if n_clusters != "auto":
        k = int(n_clusters)
        if not 1 <= k < max(n, 2):
            raise ValueError(f"targets.n_clusters={k} needs between 1 and {max(n - 1, 1)} clusters for {n} normal "
                             "training images; lower it or use n_clusters: auto")
        clustering = fit_clusterings(features, [k], pca_components, seed)
        return (lambda x: clustering.assign(k, x)), clustering.labels(k), {}, {}

    ks = list(range(2, min(max_clusters, n - 1) + 1))
    clustering = fit_clusterings(features, ks, pca_components, seed)
    silhouettes: dict[int, float] = {}
    candidates = []  # k with clusters of at least min_cluster_size images
    for k in ks:
        labels = clustering.labels(k)
        silhouettes[k] = float(silhouette_score(clustering.reduced, labels, random_state=seed))
        if np.bincount(labels, minlength=k).min() >= min_cluster_size:
            candidates.append(k)
    errors: dict[int, float] = {}
    if k_selection == "held_out_scores":
        if held_out_features is None or held_out_scores is None:
            raise ValueError("k_selection 'held_out_scores' needs the held-out normals' features and scores")
        for k in [1, *candidates]:
            groups = clustering.assign(k, held_out_features)
            errors[k] = leave_one_out_score_error(held_out_scores, groups, min_held_out_per_group, n_groups=k)
        if not any(np.isfinite(errors[k]) for k in candidates):
            logger.warning(
                "CADA: %d held-out normals leave no k in [2, %d] with %d of them in every cluster; k is chosen by "
                "the silhouette instead (add validation normals or lower targets.min_scores_per_group)",
                len(held_out_scores), max_clusters, min_held_out_per_group)
            k_selection, errors = "silhouette", {}
    if k_selection == "held_out_scores":
        best_k = min(errors, key=lambda k: (errors[k], k))
    else:
        best_k = max(candidates, key=lambda k: silhouettes[k]) if candidates else 1
    if best_k == 1:
        logger.warning("CADA: one group (%s)", "no k-means grouping predicts the held-out normal scores better"
                       if k_selection == "held_out_scores" else
                       f"no k in [2, {max_clusters}] gives clusters of {min_cluster_size} images")
    else:
        logger.info("CADA: k-means picked k=%d by %s (silhouette %.3f%s)", best_k, k_selection, silhouettes[best_k],
                    f", held-out score error {errors[best_k]:.4g}" if errors else "")
    return (lambda x: clustering.assign(best_k, x)), clustering.labels(best_k), silhouettes, errors


def form_targets(
    train_features: np.ndarray,
    train_scores: np.ndarray,
    val_features: np.ndarray,
    val_scores: np.ndarray,
    settings: CADAFitSettings,
    train_categories: Sequence[str] | None = None,
    val_categories: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, CADAFitReport]:
    """Groups of normal images and each group's ``(u, γ)``; returns per-image group ids (train then val),
    the groups' statistics as an array ``G×2`` indexed by group id, and the report.

    Class labels are read only by the ``labels`` method (the ablation) and for the report's composition."""
    method = settings.target_method
    if method not in TARGET_METHODS:
        raise ValueError(f"target_method must be one of {TARGET_METHODS}, got {method!r}")
    if settings.score_source not in SCORE_SOURCES:
        raise ValueError(f"score_source must be one of {SCORE_SOURCES}, got {settings.score_source!r}")
    silhouettes: dict[int, float] = {}
    score_errors: dict[int, float] = {}
    if method == "clusters":
        # k is judged on the scores that give u and γ
        if settings.score_source == "val":
            selection_features, selection_scores, min_per_group = val_features, val_scores, settings.min_scores_per_group
        elif settings.score_source == "train":
            selection_features, selection_scores, min_per_group = train_features, train_scores, 2
        else:
            selection_features = np.concatenate([train_features, val_features])
            selection_scores, min_per_group = np.concatenate([train_scores, val_scores]), 2
        assign, train_groups, silhouettes, score_errors = cluster_features(
            train_features, settings.n_clusters, settings.max_clusters, settings.min_cluster_size,
            settings.pca_components, settings.seed, settings.k_selection, selection_features, selection_scores,
            min_per_group,
        )
        val_groups = assign(val_features)
    elif method == "labels":
        if train_categories is None or (len(val_features) and val_categories is None):
            raise ValueError("target_method 'labels' needs the categories of the images")
        names = sorted(set(train_categories))
        index = {c: i for i, c in enumerate(names)}
        train_groups = np.array([index[c] for c in train_categories], dtype=int)
        val_groups = np.array([index.get(c, -1) for c in (val_categories or [])], dtype=int)
    else:
        train_groups = np.zeros(len(train_features), dtype=int)
        val_groups = np.zeros(len(val_features), dtype=int)

    n_groups = int(train_groups.max()) + 1 if len(train_groups) else 1
    stats = np.zeros((n_groups, 2))
    fallback: list[str] = []
    for g in range(n_groups):
        in_train, in_val = train_scores[train_groups == g], val_scores[val_groups == g]
        if settings.score_source == "train":
            values = in_train
        elif settings.score_source == "val" and len(in_val) >= settings.min_scores_per_group:
            values = in_val
        else:
            values = np.concatenate([in_train, in_val])
            if settings.score_source == "val":
                fallback.append(str(g))
        gamma = values.max() if settings.gamma_quantile >= 1.0 else np.quantile(values, settings.gamma_quantile)
        stats[g] = values.mean(), gamma
    if fallback:
        logger.warning("CADA: groups %s have fewer than %d held-out normals; their u, γ use train+val scores",
                       fallback, settings.min_scores_per_group)

    groups = np.concatenate([train_groups, val_groups])
    composition: dict[str, dict[str, int]] = {}
    if train_categories is not None:
        categories = list(train_categories) + list(val_categories or [])
        for g, c in zip(groups, categories, strict=True):
            composition.setdefault(str(g), {}).setdefault(str(c), 0)
            composition[str(g)][str(c)] += 1
    report = CADAFitReport(
        n_groups=n_groups,
        group_stats={str(g): (float(stats[g, 0]), float(stats[g, 1])) for g in range(n_groups)},
        group_sizes={str(g): int((groups == g).sum()) for g in range(n_groups)},
        composition=composition,
        silhouette=silhouettes,
        score_error=score_errors,
        fallback_groups=fallback,
    )
    return groups, stats, report


def _regression_loss(
    regressor: StatisticsRegressor, x: torch.Tensor, y: torch.Tensor, gap: torch.Tensor, beta: float
) -> torch.Tensor:
    """Errors in the units that matter after normalisation: ``u`` in units of its class's ``γ − u`` (an
    error of ``δ`` shifts every normalised score by ``δ``), ``log(γ − u)`` as is (a relative scale error)."""
    out = regressor.standardised_output(x) * regressor.target_std + regressor.target_mean
    u_error = (out[:, 0] - y[:, 0]) / gap
    gap_error = out[:, 1] - y[:, 1]
    zero = torch.zeros_like(u_error)
    return F.smooth_l1_loss(u_error, zero, beta=beta) + F.smooth_l1_loss(gap_error, zero, beta=beta)


def train_regressor(
    regressor: StatisticsRegressor,
    features: np.ndarray,
    u_targets: np.ndarray,
    gamma_targets: np.ndarray,
    settings: CADAFitSettings,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[float]:
    """Fits input/target standardisation and the MLP (smooth-L1 on ``(û − u)/(γ − u)`` and on
    ``log(γ̂ − û) − log(γ − u)``, see :func:`_regression_loss`)."""
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    gap = np.maximum(np.asarray(gamma_targets) - np.asarray(u_targets), 1e-6)
    y = torch.as_tensor(np.stack([u_targets, np.log(gap)], axis=1), dtype=torch.float32, device=device)
    regressor.to(device)
    regressor.feature_mean.copy_(x.mean(dim=0))
    regressor.feature_std.copy_(x.std(dim=0, unbiased=False).clamp_min(1e-6))
    regressor.target_mean.copy_(y.mean(dim=0))
    regressor.target_std.copy_(y.std(dim=0, unbiased=False).clamp_min(1e-3))
    gap_t = torch.exp(y[:, 1])
    optimiser = torch.optim.Adam(regressor.head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    regressor.train()
    history: list[float] = []
    n = len(x)
    for _epoch in tqdm(range(settings.epochs), desc="CADA regressor", disable=not progress):
        order = torch.as_tensor(rng.permutation(n), device=device)
        total = 0.0
        for start in range(0, n, settings.batch_size):
            index = order[start : start + settings.batch_size]
            loss = _regression_loss(regressor, x[index], y[index], gap_t[index], settings.loss_beta)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        history.append(total / n)
    regressor.eval()
    return history


def fit_cada(
    model: CADAModel,
    train_images: np.ndarray,
    val_images: np.ndarray | None = None,
    settings: CADAFitSettings | None = None,
    train_categories: Sequence[str] | None = None,
    val_categories: Sequence[str] | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> CADAFitReport:
    """Fits the regressor of ``model`` (its base already trained and frozen) on normal images, in place.

    1. The base scores every normal image and the regressor's pooled features are collected in the same pass.
    2. :func:`form_targets` groups the images (k-means by default: no class label) and takes each group's
       mean and maximum score as ``(u, γ)``.
    3. The regressor learns to predict its group's ``(u, γ)`` from every single normal image (train + val)."""
    settings = settings or CADAFitSettings()
    train_scores, train_features = collect_scores_and_features(
        model, train_images, batch_size, device, progress, "CADA: train normals")
    if val_images is not None and len(val_images):
        val_scores, val_features = collect_scores_and_features(
            model, val_images, batch_size, device, progress, "CADA: val normals")
    else:
        val_scores, val_features = np.zeros(0), np.zeros((0, train_features.shape[1]))
    groups, stats, report = form_targets(
        train_features, train_scores, val_features, val_scores, settings, train_categories, val_categories
    )
    keep = groups >= 0  # val images of a class absent from train (labels method) cannot be targets
    features = np.concatenate([train_features, val_features])[keep]
    targets = stats[groups[keep]]
    report.history = train_regressor(model.regressor, features, targets[:, 0], targets[:, 1], settings, device,
                                     progress)
    with torch.no_grad():
        u, gamma = model.regressor(torch.as_tensor(features, dtype=torch.float32, device=torch.device(device)))
    errors = np.abs(torch.stack([u, gamma], 1).cpu().numpy() - targets)
    report.regressor_train_mae = float(errors.mean())
    model.eval()
    logger.info("CADA fitted: %d groups, regressor train MAE %.4g", report.n_groups, report.regressor_train_mae)
    return report
