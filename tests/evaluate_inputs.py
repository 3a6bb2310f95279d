"""Inputs of the evaluate pipeline written straight into a project copy's data folder (as training would)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from kedro.io.core import Version, generate_timestamp

sys.path.insert(0, str(Path(__file__).resolve().parent / "evaluation"))
from toy_data import toy_store  # noqa: E402

from unified_anomaly.datasets import ImageStoreDataset, ModelBundleDataset  # noqa: E402
from unified_anomaly.models import build_model  # noqa: E402
from unified_anomaly.models.bundle import ModelBundle  # noqa: E402

# Tiny random-weight models with the real architectures (registry names the kedro subprocess knows).
CONFIGS = {
    "uniad": ("uniad", {"backbone": "tiny_cnn", "weights": "random", "out_indices": [0, 1, 2], "input_size": 64,
                        "hidden_dim": 16, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
                        "dim_feedforward": 32, "neighbour_size": 3}),
    "rd": ("rd", {"backbone": "tiny_cnn", "weights": "random", "input_size": 64, "sigma": 2.0}),
}
# Quick evaluation settings, given with --params.
EVALUATE_PARAMS = "evaluate.progress=false,evaluate.overlay_images=1,evaluate.figure_dpi=30"


def write_evaluate_inputs(project: Path, models: tuple[str, ...] = ("uniad", "rd")) -> None:
    """``ingested_images`` (the toy store) and one ``<model>_model`` version each, under ``data/*/default``."""
    data = project / "data"
    ImageStoreDataset(str(data / "03_primary/default/ingested_images"), version=Version(None, generate_timestamp())).save(
        toy_store())
    for model in models:
        name, config = CONFIGS[model]
        torch.manual_seed(0)
        bundle = ModelBundle(name, config, build_model(name, **config), None,
                             {"weights": "random (test)", "backbone": "tiny_cnn", "setting": "unified"})
        ModelBundleDataset(str(data / f"06_models/default/{model}"), version=Version(None, generate_timestamp())).save(bundle)


def versions(folder: Path) -> list[Path]:
    """Version folders of a versioned dataset, oldest first (hidden temporary folders excluded)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def metric_values(project: Path, model: str) -> list[dict]:
    """``<model>.metric_values`` of every run, oldest first."""
    folder = project / "data/08_reporting/default" / model / "metric_values.json"
    return [json.loads((v / "metric_values.json").read_text()) for v in versions(folder)]


def incomplete_versions(data: Path) -> list[Path]:
    """Version folders (``<dataset path>/<timestamp>/``) that lack their dataset's file or folder."""
    return [version for version in sorted(data.glob("0*/*/**/20??-??-??T??.??.??.???Z"))
            if not (version / version.parent.name).exists()]
