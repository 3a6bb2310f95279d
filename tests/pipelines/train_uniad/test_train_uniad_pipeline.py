"""train_uniad nodes on a tiny in-memory ImageStore (tiny_cnn, random weights, 2 epochs)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from unified_anomaly.data.manifest import MANIFEST_COLUMNS
from unified_anomaly.data.store import ImageStore
from unified_anomaly.models.bundle import ModelBundle, load_bundle, save_bundle
from unified_anomaly.pipelines.train_uniad.nodes import extract_uniad_features, train_uniad_model
from unified_anomaly.pipelines.train_uniad.pipeline import create_pipeline

SIZE = 32


def tiny_store(seed: int = 0) -> ImageStore:
    """Two categories; train normals, val normals, and test normals + anomalies (which must never be used)."""
    rng = np.random.default_rng(seed)
    rows = []
    for category in ("bottle", "cable"):
        for split, label, count in (("train", "normal", 6), ("val", "normal", 3), ("test", "normal", 2),
                                    ("test", "anomaly", 2)):
            for rank in range(count):
                rows.append({"dataset": "toy", "category": category, "split": split, "rank": rank, "label": label,
                             "defect_type": "good" if label == "normal" else "crack",
                             "class_id": 0 if label == "normal" else 1, "image_path": f"/x/{category}/{split}/{rank}",
                             "mask_path": "", "width": SIZE, "height": SIZE})
    manifest = pd.DataFrame(rows)[MANIFEST_COLUMNS]
    images = rng.integers(0, 256, (len(manifest), SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.zeros((len(manifest), SIZE, SIZE), np.uint8)
    return ImageStore(manifest, images, masks, {"bottle": ["good", "crack"], "cable": ["good", "crack"]}, SIZE, "toy")


PARAMS = {
    "seed": 5,
    "device": "cpu",
    "feature_batch_size": 8,
    "batch_size": 8,
    "model": {"backbone": "tiny_cnn", "weights": "random", "out_indices": [0, 1, 2], "input_size": 64,
              "hidden_dim": 32, "num_heads": 4, "num_encoder_layers": 1, "num_decoder_layers": 1,
              "dim_feedforward": 64, "neighbour_size": 3},
    "training": {"epochs": 2, "batch_size": 4, "lr": 0.001, "lr_step_epochs": 1, "progress": False},
    "threshold": {"method": "toy"},
}


@pytest.fixture
def fake_calibration(monkeypatch):
    """Stands in for unified_anomaly.evaluation.calibrate_threshold (built by another helper)."""
    calls = []

    def calibrate_threshold(val_scores, val_labels=None, **kwargs):
        calls.append((np.asarray(val_scores), val_labels, kwargs))
        return float(np.max(val_scores))

    module = types.ModuleType("unified_anomaly.evaluation")
    module.calibrate_threshold = calibrate_threshold
    monkeypatch.setitem(sys.modules, "unified_anomaly.evaluation", module)
    return calls


def run_nodes(store: ImageStore, params: dict = PARAMS):
    features = extract_uniad_features(store, params)
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in features.values())  # a versioned .npz
    bundle, history = train_uniad_model(features, params)
    return features, bundle.model, history, bundle.info, bundle.threshold, bundle


def test_nodes_train_on_train_normals_and_calibrate_on_val(fake_calibration, caplog, tmp_path):
    store = tiny_store()
    with caplog.at_level("INFO"):
        cache, model, history, summary, threshold, bundle = run_nodes(store)
    assert cache["train"].shape[0] == 12 and cache["val"].shape[0] == 6  # no test image is touched
    assert list(history.columns) == ["epoch", "lr", "train_loss", "val_loss", "epoch_seconds"]
    assert len(history) == 2 and history["val_loss"].notna().all()
    # the threshold comes from the 6 validation images' scores, passed with the conf's keyword arguments
    scores, labels, kwargs = fake_calibration[0]
    assert scores.shape == (6,) and labels is None and kwargs == {"method": "toy"}
    assert threshold == pytest.approx(float(scores.max()))
    assert isinstance(bundle, ModelBundle) and bundle.name == "uniad" and bundle.threshold == threshold
    tags = bundle.info["tags"]
    assert tags["backbone"] == "tiny_cnn" and tags["weights_source"] == "random" and tags["model"] == "uniad"
    assert all(isinstance(v, str) for v in tags.values())
    assert bundle.info["train_images"] == 12 and bundle.info["categories"] == ["bottle", "cable"]
    assert "UniAD backbone tiny_cnn with weights random" in caplog.text

    save_bundle(tmp_path / "uniad", bundle)
    loaded = load_bundle(tmp_path / "uniad")
    images = torch.from_numpy(store.images[:4]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(loaded.model.predict(images).image_score, bundle.model.predict(images).image_score)
    assert loaded.model.predict(images).anomaly_map.shape == (4, SIZE, SIZE)


def test_real_calibration_from_the_conf_keywords():
    pytest.importorskip("unified_anomaly.evaluation")
    params = {**PARAMS, "threshold": {"method": "normal_max"}}
    store = tiny_store()
    cache, model, _, _, threshold, _ = run_nodes(store, params)
    from unified_anomaly.pipelines.train_uniad.nodes import uniad_scores

    scores = uniad_scores(model, torch.from_numpy(cache["val"]), SIZE, 8, "cpu")
    assert threshold > float(scores.max())  # normal_max: just above the largest validation normal


def test_same_seed_same_model(fake_calibration):
    first = run_nodes(tiny_store())
    second = run_nodes(tiny_store())
    assert np.allclose(first[2]["train_loss"], second[2]["train_loss"])
    assert first[4] == second[4]


def test_without_validation_images_keeps_last_epoch_and_no_threshold(fake_calibration):
    store = tiny_store()
    keep = store.select(split=["train", "test"])
    cache, model, history, summary, threshold, bundle = run_nodes(store.subset(keep))
    assert summary["selection"] == "last" and summary["selected_epoch"] == 2
    assert threshold is None and bundle.threshold is None and not fake_calibration


def test_no_training_normals_is_a_clear_error():
    store = tiny_store()
    with pytest.raises(ValueError, match="no normal images in split 'train'"):
        extract_uniad_features(store.subset(store.select(split="val")), PARAMS)


def test_pipeline_wiring():
    pipeline = create_pipeline()
    assert pipeline.inputs() == {"ingested_images", "params:train_uniad"}
    assert pipeline.outputs() == {"uniad_model", "uniad_training_history"}
