"""Shared fixtures: small datasets in every supported layout, built in a temporary folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
MTD_ROOT = (REPO_ROOT / ".." / "shared" / "data" / "mtd").resolve()


def write_image(path: Path, size=(40, 32), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode == "RGB":
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    elif mode == "L":
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(path)
    elif mode == "RGBA":
        Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").save(path)
    elif mode == "I;16":
        Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(path)
    else:
        raise ValueError(mode)
    return path


def write_mask(path: Path, size=(40, 32), box=(5, 5, 20, 20), value=255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    mask = np.zeros((h, w), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = value
    Image.fromarray(mask).save(path)
    return path


@pytest.fixture
def make_mvtec(tmp_path):
    """An MVTec-layout folder: ``categories`` with ``train`` normals, ``test`` normals and defects with masks."""

    def build(root_name="mvtec", categories=("bottle", "cable"), defects=("crack", "scratch"), n_train=6,
              n_test_good=3, n_defect=3, size=(40, 32)) -> Path:
        root = tmp_path / root_name
        seed = 0
        for category in categories:
            for i in range(n_train):
                write_image(root / category / "train" / "good" / f"{i:03d}.png", size, seed=(seed := seed + 1))
            for i in range(n_test_good):
                write_image(root / category / "test" / "good" / f"{i:03d}.png", size, seed=(seed := seed + 1))
            for defect in defects:
                for i in range(n_defect):
                    write_image(root / category / "test" / defect / f"{i:03d}.png", size, seed=(seed := seed + 1))
                    write_mask(root / category / "ground_truth" / defect / f"{i:03d}_mask.png", size)
        return root

    return build


@pytest.fixture
def make_mvtec_fs(tmp_path):
    """An MVTec-FS folder: images plus ``samples/{train,test}_<cat>.jsonl``; mask value = class id."""

    def build(categories=("bottle",), defects=("broken_large", "contamination"), size=(40, 32)) -> Path:
        root = tmp_path / "mvtec_fs"
        seed = 0
        for category in categories:
            rows = {"train": [], "test": []}
            for split, n_good, n_bad in (("train", 5, 2), ("test", 3, 2)):
                for i in range(n_good):
                    name = f"images/{category}/{split}/good_{i}.png"
                    write_image(root / name, size, seed=(seed := seed + 1))
                    rows[split].append({"filename": name, "maskname": "", "label": 0, "label_name": "normal",
                                        "clsname": category})
                for class_id, defect in enumerate(defects, start=1):
                    for i in range(n_bad):
                        name = f"images/{category}/{split}/{defect}_{i}.png"
                        mask = f"masks/{category}/{split}/{defect}_{i}.png"
                        write_image(root / name, size, seed=(seed := seed + 1))
                        write_mask(root / mask, size, value=class_id)
                        rows[split].append({"filename": name, "maskname": mask, "label": class_id,
                                            "label_name": defect, "clsname": category})
            (root / "samples").mkdir(parents=True, exist_ok=True)
            for split, entries in rows.items():
                (root / "samples" / f"{split}_{category}.jsonl").write_text(
                    "\n".join(json.dumps(e) for e in entries) + "\n")
        return root

    return build


@pytest.fixture(scope="session")
def mtd_root() -> Path:
    if not (MTD_ROOT / "split.csv").is_file():
        pytest.skip(f"the real MTD dataset is not at {MTD_ROOT}")
    return MTD_ROOT


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A throw-away copy of the Kedro project (conf, pyproject, src) with empty data folders."""
    import shutil

    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / ".telemetry").write_text("consent: false\n")
    shutil.copytree(REPO_ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    return root


def run_kedro(project: Path, *args: str, check: bool = True):
    """``kedro run ...`` in a subprocess, as a user would type it."""
    import subprocess
    import sys

    # A wide console: rich would otherwise fold long paths in messages across lines.
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(project / "src"), "COLUMNS": "1000"}
    result = subprocess.run([sys.executable, "-m", "kedro", *args], cwd=project, env=env, capture_output=True,
                            text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"kedro {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(autouse=True)
def isolated_mlflow(tmp_path, monkeypatch):
    """Each test gets its own (lazily created) tracking store and no experiment or run left by another."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for variable in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)  # mlflow sets these for subprocesses; restored after
    yield
    import sys

    if "mlflow" in sys.modules:
        import mlflow
        from mlflow.tracking import fluent

        while mlflow.active_run() is not None:
            mlflow.end_run()
        fluent._active_experiment_id = None
        mlflow.set_tracking_uri(None)  # back to the environment variable, which monkeypatch restores
