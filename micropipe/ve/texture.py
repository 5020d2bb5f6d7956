"""Grain orientations: ideal texture components, random textures, fundamental-zone reduction, disorientation.

All crystallography is delegated to :mod:`damask` (``Rotation``, ``Orientation``); this module only
adds seed 003's texture table, its Euler-space sampling recipe and input validation.

Angles are Bunge Euler angles (phi1, Phi, phi2) in radians unless a name says ``_deg``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import damask
import numpy as np

from micropipe.crystal import check_lattice

log = logging.getLogger(__name__)

TEXTURES: dict[str, tuple[float, float, float]] = {
    "brass": (35.0, 45.0, 0.0),
    "copper": (90.0, 35.0, 45.0),
    "cube": (0.0, 0.0, 0.0),
    "goss": (0.0, 45.0, 0.0),
}
"""Ideal components as Bunge Euler angles in degrees (seed 003, table 2)."""

TEXTURE_NAMES = ("random", *TEXTURES)
"""Every texture name :func:`sample_orientations` accepts."""

SAMPLINGS = ("spherical", "euler")
"""Ways of scattering orientations about an ideal component (see :func:`sample_orientations`)."""


def _check_lattice(lattice: str) -> str:
    check_lattice(lattice)
    return lattice


def _check_texture(texture: str) -> str:
    if texture not in TEXTURE_NAMES:
        raise ValueError(f"texture: unknown texture {texture!r}, expected one of {', '.join(TEXTURE_NAMES)}")
    return texture


def _check_spread(spread_deg: float) -> float:
    try:
        s = float(spread_deg)
    except (TypeError, ValueError):
        raise ValueError(f"spread_deg: expected a number >= 0 (degrees), got {spread_deg!r}") from None
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"spread_deg: expected a finite number >= 0 (degrees), got {spread_deg!r}")
    return s


def _orientation(euler: np.ndarray, lattice: str) -> damask.Orientation:
    """damask orientation(s) of Bunge Euler angles ``euler`` (..., 3) in radians."""
    return damask.Orientation.from_Euler_angles(phi=euler, lattice=_check_lattice(lattice))


def _as_euler(euler: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    e = np.asarray(euler, dtype=float)
    if e.ndim < 1 or e.shape[-1] != 3:
        raise ValueError(f"{name}: expected Bunge Euler angles of shape (..., 3), got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{name}: Euler angles contain NaN or inf")
    return e


def wrap_euler(euler: np.ndarray) -> np.ndarray:
    """Map arbitrary Bunge Euler angles onto the same rotation with phi1, phi2 in [0, 2 pi), Phi in [0, pi].

    Uses (phi1, Phi, phi2) == (phi1 + pi, 2 pi - Phi, phi2 + pi), which holds because a half turn
    about z conjugates a rotation about x into one about -x.

    Parameters
    ----------
    euler : numpy.ndarray, shape (..., 3)
        Bunge Euler angles in radians, any range.

    Returns
    -------
    euler : numpy.ndarray, shape (..., 3)
        The same rotations with angles in the standard ranges (a new array).
    """
    e = np.array(euler, dtype=float)
    two_pi = 2.0 * np.pi
    e[..., 1] = np.mod(e[..., 1], two_pi)
    flip = e[..., 1] > np.pi
    e[..., 1] = np.where(flip, two_pi - e[..., 1], e[..., 1])
    e[..., 0] += np.where(flip, np.pi, 0.0)
    e[..., 2] += np.where(flip, np.pi, 0.0)
    e[..., [0, 2]] = np.mod(e[..., [0, 2]], two_pi)
    return e


def reduce_to_fundamental_zone(euler: np.ndarray, lattice: str) -> np.ndarray:
    """Symmetrically equivalent orientations inside the fundamental zone of ``lattice``.

    Parameters
    ----------
    euler : numpy.ndarray, shape (..., 3)
        Bunge Euler angles in radians.
    lattice : {'cF', 'cI', 'hP'}
        Bravais lattice; cF and cI have cubic (m-3m), hP hexagonal (6/mmm) symmetry.

    Returns
    -------
    euler : numpy.ndarray, shape (..., 3)
        Bunge Euler angles in radians of the equivalent orientations for which
        ``damask.Orientation.in_FZ`` holds (seed 003 §2.1 preprocessing).
    """
    e = _as_euler(euler, "euler")
    return _orientation(wrap_euler(e), lattice).reduced.as_Euler_angles()


def misorientation_deg(euler_a: np.ndarray, euler_b: np.ndarray, lattice: str) -> np.ndarray:
    """Disorientation angle between two sets of orientations of the same lattice.

    The smallest rotation angle over all crystal-symmetry equivalents
    (``damask.Orientation.disorientation_angle``); sample symmetry is not applied.

    Parameters
    ----------
    euler_a, euler_b : numpy.ndarray, shape (..., 3)
        Bunge Euler angles in radians; leading shapes broadcast.
    lattice : {'cF', 'cI', 'hP'}
        Bravais lattice of both.

    Returns
    -------
    omega : numpy.ndarray, shape (...)
        Disorientation angle in degrees, in [0, 62.8] for cubic and [0, 93.8] for hexagonal symmetry.
    """
    a = _as_euler(euler_a, "euler_a")
    b = _as_euler(euler_b, "euler_b")
    shape = np.broadcast_shapes(a.shape, b.shape)
    a = np.broadcast_to(a, shape)
    b = np.broadcast_to(b, shape)
    omega = _orientation(wrap_euler(a), lattice).disorientation_angle(_orientation(wrap_euler(b), lattice))
    return np.degrees(omega)


def sample_orientations(n: int, texture: str, lattice: str, spread_deg: float = 2.0,
                        sampling: str = "spherical",
                        rng_seed: int | np.random.SeedSequence | np.random.Generator | None = None) -> np.ndarray:
    """Draw ``n`` grain orientations of a texture, reduced to the fundamental zone of ``lattice``.

    Parameters
    ----------
    n : int
        Number of orientations, >= 1.
    texture : {'random', 'brass', 'copper', 'cube', 'goss'}
        'random': uniform on SO(3) (``damask.Rotation.from_random``). Otherwise the ideal
        component of :data:`TEXTURES`.
    lattice : {'cF', 'cI', 'hP'}
        Bravais lattice whose fundamental zone the result is reduced to.
    spread_deg : float
        Scatter about the ideal component in degrees, >= 0 (ignored for 'random').
    sampling : {'spherical', 'euler'}
        'spherical': ``damask.Rotation.from_spherical_component`` about the ideal orientation.
        damask draws a uniformly distributed rotation axis and a rotation angle
        ``omega = |N(0, spread_deg)|``, so ``spread_deg`` is the standard deviation of the normal
        distribution folded into the (half-normal) misorientation angle to the ideal:
        mean angle ``spread_deg * sqrt(2/pi)``, 99.73 % of grains within ``3 * spread_deg``.

        'euler': seed 003 §2.1.2. Each Euler angle is drawn from ``N(ideal, spread_deg)``;
        where the ideal angle is zero the noise is folded to be positive (``|N|``) "to avoid
        periodicity effects". Three independent Euler perturbations give a larger misorientation
        than the spherical model with the same number: for small spreads
        ``omega**2 ~ d_phi1**2 + d_Phi**2 + d_phi2**2 + 2 cos(Phi) d_phi1 d_phi2``, so only about
        90 % (cube), 92 % (Goss), 95 % (copper) and 96 % (brass) of grains lie within ``3 * spread_deg``.
    rng_seed : int, numpy.random.SeedSequence, numpy.random.Generator or None
        Seed for ``numpy.random.default_rng``.

    Returns
    -------
    euler : numpy.ndarray of float64, shape (n, 3)
        Bunge Euler angles in radians inside the fundamental zone
        (phi1, phi2 in [0, 2 pi], Phi in [0, pi]).

    Raises
    ------
    ValueError
        Unknown texture, lattice or sampling; ``spread_deg`` negative or NaN; ``n < 1``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected an integer >= 1 (number of orientations), got {n!r}")
    _check_texture(texture)
    _check_lattice(lattice)
    spread = _check_spread(spread_deg)
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: unknown sampling {sampling!r}, expected one of {', '.join(SAMPLINGS)}")
    rng = np.random.default_rng(rng_seed)
    n = int(n)
    if texture == "random":
        rotation = damask.Rotation.from_random(shape=n, rng_seed=rng)
        euler = rotation.as_Euler_angles()
    elif sampling == "spherical":
        center = damask.Rotation.from_Euler_angles(TEXTURES[texture], degrees=True)
        rotation = damask.Rotation.from_spherical_component(center=center, sigma=spread, shape=n,
                                                            degrees=True, rng_seed=rng)
        euler = rotation.as_Euler_angles()
    else:
        ideal = np.radians(TEXTURES[texture])
        noise = rng.normal(0.0, np.radians(spread), size=(n, 3))
        noise[:, ideal == 0.0] = np.abs(noise[:, ideal == 0.0])
        euler = wrap_euler(ideal + noise)
    return reduce_to_fundamental_zone(euler, lattice)
