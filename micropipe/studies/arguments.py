"""Checks of pipeline parameters before anything runs, with the same parsers the steps use.

Each study's ``check_arguments(arguments)`` (in its package) calls these, so ``micropipe run`` and ``micropipe
submit`` find a bad parameter in a second, with one line that names it, instead of inside a KFP task after the
VEs were generated. Every check raises ``ValueError``; ``arguments`` are the full pipeline arguments (defaults
included), numbers possibly as KFP's floats.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from micropipe.params import integral_floats_to_int, is_int, positive_int


def seed(value: Any, name: str = "seed") -> int:
    """A seed: an integer >= 0."""
    value = integral_floats_to_int(value)
    if not is_int(value, 0):
        raise ValueError(f"invalid {name} {value!r}; expected an integer >= 0")
    return int(value)


def fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """A number strictly between ``low`` and ``high``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < high:
        raise ValueError(f"invalid {name} {value!r}; expected a number between {low:g} and {high:g} (exclusive)")
    return float(value)


def positive(value: Any, name: str) -> float:
    """A finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ValueError(f"invalid {name} {value!r}; expected a finite number > 0")
    return float(value)


def device(value: Any) -> None:
    """'' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'. Whether a GPU is there is for the step to find: a
    pipeline submitted from a laptop runs on the cluster's nodes."""
    if value not in ("", None) and not (isinstance(value, str) and re.fullmatch(r"cpu|cuda(:\d+)?", value)):
        raise ValueError(f"invalid device {value!r}; expected '' (CUDA when available), cpu, cuda or cuda:N")


def ve_dataset(a: Mapping[str, Any], backend: str) -> Any:
    """``n_ve``, ``shard_size``, ``seed``, ``generator`` and the VE backend parameter ``backend``; returns the
    :class:`~micropipe.ve.generator.GeneratorConfig`."""
    from micropipe.datasets import ve
    from micropipe.ve.generator import GeneratorConfig

    a = integral_floats_to_int(dict(a))
    ve.shard_ranges(a["n_ve"], a["shard_size"])
    seed(a["seed"])
    ve.check_backend(a[backend])
    positive_int(a["report_max_ves"], "report_max_ves")
    return GeneratorConfig.from_dict(dict(a["generator"] or {}))


def cp_runs(a: Mapping[str, Any], lattice: str) -> None:
    """``material``, ``loadcase``, ``numerics``, ``cp_backend``, ``batch_size``, ``cp_cells`` and ``device`` of the
    CP fan-out, and that the material is of the VEs' ``lattice``."""
    from micropipe import backends
    from micropipe.studies.cp_dataset.inputs import check_cells, resolve_loadcase, resolve_numerics, resolve_phase

    phase = resolve_phase(a["material"])
    resolve_loadcase(a["loadcase"])
    resolve_numerics(a["numerics"])
    backends.get("cp", a["cp_backend"])
    positive_int(integral_floats_to_int(a["batch_size"]), "batch_size")
    check_cells(a["cp_cells"])
    device(a.get("device"))
    if phase.lattice != lattice:
        raise ValueError(f"material: phase {phase.name!r} has lattice {phase.lattice!r}, but generator.lattice is "
                         f"{lattice!r}; expected VEs generated for the material's lattice")
