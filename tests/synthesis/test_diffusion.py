"""Diffusion backend and CLIP scorer, end to end on CPU with tiny random models loaded from local folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from unified_anomaly.synthesis import (
    CandidatePlan,
    ForegroundGeometry,
    build_backend,
    build_scorer,
    extract_regions,
    resolve_priors,
    synthesize_few_shot,
    synthesize_zero_shot,
)
from unified_anomaly.synthesis.testing import write_tiny_inpainting_pipeline, write_tiny_open_clip

SIZE = 48
CLASSES = ["good", "crack", "hole"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("weights")
    return write_tiny_inpainting_pipeline(root / "sd"), write_tiny_open_clip(root / "clip")


@pytest.fixture(scope="module")
def backend(tiny_models):
    return build_backend(
        "diffusion",
        model=str(tiny_models[0]),
        num_inference_steps=2,
        resolution=64,
        batch_size=4,
        device="cpu",
        blend_width=2,
    )


@pytest.fixture(scope="module")
def scorer(tiny_models):
    return build_scorer(model=f"local-dir:{tiny_models[1]}", pretrained=None, device="cpu")


def normals(count: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, (count, SIZE, SIZE, 3)).astype(np.uint8)


def run(backend, scorer, seed=0):
    images = normals()
    geometry = ForegroundGeometry.from_mask(np.ones((SIZE, SIZE), bool))
    priors = resolve_priors({"default": {"masks": ["Rectangle_Medium"]}}, "toy", "tile", CLASSES)
    plan = CandidatePlan(masks_per_target=2, strengths=(0.5, 0.4), calls_per_mask=1)
    return images, synthesize_zero_shot(
        images, [0, 1], [geometry] * 2, priors, backend, 1, seed, plan, scorer, progress=False
    )


def test_backend_is_loaded_from_the_local_folder_and_named(backend, tiny_models):
    assert type(backend.pipeline).__name__ == "StableDiffusionInpaintPipeline"
    assert backend.label == f"diffusion:{tiny_models[0]}"
    assert backend.tags["synthesis_backend"].startswith("diffusion:")
    assert backend._schedule(0.4, False) == (0.4, 5)  # last 2 steps of an int(2 / 0.4)-step schedule
    assert backend._schedule(0.5, True) == (1.0, 20)  # negative prompts: pure noise, 20 steps


def test_zero_shot_end_to_end_with_clip_selection(backend, scorer):
    images, result = run(backend, scorer)
    assert result.images.shape == (2, SIZE, SIZE, 3)
    for image, mask, record in zip(result.images, result.masks, result.records, strict=True):
        assert set(np.unique(mask)) - {0} == {record["class_id"]}
        assert record["n_candidates"] == 4 and record["score_name"] == "clip_softmax"
        assert 0.0 <= record["score"] <= 1.0 and record["strength"] in (0.5, 0.4)
        source = images[record["source_index"]]
        near = ndimage.distance_transform_edt(mask == 0) <= 2
        assert not ((image != source).any(-1) & ~near).any(), "diffusion output leaks outside the mask"
        assert (image != source).any(-1)[mask > 0].mean() > 0.5


def test_same_seed_same_output_on_cpu(backend, scorer):
    _, first = run(backend, scorer, seed=1)
    _, second = run(backend, scorer, seed=1)
    np.testing.assert_array_equal(first.images, second.images)
    assert [r["score"] for r in first.records] == [r["score"] for r in second.records]


def test_few_shot_repaint(backend):
    images = normals()
    support = images[0].copy()
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:22, 10:20] = 2
    support[mask > 0] = 10
    regions = extract_regions(support, mask, 3, CLASSES[1:], min_area=16)
    geometry = ForegroundGeometry.from_mask(np.ones((SIZE, SIZE), bool))
    priors = resolve_priors(None, "toy", "tile", CLASSES)
    result = synthesize_few_shot(
        images,
        [0, 1],
        [geometry] * 2,
        regions,
        priors,
        backend,
        1,
        0,
        CandidatePlan(2, (0.5,), 1),
        closing_kernel=1,
        progress=False,
    )
    assert [r["class_id"] for r in result.records] == [2]
    assert result.records[0]["prompt"] == "hole defect" and np.isfinite(result.records[0]["score"])


def test_clip_softmax_is_a_probability_over_the_prompts(scorer):
    images = normals(1)
    mask = np.zeros((1, SIZE, SIZE), bool)
    mask[0, 10:30, 10:30] = True
    a = scorer.score(images, mask, ["a crack"], ["a crack", "a hole"])
    b = scorer.score(images, mask, ["a hole"], ["a crack", "a hole"])
    assert a[0] + b[0] == pytest.approx(1.0, abs=1e-5)
    assert scorer.score(images, mask, ["a crack"], [])[0] == pytest.approx(1.0)


def test_clear_errors_when_weights_are_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="synthesize.diffusion.model"):
        build_backend("diffusion", model=str(tmp_path / "no_such_model"), device="cpu")
    with pytest.raises(RuntimeError, match="local folder"):
        build_backend(
            "diffusion", model="someone/not-downloaded-inpainting", local_files_only=True, device="cpu"
        )
    (tmp_path / "clip").mkdir()
    with pytest.raises(FileNotFoundError, match="no weights"):
        build_scorer(model=f"local-dir:{tmp_path / 'clip'}", pretrained=None, device="cpu")
    with pytest.raises(ValueError, match="unknown synthesis backend"):
        build_backend("gan")
