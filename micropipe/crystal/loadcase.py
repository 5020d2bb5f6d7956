"""DAMASK_grid load cases (``load.yaml``, 3.x layout): validated reading, seed 003's uniaxial tension, writing.

A load step prescribes every component of the 3x3 macroscopic boundary condition either kinematically
(``dot_F``, ``F`` or ``L``) or as stress (``P`` or ``dot_P``), never both and never neither; free
components are written ``x``.  In memory a free component is NaN.  Units: 1/s for rates, Pa for ``P``,
Pa/s for ``dot_P``, s for ``t``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import damask
import numpy as np
import yaml

from micropipe.store import atomic_path

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

DEFORMATION_KEYS = ("dot_F", "F", "L")
STRESS_KEYS = ("P", "dot_P")
SOLVERS = ("spectral_basic", "spectral_polarization", "FEM")


@dataclasses.dataclass(frozen=True)
class LoadStep:
    """One load step.

    Attributes
    ----------
    deformation_key : {'dot_F', 'F', 'L'}
        Kind of the kinematic boundary condition.
    deformation : numpy.ndarray, shape (3, 3)
        Prescribed components, NaN where free.
    stress_key : {'P', 'dot_P'}
        Kind of the stress boundary condition.
    stress : numpy.ndarray, shape (3, 3)
        Prescribed components (Pa or Pa/s), NaN where free.
    t : float
        Duration in s, > 0.
    N : int
        Number of increments, >= 1.
    f_out : int
        Write results every ``f_out`` increments.
    r : float
        Ratio of geometric progression of increment lengths (DAMASK's ``r``, default 1).
    """

    deformation_key: str
    deformation: np.ndarray
    stress_key: str
    stress: np.ndarray
    t: float
    N: int
    f_out: int = 1
    r: float = 1.0

    @property
    def deformation_mask(self) -> np.ndarray:
        """True where the kinematic condition is prescribed, shape (3, 3)."""
        return ~np.isnan(self.deformation)

    def to_dict(self) -> dict[str, Any]:
        """The step as in load.yaml, free components as masked entries (``damask.LoadcaseGrid`` writes 'x')."""
        def masked(a: np.ndarray) -> np.ma.MaskedArray:
            return np.ma.masked_array(np.nan_to_num(a), mask=np.isnan(a))

        step: dict[str, Any] = {
            "boundary_conditions": {"mechanical": {self.deformation_key: masked(self.deformation),
                                                   self.stress_key: masked(self.stress)}},
            "discretization": {"t": self.t, "N": self.N},
            "f_out": self.f_out,
        }
        if self.r != 1.0:
            step["discretization"]["r"] = self.r
        return step


@dataclasses.dataclass(frozen=True)
class Loadcase:
    """A grid load case: mechanical solver name and load steps."""

    steps: tuple[LoadStep, ...]
    solver: str = "spectral_basic"

    def to_loadcase_grid(self) -> damask.LoadcaseGrid:
        """As :class:`damask.LoadcaseGrid`."""
        return damask.LoadcaseGrid(solver={"mechanical": self.solver}, loadstep=[s.to_dict() for s in self.steps])


def load_loadcase(path: PathLike) -> Loadcase:
    """Read and validate a DAMASK_grid load.yaml.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        On a malformed step; the message names the file, the load step (0-based) and the key or component.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: load case file not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not readable as YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: expected a DAMASK_grid load case, a mapping with 'solver' and 'loadstep', "
                         f"got {type(doc).__name__} {str(doc)[:40]!r}")
    try:
        config = damask.LoadcaseGrid.load(path)
    except Exception as e:
        raise ValueError(f"{path}: not readable as YAML: {e}") from e
    return loadcase_from_config(config, source=str(path))


