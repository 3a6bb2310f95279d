"""Speed and peak memory of all image + pixel metrics on MTD-test-sized data (658 × 256 × 256 = 43 M pixels).

Masks: the REAL MTD test masks (``../shared/data/mtd/split.csv``, split ``test``), resized to 256² (bilinear,
then >= 128); when the dataset is absent, synthetic rectangles with the same image count. Anomaly maps are
SYNTHETIC (no model is run): smooth noise (16² upsampled) plus the blurred mask, float32, and one image score
per map (its maximum). Only the metric computation is timed, not the data preparation.

Measurement: a fresh subprocess loads the arrays, records its resident memory, runs the metrics once (peak
RSS from ``resource.getrusage``: the whole process, inputs included) and then ``--repeats`` timed runs
(wall clock, ``time.perf_counter``). Run from the project root::

    python benchmarks/bench_metrics.py [--repeats 3] [--no-docs]

It prints a Markdown table and writes/replaces the ``## Metrics speed`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from report import replace_section  # the script folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
MTD = ROOT / ".." / "shared" / "data" / "mtd"
SIZE = 256
N_IMAGES = 658
SECTION = "## Metrics speed"


def load_masks(size: int = SIZE) -> tuple[np.ndarray, np.ndarray, str]:
    """(masks uint8 N×S×S, image labels, description of the source)."""
    split = MTD / "split.csv"
    if split.is_file():
        import pandas as pd
        from PIL import Image

        rows = pd.read_csv(split)
        rows = rows[rows["split"] == "test"].reset_index(drop=True)
        masks = np.zeros((len(rows), size, size), dtype=np.uint8)
        for i, row in rows.iterrows():
            if row["label"] == "anomaly" and isinstance(row["mask"], str):
                image = Image.open(MTD / row["mask"]).convert("L").resize((size, size), Image.BILINEAR)
                masks[i] = np.asarray(image) >= 128
        labels = (rows["label"] == "anomaly").to_numpy().astype(np.uint8)
        return masks, labels, f"real MTD test masks ({len(rows)} images, resized to {size}², >=128)"
    rng = np.random.default_rng(0)
    masks = np.zeros((N_IMAGES, size, size), dtype=np.uint8)
    labels = np.zeros(N_IMAGES, dtype=np.uint8)
    for i in range(286, N_IMAGES):
        h, w = rng.integers(4, 80, 2)
        y, x = rng.integers(0, size - 80, 2)
        masks[i, y : y + h, x : x + w] = 1
        labels[i] = 1
    return masks, labels, f"synthetic rectangles (MTD absent; {N_IMAGES} images of {size}²)"


def synthetic_maps(masks: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth noise plus a blurred copy of the mask: AUROC well above 0.5, not perfect, few exact ties."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    n, size, _ = masks.shape
    maps = np.empty(masks.shape, dtype=np.float32)
    for i in range(n):
        noise = ndimage.zoom(rng.normal(size=(16, 16)).astype(np.float32), size / 16, order=1)
        signal = ndimage.gaussian_filter(masks[i].astype(np.float32), 4)
        maps[i] = 0.5 * noise + 2.0 * signal + 0.05 * rng.normal(size=(size, size)).astype(np.float32)
    return maps


def child(data_dir: str, repeats: int) -> None:
    """Runs inside the measured subprocess; prints one JSON line."""
    import resource
    import time

    import psutil

    from unified_anomaly.metrics import compute_metrics

    folder = Path(data_dir)
    maps = np.load(folder / "maps.npy")
    masks = np.load(folder / "masks.npy")
    labels = np.load(folder / "labels.npy")
    scores = maps.reshape(len(maps), -1).max(axis=1)
    rss_inputs = psutil.Process().memory_info().rss
    times, cpu_times, metrics = [], [], {}
    for _ in range(1 + repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        metrics = compute_metrics(scores, labels, maps, masks)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"times": times, "cpu_times": cpu_times, "peak_rss": peak, "rss_inputs": rss_inputs,
                      "input_bytes": int(maps.nbytes + masks.nbytes), "metrics": metrics}))


def run(repeats: int) -> dict:
    masks, labels, source = load_masks()
    maps = synthetic_maps(masks)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "maps.npy", maps)
        np.save(Path(tmp) / "masks.npy", masks)
        np.save(Path(tmp) / "labels.npy", labels)
        del maps
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = subprocess.run([sys.executable, __file__, "--child", tmp, "--repeats", str(repeats)],
                             check=True, capture_output=True, text=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(source=source, n_images=int(masks.shape[0]), pixels=int(masks.size),
                  anomalous_pixel_fraction=float((masks > 0).mean()))
    return result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(result: dict, command: str) -> str:
    mib = 1024**2
    timed = result["times"][1:] or result["times"]
    cpu_timed = result["cpu_times"][1:] or result["cpu_times"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        SECTION,
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; machine: {cpu_model()}, "
        f"{os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}, "
        f"numpy {np.__version__}; device: CPU (metrics are numpy); 1-min load average at the end: {load:.2f}",
        f"- data: {result['source']}; {result['pixels'] / 1e6:.1f} M pixels, "
        f"{100 * result['anomalous_pixel_fraction']:.2f} % anomalous; anomaly maps synthetic float32",
        "- measured: `compute_metrics` (image AUROC/AP/F1Max + pixel AUROC/AP/F1Max/AUPRO) in a fresh process; "
        "wall time of the runs after a first run (reported apart); CPU time = process time summed over its threads "
        "(less sensitive to other jobs on the machine); peak RSS = `ru_maxrss` of the whole process, inputs included",
        "",
        "| metric set | wall time, median (s) | wall time, best (s) | first run (s) | CPU time, median (s) | "
        "peak RSS (MiB) | RSS with inputs loaded (MiB) | inputs (MiB) |",
        "|---|---|---|---|---|---|---|---|",
        f"| all image + pixel metrics | {np.median(timed):.2f} | {min(timed):.2f} | {result['times'][0]:.2f} | "
        f"{np.median(cpu_timed):.2f} | {result['peak_rss'] / mib:.0f} | {result['rss_inputs'] / mib:.0f} | "
        f"{result['input_bytes'] / mib:.0f} |",
        "",
        "Target: all pixel and image metrics of the MTD test set in < 2 s wall and < 1 GB peak memory on the "
        "2-core CPU (anomalib 2.7: 16-19 s, ~4 GB). A load average above the core count means other jobs shared "
        "the CPU during the measurement: re-run on a quiet machine for the reference numbers.",
        "",
        "Metric values on these synthetic maps (sanity only): "
        + ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true", help="print only; do not touch docs/benchmarks.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.repeats)
        return
    result = run(args.repeats)
    text = markdown(result, "python benchmarks/bench_metrics.py" + (f" --repeats {args.repeats}"))
    print(text)
    if not args.no_docs:
        replace_section(text)


if __name__ == "__main__":
    main()
