"""The one model registry: ``register_model`` fills it, ``get_model`` and ``list_models`` read it.

A registry entry is a model class plus the objective settings the variant is defined by
(beta-VAE's beta, IWAE's bound and K); the model class itself holds no loss code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from vaezoo.core.configs import from_dict
from vaezoo.core.errors import VaezooError
from vaezoo.models.config import ModelConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str
    cls: type[nn.Module]
    description: str
    objective_defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str, **objective_defaults) -> Callable[[type], type]:
    """Class decorator; stack it to register one class under several variant names."""

    def deco(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' registered twice")
        _REGISTRY[name] = ModelSpec(name, cls, description, dict(objective_defaults))
        return cls

    return deco


def model_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise VaezooError(f"unknown model '{name}'; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_models() -> list[ModelSpec]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def build_model(cfg: ModelConfig) -> nn.Module:
    return model_spec(cfg.name).cls(cfg)


def get_model(name: str, **config) -> nn.Module:
    """``get_model("vae", latent_dim=16)``: build a registered variant from keyword config."""
    model_spec(name)
    return build_model(from_dict(ModelConfig, {**config, "name": name}))
