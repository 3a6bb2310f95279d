"""CADA models in the evaluation: the base model's raw outputs are recovered from CADA's per-image statistics,
and class_separated / class_aware use them while class_agnostic uses CADA's normalised outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_data import toy_store  # noqa: E402

from unified_anomaly.evaluation import evaluate_predictions, predict_store  # noqa: E402
from unified_anomaly.evaluation.settings import base_model_view  # noqa: E402
from unified_anomaly.models.registry import build_model  # noqa: E402

RD_TINY = {"backbone": "tiny_cnn", "weights": "random", "input_size": 32, "sigma": 1.0}


@pytest.fixture(scope="module")
def predictions() -> tuple[dict, dict]:
    """(CADA predictions, its base model's own predictions) on the toy store's test split."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    store = toy_store()
    cada = build_model("cada", base_name="rd", base_config=RD_TINY, regressor={"hidden": 8, "prototypes": 4})
    with torch.no_grad():  # spread the (untrained) regressor's per-image statistics
        cada.regressor.head.values.normal_(0, 2)
    rows = store.select(split="test")
    options = dict(device="cpu", progress=False, batch_size=5)
    return predict_store(cada, store, rows, **options), predict_store(cada.base, store, rows, **options)


def test_base_view_recovers_the_base_models_raw_outputs(predictions):
    cada, base = predictions
    assert {"cada_u", "cada_gamma"} <= set(cada) and "cada_u" not in base
    assert np.ptp(cada["cada_u"]) > 0  # per-image statistics, not one affine map
    view = base_model_view(cada)
    assert base_model_view(base) is None  # a plain model has no base view
    assert not np.allclose(cada["image_scores"], base["image_scores"])
    np.testing.assert_allclose(view["image_scores"], base["image_scores"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(view["anomaly_maps"], base["anomaly_maps"], rtol=1e-4, atol=1e-5)
    assert set(view) == set(base)


def test_cada_settings_use_the_base_for_separated_and_aware_and_cada_for_agnostic(predictions):
    cada, base = predictions
    store = toy_store()
    stats = {"bottle": (0.3, 0.5), "carpet": (0.6, 0.9)}
    options = dict(aupro_num_thresholds=20, n_threads=1)
    table = evaluate_predictions(cada, store, class_stats=stats, threshold=0.0, base_predictions=base_model_view(cada),
                                 base_threshold=0.5, **options)
    on_base = evaluate_predictions(base, store, class_stats=stats, threshold=0.5, **options)
    on_cada = evaluate_predictions(cada, store, class_stats=stats, threshold=0.0, **options)
    for row in ("bottle", "carpet", "mean", "class_aware_pooled"):
        np.testing.assert_allclose(table.loc[row].to_numpy(float), on_base.loc[row].to_numpy(float), atol=1e-6)
    np.testing.assert_allclose(table.loc["pooled"].to_numpy(float), on_cada.loc["pooled"].to_numpy(float), atol=1e-9)
    assert not np.allclose(on_base.loc["pooled"].to_numpy(float), on_cada.loc["pooled"].to_numpy(float))
    with pytest.raises(ValueError, match="same rows"):
        evaluate_predictions(cada, store, class_stats=stats, base_predictions={**base, "indices": base["indices"][::-1]})
