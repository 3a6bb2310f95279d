"""Reverse Distillation (RD4AD, Deng & Li, CVPR 2022) in plain torch.

A frozen pretrained encoder (the teacher) gives multi-scale features; a trainable one-class bottleneck fuses
them into one compact embedding, and a decoder that mirrors the encoder (the student) reconstructs every
scale from it. Trained on normal images only, with ``1 − cosine`` between encoder and decoder features;
at test time the per-pixel ``1 − cosine`` maps, upsampled to the input size, summed and Gaussian-smoothed,
are the anomaly map, and the image score is pooled from it.

The two stages of inference are public so that a wrapper (CADA) can act between them:
``raw_anomaly_map`` (before smoothing and pooling) and ``finalise`` (smoothing, pooling, resizing).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from unified_anomaly.models import distributed
from unified_anomaly.models.backbones import FeatureExtractor, build_feature_extractor
from unified_anomaly.models.contract import Predictions, to_model_input
from unified_anomaly.models.postprocess import gaussian_smooth
from unified_anomaly.models.registry import register_model

logger = logging.getLogger(__name__)

SCORE_MODES = ("max", "topk_mean")
MAP_REDUCTIONS = ("sum", "mean")


# ----------------------------------------------------------------------------------------------- blocks
def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _deconv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """Doubles the spatial size (the decoder's mirror of a stride-2 convolution)."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """ResNet bottleneck block (1×1 reduce, 3×3, 1×1 expand) with a projection shortcut when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        width = max(out_channels // 2, 8)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _doublings(small_stride: int, large_stride: int) -> int:
    ratio = large_stride // small_stride
    if ratio < 1 or 2 ** int(round(math.log2(ratio))) != ratio or large_stride % small_stride:
        raise ValueError(f"feature strides must grow by powers of two, got {small_stride} → {large_stride}")
    return int(round(math.log2(ratio)))


class OneClassBottleneck(nn.Module):
    """Multi-scale feature fusion (every scale brought to the coarsest stride by stride-2 convolutions that
    follow the encoder's channel progression) and a residual embedding one stride further down (OCBE)."""

    def __init__(self, channels: Sequence[int], strides: Sequence[int], embed_channels: int, blocks: int = 1) -> None:
        super().__init__()
        last_channels, last_stride = channels[-1], strides[-1]
        self.align = nn.ModuleList()
        for index, (c, s) in enumerate(zip(channels, strides, strict=True)):
            steps: list[nn.Module] = []
            current = c
            for step in range(_doublings(s, last_stride)):
                target = channels[min(index + step + 1, len(channels) - 1)]
                steps.append(_conv_bn_relu(current, target, stride=2))
                current = target
            if current != last_channels:  # only when a scale shares the coarsest stride with another
                steps.append(_conv_bn_relu(current, last_channels))
            self.align.append(nn.Sequential(*steps))
        fused = last_channels * len(channels)
        layers: list[nn.Module] = [ResidualBlock(fused, embed_channels, stride=2)]
        layers += [ResidualBlock(embed_channels, embed_channels) for _ in range(blocks - 1)]
        self.embed = nn.Sequential(*layers)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        aligned = [align(f) for align, f in zip(self.align, features, strict=True)]
        return self.embed(torch.cat(aligned, dim=1))


class MirroredDecoder(nn.Module):
    """Goes back from the embedding to every encoder scale (coarsest first), producing maps with the
    encoder's channels and sizes; returned in the encoder's order."""

    def __init__(
        self, channels: Sequence[int], strides: Sequence[int], embed_channels: int, blocks: int = 1
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        current, current_stride = embed_channels, strides[-1] * 2
        for c, s in zip(reversed(channels), reversed(strides), strict=True):
            steps: list[nn.Module] = []
            for _ in range(_doublings(s, current_stride)):
                steps.append(_deconv_bn_relu(current, c))
                current = c
            if current != c:
                steps.append(_conv_bn_relu(current, c))
            steps += [ResidualBlock(c, c) for _ in range(blocks)]
            self.stages.append(nn.Sequential(*steps))
            current, current_stride = c, s

    def forward(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        outputs, x = [], embedding
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs[::-1]


# ------------------------------------------------------------------------------------------ post-processing
def pool_image_score(maps: torch.Tensor, mode: str = "max", topk_ratio: float = 0.01) -> torch.Tensor:
    """Image score from ``B×H×W`` maps: the maximum, or the mean of the top ``topk_ratio`` of the pixels."""
    flat = maps.flatten(1)
    if mode == "max":
        return flat.max(dim=1).values
    if mode == "topk_mean":
        k = max(1, int(round(flat.shape[1] * topk_ratio)))
        return flat.topk(k, dim=1).values.mean(dim=1)
    raise ValueError(f"unknown score mode {mode!r}; use one of {SCORE_MODES}")


def cosine_distance_loss(encoded: Sequence[torch.Tensor], decoded: Sequence[torch.Tensor]) -> torch.Tensor:
    """RD4AD loss: over scales, the batch mean of ``1 − cos`` between whole flattened feature maps."""
    loss = encoded[0].new_zeros(())
    for e, d in zip(encoded, decoded, strict=True):
        loss = loss + (1 - F.cosine_similarity(e.flatten(1), d.flatten(1), dim=1)).mean()
    return loss


# ----------------------------------------------------------------------------------------------- model
class ReverseDistillation(nn.Module):
    """RD4AD: frozen encoder → one-class bottleneck → mirrored decoder; ``1 − cos`` anomaly maps."""

    def __init__(
        self,
        encoder: FeatureExtractor,
        input_size: int = 256,
        embed_channels: int | None = None,
        bottleneck_blocks: int = 1,
        decoder_blocks: int = 1,
        sigma: float = 4.0,
        score_mode: str = "max",
        topk_ratio: float = 0.01,
        map_reduction: str = "sum",
    ) -> None:
        super().__init__()
        if score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
        if map_reduction not in MAP_REDUCTIONS:
            raise ValueError(f"map_reduction must be one of {MAP_REDUCTIONS}, got {map_reduction!r}")
        self.encoder = encoder
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)
        channels, strides = list(encoder.channels), list(encoder.strides)
        embed_channels = int(embed_channels or 2 * channels[-1])
        self.bottleneck = OneClassBottleneck(channels, strides, embed_channels, bottleneck_blocks)
        self.decoder = MirroredDecoder(channels, strides, embed_channels, decoder_blocks)
        self.input_size = int(input_size)
        self.sigma = float(sigma)
        self.score_mode = score_mode
        self.topk_ratio = float(topk_ratio)
        self.map_reduction = map_reduction

    # -- training ------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> ReverseDistillation:
        """The encoder stays in eval mode (frozen batch-norm statistics) whatever the mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) == (self.input_size, self.input_size):
            return images
        return F.interpolate(images, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen encoder features of images in [0, 1] (resized and normalised here)."""
        return list(self.encoder(self.encoder.normalise(self.resize(images))))

    def decode(self, encoded: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.decoder(self.bottleneck(encoded))

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        encoded = self.encode(images)
        return encoded, self.decode(encoded)

    # -- inference -----------------------------------------------------------------------------------
    def distance_map(self, encoded: Sequence[torch.Tensor], decoded: Sequence[torch.Tensor]) -> torch.Tensor:
        """``1 − cos`` per scale, bilinearly upsampled to the model's input size and summed (or averaged)."""
        size = (self.input_size, self.input_size)
        total = None
        for e, d in zip(encoded, decoded, strict=True):
            distance = 1 - F.cosine_similarity(e, d, dim=1).unsqueeze(1)
            distance = F.interpolate(distance, size=size, mode="bilinear", align_corners=True)
            total = distance if total is None else total + distance
        assert total is not None
        if self.map_reduction == "mean":
            total = total / len(encoded)
        return total.squeeze(1)

    @torch.no_grad()
    def raw_anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        """``B×S×S`` map at the model's input size, before smoothing and pooling."""
        encoded = self.encode(images)
        return self.distance_map(encoded, self.decode(encoded))

    @torch.no_grad()
    def finalise(self, raw_maps: torch.Tensor, output_size: Sequence[int] | None = None) -> Predictions:
        """Smoothing, image-score pooling and resizing to ``output_size`` (the caller's image size)."""
        maps = gaussian_smooth(raw_maps, self.sigma)
        scores = pool_image_score(maps, self.score_mode, self.topk_ratio)
        if output_size is not None and tuple(output_size) != tuple(maps.shape[-2:]):
            maps = F.interpolate(maps.unsqueeze(1), size=tuple(output_size), mode="bilinear", align_corners=False)
            maps = maps.squeeze(1)
        return Predictions(anomaly_map=maps, image_score=scores)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Predictions:
        was_training = self.training
        self.eval()
        try:
            return self.finalise(self.raw_anomaly_map(images), images.shape[-2:])
        finally:
            self.train(was_training)


@register_model("rd")
def build_reverse_distillation(
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "default",
    weights_path: str | None = None,
    out_indices: Sequence[int] | None = (1, 2, 3),
    input_size: int = 256,
    embed_channels: int | None = None,
    bottleneck_blocks: int = 1,
    decoder_blocks: int = 1,
    sigma: float = 4.0,
    score_mode: str = "max",
    topk_ratio: float = 0.01,
    map_reduction: str = "sum",
) -> ReverseDistillation:
    """Registry factory: ``out_indices`` pick the encoder stages (default: strides 4/8/16)."""
    encoder = build_feature_extractor(
        backbone, out_indices=None if out_indices is None else list(out_indices), weights=weights,
        weights_path=weights_path,
    )
    return ReverseDistillation(
        encoder, input_size=input_size, embed_channels=embed_channels, bottleneck_blocks=bottleneck_blocks,
        decoder_blocks=decoder_blocks, sigma=sigma, score_mode=score_mode, topk_ratio=topk_ratio,
        map_reduction=map_reduction,
    )


# ----------------------------------------------------------------------------------------------- training
def train_reverse_distillation(
    model: ReverseDistillation,
    images: np.ndarray,
    epochs: int,
    batch_size: int = 16,
    lr: float = 0.005,
    betas: Sequence[float] = (0.5, 0.999),
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache_features: bool = True,
    progress: bool = True,
) -> list[float]:
    """Trains bottleneck and decoder on normal images (uint8 N×S×S×3); returns the mean loss per epoch.

    The encoder is frozen and there is no augmentation, so caching its features once is exact and saves
    one encoder pass per epoch (``cache_features``)."""
    world, device = distributed.setup(torch.device(device))  # torchrun: one rank per GPU
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=lr, betas=tuple(betas))
    decode = distributed.wrap(model, "decode", world, device)  # DDP when launched by torchrun
    n = len(images)
    if n == 0:
        raise ValueError("no training images: the train split holds no normal image")
    cache: list[torch.Tensor] | None = None
    if cache_features:
        chunks = [model.encode(to_model_input(images[i : i + batch_size], device)) for i in range(0, n, batch_size)]
        cache = [torch.cat([c[s] for c in chunks]) for s in range(len(chunks[0]))]
    history: list[float] = []
    for _epoch in tqdm(range(epochs), desc="RD epochs", disable=not (progress and world.is_main)):
        order = distributed.shard(generator.permutation(n), world)
        total, batches = 0.0, 0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2 and n >= 2:  # batch-norm needs two samples
                continue
            if cache is not None:
                encoded = [c[torch.from_numpy(index).to(c.device)] for c in cache]
            else:
                encoded = model.encode(to_model_input(images[np.sort(index)], device))
            loss = cosine_distance_loss(encoded, decode(encoded))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            batches += 1
        history.append(distributed.mean_across_ranks(total / max(batches, 1), world, device))
    distributed.broadcast_buffers(model, world)  # batch-norm statistics of rank 0 on every rank
    model.eval()
    logger.info("RD trained %d epochs on %d images; last loss %.4f", epochs, n, history[-1] if history else float("nan"))
    return history


def model_summary(model: ReverseDistillation) -> dict[str, Any]:
    """Parameter counts (trainable = bottleneck + decoder) for logs and benchmarks."""
    return {
        "parameters_total": sum(p.numel() for p in model.parameters()),
        "parameters_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters_encoder": sum(p.numel() for p in model.encoder.parameters()),
    }
