"""train_cada on a tiny in-memory two-category store: RD, RD+CADA and UniAD+CADA bundles that reload."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from unified_anomaly.data.manifest import MANIFEST_COLUMNS, normalise_manifest
from unified_anomaly.data.store import ImageStore
from unified_anomaly.models.bundle import ModelBundle, load_bundle, save_bundle
from unified_anomaly.models.registry import build_model
from unified_anomaly.pipelines.train_cada import create_pipeline

SIZE = 32
CLASSES = {"dark": ["good", "spot"], "bright": ["good", "spot"]}
UNIAD_TINY = {"backbone": "tiny_cnn", "weights": "random", "out_indices": [1, 2, 3], "input_size": SIZE,
              "hidden_dim": 16, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
              "dim_feedforward": 32, "neighbour_size": 1}


def _row(category, split, rank, label, defect, class_id):
    return {"dataset": "toy", "category": category, "split": split, "rank": rank, "label": label,
            "defect_type": defect, "class_id": class_id, "image_path": f"/x/{category}/{split}/{defect}/{rank}.png",
            "mask_path": "", "width": SIZE, "height": SIZE}


def _store() -> ImageStore:
    """Two categories with clearly different normal images (dark stripes, bright dots) and square defects."""
    rows = []
    for category in CLASSES:
        rows += [_row(category, "train", r, "normal", "good", 0) for r in range(10)]
        rows += [_row(category, "val", r, "normal", "good", 0) for r in range(6)]
        rows += [_row(category, "test", r, "normal", "good", 0) for r in range(2)]
        rows += [_row(category, "test", r, "anomaly", "spot", 1) for r in range(2)]
    manifest = normalise_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS))
    rng = np.random.default_rng(0)
    n = len(manifest)
    images = np.zeros((n, SIZE, SIZE, 3), np.int16)
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    for i, row in manifest.iterrows():
        if row["category"] == "dark":
            images[i] = 40
            images[i, ::4] = 90
        else:
            images[i] = 200
            images[i, ::8, ::8] = 255
        if row["class_id"]:
            masks[i, 10:18, 10:18] = 1
            images[i, 10:18, 10:18] = 255 - images[i, 10:18, 10:18]
    images = np.clip(images + rng.integers(-8, 8, images.shape), 0, 255).astype(np.uint8)
    return ImageStore(manifest, images, masks, {k: list(v) for k, v in CLASSES.items()}, SIZE, "toy")


def _params() -> dict:
    return {
        "seed": 0, "device": "cpu", "batch_size": 8,
        "rd": {"backbone": "tiny_cnn", "weights": "random", "out_indices": [1, 2, 3], "input_size": SIZE,
               "sigma": 1.0},
        "rd_training": {"epochs": 2, "batch_size": 4, "lr": 0.005, "betas": [0.5, 0.999]},
        "regressor": {"feature_source": "auto", "hidden": 16, "prototypes": 4},
        # k by the silhouette: the tiny random bases score both looks alike, so the default rule (k by how well
        # clusters predict held-out scores, tests/models/test_cada.py) would rightly keep one group
        "targets": {"target_method": "clusters", "n_clusters": "auto", "k_selection": "silhouette", "max_clusters": 3,
                    "min_cluster_size": 3, "score_source": "val", "min_scores_per_group": 3, "epochs": 20, "seed": 0},
        "threshold": {},
    }


class KeptDataset(MemoryDataset):
    """A memory dataset the runner cannot release, so intermediate outputs can be inspected after the run."""

    def _release(self) -> None:
        pass


OUTPUTS = ("rd_model", "rd_training_history", "rd_cada_model", "rd_cada_groups", "uniad_cada_model",
           "uniad_cada_groups")


def _run(store: ImageStore, uniad: ModelBundle) -> DataCatalog:
    catalog = DataCatalog({
        "ingested_images": MemoryDataset(store),
        "uniad_model": MemoryDataset(uniad, copy_mode="assign"),
        "params:train_cada": MemoryDataset(_params()),
        **{name: KeptDataset(copy_mode="assign") for name in OUTPUTS},
    })
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


@pytest.fixture(scope="module")
def outputs():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    uniad = ModelBundle("uniad", UNIAD_TINY, build_model("uniad", **UNIAD_TINY), None,
                        {"tags": {"backbone": "tiny_cnn", "weights_source": "random"}})
    catalog = _run(_store(), uniad)
    return {name: catalog.load(name) for name in OUTPUTS}


def test_rd_bundle_records_weights_and_setting(outputs):
    rd = outputs["rd_model"]
    assert rd.name == "rd" and rd.config["backbone"] == "tiny_cnn"
    tags = rd.info["tags"]
    assert tags["backbone"] == "tiny_cnn" and tags["weights_source"] == "random"
    assert tags["base_model"] == "rd" and tags["setting"] == "class_agnostic"
    assert rd.info["train_images"] == 20 and rd.info["categories"] == ["bright", "dark"]
    assert list(outputs["rd_training_history"]["epoch"]) == [1, 2]
    assert rd.threshold is not None and np.isfinite(rd.threshold)


@pytest.mark.parametrize("name, base", [("rd_cada_model", "rd"), ("uniad_cada_model", "uniad")])
def test_cada_bundles_wrap_their_base_and_find_the_categories_without_labels(outputs, name, base):
    bundle = outputs[name]
    assert bundle.name == "cada" and bundle.config["base_name"] == base
    assert bundle.info["tags"]["base_model"] == base and bundle.info["tags"]["setting"] == "class_agnostic"
    assert bundle.info["tags"]["cada_feature_source"] == "base"  # reuses the base's frozen encoder
    assert bundle.info["tags"]["cada_k_selection"] == "silhouette"
    groups = outputs[name.replace("_model", "_groups")]
    assert len(groups) == 2
    counts = groups[["n_bright", "n_dark"]].to_numpy()
    assert ((counts > 0).sum(axis=1) == 1).all()  # every cluster holds a single category
    assert bundle.threshold is not None


def test_cada_bundle_round_trip(outputs, tmp_path):
    bundle = outputs["uniad_cada_model"]
    save_bundle(tmp_path / "b", bundle)
    loaded = load_bundle(tmp_path / "b")
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    a, b = bundle.model.predict(images), loaded.model.predict(images)
    assert torch.allclose(a.anomaly_map, b.anomaly_map, atol=1e-6)
    assert loaded.info["tags"] == bundle.info["tags"]


def test_same_seed_same_numbers(outputs):
    torch.manual_seed(0)
    uniad = ModelBundle("uniad", UNIAD_TINY, build_model("uniad", **UNIAD_TINY), None, {"tags": {}})
    catalog = _run(_store(), uniad)
    pd.testing.assert_frame_equal(catalog.load("rd_cada_groups"), outputs["rd_cada_groups"])
    assert catalog.load("rd_model").threshold == outputs["rd_model"].threshold
