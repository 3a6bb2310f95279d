"""Splits (train / val / test / support), K-shot ranks and class ids for the records of any layout."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from unified_anomaly.data.errors import DataProblem
from unified_anomaly.data.manifest import ANOMALY, NORMAL, NORMAL_CLASS

SPLIT_FILE_COLUMNS = ["image", "mask", "defect_type", "label", "split", "rank"]
NORMAL_ALIASES = {"good", "free", "normal", "ok"}


@dataclass(frozen=True)
class SplitRule:
    """How images are split when no split file pins the protocol.

    val_fraction: share of the training normals held out for validation (model and threshold selection).
    normal_fractions: train/val/test shares of the normals for layouts without their own train/test folders.
    support_per_defect: anomalies per defect type moved from test into the few-shot support pool.
    """

    seed: int = 0
    val_fraction: float = 0.1
    normal_fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)
    support_per_defect: int = 4


def category_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends on the seed and the keys only (not on the order categories are visited)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def class_lists(records: pd.DataFrame, defect_order: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """``{category: ["good", defect_1, ...]}``; the index is the class id written into masks.

    Ids given by the layout (MVTec-FS labels) win; otherwise the configured order, then alphabetical.
    """
    result: dict[str, list[str]] = {}
    defect_order = defect_order or {}
    for category, rows in records.groupby("category", sort=True):
        anomalies = rows[rows["label"] == ANOMALY]
        if (anomalies["class_id"] > 0).all() and len(anomalies):
            by_id = anomalies.drop_duplicates("class_id").set_index("class_id")["defect_type"].sort_index()
            names = [NORMAL_CLASS] + ["" for _ in range(int(by_id.index.max()))]
            for class_id, name in by_id.items():
                names[int(class_id)] = name
            result[str(category)] = [n or f"class_{i}" for i, n in enumerate(names)]
            continue
        present = sorted(set(anomalies["defect_type"]))
        preferred = [d for d in defect_order.get(str(category), []) if d in present]
        result[str(category)] = [NORMAL_CLASS] + preferred + [d for d in present if d not in preferred]
    return result


def assign_class_ids(records: pd.DataFrame, classes: dict[str, list[str]]) -> pd.DataFrame:
    records = records.copy()
    lookup = {(c, name): i for c, names in classes.items() for i, name in enumerate(names)}
    records["class_id"] = [
        lookup[(c, d)] if label == ANOMALY else 0
        for c, d, label in zip(records["category"], records["defect_type"], records["label"], strict=True)
    ]
    return records


def split_by_rule(records: pd.DataFrame, rule: SplitRule) -> pd.DataFrame:
    """Seeded split of records that carry the layout's own train/test (or none)."""
    parts = []
    # Layouts whose train list holds anomalies (MVTec-FS) have their support pool: the test set stays whole.
    own_pool = set(records[(records["label"] == ANOMALY) & (records["source_split"] == "train")]["category"])
    for (category, label, defect, source), rows in records.groupby(
        ["category", "label", "defect_type", "source_split"], sort=True
    ):
        rows = rows.sort_values("order")
        keep_file_order = source == "train" and label == ANOMALY  # MVTec-FS support: "first K rows" of the list
        order = np.arange(len(rows)) if keep_file_order else category_rng(rule.seed, category, defect, source).permutation(len(rows))
        rows = rows.iloc[order].copy()
        support = 0 if category in own_pool else rule.support_per_defect
        rows["split"] = _splits_for(len(rows), label, source, rule, support)
        parts.append(rows)
    out = pd.concat(parts, ignore_index=True) if parts else records.assign(split=[])
    out["rank"] = out.groupby(["category", "split", "defect_type"], sort=False).cumcount()
    return out


def _splits_for(n: int, label: str, source: str, rule: SplitRule, support_per_defect: int) -> list[str]:
    if label == NORMAL:
        if source == "train":
            n_val = _share(n, rule.val_fraction)
            return ["val"] * n_val + ["train"] * (n - n_val)
        if source == "test":
            return ["test"] * n
        train, val, _ = rule.normal_fractions
        n_train, n_val = int(round(n * train)), _share(n, val)
        n_train = min(n_train, n - n_val)
        return ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    if source == "train":
        return ["support"] * n
    n_support = min(support_per_defect, max(n - 1, 0))
    return ["support"] * n_support + ["test"] * (n - n_support)


def _share(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 2:
        return 0
    return min(max(1, int(round(n * fraction))), n - 1)


def split_by_file(records: pd.DataFrame, root: Path, split_file: Path, problems: DataProblem) -> pd.DataFrame:
    """Splits and ranks from a protocol file (``image,mask,defect_type,label,split,rank``, paths relative to root)."""
    table = pd.read_csv(split_file, keep_default_na=False, dtype=str)
    missing = [c for c in SPLIT_FILE_COLUMNS if c not in table.columns]
    if missing:
        raise DataProblem.single(split_file, f"split file lacks columns {missing}",
                                 f"give it the header {','.join(SPLIT_FILE_COLUMNS)}")
    bad_splits = sorted(set(table["split"]) - {"train", "val", "test", "support"})
    if bad_splits:
        problems.add(split_file, f"unknown split names {bad_splits}", "use train, val, test or support")
    by_path = records.set_index(records["image_path"].map(lambda p: str(Path(p).resolve())))
    rows = []
    for line_no, entry in enumerate(table.itertuples(index=False), start=2):
        image = str((root / entry.image).resolve())
        if image not in by_path.index:
            problems.add(root / entry.image, f"listed in {split_file.name} line {line_no} but not found in the dataset",
                         "fix the split file or restore the image")
            continue
        record = by_path.loc[image].to_dict()
        record["image_path"] = image
        record["split"] = entry.split
        try:
            record["rank"] = int(entry.rank)
        except ValueError:
            problems.add(split_file, f"line {line_no}: rank {entry.rank!r} is not an integer", "write whole numbers")
            record["rank"] = 0
        rows.append(record)
    return pd.DataFrame(rows, columns=[*records.columns, "split", "rank"])


def check_splits(manifest: pd.DataFrame, problems: DataProblem, need_val: bool) -> None:
    """Every category needs normal images in train and test (and val when validation is asked for)."""
    for category, rows in manifest.groupby("category", sort=True):
        normals = rows[rows["label"] == NORMAL]
        for split in ("train", "test") + (("val",) if need_val else ()):
            if not (normals["split"] == split).any():
                problems.add(f"category {category}", f"the {split} split has no normal images",
                             "add normal images or change the split parameters / split file")
