"""The diffusion backend (Stable-Diffusion-family inpainting) and the CLIP category-consistency scorer.

UniADC inpaints with BrushNet on Realistic Vision (SD-1.5) and filters candidates with Alpha-CLIP. Neither is
in diffusers/open_clip's standard set, so this backend uses what a user with weights has: any diffusers
inpainting pipeline (``AutoPipelineForInpainting``: SD-1.5/2 inpainting, SDXL inpainting, ...) loaded by hub
id or local folder, and an open_clip model scoring a crop around the mask. What is kept from UniADC:

- partial noising (SDEdit-like): for a noise factor ``s`` the schedule has ``int(steps / s)`` steps and only
  its last ``steps`` run, from the source image's latent noised to that step (diffusers' ``strength``);
- prompt-guidance scale 12.5, DDIM-like 10 steps, several noise factors {0.4, 0.5, 0.6};
- types with negative prompts are generated from pure noise (strength 1.0) with 20 steps;
- selection by the softmax of CLIP similarities over [target prompt] + [prompts of the other types].

Differences: no BrushNet conditioning scale (plain inpainting UNets have none); plain CLIP sees a crop around
the region instead of Alpha-CLIP's alpha channel; the result is pasted back with a feathered mask so pixels
outside the mask keep the source's values (UniADC keeps the VAE-decoded image whole).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unified_anomaly.models.contract import pick_device
from unified_anomaly.synthesis.procedural import blend, crop_box

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def load_inpainting_pipeline(
    model: str,
    device: torch.device,
    dtype: torch.dtype,
    local_files_only: bool = False,
    scheduler: str = "ddim",
):
    """A diffusers inpainting pipeline from a hub id or a local folder (``save_pretrained`` layout)."""
    from diffusers import AutoPipelineForInpainting, DDIMScheduler

    if _looks_like_path(model) and not Path(model).expanduser().is_dir():
        raise FileNotFoundError(
            f"diffusion model folder {model!r} does not exist; set synthesize.diffusion.model to a folder "
            "written by diffusers' save_pretrained (with model_index.json) or to a hub id"
        )
    source = str(Path(model).expanduser()) if _looks_like_path(model) else model
    # diffusers renamed torch_dtype to dtype (0.36); pass the name this version knows
    dtype_key = (
        "dtype"
        if "_resolve_dtype" in vars(importlib.import_module("diffusers.pipelines.pipeline_utils"))
        else "torch_dtype"
    )
    try:
        pipeline = AutoPipelineForInpainting.from_pretrained(
            source,
            local_files_only=local_files_only,
            safety_checker=None,
            requires_safety_checker=False,
            **{dtype_key: dtype},
        )
    except (OSError, ValueError) as error:
        raise RuntimeError(
            f"could not load the diffusion inpainting model {model!r} ({type(error).__name__}: {error}). "
            "Hub downloads need internet; offline, download the model elsewhere, copy the folder here and "
            "set synthesize.diffusion.model to that local folder (or use synthesize.backend: procedural)."
        ) from error
    if scheduler == "ddim":
        pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


class DiffusionBackend:
    """Inpaints prior masks with a diffusers pipeline; batched per noise strength; CUDA when present."""

    kind = "diffusion"

    def __init__(
        self,
        model: str,
        num_inference_steps: int = 10,
        guidance_scale: float = 12.5,
        resolution: int = 512,
        batch_size: int = 8,
        blend_width: float = 3.0,
        device: str = "auto",
        dtype: str = "auto",
        local_files_only: bool = False,
        scheduler: str = "ddim",
        negative_prompt_steps: int = 20,
        pipeline=None,
    ) -> None:
        self.model = str(model)
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.resolution = int(resolution)
        self.batch_size = int(batch_size)
        self.blend_width = float(blend_width)
        self.negative_prompt_steps = int(negative_prompt_steps)
        self.device = pick_device(device)
        self.dtype = _dtype(dtype, self.device)
        self.pipeline = pipeline or load_inpainting_pipeline(
            self.model, self.device, self.dtype, local_files_only, scheduler
        )
        logger.info("diffusion backend: %s (%s) on %s", self.model, type(self.pipeline).__name__, self.device)

    @property
    def label(self) -> str:
        return f"diffusion:{self.model}"

    @property
    def tags(self) -> dict[str, str]:
        return {
            "synthesis_backend": self.label,
            "synthesis_weights": self.model,
            "synthesis_pipeline": type(self.pipeline).__name__,
        }

    def _schedule(self, strength: float, negative: bool) -> tuple[float, int]:
        """(strength, schedule length): the last ``steps`` steps of an ``int(steps / strength)`` schedule."""
        if negative:
            return 1.0, self.negative_prompt_steps
        strength = float(strength)
        if not 0 < strength <= 1:
            raise ValueError(f"noise strength must lie in (0, 1], got {strength}")
        return strength, max(1, int(self.num_inference_steps / strength))

    def _run(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        prompts: Sequence[str],
        seeds: Sequence[int],
        strengths: Sequence[float],
        negative_prompts: Sequence[str | None],
    ) -> np.ndarray:
        """Pipeline outputs at the images' size (uint8 N×S×S×3), grouped in batches of equal schedule."""
        size = images.shape[1]
        outputs = np.empty_like(images)
        groups: dict[tuple[float, int, bool], list[int]] = defaultdict(list)
        for index in range(len(images)):
            negative = bool(negative_prompts[index])
            groups[(*self._schedule(strengths[index], negative), negative)].append(index)
        for (strength, steps, negative), members in groups.items():
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                generators = [torch.Generator(device=self.device).manual_seed(int(seeds[i])) for i in batch]
                result = self.pipeline(
                    prompt=[prompts[i] for i in batch],
                    negative_prompt=[negative_prompts[i] or "" for i in batch] if negative else None,
                    image=[
                        Image.fromarray(images[i]).resize((self.resolution,) * 2, Image.BICUBIC)
                        for i in batch
                    ],
                    mask_image=[
                        Image.fromarray(masks[i].astype(np.uint8) * 255).resize(
                            (self.resolution,) * 2, Image.NEAREST
                        )
                        for i in batch
                    ],
                    height=self.resolution,
                    width=self.resolution,
                    strength=strength,
                    num_inference_steps=steps,
                    guidance_scale=self.guidance_scale,
                    generator=generators,
                    output_type="np",
                ).images
                for i, generated in zip(batch, result, strict=True):
                    picture = Image.fromarray(np.clip(np.rint(generated * 255), 0, 255).astype(np.uint8))
                    outputs[i] = np.asarray(picture.resize((size, size), Image.BICUBIC))
        return outputs

    def inpaint(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        prompts: Sequence[str],
        seeds: Sequence[int],
        strengths: Sequence[float] | None = None,
        negative_prompts: Sequence[str | None] | None = None,
        styles: Sequence[Sequence[str] | None] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Zero-shot: inpaints each mask of each source; pasted back through a feathered mask."""
        strengths = list(strengths) if strengths is not None else [0.5] * len(images)
        negative_prompts = list(negative_prompts) if negative_prompts is not None else [None] * len(images)
        generated = self._run(images, masks, prompts, seeds, strengths, negative_prompts)
        outputs = np.stack(
            [
                blend(src, gen, m.astype(bool), self.blend_width)
                for src, gen, m in zip(images, generated, masks, strict=True)
            ]
        )
        notes = [f"strength={1.0 if n else s}" for s, n in zip(strengths, negative_prompts, strict=True)]
        return outputs, notes

    def repaint(
        self,
        originals: np.ndarray,
        pasted: np.ndarray,
        masks: np.ndarray,
        prompts: Sequence[str],
        seeds: Sequence[int],
        strengths: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Few-shot: repaints pasted regions, starting from the pasted image noised to each strength."""
        strengths = list(strengths) if strengths is not None else [0.5] * len(originals)
        generated = self._run(pasted, masks, prompts, seeds, strengths, [None] * len(originals))
        outputs = np.stack(
            [
                blend(src, gen, m.astype(bool), self.blend_width)
                for src, gen, m in zip(originals, generated, masks, strict=True)
            ]
        )
        return outputs, [f"strength={s}" for s in strengths]


class ClipConsistencyScorer:
    """Category consistency of a synthetic region: softmax of CLIP similarities, target prompt vs the others.

    ``model``: an open_clip model name (``ViT-B-16``), ``hf-hub:org/repo`` or ``local-dir:/folder`` (a folder
    with ``open_clip_config.json`` and a weights file); ``pretrained``: a tag (``openai``) or a local
    checkpoint file, ignored for the schema forms. Random weights are never used: loading fails loudly.
    """

    def __init__(
        self,
        model: str = "ViT-B-16",
        pretrained: str | None = "openai",
        context: float = 0.25,
        batch_size: int = 32,
        device: str = "auto",
    ) -> None:
        import open_clip

        self.model_name, self.pretrained = str(model), pretrained
        self.context = float(context)
        self.batch_size = int(batch_size)
        self.device = pick_device(device)
        if self.model_name.startswith("local-dir:"):
            folder = Path(self.model_name.split(":", 1)[1]).expanduser()
            if not any(any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth", "*.pt")):
                raise FileNotFoundError(
                    f"CLIP folder {folder} holds no weights file; refusing random weights"
                )
            pretrained = None
        try:
            self.model = open_clip.create_model(
                self.model_name,
                pretrained=pretrained,
                device=self.device,
                require_pretrained=not self.model_name.startswith("local-dir:"),
            )
        except (OSError, RuntimeError, ValueError) as error:
            raise RuntimeError(
                f"could not load CLIP {self.model_name!r} with weights {pretrained!r} ({error}). Offline, "
                "set synthesize.clip.pretrained to a local checkpoint file, or synthesize.clip.model to "
                "'local-dir:<folder>' holding open_clip_config.json and the weights."
            ) from error
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(self.model_name)
        size = getattr(self.model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        preprocess = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        self.mean = torch.tensor(preprocess.get("mean", CLIP_MEAN), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess.get("std", CLIP_STD), device=self.device).view(1, 3, 1, 1)
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def tags(self) -> dict[str, str]:
        return {"synthesis_clip": self.model_name, "synthesis_clip_weights": str(self.pretrained)}

    @torch.no_grad()
    def _text(self, prompts: Sequence[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            features = self.model.encode_text(self.tokenizer(missing).to(self.device)).float()
            for prompt, feature in zip(missing, F.normalize(features, dim=-1), strict=True):
                self._text_cache[prompt] = feature
        return torch.stack([self._text_cache[p] for p in prompts])

    def crops(self, images: np.ndarray, masks: np.ndarray) -> torch.Tensor:
        """Square crops around each mask (grown by ``context`` of its size), resized and normalised."""
        batch = []
        for image, mask in zip(images, masks, strict=True):
            mask = mask.astype(bool)
            if mask.any():
                rows, cols = crop_box(mask, 0)
                side = max(rows.stop - rows.start, cols.stop - cols.start)
                margin = max(4, int(math.ceil(side * self.context)))
                rows, cols = crop_box(mask, margin)
            else:
                rows, cols = slice(None), slice(None)
            crop = (
                torch.from_numpy(np.ascontiguousarray(image[rows, cols])).permute(2, 0, 1)[None].float() / 255
            )
            batch.append(
                F.interpolate(crop, size=(self.image_size,) * 2, mode="bicubic", align_corners=False)
            )
        pixels = torch.cat(batch).clamp(0, 1).to(self.device)
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def score(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        target_prompts: Sequence[str],
        other_prompts: Sequence[str],
    ) -> np.ndarray:
        """Probability of each image's target prompt in a softmax over [target] + ``other_prompts``."""
        scores = []
        scale = float(self.model.logit_scale.exp()) if hasattr(self.model, "logit_scale") else 100.0
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            features = F.normalize(
                self.model.encode_image(self.crops(images[start:stop], masks[start:stop])).float(), dim=-1
            )
            for feature, target in zip(features, target_prompts[start:stop], strict=True):
                texts = self._text([target, *[p for p in other_prompts if p != target]])
                scores.append(torch.softmax(scale * texts @ feature, dim=0)[0].item())
        return np.asarray(scores, dtype=np.float64)