def loadcase_from_config(config: Mapping[str, Any], source: str = "load.yaml") -> Loadcase:
    """Validate a load case mapping as in load.yaml; ``source`` prefixes error messages."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{source}: expected a mapping at the top level")
    solver = config.get("solver")
    if not isinstance(solver, Mapping) or "mechanical" not in solver:
        raise ValueError(f"{source}: missing key 'solver/mechanical'")
    if solver["mechanical"] not in SOLVERS:
        raise ValueError(f"{source}: solver/mechanical {solver['mechanical']!r} unknown, expected one of "
                         f"{', '.join(SOLVERS)}")
    steps = config.get("loadstep")
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{source}: 'loadstep' must be a non-empty list")
    return Loadcase(steps=tuple(_parse_step(s, f"{source}: loadstep {i}") for i, s in enumerate(steps)),
                    solver=solver["mechanical"])


def _parse_step(step: Any, where: str) -> LoadStep:
    if not isinstance(step, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    bc = step.get("boundary_conditions", {})
    mech = bc.get("mechanical") if isinstance(bc, Mapping) else None
    if not isinstance(mech, Mapping):
        raise ValueError(f"{where}: missing key 'boundary_conditions/mechanical'")
    unknown = set(mech) - set(DEFORMATION_KEYS) - set(STRESS_KEYS)
    if unknown:
        raise ValueError(f"{where}: unsupported boundary condition(s) {', '.join(sorted(unknown))}, expected one "
                         f"of {', '.join(DEFORMATION_KEYS)} and one of {', '.join(STRESS_KEYS)}")
    d_keys = [k for k in DEFORMATION_KEYS if k in mech]
    s_keys = [k for k in STRESS_KEYS if k in mech]
    if len(d_keys) != 1:
        raise ValueError(f"{where}: give exactly one of {', '.join(DEFORMATION_KEYS)}, got {d_keys or 'none'}")
    if len(s_keys) > 1:
        raise ValueError(f"{where}: give at most one of {', '.join(STRESS_KEYS)}, got {s_keys}")
    d_key, s_key = d_keys[0], (s_keys[0] if s_keys else "P")
    deformation = _matrix(mech[d_key], d_key, where)
    stress = _matrix(mech[s_key], s_key, where) if s_keys else np.full((3, 3), np.nan)
    both = ~np.isnan(deformation) & ~np.isnan(stress)
    neither = np.isnan(deformation) & np.isnan(stress)
    if both.any():
        ij = [tuple(int(a) + 1 for a in c) for c in np.argwhere(both)]
        raise ValueError(f"{where}: component(s) {ij} prescribed in both {d_key} and {s_key}; "
                         f"mark one of them 'x'")
    if neither.any():
        ij = [tuple(int(a) + 1 for a in c) for c in np.argwhere(neither)]
        raise ValueError(f"{where}: component(s) {ij} prescribed in neither {d_key} nor {s_key}")
    disc = step.get("discretization")
    if not isinstance(disc, Mapping):
        raise ValueError(f"{where}: missing key 'discretization'")
    t, N, r = disc.get("t"), disc.get("N"), disc.get("r", 1.0)
    if isinstance(t, bool) or not isinstance(t, int | float) or not t > 0:
        raise ValueError(f"{where}: discretization/t must be a positive time in s, got {t!r}")
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"{where}: discretization/N must be a positive integer, got {N!r}")
    if isinstance(r, bool) or not isinstance(r, int | float) or not r > 0:
        raise ValueError(f"{where}: discretization/r must be positive, got {r!r}")
    f_out = step.get("f_out", 1)
    if isinstance(f_out, bool) or not isinstance(f_out, int) or f_out < 1:
        raise ValueError(f"{where}: f_out must be a positive integer, got {f_out!r}")
    return LoadStep(deformation_key=d_key, deformation=deformation, stress_key=s_key, stress=stress,
                    t=float(t), N=N, f_out=f_out, r=float(r))


def _matrix(value: Any, key: str, where: str) -> np.ndarray:
    rows = value.tolist() if isinstance(value, np.ndarray) else value
    if not isinstance(rows, list) or len(rows) != 3 or any(not isinstance(r, list) or len(r) != 3 for r in rows):
        raise ValueError(f"{where}: {key} must be a 3x3 list of numbers and 'x', got {value!r}")
    out = np.empty((3, 3))
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if v == "x" or v is None:
                out[i, j] = np.nan
            elif isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v):
                out[i, j] = float(v)
            else:
                raise ValueError(f"{where}: {key}[{i + 1}][{j + 1}] = {v!r}, expected a number or 'x'")
    out.setflags(write=False)
    return out


def uniaxial_tension_z(strain: float = 0.01, rate: float = 1e-3, increments: int = 20, f_out: int = 1) -> Loadcase:
    """Uniaxial tension along z as in seed 003 §2.3 and the DAMASK reference cases.

    ``dot_F_zz = rate`` for ``t = strain / rate`` in ``increments`` steps; ``P_xx = P_yy = 0``; the
    off-diagonal ``dot_F`` components are 0 (no rigid rotation, no shear) and their ``P`` is free.

    Parameters
    ----------
    strain : float
        Final engineering strain along z, > 0.
    rate : float
        Strain rate in 1/s, > 0.
    increments : int
        Number of increments.
    f_out : int
        Output frequency in increments.
    """
    if not strain > 0 or not rate > 0:
        raise ValueError(f"uniaxial_tension_z: strain and rate must be positive, got {strain}, {rate}")
    x = np.nan
    dot_F = np.array([[x, 0.0, 0.0], [0.0, x, 0.0], [0.0, 0.0, rate]])
    P = np.array([[0.0, x, x], [x, 0.0, x], [x, x, x]])
    step = _parse_step({"boundary_conditions": {"mechanical": {"dot_F": _listed(dot_F), "P": _listed(P)}},
                        "discretization": {"t": strain / rate, "N": increments}, "f_out": f_out},
                       "uniaxial_tension_z")
    return Loadcase(steps=(step,))


def _listed(a: np.ndarray) -> list[list[Any]]:
    return [["x" if np.isnan(v) else float(v) for v in row] for row in a]


def save_loadcase(loadcase: Loadcase, path: PathLike) -> Path:
    """Write a load case as load.yaml (readable by ``damask.LoadcaseGrid.load`` and DAMASK_grid); return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        loadcase.to_loadcase_grid().save(tmp)
    log.info("wrote %s (%d load steps)", path, len(loadcase.steps))
    return path
