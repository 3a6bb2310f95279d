"""`kedro run --pipeline ingest`, twice, in a copy of the project: two versions of every dataset, two MLflow runs."""

import mlflow
import pytest

from conftest import run_kedro
from unified_anomaly.data.store import read_store

pytestmark = pytest.mark.slow

VERSIONED = [
    "data/02_intermediate/default/manifest.csv",
    "data/02_intermediate/default/ingest_info.json",
    "data/08_reporting/default/class_counts.csv",
    "data/03_primary/default/ingested_images",
]


def test_two_runs_give_two_versions_and_two_mlflow_runs(project_copy):
    for _ in range(2):
        run_kedro(project_copy, "run", "--pipeline", "ingest")
    for dataset in VERSIONED:
        versions = sorted(p.name for p in (project_copy / dataset).iterdir())
        assert len(versions) == 2, (dataset, versions)
    store_dir = project_copy / VERSIONED[-1]
    stores = [read_store(v / "ingested_images") for v in sorted(store_dir.iterdir())]
    assert stores[0].manifest.equals(stores[1].manifest)
    assert (stores[0].images == stores[1].images).all()  # same seed, same data, same bytes
    assert stores[0].categories == ["brick", "gravel"] and stores[0].images.shape[1:] == (256, 256, 3)

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["unified_anomaly"])
    assert len(runs) == 2
    run = runs.iloc[0]
    assert run["params.ingest.image_size"] == "256"  # flattened parameters
    assert run["tags.dataset"] == "default"
    assert run["tags.dataset_version"] in {p.name for p in store_dir.iterdir()}
    assert len(run["tags.mlflow.source.git.commit"]) in (40, len("unknown"))
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run["run_id"], "ingest")]
    assert artifacts == ["ingest/class_counts.csv"]


def test_unknown_parameter_stops_the_run_before_work(project_copy):
    result = run_kedro(project_copy, "run", "--pipeline", "ingest", "--params", "ingest.imag_size=128", check=False)
    assert result.returncode != 0
    assert "unknown parameter 'ingest.imag_size'" in result.stdout + result.stderr
    assert not (project_copy / "data" / "03_primary").exists()


def test_bad_dataset_folder_fails_with_the_list_and_writes_no_version(project_copy, make_mvtec):
    root = make_mvtec(categories=("bottle",))
    (root / "bottle" / "train" / "good" / "002.png").write_bytes(b"")
    result = run_kedro(project_copy, "run", "--pipeline", "ingest", "--params",
                       f"ingest.source.layout=mvtec,ingest.source.path={root}", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "002.png: zero-byte file" in " ".join(output.split())  # however the log wraps
    assert not (project_copy / "data" / "03_primary").exists()
