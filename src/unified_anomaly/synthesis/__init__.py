"""Anomaly synthesis for UniADC: mask priors, backends (procedural, diffusion), few-shot cut-paste-repaint.

``build_backend(name, **config)`` gives a backend with ``inpaint`` (zero-shot) and ``repaint`` (few-shot), a
``label`` for logs/MLflow and ``tags`` naming the weights; ``build_scorer(**config)`` the CLIP scorer.
"""

from __future__ import annotations

from unified_anomaly.synthesis.fewshot import AnomalyRegion, extract_regions
from unified_anomaly.synthesis.foreground import ForegroundGeometry, estimate_foreground
from unified_anomaly.synthesis.generate import (
    CandidatePlan,
    SynthesisResult,
    item_seed,
    synthesize_few_shot,
    synthesize_zero_shot,
)
from unified_anomaly.synthesis.masks import (
    GAP_LIBRARY,
    MaskPrior,
    MaskSettings,
    generate_mask,
    select_generators,
)
from unified_anomaly.synthesis.priors import DefectTypePrior, resolve_priors
from unified_anomaly.synthesis.procedural import ProceduralBackend

BACKENDS = ("procedural", "diffusion")


def build_backend(name: str, **config):
    """A synthesis backend by name: ``procedural`` (offline default) or ``diffusion`` (needs weights)."""
    if name == "procedural":
        return ProceduralBackend(**config)
    if name == "diffusion":
        from unified_anomaly.synthesis.diffusion import DiffusionBackend

        return DiffusionBackend(**config)
    raise ValueError(f"unknown synthesis backend {name!r}; use one of {BACKENDS}")


def build_scorer(**config):
    """The CLIP category-consistency scorer (open_clip; model name + tag, a checkpoint file or local-dir:)."""
    from unified_anomaly.synthesis.diffusion import ClipConsistencyScorer

    return ClipConsistencyScorer(**config)


__all__ = [
    "BACKENDS",
    "GAP_LIBRARY",
    "AnomalyRegion",
    "CandidatePlan",
    "DefectTypePrior",
    "ForegroundGeometry",
    "MaskPrior",
    "MaskSettings",
    "ProceduralBackend",
    "SynthesisResult",
    "build_backend",
    "build_scorer",
    "estimate_foreground",
    "extract_regions",
    "generate_mask",
    "item_seed",
    "resolve_priors",
    "select_generators",
    "synthesize_few_shot",
    "synthesize_zero_shot",
]
