"""DAMASK ``material.yaml`` (3.x layout) read into validated phase dataclasses, and written for volume elements.

Reading goes through :class:`damask.ConfigMaterial`; phases must use ``elastic: {type: Hooke}`` and
``plastic: {type: phenopowerlaw}``.  Names and units are DAMASK's (Pa, 1/s); keys with '-' become '_' in
Python (``h_0_sl-sl`` -> ``h_0_sl_sl``).  Parameters DAMASK defines per family (``xi_0_sl``, ``xi_inf_sl``,
``xi_0_tw``) must have one entry per ``N_sl``/``N_tw`` family.  Parameters that DAMASK versions read either as
one value or as one value per family (``n_sl``, ``a_sl``, ``dot_gamma_0_sl``, ``h_0_sl-sl``, ``f_sat_sl-tw``;
``n_tw``, ``dot_gamma_0_tw``, ``h_0_tw-tw``, ``h_0_tw-sl`` per twin family) are accepted in both forms and
kept per family.  Every error names the file, the phase (or material entry) and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import damask
import numpy as np

from micropipe.crystal import check_lattice, elastic, lattice
from micropipe.store import atomic_path

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

_SLIP_PER_FAMILY = ("xi_0_sl", "xi_inf_sl")
_SLIP_SCALAR_OR_FAMILY = ("dot_gamma_0_sl", "n_sl", "a_sl", "h_0_sl-sl")
_TWIN_PER_FAMILY = ("xi_0_tw",)
_TWIN_SCALAR_OR_FAMILY = ("dot_gamma_0_tw", "n_tw", "h_0_tw-tw")
_TWIN_FAMILY_FIELDS = ("xi_0_tw", "dot_gamma_0_tw", "n_tw", "h_0_tw_tw", "h_0_tw_sl")
_POSITIVE = ("xi_0_sl", "xi_inf_sl", "dot_gamma_0_sl", "n_sl", "a_sl", "xi_0_tw", "dot_gamma_0_tw", "n_tw")


@dataclasses.dataclass(frozen=True)
class Hooke:
    """Linear elasticity (DAMASK ``elastic: {type: Hooke}``) at the reference temperature, constants in Pa.

    ``C_13`` and ``C_33`` are set for hexagonal phases only.  ``temperature`` keeps DAMASK's optional
    ``C_ij,T``, ``C_ij,T^2`` (Pa/K, Pa/K^2) and ``T_ref`` (K) unchanged; they vanish at ``T = T_ref``.
    """

    C_11: float
    C_12: float
    C_44: float
    C_13: float | None = None
    C_33: float | None = None
    temperature: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def stiffness(self, lattice_: str, *, notation: elastic.Notation = "voigt") -> np.ndarray:
        """Lattice-frame stiffness, shape (6, 6), Pa (see :func:`micropipe.crystal.elastic.stiffness`)."""
        return elastic.stiffness(lattice_, self.C_11, self.C_12, self.C_44, self.C_13, self.C_33, notation=notation)


@dataclasses.dataclass(frozen=True)
class Phenopowerlaw:
    """DAMASK's phenomenological power-law slip and twinning (``plastic: {type: phenopowerlaw}``).

    Per-family tuples have one entry per ``N_sl`` (slip) or ``N_tw`` (twin) family; :meth:`per_system`
    expands them to the systems.  Stresses in Pa, rates in 1/s, the rest dimensionless.  Twin fields are
    empty tuples and None when the phase has no twin systems; ``c_1``..``c_4`` default as in
    ``refs/damask/phenopowerlaw.md`` (0, 1, 1, 0).
    """

    N_sl: tuple[int, ...]
    xi_0_sl: tuple[float, ...]
    xi_inf_sl: tuple[float, ...]
    dot_gamma_0_sl: tuple[float, ...]
    n_sl: tuple[float, ...]
    a_sl: tuple[float, ...]
    h_0_sl_sl: tuple[float, ...]
    h_sl_sl: tuple[float, ...]
    N_tw: tuple[int, ...] = ()
    xi_0_tw: tuple[float, ...] = ()
    dot_gamma_0_tw: tuple[float, ...] = ()
    n_tw: tuple[float, ...] = ()
    h_0_tw_tw: tuple[float, ...] = ()
    h_tw_tw: tuple[float, ...] = ()
    h_0_tw_sl: tuple[float, ...] = ()
    h_tw_sl: tuple[float, ...] = ()
    h_sl_tw: tuple[float, ...] = ()
    f_sat_sl_tw: tuple[float, ...] = ()
    c_1: float = 0.0
    c_2: float = 1.0
    c_3: float = 1.0
    c_4: float = 0.0

    @property
    def sum_N_sl(self) -> int:
        """Number of slip systems used."""
        return sum(self.N_sl)

    @property
    def sum_N_tw(self) -> int:
        """Number of twin systems used."""
        return sum(self.N_tw)

    def per_system(self, name: str) -> np.ndarray:
        """A per-family parameter (DAMASK or Python name) repeated over its systems, shape (sum(N),)."""
        attr = name.replace("-", "_")
        values = getattr(self, attr)
        N = self.N_tw if attr in _TWIN_FAMILY_FIELDS else self.N_sl
        if len(values) != len(N):
            raise ValueError(f"per_system: {name} is not a per-family parameter")
        return np.repeat(np.asarray(values, float), N)

    def interaction(self, lattice_: str, kind: lattice.InteractionKind = "sl-sl") -> np.ndarray:
        """Interaction matrix ``h_<kind>`` of the used systems, shape (N_reacting, N_acting)."""
        values = getattr(self, f"h_{kind.replace('-', '_')}")
        return lattice.interaction_matrix(lattice_, values, kind=kind, N_sl=self.N_sl, N_tw=self.N_tw)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of material.yaml: lattice, c/a (hP only), elasticity, plasticity, and its config as read."""

    name: str
    lattice: str
    c_a: float | None
    elastic: Hooke
    plastic: Phenopowerlaw
    config: Mapping[str, Any]

    def schmid_slip(self) -> np.ndarray:
        """Lattice-frame Schmid tensors of the used slip systems, shape (sum(N_sl), 3, 3)."""
        return lattice.schmid_tensors(self.lattice, N_sl=self.plastic.N_sl, c_a=self.c_a)

    def schmid_twin(self) -> np.ndarray:
        """Lattice-frame Schmid tensors of the used twin systems, shape (sum(N_tw), 3, 3)."""
        return lattice.schmid_tensors(self.lattice, N_tw=self.plastic.N_tw, c_a=self.c_a)

    def stiffness(self, *, notation: elastic.Notation = "voigt") -> np.ndarray:
        """Lattice-frame stiffness, shape (6, 6), Pa."""
        return self.elastic.stiffness(self.lattice, notation=notation)


