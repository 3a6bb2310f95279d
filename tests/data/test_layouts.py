from pathlib import Path

import numpy as np
import pytest

from conftest import write_image, write_mask
from unified_anomaly.data.ingestion import build_manifest, stream_images
from unified_anomaly.data.layouts import detect_layout
from unified_anomaly.data.splits import SplitRule
from unified_anomaly.data.store import read_store, write_store


def ingest(root: Path, tmp_path: Path, size=32, **kwargs):
    manifest, classes, layout = build_manifest(root, dataset=root.name, **kwargs)
    stream = stream_images(manifest, classes, size=size, class_valued_masks=layout == "mvtec_fs", workers=1, chunk_size=5)
    write_store(tmp_path / "store", stream)
    return read_store(tmp_path / "store"), layout


def test_mvtec_layout_counts_splits_and_masks(make_mvtec, tmp_path):
    root = make_mvtec(n_train=10)
    store, layout = ingest(root, tmp_path, rule=SplitRule(val_fraction=0.2, support_per_defect=1))
    assert layout == "mvtec"
    m = store.manifest
    assert store.class_names == {"bottle": ["good", "crack", "scratch"], "cable": ["good", "crack", "scratch"]}
    per = m.groupby(["category", "split", "label"]).size()
    assert per[("bottle", "train", "normal")] == 8 and per[("bottle", "val", "normal")] == 2
    assert per[("bottle", "test", "normal")] == 3
    assert per[("bottle", "support", "anomaly")] == 2 and per[("bottle", "test", "anomaly")] == 4
    assert store.images.shape == (len(m), 32, 32, 3) and store.masks.shape == (len(m), 32, 32)
    anomalous = m["label"].to_numpy() == "anomaly"
    assert all(set(np.unique(store.masks[i])) == {0, m["class_id"][i]} for i in np.flatnonzero(anomalous))
    assert store.masks[~anomalous].max() == 0
    # K-shot ranks: 0..n-1 inside each (category, split, defect type)
    ranks = m[(m.category == "bottle") & (m.split == "train")]["rank"].sort_values().tolist()
    assert ranks == list(range(8))


def test_same_seed_same_split_other_seed_other_split(make_mvtec):
    root = make_mvtec(n_train=12)
    a, _, _ = build_manifest(root, "x", rule=SplitRule(seed=1))
    b, _, _ = build_manifest(root, "x", rule=SplitRule(seed=1))
    c, _, _ = build_manifest(root, "x", rule=SplitRule(seed=2))
    assert a.equals(b)
    assert not a[["image_path", "split", "rank"]].equals(c[["image_path", "split", "rank"]])


def test_wfdd_is_read_as_mvtec_layout(make_mvtec, tmp_path):
    fabrics = ("grey_cloth", "grid_cloth", "pink_flower", "yellow_cloth")
    root = make_mvtec("wfdd", categories=fabrics, defects=("stain", "string"))
    store, layout = ingest(root, tmp_path)
    assert layout == "mvtec"
    assert store.categories == sorted(fabrics)
    assert set(store.manifest["defect_type"]) == {"good", "stain", "string"}


def test_mvtec_fs_class_valued_masks_and_support_from_train_list(make_mvtec_fs, tmp_path):
    root = make_mvtec_fs()
    store, layout = ingest(root, tmp_path, rule=SplitRule(val_fraction=0.2))
    assert layout == "mvtec_fs"
    assert store.class_names["bottle"] == ["good", "broken_large", "contamination"]
    m = store.manifest
    support = m[m.split == "support"]
    assert len(support) == 4 and set(support["class_id"]) == {1, 2}
    # the first K rows of the list, in file order
    assert support[support.defect_type == "contamination"].sort_values("rank")["image_path"].str.endswith(
        ("contamination_0.png", "contamination_1.png")).all()
    for i in np.flatnonzero(m["label"].to_numpy() == "anomaly"):
        assert set(np.unique(store.masks[i])) == {0, m["class_id"][i]}


def test_mtd_native_layout_without_split_file_follows_the_rule(tmp_path):
    root = tmp_path / "mtd"
    for i in range(20):
        write_image(root / "MT_Free" / "Imgs" / f"free_{i}.jpg", mode="L", seed=i)
        write_mask(root / "MT_Free" / "Imgs" / f"free_{i}.png", box=(0, 0, 0, 0))
    for defect in ("Blowhole", "Crack"):
        for i in range(6):
            write_image(root / f"MT_{defect}" / "Imgs" / f"{defect}_{i}.jpg", mode="L", seed=100 + i)
            write_mask(root / f"MT_{defect}" / "Imgs" / f"{defect}_{i}.png")
    assert detect_layout(root) == "mtd"
    manifest, classes, _ = build_manifest(root, "mtd", rule=SplitRule(support_per_defect=4))
    assert classes == {"magnetic_tile": ["good", "blowhole", "crack"]}
    normal = manifest[manifest.label == "normal"]["split"].value_counts().to_dict()
    assert normal == {"train": 12, "val": 2, "test": 6}
    anomalous = manifest[manifest.label == "anomaly"].groupby(["defect_type", "split"]).size().to_dict()
    assert anomalous == {("blowhole", "support"): 4, ("blowhole", "test"): 2, ("crack", "support"): 4, ("crack", "test"): 2}


def test_split_file_pins_the_protocol_for_any_layout(make_mvtec, tmp_path):
    root = make_mvtec(categories=("bottle",), n_train=4)
    lines = ["image,mask,defect_type,label,split,rank"]
    for i in range(4):
        lines.append(f"bottle/train/good/{i:03d}.png,,good,normal,{'val' if i == 0 else 'train'},{max(i - 1, 0)}")
    lines.append("bottle/test/good/000.png,,good,normal,test,0")
    lines.append("bottle/test/crack/000.png,bottle/ground_truth/crack/000_mask.png,crack,anomaly,support,0")
    lines.append("bottle/test/crack/001.png,bottle/ground_truth/crack/001_mask.png,crack,anomaly,test,0")
    (root / "protocol.csv").write_text("\n".join(lines) + "\n")
    manifest, _, _ = build_manifest(root, "pinned", split_file="protocol.csv")
    assert len(manifest) == 7
    assert manifest.groupby("split").size().to_dict() == {"support": 1, "test": 2, "train": 3, "val": 1}


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_rgba_and_16_bit_images_are_converted(make_mvtec, tmp_path, mode):
    root = make_mvtec(categories=("bottle",))
    write_image(root / "bottle" / "train" / "good" / "000.png", mode=mode, seed=9)
    store, _ = ingest(root, tmp_path)
    row = np.flatnonzero(store.manifest["image_path"].str.endswith("train/good/000.png"))[0]
    image = store.images[row]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert image.std() > 10  # real content survived the conversion (not a flat or saturated image)
    if mode in {"L", "I;16"}:
        assert (image[..., 0] == image[..., 1]).all()
