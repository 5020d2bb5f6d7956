"""What decides a CP run of the cp_dataset study: the material phase, the load case, the solver numerics and the
grid, each from the forms users give (shipped names, DAMASK files or their text, preset mappings), and the
record of them that is stored with every result and fingerprinted to decide whether a result may be reused."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import damask
import numpy as np

from micropipe import provenance as _provenance
from micropipe.crystal import MATERIALS, shipped_material
from micropipe.crystal.loadcase import Loadcase, loadcase_from_config, uniaxial_tension_z
from micropipe.crystal.material import Phase, load_phase, parse_phase
from micropipe.crystal.numerics import MICROPIPE_KEY, Numerics, numerics_from_config
from micropipe.params import integral_floats_to_int

LOADCASE_KEYS = ("strain", "rate", "increments", "f_out")
"""Keys of a load-case mapping that parametrises :func:`~micropipe.crystal.loadcase.uniaxial_tension_z`."""


def resolve_phase(material: str | os.PathLike) -> Phase:
    """The single phase a dataset is run with.

    Parameters
    ----------
    material : str or os.PathLike
        A shipped material name (``Cu``, ``Mg``, ``Fe``), the path of a material.yaml-style file with a
        ``phase:`` section holding exactly one phase, or such a file's YAML text.
    """
    text = str(material)
    if text in MATERIALS:
        return load_phase(shipped_material(text))
    if "\n" not in text and ":" not in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"material: {text!r} is neither a shipped material ({', '.join(MATERIALS)}) "
                                    f"nor an existing material.yaml")
        return load_phase(path)
    try:
        config = damask.YAML.load(StringIO(text))
    except Exception as e:  # yaml errors carry their position
        raise ValueError(f"material: not readable as YAML ({e})") from e
    phases = config.get("phase") if isinstance(config, Mapping) else None
    if not isinstance(phases, Mapping) or len(phases) != 1:
        found = ", ".join(phases) if isinstance(phases, Mapping) else "none"
        raise ValueError(f"material: expected YAML with a 'phase:' section holding exactly one phase, got {found}")
    name, definition = next(iter(phases.items()))
    return parse_phase(name, definition, "material")


def resolve_loadcase(spec: Mapping[str, Any] | Loadcase | None) -> Loadcase:
    """The load case of a run.

    Parameters
    ----------
    spec : mapping, Loadcase or None
        None or ``{}``: seed 003's uniaxial tension along z to 1 % at 1e-3/s in 20 increments. A mapping
        with ``loadstep``: a DAMASK_grid load.yaml as a mapping. Otherwise keyword arguments of
        :func:`~micropipe.crystal.loadcase.uniaxial_tension_z` (``strain``, ``rate``, ``increments``, ``f_out``).
    """
    if isinstance(spec, Loadcase):
        return spec
    if not spec:
        return uniaxial_tension_z()
    if not isinstance(spec, Mapping):
        raise ValueError(f"loadcase: expected a mapping, got {spec!r}")
    spec = integral_floats_to_int(dict(spec))  # KFP sends every number as a float
    if "loadstep" in spec:
        return loadcase_from_config(spec, source="loadcase")
    unknown = sorted(set(spec) - set(LOADCASE_KEYS))
    if unknown:
        raise ValueError(f"loadcase: unknown key(s) {', '.join(unknown)}; expected a load.yaml mapping "
                         f"(with 'loadstep') or uniaxial tension keys {', '.join(LOADCASE_KEYS)}")
    return uniaxial_tension_z(**spec)


def resolve_numerics(spec: Mapping[str, Any] | Numerics | None) -> Numerics | None:
    """Solver numerics from a flat mapping of :class:`~micropipe.crystal.numerics.Numerics` fields or a numerics.yaml
    mapping (see :func:`~micropipe.crystal.numerics.numerics_from_config`); None or ``{}``: defaults."""
    if spec is None or isinstance(spec, Numerics):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"numerics: expected a mapping of Numerics fields, got {spec!r}")
    if not spec:
        return None
    spec = integral_floats_to_int(dict(spec))
    fields = {f.name for f in dataclasses.fields(Numerics)}
    if set(spec) & fields:  # flat Numerics fields, as in presets
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise ValueError(f"numerics: unknown key(s) {', '.join(unknown)}; expected Numerics fields "
                             f"{', '.join(sorted(fields))} or a numerics.yaml mapping")
        return numerics_from_config({MICROPIPE_KEY: spec}, source="numerics")
    return numerics_from_config(spec, source="numerics")


def parameters(phase: Phase, loadcase: Loadcase, numerics: Numerics | None, backend: str,
               cells: Sequence[int] | None = None) -> dict[str, Any]:
    """JSON-ready record of what decides a CP result (recorded in provenance and fingerprinted).

    ``cells``: the grid CP is solved on when it is not the VE's own (see :func:`check_cells`)."""
    out = {"phase": {phase.name: json.loads(_provenance.dumps(dict(phase.config)))},
           "loadcase": json.loads(_provenance.dumps(_loadcase_record(loadcase))),
           "numerics": dataclasses.asdict(numerics or Numerics()), "backend": backend}
    if cells:
        out["cells"] = list(cells)
    return out


def check_cells(cells: Sequence[int] | None) -> tuple[int, int, int] | None:
    """The CP grid: None or empty for each VE's own cells, else 3 positive ints (an int gives a cube)."""
    if cells is None or (not isinstance(cells, int | np.integer) and len(cells) == 0):
        return None
    c = [cells] * 3 if isinstance(cells, int | np.integer) else integral_floats_to_int(list(cells))
    if (len(c) != 3 or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in c)):
        raise ValueError(f"cells: expected 3 positive integers (the CP grid, voxels along x, y, z) or [] for "
                         f"each VE's own grid, got {cells!r}")
    return tuple(int(v) for v in c)


def _loadcase_record(loadcase: Loadcase) -> dict[str, Any]:
    steps = []
    for s in loadcase.steps:
        steps.append({"deformation_key": s.deformation_key, "stress_key": s.stress_key,
                      "deformation": _nan_to_x(s.deformation), "stress": _nan_to_x(s.stress),
                      "t": s.t, "N": s.N, "f_out": s.f_out, "r": s.r})
    return {"solver": loadcase.solver, "steps": steps}


def _nan_to_x(a: np.ndarray) -> list[list[Any]]:
    return [["x" if np.isnan(v) else float(v) for v in row] for row in a]