@dataclasses.dataclass(frozen=True)
class Constituent:
    """A constituent of a material entry: phase name, orientation (unit quaternion, shape (4,)), volume fraction."""

    phase: str
    O: np.ndarray
    v: float


@dataclasses.dataclass(frozen=True)
class MaterialEntry:
    """One entry of ``material:``: its constituents and homogenization name."""

    constituents: tuple[Constituent, ...]
    homogenization: str


@dataclasses.dataclass(frozen=True)
class Material:
    """A validated material.yaml: phases, homogenizations (as read) and material entries (0-based ids)."""

    phases: Mapping[str, Phase]
    homogenizations: Mapping[str, Any]
    materials: tuple[MaterialEntry, ...]

    def orientations(self) -> np.ndarray:
        """Quaternions of the first constituent of every material entry, shape (N_materials, 4)."""
        return np.stack([m.constituents[0].O for m in self.materials])

    def phase_names(self) -> list[str]:
        """Phase of the first constituent of every material entry."""
        return [m.constituents[0].phase for m in self.materials]


def load_material(path: PathLike) -> Material:
    """Read and validate a DAMASK material.yaml.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        On a missing or inconsistent key; the message names the file, the phase or material entry and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: material file not found")
    try:
        config = damask.ConfigMaterial.load(path)
    except Exception as e:  # yaml errors carry their own position
        raise ValueError(f"{path}: not readable as YAML: {e}") from e
    return material_from_config(config, source=str(path))


def material_from_config(config: Mapping[str, Any], source: str = "material.yaml") -> Material:
    """Validate a material configuration (a mapping as in material.yaml); ``source`` prefixes error messages."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{source}: expected a mapping at the top level, got {type(config).__name__}")
    for key in ("homogenization", "phase", "material"):
        if key not in config or config[key] is None:
            raise ValueError(f"{source}: missing top-level key {key!r}")
    if not isinstance(config["phase"], Mapping) or not config["phase"]:
        raise ValueError(f"{source}: 'phase' must map phase names to their definitions")
    phases = {name: parse_phase(name, ph, source) for name, ph in config["phase"].items()}
    homogenizations = copy.deepcopy(dict(config["homogenization"]))
    entries = config["material"]
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise ValueError(f"{source}: 'material' must be a non-empty list of entries")
    materials = tuple(_parse_entry(i, m, phases, homogenizations, source) for i, m in enumerate(entries))
    log.debug("%s: %d phases, %d materials", source, len(phases), len(materials))
    return Material(phases=phases, homogenizations=homogenizations, materials=materials)


