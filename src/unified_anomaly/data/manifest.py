"""The manifest table: one row per image, the same columns for every data layout."""

from __future__ import annotations

import pandas as pd

SPLITS = ("train", "val", "test", "support")
NORMAL = "normal"
ANOMALY = "anomaly"
NORMAL_CLASS = "good"

MANIFEST_COLUMNS = [
    "dataset",  # name of the source dataset (mtd, mvtec, default, ...)
    "category",  # object / texture category; the unit of per-category metrics
    "split",  # train | val | test | support (few-shot anomaly pool)
    "rank",  # order inside (category, split, defect_type): a K-shot setting takes ranks 0..K-1
    "label",  # normal | anomaly
    "defect_type",  # "good" for normal images, else the defect type's name
    "class_id",  # 0 = normal, 1..C = index of defect_type in the category's class list
    "image_path",  # absolute path of the source image
    "mask_path",  # absolute path of the source mask ("" when none)
    "width",  # source size, before resizing
    "height",
]


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in MANIFEST_COLUMNS})


def _dtype(column: str) -> str:
    return "int64" if column in {"rank", "class_id", "width", "height"} else "object"


def normalise_manifest(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns first (extra columns such as synthesis metadata kept after them), rows in a stable order."""
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest is missing columns {missing}")
    extras = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    frame = frame[MANIFEST_COLUMNS + extras].copy()
    for column in MANIFEST_COLUMNS:
        frame[column] = frame[column].astype(_dtype(column))
    order = {s: i for i, s in enumerate(SPLITS)}
    frame["_split_order"] = frame["split"].map(order)
    frame = frame.sort_values(["category", "_split_order", "defect_type", "rank", "image_path"], kind="stable")
    return frame.drop(columns="_split_order").reset_index(drop=True)


def class_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per category, split, label and defect type: the table logged with every ingestion."""
    counts = manifest.groupby(["category", "split", "label", "defect_type"], sort=True).size()
    return counts.rename("images").reset_index()
