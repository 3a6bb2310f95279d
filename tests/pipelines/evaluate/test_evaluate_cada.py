"""The evaluate pipeline on a CADA bundle and its base: class_separated / class_aware rows are the base's,
the class_agnostic (pooled) row is CADA's, and the base threshold is the base's own."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "evaluation"))
from toy_data import toy_store  # noqa: E402

from unified_anomaly.models.bundle import ModelBundle  # noqa: E402
from unified_anomaly.models.registry import build_model  # noqa: E402
from unified_anomaly.pipelines.evaluate import create_model_evaluation  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
RD_TINY = {"backbone": "tiny_cnn", "weights": "random", "input_size": 32, "sigma": 1.0}


def test_cada_bundle_is_evaluated_on_its_base_for_separated_and_aware(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = {"base_name": "rd", "base_config": RD_TINY, "regressor": {"hidden": 8, "prototypes": 4}}
    cada = build_model("cada", **config)
    with torch.no_grad():
        cada.regressor.head.values.normal_(0, 2)
    bundles = {
        "rd": ModelBundle("rd", RD_TINY, cada.base, None, {}),
        "rd_cada": ModelBundle("cada", config, cada, None, {"base_threshold": 0.123}),
    }
    text = (REPO / "conf" / "base" / "catalog_evaluate.yml").read_text().replace("${globals:dataset}", "toy")
    catalog = DataCatalog.from_config(yaml.safe_load(text))
    catalog["ingested_images"] = toy_store()
    params = yaml.safe_load((REPO / "conf" / "base" / "parameters_evaluate.yml").read_text())["evaluate"]
    params.update({"progress": False, "overlay_images": 0, "figure_dpi": 40, "log_to_mlflow": False,
                   "device": "cpu", "aupro": {"fpr_limit": 0.3, "num_thresholds": 20}})
    catalog["params:evaluate"] = params
    for name, bundle in bundles.items():
        catalog[f"{name}_model"] = bundle
    SequentialRunner().run(create_model_evaluation("rd") + create_model_evaluation("rd_cada"), catalog)

    base, wrapped = (catalog.load(f"{m}.metric_values") for m in ("rd", "rd_cada"))
    assert set(base) == set(wrapped)  # the same names for every model
    for name in ("image_AUROC", "bottle/image_AUROC", "carpet/pixel_AUROC", "class_aware_pooled_image_AUROC",
                 "class_aware_pooled_pixel_AUROC"):
        assert np.isclose(wrapped[name], base[name], atol=1e-6), name
    assert not np.isclose(wrapped["pooled_pixel_AUROC"], base["pooled_pixel_AUROC"])
    threshold = catalog.load("rd_cada.threshold")
    assert threshold["base_threshold"] == 0.123 and threshold["base_source"].startswith("model bundle")
    assert "base_threshold" not in catalog.load("rd.threshold")
