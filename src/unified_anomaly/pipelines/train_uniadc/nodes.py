"""Nodes of train_uniadc: pick the K-shot data, build the discriminator, train it, select on validation.

Data (``methods.md`` §5 settings):
- zero_shot: the first ``kn`` training normals per category + synthetic anomalies (``synthetic_images``);
- few_shot: the same plus the first ``ka`` support anomalies per defect type (their repaints come with the
  synthetic store);
- validation (checkpoint selection and thresholds, never the test split), ``training.validation``:
  ``synthetic`` = the ``val`` rows + a held-out share (``val_synthetic_fraction``) of the synthetic anomalies of
  every defect type; ``support`` = the ``val`` rows + the real ``support`` anomalies this run does not train on
  (``unused_support``); ``mixed`` = both. The held-out synthetic share stays out of training in every mode, so
  the switch changes only what selects the checkpoint (``val_synthetic_fraction: 0`` trains on all of it).

Several categories: one discriminator holds every category's defect classes (see ``models/uniadc.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from unified_anomaly.data.manifest import ANOMALY, NORMAL
from unified_anomaly.data.store import ImageStore
from unified_anomaly.models.bundle import ModelBundle
from unified_anomaly.models.contract import count_parameters
from unified_anomaly.models.uniadc import SampleSet, UniADC, encode_class_texts, fit_uniadc

logger = logging.getLogger(__name__)

VALIDATION_DESCRIPTIONS = {  # train_uniadc.training.validation -> what the validation set holds
    "synthetic": "val rows + held-out synthetic anomalies",
    "support": "val rows + real support anomalies outside the shots",
    "mixed": "val rows + real support anomalies outside the shots + held-out synthetic anomalies",
}
VALIDATION_SETS = tuple(VALIDATION_DESCRIPTIONS)


def global_classes(store: ImageStore, categories: list[str]) -> tuple[list[str], list[str], dict[str, int]]:
    """(class names, their categories, id offset per category): category by category, local order kept."""
    names, owners, offsets = [], [], {}
    for category in categories:
        offsets[category] = len(names)
        for defect in store.class_names[category][1:]:
            names.append(defect)
            owners.append(category)
    return names, owners, offsets


def _globalise(masks: np.ndarray, offset: int) -> np.ndarray:
    out = masks.astype(np.uint8, copy=True)
    out[out > 0] += np.uint8(offset)
    return out


def _take(store: ImageStore, rows: np.ndarray, offsets: dict[str, int], real: bool,
          class_map: dict[tuple[str, int], int] | None = None) -> SampleSet:
    """Rows of a store as a SampleSet with global class ids (``class_map`` re-maps another store's local ids)."""
    rows = np.asarray(rows, dtype=int)
    categories = store.manifest["category"].to_numpy()[rows].tolist()
    masks = np.ascontiguousarray(store.masks[rows]).astype(np.uint8)
    for i, category in enumerate(categories):
        if class_map is None:
            masks[i] = _globalise(masks[i], offsets[category])
        else:
            lookup = np.zeros(256, np.uint8)
            for (cat, local), global_id in class_map.items():
                if cat == category:
                    lookup[local] = global_id
            masks[i] = lookup[masks[i]]
    return SampleSet(np.ascontiguousarray(store.images[rows]), masks, categories, np.full(len(rows), real))


def _concat(parts: list[SampleSet]) -> SampleSet:
    parts = [p for p in parts if len(p)]
    if not parts:
        return SampleSet(np.zeros((0, 1, 1, 3), np.uint8), np.zeros((0, 1, 1), np.uint8), [], np.zeros(0, bool))
    return SampleSet(np.concatenate([p.images for p in parts]), np.concatenate([p.masks for p in parts]),
                     sum((p.categories for p in parts), []), np.concatenate([p.is_real for p in parts]))


def synthetic_class_map(synthetic: ImageStore, store: ImageStore, offsets: dict[str, int]) -> dict[tuple[str, int], int]:
    """Synthetic local class id → global id, matched by defect NAME (the two stores may order classes apart)."""
    mapping = {}
    for category, offset in offsets.items():
        names = store.class_names[category]
        for local, name in enumerate(synthetic.class_names.get(category, [])):
            if local == 0:
                continue
            if name not in names:
                raise ValueError(f"synthetic defect type {name!r} of {category!r} is not a class of the ingested "
                                 f"data ({names[1:]}); re-run `kedro run --pipeline synthesize` on this dataset")
            mapping[(category, local)] = offset + names.index(name)
    return mapping


def validation_set(params: dict[str, Any]) -> str:
    """``train_uniadc.training.validation`` checked: synthetic (default when absent) | support | mixed."""
    value = (params.get("training") or {}).get("validation", "synthetic")
    if value not in VALIDATION_SETS:
        raise ValueError(f"train_uniadc.training.validation must be one of {', '.join(VALIDATION_SETS)}, got "
                         f"{value!r} (conf/base/parameters_train_uniadc.yml or --params)")
    return str(value)


def select_training_data(
    store: ImageStore, synthetic: ImageStore | None, params: dict[str, Any]
) -> tuple[SampleSet, SampleSet, dict[str, Any]]:
    """(train, validation, summary) for the configured setting, Kn, Ka and validation set; never reads the test
    split. ``support`` / ``mixed`` validation without unused support anomalies in a category falls back to the
    held-out synthetic anomalies there, with a warning; the set actually used is in ``summary``."""
    setting, kn, ka = params["setting"], int(params["kn"]), int(params.get("ka", 0))
    if setting not in {"zero_shot", "few_shot"}:
        raise ValueError(f"train_uniadc.setting must be zero_shot or few_shot, got {setting!r}")
    validation = validation_set(params)
    categories = params.get("categories") or store.categories
    _, _, offsets = global_classes(store, categories)
    rng = np.random.default_rng(int(params.get("seed", 0)))
    train_parts, val_parts, summary = [], [], {"categories": categories, "validation": validation}
    class_map = synthetic_class_map(synthetic, store, offsets) if synthetic is not None else None
    for category in categories:
        normals = store.select(split="train", category=category, label=NORMAL, max_rank=kn)
        if len(normals) < kn:
            raise ValueError(f"{category}: only {len(normals)} training normals for kn={kn}")
        train_parts.append(_take(store, normals, offsets, real=True))
        support = np.zeros(0, dtype=int)
        if setting == "few_shot":
            support = store.select(split="support", category=category, label=ANOMALY, max_rank=ka)
            if len(support) == 0:
                raise ValueError(f"{category}: few_shot needs support anomalies (split 'support'); none found")
            train_parts.append(_take(store, support, offsets, real=True))
        real_val = store.select(split="val", category=category)
        used = validation
        if validation != "synthetic":
            held_support = unused_support(store, setting, ka, [category])
            if len(held_support):
                real_val = np.concatenate([real_val, held_support])
            else:
                used = "synthetic"
                logger.warning(
                    "train_uniadc.training.validation=%s: %s has no support anomalies outside this run's shots "
                    "(split 'support', ranks >= ka=%d in few_shot); its validation falls back to the held-out "
                    "synthetic anomalies. Ingest a larger support pool (ingest.split.support_per_defect) or set "
                    "train_uniadc.training.validation=synthetic", validation, category, ka if setting == "few_shot"
                    else 0)
        val_parts.append(_take(store, real_val, offsets, real=True))
        n_synthetic_train = n_synthetic_val = 0
        if synthetic is not None and category in synthetic.class_names:
            rows = synthetic.select(split="train", category=category, label=ANOMALY)
            rows = _filter_rows(synthetic, rows, params.get("synthetic_filter") or {})
            check_synthetic_shots(synthetic, rows, normals, support, setting, kn, ka)
            held_out = _hold_out(synthetic, rows, float(params.get("val_synthetic_fraction", 0.2)), rng)
            kept = np.setdiff1d(rows, held_out)
            train_parts.append(_take(synthetic, kept, offsets, real=False, class_map=class_map))
            if used != "support":
                val_parts.append(_take(synthetic, held_out, offsets, real=False, class_map=class_map))
                n_synthetic_val = len(held_out)
            n_synthetic_train = len(kept)
        summary[category] = {"normals": len(normals), "support": len(support), "synthetic_train": n_synthetic_train,
                             "synthetic_val": n_synthetic_val,
                             "val_normals": len(store.select(split="val", category=category, label=NORMAL)),
                             "support_val": int((store.manifest["split"].to_numpy()[real_val] == "support").sum()),
                             "validation": used}
    train, val = _concat(train_parts), _concat(val_parts)
    if not (train.masks > 0).any():
        raise ValueError("no anomalous training pixels: run `kedro run --pipeline synthesize` first (zero_shot) "
                         "or use setting few_shot with support anomalies")
    logger.info("UniADC data (%s, kn=%d, ka=%d, validation=%s): %s", setting, kn, ka, validation, summary)
    return train, val, summary


def validation_used(summary: dict[str, Any]) -> str:
    """The validation set that selected the checkpoint, as one tag: ``support``, or e.g.
    ``support (synthetic fallback: cloth)`` when some categories had no unused support anomalies."""
    requested = summary["validation"]
    fallback = [c for c in summary["categories"] if summary[c]["validation"] != requested]
    return requested + (f" (synthetic fallback: {', '.join(fallback)})" if fallback else "")


def unused_support(store: ImageStore, setting: str, ka: int, categories: list[str] | None = None) -> np.ndarray:
    """The ``support`` anomalies a setting does not train on: few-shot ranks >= ``ka``, zero-shot all of them."""
    support = store.select(split="support", category=categories or store.categories, label=ANOMALY)
    if setting == "few_shot":
        support = support[store.manifest["rank"].to_numpy()[support] >= int(ka)]
    return support.astype(int)


def selection_rows(store: ImageStore, setting: str, ka: int, categories: list[str] | None = None) -> np.ndarray:
    """Rows for choosing hyper-parameters outside test: the ``val`` normals plus the ``support`` anomalies this
    setting does not train on (few-shot: ranks >= ``ka`` of every defect type; zero-shot: every support image).
    Never a test row. The zero-shot set holds real anomalies the model never sees (a protocol choice)."""
    if setting not in {"zero_shot", "few_shot"}:
        raise ValueError(f"setting must be zero_shot or few_shot, got {setting!r}")
    categories = categories or store.categories
    normals = store.select(split="val", category=categories, label=NORMAL)
    support = unused_support(store, setting, ka, categories)
    rows = np.sort(np.concatenate([normals, support])).astype(int)
    if not len(support) or not len(normals):
        raise ValueError(f"selection set for {setting} (ka={ka}) needs val normals and unused support anomalies; "
                         f"found {len(normals)} and {len(support)}")
    return rows


def check_synthetic_shots(synthetic: ImageStore, rows: np.ndarray, normals: np.ndarray, support: np.ndarray,
                          setting: str, kn: int, ka: int) -> None:
    """Synthetic anomalies must be built from this run's shots only: their source normals among the Kn normals
    and (few-shot) their pasted regions from the Ka support samples. Otherwise more real images than Kn / Ka
    would reach training through the synthetic store (e.g. ``synthesize.kn: 2`` with ``train_uniadc.kn: 1``).
    A zero-shot synthetic store under a few-shot run (or the reverse) is allowed but logged."""
    manifest = synthetic.manifest
    outside = _indices_outside(manifest, "source_index", rows, normals)
    if outside:
        raise ValueError(
            f"synthetic_images were made from ingested rows {outside[:5]}, which are not among the first "
            f"kn={kn} training normals of this run; re-run `kedro run --pipeline synthesize --params "
            f"synthesize.kn={kn}` (synthesize.kn must equal train_uniadc.kn)")
    outside = _indices_outside(manifest, "support_index", rows, support, ignore=-1)
    if outside:
        raise ValueError(
            f"synthetic_images paste regions of support rows {outside[:5]}, which are not among this run's "
            f"{'first ka=' + str(ka) if setting == 'few_shot' else 'zero (zero_shot)'} support samples; re-run "
            f"synthesize with synthesize.setting={setting} and synthesize.ka={ka}")
    if "setting" in manifest.columns and len(rows):
        made = sorted(set(manifest["setting"].to_numpy()[rows].astype(str)))
        if made != [setting]:
            logger.warning("train_uniadc.setting=%s trains on synthetic images made with setting %s "
                           "(UniADC pairs each setting with its own synthesis)", setting, made)


def _indices_outside(manifest: pd.DataFrame, column: str, rows: np.ndarray, allowed: np.ndarray,
                     ignore: int | None = None) -> list[int]:
    """The values of ``column`` at ``rows`` that are not in ``allowed`` (none when the column is absent)."""
    if column not in manifest.columns or not len(rows):
        return []
    used = set(manifest[column].to_numpy()[rows].astype(int).tolist()) - {ignore}
    return sorted(used - set(np.asarray(allowed).astype(int).tolist()))


def _filter_rows(store: ImageStore, rows: np.ndarray, wanted: dict[str, Any]) -> np.ndarray:
    """Keeps rows whose manifest columns match ``wanted`` (e.g. ``{setting: few_shot}``)."""
    for column, values in wanted.items():
        if column not in store.manifest.columns:
            raise KeyError(f"synthetic_filter column {column!r} is not in the synthetic manifest")
        values = values if isinstance(values, list) else [values]
        rows = rows[np.isin(store.manifest[column].to_numpy()[rows].astype(str), [str(v) for v in values])]
    return rows


def _hold_out(store: ImageStore, rows: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A seeded ``fraction`` of the rows of every defect type (at least one when a type has two or more)."""
    if fraction <= 0 or len(rows) == 0:
        return np.zeros(0, dtype=int)
    defects = store.manifest["defect_type"].to_numpy()[rows]
    held = []
    for defect in sorted(set(defects)):
        group = rows[defects == defect]
        count = max(1, int(round(fraction * len(group)))) if len(group) >= 2 else 0
        held.append(rng.choice(group, size=count, replace=False))
    return np.sort(np.concatenate(held)).astype(int) if held else np.zeros(0, dtype=int)


def build_uniadc(store: ImageStore, params: dict[str, Any]) -> UniADC:
    """The discriminator for every configured category, with its class text embeddings computed once."""
    categories = params.get("categories") or store.categories
    names, owners, _ = global_classes(store, categories)
    model_params = params["model"]
    embeddings, text_tags = encode_class_texts(
        names, params["text_encoder"], tuple(params.get("templates") or ()) or _default_templates(),
        extra_prompts=params.get("extra_prompts") or {},
    )
    torch.manual_seed(int(params.get("seed", 0)))
    model = UniADC(
        class_names=names, class_categories=owners, encoder=dict(params["encoder"]),
        text_dim=int(embeddings.shape[1]), text_tags=text_tags, **model_params,
    )
    model.set_class_embeddings(embeddings)
    return model


def _default_templates() -> tuple[str, ...]:
    from unified_anomaly.models.uniadc import PROMPT_TEMPLATES

    return PROMPT_TEMPLATES


def train_uniadc(
    ingested_images: ImageStore, synthetic_images: ImageStore, params: dict[str, Any]
) -> tuple[ModelBundle, pd.DataFrame]:
    """Trains UniADC's discriminator (zero- or few-shot), selects it on validation and bundles it with tags."""
    started = time.perf_counter()
    train, val, summary = select_training_data(ingested_images, synthetic_images, params)
    validation = validation_used(summary)
    model = build_uniadc(ingested_images, params)
    logger.info("UniADC: %d classes %s, %d trainable parameters, weights %s", len(model.class_names),
                model.class_names, count_parameters(model, trainable_only=True), model.weight_tags())
    history = fit_uniadc(model, train, val, {**params["training"], "setting": params["setting"],
                                             "seed": params.get("seed", 0), "device": params.get("device", "auto")})
    model = model.cpu().eval()
    tags = {
        **{k: str(v) for k, v in model.weight_tags().items()},
        "model": "uniadc", "setting": params["setting"], "kn": str(params["kn"]),
        "ka": str(params.get("ka", 0) if params["setting"] == "few_shot" else 0),
        "synthesis_backend": _synthesis_backend(synthetic_images),
        "resolution": str(model.resolution), "selection": params["training"].get("selection", "best_val"),
        "validation": validation,
        "normal_memory": _memory_tag(history.get("normal_memory")),
        "defect_memory": _defect_tag(history.get("defect_memory")),
        "map_smoothing": f"sigma {model.smoothing_sigma:g}" if model.smoothing_sigma else "off",
    }
    info = {
        "tags": tags,
        "data": summary,
        "best_epoch": history["best_epoch"],
        "pixel_threshold": history["pixel_threshold"],
        "validation": history["val"][-1] if history["val"] else {},
        "normal_memory": history.get("normal_memory"),
        "defect_memory": history.get("defect_memory"),
        "class_names": model.class_names,
        "class_categories": model.class_categories,
        "train_seconds": round(time.perf_counter() - started, 1),
        "threshold_source": f"validation ({VALIDATION_DESCRIPTIONS[summary['validation']]}; used: {validation}), "
                            "F1-max on image scores",
    }
    bundle = ModelBundle("uniadc", model.bundle_config(), model, threshold=history["image_threshold"], info=info)
    frame = history_frame(history)
    _log_training(tags, frame)
    return bundle, frame


def _memory_tag(memory: dict[str, Any] | None) -> str:
    if not memory:
        return "off (discriminator map only, as the paper)"
    views = "" if memory.get("views", 1) == 1 else f" × {memory['views']} views ({memory['augment']})"
    return (f"weight {memory['weight']:g}: {memory['patches']} patches of {memory['images']} real normal images"
            f"{views}, standardised on {memory['val_normals']} validation normals")


def _defect_tag(memory: dict[str, Any] | None) -> str:
    if not memory:
        return "off (the discriminator's class logits, as the paper)"
    if not memory["classes_with_prototype"]:
        return f"weight {memory['weight']:g}, but no {memory['source']} training anomaly: the discriminator's classes"
    return (f"weight {memory['weight']:g}: prototypes of {memory['classes_with_prototype']}/{memory['classes']} "
            f"classes from {memory['images']} {memory.get('used', memory['source'])} training anomalies "
            f"(source {memory['source']})")


def _log_training(tags: dict[str, str], frame: pd.DataFrame) -> None:
    """The weights / synthesis tags and the loss and validation curves (step = epoch) on the active MLflow run."""
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.set_tags(tags)
    for row in frame.to_dict("records"):
        values = {f"train_{k}" if not k.startswith("val_") else k: float(v) for k, v in row.items()
                  if k not in {"epoch", "selected"} and pd.notna(v)}
        mlflow.log_metrics(values, step=int(row["epoch"]))


def _synthesis_backend(synthetic: ImageStore | None) -> str:
    if synthetic is None:
        return "none"
    for key in ("synthesis_backend", "backend"):
        if key in synthetic.extra:
            return str(synthetic.extra[key])
        if key in synthetic.manifest.columns and len(synthetic.manifest):
            return ",".join(sorted(set(synthetic.manifest[key].astype(str))))
    tags = synthetic.extra.get("tags", {})
    return str(tags.get("synthesis_backend", "unknown")) if isinstance(tags, dict) else "unknown"


def history_frame(history: dict[str, Any]) -> pd.DataFrame:
    """One row per epoch: losses, and validation metrics where they were computed."""
    frame = pd.DataFrame(history["loss"])
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
    if history["val"]:
        frame = frame.merge(pd.DataFrame(history["val"]).add_prefix("val_").rename(columns={"val_epoch": "epoch"}),
                            on="epoch", how="left")
    frame["selected"] = frame["epoch"] == history["best_epoch"]
    return frame
