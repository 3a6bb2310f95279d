"""A trained model with everything needed to use it again: registry name, config, weights, threshold."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from unified_anomaly.atomic import atomic_write
from unified_anomaly.models.registry import build_model

CONFIG_FILE = "bundle.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class ModelBundle:
    """name: registry name; config: kwargs of ``build_model``; threshold: image-score threshold chosen on
    the validation split (None until calibrated); info: what was really used (weights, data, timings)."""

    name: str
    config: dict[str, Any]
    model: nn.Module
    threshold: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


def save_bundle(path: str | os.PathLike, bundle: ModelBundle) -> None:
    """Atomic: written into a temporary sibling folder and renamed once complete."""

    def write(tmp: Path) -> None:
        tmp.mkdir()
        state = {k: v.detach().contiguous().cpu() for k, v in bundle.model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        meta = {"name": bundle.name, "config": bundle.config, "threshold": bundle.threshold, "info": bundle.info}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=str))

    atomic_write(path, write)


def load_bundle(path: str | os.PathLike, device: str = "cpu") -> ModelBundle:
    """Rebuilds the model from its config and loads its weights (safetensors: nothing is unpickled)."""
    path = Path(path)
    meta = json.loads((path / CONFIG_FILE).read_text())
    config = dict(meta["config"])
    model = build_model(meta["name"], **config)
    state = load_file(str(path / WEIGHTS_FILE), device=device)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return ModelBundle(meta["name"], config, model, meta.get("threshold"), meta.get("info", {}))
