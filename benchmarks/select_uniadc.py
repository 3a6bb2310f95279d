"""UniADC hyper-parameter selection on MTD without the test split: every candidate is fitted as
``bench_uniadc.py`` fits it (synthesis, training, validation selection) and scored on a SELECTION SET only.

    python benchmarks/select_uniadc.py --candidates base,old_priors --settings zs1,fs21 --threads 1 \
        --json /work/scratch/select.json [--epochs 10 for a first screen] [--no-docs]
    python benchmarks/select_uniadc.py --from-json a.json,b.json   # the report only, from one or more runs

Selection set (``train_uniadc.nodes.selection_rows``): the 95 ``val`` normals + the ``support`` anomalies the
setting does not train on (few-shot Ka=1: support ranks 1-3, 15 images; zero-shot: all 20 support images, 4 per
type), with their masks. The test split is never loaded into a metric here. In zero-shot the selection set holds
real anomalies from the support pool that the model never trains on: a protocol choice (the paper selected on
test). The val normals also serve the training's own epoch selection and thresholds (as in bench_uniadc). With
``train_uniadc.training.validation: support`` (or ``mixed``) the selection set IS the training's validation set:
its scores are then in-sample (the checkpoint was chosen on it) and only the test split (``bench_uniadc.py``,
once per configuration) compares validation sets fairly.
Rule: score = mean over zs1 and fs21 of mean(I-AUROC, Acc, fine Acc) on the selection set (Acc by the paper's
rule, min-max over the selection set; fine Acc = accuracy on its anomalous images). A candidate replaces conf
only if it beats ``base`` (the conf as it is) at the full 250 iterations.
Writes/replaces ``## UniADC hyper-parameter selection`` in docs/benchmarks.md through report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_uniadc import (  # noqa: E402  (benchmarks/ is the script folder)
    SETTINGS,
    evaluate,
    fit_setting,
    load_mtd,
    params_for,
    predict_rows,
    reweight_memory,
    synthesize,
)
from report import peak_rss_mb, write_section  # noqa: E402

from unified_anomaly.models.contract import pick_device  # noqa: E402
from unified_anomaly.models.uniadc import (  # noqa: E402
    rebuild_defect_memory,
    rebuild_normal_memory,
    set_map_smoothing,
)
from unified_anomaly.pipelines.train_uniadc.nodes import selection_rows  # noqa: E402

TITLE = "UniADC hyper-parameter selection"
MEMORY_TITLE = "UniADC normal-memory weight selection"
VIEWS_TITLE = "UniADC normal-memory views selection"
DEFECT_TITLE = "UniADC defect-memory selection"
SMOOTHING_TITLE = "UniADC map-smoothing selection"
_MTD = "synthesize.priors.datasets.mtd.magnetic_tile"
# The MTD priors before commit 5a53c82 (conf/base/parameters_synthesize.yml at 3f731ef): masks only, no styles.
OLD_PRIOR_MASKS = {
    "blowhole": ["NearCircularEllipse_Small"],
    "break": ["Polygon_Medium", "Polygon_Small"],
    "crack": ["Line_Small", "Line_Medium", "Brush_Small", "Brush_Tiny"],
    "fray": ["Polygon_Medium", "Perlin_Medium", "Perlin_Small"],
    "uneven": ["Perlin_Large"],
}
OLD_PRIORS = {**{f"{_MTD}.{t}.masks": m for t, m in OLD_PRIOR_MASKS.items()},
              **{f"{_MTD}.{t}.styles": None for t in OLD_PRIOR_MASKS}}
# candidate -> --params-style overrides of conf/base (train_uniadc.*, synthesize.*); "base" = conf as it is
# (base was EfficientNet-Lite0 when the table in docs/benchmarks.md was measured; lite2 won and is conf's now)
CANDIDATES: dict[str, dict] = {
    "base": {},
    "lite0": {"train_uniadc.encoder.name": "tf_efficientnet_lite0"},
    "old_priors": OLD_PRIORS,
    "lite2": {"train_uniadc.encoder.name": "tf_efficientnet_lite2"},
    "idx123": {"train_uniadc.encoder.out_indices": [1, 2, 3]},
    "idx23": {"train_uniadc.encoder.out_indices": [2, 3]},
    "fd256": {"train_uniadc.model.fusion_dim": 256},
    "eps0.1": {"train_uniadc.model.epsilon_init": 0.1},
    "n40": {"synthesize.images_per_type": 40},
    # checkpoint selection on this very set: in-sample here, compare on test (bench_uniadc --validation)
    "val_synthetic": {"train_uniadc.training.validation": "synthetic"},
    "val_support": {"train_uniadc.training.validation": "support"},
}
KEYS = ("image_AUROC", "pixel_AUROC", "image_ClassAcc", "image_ClassAcc_valthr", "image_ClassAcc_anomalous")
# what a variant records (None where it does not apply)
VARIANT_FIELDS = ("memory_weight", "memory_augment", "memory_classify_on", "defect_source", "defect_weight",
                  "defect_classify_on", "smoothing_sigma")


def parse_candidates(names: str) -> dict[str, dict]:
    """``a,b`` or combinations ``a+b`` (overrides merged left to right) of the named candidates."""
    chosen = {}
    for name in names.split(","):
        overrides: dict = {}
        for part in name.split("+"):
            if part not in CANDIDATES:
                raise SystemExit(f"unknown candidate {part!r}; known: {', '.join(CANDIDATES)}")
            overrides.update(CANDIDATES[part])
        chosen[name] = overrides
    return chosen


def parse_defect_variants(text: str | None) -> list[tuple[str, float]] | None:
    """``real:0,real:1,synthetic:0.5`` -> [(source, weight), ...]."""
    if not text:
        return None
    variants = []
    for item in text.split(","):
        source, _, weight = item.partition(":")
        if not weight:
            raise SystemExit(f"--defect-memory items are source:weight (e.g. real:0.5), got {item!r}")
        variants.append((source, float(weight)))
    return variants


def run_candidate(store, key: str, overrides: dict, epochs: int | None, device, cache: dict,
                  memory_weights: list[float] | None = None, memory_augments: list[str] | None = None,
                  defect_variants: list[tuple[str, float]] | None = None, classify_on: str | None = None,
                  smoothings: list[float] | None = None) -> dict[str, dict]:
    """Fit one candidate on one setting; metrics on the selection set only (never test). The normal memory is
    built after training, so one fit scores several memories: with ``memory_weights`` one entry per weight,
    keyed ``+mem<w>``; with ``memory_augments`` one entry per set of views (conf's weight and classify_on),
    keyed ``+aug<name>``; with ``defect_variants`` one entry per (source, weight) of the defect memory (built
    after training too), keyed ``+def<source><w>`` (``+<classify_on>`` appended when ``classify_on`` replaces
    conf's, thresholds recalibrated on validation); with ``smoothings`` one entry per ``smoothing_sigma`` (set
    after the fit, statistics and thresholds recomputed on validation), keyed ``+sm<σ>``; else one entry keyed
    ``""``."""
    setting, kn, ka = SETTINGS[key]
    if memory_weights:
        overrides = {**overrides, "train_uniadc.model.normal_memory.weight": max(memory_weights)}
    params = params_for(setting, kn, ka, epochs, overrides)
    synth_key = (key, json.dumps({k: v for k, v in overrides.items() if k.startswith("synthesize.")}, sort_keys=True))
    if synth_key not in cache:
        cache[synth_key] = synthesize(store, setting, kn, ka, overrides)
    model, history, summary, fit_s, val, train = fit_setting(store, cache[synth_key], params)
    rows = selection_rows(store, setting, ka)
    labels = store.labels(rows)
    entries = {}
    for suffix, apply, record in _variants(model, history, train, val, device, params["seed"], memory_weights,
                                           memory_augments, defect_variants, classify_on, smoothings):
        threshold = apply()
        probs, argmax, scores, class_sources = predict_rows(model, store, rows, device, desc="UniADC selection set")
        metrics = evaluate(probs, argmax, scores, store, rows, threshold, class_sources)
        entries[suffix] = {
            "metrics": {k: metrics.get(k) for k in KEYS}, "fit_s": fit_s, "best_epoch": history["best_epoch"],
            "iterations": params["training"]["epochs"] * params["training"]["steps_per_epoch"],
            "epsilon": float(model.epsilon.detach()), "selection_normals": int((labels == 0).sum()),
            "selection_anomalies": int(labels.sum()), "overrides": overrides,
            **dict.fromkeys(VARIANT_FIELDS), **record}
    return entries


def _variants(model, history, train, val, device, seed, memory_weights, memory_augments, defect_variants,
              classify_on, smoothings) -> list[tuple[str, Callable[[], float], dict]]:
    """(key suffix, set the fitted model up and return its pixel threshold, what the entry records) per variant."""
    if memory_weights:  # `+mem<w>` rows classify on the fused map whatever conf says: the `+disc` rows rest on it
        return [(f"+mem{w:g}", partial(reweight_memory, model, w, val, device, classify_on="fused"),
                 {"memory_weight": w}) for w in memory_weights]
    if memory_augments:
        return [(f"+aug{a}", lambda a=a: rebuild_normal_memory(model, a, train, val, device, seed)["pixel_threshold"],
                 {"memory_augment": a, "memory_classify_on": model.memory_classify_on}) for a in memory_augments]
    if defect_variants:
        def with_defect(source: str, weight: float) -> float:  # classes only: the maps stay those of the fit
            rebuild_defect_memory(model, source, train, device, weight=weight)
            return (reweight_memory(model, model.memory_weight, val, device, classify_on) if classify_on
                    else history["pixel_threshold"])

        return [(f"+def{source}{w:g}" + (f"+{classify_on}" if classify_on else ""), partial(with_defect, source, w),
                 {"defect_source": source, "defect_weight": w,
                  "defect_classify_on": classify_on or model.memory_classify_on})
                for source, w in defect_variants]
    if smoothings:
        return [(f"+sm{sigma:g}", lambda sigma=sigma: set_map_smoothing(model, sigma, val, device)["pixel_threshold"],
                 {"smoothing_sigma": sigma}) for sigma in smoothings]
    return [("", lambda: history["pixel_threshold"], {})]


def score(entry: dict) -> float:
    m = entry["metrics"]
    return float(np.mean([m["image_AUROC"], m["image_ClassAcc"], m["image_ClassAcc_anomalous"]]))


def with_discriminator_classes(results: dict) -> dict:
    """Adds ``<candidate>+mem<w>+disc`` entries (normal_memory.classify_on: discriminator) derived exactly from
    the measured ones: detection (I-AUROC, P-AUROC) is that of ``+mem<w>`` (same fused map), every accuracy that
    of ``+mem0`` (the class map thresholds the discriminator's own map, with its validation threshold, as at w = 0;
    tests/models/test_uniadc.py checks that identity)."""
    derived = dict(results)
    for entry in results.values():
        weight = entry.get("memory_weight")
        if not weight or entry["candidate"].endswith("+disc"):
            continue
        base_name = entry["candidate"].rsplit("+mem", 1)[0] + "+mem0"
        zero = results.get(f"{base_name}/{entry['setting']}/{entry['iterations']}")
        if zero is None:
            continue
        metrics = {**zero["metrics"], "image_AUROC": entry["metrics"]["image_AUROC"],
                   "pixel_AUROC": entry["metrics"]["pixel_AUROC"]}
        name = entry["candidate"] + "+disc"
        derived[f"{name}/{entry['setting']}/{entry['iterations']}"] = {**entry, "candidate": name, "metrics": metrics,
                                                                      "derived": True}
    return derived


def with_auto_defect_source(results: dict) -> dict:
    """Adds ``<candidate>+defauto<w>`` entries (defect_memory.source: auto) derived exactly from the measured ones:
    the ``real`` entry where the setting trains on real anomalies (few-shot) or the weight is 0, else the
    ``synthetic`` one (the prototypes are then identical; tests/models/test_uniadc.py checks what auto takes)."""
    derived = dict(results)
    for entry in results.values():
        few_shot = SETTINGS[entry["setting"]][0] == "few_shot"
        off = not entry.get("defect_weight")  # weight 0: every source is the discriminator's classes
        if entry.get("defect_source") != ("real" if few_shot or off else "synthetic") or entry.get("derived"):
            continue
        name = entry["candidate"].replace(f"+def{entry['defect_source']}", "+defauto")
        derived[f"{name}/{entry['setting']}/{entry['iterations']}"] = {**entry, "candidate": name,
                                                                      "defect_source": "auto", "derived": True}
    return derived


def report(results: dict, load: float) -> str:
    """The selection table, the per-candidate scores by iterations, and the rule."""
    memory = any(entry.get("memory_weight") is not None for entry in results.values())
    views = any(entry.get("memory_augment") for entry in results.values())
    defects = any(entry.get("defect_source") for entry in results.values())
    smoothing = any(entry.get("smoothing_sigma") is not None for entry in results.values())
    if memory:
        results = with_discriminator_classes(results)
    if defects:
        results = with_auto_defect_source(results)

    def pct(v):
        return "–" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"

    lines = [
        "Every choice below is made on a SELECTION SET outside test: the 95 `val` normals plus the `support` "
        "anomalies a setting does not train on (zero-shot: all 20 support images, 4 per type; few-shot Ka=1: "
        "support ranks 1–3, 15 images), with their masks (`train_uniadc.nodes.selection_rows`). The test split is "
        "not loaded into any metric. **In the zero-shot setting the selection set holds real anomalies from the "
        "support pool that the model never trains on** — a protocol choice of this project (the paper selected "
        "on test); it is small (115 / 110 images, 83–86 % normal), so differences of a few points are noise. "
        "With `train_uniadc.training.validation: support` the training selects its checkpoint on this very set, "
        "so its scores here are in-sample; validation sets are compared on test (`bench_uniadc.py`).",
        "",
        "Columns: selection-set I-AUROC / P-AUROC / Acc (paper rule: min-max over the selection set) / Acc (val "
        "thr: the threshold stored from validation) / fine Acc (anomalous images only), in %; ε = the learnt "
        "temperature at the selected epoch; fit = training time under load (another process on the cores, "
        f"1-min load {load:.1f}: not a timing). Rule: score = mean over zs1 and fs21 of mean(I-AUROC, Acc, fine "
        "Acc); a candidate replaces conf only if it beats `base` at the full 250 iterations. "
        + ("`base+sm<σ>` = conf/base when measured (normal memory 0.75 with classes on the discriminator map, "
           "defect memory auto 0.5) with that `smoothing_sigma`; `base+sm0` = conf as it was." if smoothing else
           "`base+def<source><w>` = conf/base when measured (normal memory weight 0.75, classes on the "
           "discriminator map) with that defect memory; `base+defreal0` = conf as it was." if defects else
           "`base+aug<views>` = conf/base when measured (normal memory weight 0.75, classes on the discriminator "
           "map) with those memory views; `base+augnone` = conf as it was." if views else
           "`base` = conf/base when measured (EfficientNet-Lite2, normal memory off: `base+mem0`); the winner "
           "became conf." if memory else
           "`base` = conf/base as it was when measured (EfficientNet-Lite0 and the current MTD priors); few-shot "
           "synthesis cuts and pastes the support regions and does not read the zero-shot priors, so "
           "`old_priors` on fs21 repeats `base`."),
        "",
        "| candidate | setting | iterations | I-AUROC | P-AUROC | Acc | Acc (val thr) | fine Acc | ε | best epoch "
        "| fit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in results.values():
        cand, key, iters = entry["candidate"], entry["setting"], entry["iterations"]
        m = entry["metrics"]
        lines.append(f"| {cand} | {key} | {iters} | " + " | ".join(pct(m[k]) for k in KEYS)
                     + f" | {entry['epsilon']:.3f} | {entry['best_epoch']} | "
                     + ("derived |" if entry.get("derived") else f"{entry['fit_s'] / 60:.1f} min |"))
    lines += ["", "Scores (rule above; both settings needed):", "",
              "| candidate | iterations | zs1 | fs21 | score |", "|---|---|---|---|---|"]
    grouped: dict[tuple[str, int], dict[str, float]] = {}
    for entry in results.values():
        grouped.setdefault((entry["candidate"], entry["iterations"]), {})[entry["setting"]] = score(entry)
    ranked = []
    for (cand, iters), by_setting in sorted(grouped.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        both = {"zs1", "fs21"} <= set(by_setting)
        total = float(np.mean([by_setting["zs1"], by_setting["fs21"]])) if both else None
        if both:
            ranked.append((total, cand, iters))
        lines.append(f"| {cand} | {iters} | {pct(by_setting.get('zs1'))} | {pct(by_setting.get('fs21'))} | "
                     f"{pct(total)} |")
    fitted = {entry["candidate"] for entry in results.values()}
    missing = [name for name in CANDIDATES if name not in fitted]
    if missing and not (memory or views or defects or smoothing):
        lines += ["", f"Defined in the script but not fitted in this table (time): {', '.join(missing)}."]
    full = sorted((r for r in ranked if r[2] == max(i for _, _, i in ranked)), reverse=True) if ranked else []
    if full:
        base = next((t for t, c, _ in full if c in ("base", "base+mem0", "base+augnone", "base+defreal0", "base+sm0")), None)
        margin = f"; `base` {100 * base:.1f}, margin {100 * (full[0][0] - base):+.1f} points" if base else ""
        lines += ["", f"Best at {full[0][2]} iterations: **{full[0][1]}** (score {100 * full[0][0]:.1f}{margin})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", default="base", help=f"comma-separated, a+b combines; known: {list(CANDIDATES)}")
    parser.add_argument("--settings", default="zs1,fs21")
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs (screening only)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--store", default="auto", help="an ingested ImageStore folder (as bench_uniadc)")
    parser.add_argument("--json", default=None, help="results file, merged with what it already holds")
    parser.add_argument("--from-json", default=None,
                        help="comma-separated results files (e.g. one process per candidate): only the report")
    parser.add_argument("--memory-weights", default=None,
                        help="comma-separated normal-memory weights scored on each fit (e.g. 0,0.25,0.5,0.75,1)")
    parser.add_argument("--memory-augments", default=None,
                        help="comma-separated normal-memory views scored on each fit at conf's weight "
                             "(e.g. none,flips,dihedral)")
    parser.add_argument("--defect-memory", default=None,
                        help="comma-separated source:weight of the defect memory scored on each fit "
                             "(e.g. real:0,real:0.5,real:1,all:1)")
    parser.add_argument("--classify-on", default=None, choices=["fused", "discriminator"],
                        help="with --defect-memory: normal_memory.classify_on for every variant (default: conf's)")
    parser.add_argument("--smoothing", default=None,
                        help="comma-separated smoothing_sigma values scored on each fit (e.g. 0,4,8)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    defect_variants = parse_defect_variants(args.defect_memory)
    memory_weights = [float(w) for w in args.memory_weights.split(",")] if args.memory_weights else None
    memory_augments = args.memory_augments.split(",") if args.memory_augments else None
    smoothings = [float(v) for v in args.smoothing.split(",")] if args.smoothing else None
    if sum(bool(x) for x in (memory_weights, memory_augments, defect_variants, smoothings)) > 1:
        parser.error("--memory-weights, --memory-augments, --defect-memory and --smoothing are separate selections: "
                     "give one")
    torch.set_num_threads(args.threads)
    results: dict = {}
    for name in (args.from_json or "").split(","):
        if name:
            results.update(json.loads(Path(name).read_text()))
    path = Path(args.json) if args.json else None
    if path and path.exists() and not args.from_json:
        results.update(json.loads(path.read_text()))
    if not args.from_json:
        device = pick_device("auto")
        store = load_mtd(args.store)
        cache: dict = {}
        for name, overrides in parse_candidates(args.candidates).items():
            for key in args.settings.split(","):
                t0 = time.perf_counter()
                entries = run_candidate(store, key, overrides, args.epochs, device, cache, memory_weights,
                                        memory_augments, defect_variants, args.classify_on, smoothings)
                for suffix, entry in entries.items():
                    entry.update(candidate=name + suffix, setting=key)
                    results[f"{name + suffix}/{key}/{entry['iterations']}"] = entry
                    print(name + suffix, key, entry["iterations"],
                          {k: round(v, 4) for k, v in entry["metrics"].items()},
                          f"eps {entry['epsilon']:.3f} best {entry['best_epoch']} fit {entry['fit_s']:.0f}s "
                          f"total {time.perf_counter() - t0:.0f}s", flush=True)
                if path:
                    path.write_text(json.dumps(results, indent=1, default=float))
    text = report(results, os.getloadavg()[0])
    print(text)
    if args.no_docs:
        return
    rss = ("not recorded by the run that made these numbers (--from-json)." if args.from_json
           else f"{peak_rss_mb():.0f} MB.")
    text += f"\n\nPeak RSS of the benchmark process (ru_maxrss, every model run of it together, data included): {rss}"
    if any(entry.get("smoothing_sigma") is not None for entry in results.values()):
        write_section(SMOOTHING_TITLE, smoothing_preamble() + "\n\n" + text,
                      command="python benchmarks/select_uniadc.py --candidates base --settings zs1,fs21 --threads 2 "
                      "--smoothing 0,2,4,8 --json ..., then --from-json")
    elif any(entry.get("defect_source") for entry in results.values()):
        write_section(DEFECT_TITLE, defect_preamble() + "\n\n" + text,
                      command="python benchmarks/select_uniadc.py --candidates base --settings zs1,fs21 --threads 2 "
                      "--defect-memory real:0,real:0.5,real:1,all:0.5,all:1,synthetic:0.5,synthetic:1 --json ..., then --from-json")
    elif any(entry.get("memory_augment") for entry in results.values()):
        write_section(VIEWS_TITLE, views_preamble() + "\n\n" + text,
                      command="python benchmarks/select_uniadc.py --candidates base --settings zs1,fs21 --threads 2 "
                      "--memory-augments none,flips,dihedral --json ..., then --from-json")
    elif any(entry.get("memory_weight") is not None for entry in results.values()):
        write_section(MEMORY_TITLE, memory_preamble() + "\n\n" + text,
                      command="python benchmarks/select_uniadc.py --candidates base --settings zs1,fs21 --threads 2 "
                      "--memory-weights 0,0.25,0.5,0.75,1 --json ..., then --from-json")
    else:
        write_section(TITLE, text, command="python benchmarks/select_uniadc.py --candidates <see table> "
                      "--settings zs1,fs21 --threads 1 --json ... (screens with --epochs 10), then --from-json")


def smoothing_preamble() -> str:
    return ("`train_uniadc.model.smoothing_sigma` (a project extension) Gaussian-smooths the discriminator's "
            "probability map (σ in pixels at 256²) before the fusion with the normal memory, the image score and "
            "the class map's threshold. Checkpoint selection reads the raw map, so one fit per setting scores every "
            "σ (`select_uniadc --smoothing`, `uniadc.set_map_smoothing`: the fusion's statistics and the thresholds "
            "are recomputed on validation for each). The paper's rule thresholds the discriminator's map at the "
            "midpoint of its min-max; the unsmoothed map flags most normal images there, and smoothing lowers "
            "narrow peaks more than extended defects. The trade: fewer normal images flagged, but also fewer "
            "pixels of small defects over the threshold (fine Acc falls with σ). The selection set is 83–86 % "
            "normal, the test split 43 %, so the rule weighs the normals' gain more than test does; the test run "
            "(\"UniADC on MTD\") checks the choice once. Same selection set, rule and caveats as in the section \"UniADC "
            "hyper-parameter selection\".")


def defect_preamble() -> str:
    return ("`train_uniadc.model.defect_memory` (a project extension) mixes into the class logits of the class map "
            "the cosine of each patch's embedding (the normal memory's) to one prototype per defect type, the mean "
            "embedding of that type's pixels in the training anomalies of `source` (`real`: the Ka few-shot "
            "support images, none in zero-shot; `synthetic`; `all`): (1 − w)·log softmax(discriminator) + "
            "w·log softmax(cos / 0.05). It is built after training and touches neither the anomaly map nor the "
            "thresholds, so one fit per setting scores every variant (`select_uniadc --defect-memory`, "
            "`uniadc.rebuild_defect_memory`) and only Acc and fine Acc can move (`base+defreal0` = conf as it was). "
            "`base+defauto<w>` rows (`source: auto`: real where the setting has real anomalies, else synthetic) are "
            "derived exactly from the measured ones (`select_uniadc.with_auto_defect_source`); `auto` was defined "
            "after the measured rows were seen, so the test run in \"UniADC on MTD\" checks it once. "
            "Same selection set, rule and caveats as in the section \"UniADC hyper-parameter selection\".")


def views_preamble() -> str:
    return ("`train_uniadc.model.normal_memory.augment` (a project extension) adds views of each of the Kn normal "
            "images to the memory: `flips` its horizontal, vertical and double flips (4 views), `dihedral` also "
            "the image turned by 90° and its flips (8 views). The memory is built after training, so one fit per "
            "setting scores every set of views (`select_uniadc --memory-augments`, `uniadc.rebuild_normal_memory`), "
            "each at conf's weight and `classify_on` (classes on the discriminator map: Acc cannot change with the "
            "views, the rule score moves with I-AUROC only). Same selection set, rule and caveats as in the section "
            "\"UniADC hyper-parameter selection\".")


def memory_preamble() -> str:
    return ("The normal memory (`train_uniadc.model.normal_memory`, a project extension) is built after training, "
            "so one fit per setting scores every weight: `base+mem<w>` = the conf of the run with weight w and "
            "`classify_on: fused` (`+mem0` = the paper's discriminator map alone). `+disc` rows "
            "(`classify_on: discriminator`: the anomaly map and image score are fused, the class map thresholds the "
            "discriminator's own map) are derived exactly, not fitted: I-AUROC and P-AUROC of `+mem<w>`, every "
            "accuracy of `+mem0` (`select_uniadc.with_discriminator_classes`). Same selection set, rule and caveats as in the section "
            "\"UniADC hyper-parameter selection\"; the table's `base` there is an older conf (Lite0).")


if __name__ == "__main__":
    main()
