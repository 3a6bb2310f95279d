"""DDP through torchrun: each rank trains on its shard, gradients are averaged, every rank ends with the same weights."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unified_anomaly.models.distributed import World, launched_world, setup, shard, wrap

HELPER = Path(__file__).resolve().parent / "ddp_train.py"
sys.path.insert(0, str(HELPER.parent))
import ddp_train  # noqa: E402


@pytest.mark.parametrize("n, size", [(14, 2), (7, 3), (4, 4), (3, 4)])
def test_shards_cover_the_order_with_equal_lengths(n: int, size: int) -> None:
    order = np.random.default_rng(0).permutation(n)
    shards = [shard(order, World(size=size, rank=rank)) for rank in range(size)]
    assert {len(s) for s in shards} == {math.ceil(n / size)}  # the same number of steps on every rank
    seen = np.concatenate(shards)
    assert set(seen) == set(order) and len(seen) - n == -n % size  # all of it; padding only to a multiple
    tensors = [shard(torch.from_numpy(order), World(size=size, rank=rank)) for rank in range(size)]
    assert all(torch.equal(t, torch.from_numpy(s)) for t, s in zip(tensors, shards, strict=True))


def test_single_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    world, device = setup(torch.device("cpu"))
    assert world == World() and world.is_main and not world.distributed and device == torch.device("cpu")
    module = torch.nn.Linear(2, 1)
    assert wrap(module, "forward", world, device) == module.forward
    order = np.arange(5)
    assert shard(order, world) is order
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_world() == World(size=2, rank=1, local_rank=1) and not launched_world().is_main
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="outside WORLD_SIZE"):
        launched_world()


@pytest.mark.slow
def test_torchrun_two_ranks_split_the_steps_and_end_with_identical_weights(tmp_path, monkeypatch) -> None:
    for variable in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    alone = ddp_train.train_both()
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(HELPER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    n, batch, epochs = ddp_train.N_IMAGES, ddp_train.BATCH, ddp_train.EPOCHS
    assert alone["uniad_steps"] == epochs * math.ceil(n / batch)
    for rank in ranks:
        assert rank["world_size"] == 2
        assert rank["uniad_steps"] == epochs * math.ceil(math.ceil(n / 2) / batch)  # half the data per rank
        assert rank["rd_steps"] == epochs * math.ceil(math.ceil(n / 2) / batch)
    first, second = ranks
    for key in ("uniad_weights", "rd_weights", "uniad_train_loss", "rd_loss"):
        assert first[key] == second[key], key  # gradients averaged, buffers from rank 0, losses all-reduced
    assert first["uniad_weights"] != alone["uniad_weights"]  # each rank did not just train on everything
