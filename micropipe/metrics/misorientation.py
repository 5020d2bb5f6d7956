"""Seed 003's reconstruction error phi4 = 1 - |q1 . q2|, made blind to crystal symmetry.

phi4 is a metric on unit quaternions modulo sign (Huynh 2009, "Metrics for 3D rotations"): 1 - cos(omega / 2)
for a rotation angle omega between the two, 0 for the same rotation and at most 1. Seed 003 applies it to
quaternions of fundamental-zone Euler angles. Reducing both orientations to the fundamental zone on their
own is not enough: a reconstruction that lands just across the zone's boundary from its input maps to a
far-away representative, and phi4 would jump. Here q2 is the symmetry equivalent of the second orientation
closest to the first, i.e. phi4 = 1 - cos(omega / 2) with omega the disorientation angle (``damask``):
symmetry-equivalent orientations give 0, the value is continuous, and it equals the seed's formula whenever
both lie inside the fundamental zone and their direct rotation is the shortest.
"""

from __future__ import annotations

import numpy as np

from micropipe.ve.texture import misorientation_deg
from micropipe.ve.volume import EULER_NORM


def phi4(euler_a: np.ndarray, euler_b: np.ndarray, lattice: str) -> np.ndarray:
    """phi4 = 1 - cos(omega / 2), omega the disorientation angle under the symmetry of ``lattice``.

    Parameters
    ----------
    euler_a, euler_b : numpy.ndarray, shape (..., 3)
        Bunge Euler angles in radians (any range; equal shapes).
    lattice : {'cF', 'cI', 'hP'}

    Returns
    -------
    numpy.ndarray, shape (...)
        Values in [0, 1 - cos(omega_max / 2)]: 0.147 for cubic (omega_max 62.8 deg), 0.317 for hexagonal
        (93.8 deg) symmetry; dimensionless.
    """
    a, b = np.asarray(euler_a, float), np.asarray(euler_b, float)
    if a.shape != b.shape or a.shape[-1:] != (3,):
        raise ValueError(f"euler_a, euler_b: expected equal shapes (..., 3), got {a.shape} and {b.shape}")
    return 1.0 - np.cos(np.radians(misorientation_deg(a, b, lattice)) / 2.0)


def mean_phi4(x: np.ndarray, x_hat: np.ndarray, lattice: str) -> np.ndarray:
    """Mean phi4 over the voxels of each VE: the seed's "mean misorientation" of a reconstruction.

    Parameters
    ----------
    x, x_hat : numpy.ndarray, shape (n, 3, X, Y, Z)
        Network tensors: Euler angles divided by (2 pi, pi, 2 pi) (values in [0, 1]).
    lattice : {'cF', 'cI', 'hP'}

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    x, x_hat = np.asarray(x, float), np.asarray(x_hat, float)
    if x.shape != x_hat.shape or x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"x, x_hat: expected equal shapes (n, 3, X, Y, Z), got {x.shape} and {x_hat.shape}")
    to_euler = lambda t: np.moveaxis(t, 1, -1) * EULER_NORM  # noqa: E731
    return phi4(to_euler(x), to_euler(np.clip(x_hat, 0.0, 1.0)), lattice).reshape(len(x), -1).mean(axis=1)