def parse_phase(name: str, config: Mapping[str, Any], source: str = "material.yaml") -> Phase:
    """Validate one phase definition (the value under ``phase: {name: ...}``)."""
    where = f"{source}: phase {name!r}"
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {config!r}")
    lat = _require(config, "lattice", where)
    check_lattice(lat, where)
    c_a = config.get("c/a")
    if lat == "hP":
        c_a = _number(_require(config, "c/a", where), "c/a", where)
    elif c_a is not None:
        raise ValueError(f"{where}: key 'c/a' given for cubic lattice {lat!r}")
    try:
        lattice.crystal(lat, c_a)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    mech = _require(config, "mechanical", where)
    el = _parse_hooke(_require(mech, "elastic", where + ": mechanical"), lat, where + ": mechanical/elastic")
    pl = _parse_phenopowerlaw(_require(mech, "plastic", where + ": mechanical"), lat,
                              where + ": mechanical/plastic")
    return Phase(name=name, lattice=lat, c_a=c_a, elastic=el, plastic=pl, config=copy.deepcopy(dict(config)))


def _parse_hooke(cfg: Mapping[str, Any], lat: str, where: str) -> Hooke:
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    if cfg.get("type") != "Hooke":
        raise ValueError(f"{where}: type {cfg.get('type')!r} not supported, expected 'Hooke'")
    keys = ("C_11", "C_12", "C_13", "C_33", "C_44") if lat == "hP" else ("C_11", "C_12", "C_44")
    C = {k: _number(_require(cfg, k, where), k, where) for k in keys}
    temperature = {k: _number(v, k, where) for k, v in cfg.items() if k.startswith("C_") and "," in k or k == "T_ref"}
    el = Hooke(**C, temperature=temperature)
    if np.linalg.eigvalsh(el.stiffness(lat, notation="mandel")).min() <= 0.0:
        raise ValueError(f"{where}: stiffness {C} is not positive definite")
    return el


