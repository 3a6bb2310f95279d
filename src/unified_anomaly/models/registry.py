"""A small registry: nodes call ``build_model(name, **config)`` and never know a file, hub or path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"model {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return decorator


def build_model(name: str, **config: Any) -> nn.Module:
    _import_builtin_models()
    if name not in _FACTORIES:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(_FACTORIES)}")
    return _FACTORIES[name](**config)


def registered_models() -> list[str]:
    _import_builtin_models()
    return sorted(_FACTORIES)


def _import_builtin_models() -> None:
    """Importing a model module registers it; missing optional modules are skipped."""
    import importlib

    for module in ("uniad", "reverse_distillation", "cada", "uniadc", "patchcore"):
        try:
            importlib.import_module(f"unified_anomaly.models.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"unified_anomaly.models.{module}":
                raise
