"""Ingestion: any supported layout -> validated manifest -> streamed, resized image store."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from unified_anomaly.data.errors import DataProblem
from unified_anomaly.data.images import check_file, load_image, load_mask
from unified_anomaly.data.layouts import detect_layout, read_layout
from unified_anomaly.data.manifest import ANOMALY, normalise_manifest
from unified_anomaly.data.splits import (
    SplitRule,
    assign_class_ids,
    check_splits,
    class_lists,
    split_by_file,
    split_by_rule,
)
from unified_anomaly.data.store import ImageStore, ImageStream

logger = logging.getLogger(__name__)


def build_manifest(
    root: str | Path,
    dataset: str,
    layout: str = "auto",
    split_file: str | Path | None = None,
    rule: SplitRule | None = None,
    defect_order: dict[str, list[str]] | None = None,
) -> tuple[pd.DataFrame, dict[str, list[str]], str]:
    """Reads, splits and validates a dataset folder; raises one error listing every bad file.

    A split file is used when given, or when ``<root>/split.csv`` exists. Returns (manifest, class lists, layout).
    """
    root = Path(root).resolve()
    rule = rule or SplitRule()
    layout = detect_layout(root) if layout == "auto" else layout
    problems = DataProblem()
    records = read_layout(root, layout, problems)
    split_path = Path(split_file) if split_file else root / "split.csv"
    if split_file and not split_path.is_absolute():
        split_path = root / split_path
    if split_file and not split_path.is_file():
        raise DataProblem.single(split_path, "split file not found", "fix ingest.source.split_file or remove it")
    if split_path.is_file():
        logger.info("Splits of %s come from the protocol file %s", root, split_path)
        records = split_by_file(records, root, split_path, problems)
    else:
        logger.info("Splits of %s drawn by rule %s", root, rule)
        records = split_by_rule(records, rule)
    if records.empty:
        problems.add(root, "no images found", "check ingest.source.path and ingest.source.layout")
        problems.raise_if_any()
    classes = class_lists(records, defect_order)
    records = assign_class_ids(records, classes)
    sizes = _check_files(records, problems)
    records["width"] = [s[0] for s in sizes]
    records["height"] = [s[1] for s in sizes]
    records["dataset"] = dataset
    check_splits(records, problems, need_val=rule.val_fraction > 0 or (records["split"] == "val").any())
    problems.raise_if_any()
    return normalise_manifest(records.drop(columns=["source_split", "order"])), classes, layout


def _check_files(records: pd.DataFrame, problems: DataProblem) -> list[tuple[int, int]]:
    sizes = []
    for image, mask in tqdm(zip(records["image_path"], records["mask_path"], strict=True), total=len(records),
                            desc="checking files", unit="img", leave=False):
        size, error = check_file(image)
        if error:
            problems.add(image, error, "replace the file or remove it from the dataset")
        if mask:
            mask_size, mask_error = check_file(mask)
            if mask_error:
                problems.add(mask, f"mask: {mask_error}", "replace the mask")
            elif size and mask_size != size:
                problems.add(mask, f"mask is {mask_size[0]}x{mask_size[1]}, its image {size[0]}x{size[1]}",
                             "give the mask the image's size")
        sizes.append(size or (0, 0))
    return sizes


def stream_images(
    manifest: pd.DataFrame,
    class_names: dict[str, list[str]],
    size: int,
    class_valued_masks: bool = False,
    workers: int = 2,
    chunk_size: int = 64,
    extra: dict | None = None,
) -> ImageStream:
    """An :class:`ImageStream` that decodes and resizes in ``workers`` processes, chunk by chunk.

    Memory holds a few chunks at a time. A file that fails to decode is reported with all the others at the
    end, which makes the (atomic) write fail: nothing half-written remains.
    """
    jobs = [
        (manifest["image_path"].iloc[i : i + chunk_size].tolist(),
         manifest["mask_path"].iloc[i : i + chunk_size].tolist(),
         manifest["class_id"].iloc[i : i + chunk_size].tolist(),
         (manifest["label"].iloc[i : i + chunk_size] == ANOMALY).tolist(),
         size, class_valued_masks)
        for i in range(0, len(manifest), chunk_size)
    ]
    dataset = str(manifest["dataset"].iloc[0]) if len(manifest) else ""
    return ImageStream(manifest=manifest, chunks=_decode_chunks(jobs, workers, len(manifest)), class_names=class_names,
                       size=size, dataset=dataset, extra=extra or {})


def load_store(
    manifest: pd.DataFrame,
    class_names: dict[str, list[str]],
    size: int,
    class_valued_masks: bool = False,
    workers: int = 2,
) -> ImageStore:
    """The rows of ``manifest`` decoded and resized into an in-memory store (tests, benchmarks, notebooks)."""
    manifest = manifest.reset_index(drop=True)
    stream = stream_images(manifest, class_names, size, class_valued_masks=class_valued_masks, workers=workers)
    chunks = list(stream.chunks)
    images = np.concatenate([np.zeros((0, size, size, 3), np.uint8), *(c[0] for c in chunks)])
    masks = np.concatenate([np.zeros((0, size, size), np.uint8), *(c[1] for c in chunks)])
    return ImageStore(manifest, images, masks, class_names, size, stream.dataset, stream.extra)


def _decode_chunks(jobs: list, workers: int, total: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    problems = DataProblem()
    bar = tqdm(total=total, desc="decoding + resizing", unit="img")
    try:
        if workers > 1 and len(jobs) > 1:
            with multiprocessing.get_context("spawn" if _torch_threads_started() else "fork").Pool(workers) as pool:
                for images, masks, errors in pool.imap(_decode_chunk, jobs):
                    yield from _report(images, masks, errors, problems, bar)
        else:
            for job in jobs:
                yield from _report(*_decode_chunk(job), problems, bar)
    finally:
        bar.close()
    problems.raise_if_any()


def _report(images, masks, errors, problems: DataProblem, bar) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for path, message in errors:
        problems.add(path, message, "replace the file or remove it from the dataset")
    bar.update(len(images))
    yield images, masks


def _torch_threads_started() -> bool:
    import sys

    return "torch" in sys.modules


def _decode_chunk(job) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    image_paths, mask_paths, class_ids, is_anomaly, size, class_valued = job
    images = np.zeros((len(image_paths), size, size, 3), dtype=np.uint8)
    masks = np.zeros((len(image_paths), size, size), dtype=np.uint8)
    errors: list[tuple[str, str]] = []
    for i, (image, mask, class_id, anomalous) in enumerate(zip(image_paths, mask_paths, class_ids, is_anomaly, strict=True)):
        try:
            images[i] = load_image(image, size)
        except Exception as error:  # report every bad file, not just the first
            errors.append((image, f"cannot be decoded ({type(error).__name__}: {error})"))
        if mask and anomalous:
            try:
                masks[i] = load_mask(mask, size, class_id, class_valued)
            except Exception as error:
                errors.append((mask, f"mask cannot be decoded ({type(error).__name__}: {error})"))
    return images, masks, errors
