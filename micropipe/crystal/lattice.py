"""Slip and twin systems, Schmid tensors and interaction matrices of the cF, cI and hP lattices, in DAMASK's order.

Systems, their order and the Schmid tensors come from :class:`damask.Crystal` (``kinematics``, ``Schmid``,
``characteristic_shear_twin``); sample-frame quantities from :class:`damask.Orientation`.  The only data kept
here are DAMASK's interaction-type tables (``interaction/<lattice>_<reacting>_by_<acting>.csv``, copied from
DAMASK's ``crystal.f90``): entry (alpha, beta) is the 1-based index into a ``h_*`` list of material.yaml for
the *reacting* system alpha (row) and the *acting* system beta (column).

Frames: the crystal (lattice) frame is DAMASK's Cartesian frame of the lattice (hP: a_1 along x, c along z).
An orientation ``O`` is a DAMASK unit quaternion (passive, sample -> crystal), as in material.yaml.
Counts per family (``N_sl``, ``N_tw``) select the first N systems of each family, as DAMASK does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal

import damask
import numpy as np

from micropipe.crystal import check_lattice

log = logging.getLogger(__name__)

Mode = Literal["slip", "twin"]
InteractionKind = Literal["sl-sl", "sl-tw", "tw-sl", "tw-tw"]

SLIP_FAMILIES: dict[str, tuple[str, ...]] = {
    "cF": ("{111}<110>", "{110}<110>"),
    "cI": ("{110}<111>", "{112}<111>", "{123}<111>"),
    "hP": ("basal <a> {00.1}<11.0>", "prismatic <a> {10.0}<11.0>", "1st-order pyramidal <a> {10.1}<11.0>",
           "1st-order pyramidal <c+a> {10.1}<11.3>", "2nd-order pyramidal <c+a> {11.2}<11.3>"),
}
"""Slip families per lattice, in DAMASK's order (the entries of ``N_sl``)."""

TWIN_FAMILIES: dict[str, tuple[str, ...]] = {
    "cF": ("{111}<112>",),
    "cI": ("{112}<111>",),
    "hP": ("{10.2}<-10.1>", "{11.1}<11.6>", "{10.1}<10.-2>", "{11.2}<11.-3>"),
}
"""Twin families per lattice, in DAMASK's order (the entries of ``N_tw``)."""

C_A_RANGE = (1.0, 2.0)
"""c/a ratios DAMASK accepts for hP (``crystal.f90``, IO_error 131)."""

_KINDS: dict[str, tuple[Mode, Mode]] = {"sl-sl": ("slip", "slip"), "sl-tw": ("slip", "twin"),
                                        "tw-sl": ("twin", "slip"), "tw-tw": ("twin", "twin")}


def crystal(lattice: str, c_a: float | None = None) -> damask.Crystal:
    """DAMASK crystal of a lattice micropipe knows, with unit a and, for hP, the given c/a.

    Parameters
    ----------
    lattice : {'cF', 'cI', 'hP'}
        Bravais lattice in Pearson notation.
    c_a : float, optional
        c/a ratio; required for 'hP' (1 <= c/a <= 2, as DAMASK), not allowed for the cubic lattices.

    Returns
    -------
    crystal : damask.Crystal
    """
    check_lattice(lattice)
    if lattice == "hP":
        if c_a is None:
            raise ValueError("c/a: required for lattice 'hP'")
        if not C_A_RANGE[0] <= float(c_a) <= C_A_RANGE[1]:
            raise ValueError(f"c/a: {c_a} outside [{C_A_RANGE[0]}, {C_A_RANGE[1]}] for lattice 'hP'")
        return damask.Crystal(lattice="hP", a=1.0, c=float(c_a))
    if c_a is not None:
        raise ValueError(f"c/a: given ({c_a}) for cubic lattice {lattice!r}, which has none")
    return damask.Crystal(lattice=lattice)  # type: ignore[arg-type]


@functools.cache
def N_max(lattice: str, mode: Mode = "slip") -> tuple[int, ...]:
    """Number of systems in each family of ``mode`` ('slip' or 'twin') for a lattice, e.g. (12, 6) for cF slip."""
    c = crystal(lattice, 1.6 if lattice == "hP" else None)
    return tuple(len(f) for f in c.kinematics(mode)["direction"])


def check_N(lattice: str, N: Sequence[int], mode: Mode = "slip", key: str | None = None) -> tuple[int, ...]:
    """Validate systems-per-family counts (``N_sl``/``N_tw``) against the lattice; return them as a tuple of int.

    Raises ValueError naming ``key`` (default 'N_sl'/'N_tw') when there are more families than the lattice has,
    a count is negative or not an integer, or exceeds its family.
    """
    key = key or ("N_sl" if mode == "slip" else "N_tw")
    limit = N_max(lattice, mode)
    N_list = list(np.atleast_1d(np.asarray(N, dtype=object)))
    if len(N_list) > len(limit):
        raise ValueError(f"{key}: {len(N_list)} families given, lattice {lattice!r} has {len(limit)} {mode} families "
                         f"({', '.join(map(str, limit))} systems)")
    for f, (n, n_max) in enumerate(zip(N_list, limit, strict=False)):
        if isinstance(n, bool) or not float(n).is_integer() or not 0 <= int(n) <= n_max:
            raise ValueError(f"{key}: family {f + 1} has {n!r} systems, expected an integer in [0, {n_max}] "
                             f"for lattice {lattice!r}")
    return tuple(int(n) for n in N_list)


