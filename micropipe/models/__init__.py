"""Neural-network modules, each built from a frozen dataclass config; ``build(name, config)`` is the registry.

Only ``nn.Module``s and their configs live here; training loops are in :mod:`micropipe.train`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from micropipe.models import surrogate, vae3d, wgan3d

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "wgan3d.generator": (wgan3d.GeneratorConfig, wgan3d.Generator),
    "wgan3d.discriminator": (wgan3d.DiscriminatorConfig, wgan3d.Discriminator),
    "vae3d": (vae3d.VAEConfig, vae3d.VAE3D),
    "surrogate": (surrogate.SurrogateConfig, surrogate.Surrogate),
}
"""Registered name -> (config dataclass, module class)."""


def config_from_dict(name: str, d: dict[str, Any]):
    """Config dataclass of model ``name`` from a plain dict (as stored in a checkpoint)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name][0].from_dict(d)


def build(name: str, config: Any = None, **overrides: Any) -> nn.Module:
    """Module ``name`` from a config dataclass, a dict of its fields, or the defaults, with ``overrides``.

    >>> build('wgan3d.generator', filters=8, out_size=64)   # doctest: +SKIP
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    config_cls, module_cls = MODELS[name]
    if config is None:  # the defaults; configs with required fields (surrogate: in_dim) take them as overrides
        config, overrides = config_cls.from_dict(overrides), {}
    elif isinstance(config, dict):
        config = config_cls.from_dict(config)
    elif not isinstance(config, config_cls):
        raise ValueError(f"invalid config {type(config).__name__} for {name!r}; expected {config_cls.__name__}")
    if overrides:
        config = config_cls.from_dict({**config.to_dict(), **overrides})
    return module_cls(config)


__all__ = ["MODELS", "build", "config_from_dict"]