def _parse_phenopowerlaw(cfg: Mapping[str, Any], lat: str, where: str) -> Phenopowerlaw:
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    if cfg.get("type") != "phenopowerlaw":
        raise ValueError(f"{where}: type {cfg.get('type')!r} not supported, expected 'phenopowerlaw'")
    N_sl = _counts(cfg.get("N_sl", []), lat, "slip", "N_sl", where)
    N_tw = _counts(cfg.get("N_tw", []), lat, "twin", "N_tw", where)
    if sum(N_sl) + sum(N_tw) == 0:
        raise ValueError(f"{where}: missing key 'N_sl' (no slip or twin systems)")
    p: dict[str, Any] = {"N_sl": N_sl, "N_tw": N_tw}
    for N, per_family, scalar_or_family, matrix in ((N_sl, _SLIP_PER_FAMILY, _SLIP_SCALAR_OR_FAMILY, "sl-sl"),
                                                    (N_tw, _TWIN_PER_FAMILY, _TWIN_SCALAR_OR_FAMILY, "tw-tw")):
        for k in per_family + scalar_or_family:
            p[k] = _per_family(cfg, k, N, where, scalar_ok=k in scalar_or_family) if sum(N) else ()
        p[f"h_{matrix.replace('-', '_')}"] = _list(cfg, f"h_{matrix}", where) if sum(N) else ()
    if sum(N_tw) and sum(N_sl):
        p["h_0_tw-sl"] = _per_family(cfg, "h_0_tw-sl", N_tw, where, scalar_ok=True)
        p["h_tw_sl"] = _list(cfg, "h_tw-sl", where)
        p["h_sl_tw"] = _list(cfg, "h_sl-tw", where)
        p["f_sat_sl-tw"] = _per_family(cfg, "f_sat_sl-tw", N_sl, where, scalar_ok=True)
    for k in ("c_1", "c_2", "c_3", "c_4"):
        if k in cfg:
            p[k] = _number(cfg[k], k, where)
    pl = Phenopowerlaw(**{k.replace("-", "_"): v for k, v in p.items()})
    for k in _POSITIVE:
        values = getattr(pl, k)
        N = N_tw if k.endswith("_tw") else N_sl
        bad = [v for v, n in zip(values, N, strict=False) if n > 0 and not v > 0.0]
        if bad:
            raise ValueError(f"{where}: {k} must be > 0 for every used family, got {list(values)}")
    for kind in ("sl-sl", "tw-tw", "tw-sl", "sl-tw"):
        reacting, acting = kind.split("-")
        if not all(sum(N_sl if m == "sl" else N_tw) for m in (reacting, acting)):
            continue
        try:
            pl.interaction(lat, kind)  # type: ignore[arg-type]
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return pl


def _parse_entry(i: int, m: Any, phases: Mapping[str, Phase], homogenizations: Mapping[str, Any],
                 source: str) -> MaterialEntry:
    where = f"{source}: material entry {i}"
    if not isinstance(m, Mapping):
        raise ValueError(f"{where}: expected a mapping with 'constituents' and 'homogenization'")
    h = _require(m, "homogenization", where)
    if h not in homogenizations:
        raise ValueError(f"{where}: unknown homogenization {h!r}, defined are {', '.join(map(str, homogenizations))}")
    cs = _require(m, "constituents", where)
    if not isinstance(cs, Sequence) or isinstance(cs, str) or not cs:
        raise ValueError(f"{where}: 'constituents' must be a non-empty list")
    constituents = []
    for j, c in enumerate(cs):
        w = f"{where}, constituent {j}"
        ph = _require(c, "phase", w)
        if ph not in phases:
            raise ValueError(f"{w}: unknown phase {ph!r}, defined are {', '.join(phases)}")
        O = np.asarray(_require(c, "O", w), dtype=float)
        if O.shape != (4,) or not np.isclose(np.linalg.norm(O), 1.0, atol=1e-6):
            raise ValueError(f"{w}: O must be a unit quaternion [w, x, y, z], got {c['O']!r}")
        constituents.append(Constituent(phase=ph, O=O / np.linalg.norm(O), v=_number(c.get("v", 1.0), "v", w)))
    if not np.isclose(sum(c.v for c in constituents), 1.0):
        raise ValueError(f"{where}: volume fractions v sum to {sum(c.v for c in constituents)}, expected 1")
    return MaterialEntry(constituents=tuple(constituents), homogenization=h)


def _require(cfg: Any, key: str, where: str) -> Any:
    if not isinstance(cfg, Mapping) or key not in cfg or cfg[key] is None:
        raise ValueError(f"{where}: missing key {key!r}")
    return cfg[key]


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not np.isfinite(value):
        raise ValueError(f"{where}: {key} must be a finite number, got {value!r}")
    return float(value)


def _list(cfg: Mapping[str, Any], key: str, where: str) -> tuple[float, ...]:
    value = _require(cfg, key, where)
    values = value if isinstance(value, list | tuple) else [value]
    return tuple(_number(v, key, where) for v in values)


