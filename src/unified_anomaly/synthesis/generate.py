"""Zero-shot and few-shot synthesis drivers: candidates per target, rendering by a backend, selection.

Every synthetic image ("target") has its own seed derived from (seed, category, class id, index), so one
image can be regenerated alone and the output does not depend on the order categories are processed in.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from unified_anomaly.synthesis.fewshot import AnomalyRegion, augment_region, paste_region, region_ssim
from unified_anomaly.synthesis.foreground import ForegroundGeometry
from unified_anomaly.synthesis.masks import whole_image_geometry
from unified_anomaly.synthesis.priors import DefectTypePrior

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidatePlan:
    """Candidates per target: masks (or pastes) × noise strengths × calls. UniADC: 8 × 3 × 4 = 96."""

    masks_per_target: int = 1
    strengths: tuple[float, ...] = (0.5,)
    calls_per_mask: int = 1

    @property
    def total(self) -> int:
        return self.masks_per_target * len(self.strengths) * self.calls_per_mask


@dataclass
class SynthesisResult:
    """Synthetic images, their class-valued masks and one metadata record per image."""

    images: np.ndarray  # uint8 N×S×S×3
    masks: np.ndarray  # uint8 N×S×S, value = class id
    records: list[dict] = field(default_factory=list)

    @classmethod
    def empty(cls, size: int) -> SynthesisResult:
        return cls(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8), [])

    @classmethod
    def concatenate(cls, parts: Sequence[SynthesisResult], size: int) -> SynthesisResult:
        parts = [p for p in parts if len(p.records)]
        if not parts:
            return cls.empty(size)
        return cls(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.masks for p in parts]),
            [r for p in parts for r in p.records],
        )


def item_seed(seed: int, category: str, class_id: int, index: int) -> int:
    """The seed of one synthetic image, independent of every other image."""
    entropy = [int(seed), zlib.crc32(category.encode()), int(class_id), int(index)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _strength(note: str) -> float:
    return float(note.split("=", 1)[1]) if note.startswith("strength=") else math.nan


def synthesize_zero_shot(
    sources: np.ndarray,
    source_indices: Sequence[int],
    geometries: Sequence[ForegroundGeometry],
    priors: Sequence[DefectTypePrior],
    backend,
    count_per_type: int,
    seed: int,
    plan: CandidatePlan | None = None,
    scorer=None,
    progress: bool = True,
) -> SynthesisResult:
    """``count_per_type`` images per defect type from the normal ``sources``, masks from each type's prior.

    With a ``scorer`` every target gets ``plan.total`` candidates and the best-scoring one is kept; without
    one a single candidate is drawn (nothing to select with) and the score is NaN.
    """
    plan = plan or CandidatePlan()
    size = sources.shape[1]
    images, masks, records = [], [], []
    targets = [(prior, k) for prior in priors for k in range(count_per_type)]
    for prior, k in tqdm(
        targets, desc=f"zero-shot {priors[0].category if priors else ''}", disable=not progress
    ):
        other_prompts = [p for other in priors if other is not prior for p in other.prompts]
        target_seed = item_seed(seed, prior.category, prior.class_id, k)
        rng = np.random.default_rng(target_seed)
        source = int(rng.integers(len(sources)))
        geometry = geometries[source] if prior.mask.use_foreground else whole_image_geometry(size)
        negative = bool(prior.negative_prompts) and backend.kind == "diffusion"
        strengths = (1.0,) if negative else plan.strengths
        shape = (plan.masks_per_target, plan.calls_per_mask) if scorer is not None else (1, 1)
        if scorer is None:
            strengths = strengths[:1]
        cand_masks, generators, prompts, seeds, cand_strengths = [], [], [], [], []
        for _ in range(shape[0]):
            mask, generator = prior.mask.sample(geometry, rng)
            for strength in strengths:
                for _ in range(shape[1]):
                    cand_masks.append(mask)
                    generators.append(generator)
                    prompts.append(prior.prompts[int(rng.integers(len(prior.prompts)))])
                    seeds.append(int(rng.integers(2**31 - 1)))
                    cand_strengths.append(strength)
        stacked_masks = np.stack(cand_masks)
        outputs, notes = backend.inpaint(
            np.repeat(sources[source][None], len(cand_masks), axis=0),
            stacked_masks,
            prompts,
            seeds,
            strengths=cand_strengths,
            negative_prompts=[", ".join(prior.negative_prompts) if negative else None] * len(cand_masks),
            styles=[prior.styles] * len(cand_masks),
        )
        if scorer is not None:
            scores = scorer.score(outputs, stacked_masks, prompts, other_prompts)
            best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
            score = float(scores[best])
        else:
            best, score = 0, math.nan
        images.append(outputs[best])
        masks.append(stacked_masks[best].astype(np.uint8) * prior.class_id)
        records.append(
            {
                "category": prior.category,
                "defect_type": prior.defect_type,
                "class_id": prior.class_id,
                "mode": "zero_shot",
                "backend": backend.label,
                "seed": int(seed),
                "item_seed": target_seed,
                "rank": k,
                "prompt": prompts[best],
                "style": notes[best] if backend.kind != "diffusion" else "",
                "strength": _strength(notes[best]),
                "mask_generator": generators[best],
                "score": score,
                "score_name": "clip_softmax" if scorer is not None else "none",
                "n_candidates": len(cand_masks),
                "source_index": int(source_indices[source]),
                "support_index": -1,
                "mask_area": int(stacked_masks[best].sum()),
            }
        )
    if not images:
        return SynthesisResult.empty(size)
    return SynthesisResult(np.stack(images), np.stack(masks), records)


def synthesize_few_shot(
    normals: np.ndarray,
    normal_indices: Sequence[int],
    geometries: Sequence[ForegroundGeometry],
    regions: Sequence[AnomalyRegion],
    priors: Sequence[DefectTypePrior],
    backend,
    count_per_type: int,
    seed: int,
    plan: CandidatePlan | None = None,
    prompt_template: str = "{anomaly_type} defect",
    scale_range: tuple[float, float] = (1.0, 1.0),
    max_rotation: float = 90.0,
    closing_kernel: int = 3,
    max_paste_tries: int = 20,
    progress: bool = True,
) -> SynthesisResult:
    """``count_per_type`` images per defect type by pasting real ``regions`` into normals and repainting them.

    Every target gets ``plan.total`` candidates (pastes × strengths × calls); the one with the highest mean
    SSIM to its source crop inside the pasted region is kept. Types without any region are skipped (warning).
    """
    plan = plan or CandidatePlan()
    size = normals.shape[1]
    images, masks, records = [], [], []
    by_class: dict[int, list[AnomalyRegion]] = {}
    for region in regions:
        by_class.setdefault(region.class_id, []).append(region)
    usable = []
    for prior in priors:
        if prior.class_id in by_class:
            usable.append(prior)
        else:
            logger.warning(
                "few-shot: no support region for %s/%s (class %d); skipped",
                prior.category,
                prior.defect_type,
                prior.class_id,
            )
    targets = [(prior, k) for prior in usable for k in range(count_per_type)]
    for prior, k in tqdm(
        targets, desc=f"few-shot {priors[0].category if priors else ''}", disable=not progress
    ):
        target_seed = item_seed(seed, prior.category, prior.class_id, k)
        rng = np.random.default_rng(target_seed)
        pool = by_class[prior.class_id]
        region = pool[int(rng.integers(len(pool)))]
        normal = int(rng.integers(len(normals)))
        geometry = geometries[normal] if prior.mask.use_foreground else whole_image_geometry(size)
        prompt = prompt_template.format(
            anomaly_type=prior.readable_name, category=prior.category.replace("_", " ")
        )
        pastes, seeds, cand_strengths = [], [], []
        for _ in range(plan.masks_per_target):
            paste = None
            for _ in range(max_paste_tries):
                crop, crop_mask, description = augment_region(
                    region.image, region.mask, rng, scale_range, max_rotation
                )
                paste = paste_region(
                    normals[normal], geometry, crop, crop_mask, rng, prior.mask.placement, closing_kernel
                )
                if paste is not None:
                    paste.description = description
                    break
            if paste is None:
                continue
            for strength in plan.strengths:
                for _ in range(plan.calls_per_mask):
                    pastes.append(paste)
                    seeds.append(int(rng.integers(2**31 - 1)))
                    cand_strengths.append(strength)
        if not pastes:
            logger.warning(
                "few-shot: could not paste a %s region into normal %d; target skipped",
                prior.defect_type,
                normal,
            )
            continue
        outputs, notes = backend.repaint(
            np.repeat(normals[normal][None], len(pastes), axis=0),
            np.stack([p.pasted for p in pastes]),
            np.stack([p.mask for p in pastes]),
            [prompt] * len(pastes),
            seeds,
            strengths=cand_strengths,
        )
        scores = np.array([region_ssim(out, paste) for out, paste in zip(outputs, pastes, strict=True)])
        best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
        images.append(outputs[best])
        masks.append(pastes[best].mask.astype(np.uint8) * prior.class_id)
        records.append(
            {
                "category": prior.category,
                "defect_type": prior.defect_type,
                "class_id": prior.class_id,
                "mode": "few_shot",
                "backend": backend.label,
                "seed": int(seed),
                "item_seed": target_seed,
                "rank": k,
                "prompt": prompt,
                "style": notes[best] if backend.kind != "diffusion" else "",
                "strength": _strength(notes[best]),
                "mask_generator": f"paste:{pastes[best].description}",
                "score": float(scores[best]),
                "score_name": "ssim_in_region",
                "n_candidates": len(pastes),
                "source_index": int(normal_indices[normal]),
                "support_index": region.source_index,
                "mask_area": int(pastes[best].mask.sum()),
            }
        )
    if not images:
        return SynthesisResult.empty(size)
    return SynthesisResult(np.stack(images), np.stack(masks), records)
