"""Ingestion nodes: orchestration only; the work lives in ``unified_anomaly.data``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from unified_anomaly.data.default_dataset import ensure_default_dataset
from unified_anomaly.data.ingestion import build_manifest, stream_images
from unified_anomaly.data.manifest import class_counts
from unified_anomaly.data.splits import SplitRule
from unified_anomaly.data.store import ImageStream

logger = logging.getLogger(__name__)


def scan_dataset(params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Reads the configured folder, splits and validates it: one error lists every bad file before any work."""
    source = params["source"]
    root = Path(source["path"])
    if source.get("layout") == "default":
        root = ensure_default_dataset(root, **params.get("default_dataset", {}))
    split = params["split"]
    rule = SplitRule(
        seed=int(split["seed"]),
        val_fraction=float(split["val_fraction"]),
        normal_fractions=tuple(float(x) for x in split["normal_fractions"]),
        support_per_defect=int(split["support_per_defect"]),
    )
    layout = "mvtec" if source.get("layout") == "default" else source.get("layout", "auto")
    manifest, classes, layout = build_manifest(
        root, dataset=source["name"], layout=layout, split_file=source.get("split_file"), rule=rule,
        defect_order=params.get("defect_order"),
    )
    counts = class_counts(manifest)
    logger.info("Ingesting %s (%s layout, %d images):\n%s", root, layout, len(manifest),
                counts.pivot_table(index=["category", "defect_type"], columns="split", values="images",
                                   aggfunc="sum", fill_value=0).to_string())
    info = {"dataset": source["name"], "root": str(root.resolve()), "layout": layout, "class_names": classes,
            "image_size": int(params["image_size"]), "shots": dict(params.get("shots", {}))}
    return manifest, info, counts


def decode_images(manifest: pd.DataFrame, info: dict[str, Any], params: dict[str, Any]) -> ImageStream:
    """Decodes and resizes every image and mask, streamed in chunks into the versioned image store."""
    return stream_images(
        manifest,
        class_names=info["class_names"],
        size=int(params["image_size"]),
        class_valued_masks=info["layout"] == "mvtec_fs",
        workers=int(params["workers"]),
        chunk_size=int(params["chunk_size"]),
        extra={"layout": info["layout"], "root": info["root"], "shots": info["shots"]},
    )
