"""The prediction contract every model in the project speaks.

Images go in as a float tensor ``B×3×H×W`` in ``[0, 1]`` (RGB, not normalised: each model owns its
pre-processing). Predictions come out at the input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


def to_model_input(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 ``N×H×W×3`` RGB (array or tensor) -> the contract's float ``N×3×H×W`` in ``[0, 1]``, contiguous,
    on ``device``. Float ``N×3×H×W`` input passes through. The uint8 layout is transposed before the float
    conversion: resizing a channels-last float view is ~5× slower on a CPU than resizing contiguous images."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if device is not None:
        tensor = tensor.to(device)
    if tensor.dtype != torch.uint8:
        return tensor.float()
    return tensor.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


@dataclass
class Predictions:
    """What a model returns for a batch of ``B`` images of size ``H×W``.

    anomaly_map: ``B×H×W`` raw anomaly scores, higher = more anomalous (no squashing).
    image_score: ``B`` raw image scores.
    class_logits: ``B×C×H×W`` logits over the ``C`` anomaly classes (normal excluded), classifying models only.
    image_class: ``B`` predicted class ids (0 = normal, ``c + 1`` = anomaly class ``c``), classifying models only.
    """

    anomaly_map: torch.Tensor
    image_score: torch.Tensor
    class_logits: torch.Tensor | None = None
    image_class: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Predictions:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Predictions(
            anomaly_map=self.anomaly_map.to(device),
            image_score=self.image_score.to(device),
            class_logits=move(self.class_logits),
            image_class=move(self.image_class),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )


@runtime_checkable
class AnomalyModel(Protocol):
    """A trained model: ``predict`` maps images in ``[0, 1]`` to :class:`Predictions`."""

    def predict(self, images: torch.Tensor) -> Predictions: ...


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), CPU otherwise."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
