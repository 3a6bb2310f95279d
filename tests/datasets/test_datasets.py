import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io.core import DatasetError, Version

from unified_anomaly.data.manifest import MANIFEST_COLUMNS
from unified_anomaly.data.store import ImageStore, ImageStream
from unified_anomaly.datasets import ArrayDictDataset, ImageStoreDataset, ModelBundleDataset
from unified_anomaly.models.bundle import ModelBundle
from unified_anomaly.models.registry import register_model


def tiny_store(n=3, size=8) -> ImageStore:
    manifest = pd.DataFrame({c: ["x"] * n for c in MANIFEST_COLUMNS})
    for c in ("rank", "class_id", "width", "height"):
        manifest[c] = range(n)
    manifest["label"] = ["normal", "anomaly", "normal"][:n]
    rng = np.random.default_rng(0)
    return ImageStore(manifest, rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
                      rng.integers(0, 2, (n, size, size), dtype=np.uint8), {"x": ["good", "d"]}, size, "tiny")


def test_image_store_versions_round_trip(tmp_path):
    store = tiny_store()
    for version in ("v1", "v2"):
        ImageStoreDataset(str(tmp_path / "images"), Version(None, version)).save(store)
    loaded = ImageStoreDataset(str(tmp_path / "images"), Version(None, None)).load()
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["v1", "v2"]
    assert (loaded.images == store.images).all() and (loaded.masks == store.masks).all()
    assert loaded.manifest[MANIFEST_COLUMNS].astype(str).equals(store.manifest[MANIFEST_COLUMNS].astype(str))


def test_interrupted_stream_leaves_no_version(tmp_path):
    store = tiny_store()

    def chunks():
        yield store.images[:2], store.masks[:2]
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-write

    dataset = ImageStoreDataset(str(tmp_path / "images"), Version(None, "v1"))
    with pytest.raises(KeyboardInterrupt):
        dataset.save(ImageStream(store.manifest, chunks(), store.class_names, store.size))
    leftovers = list((tmp_path / "images").rglob("*"))
    assert all(p.is_dir() for p in leftovers)  # at most the empty version folder, no files
    assert not ImageStoreDataset(str(tmp_path / "images"), Version(None, None)).exists()


def test_array_dict_refuses_pickles(tmp_path):
    dataset = ArrayDictDataset(str(tmp_path / "a.npz"), Version(None, "v1"))
    dataset.save({"maps": np.ones((2, 3), np.float32)})
    assert ArrayDictDataset(str(tmp_path / "a.npz"), Version(None, None)).load()["maps"].shape == (2, 3)
    with pytest.raises(DatasetError, match="dtype object"):
        ArrayDictDataset(str(tmp_path / "b.npz"), Version(None, "v1")).save({"x": np.array([{}], dtype=object)})


@register_model("test_linear")
def _linear(features: int = 4) -> torch.nn.Module:
    return torch.nn.Linear(features, 1)


def test_model_bundle_round_trip_rebuilds_from_config(tmp_path):
    torch.manual_seed(0)
    bundle = ModelBundle("test_linear", {"features": 4}, _linear(4), threshold=0.7, info={"tags": {"weights": "random"}})
    ModelBundleDataset(str(tmp_path / "m"), Version(None, "v1")).save(bundle)
    loaded = ModelBundleDataset(str(tmp_path / "m"), Version(None, None)).load()
    x = torch.randn(2, 4)
    assert torch.equal(loaded.model(x), bundle.model(x))
    assert loaded.threshold == 0.7 and loaded.info["tags"]["weights"] == "random"
    assert list((tmp_path / "m" / "v1" / "m").iterdir())  # safetensors + json, no pickle
    assert {p.suffix for p in (tmp_path / "m" / "v1" / "m").iterdir()} == {".json", ".safetensors"}
