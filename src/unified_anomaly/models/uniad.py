"""UniAD (You et al., NeurIPS 2022): one feature-reconstruction transformer for every category.

Pipeline (``methods.md`` §3): frozen multi-scale CNN features -> every map resized (bilinear, aligned
corners) to the deepest used stride and concatenated -> tokens, jittered in training -> input projection ->
4 encoder + 4 decoder post-norm layers with learned 2-D position embedding, a separate learned query per
decoder layer and a neighbour mask (7×7) in every attention -> output projection. Anomaly map = per-position
L2 norm of (reconstruction - input), upsampled to the input size (optionally Gaussian-smoothed; the paper
code does not smooth, so ``smoothing_sigma=0`` is the default). Image score = max of the average-pooled map.

The frozen backbone (:meth:`UniAD.extract_features`) is kept apart from the trainable transformer
(:meth:`UniAD.reconstruct`), so training runs on features computed once per image.

Deviation, documented: the official code deep-copies one decoder layer, so all layer-wise queries (and the
attention input projections) start from the same values; here every layer is initialised independently.

CPU speed (``precision="auto"``): on CPUs with native bf16 (AVX512-BF16/AMX) and on CUDA with bf16, the frozen
backbone (channels-last) and the inference transformer run under bf16 autocast; feature caching for training
uses the same path, so training and inference see the same features. ``precision="fp32"`` is the reference.
The error map goes to the output map and the image score through precomputed separable matrices (the
upsampling, optional blur, pooling and resize are linear and separable), equal to
:meth:`UniAD.score_maps_reference` up to float rounding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unified_anomaly.models.backbones import FeatureExtractor, WeightsInfo, build_feature_extractor
from unified_anomaly.models.contract import Predictions
from unified_anomaly.models.registry import register_model

PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_fast_bf16() -> bool:
    """True where the CPU runs bf16 matrix products natively (AVX512-BF16 or AMX)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` means bf16 autocast on ``device`` (``auto``: only where bf16 is native)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return False
    if device.type == "cuda":
        return precision == "bf16" or torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return precision == "bf16" or cpu_has_fast_bf16()
    return False


def neighbour_mask(height: int, width: int, neighbourhood: int | Sequence[int]) -> Tensor:
    """Boolean ``(h·w)×(h·w)`` attention mask: ``True`` = query may NOT attend to that key.

    Every token's ``k×k`` neighbourhood (itself included, clipped at the borders) is hidden, so a token
    can only be rebuilt from tokens further away, never copied from itself or its neighbours.
    """
    kh, kw = (neighbourhood, neighbourhood) if isinstance(neighbourhood, int) else tuple(neighbourhood)
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    near_rows = (rows[:, None] - rows[None, :]).abs() <= kh // 2
    near_cols = (cols[:, None] - cols[None, :]).abs() <= kw // 2
    mask = near_rows & near_cols
    if bool(mask.all(dim=1).any()):
        raise ValueError(
            f"a {kh}×{kw} neighbour mask hides every token of the {height}×{width} feature grid; "
            f"use a smaller neighbourhood or a larger input_size"
        )
    return mask


class LearnedPositionEmbedding(nn.Module):
    """Learned 2-D position embedding: half the channels index the column, half the row."""

    def __init__(self, height: int, width: int, dim: int) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.row_embed = nn.Embedding(height, dim // 2)
        self.col_embed = nn.Embedding(width, dim - dim // 2)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self) -> Tensor:
        cols = self.col_embed.weight.unsqueeze(0).expand(self.height, -1, -1)
        rows = self.row_embed.weight.unsqueeze(1).expand(-1, self.width, -1)
        return torch.cat([cols, rows], dim=-1).flatten(0, 1)  # (h·w)×dim


def dropout_scale(p: float) -> float:
    """The rescaling 1/(1-p') of the kept elements, for the drop probability p' = round(256·p)/256 of
    :func:`keep_mask`."""
    threshold = round(256 * p)
    return 1.0 if threshold <= 0 else 0.0 if threshold >= 256 else 256.0 / (256 - threshold)


def keep_mask(shape: Sequence[int], p: float, like: Tensor) -> Tensor | None:
    """A dropout keep mask of 0/1 in ``like``'s dtype and device (``None`` when nothing is dropped).

    Keep iff a random byte >= round(256·p): the drop probability is ``round(256·p)/256`` (0.1016 for 0.1).
    Bytes are drawn eight at a time from 64-bit integers and compared straight into the activation dtype:
    ~4× cheaper on a CPU than a boolean mask converted and rescaled, and far cheaper than per-element
    Bernoulli draws. The caller rescales by :func:`dropout_scale` (folded into a weight where it can).
    """
    threshold = round(256 * p)
    if threshold <= 0:
        return None
    mask = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
    if threshold >= 256:
        return mask.zero_()
    count = mask.numel()
    bits = torch.empty((count + 7) // 8, dtype=torch.int64, device=like.device).random_(-(2**63), None)  # 64 bits
    return torch.ge(bits.view(torch.uint8)[:count].view(mask.shape), threshold, out=mask)


def scaled_linear(linear: nn.Linear, x: Tensor, weight_scale: float = 1.0, bias_scale: float = 1.0) -> Tensor:
    """``linear(x)`` with its weight and bias multiplied by constants: dropout's 1/(1-p) rescaling applied to a
    small weight matrix instead of a large activation (one pass over the activation saved each way)."""
    if weight_scale == 1.0 and bias_scale == 1.0:
        return linear(x)
    bias = None if linear.bias is None else linear.bias * bias_scale
    return F.linear(x, linear.weight * weight_scale, bias)


def drop(x: Tensor, p: float, training: bool) -> Tensor:
    """Zeroes a random fraction p of ``x`` in training, without rescaling (folded elsewhere by the caller)."""
    keep = keep_mask(x.shape, p, x) if training else None
    return x if keep is None else x * keep


class Attention(nn.Module):
    """Multi-head attention with an additive mask; the query may be shared by the whole batch (1×L×d).

    Scores are one ``baddbmm`` (scale and mask fused into the product) on ``(B·heads)×L×L``: on the CPU this is
    ~2× faster than ``scaled_dot_product_attention``'s flash kernel at UniAD's 196 tokens under bf16 and no
    slower in fp32 (measured with torch 2.15), and the same code path serves training and inference.

    Training drops attention weights (``dropout``) and, with ``output_dropout``, outputs (the dropout of the
    paper layer's residual branch). Both 1/(1-p) rescalings are folded into the value and output projections'
    weights, so the large ``(B·heads)×L×L`` weights are only multiplied by a 0/1 mask, never rescaled.
    """

    def __init__(self, dim: int, heads: int, dropout: float, output_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden_dim {dim} is not divisible by num_heads {heads}")
        self.heads, self.dropout, self.output_dropout = heads, float(dropout), float(output_dropout)
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None) -> Tensor:
        batch, length, dim = value.shape
        head_dim = dim // self.heads
        value_scale = dropout_scale(self.dropout) if self.training else 1.0
        out_scale = dropout_scale(self.output_dropout) if self.training else 1.0

        def split(x: Tensor) -> Tensor:  # B×L×d -> (B·heads)×L×head_dim
            x = x.view(x.shape[0], -1, self.heads, head_dim).transpose(1, 2)
            return x.expand(batch, -1, -1, -1).reshape(batch * self.heads, -1, head_dim)

        q, k = split(self.q_proj(query)), split(self.k_proj(key))
        v = split(scaled_linear(self.v_proj, value, value_scale, value_scale))
        if mask is None:
            scores = torch.bmm(q, k.transpose(1, 2)).mul_(head_dim**-0.5)
        else:
            scores = torch.baddbmm(mask.to(q.dtype), q, k.transpose(1, 2), alpha=head_dim**-0.5)
        weights = drop(scores.softmax(dim=-1), self.dropout, self.training)
        out = torch.bmm(weights, v).view(batch, self.heads, -1, head_dim).transpose(1, 2)
        out = scaled_linear(self.out_proj, out.reshape(batch, -1, dim), out_scale, out_scale)
        return drop(out, self.output_dropout, self.training)


def feed_forward(linear1: nn.Linear, linear2: nn.Linear, x: Tensor, dropout: float, training: bool) -> Tensor:
    """``dropout(linear2(dropout(relu(linear1(x)))))``: the FFN and its residual branch's dropout; in training
    both rescalings are folded into ``linear2`` (weight × s², bias × s)."""
    hidden = F.relu(linear1(x))
    if not training:
        return linear2(hidden)
    scale = dropout_scale(dropout)
    return drop(scaled_linear(linear2, drop(hidden, dropout, True), scale * scale, scale), dropout, True)


class EncoderLayer(nn.Module):
    """Post-norm self-attention + FFN; positions are added to queries and keys only."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads, dropout, output_dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = float(dropout)

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor | None) -> Tensor:
        q = x + pos
        x = self.norm1(x + self.self_attn(q, q, x, mask))
        return self.norm2(x + feed_forward(self.linear1, self.linear2, x, self.dropout, self.training))


class DecoderLayer(nn.Module):
    """Layer-wise learned query: attention 1 reads the encoder memory, attention 2 the previous layer."""

    def __init__(self, tokens: int, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(tokens, dim))  # N(0, 1) like nn.Embedding in the paper code
        self.attn_memory = Attention(dim, heads, dropout, output_dropout=dropout)
        self.attn_previous = Attention(dim, heads, dropout, output_dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = float(dropout)

    def forward(
        self, previous: Tensor, memory: Tensor, pos: Tensor, mask_memory: Tensor | None, mask_previous: Tensor | None
    ) -> Tensor:
        query = self.query.unsqueeze(0).to(memory.dtype)  # 1×L×d, projected once for the batch; bf16 under autocast
        x = self.norm1(query + self.attn_memory(query + pos, memory + pos, memory, mask_memory))
        x = self.norm2(x + self.attn_previous(x + pos, previous + pos, previous, mask_previous))
        return self.norm3(x + feed_forward(self.linear1, self.linear2, x, self.dropout, self.training))


class UniAD(nn.Module):
    """UniAD: frozen backbone + neighbour-masked reconstruction transformer (see the module docstring)."""

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        weights: str = "default",
        weights_path: str | None = None,
        out_indices: Sequence[int] | None = None,
        input_size: int = 224,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        neighbour_size: int = 7,
        mask_encoder: bool = True,
        mask_decoder_memory: bool = True,
        mask_decoder_previous: bool = True,
        jitter_scale: float = 20.0,
        jitter_prob: float = 1.0,
        smoothing_sigma: float = 0.0,
        score_pool: int = 16,
        precision: str = "auto",
    ) -> None:
        super().__init__()
        self.backbone: FeatureExtractor = build_feature_extractor(backbone, out_indices, weights, weights_path)
        self.input_size = int(input_size)
        self.stride = max(self.backbone.strides)
        if self.input_size % self.stride:
            raise ValueError(f"input_size {input_size} must be a multiple of the deepest stride {self.stride}")
        self.grid = self.input_size // self.stride
        self.feature_dim = sum(self.backbone.channels)
        self.jitter_scale, self.jitter_prob = float(jitter_scale), float(jitter_prob)
        self.smoothing_sigma = float(smoothing_sigma)
        # score pool: 16×16 at 224 in the paper, scaled with the input size
        self.score_kernel = max(1, round(score_pool * self.input_size / 224))
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self._operators: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

        tokens = self.grid * self.grid
        self.input_proj = nn.Linear(self.feature_dim, hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, self.feature_dim)
        self.pos_embed = LearnedPositionEmbedding(self.grid, self.grid, hidden_dim)
        self.encoder = nn.ModuleList(
            EncoderLayer(hidden_dim, num_heads, dim_feedforward, dropout) for _ in range(num_encoder_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(tokens, hidden_dim, num_heads, dim_feedforward, dropout) for _ in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        mask = neighbour_mask(self.grid, self.grid, neighbour_size) if neighbour_size > 0 else None
        additive = None if mask is None else torch.zeros(mask.shape).masked_fill(mask, float("-inf"))
        self.register_buffer("attention_mask", additive, persistent=False)  # 0 = may attend, -inf = hidden
        self.mask_encoder = bool(mask_encoder) and mask is not None
        self.mask_decoder_memory = bool(mask_decoder_memory) and mask is not None
        self.mask_decoder_previous = bool(mask_decoder_previous) and mask is not None
        self._xavier_init()

    @property
    def weights_info(self) -> WeightsInfo:
        return self.backbone.weights

    def _xavier_init(self) -> None:
        """As the paper code: xavier-uniform weights and zero biases for every linear layer."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not name.startswith("backbone."):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------------- frozen features
    def uses_bf16(self, device: torch.device | None = None) -> bool:
        """Whether inference and feature extraction run under bf16 autocast (see ``precision``)."""
        return resolve_bf16(self.precision, device or self.input_proj.weight.device)

    def _autocast(self, device: torch.device):
        enabled = self.uses_bf16(device) and device.type in ("cpu", "cuda")
        return torch.autocast(device.type if enabled else "cpu", dtype=torch.bfloat16, enabled=enabled)

    @torch.no_grad()
    def extract_features(self, images: Tensor) -> Tensor:
        """``B×3×H×W`` in ``[0, 1]`` -> concatenated frozen features ``B×C×g×g`` (float32) at the deepest stride.

        Channels-last input (oneDNN's fast layout for the depthwise convolutions), under bf16 autocast where
        ``precision`` asks for it."""
        images = self._resize(images)
        with self._autocast(images.device):
            normalised = self.backbone.normalise(images).contiguous(memory_format=torch.channels_last)
            maps = self.backbone(normalised)
        size = (self.grid, self.grid)
        aligned = [F.interpolate(m.float(), size=size, mode="bilinear", align_corners=True) for m in maps]
        return torch.cat(aligned, dim=1).contiguous()

    def _resize(self, images: Tensor) -> Tensor:
        if images.shape[-2:] == (self.input_size, self.input_size):
            return images
        images = images.contiguous()  # a channels-last view resizes ~5× slower on a CPU
        return F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)

    # -------------------------------------------------------------------------------- reconstruction
    def jitter(self, tokens: Tensor) -> Tensor:
        """Gaussian noise of std ``scale·‖token‖/C`` per token, with probability ``jitter_prob`` per batch."""
        if self.jitter_scale <= 0 or random.random() > self.jitter_prob:
            return tokens
        norms = tokens.norm(dim=-1, keepdim=True) / tokens.shape[-1]
        noise = torch.randn(tokens.shape, dtype=tokens.dtype, device=tokens.device)  # contiguous: ~9× faster on a CPU
        return tokens + noise * norms * self.jitter_scale

    def reconstruct(self, features: Tensor) -> Tensor:
        """``B×C×g×g`` features -> reconstructed features of the same shape (jitter only in training)."""
        batch, channels, height, width = features.shape
        if (height, width) != (self.grid, self.grid) or channels != self.feature_dim:
            raise ValueError(
                f"features {tuple(features.shape[1:])} do not match the model ({self.feature_dim}, {self.grid}, "
                f"{self.grid}); were they extracted with another backbone or input_size?"
            )
        tokens = features.flatten(2).transpose(1, 2)  # B×(g·g)×C
        if self.training:
            tokens = self.jitter(tokens)
        x = self.input_proj(tokens)
        pos = self.pos_embed().unsqueeze(0).to(x.dtype)  # bf16 under autocast: no fp32 promotion in the adds
        mask = self.attention_mask
        for layer in self.encoder:
            x = layer(x, pos, mask if self.mask_encoder else None)
        memory = previous = x
        for layer in self.decoder:
            previous = layer(
                previous,
                memory,
                pos,
                mask if self.mask_decoder_memory else None,
                mask if self.mask_decoder_previous else None,
            )
        out = self.output_proj(self.decoder_norm(previous))
        return out.transpose(1, 2).reshape(batch, channels, height, width)

    def forward(self, features: Tensor) -> Tensor:
        return self.reconstruct(features)

    def loss(self, features: Tensor) -> Tensor:
        """MSE between reconstructed and input features."""
        return F.mse_loss(self.reconstruct(features), features)

    # ------------------------------------------------------------------------------------- inference
    def anomaly_map_from_features(self, features: Tensor) -> Tensor:
        """``B×g×g`` L2 reconstruction error per position (float32; the transformer as ``precision`` says)."""
        with self._autocast(features.device):
            reconstruction = self.reconstruct(features)
        return (reconstruction.float() - features.float()).pow(2).sum(dim=1).sqrt()

    def score_maps_reference(self, error: Tensor, output_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Error ``B×g×g`` -> (map ``B×H×W`` at ``output_size``, score ``B``), step by step (the definition)."""
        full = F.interpolate(
            error.unsqueeze(1), size=(self.input_size, self.input_size), mode="bilinear", align_corners=True
        )
        if self.smoothing_sigma > 0:
            full = gaussian_blur(full, self.smoothing_sigma)
        kernel = min(self.score_kernel, self.input_size)
        score = F.avg_pool2d(full, kernel, stride=1).flatten(1).amax(dim=1)
        if tuple(output_size) != (self.input_size, self.input_size):
            full = F.interpolate(full, size=tuple(output_size), mode="bilinear", align_corners=False)
        return full.squeeze(1), score

    def score_maps(self, error: Tensor, output_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """As :meth:`score_maps_reference`, through precomputed separable matrices: the map is
        ``R_h·E·R_wᵀ`` and the score ``max(Q·E·Qᵀ)``, where each matrix is one axis of upsampling, blur,
        pooling (``Q``) or resizing (``R``); ~100× cheaper than resizing and pooling 224² maps."""
        height, width = (int(v) for v in output_size)
        rows, cols, pool = self._score_operators(height, width, error.device)
        error = error.float()
        maps = torch.matmul(torch.matmul(rows, error), cols.T)
        pooled = torch.matmul(torch.matmul(pool, error), pool.T)
        return maps, pooled.flatten(1).amax(dim=1)

    def _score_operators(self, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        key = (height, width, str(device))
        if key not in self._operators:
            size = self.input_size
            upsample = _axis_operator(self.grid, lambda x: _interpolate_axis(x, size, align_corners=True))
            if self.smoothing_sigma > 0:
                blur = _axis_operator(size, lambda x: _blur_axis(x, self.smoothing_sigma))
                upsample = blur @ upsample
            kernel = min(self.score_kernel, size)
            pool = _axis_operator(size, lambda x: F.avg_pool1d(x, kernel, stride=1)) @ upsample
            resize = {}
            for length in {height, width}:
                resize[length] = (
                    upsample
                    if (height, width) == (size, size)
                    else _axis_operator(size, lambda x, n=length: _interpolate_axis(x, n, False)) @ upsample
                )
            self._operators[key] = tuple(t.to(device) for t in (resize[height], resize[width], pool))
        return self._operators[key]

    @torch.no_grad()
    def predict_features(self, features: Tensor, output_size: tuple[int, int]) -> Predictions:
        """Predictions from cached features (evaluation mode is forced)."""
        was_training = self.training
        self.eval()
        try:
            anomaly_map, score = self.score_maps(self.anomaly_map_from_features(features), output_size)
        finally:
            self.train(was_training)
        return Predictions(anomaly_map=anomaly_map, image_score=score)

    @torch.inference_mode()
    def predict(self, images: Tensor) -> Predictions:
        """``B×3×H×W`` in ``[0, 1]`` -> maps ``B×H×W`` and scores ``B`` (see the module docstring)."""
        return self.predict_features(self.extract_features(images), tuple(images.shape[-2:]))


def _axis_operator(length: int, operation) -> Tensor:
    """The matrix (``out×length``) of a linear 1-D ``operation`` on ``N×1×length`` rows, applied to the identity."""
    basis = torch.eye(length, dtype=torch.float64).unsqueeze(1)
    return operation(basis).squeeze(1).T.float().contiguous()


def _interpolate_axis(rows: Tensor, size: int, align_corners: bool) -> Tensor:
    """Bilinear interpolation along one axis (what ``F.interpolate(..., "bilinear")`` does per axis)."""
    return F.interpolate(rows, size=size, mode="linear", align_corners=align_corners)


def _blur_axis(rows: Tensor, sigma: float) -> Tensor:
    """One axis of :func:`gaussian_blur` (same kernel, radius and reflect padding)."""
    length = rows.shape[-1]
    radius = min(max(1, int(math.ceil(4 * sigma))), length - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=rows.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return F.conv1d(F.pad(rows, (radius, radius), mode="reflect"), kernel.view(1, 1, -1))


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``B×1×H×W`` maps, kernel ±4σ, reflect padding (as anomalib)."""
    radius = max(1, int(math.ceil(4 * sigma)))
    radius = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(maps, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))


@register_model("uniad")
def build_uniad(**config) -> UniAD:
    """Registry factory: ``config`` holds only JSON values (backbone name, weights spec, sizes)."""
    if "out_indices" in config and config["out_indices"] is not None:
        config["out_indices"] = list(config["out_indices"])
    return UniAD(**config)
