"""cp_dataset (seed 003 §2.3): crystal plasticity of every VE of a VE dataset, gathered into one Parquet file.

``inputs``: the material phase, load case, numerics and grid of a run, and the record that is fingerprinted.
``runs``: solving the VEs of one shard with the chosen backend and writing its results (the ``cp_runs`` step).
``report``: curves, convergence, iterations and wall time, with the pipeline's metrics. The results format
itself is :mod:`micropipe.datasets.cp_results`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """The pipeline's parameters, checked as its steps will read them (``ValueError`` naming the parameter)."""
    from micropipe.studies import arguments as check

    generator = check.ve_dataset(arguments, "ve_backend")
    check.cp_runs(arguments, generator.lattice)
