"""Numerical parameters of the grid solvers (DAMASK ``numerics.yaml``), validated, with DAMASK's defaults.

Built-in solver and DAMASK_grid backend read the same file: :func:`load_numerics` reads DAMASK's layouts,
:func:`save_numerics` writes the 3.x layout that DAMASK_grid reads from 3.0.0-alpha8 on (3.0.0-beta*, 3.0, 3.1).

Mapping of the :class:`Numerics` fields onto numerics.yaml keys (paths from the top level):

=====================  ================================================  ===================================
field                  DAMASK 3.x (written; 3.0.0-alpha8 ... 3.1)        earlier DAMASK 3.0.0 alphas (read)
=====================  ================================================  ===================================
eps_abs_div            solver/grid/mechanical/eps_abs_div(P)             grid/eps_div_atol
eps_rel_div            solver/grid/mechanical/eps_rel_div(P)             grid/eps_div_rtol
eps_abs_P              solver/grid/mechanical/eps_abs_P                  grid/eps_stress_atol
eps_rel_P              solver/grid/mechanical/eps_rel_P                  grid/eps_stress_rtol
N_iter_min             solver/grid/mechanical/N_iter_min                 grid/itmin
N_iter_max             solver/grid/mechanical/N_iter_max                 grid/itmax
N_cutback_max          solver/grid/N_cutback_max                         grid/maxCutBack
N_staggered_iter_max   phase/mechanical/N_iter_state_max                 crystallite/nState
N_iter_Lp_max          phase/mechanical/plastic/N_iter_Lp_max            crystallite/nStress
eps_rel_Lp             phase/mechanical/plastic/eps_rel_Lp               crystallite/rtol_Stress
eps_abs_Lp             phase/mechanical/plastic/eps_abs_Lp               crystallite/atol_Stress
eps_rel_state          phase/mechanical/eps_rel_state                    crystallite/rtol_State
N_ramp                 micropipe/N_ramp (built-in solver only)           --
=====================  ================================================  ===================================

Every field may also be given under a top-level ``micropipe:`` key by its field name (DAMASK ignores that key).
``N_staggered_iter_max`` is the per-material-point iteration between L_p and state (see :class:`Numerics`),
which DAMASK calls ``N_iter_state_max``; DAMASK's ``solver/grid/N_staggered_iter_max`` (``grid/maxStaggeredIter``)
staggers mechanical, thermal and damage fields, has no counterpart in the mechanics-only built-in solver and is
ignored with a warning, as is every other key not in the table.  A field given in two places must have the same
value in both.  Sources: DAMASK's ``examples/config/numerics.yaml`` (3.x) and ``examples/ConfigFiles/numerics.yaml``
(3.0.0-alpha), and the Fortran readers (``grid_mech_spectral_basic.f90``, ``phase_mechanical.f90``).

Not written by :func:`save_numerics` means DAMASK's default applies.  The equilibrium and stress-BC tolerances
have DAMASK's defaults and the built-in solver measures them as DAMASK_grid does (see :class:`Numerics`), so the
same numbers are the same tolerances in both solvers; the iteration limits differ (DAMASK: ``N_iter_max`` 100,
``N_cutback_max`` 3).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import damask
import yaml

from micropipe.store import atomic_path

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class Numerics:
    """Tolerances and iteration limits of the spectral solvers.

    Attributes
    ----------
    eps_abs_div, eps_rel_div : float
        Equilibrium tolerance, DAMASK_grid's: the RMS over voxels of div P, the derivative taken per voxel
        edge (DAMASK's default ``divergence_correction: 2``; Pa), must be below
        ``max(eps_rel_div * max|P_avg_ij|, eps_abs_div)``
        (:func:`micropipe.spectral.grid.divergence_rms`).  Defaults 1e-4 Pa and 5e-4, DAMASK's.  On Cu
        polycrystals σ_zz moves by < 1e-5 between these and 1000 times tighter tolerances.
    eps_abs_P, eps_rel_P : float
        Tolerance on the stress boundary condition, Pa and relative to ``max|P_avg_ij|``; DAMASK's defaults
        1e3 Pa and 1e-3.
    N_iter_min, N_iter_max : int
        Global (Newton) iterations per increment.
    N_cutback_max : int
        Times an increment is halved before a volume element is given up as not converged.
    N_staggered_iter_max : int
        DAMASK's iterations between plastic velocity gradient and state per material point.  Written for
        DAMASK_grid only: the built-in solver solves stress and state together (no staggering).
    N_iter_Lp_max : int
        Local iterations per step: DAMASK's Newton iterations on L_p; the built-in solver's Newton
        iterations on (S, xi) together.
    eps_rel_Lp, eps_abs_Lp : float
        DAMASK's tolerance on the L_p residual (1/s); written for DAMASK_grid only.
    eps_rel_state : float
        Relative tolerance on the state: DAMASK's on the slip resistances; the built-in solver's on the
        2-norm of its weighted local residual (stress relative to the trial stress, resistances relative
        to their old values).
    N_ramp : int
        Built-in solver only (``micropipe:`` key): where the first increment of a load step, taken
        elastically, would load some system beyond twice its resistance (``micropipe.spectral.cp.RAMP_OVERSTRESS``),
        that increment is integrated in this many sub-steps whose lengths double (1 : 2 : 4 : ...; a sub-step
        that took more than ``micropipe.spectral.cp.SUBSTEP_GROWTH_ITERATIONS`` global iterations is followed by
        one of the same length, so there may be more) and the next one in two (1 : 2), the output still at the
        increments' ends.  The first increment has no rate to
        extrapolate and then holds the elastic-plastic transition, where one backward-Euler step is slow to
        converge and least accurate (DAMASK's Cu yields within a tenth of seed 003's first increment).  1 takes
        DAMASK_grid's single steps (it cuts back only on failure).
    """

    eps_abs_div: float = 1.0e-4
    eps_rel_div: float = 5.0e-4
    eps_abs_P: float = 1.0e3
    eps_rel_P: float = 1.0e-3
    N_iter_min: int = 1
    N_iter_max: int = 60
    N_cutback_max: int = 4
    N_staggered_iter_max: int = 20
    N_iter_Lp_max: int = 100
    eps_rel_Lp: float = 1.0e-8
    eps_abs_Lp: float = 1.0e-12
    eps_rel_state: float = 1.0e-8
    N_ramp: int = 5


PATHS_3X: dict[str, tuple[str, ...]] = {
    "N_cutback_max": ("solver", "grid", "N_cutback_max"),
    "eps_abs_div": ("solver", "grid", "mechanical", "eps_abs_div(P)"),
    "eps_rel_div": ("solver", "grid", "mechanical", "eps_rel_div(P)"),
    "eps_abs_P": ("solver", "grid", "mechanical", "eps_abs_P"),
    "eps_rel_P": ("solver", "grid", "mechanical", "eps_rel_P"),
    "N_iter_min": ("solver", "grid", "mechanical", "N_iter_min"),
    "N_iter_max": ("solver", "grid", "mechanical", "N_iter_max"),
    "N_staggered_iter_max": ("phase", "mechanical", "N_iter_state_max"),
    "eps_rel_state": ("phase", "mechanical", "eps_rel_state"),
    "N_iter_Lp_max": ("phase", "mechanical", "plastic", "N_iter_Lp_max"),
    "eps_rel_Lp": ("phase", "mechanical", "plastic", "eps_rel_Lp"),
    "eps_abs_Lp": ("phase", "mechanical", "plastic", "eps_abs_Lp"),
}
"""Where DAMASK 3.x (3.0.0-alpha8 to 3.1) keeps each :class:`Numerics` field; :func:`save_numerics` writes these."""

PATHS_3_0_ALPHA: dict[str, tuple[str, ...]] = {
    "eps_abs_div": ("grid", "eps_div_atol"),
    "eps_rel_div": ("grid", "eps_div_rtol"),
    "eps_abs_P": ("grid", "eps_stress_atol"),
    "eps_rel_P": ("grid", "eps_stress_rtol"),
    "N_iter_min": ("grid", "itmin"),
    "N_iter_max": ("grid", "itmax"),
    "N_cutback_max": ("grid", "maxCutBack"),
    "N_staggered_iter_max": ("crystallite", "nState"),
    "N_iter_Lp_max": ("crystallite", "nStress"),
    "eps_rel_Lp": ("crystallite", "rtol_Stress"),
    "eps_abs_Lp": ("crystallite", "atol_Stress"),
    "eps_rel_state": ("crystallite", "rtol_State"),
}
"""The older names (``grid:`` and ``crystallite:`` sections of the earlier 3.0.0 alphas), read only."""

MICROPIPE_KEY = "micropipe"
BUILTIN_ONLY = ("N_ramp",)
"""Fields with no DAMASK key: read from and written under ``micropipe:`` only."""
_FIELDS = {f.name: f for f in dataclasses.fields(Numerics)}
_INT_FIELDS = frozenset(name for name, f in _FIELDS.items() if isinstance(f.default, int))
_MIN_INT = {"N_iter_min": 1, "N_iter_max": 2, "N_cutback_max": 0, "N_staggered_iter_max": 1, "N_iter_Lp_max": 1,
            "N_ramp": 1}


def load_numerics(path: PathLike) -> Numerics:
    """Read and validate a DAMASK numerics.yaml (3.x layout, the 3.0.0-alpha names, or ``micropipe:``).

    Parameters
    ----------
    path : str or os.PathLike
        The YAML file; an empty file gives the defaults.

    Returns
    -------
    numerics : Numerics
        Fields not given keep their defaults (see the module docstring for the key of each field).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Not YAML, not a mapping, a value of the wrong type or range, or one field given twice with different
        values; the message names the file, the key and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: numerics file not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:  # yaml errors carry their own position
        raise ValueError(f"{path}: not readable as YAML: {e}") from e
    return numerics_from_config(config, source=str(path))


def numerics_from_config(config: Mapping[str, Any] | None, source: str = "numerics.yaml") -> Numerics:
    """Validate a numerics mapping as in numerics.yaml (see :func:`load_numerics`); ``source`` prefixes messages.

    Keys that map onto no :class:`Numerics` field are logged as warnings, one per key, and ignored.
    """
    if config is None:
        return Numerics()
    if not isinstance(config, Mapping):
        raise ValueError(f"{source}: expected a mapping at the top level, got {type(config).__name__}")
    found: dict[str, tuple[str, Any]] = {}  # field -> (key path as written, raw value)
    used: set[tuple[str, ...]] = set()
    sources = [(PATHS_3X, ()), (PATHS_3_0_ALPHA, ()), ({f: (f,) for f in _FIELDS}, (MICROPIPE_KEY,))]
    for table, prefix in sources:
        for field, key_path in table.items():
            full = prefix + key_path
            present, value = _lookup(config, full, source)
            if not present:
                continue
            used.add(full)
            key = "/".join(full)
            if field in found and not _same(found[field][1], value):
                raise ValueError(f"{source}: {key} = {value!r} contradicts {found[field][0]} = "
                                 f"{found[field][1]!r}; both set {field}, give it once")
            found.setdefault(field, (key, value))
    for key in _leaves(config, ()):
        if key not in used:
            log.warning("%s: key %s is not a micropipe numerics setting; ignored", source, "/".join(key))
    values = {field: _checked(field, value, key, source) for field, (key, value) in found.items()}
    numerics = Numerics(**values)
    if numerics.N_iter_min > numerics.N_iter_max:
        raise ValueError(f"{source}: N_iter_min = {numerics.N_iter_min} exceeds N_iter_max = "
                         f"{numerics.N_iter_max}; expected N_iter_min <= N_iter_max")
    return numerics


def save_numerics(numerics: Numerics, path: PathLike) -> Path:
    """Write ``numerics`` as numerics.yaml in DAMASK 3.x layout (DAMASK_grid ``--numerics``); return the path.

    Every field goes to its key in :data:`PATHS_3X`, the built-in solver's own ones (``N_ramp``) under
    ``micropipe:``; :func:`load_numerics` reads the file back unchanged.  The file is written under a temporary
    name and renamed into place.
    """
    if not isinstance(numerics, Numerics):
        raise TypeError(f"save_numerics: expected a Numerics, got {type(numerics).__name__}")
    doc: dict[str, Any] = {}
    for field, key_path in PATHS_3X.items():
        node = doc
        for k in key_path[:-1]:
            node = node.setdefault(k, {})
        node[key_path[-1]] = getattr(numerics, field)
    doc[MICROPIPE_KEY] = {field: getattr(numerics, field) for field in BUILTIN_ONLY}
    path = Path(path)
    with atomic_path(path) as tmp:
        damask.YAML(doc).save(tmp, default_flow_style=False)
    log.info("wrote %s", path)
    return path


def _lookup(config: Mapping[str, Any], key_path: tuple[str, ...], source: str) -> tuple[bool, Any]:
    node: Any = config
    for depth, k in enumerate(key_path):
        if node is None:  # an empty section ("solver:" with nothing below) is allowed
            return False, None
        if not isinstance(node, Mapping):
            raise ValueError(f"{source}: {'/'.join(key_path[:depth])} must be a mapping, got {node!r}")
        if k not in node:
            return False, None
        node = node[k]
    return True, node


def _leaves(node: Mapping[str, Any], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for k, v in node.items():
        key = prefix + (str(k),)
        if isinstance(v, Mapping) and v:
            out.extend(_leaves(v, key))
        elif v is not None:
            out.append(key)
    return out


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def _checked(field: str, value: Any, key: str, source: str) -> int | float:
    if field in _INT_FIELDS:
        lo = _MIN_INT[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{source}: {key} (field {field}) must be an integer >= {lo}, got {value!r}")
        return value
    v = value
    if isinstance(v, str):  # PyYAML reads 1e-4 (no dot) as a string; DAMASK's parser reads it as a number
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not v > 0:
        raise ValueError(f"{source}: {key} (field {field}) must be a positive finite number, got {value!r}")
    return float(v)
