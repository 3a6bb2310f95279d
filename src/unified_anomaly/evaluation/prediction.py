"""Run any model of the project over rows of an ImageStore and collect its outputs as numpy arrays."""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from unified_anomaly.data.store import ImageStore
from unified_anomaly.models.cada import PER_IMAGE_EXTRAS
from unified_anomaly.models.contract import AnomalyModel, pick_device, to_model_input

logger = logging.getLogger(__name__)


def predict_store(
    model: AnomalyModel,
    store: ImageStore,
    indices: np.ndarray,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    progress: bool = True,
    keep_maps: bool = True,
) -> dict[str, np.ndarray]:
    """Predictions for ``store`` rows ``indices``, in that order.

    Returns ``indices`` (int64), ``image_scores`` (float64, raw), ``labels`` (uint8, 1 = anomalous) and, with
    ``keep_maps``, ``anomaly_maps`` (float32 N×S×S, raw). Classifying models also give ``class_argmax``
    (uint8 N×S×S: argmax over the anomaly classes of the class logits, 0-based, normal excluded) and, when
    the model returns it, ``image_classes`` (int64, 0 = normal) and ``class_source_maps`` (float32 N×S×S: the
    map its class map thresholds when that is not the anomaly map). A CADA-wrapped model also gives its per-image
    statistics ``cada_u`` and ``cada_gamma`` (float64), from which the base model's raw outputs are recovered
    (``evaluation.settings.base_model_view``).
    """
    indices = np.asarray(indices, dtype=np.int64)
    device = pick_device(device) if isinstance(device, str) else device
    if isinstance(model, torch.nn.Module):
        model.to(device).eval()
    n, size = indices.size, store.size
    scores = np.empty(n, dtype=np.float64)
    maps = np.empty((n, size, size), dtype=np.float32) if keep_maps else None
    class_argmax: np.ndarray | None = None
    class_source_maps: np.ndarray | None = None
    image_classes: np.ndarray | None = None
    per_image: dict[str, np.ndarray] = {}
    categories = store.manifest["category"].to_numpy()[indices]
    # A model holding several categories' classes (UniADC) is told which category an image is from, so
    # its class ids are that category's own, as in the store's masks.
    groups = [(c, np.flatnonzero(categories == c)) for c in dict.fromkeys(categories)] if _routes_by_category(model) \
        else [(None, np.arange(n))]
    bar = tqdm(total=n, desc="predict", unit="img", disable=not progress, leave=False)
    with torch.inference_mode():
        for category, positions in groups:
            kwargs = {} if category is None else {"category": str(category)}
            for start in range(0, positions.size, batch_size):
                where = positions[start : start + batch_size]
                images = np.ascontiguousarray(store.images[indices[where]])
                output = model.predict(to_model_input(images, device), **kwargs)
                k = len(images)
                anomaly_map = output.anomaly_map
                if anomaly_map.ndim == 4 and anomaly_map.shape[1] == 1:
                    anomaly_map = anomaly_map[:, 0]
                if tuple(anomaly_map.shape) != (k, size, size):
                    raise ValueError(
                        f"{type(model).__name__}.predict returned anomaly maps of shape {tuple(anomaly_map.shape)}; "
                        f"the contract asks for {(k, size, size)} (input resolution): upsample inside the model"
                    )
                scores[where] = output.image_score.detach().reshape(-1).double().cpu().numpy()
                if maps is not None:
                    maps[where] = anomaly_map.detach().float().cpu().numpy()
                if output.class_logits is not None and keep_maps:
                    if class_argmax is None:
                        class_argmax = np.zeros((n, size, size), dtype=np.uint8)
                    class_argmax[where] = output.class_logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
                if "class_source_map" in output.extras and keep_maps:  # the map the class map thresholds
                    if class_source_maps is None:
                        class_source_maps = np.zeros((n, size, size), dtype=np.float32)
                    class_source_maps[where] = output.extras["class_source_map"].detach().float().cpu().numpy()
                for name in PER_IMAGE_EXTRAS:
                    if name in output.extras:
                        values = output.extras[name].detach().reshape(-1).double().cpu().numpy()
                        per_image.setdefault(name, np.full(n, np.nan))[where] = values
                if output.image_class is not None:
                    if image_classes is None:
                        image_classes = np.zeros(n, dtype=np.int64)
                    image_classes[where] = output.image_class.reshape(-1).long().cpu().numpy()
                bar.update(k)
    bar.close()
    result = {"indices": indices, "image_scores": scores, "labels": store.labels(indices)}
    if maps is not None:
        result["anomaly_maps"] = maps
    if class_argmax is not None:
        result["class_argmax"] = class_argmax
    if class_source_maps is not None:
        result["class_source_maps"] = class_source_maps
    if image_classes is not None:
        result["image_classes"] = image_classes
    result.update(per_image)
    logger.info("predicted %d images (%s maps) on %s", n, "with" if keep_maps else "without", device)
    return result


def _routes_by_category(model: AnomalyModel) -> bool:
    import inspect

    categories = getattr(model, "categories", None)
    if not categories or len(categories) < 2:
        return False
    return "category" in inspect.signature(model.predict).parameters
