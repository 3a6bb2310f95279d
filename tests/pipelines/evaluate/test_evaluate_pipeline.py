"""The evaluate pipeline end to end on a toy store: catalog factories, versioned outputs, nested MLflow runs."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "evaluation"))
from toy_data import toy_bundle, toy_store  # noqa: E402

from unified_anomaly.pipelines.evaluate import EVALUATED_MODELS, create_model_evaluation, create_pipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def catalog_config(dataset: str = "toy") -> dict:
    text = (REPO / "conf" / "base" / "catalog_evaluate.yml").read_text()
    return yaml.safe_load(text.replace("${globals:dataset}", dataset))


def evaluate_params(**overrides) -> dict:
    params = yaml.safe_load((REPO / "conf" / "base" / "parameters_evaluate.yml").read_text())["evaluate"]
    params.update({"progress": False, "overlay_images": 2, "figure_dpi": 40, **overrides})
    return params


def test_pipeline_structure() -> None:
    pipeline = create_model_evaluation("uniad")
    assert {n.name for n in pipeline.nodes} == {"uniad.predict_test_set", "uniad.choose_threshold",
                                               "uniad.compute_metrics", "uniad.report_to_mlflow"}
    assert pipeline.inputs() == {"uniad_model", "ingested_images", "params:evaluate"}
    for node in pipeline.nodes:  # Kedro's parameter validation maps inputs onto the signature by position
        assert len(inspect.signature(node.func).parameters) == len(node.inputs), node.name
    full = create_pipeline()
    assert full.inputs() == {f"{m}_model" for m in EVALUATED_MODELS} | {"ingested_images", "params:evaluate"}
    assert len(full.only_nodes_with_namespaces(["rd_cada"]).nodes) == 4


def test_every_output_has_a_versioned_catalog_entry() -> None:
    catalog = DataCatalog.from_config(catalog_config())
    for name in sorted(create_pipeline().all_outputs()):
        dataset = catalog.get(name)
        assert dataset is not None and type(dataset).__name__ != "MemoryDataset", name
        assert getattr(dataset, "_version", None) is not None, f"{name} is not versioned"


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory):
    """One sqlite tracking store for the module (creating one costs seconds); each test its own experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    yield folder
    mlflow.set_tracking_uri(previous)


def experiment_runs(name: str) -> list:
    return mlflow.search_runs(experiment_names=[name], output_format="list")


def run_evaluation(tmp_path: Path, models: dict, params: dict) -> DataCatalog:
    catalog = DataCatalog.from_config(catalog_config())
    catalog["ingested_images"] = toy_store()
    catalog["params:evaluate"] = params
    pipeline = sum((create_model_evaluation(name) for name in models), start=create_model_evaluation(next(iter(models))))
    for name, bundle in models.items():
        catalog[f"{name}_model"] = bundle
    SequentialRunner().run(pipeline, catalog)
    return catalog


def test_end_to_end_with_nested_mlflow_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking) -> None:
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment("nested")
    models = {"toy_a": toy_bundle(classes=2), "toy_b": toy_bundle(classes=0, threshold=0.6)}
    with mlflow.start_run(run_name="kedro run") as parent:
        catalog = run_evaluation(tmp_path, models, evaluate_params())

    # versioned files on disk, readable back
    table = catalog.load("toy_a.metrics_table")
    assert list(table["category"]) == ["bottle", "carpet", "mean", "pooled", "class_aware_pooled"]
    values = catalog.load("toy_a.metric_values")
    assert values["image_AUROC"] == pytest.approx(table.set_index("category").loc["mean", "image_AUROC"])
    assert catalog.load("toy_a.threshold")["source"].startswith("calibrated at evaluation on val")
    assert catalog.load("toy_b.threshold") == {"threshold": 0.6, "source": "model bundle (calibrated by its training pipeline)"}
    assert catalog.load("toy_a.metrics_markdown").startswith("## toy_a on toy")
    predictions = catalog.load("toy_a.test_predictions")
    assert predictions["anomaly_maps"].shape == (16, 32, 32)
    plots = list((tmp_path / "data" / "08_reporting" / "toy" / "toy_a" / "plots").glob("*/plots/*.png"))  # <version>/plots/
    names = {p.name for p in plots}
    assert {"roc_curves.png", "pr_curves.png", "score_histograms.png", "overlay_grid.png"} <= names
    assert "confusion_matrix_bottle.png" in names
    for path in plots:
        image = np.asarray(Image.open(path).convert("L"))
        assert min(image.shape) > 50 and image.std() > 5, path.name

    # one nested run per model, same metric names and tag keys
    runs = experiment_runs("nested")
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"evaluate toy_a", "evaluate toy_b"}
    a, b = children["evaluate toy_a"].data, children["evaluate toy_b"].data
    classification = {k for k in a.metrics if "Class" in k or "mIoU" in k}
    assert classification and set(a.metrics) - classification == set(b.metrics)
    assert {"image_AUROC", "pixel_AUPRO", "pooled_image_AUROC", "pooled_pixel_AUROC",
            "class_aware_pooled_image_AUROC"} <= set(b.metrics)
    for tags in (a.tags, b.tags):
        assert {"model", "dataset", "setting", "backbone", "weights", "aupro_variant", "weights.source"} <= set(tags)
    assert (a.tags["model"], a.tags["dataset"], a.tags["weights"]) == ("toy_a", "toy", "none (toy)")
    client = mlflow.MlflowClient()
    artifacts = {f.path for f in client.list_artifacts(children["evaluate toy_a"].info.run_id, "plots")}
    assert "plots/overlay_grid.png" in artifacts
    metrics_files = {f.path for f in client.list_artifacts(children["evaluate toy_a"].info.run_id, "metrics")}
    assert metrics_files == {"metrics/metrics.csv", "metrics/metrics.md"}
    logged = pd.read_csv(client.download_artifacts(children["evaluate toy_a"].info.run_id, "metrics/metrics.csv",
                                                   str(tmp_path)))
    assert list(logged["category"]) == list(table["category"])


def test_without_active_run_opens_a_top_level_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking) -> None:
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment("top_level")
    assert mlflow.active_run() is None
    run_evaluation(tmp_path, {"toy": toy_bundle()}, evaluate_params(settings=["class_agnostic"], overlay_images=0))
    runs = experiment_runs("top_level")
    assert [r.info.run_name for r in runs] == ["evaluate toy"]
    assert "mlflow.parentRunId" not in runs[0].data.tags and mlflow.active_run() is None
    assert set(runs[0].data.metrics) == {"pooled_image_AUROC", "pooled_image_AP", "pooled_image_F1Max",
                                         "pooled_image_F1Score", "pooled_pixel_AUROC", "pooled_pixel_AP",
                                         "pooled_pixel_F1Max", "pooled_pixel_AUPRO"}
