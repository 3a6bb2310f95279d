"""Per-defect-type synthesis priors (prompts, mask generators, placement) resolved from configuration.

The configuration (``synthesize.priors`` in the parameters) is keyed by dataset name, then category, then
defect type, with the fields of ``anomaly_categories.yaml`` (``prompts``, ``masks``, ``placement``,
``disable_foreground``, ``negative_prompts``) plus an optional ``styles`` list for the procedural backend.
Anything not listed falls back to ``priors.default``, whose prompts may use ``{defect_type}`` and
``{category}``, so any dataset works.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from unified_anomaly.synthesis.masks import MaskPrior, MaskSettings, select_generators

logger = logging.getLogger(__name__)

FALLBACK_PRIOR = {
    "prompts": ["a {defect_type} defect on {category}"],
    "masks": None,
    "placement": "anywhere",
    "disable_foreground": False,
}
PRIOR_FIELDS = {"prompts", "masks", "placement", "disable_foreground", "negative_prompts", "styles"}


@dataclass
class DefectTypePrior:
    """Everything synthesis needs about one defect type of one category."""

    category: str
    defect_type: str
    class_id: int
    prompts: list[str]
    mask: MaskPrior
    negative_prompts: list[str] = field(default_factory=list)
    styles: list[str] | None = None

    @property
    def readable_name(self) -> str:
        return self.defect_type.replace("_", " ")


def _fill(text: str, category: str, defect_type: str) -> str:
    return text.format(defect_type=defect_type.replace("_", " "), category=category.replace("_", " "))


def resolve_priors(
    priors: dict | None,
    dataset: str,
    category: str,
    class_names: list[str],
    mask_settings: MaskSettings | None = None,
) -> list[DefectTypePrior]:
    """Priors of every anomaly class of ``category`` in id order (``class_names[0]`` is the normal class)."""
    priors = priors or {}
    default = {**FALLBACK_PRIOR, **(priors.get("default") or {})}
    table = ((priors.get("datasets") or {}).get(dataset) or {}).get(category) or {}
    unknown_types = set(table) - set(class_names[1:])
    if unknown_types:  # the data is the truth; a prior for a type it lacks is simply unused
        logger.warning(
            "priors for %s/%s name defect types %s that the data does not have (its classes: %s)",
            dataset,
            category,
            sorted(unknown_types),
            class_names[1:],
        )
    resolved = []
    for class_id, defect_type in enumerate(class_names[1:], start=1):
        entry = table.get(defect_type)
        spec = {**default, **(entry or {})}
        unknown = set(spec) - PRIOR_FIELDS
        if unknown:
            raise ValueError(f"prior {dataset}/{category}/{defect_type} has unknown fields {sorted(unknown)}")
        prompts = [_fill(p, category, defect_type) for p in spec["prompts"]]
        if not prompts:
            raise ValueError(f"prior {dataset}/{category}/{defect_type} has no prompts")
        resolved.append(
            DefectTypePrior(
                category=category,
                defect_type=defect_type,
                class_id=class_id,
                prompts=prompts,
                mask=MaskPrior(
                    generators=select_generators(spec.get("masks")),
                    placement=spec.get("placement") or "anywhere",
                    use_foreground=not bool(spec.get("disable_foreground")),
                    settings=mask_settings or MaskSettings(),
                ),
                negative_prompts=[
                    _fill(p, category, defect_type) for p in spec.get("negative_prompts") or []
                ],
                styles=list(spec["styles"]) if spec.get("styles") else None,
            )
        )
    return resolved
