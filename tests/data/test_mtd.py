"""The real MTD, ingested from ../shared/data/mtd with its protocol file."""

import numpy as np
import pytest

from unified_anomaly.data.ingestion import build_manifest, stream_images
from unified_anomaly.data.store import read_store, write_store

pytestmark = pytest.mark.integration

EMPTY_UNEVEN = {"exp3_num_45042", "exp4_num_124690", "exp4_num_352527", "exp4_num_45057"}


@pytest.fixture(scope="module")
def mtd_store(tmp_path_factory, mtd_root):
    root = mtd_root
    manifest, classes, layout = build_manifest(root, "mtd", defect_order={"magnetic_tile": ["blowhole", "break", "crack", "fray", "uneven"]})
    path = tmp_path_factory.mktemp("mtd") / "store"
    write_store(path, stream_images(manifest, classes, size=64, workers=2))
    return read_store(path), layout


def test_counts_per_class_and_split_match_the_readme(mtd_store):
    store, layout = mtd_store
    m = store.manifest
    assert layout == "mtd" and store.categories == ["magnetic_tile"]
    normal = m[m.label == "normal"]["split"].value_counts().to_dict()
    assert normal == {"train": 571, "val": 95, "test": 286}
    anomalous = m[m.label == "anomaly"]
    assert len(anomalous) == 392
    assert anomalous["split"].value_counts().to_dict() == {"test": 372, "support": 20}
    assert anomalous.groupby("defect_type").size().to_dict() == {"blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103}
    assert (anomalous[anomalous.split == "support"].groupby("defect_type").size() == 4).all()
    assert store.class_names["magnetic_tile"] == ["good", "blowhole", "break", "crack", "fray", "uneven"]


def test_splits_are_disjoint_and_ranks_follow_the_protocol(mtd_store):
    m = mtd_store[0].manifest
    assert m["image_path"].is_unique
    for (split, defect), rows in m.groupby(["split", "defect_type"]):
        assert sorted(rows["rank"]) == list(range(len(rows))), (split, defect)


def test_four_uneven_masks_are_empty_and_all_other_anomalies_have_pixels(mtd_store):
    store, _ = mtd_store
    m = store.manifest
    anomalous = np.flatnonzero(m["label"].to_numpy() == "anomaly")
    empty = {m["image_path"][i].rsplit("/", 1)[-1].removesuffix(".jpg") for i in anomalous if store.masks[i].max() == 0}
    # resizing to 64² never makes a defect vanish: exactly the README's four empty masks are empty
    assert empty == EMPTY_UNEVEN
    assert store.masks[np.flatnonzero(m["label"].to_numpy() == "normal")].max() == 0
