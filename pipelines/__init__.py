"""Pipelines: one module per DAG (wiring only), presets and cluster profiles as YAML.

Each pipeline module exposes ``NAME``, ``DESCRIPTION`` and ``build(profile) -> pipeline function``;
``build`` applies the profile's placement (resources, GPUs, node selectors, tolerations, secrets)
to the tasks while wiring them, so the same DAG compiles for any cluster and runs locally unchanged.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PIPELINES = ("ve_generation", "cp_dataset", "cp_surrogate", "gan_homogenization")
"""Names of the pipelines, as used by ``make run PIPELINE=<name>``."""


def load(name: str) -> ModuleType:
    """The pipeline module ``name``; a ``ValueError`` listing the valid names otherwise."""
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; valid pipelines: {', '.join(PIPELINES)}")
    return importlib.import_module(f"pipelines.{name}")