def _select(lattice: str, N: Sequence[int], mode: Mode, c_a: float | None) -> tuple[np.ndarray, np.ndarray]:
    c = crystal(lattice, c_a)
    N = check_N(lattice, N, mode)
    kin = c.kinematics(mode)
    uvw = [f[:n] for f, n in zip(kin["direction"], N, strict=False)]
    hkl = [f[:n] for f, n in zip(kin["plane"], N, strict=False)]
    if sum(N) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    d = c.to_frame(uvw=np.vstack(uvw))
    n = c.to_frame(hkl=np.vstack(hkl))
    return d / np.linalg.norm(d, axis=-1, keepdims=True), n / np.linalg.norm(n, axis=-1, keepdims=True)


def slip_systems(lattice: str, N_sl: Sequence[int] | None = None, c_a: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Unit slip directions and slip-plane normals in the crystal frame, in DAMASK's order.

    Parameters
    ----------
    lattice : {'cF', 'cI', 'hP'}
        Bravais lattice.
    N_sl : sequence of int, optional
        Systems used per slip family (:data:`SLIP_FAMILIES`); default all of every family.
    c_a : float, optional
        c/a ratio, required for 'hP'.

    Returns
    -------
    d, n : numpy.ndarray, shape (N, 3) each
        Unit slip directions and unit plane normals, ``N = sum(N_sl)``; ``d . n = 0``.
    """
    return _select(lattice, N_max(lattice, "slip") if N_sl is None else N_sl, "slip", c_a)


def twin_systems(lattice: str, N_tw: Sequence[int] | None = None, c_a: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Unit twin shear directions and twin-plane normals in the crystal frame, in DAMASK's order.

    Twins are unidirectional: the sign of the normal follows DAMASK's ``kinematics('twin')`` so that
    ``d ⊗ n`` times the (positive) twin shear is the shape change, whether the family is a tension or a
    compression twin for this c/a.  Arguments and shapes as :func:`slip_systems`, with ``N_tw`` per
    :data:`TWIN_FAMILIES`.
    """
    return _select(lattice, N_max(lattice, "twin") if N_tw is None else N_tw, "twin", c_a)


def schmid_tensors(lattice: str, N_sl: Sequence[int] | None = None, N_tw: Sequence[int] | None = None,
                   c_a: float | None = None) -> np.ndarray:
    """Schmid tensors ``P = d ⊗ n`` in the crystal frame, shape (N, 3, 3), of slip (``N_sl``) or twin (``N_tw``).

    Give exactly one of ``N_sl`` and ``N_tw``.  Same values as ``damask.Crystal.Schmid``.
    """
    if (N_sl is None) == (N_tw is None):
        raise ValueError("schmid_tensors: give exactly one of N_sl and N_tw")
    d, n = slip_systems(lattice, N_sl, c_a) if N_tw is None else twin_systems(lattice, N_tw, c_a)
    return np.einsum("...i,...j->...ij", d, n)


def schmid_tensors_sample(O: Any, lattice: str, N_sl: Sequence[int] | None = None,
                          N_tw: Sequence[int] | None = None, c_a: float | None = None) -> np.ndarray:
    """Schmid tensors in the sample frame for orientations ``O``.

    Parameters
    ----------
    O : damask.Rotation or numpy.ndarray, shape (..., 4)
        Orientations as DAMASK unit quaternions (real part first, passive sample -> crystal).
    lattice, N_sl, N_tw, c_a
        As :func:`schmid_tensors`.

    Returns
    -------
    P : numpy.ndarray, shape (..., N, 3, 3)
        ``R P_crystal R^T`` with ``R`` the crystal -> sample rotation matrix; equals
        ``damask.Orientation.Schmid`` with the system axis moved last but two.
    """
    P = schmid_tensors(lattice, N_sl, N_tw, c_a)
    R = crystal_to_sample(O)
    return np.einsum("...ia,nab,...jb->...nij", R, P, R)


def schmid_factors(O: Any, lattice: str, direction: Sequence[float] = (0.0, 0.0, 1.0),
                   N_sl: Sequence[int] | None = None, N_tw: Sequence[int] | None = None,
                   c_a: float | None = None) -> np.ndarray:
    """Schmid factors ``m = (d . l)(n . l)`` for uniaxial load along the sample direction ``l``.

    Returns
    -------
    m : numpy.ndarray, shape (..., N)
        Signed Schmid factors; for tension the resolved shear stress is ``m sigma``.
    """
    l = np.asarray(direction, float)
    l = l / np.linalg.norm(l)
    P = schmid_tensors_sample(O, lattice, N_sl, N_tw, c_a)
    return np.einsum("i,...nij,j->...n", l, P, l)


def crystal_to_sample(O: Any) -> np.ndarray:
    """Rotation matrices (..., 3, 3) that take crystal-frame vectors to the sample frame for DAMASK orientations O.

    ``O`` is a :class:`damask.Rotation` or unit quaternions (..., 4); DAMASK's quaternions are passive
    (sample -> crystal), so this is ``(~O).as_matrix()``.
    """
    rot = O if isinstance(O, damask.Rotation) else damask.Rotation.from_quaternion(np.asarray(O, float))
    return (~rot).as_matrix()


def characteristic_shear_twin(lattice: str, N_tw: Sequence[int], c_a: float | None = None) -> np.ndarray:
    """Magnitude of the characteristic twin shear of each selected twin system, shape (sum(N_tw),).

    From ``damask.Crystal.characteristic_shear_twin`` (Christian & Mahajan 1995); the sign DAMASK gives it
    (tension/compression twin) is already in the normals of :func:`twin_systems`.
    """
    N_tw = check_N(lattice, N_tw, "twin")
    s = np.asarray(crystal(lattice, c_a).characteristic_shear_twin("*"), float).reshape(len(N_max(lattice, "twin")),
                                                                                       -1)
    return np.abs(np.concatenate([s[f, :n] for f, n in enumerate(N_tw)] or [np.zeros(0)]))


@functools.cache
def _table(lattice: str, reacting: Mode, acting: Mode) -> np.ndarray:
    name = f"{lattice.lower()}_{reacting}_by_{acting}.csv"
    ref = resources.files("micropipe.crystal").joinpath("interaction", name)
    if not ref.is_file():
        raise ValueError(f"interaction: DAMASK has no {reacting}-by-{acting} interaction table for lattice "
                         f"{lattice!r} (no {name})")
    table = np.loadtxt(ref.open("r"), delimiter=",", dtype=int, ndmin=2)
    expected = (sum(N_max(lattice, reacting)), sum(N_max(lattice, acting)))
    if table.shape != expected:
        raise ValueError(f"{name}: shape {table.shape}, expected {expected} for lattice {lattice!r}")
    table.setflags(write=False)
    return table


def interaction_types(lattice: str, kind: InteractionKind = "sl-sl") -> np.ndarray:
    """DAMASK's interaction-type table of a lattice, all systems (read-only int array, 1-based types).

    ``kind`` names reacting then acting systems as DAMASK's keys do: 'sl-sl' (``h_sl-sl``), 'sl-tw' (slip
    reacting to twins, ``h_sl-tw``), 'tw-sl' (``h_tw-sl``), 'tw-tw' (``h_tw-tw``).  Shape
    (N_reacting_max, N_acting_max), rows reacting, columns acting.
    """
    if kind not in _KINDS:
        raise ValueError(f"interaction: unknown kind {kind!r}, expected one of {', '.join(_KINDS)}")
    crystal(lattice, 1.6 if lattice == "hP" else None)  # validates the lattice name
    return _table(lattice, *_KINDS[kind])


def interaction_matrix(lattice: str, values: Sequence[float], *, kind: InteractionKind = "sl-sl",
                       N_sl: Sequence[int] | None = None, N_tw: Sequence[int] | None = None) -> np.ndarray:
    """Interaction matrix of the used systems, as DAMASK's ``buildInteraction`` builds it.

    Parameters
    ----------
    lattice : {'cF', 'cI', 'hP'}
        Bravais lattice.
    values : sequence of float
        The ``h_<kind>`` list of material.yaml (dimensionless), indexed by interaction type.
    kind : {'sl-sl', 'sl-tw', 'tw-sl', 'tw-tw'}
        Reacting and acting systems (see :func:`interaction_types`).
    N_sl, N_tw : sequence of int
        Systems used per slip/twin family; those the kind involves are required.

    Returns
    -------
    H : numpy.ndarray, shape (N_reacting, N_acting)
        ``H[alpha, beta] = values[type(alpha, beta) - 1]`` over the first N systems of each family.
    """
    table = interaction_types(lattice, kind)
    reacting, acting = _KINDS[kind]
    counts = {}
    for mode, N in (("slip", N_sl), ("twin", N_tw)):
        if mode in (reacting, acting):
            if N is None:
                raise ValueError(f"h_{kind}: {'N_sl' if mode == 'slip' else 'N_tw'} required")
            counts[mode] = check_N(lattice, N, mode)
    rows = _used(lattice, reacting, counts[reacting])
    cols = _used(lattice, acting, counts[acting])
    types = table[np.ix_(rows, cols)]
    h = np.asarray(values, float).ravel()
    if types.size and types.max() > h.size:
        raise ValueError(f"h_{kind}: {h.size} values given, the used systems of lattice {lattice!r} need "
                         f"interaction types up to {types.max()}")
    return h[types - 1] if types.size else np.zeros(types.shape)


def _used(lattice: str, mode: Mode, N: Sequence[int]) -> np.ndarray:
    """Indices into the full system list of the first N[f] systems of every family f."""
    start = np.cumsum((0,) + N_max(lattice, mode))
    return np.concatenate([np.arange(s, s + n) for s, n in zip(start, N, strict=False)] or [np.zeros(0, int)])
