"""Trains a tiny UniAD and a tiny RD in this process; writes what it saw to ``<out>/rank<r>.json``.

Run alone (one process) or under ``torchrun --nproc_per_node=N`` (DDP over Gloo on the CPU) by
tests/models/test_distributed.py. Not a test module itself.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from unified_anomaly.models import build_model
from unified_anomaly.models.distributed import launched_world
from unified_anomaly.models.reverse_distillation import train_reverse_distillation
from unified_anomaly.models.uniad_training import UniADTrainConfig, extract_feature_cache, train_uniad

N_IMAGES, BATCH, EPOCHS = 14, 4, 2
UNIAD = {"backbone": "tiny_cnn", "weights": "random", "out_indices": [0, 1, 2], "input_size": 64, "hidden_dim": 16,
         "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 32,
         "neighbour_size": 3}
RD = {"backbone": "tiny_cnn", "weights": "random", "input_size": 64, "sigma": 2.0}


def weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_both() -> dict:
    """Steps taken and final weights of both loops (same seeds on every rank)."""
    torch.set_num_threads(1)
    images = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 64, 64, 3), dtype=np.uint8)
    steps = {"count": 0}
    handle = register_optimizer_step_post_hook(lambda *_: steps.__setitem__("count", steps["count"] + 1))
    try:
        torch.manual_seed(0)
        uniad = build_model("uniad", **UNIAD)
        features = extract_feature_cache(uniad, [images], total=N_IMAGES, progress=False)
        config = UniADTrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=1e-3, seed=3, progress=False,
                                  selection="last", device="cpu")
        uniad, history, _ = train_uniad(uniad, features, None, config)
        uniad_steps = steps["count"]
        torch.manual_seed(0)
        rd = build_model("rd", **RD)
        rd_history = train_reverse_distillation(rd, images, epochs=EPOCHS, batch_size=BATCH, seed=1, progress=False)
        rd_steps = steps["count"] - uniad_steps
    finally:
        handle.remove()
    world = launched_world()
    return {"rank": world.rank, "world_size": world.size,
            "uniad_steps": uniad_steps, "uniad_weights": weights_digest(uniad),
            "uniad_train_loss": [float(x) for x in history["train_loss"]],
            "rd_steps": rd_steps, "rd_weights": weights_digest(rd), "rd_loss": [float(x) for x in rd_history]}


if __name__ == "__main__":
    result = train_both()
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{result['rank']}.json").write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