def _counts(value: Any, lat: str, mode: lattice.Mode, key: str, where: str) -> tuple[int, ...]:
    try:
        return lattice.check_N(lat, value if isinstance(value, list | tuple) else [value], mode, key)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None


def _per_family(cfg: Mapping[str, Any], key: str, N: tuple[int, ...], where: str, *,
                scalar_ok: bool) -> tuple[float, ...]:
    value = _require(cfg, key, where)
    if scalar_ok and not isinstance(value, list | tuple):
        return (_number(value, key, where),) * len(N)
    values = _list(cfg, key, where)
    if len(values) != len(N):
        raise ValueError(f"{where}: {key} has {len(values)} entries, expected {len(N)} "
                         f"(one per family of {list(N)})")
    return values


def material_config(phases: Mapping[str, Phase | Mapping[str, Any]], O: Any, phase: str | Sequence[str], *,
                    homogenization: str = "SX", homogenizations: Mapping[str, Any] | None = None
                    ) -> damask.ConfigMaterial:
    """DAMASK material configuration of a volume element: one material entry per grain.

    Parameters
    ----------
    phases : mapping of str to Phase or dict
        Phase definitions by name (a :class:`Phase` contributes its config as read).
    O : damask.Rotation or numpy.ndarray, shape (N_grains, 4)
        Grain orientations as DAMASK unit quaternions; grain g becomes material entry g.
    phase : str or sequence of str, length N_grains
        Phase of every grain.
    homogenization : str
        Homogenization of every entry.
    homogenizations : mapping, optional
        Homogenization definitions; default ``{homogenization: {N_constituents: 1, mechanical: {type: pass}}}``.

    Returns
    -------
    config : damask.ConfigMaterial
        Validated by :func:`material_from_config` before it is returned.
    """
    quats = O.quaternion if isinstance(O, damask.Rotation) else np.asarray(O, float)
    quats = np.atleast_2d(quats)
    if quats.ndim != 2 or quats.shape[1] != 4:
        raise ValueError(f"O: expected quaternions of shape (N_grains, 4), got {quats.shape}")
    names = [phase] * len(quats) if isinstance(phase, str) else list(phase)
    if len(names) != len(quats):
        raise ValueError(f"phase: {len(names)} names for {len(quats)} orientations")
    phase_cfg = {k: copy.deepcopy(dict(v.config if isinstance(v, Phase) else v)) for k, v in phases.items()}
    homog = dict(homogenizations) if homogenizations is not None else \
        {homogenization: {"N_constituents": 1, "mechanical": {"type": "pass"}}}
    config = damask.ConfigMaterial(homogenization=homog, phase=phase_cfg).material_add(
        O=damask.Rotation.from_quaternion(quats), phase=np.array(names), homogenization=homogenization)
    material_from_config(config, source="material_config")
    return config


def save_material(path: PathLike, phases: Mapping[str, Phase | Mapping[str, Any]], O: Any,
                  phase: str | Sequence[str], **kwargs: Any) -> Path:
    """Write the material.yaml of a volume element (see :func:`material_config`); return the path.

    The file is written under a temporary name and renamed into place.
    """
    config = material_config(phases, O, phase, **kwargs)
    path = Path(path)
    with atomic_path(path) as tmp:
        config.save(tmp)
    log.info("wrote %s (%d materials)", path, len(config["material"]))
    return path


def load_phase(path: PathLike, name: str | None = None) -> Phase:
    """Read one phase from a material.yaml-style file with a ``phase:`` section (e.g. the shipped materials).

    ``name`` may be omitted when the file defines exactly one phase.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: material file not found")
    cfg = damask.YAML.load(path)
    phases = cfg.get("phase") if isinstance(cfg, Mapping) else None
    if not isinstance(phases, Mapping) or not phases:
        raise ValueError(f"{path}: missing top-level key 'phase'")
    if name is None:
        if len(phases) != 1:
            raise ValueError(f"{path}: defines phases {', '.join(phases)}; name one")
        name = next(iter(phases))
    if name not in phases:
        raise ValueError(f"{path}: unknown phase {name!r}, defined are {', '.join(phases)}")
    return parse_phase(name, phases[name], str(path))
