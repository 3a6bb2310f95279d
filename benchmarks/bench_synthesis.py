"""Synthesis speed: the procedural backend on real MTD normals at 256², zero-shot and few-shot.

    python benchmarks/bench_synthesis.py [--mtd ../shared/data/mtd] [--per-type 16] [--repeats 3]

Uses the project's ``conf/base/parameters_synthesize.yml`` (MTD priors, GAP-Lib masks, 4 pastes per few-shot
target) on the first ``kn`` training normals and the first support sample per defect type of ``split.csv``.
Decoding the images is not timed; foreground estimation, mask sampling, rendering and selection are.
Target: >= 20 images/s at 256² on this CPU (single process).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

def mtd_store(mtd: Path, kn: int, size: int):
    """An in-memory ImageStore: ``kn`` training normals and the first support sample per defect type."""
    from unified_anomaly.data.ingestion import build_manifest, load_store

    manifest, classes, _ = build_manifest(mtd, "mtd", layout="mtd")
    chosen = ((manifest["split"] == "train") & (manifest["rank"] < kn)) | (
        (manifest["split"] == "support") & (manifest["rank"] < 1)
    )
    return load_store(manifest[chosen], classes, size)


def measure(store, params: dict, repeats: int) -> dict:
    from unified_anomaly.synthesis.runner import synthesize_store

    synthesize_store(store, {**params, "images_per_type": 1})  # warm-up (imports, caches)
    times, count, candidates = [], 0, 0
    for repeat in range(repeats):
        start = time.perf_counter()
        _, metadata, _ = synthesize_store(store, {**params, "seed": repeat})
        times.append(time.perf_counter() - start)
        count, candidates = len(metadata), int(metadata["n_candidates"].iloc[0])
    median = statistics.median(times)
    return {
        "images": count,
        "candidates": candidates,
        "seconds": median,
        "best": min(times),
        "images_per_s": count / median,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mtd", type=Path, default=ROOT / ".." / "shared" / "data" / "mtd")
    parser.add_argument("--per-type", type=int, default=16)
    parser.add_argument("--kn", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--no-write", action="store_true", help="print the table, leave docs/benchmarks.md alone"
    )
    args = parser.parse_args()

    from report import write_section

    store = mtd_store(args.mtd.resolve(), args.kn, args.size)
    base = yaml.safe_load((ROOT / "conf" / "base" / "parameters_synthesize.yml").read_text())["synthesize"]
    base.update(backend="procedural", images_per_type=args.per_type, kn=args.kn, ka=1, progress=False)
    header = (
        "| setting | backend | images | candidates / image | median s | images/s (median) | images/s (best)"
    )
    lines = [
        header + " |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    results = {}
    for setting in ("zero_shot", "few_shot"):
        result = measure(store, {**base, "setting": setting}, args.repeats)
        results[setting] = result
        lines.append(
            f"| {setting} | procedural (no diffusion) | {result['images']} | {result['candidates']} | "
            f"{result['seconds']:.2f} | {result['images_per_s']:.1f} | "
            f"{result['images'] / result['best']:.1f} |"
        )
    slowest = min(r["images_per_s"] for r in results.values())
    notes = [
        f"Real MTD, {args.kn} training normals (first ranks of `split.csv`) and one support sample per",
        f"defect type, {args.size}², {args.per_type} images per defect type (5 types),",
        f"median of {args.repeats} runs after a warm-up, one process.",
        "Timed: foreground estimate, GAP-Lib mask sampling, rendering/pasting, selection",
        "(few-shot: SSIM over 4 pastes). Not timed: decoding, writing the store.",
        f"Target >= 20 images/s: {'met' if slowest >= 20 else 'NOT met'} (slowest setting {slowest:.1f}).",
        "The diffusion backend is not timed here: no inpainting weights are available offline.",
    ]
    body = "\n".join(lines) + "\n\n" + " ".join(notes)
    if args.no_write:
        print(body)
    else:
        write_section("Synthesis speed", body)


if __name__ == "__main__":
    main()
