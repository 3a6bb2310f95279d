"""The synthesize pipeline on tiny in-memory stores (procedural and diffusion), and on the real MTD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure
from scipy import ndimage

from unified_anomaly.data.ingestion import build_manifest, load_store
from unified_anomaly.data.manifest import MANIFEST_COLUMNS, normalise_manifest
from unified_anomaly.data.store import ImageStore, read_store, write_store
from unified_anomaly.pipelines.synthesize import create_pipeline
from unified_anomaly.pipelines.synthesize.nodes import make_contact_sheets
from unified_anomaly.synthesis.runner import MANIFEST_EXTRAS, synthesize_store

REPO_ROOT = Path(__file__).resolve().parents[3]
PARAMETERS = REPO_ROOT / "conf" / "base" / "parameters_synthesize.yml"
MTD_ROOT = (REPO_ROOT / ".." / "shared" / "data" / "mtd").resolve()
SIZE = 64
CLASSES = {"tile": ["good", "crack", "hole"], "cloth": ["good", "stain"]}


def base_params(**changes) -> dict:
    params = yaml.safe_load(PARAMETERS.read_text())["synthesize"]
    params.update(images_per_type=3, progress=False)
    params.update(changes)
    return params


def toy_store() -> ImageStore:
    rows, rng = [], np.random.default_rng(0)
    for category, names in CLASSES.items():
        for rank in range(3):
            rows.append((category, "train", rank, "normal", "good", 0))
        for class_id, name in enumerate(names[1:], start=1):
            rows.append((category, "support", 0, "anomaly", name, class_id))
    frame = pd.DataFrame(
        [
            {
                "dataset": "toy",
                "category": c,
                "split": s,
                "rank": r,
                "label": lab,
                "defect_type": d,
                "class_id": k,
                "image_path": f"/toy/{c}/{s}/{d}/{r}.png",
                "mask_path": "",
                "width": SIZE,
                "height": SIZE,
            }
            for c, s, r, lab, d, k in rows
        ],
        columns=MANIFEST_COLUMNS,
    )
    manifest = normalise_manifest(frame)
    n = len(manifest)
    images = np.clip(ndimage.gaussian_filter(rng.normal(128, 35, (n, SIZE, SIZE, 3)), (0, 2, 2, 0)), 0, 255)
    images = images.astype(np.uint8)
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    for i, row in manifest.iterrows():
        if row["class_id"]:
            masks[i, 20:34, 24:36] = row["class_id"]
            images[i, 20:34, 24:36] = 15
    return ImageStore(manifest, images, masks, {k: list(v) for k, v in CLASSES.items()}, SIZE, "toy")


class KeptDataset(MemoryDataset):
    """A memory dataset the runner cannot release, so intermediate outputs can be inspected after the run."""

    def _release(self) -> None:
        pass


def run_pipeline(store: ImageStore, params: dict) -> dict:
    catalog = DataCatalog(
        {
            "ingested_images": MemoryDataset(store, copy_mode="assign"),
            "params:synthesize": MemoryDataset(params),
            "synthetic_images": KeptDataset(copy_mode="assign"),
            "synthesis_metadata": KeptDataset(),
            "synthesis_contact_sheets": KeptDataset(copy_mode="assign"),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return {
        name: catalog.load(name)
        for name in ("synthetic_images", "synthesis_metadata", "synthesis_contact_sheets")
    }


def check_outputs(store: ImageStore, synthetic: ImageStore, metadata: pd.DataFrame, per_type: int) -> None:
    expected = sum(len(names) - 1 for names in store.class_names.values()) * per_type
    assert len(synthetic) == len(metadata) == expected
    assert list(synthetic.manifest.columns) == MANIFEST_COLUMNS + MANIFEST_EXTRAS
    assert set(synthetic.manifest["split"]) == {"train"} and set(synthetic.manifest["label"]) == {"anomaly"}
    assert synthetic.manifest["image_path"].str.startswith("synthetic:/toy/").all()
    assert synthetic.class_names == store.class_names
    for i, row in synthetic.manifest.iterrows():
        assert set(np.unique(synthetic.masks[i])) - {0} == {row["class_id"]}
        assert synthetic.class_names[row["category"]][row["class_id"]] == row["defect_type"]
        assert metadata.loc[i, "class_id"] == row["class_id"] and metadata.loc[i, "index"] == i
        source = store.images[row["source_index"]]
        near = ndimage.distance_transform_edt(synthetic.masks[i] == 0) <= 3
        assert not ((synthetic.images[i] != source).any(-1) & ~near).any()


@pytest.mark.parametrize("setting", ["zero_shot", "few_shot"])
def test_pipeline_procedural(setting):
    store = toy_store()
    outputs = run_pipeline(store, base_params(setting=setting))
    synthetic, metadata = outputs["synthetic_images"], outputs["synthesis_metadata"]
    check_outputs(store, synthetic, metadata, 3)
    assert set(metadata["backend"]) == {"procedural (no diffusion)"} and set(metadata["setting"]) == {setting}
    sheets = outputs["synthesis_contact_sheets"]
    assert set(sheets) == {"tile.png", "cloth.png"} and all(isinstance(f, Figure) for f in sheets.values())
    if setting == "few_shot":
        assert (metadata["support_index"] >= 0).all() and metadata["score"].between(-1, 1).all()


def test_same_seed_same_store_and_round_trip(tmp_path):
    store = toy_store()
    first, meta_first, _ = synthesize_store(store, base_params(seed=5))
    second, meta_second, _ = synthesize_store(store, base_params(seed=5))
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.masks, second.masks)
    pd.testing.assert_frame_equal(meta_first, meta_second)
    write_store(tmp_path / "synthetic", first)
    reloaded = read_store(tmp_path / "synthetic")
    assert list(reloaded.manifest.columns) == list(first.manifest.columns)  # extra columns survive the writer
    np.testing.assert_array_equal(np.asarray(reloaded.masks), first.masks)
    assert reloaded.extra["synthesis"]["synthesis_backend"] == "procedural (no diffusion)"


def test_bad_configuration_fails_clearly():
    store = toy_store()
    with pytest.raises(ValueError, match="setting"):
        synthesize_store(store, base_params(setting="one_shot"))
    with pytest.raises(ValueError, match="not in the ingested data"):
        synthesize_store(store, base_params(categories=["bottle"]))
    with pytest.raises(ValueError, match="unknown mask settings"):
        synthesize_store(store, base_params(masks={"closing": 3}))


def test_pipeline_with_the_diffusion_backend_from_local_folders(tmp_path):
    from unified_anomaly.synthesis.testing import write_tiny_inpainting_pipeline, write_tiny_open_clip

    model = write_tiny_inpainting_pipeline(tmp_path / "sd")
    clip = write_tiny_open_clip(tmp_path / "clip")
    store = toy_store()
    params = base_params(
        backend="diffusion",
        images_per_type=1,
        categories=["cloth"],
        diffusion={
            **base_params()["diffusion"],
            "model": str(model),
            "resolution": 64,
            "num_inference_steps": 2,
            "strengths": [0.5],
            "masks_per_target": 2,
            "calls_per_mask": 1,
            "device": "cpu",
        },
        clip={**base_params()["clip"], "model": f"local-dir:{clip}", "pretrained": None, "device": "cpu"},
    )
    outputs = run_pipeline(store, params)
    metadata = outputs["synthesis_metadata"]
    assert list(metadata["backend"]) == [f"diffusion:{model}"]
    assert list(metadata["score_name"]) == ["clip_softmax"] and list(metadata["n_candidates"]) == [2]
    assert set(np.unique(outputs["synthetic_images"].masks)) == {0, 1}


def test_contact_sheets_and_backend_are_logged_to_the_active_mlflow_run(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    store = toy_store()
    synthetic, metadata, _ = synthesize_store(store, base_params(images_per_type=1))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            make_contact_sheets(synthetic, metadata, base_params())
        client = mlflow.MlflowClient()
        tags = client.get_run(run.info.run_id).data.tags
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "synthesis/contact_sheets")}
    finally:
        mlflow.set_tracking_uri("")
    assert tags["synthesis_backend"] == "procedural (no diffusion)"
    assert artifacts == {"synthesis/contact_sheets/tile.png", "synthesis/contact_sheets/cloth.png"}


def mtd_store(kn: int = 2, size: int = 256) -> ImageStore:
    """Kn training normals and the first support sample per defect type of the real MTD, at ``size``²."""
    manifest, classes, _ = build_manifest(MTD_ROOT, "mtd", layout="mtd")
    chosen = ((manifest["split"] == "train") & (manifest["rank"] < kn)) | (
        (manifest["split"] == "support") & (manifest["rank"] < 1)
    )
    return load_store(manifest[chosen], classes, size)


@pytest.mark.integration
@pytest.mark.parametrize("setting", ["zero_shot", "few_shot"])
def test_real_mtd(setting):
    if not (MTD_ROOT / "split.csv").is_file():
        pytest.skip(f"the real MTD is not at {MTD_ROOT}")
    store = mtd_store()
    synthetic, metadata, info = synthesize_store(store, base_params(setting=setting, images_per_type=4))
    assert (
        len(synthetic) == 20
        and sorted(set(metadata["defect_type"])) == store.class_names["magnetic_tile"][1:]
    )
    for i, row in synthetic.manifest.iterrows():
        assert set(np.unique(synthetic.masks[i])) - {0} == {row["class_id"]}
        source = store.images[row["source_index"]]
        near = ndimage.distance_transform_edt(synthetic.masks[i] == 0) <= 3
        assert not ((synthetic.images[i] != source).any(-1) & ~near).any()
    if setting == "zero_shot":  # break and fray are drawn on the tile's outline (placement: edge)
        for i in metadata.index[metadata["defect_type"].isin(["break", "fray"])]:
            mask = synthetic.masks[i] > 0
            border = np.zeros_like(mask)
            border[[0, -1], :] = border[:, [0, -1]] = True
            assert (mask & border).any()
    assert info["images_per_s"] > 0
