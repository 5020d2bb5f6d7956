"""ve_generation (seed 003 §2.1, the DREAM.3D step): VE datasets in HDF5 shards and their statistics report.

The shards and the manifest are :mod:`micropipe.datasets.ve`'s; ``report`` measures a gathered dataset against
the generator's targets (grain sizes, shapes, texture, misorientation, slices).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """The pipeline's parameters, checked as its steps will read them (``ValueError`` naming the parameter)."""
    from micropipe.studies import arguments as check

    check.ve_dataset(arguments, "backend")
