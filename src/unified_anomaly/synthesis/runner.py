"""From an ImageStore and the ``synthesize`` parameters to a store of synthetic anomalies and its metadata."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd

from unified_anomaly.data.manifest import ANOMALY, NORMAL
from unified_anomaly.data.store import ImageStore
from unified_anomaly.synthesis import build_backend, build_scorer
from unified_anomaly.synthesis.fewshot import extract_regions
from unified_anomaly.synthesis.foreground import ForegroundGeometry, estimate_foreground
from unified_anomaly.synthesis.generate import (
    CandidatePlan,
    SynthesisResult,
    synthesize_few_shot,
    synthesize_zero_shot,
)
from unified_anomaly.synthesis.masks import MaskSettings
from unified_anomaly.synthesis.priors import resolve_priors

logger = logging.getLogger(__name__)

SETTINGS = ("zero_shot", "few_shot")
MANIFEST_EXTRAS = ["setting", "backend", "seed", "prompt", "score", "source_index", "support_index"]


def backend_from_params(params: dict[str, Any]):
    """The configured backend (``procedural`` or ``diffusion``)."""
    name = params["backend"]
    if name == "procedural":
        config = params.get("procedural") or {}
        return build_backend(
            "procedural",
            blend_width=params.get("blend_width", 3),
            opacity=tuple(config.get("opacity", (0.75, 1.0))),
            style_keywords=config.get("style_keywords"),
            min_change=config.get("min_change", 12.0),
        )
    if name == "diffusion":
        config = dict(params.get("diffusion") or {})
        keys = (
            "model",
            "num_inference_steps",
            "guidance_scale",
            "resolution",
            "batch_size",
            "device",
            "dtype",
            "local_files_only",
            "scheduler",
            "negative_prompt_steps",
        )
        return build_backend(
            "diffusion",
            blend_width=params.get("blend_width", 3),
            **{k: config[k] for k in keys if k in config},
        )
    raise ValueError(f"synthesize.backend must be procedural or diffusion, got {name!r}")


def scorer_from_params(params: dict[str, Any]):
    """The CLIP scorer when enabled (``auto``: with the diffusion backend in the zero-shot setting)."""
    config = dict(params.get("clip") or {})
    enabled = config.pop("enabled", "auto")
    if enabled == "auto":
        enabled = params["backend"] == "diffusion"
    if not enabled or params["setting"] != "zero_shot":
        return None
    return build_scorer(
        **{k: config[k] for k in ("model", "pretrained", "context", "batch_size", "device") if k in config}
    )


def _plan(params: dict[str, Any], backend, scorer) -> CandidatePlan:
    diffusion = params.get("diffusion") or {}
    strengths = tuple(float(s) for s in diffusion.get("strengths", (0.4, 0.5, 0.6)))
    if params["setting"] == "few_shot":
        pastes = (params.get("few_shot") or {}).get("pastes_per_target", {})
        count = int(pastes.get(backend.kind, 4)) if isinstance(pastes, dict) else int(pastes)
        if backend.kind == "diffusion":
            return CandidatePlan(count, strengths, int(diffusion.get("calls_per_mask", 1)))
        return CandidatePlan(count, (math.nan,), 1)
    if scorer is None:
        return CandidatePlan(1, strengths[:1] if backend.kind == "diffusion" else (math.nan,), 1)
    if backend.kind == "diffusion":
        return CandidatePlan(
            int(diffusion.get("masks_per_target", 8)), strengths, int(diffusion.get("calls_per_mask", 4))
        )
    return CandidatePlan(int((params.get("procedural") or {}).get("candidates", 8)), (math.nan,), 1)


def _foregrounds(images: np.ndarray, params: dict[str, Any]) -> list[ForegroundGeometry]:
    config = params.get("foreground") or {}
    return [
        ForegroundGeometry.from_mask(
            estimate_foreground(
                image,
                method=config.get("method", "border_colour"),
                min_fraction=float(config.get("min_fraction", 0.05)),
            )
        )
        for image in images
    ]


def synthesize_store(
    store: ImageStore, params: dict[str, Any]
) -> tuple[ImageStore, pd.DataFrame, dict[str, Any]]:
    """Synthetic anomalies for every category: (store, metadata table, run info with MLflow tags)."""
    setting = params["setting"]
    if setting not in SETTINGS:
        raise ValueError(f"synthesize.setting must be one of {SETTINGS}, got {setting!r}")
    seed, count = int(params["seed"]), int(params["images_per_type"])
    kn, ka = int(params["kn"]), int(params.get("ka", 1))
    categories = params.get("categories") or store.categories
    missing = sorted(set(categories) - set(store.categories))
    if missing:
        raise ValueError(f"synthesize.categories {missing} are not in the ingested data ({store.categories})")
    settings = MaskSettings.from_config(params.get("masks"))
    skip = set(params.get("skip_types") or ["combined"])
    backend = backend_from_params(params)
    scorer = scorer_from_params(params)
    plan = _plan(params, backend, scorer)
    progress = bool(params.get("progress", True))
    scale = store.size / settings.reference_size
    closing = max(1, int(round(settings.closing_kernel * scale)))
    logger.info(
        "synthesis: %s, backend %s, %d per type, kn=%d%s, %d candidates per target",
        setting,
        backend.label,
        count,
        kn,
        f", ka={ka}" if setting == "few_shot" else "",
        plan.total,
    )
    started = time.perf_counter()
    parts = []
    for category in categories:
        priors = [
            p
            for p in resolve_priors(
                params.get("priors"), store.dataset, category, store.class_names[category], settings
            )
            if p.defect_type not in skip
        ]
        normals = store.select(split="train", category=category, label=NORMAL, max_rank=kn)
        if len(normals) == 0:
            raise ValueError(
                f"{category}: no training normals (split 'train', rank < {kn}) to synthesize from"
            )
        sources = np.ascontiguousarray(store.images[normals])
        geometries = _foregrounds(sources, params)
        if setting == "zero_shot":
            result = synthesize_zero_shot(
                sources, normals, geometries, priors, backend, count, seed, plan, scorer, progress
            )
        else:
            fewshot = params.get("few_shot") or {}
            override = ((fewshot.get("overrides") or {}).get(store.dataset) or {}).get(category) or {}
            min_area = max(
                1,
                int(
                    round(
                        override.get("min_region_area", fewshot.get("min_region_area", 256)) * scale * scale
                    )
                ),
            )
            support = store.select(split="support", category=category, label=ANOMALY, max_rank=ka)
            if len(support) == 0:
                raise ValueError(
                    f"{category}: few_shot needs support anomalies (split 'support', rank < {ka}); "
                    "none found in the ingested data"
                )
            regions = [
                region
                for row in support
                for region in extract_regions(
                    store.images[row],
                    store.masks[row],
                    int(row),
                    store.class_names[category][1:],
                    min_area,
                    float(fewshot.get("context_ratio", 0.25)),
                )
            ]
            logger.info(
                "%s: %d support samples give %d regions of >= %d px",
                category,
                len(support),
                len(regions),
                min_area,
            )
            result = synthesize_few_shot(
                sources,
                normals,
                geometries,
                regions,
                priors,
                backend,
                count,
                seed,
                plan,
                prompt_template=fewshot.get("prompt_template", "{anomaly_type} defect"),
                scale_range=tuple(fewshot.get("scale_range", (1.0, 1.0))),
                max_rotation=float(fewshot.get("max_rotation", 90)),
                closing_kernel=closing,
                progress=progress,
            )
        parts.append(result)
    seconds = time.perf_counter() - started
    result = SynthesisResult.concatenate(parts, store.size)
    tags = {**backend.tags, **(scorer.tags if scorer is not None else {}), "synthesis_setting": setting}
    info = {
        "images": len(result.records),
        "seconds": seconds,
        "images_per_s": len(result.records) / seconds if seconds > 0 else math.nan,
        "tags": tags,
    }
    synthetic, metadata = to_store(result, store, categories, setting, info)
    logger.info(
        "synthesis: %d images in %.1f s (%.1f images/s) with %s",
        info["images"],
        seconds,
        info["images_per_s"],
        backend.label,
    )
    return synthetic, metadata, info


def to_store(
    result: SynthesisResult, store: ImageStore, categories: list[str], setting: str, info: dict[str, Any]
) -> tuple[ImageStore, pd.DataFrame]:
    """The synthetic ImageStore (manifest columns of ``data/manifest.py`` + extras) and the metadata table."""
    metadata = pd.DataFrame(result.records)
    columns = [
        "index",
        "dataset",
        "setting",
        "category",
        "defect_type",
        "class_id",
        "rank",
        "backend",
        "seed",
        "item_seed",
        "prompt",
        "style",
        "strength",
        "mask_generator",
        "score",
        "score_name",
        "n_candidates",
        "source_index",
        "source_path",
        "support_index",
        "support_path",
        "mask_area",
    ]
    if metadata.empty:
        return _empty_store(store, categories, info), pd.DataFrame(columns=columns)
    paths = store.manifest["image_path"].astype(str).to_numpy()
    metadata.insert(0, "index", np.arange(len(metadata)))
    metadata["dataset"] = store.dataset
    metadata["setting"] = setting
    metadata["source_path"] = paths[metadata["source_index"].to_numpy()]
    support = metadata["support_index"].to_numpy()
    metadata["support_path"] = np.where(support >= 0, paths[np.maximum(support, 0)], "")
    metadata = metadata[columns]
    manifest = pd.DataFrame(
        {
            "dataset": store.dataset,
            "category": metadata["category"],
            "split": "train",
            "rank": metadata["rank"],
            "label": ANOMALY,
            "defect_type": metadata["defect_type"],
            "class_id": metadata["class_id"],
            "image_path": "synthetic:" + metadata["source_path"],
            "mask_path": "",
            "width": store.size,
            "height": store.size,
        }
    )
    for column in MANIFEST_EXTRAS:
        manifest[column] = metadata[column].to_numpy()
    synthetic = ImageStore(
        manifest=manifest,
        images=result.images,
        masks=result.masks,
        class_names={c: list(store.class_names[c]) for c in categories},
        size=store.size,
        dataset=store.dataset,
        extra={"synthesis": {"setting": setting, **info["tags"]}},
    )
    return synthetic, metadata


def _empty_store(store: ImageStore, categories: list[str], info: dict[str, Any]) -> ImageStore:
    from unified_anomaly.data.manifest import empty_manifest

    manifest = empty_manifest()
    for column in MANIFEST_EXTRAS:
        manifest[column] = pd.Series(dtype=object)
    return ImageStore(
        manifest,
        np.zeros((0, store.size, store.size, 3), np.uint8),
        np.zeros((0, store.size, store.size), np.uint8),
        {c: list(store.class_names[c]) for c in categories},
        store.size,
        store.dataset,
        {"synthesis": info["tags"]},
    )
