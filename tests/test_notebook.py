"""The default `kedro run` chain in a project copy with the shortest parameters, its end-of-run summary, and
notebooks/walkthrough.ipynb executed headless on what it produced."""

from __future__ import annotations

import shutil

import mlflow
import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from conftest import REPO_ROOT, run_kedro

pytestmark = pytest.mark.slow

TINY_BACKBONE = {"backbone": "tiny_cnn", "weights": "random"}
# Every pipeline of the default chain runs, on a smaller default dataset, 64² images and tiny random models.
SHORT_PARAMS = {
    "ingest": {"default_dataset": {"train_normals": 12, "test_normals": 3, "defects_per_type": 2},
               "image_size": 64, "split": {"val_fraction": 0.5}, "workers": 1},
    "synthesize": {"images_per_type": 2, "progress": False, "contact_sheet_columns": 2},
    "train_uniad": {"model": {**TINY_BACKBONE, "out_indices": [1, 2, 3], "input_size": 64, "hidden_dim": 16,
                              "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
                              "dim_feedforward": 32, "neighbour_size": 3},
                    "training": {"epochs": 1, "batch_size": 8}},
    "train_cada": {"rd": {**TINY_BACKBONE, "input_size": 64, "sigma": 1.0},
                   "rd_training": {"epochs": 1, "batch_size": 8},
                   "regressor": {"hidden": 16, "prototypes": 4},
                   "targets": {"max_clusters": 2, "min_cluster_size": 3, "min_scores_per_group": 3, "epochs": 5}},
    "train_uniadc": {"encoder": {"kind": "cnn", "name": "tiny_cnn", "weights": "random", "out_indices": [1, 2, 3]},
                     "text_encoder": {"kind": "random", "dim": 8, "seed": 0},
                     "templates": ["a photo of {}"],
                     "model": {"fusion_dim": 8, "fusion_stride": 4, "resolution": 64, "top_k": 20},
                     "training": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 4, "eval_every": 1}},
    "evaluate": {"progress": False, "overlay_images": 1, "figure_dpi": 30, "batch_size": 32},
}


def test_default_run_summary_and_walkthrough_notebook(project_copy, monkeypatch):
    (project_copy / "conf" / "local" / "parameters_short.yml").write_text(yaml.safe_dump(SHORT_PARAMS))
    result = run_kedro(project_copy, "run")

    # the end-of-run summary in the log and on the MLflow run
    log = result.stdout + result.stderr
    assert "Run summary (default)" in log and "make mlflow-ui" in log and "| image_AUROC |" in log
    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["unified_anomaly"], output_format="list")
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    summary = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/summary.md")
    for model in ("uniad", "rd", "rd_cada", "uniad_cada", "uniadc"):
        assert f"`evaluate {model}`" in summary
    assert "| image_ClassAcc | uniadc" in summary

    # the notebook, headless, with the environment's own kernel, from notebooks/ in the project copy
    (project_copy / "notebooks").mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / "walkthrough.ipynb", project_copy / "notebooks")
    notebook = nbformat.read(project_copy / "notebooks" / "walkthrough.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # stripped in git
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend
    monkeypatch.setenv("PYTHONPATH", str(project_copy / "src"))
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(project_copy / "notebooks")}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # test images, contact sheet, overlays
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "default dataset" in text and "uniad threshold" in text
    runs_table = notebook.cells[-1].outputs[-1]["data"]["text/plain"]  # the latest evaluation of each model
    assert "metrics.image_AUROC" in runs_table and len(runs_table.splitlines()) >= 5
    assert all(f" {model} " in runs_table for model in ("uniad", "rd", "uniadc"))
    assert not (project_copy / "notebooks" / "mlflow.db").exists()  # it read the project's store
