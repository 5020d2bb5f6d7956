"""The in-memory volume element (VE): a periodic voxel grid of grains with one orientation each."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from micropipe.crystal import check_lattice

EULER_NORM = np.array([2.0 * np.pi, np.pi, 2.0 * np.pi])
"""Divisors that map Bunge Euler angles (phi1, Phi, phi2) to [0, 1] (seed 003 §2.1)."""


@dataclasses.dataclass(frozen=True, eq=False)
class VolumeElement:
    """One volume element.

    Attributes
    ----------
    grain_ids : numpy.ndarray of int32, shape (X, Y, Z)
        Grain index of every voxel, 0 ... G-1, every grain present.
    euler : numpy.ndarray of float64, shape (G, 3)
        Bunge Euler angles (phi1, Phi, phi2) per grain in radians,
        phi1, phi2 in [0, 2 pi], Phi in [0, pi].
    phase : numpy.ndarray of int32, shape (G,)
        Phase index per grain (0 for single-phase volumes).
    spacing : numpy.ndarray of float64, shape (3,)
        Voxel edge lengths in length units (seed 003: 0.25 units per voxel).
    lattice : str
        Bravais lattice of phase 0, one of :data:`micropipe.crystal.LATTICES`.
    phase_ids : numpy.ndarray of uint8, shape (X, Y, Z), optional
        Phase of every voxel for two-phase volumes; None for single-phase ones.
    attrs : dict
        Generator name, parameters, seed and provenance (JSON-serialisable).
    """

    grain_ids: np.ndarray
    euler: np.ndarray
    phase: np.ndarray
    spacing: np.ndarray
    lattice: str
    phase_ids: np.ndarray | None = None
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def cells(self) -> tuple[int, int, int]:
        """Voxel counts (X, Y, Z)."""
        return tuple(int(c) for c in self.grain_ids.shape)  # type: ignore[return-value]

    @property
    def size(self) -> np.ndarray:
        """Edge lengths of the periodic box in length units, shape (3,)."""
        return np.asarray(self.cells) * self.spacing

    @property
    def N_grains(self) -> int:
        return int(self.euler.shape[0])

    def euler_field(self) -> np.ndarray:
        """Per-voxel Bunge Euler angles in radians, shape (X, Y, Z, 3)."""
        return self.euler[self.grain_ids]

    def euler_tensor(self) -> np.ndarray:
        """The seed-003 network input: float32, shape (3, X, Y, Z), angles divided by (2 pi, pi, 2 pi)."""
        return np.moveaxis(self.euler_field() / EULER_NORM, -1, 0).astype(np.float32)


def validate(ve: VolumeElement, source: str = "volume element") -> None:
    """Raise ``ValueError`` naming ``source``, the field and the expectation if ``ve`` is malformed."""
    g = np.asarray(ve.grain_ids)
    if g.ndim != 3 or min(g.shape) < 1:
        raise ValueError(f"{source}: grain_ids must be a 3D array (X, Y, Z), got shape {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"{source}: grain_ids must be integer, got dtype {g.dtype}")
    e = np.asarray(ve.euler)
    if e.ndim != 2 or e.shape[1] != 3 or e.shape[0] < 1:
        raise ValueError(f"{source}: euler must have shape (G, 3) with G >= 1, got {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{source}: euler contains NaN or inf")
    check_euler_range(e, source, "euler")
    if g.min() < 0 or g.max() >= e.shape[0]:
        raise ValueError(f"{source}: grain_ids must lie in [0, {e.shape[0] - 1}] (one euler row per grain), "
                         f"got [{g.min()}, {g.max()}]")
    p = np.asarray(ve.phase)
    if p.shape != (e.shape[0],):
        raise ValueError(f"{source}: phase must have shape ({e.shape[0]},), got {p.shape}")
    s = np.asarray(ve.spacing, dtype=float)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{source}: spacing must be 3 positive numbers, got {ve.spacing!r}")
    check_lattice(ve.lattice, source)
    if ve.phase_ids is not None and np.asarray(ve.phase_ids).shape != g.shape:
        raise ValueError(f"{source}: phase_ids must have the shape of grain_ids {g.shape}, "
                         f"got {np.asarray(ve.phase_ids).shape}")


def check_euler_range(euler: np.ndarray, source: str, field: str, tol: float = 1e-6) -> None:
    """Raise ``ValueError`` unless Bunge angles (G, 3) lie in [0, 2 pi] x [0, pi] x [0, 2 pi] radians (± tol)."""
    e = np.asarray(euler, dtype=float)
    if np.any(e < -tol) or np.any(e > EULER_NORM + tol):
        raise ValueError(f"{source}: {field} out of range: expected radians with phi1, phi2 in [0, 2pi] and "
                         f"Phi in [0, pi], got min {e.min(axis=0)} max {e.max(axis=0)} "
                         f"(degrees? convert with numpy.radians)")


def resample(ve: VolumeElement, cells: tuple[int, int, int] | list[int]) -> VolumeElement:
    """The same periodic box on another voxel grid (nearest neighbour, ``damask.GeomGrid.scale``).

    Used to solve crystal plasticity on a coarser grid than the VE was generated on (a resolution
    choice, as in a DAMASK resolution study). Box size, grain orientations and phases are unchanged;
    grains smaller than the new voxels can vanish from ``grain_ids`` but keep their table rows.

    Parameters
    ----------
    ve : VolumeElement
    cells : sequence of 3 positive int
        New voxel counts (X, Y, Z).

    Returns
    -------
    VolumeElement
        A new VE with ``grain_ids`` of shape ``cells`` and ``spacing = size / cells``; ``ve`` itself if
        ``cells`` equals its cells.
    """
    import damask

    new = tuple(int(c) for c in cells)
    if len(new) != 3 or min(new) < 1:
        raise ValueError(f"cells: expected 3 positive integers (voxels along x, y, z), got {cells!r}")
    if new == ve.cells:
        return ve
    grid = damask.GeomGrid(material=np.asarray(ve.grain_ids, np.int64), size=ve.size).scale(new)
    phase_ids = None
    if ve.phase_ids is not None:
        phase_ids = damask.GeomGrid(material=np.asarray(ve.phase_ids, np.int64), size=ve.size).scale(new).material
        phase_ids = phase_ids.astype(np.uint8)
    attrs = {**ve.attrs, "resampled_from_cells": list(ve.cells)}
    return dataclasses.replace(ve, grain_ids=grid.material.astype(np.int32), spacing=ve.size / np.asarray(new),
                               phase_ids=phase_ids, attrs=attrs)
