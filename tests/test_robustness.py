"""A run killed (SIGKILL) mid-save leaves no version a later run loads; the next run completes.

A failing node and its ``--from-nodes`` resume: tests/test_parallel.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from kedro.io.core import Version

from conftest import run_kedro
from evaluate_inputs import incomplete_versions
from unified_anomaly.data.store import read_store
from unified_anomaly.datasets import ImageStoreDataset

pytestmark = pytest.mark.slow


def test_sigkill_while_the_image_store_is_written_leaves_no_loadable_half_version(project_copy, make_mvtec):
    root = make_mvtec(categories=("bottle",), defects=("crack",), n_train=400, n_test_good=20, n_defect=20)
    params = (f"ingest.source.layout=mvtec,ingest.source.path={root},ingest.image_size=256,ingest.workers=1,"
              "ingest.chunk_size=4")
    store_dir = project_copy / "data" / "03_primary" / "default" / "ingested_images"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(project_copy / "src")}
    process = subprocess.Popen([sys.executable, "-m", "kedro", "run", "--pipeline", "ingest", "--params", params],
                               cwd=project_copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    partial = None
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline and partial is None:
            started = [p for p in store_dir.glob("*/.tmp-ingested_images-*/images.npy") if p.stat().st_size > 2**20]
            partial = started[0].parent if started else None
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # our own child and its decoding workers, mid-write
        process.wait()
    assert partial is not None, "ingestion ended before its store was being written: enlarge the dataset"
    assert process.returncode == -signal.SIGKILL

    assert list(store_dir.glob("*/ingested_images")) == []  # the killed version never appears complete
    assert not ImageStoreDataset(str(store_dir), version=Version(None, None)).exists()  # nothing to load

    run_kedro(project_copy, "run", "--pipeline", "ingest", "--params", params)  # the next run completes
    store = ImageStoreDataset(str(store_dir), version=Version(None, None)).load()
    assert len(store) == len(store.manifest) == 440 and store.images.shape == (440, 256, 256, 3)
    assert (store.images[-1] > 0).any()  # the last chunk really is there
    # left behind: only the killed version's hidden temporary folder, which no load ever globs
    assert incomplete_versions(project_copy / "data") == [partial.parent]
    assert [p.name.startswith(".tmp-") for p in partial.parent.iterdir()] == [True]
    assert read_store(next(store_dir.glob("*/ingested_images"))).manifest.equals(store.manifest)
