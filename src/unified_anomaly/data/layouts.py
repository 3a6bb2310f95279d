"""Readers for the supported folder layouts. Each returns a table of *records*, one per image, before splits.

A record has: category, source_split (train | test | "" when the layout defines none), label, defect_type,
class_id (-1 = to be assigned from the class list), image_path, mask_path, order (file order).

Layouts:
- ``mvtec``: ``<cat>/train/good``, ``<cat>/test/<defect>``, ``<cat>/ground_truth/<defect>/<stem>_mask.png``
  (MVTec AD, WFDD and any folder in that layout);
- ``mvtec_fs``: images plus ``samples/{train,test}_<cat>.jsonl`` (filename, maskname, label, label_name;
  mask pixel value = class id);
- ``mtd``: ``MT_<Class>/Imgs/<stem>.jpg`` with a same-stem ``.png`` mask (``MT_Free`` = normal).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from unified_anomaly.data.errors import DataProblem
from unified_anomaly.data.manifest import ANOMALY, NORMAL, NORMAL_CLASS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
LAYOUTS = ("mvtec", "mvtec_fs", "mtd")
MTD_CATEGORY = "magnetic_tile"
RECORD_COLUMNS = ["category", "source_split", "label", "defect_type", "class_id", "image_path", "mask_path", "order"]


def detect_layout(root: Path) -> str:
    """Guesses the layout of ``root`` from its folder structure."""
    if not root.is_dir():
        raise DataProblem.single(root, "the dataset folder does not exist", "set ingest.source.path to an existing folder")
    if (root / "samples").is_dir() and any((root / "samples").glob("*.jsonl")):
        return "mvtec_fs"
    if any(p.is_dir() and p.name.startswith("MT_") for p in root.iterdir()):
        return "mtd"
    if any((p / "train").is_dir() and (p / "test").is_dir() for p in root.iterdir() if p.is_dir()):
        return "mvtec"
    raise DataProblem.single(
        root,
        "unknown layout: neither MVTec (<cat>/train, <cat>/test), MVTec-FS (samples/*.jsonl) nor MTD (MT_<Class>/Imgs)",
        "arrange the folder in one of these layouts or set ingest.source.layout",
    )


def read_layout(root: Path, layout: str, problems: DataProblem) -> pd.DataFrame:
    readers = {"mvtec": read_mvtec, "mvtec_fs": read_mvtec_fs, "mtd": read_mtd}
    if layout not in readers:
        raise DataProblem.single(root, f"unknown layout {layout!r}", f"use one of {', '.join(LAYOUTS)} or auto")
    records = readers[layout](root, problems)
    return pd.DataFrame(records, columns=RECORD_COLUMNS)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_mvtec(root: Path, problems: DataProblem) -> list[dict]:
    records: list[dict] = []
    categories = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for category_dir in categories:
        if not ((category_dir / "train").is_dir() or (category_dir / "test").is_dir()):
            continue
        category = category_dir.name
        before = len(records)
        for split in ("train", "test"):
            split_dir = category_dir / split
            if not split_dir.is_dir():
                continue
            for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                defect = defect_dir.name
                is_normal = defect == NORMAL_CLASS
                for image in _images_in(defect_dir):
                    mask = ""
                    if not is_normal:
                        candidate = category_dir / "ground_truth" / defect / f"{image.stem}_mask.png"
                        if candidate.is_file():
                            mask = str(candidate)
                        else:
                            problems.add(image, f"mask missing (expected {candidate})", "add the mask or remove the image")
                    records.append(_record(category, split, is_normal, defect, image, mask, len(records)))
            if split == "train":
                for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and p.name != NORMAL_CLASS):
                    problems.add(defect_dir, "MVTec train folders hold normal images only", "move it under test/")
        _check_orphan_masks(category_dir, problems)
        if len(records) == before:
            problems.add(category_dir, "empty category: no images", "add images or remove the folder")
    return records


def _check_orphan_masks(category_dir: Path, problems: DataProblem) -> None:
    gt = category_dir / "ground_truth"
    if not gt.is_dir():
        return
    for defect_dir in sorted(p for p in gt.iterdir() if p.is_dir()):
        for mask in _images_in(defect_dir):
            stem = mask.stem.removesuffix("_mask")
            test_dir = category_dir / "test" / defect_dir.name
            if not any((test_dir / f"{stem}{suffix}").is_file() for suffix in IMAGE_SUFFIXES):
                problems.add(mask, f"mask without an image (no {test_dir}/{stem}.*)", "add the image or delete the mask")


def read_mvtec_fs(root: Path, problems: DataProblem) -> list[dict]:
    records: list[dict] = []
    lists = sorted((root / "samples").glob("*.jsonl"))
    categories = sorted({p.stem.split("_", 1)[1] for p in lists if "_" in p.stem})
    for category in categories:
        before = len(records)
        for split in ("train", "test"):
            sample_file = root / "samples" / f"{split}_{category}.jsonl"
            if not sample_file.is_file():
                continue
            for line_no, line in enumerate(sample_file.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    filename, label, label_name = entry["filename"], int(entry["label"]), str(entry["label_name"])
                except (json.JSONDecodeError, KeyError, ValueError) as error:
                    problems.add(sample_file, f"line {line_no} is not a valid sample record ({error})",
                                 "each line needs filename, maskname, label, label_name")
                    continue
                image = root / filename
                if not image.is_file():
                    problems.add(image, f"listed in {sample_file.name} line {line_no} but missing", "fix the list or add the file")
                    continue
                mask = ""
                if label != 0:
                    maskname = entry.get("maskname") or ""
                    if not maskname or not (root / maskname).is_file():
                        problems.add(image, f"mask missing ({maskname or 'no maskname'})", "add the mask or fix the list")
                    else:
                        mask = str(root / maskname)
                is_normal = label == 0
                defect = NORMAL_CLASS if is_normal else label_name
                record = _record(category, split, is_normal, defect, image, mask, len(records))
                record["class_id"] = label
                records.append(record)
        if len(records) == before:
            problems.add(root / "samples", f"empty category {category!r}: its sample lists hold no images",
                         "add samples or remove the lists")
    return records


def read_mtd(root: Path, problems: DataProblem) -> list[dict]:
    records: list[dict] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("MT_")):
        folder = class_dir / "Imgs" if (class_dir / "Imgs").is_dir() else class_dir
        defect = class_dir.name.removeprefix("MT_").lower()
        is_normal = defect == "free"
        images = [p for p in _images_in(folder) if p.suffix.lower() != ".png"]
        if not images:
            problems.add(class_dir, "empty class: no .jpg images", "add images or remove the folder")
        stems = {p.stem for p in images}
        for image in images:
            mask = image.with_suffix(".png")
            if not mask.is_file():
                if not is_normal:
                    problems.add(image, f"mask missing (expected {mask.name})", "add the mask or remove the image")
                mask_path = ""
            else:
                mask_path = str(mask)
            records.append(_record(MTD_CATEGORY, "", is_normal, NORMAL_CLASS if is_normal else defect, image,
                                   "" if is_normal else mask_path, len(records)))
        for mask in sorted(folder.glob("*.png")):
            if mask.stem not in stems:
                problems.add(mask, "mask without an image (no .jpg of the same stem)", "add the image or delete the mask")
    return records


def _record(category: str, split: str, is_normal: bool, defect: str, image: Path, mask: str, order: int) -> dict:
    return {
        "category": category,
        "source_split": split,
        "label": NORMAL if is_normal else ANOMALY,
        "defect_type": NORMAL_CLASS if is_normal else defect,
        "class_id": 0 if is_normal else -1,
        "image_path": str(image),
        "mask_path": mask,
        "order": order,
    }
