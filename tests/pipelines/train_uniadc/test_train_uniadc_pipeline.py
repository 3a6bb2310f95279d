"""train_uniadc on tiny in-memory stores: K-shot selection, a trained bundle that reloads, no test data used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from unified_anomaly.data.manifest import MANIFEST_COLUMNS, normalise_manifest
from unified_anomaly.data.store import ImageStore
from unified_anomaly.models.bundle import load_bundle, save_bundle
from unified_anomaly.pipelines.train_uniadc import create_pipeline
from unified_anomaly.pipelines.train_uniadc.nodes import (
    select_training_data,
    selection_rows,
    synthetic_class_map,
    validation_used,
)

SIZE = 32
CLASSES = {"tile": ["good", "crack", "hole"], "cloth": ["good", "stain"]}


def _row(category, split, rank, label, defect, class_id):
    return {"dataset": "toy", "category": category, "split": split, "rank": rank, "label": label,
            "defect_type": defect, "class_id": class_id, "image_path": f"/x/{category}/{split}/{defect}/{rank}.png",
            "mask_path": "", "width": SIZE, "height": SIZE}


def _store(rows: list[dict], seed: int, class_names=CLASSES) -> ImageStore:
    manifest = normalise_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS))
    rng = np.random.default_rng(seed)
    n = len(manifest)
    images = rng.integers(100, 140, (n, SIZE, SIZE, 3)).astype(np.uint8)
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    for i, row in manifest.iterrows():
        if row["class_id"]:
            y, x = rng.integers(2, SIZE - 10, 2)
            masks[i, y : y + 8, x : x + 8] = row["class_id"]
            images[i, y : y + 8, x : x + 8] = 240 if row["class_id"] == 1 else 10
    return ImageStore(manifest, images, masks, {k: list(v) for k, v in class_names.items()}, SIZE, "toy")


@pytest.fixture()
def stores():
    rows = []
    for category, names in CLASSES.items():
        rows += [_row(category, "train", r, "normal", "good", 0) for r in range(4)]
        rows += [_row(category, "val", r, "normal", "good", 0) for r in range(3)]
        rows += [_row(category, "test", r, "normal", "good", 0) for r in range(2)]
        for cid, defect in enumerate(names[1:], start=1):
            rows += [_row(category, "support", r, "anomaly", defect, cid) for r in range(2)]
            rows += [_row(category, "test", r, "anomaly", defect, cid) for r in range(2)]
    ingested = _store(rows, 0)
    # the synthetic store lists classes in another order: matched by name
    synthetic_classes = {"tile": ["good", "hole", "crack"], "cloth": ["good", "stain"]}
    synth_rows = []
    for category, names in synthetic_classes.items():
        for cid, defect in enumerate(names[1:], start=1):
            synth_rows += [_row(category, "train", r, "anomaly", defect, cid) for r in range(5)]
    return ingested, _store(synth_rows, 1, synthetic_classes)


def _params(setting="zero_shot", kn=2, ka=1, validation="synthetic"):
    return {
        "setting": setting, "kn": kn, "ka": ka, "categories": None, "seed": 0, "device": "cpu",
        "val_synthetic_fraction": 0.2, "synthetic_filter": {},
        "encoder": {"kind": "cnn", "name": "tiny_cnn", "weights": "random", "out_indices": [1, 2, 3]},
        "text_encoder": {"kind": "random", "dim": 8, "seed": 0},
        "templates": ["a photo of {}"], "extra_prompts": {},
        "model": {"fusion_dim": 8, "fusion_stride": 4, "resolution": SIZE, "top_k": 100},
        "training": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "eval_every": 1, "selection": "best_val",
                     "validation": validation},
    }


def test_selection_follows_kn_ka_and_never_reads_test(stores):
    ingested, synthetic = stores
    train, val, summary = select_training_data(ingested, synthetic, _params("few_shot", kn=2, ka=1))
    # per category: 2 normals + 1 support per type + 4 of 5 synthetic per type
    assert summary["tile"] == {"normals": 2, "support": 2, "synthetic_train": 8, "synthetic_val": 2, "val_normals": 3,
                               "support_val": 0, "validation": "synthetic"}
    assert summary["cloth"]["support"] == 1 and summary["cloth"]["synthetic_train"] == 4
    assert len(train) == (2 + 2 + 8) + (2 + 1 + 4)
    assert train.is_real.sum() == 2 + 2 + 2 + 1
    # global ids, categories in sorted order: cloth stain=1, tile crack=2, tile hole=3
    assert set(np.unique(train.masks)) == {0, 1, 2, 3}
    tile = [m for m, c, real in zip(train.masks, train.categories, train.is_real, strict=True) if c == "tile"]
    assert {int(v) for m in tile for v in np.unique(m)} == {0, 2, 3}
    # synthetic "hole" is local id 1 in the synthetic store: it must become global 3, like the real holes
    assert synthetic_class_map(synthetic, ingested, {"cloth": 0, "tile": 1}) == {
        ("tile", 1): 3, ("tile", 2): 2, ("cloth", 1): 1}
    synthetic_tile = [m for m, c, real in zip(train.masks, train.categories, train.is_real, strict=True)
                      if c == "tile" and not real]
    assert {int(m.max()) for m in synthetic_tile} == {2, 3}
    assert len(val) == 3 + 2 + 3 + 1
    zero, _, zero_summary = select_training_data(ingested, synthetic, _params("zero_shot", kn=1))
    assert zero_summary["tile"]["support"] == 0 and zero.is_real.sum() == 2


def _with_sources(synthetic: ImageStore, ingested: ImageStore, rank: int, support_rank: int = -1) -> ImageStore:
    """The synthetic store with source / support rows as the synthesize pipeline records them."""
    manifest = synthetic.manifest.copy()
    sources, supports = [], []
    for category in manifest["category"]:
        sources.append(int(ingested.select(split="train", category=category, label="normal", max_rank=rank + 1)[-1]))
        support = ingested.select(split="support", category=category, label="anomaly", max_rank=support_rank + 1)
        supports.append(int(support[-1]) if support_rank >= 0 else -1)
    manifest["source_index"], manifest["support_index"] = sources, supports
    return ImageStore(manifest, synthetic.images, synthetic.masks, synthetic.class_names, synthetic.size, "toy")


def test_synthetic_images_from_normals_outside_kn_are_refused(stores):
    ingested, synthetic = stores
    # made from the second normal (rank 1): fine for kn=2, a leak of a real image for kn=1
    from_rank1 = _with_sources(synthetic, ingested, rank=1)
    select_training_data(ingested, from_rank1, _params("zero_shot", kn=2))
    with pytest.raises(ValueError, match="synthesize.kn=1"):
        select_training_data(ingested, from_rank1, _params("zero_shot", kn=1))
    # few-shot pastes from the second support sample: fine for ka=2, refused for ka=1
    pasted = _with_sources(synthetic, ingested, rank=0, support_rank=1)
    select_training_data(ingested, pasted, _params("few_shot", kn=1, ka=2))
    with pytest.raises(ValueError, match="synthesize.ka=1"):
        select_training_data(ingested, pasted, _params("few_shot", kn=1, ka=1))


def test_missing_synthesis_gives_a_clear_error(stores):
    ingested, _ = stores
    with pytest.raises(ValueError, match="synthesize"):
        select_training_data(ingested, None, _params("zero_shot"))


def test_pipeline_trains_a_bundle_that_reloads(stores, tmp_path):
    ingested, synthetic = stores
    catalog = DataCatalog({
        "ingested_images": MemoryDataset(ingested),
        "synthetic_images": MemoryDataset(synthetic),
        "params:train_uniadc": MemoryDataset(_params("few_shot")),
        "uniadc_model": MemoryDataset(copy_mode="assign"),
        "uniadc_training_history": MemoryDataset(),
    })
    SequentialRunner().run(create_pipeline(), catalog)
    bundle = catalog.load("uniadc_model")
    history = catalog.load("uniadc_training_history")
    assert bundle.name == "uniadc"
    assert bundle.model.class_names == ["stain", "crack", "hole"]
    tags = bundle.info["tags"]
    assert tags["setting"] == "few_shot" and tags["kn"] == "2" and tags["ka"] == "1"
    assert tags["weights_source"] == "random" and tags["text_encoder"] == "random"
    assert "synthesis_backend" in tags
    assert tags["normal_memory"].startswith("off")
    assert list(history["epoch"]) == [1, 2] and history["selected"].sum() == 1
    save_bundle(tmp_path / "b", bundle)
    loaded = load_bundle(tmp_path / "b")
    images = torch.rand(2, 3, SIZE, SIZE)
    a = bundle.model.predict(images, category="tile")
    b = loaded.model.predict(images, category="tile")
    assert a.class_logits.shape[1] == 2
    assert torch.allclose(a.anomaly_map, b.anomaly_map, atol=1e-6)
    assert loaded.threshold == bundle.threshold


def test_selection_rows_hold_no_test_rows_and_no_shots(stores):
    ingested, _ = stores
    manifest = ingested.manifest
    few = selection_rows(ingested, "few_shot", ka=1)
    zero = selection_rows(ingested, "zero_shot", ka=1)
    for rows in (few, zero):
        assert not (manifest["split"].to_numpy()[rows] == "test").any()
        assert set(manifest["split"].to_numpy()[rows]) == {"val", "support"}
    # few-shot: the ka=1 shots (support rank 0) are excluded, rank 1 kept; zero-shot: every support image
    support_few = few[manifest["split"].to_numpy()[few] == "support"]
    assert set(manifest["rank"].to_numpy()[support_few]) == {1} and len(support_few) == 3
    assert (manifest["split"].to_numpy()[zero] == "support").sum() == 6
    assert (manifest["split"].to_numpy()[zero] == "val").sum() == 6
    with pytest.raises(ValueError, match="unused support"):
        selection_rows(ingested, "few_shot", ka=2)


def _origin(images: np.ndarray, store: ImageStore) -> list[int]:
    """The store row of every image (-1: not in the store); the toy images are random, hence unique."""
    index = {store.images[i].tobytes(): i for i in range(len(store))}
    return [index.get(image.tobytes(), -1) for image in images]


@pytest.mark.parametrize(("setting", "ka"), [("zero_shot", 1), ("few_shot", 1)])
def test_support_validation_holds_unused_real_anomalies_never_test_nor_shots(stores, setting, ka):
    ingested, synthetic = stores
    manifest = ingested.manifest
    train, val, summary = select_training_data(ingested, synthetic, _params(setting, kn=2, ka=ka,
                                                                             validation="support"))
    rows = _origin(val.images, ingested)
    assert -1 not in rows  # real images only: no held-out synthetic anomaly
    split, rank = manifest["split"].to_numpy()[rows], manifest["rank"].to_numpy()[rows]
    assert set(split) == {"val", "support"}
    shots = set(_origin(train.images, ingested)) - {-1}
    assert shots and not shots & set(rows)
    expected = selection_rows(ingested, setting, ka)  # the selection set of the hyper-parameter benchmark
    assert sorted(rows) == sorted(expected.tolist())
    if setting == "few_shot":
        assert set(rank[split == "support"]) == {1}
    assert summary["tile"]["support_val"] == (2 if setting == "few_shot" else 4)
    assert summary["tile"]["synthetic_val"] == 0 and summary["tile"]["synthetic_train"] == 8
    # real class ids, made global: tile crack = 2, tile hole = 3, cloth stain = 1
    for i, row in enumerate(rows):
        if split[i] == "support":
            local = int(manifest["class_id"].to_numpy()[row])
            offset = 0 if manifest["category"].to_numpy()[row] == "cloth" else 1
            assert set(np.unique(val.masks[i])) == {0, local + offset}
    # the switch changes only validation: the same training set as with synthetic validation
    base_train, base_val, _ = select_training_data(ingested, synthetic, _params(setting, kn=2, ka=ka))
    assert np.array_equal(base_train.images, train.images) and np.array_equal(base_train.masks, train.masks)
    assert not set(_origin(base_val.images, ingested)) - {-1} & set(manifest.index[manifest["split"] == "support"])
    mixed_train, mixed, _ = select_training_data(ingested, synthetic, _params(setting, kn=2, ka=ka,
                                                                              validation="mixed"))
    assert len(mixed) == len(val) + (len(base_val) - (manifest["split"] == "val").sum())
    assert np.array_equal(mixed_train.images, train.images)


def test_support_validation_without_unused_support_falls_back_with_a_warning(stores, caplog):
    ingested, synthetic = stores
    # few-shot Ka=2 trains on both support ranks: nothing real is left to validate on
    _, val, summary = select_training_data(ingested, synthetic, _params("few_shot", kn=1, ka=2, validation="support"))
    assert summary["tile"]["validation"] == "synthetic" and summary["tile"]["synthetic_val"] == 2
    assert validation_used(summary) == "support (synthetic fallback: cloth, tile)"
    assert "falls back to the held-out synthetic" in caplog.text and "support_per_defect" in caplog.text
    assert -1 in _origin(val.images, ingested)


def test_unknown_validation_is_refused(stores):
    ingested, synthetic = stores
    with pytest.raises(ValueError, match=r"train_uniadc.training.validation must be one of synthetic, support, mixed"):
        select_training_data(ingested, synthetic, _params(validation="test"))


def test_validation_switch_changes_what_selects_the_checkpoint(stores):
    ingested, synthetic = stores
    runs = {}
    for validation in ("synthetic", "support"):
        catalog = DataCatalog({
            "ingested_images": MemoryDataset(ingested),
            "synthetic_images": MemoryDataset(synthetic),
            "params:train_uniadc": MemoryDataset(_params("zero_shot", validation=validation)),
            "uniadc_model": MemoryDataset(copy_mode="assign"),
            "uniadc_training_history": MemoryDataset(),
        })
        SequentialRunner().run(create_pipeline(), catalog)
        runs[validation] = (catalog.load("uniadc_model"), catalog.load("uniadc_training_history"))
    (synthetic_bundle, synthetic_history), (support_bundle, support_history) = runs["synthetic"], runs["support"]
    assert synthetic_bundle.info["tags"]["validation"] == "synthetic"
    assert support_bundle.info["tags"]["validation"] == "support"
    assert "real support anomalies" in support_bundle.info["threshold_source"]
    # same seed and training data: the loss curves agree, the validation curves (what selection reads) do not
    assert np.allclose(synthetic_history["loss"], support_history["loss"])
    assert not np.allclose(synthetic_history["val_image_AUROC"], support_history["val_image_AUROC"])


def test_normal_memory_holds_the_kn_normals_of_each_category_only(stores, tmp_path):
    ingested, synthetic = stores
    params = _params("few_shot", kn=2)
    params["model"]["normal_memory"] = {"weight": 0.5, "layers": [0, 1]}
    catalog = DataCatalog({
        "ingested_images": MemoryDataset(ingested),
        "synthetic_images": MemoryDataset(synthetic),
        "params:train_uniadc": MemoryDataset(params),
        "uniadc_model": MemoryDataset(copy_mode="assign"),
        "uniadc_training_history": MemoryDataset(),
    })
    SequentialRunner().run(create_pipeline(), catalog)
    bundle = catalog.load("uniadc_model")
    memory = bundle.info["normal_memory"]
    # 2 normal shots x 2 categories; the real support anomalies of few-shot training are not memorised
    assert memory["images"] == 4 and memory["val_normals"] == 6
    owners = bundle.model.memory_category.tolist()
    assert owners.count(0) == owners.count(1) == memory["patches"] // 2
    assert bundle.info["tags"]["normal_memory"].startswith("weight 0.5: ")
    save_bundle(tmp_path / "b", bundle)
    loaded = load_bundle(tmp_path / "b")
    images = torch.rand(2, 3, SIZE, SIZE)
    a, b = bundle.model.predict(images, category="cloth"), loaded.model.predict(images, category="cloth")
    assert "memory_distance" in a.extras
    assert torch.allclose(a.anomaly_map, b.anomaly_map, atol=1e-5)
