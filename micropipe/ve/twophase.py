"""Two-phase voxel volumes for seed 001: periodic sphere packings and Latin-hypercube sub-volumes of a scan.

Arrays are uint8 phase indicators (X, Y, Z) or batches (n, X, Y, Z): 1 = inclusion (phase 1, the phase
whose fraction is p1), 0 = matrix.  Lengths are in voxels; voxel ``i`` covers [i, i + 1), centre i + 1/2.

Spheres (seed 001 §4): "represented in a voxel format with 32³ voxels, where the radius of the spheres is
4 voxels.  The inclusion volume fraction [...] is p1 = 0.2."  The paper states no placement or overlap rule;
it stresses "perfectly spherical geometries" and "the well defined shape of the inclusions", so the default
is non-overlapping spheres placed by random sequential addition (RSA): uniform random centres in the
periodic box, a candidate rejected if its minimum-image distance to an accepted centre is <= 2 R + gap.
``overlap=True`` gives the Boolean model (independent centres, overlaps merge).  Spheres are added until
the voxel fraction is closest to the target, so it misses it by at most half a sphere's voxel count / N
(0.0041 for R = 4 in 32³); the achieved fraction of every volume is returned.

Sub-volumes (seed 001 §5): a binary µCT volume "is sliced into 1 × 10³ sub-volumes with dimensions
64 × 64 × 64 via Latin-Hypercube sampling": corners drawn by :class:`scipy.stats.qmc.LatinHypercube` in
the unit cube, scaled to the admissible corner range, so every axis has exactly one sample per stratum.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from micropipe.params import positive_int

log = logging.getLogger(__name__)

PAPER_SPHERES = {"shape": (32, 32, 32), "radius": 4.0, "volume_fraction": 0.2}
"""Seed 001 §4: 32³ voxels, sphere radius 4 voxels, inclusion fraction 0.2."""
PAPER_SUBVOLUME_SIZE = 64
"""Seed 001 §5: 64³ sub-volumes of the WPC scan."""
MAX_ATTEMPTS_PER_SPHERE = 2000
"""RSA gives up when this many candidates per expected sphere have been tried (it jams near 0.38)."""


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def _shape3(shape: Any, name: str = "shape") -> tuple[int, int, int]:
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (shape,) * 3
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if len(dims) != 3 or any(isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1 for d in dims):
        raise ValueError(f"field '{name}': expected 3 positive ints (X, Y, Z), got {shape!r}")
    return tuple(int(d) for d in dims)  # type: ignore[return-value]


def _fraction(value: Any, name: str = "volume_fraction") -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    if not 0.0 < f < 1.0:
        raise ValueError(f"field '{name}': expected a fraction in (0, 1), got {value!r}")
    return f


def _seed_sequence(rng_seed: int | None) -> np.random.SeedSequence:
    if rng_seed is not None and (isinstance(rng_seed, bool) or not isinstance(rng_seed, int | np.integer)
                                 or rng_seed < 0):
        raise ValueError(f"field 'rng_seed': expected a non-negative int or None, got {rng_seed!r}")
    return np.random.SeedSequence(None if rng_seed is None else int(rng_seed))


# --------------------------------------------------------------------------------------------------
# spheres
# --------------------------------------------------------------------------------------------------


def overlapping_spheres(cells: int, n: int, radius: float, rng_seed: int) -> np.ndarray:
    """A periodic cube of ``cells``³ voxels with ``n`` overlapping spheres at uniform random centres.

    A quick two-phase test volume (FFT tests and benchmarks), not seed 001's packing: the spheres may overlap
    and the fraction is not controlled.  ``radius`` is a fraction of the box edge.  Returns uint8 phases
    (X, Y, Z), 1 inside a sphere.
    """
    rng = np.random.default_rng(rng_seed)
    x = (np.arange(cells) + 0.5) / cells
    X = np.stack(np.meshgrid(x, x, x, indexing="ij"))
    phases = np.zeros((cells,) * 3, np.uint8)
    for c in rng.random((n, 3)):
        d = X - c[:, None, None, None]
        d -= np.round(d)
        phases[(d ** 2).sum(0) < radius ** 2] = 1
    return phases


@dataclass(frozen=True)
class SphereVolumes:
    """Periodic sphere volumes and what they achieved.

    Attributes
    ----------
    volumes : numpy.ndarray, shape (n, X, Y, Z), uint8
        1 inside a sphere (inclusion), 0 in the matrix.
    volume_fractions : numpy.ndarray, shape (n,)
        Achieved inclusion fraction p1 of each volume.
    centres : list of numpy.ndarray, each shape (k_i, 3)
        Sphere centres in voxels, in [0, X) x [0, Y) x [0, Z).
    attrs : dict
        Generator name, parameters, seed entropy and the fraction statistics (JSON types), for provenance.
    """

    volumes: np.ndarray
    volume_fractions: np.ndarray
    centres: list[np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_spheres(self) -> np.ndarray:
        """Number of spheres per volume, shape (n,)."""
        return np.array([len(c) for c in self.centres], dtype=np.int64)


def _ball(centre: np.ndarray, radius: float, shape: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """Flat-index tuple of the voxels whose centres lie within ``radius`` of ``centre`` (periodic)."""
    axes = []
    for c in np.asarray(centre, dtype=np.float64):
        i = np.arange(math.floor(c - radius - 0.5), math.ceil(c + radius - 0.5) + 1)
        axes.append((i, (i + 0.5 - c) ** 2))
    (ix, dx), (iy, dy), (iz, dz) = axes
    inside = dx[:, None, None] + dy[None, :, None] + dz[None, None, :] <= radius * radius
    gx, gy, gz = np.nonzero(inside)
    return ix[gx] % shape[0], iy[gy] % shape[1], iz[gz] % shape[2]


def _min_image_distance(points: np.ndarray, candidate: np.ndarray, box: np.ndarray) -> np.ndarray:
    d = np.abs(points - candidate)
    d = np.minimum(d, box - d)
    return np.sqrt((d * d).sum(axis=1))


def _one_sphere_volume(rng: np.random.Generator, shape: tuple[int, int, int], radius: float, target: float,
                       overlap: bool, min_distance: float) -> tuple[np.ndarray, np.ndarray]:
    box = np.asarray(shape, dtype=np.float64)
    n_voxels = int(np.prod(shape))
    target_count = target * n_voxels
    vol = np.zeros(shape, dtype=np.uint8)
    centres = np.empty((0, 3))
    count = 0
    expected = max(1.0, target_count / (4.0 / 3.0 * math.pi * radius ** 3))
    max_attempts = int(MAX_ATTEMPTS_PER_SPHERE * math.ceil(expected))
    for _ in range(max_attempts):
        c = rng.uniform(0.0, box)
        if not overlap and len(centres) and _min_image_distance(centres, c, box).min() <= min_distance:
            continue
        idx = _ball(c, radius, shape)
        new = int(np.count_nonzero(vol[idx] == 0))
        if count + new >= target_count:
            # Stop at whichever of (without, with) this sphere is closer to the target fraction.
            if (count + new) - target_count <= target_count - count:
                vol[idx] = 1
                centres = np.vstack([centres, c])
            return vol, centres
        vol[idx] = 1
        count += new
        centres = np.vstack([centres, c])
    kind = "overlapping" if overlap else "non-overlapping"
    raise ValueError(f"field 'volume_fraction': could not reach {target} with {kind} spheres of radius {radius} "
                     f"in {shape} after {max_attempts} candidates "
                     f"(reached {count / n_voxels:.4f}; random sequential addition jams near 0.38): lower it, "
                     f"lower min_gap, or set overlap=True")


def sphere_volumes(n: int, shape: Sequence[int] | int = (32, 32, 32), radius: float = 4.0,
                   volume_fraction: float = 0.2, *, overlap: bool = False, min_gap: float = 0.0,
                   start: int = 0, rng_seed: int | None = None) -> SphereVolumes:
    """Periodic two-phase volumes of spherical inclusions (seed 001 §4).

    Parameters
    ----------
    n : int
        Number of volumes.
    shape : 3 ints or int
        Grid (X, Y, Z) in voxels; paper: 32³.
    radius : float
        Sphere radius in voxels; paper: 4.  A voxel is inside when its centre is within ``radius``.
    volume_fraction : float
        Target inclusion fraction in (0, 1); paper: 0.2.
    overlap : bool
        False (default): non-overlapping spheres by random sequential addition.  True: Boolean model.
    min_gap : float
        Without overlap, centres are more than ``2 radius + min_gap`` voxels apart (minimum image), so
        spheres never share a voxel; with ``min_gap >= 1`` they do not touch face to face either.
    start : int
        Index of the first volume: volume i uses the random stream ``(rng_seed, start + i)``, so shards
        ``start = 0, k, 2k, ...`` together equal one call with ``start = 0``.
    rng_seed : int or None
        Seed; None draws fresh entropy (recorded in ``attrs['seed_entropy']``).

    Returns
    -------
    SphereVolumes
        ``volumes`` (n, X, Y, Z) uint8, ``volume_fractions`` (n,), ``centres``, ``attrs``.

    Raises
    ------
    ValueError
        Bad parameter, or the target fraction cannot be reached (RSA jamming).
    """
    n = positive_int(n, "'n'")
    shape = _shape3(shape)
    try:
        radius = float(radius)
    except (TypeError, ValueError):
        radius = math.nan
    if not radius > 0 or not math.isfinite(radius):
        raise ValueError(f"field 'radius': expected a positive number of voxels, got {radius!r}")
    if min(shape) <= 2 * radius + 1:
        raise ValueError(f"field 'shape': expected every edge > 2 radius + 1 = {2 * radius + 1} voxels so a sphere "
                         f"does not wrap onto itself, got {shape}")
    target = _fraction(volume_fraction)
    if not isinstance(min_gap, int | float) or isinstance(min_gap, bool) or not min_gap >= 0:
        raise ValueError(f"field 'min_gap': expected a non-negative number of voxels, got {min_gap!r}")
    if isinstance(start, bool) or not isinstance(start, int | np.integer) or start < 0:
        raise ValueError(f"field 'start': expected a non-negative int, got {start!r}")
    seq = _seed_sequence(rng_seed)

    volumes = np.empty((n, *shape), dtype=np.uint8)
    centres = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(int(start) + i,)))
        volumes[i], c = _one_sphere_volume(rng, shape, radius, target, bool(overlap), 2 * radius + float(min_gap))
        centres.append(c)
    fractions = volumes.reshape(n, -1).mean(axis=1, dtype=np.float64)
    attrs = {"generator": "micropipe.ve.twophase.sphere_volumes",
             "params": {"shape": list(shape), "radius": radius, "volume_fraction": target, "overlap": bool(overlap),
                        "min_gap": float(min_gap), "start": int(start), "n": n},
             "rng_seed": rng_seed, "seed_entropy": str(seq.entropy),
             "achieved_volume_fraction_mean": float(fractions.mean()),
             "achieved_volume_fraction_min": float(fractions.min()),
             "achieved_volume_fraction_max": float(fractions.max())}
    log.info("sphere_volumes: %d x %s, R=%g, target %.4f, achieved %.4f (min %.4f, max %.4f)", n, shape, radius,
             target, fractions.mean(), fractions.min(), fractions.max())
    return SphereVolumes(volumes=volumes, volume_fractions=fractions, centres=centres, attrs=attrs)


# --------------------------------------------------------------------------------------------------
# user volumes and Latin-hypercube sub-volumes
# --------------------------------------------------------------------------------------------------


def binarize(volume: Any, *, threshold: float | None = None, source: str = "volume") -> np.ndarray:
    """A 3D two-phase indicator (X, Y, Z) uint8 from a phase array or, with ``threshold``, a grey-value image.

    Parameters
    ----------
    volume : array_like, shape (X, Y, Z)
        Phase indices {0, 1} (bool or numbers), or grey values when ``threshold`` is given.
    threshold : float, optional
        Voxels with value > ``threshold`` become phase 1, the rest phase 0.
    source : str
        Name used in error messages (file name or URI).

    Raises
    ------
    ValueError
        Not 3D, NaN/inf, values other than 0 and 1 without ``threshold``, or one phase only.
    """
    a = np.asarray(volume)
    if a.ndim != 3 or a.dtype.kind not in "biuf":
        raise ValueError(f"{source}: field 'volume': expected a real array of shape (X, Y, Z), got {a.dtype} "
                         f"{a.shape}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"{source}: field 'volume': expected finite values, got NaN or inf")
    if threshold is not None:
        out = (a > float(threshold)).astype(np.uint8)
    else:
        values = np.unique(a)
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
            raise ValueError(f"{source}: field 'volume': expected a binary phase array with values 0 and 1, got "
                             f"{len(values)} distinct values ({shown}); pass threshold= to binarize grey values")
        out = a.astype(np.uint8)
    fraction = float(out.mean())
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{source}: field 'volume': expected both phases present (phase-1 fraction in (0, 1)), "
                         f"got {fraction}")
    return out


def load_two_phase(source: str | os.PathLike[str], *, threshold: float | None = None) -> np.ndarray:
    """Read a two-phase volume (X, Y, Z) uint8 from a path or ``s3://``/``minio://`` URI.

    Any format :func:`micropipe.ve.io.load_phase_array` reads (.dream3d, .npy, .npz, .h5, .tif); see
    :func:`binarize` for ``threshold`` and the checks.
    """
    from micropipe.store import local_copy
    from micropipe.ve.io import load_phase_array

    with local_copy(source) as path:
        a = load_phase_array(path)
    return binarize(a, threshold=threshold, source=str(source))


@dataclass(frozen=True)
class SubVolumes:
    """Sub-volumes cut from one large volume.

    Attributes
    ----------
    volumes : numpy.ndarray, shape (n, s_x, s_y, s_z), uint8
        The sub-volumes, phase 1 = 1.
    corners : numpy.ndarray, shape (n, 3), int64
        Lower corner (voxel index) of each sub-volume in the large volume.
    samples : numpy.ndarray, shape (n, 3)
        The Latin-hypercube points in [0, 1)³; ``corners = floor(samples * (L - s + 1))`` per axis.
    attrs : dict
        Source, parameters, seed and the phase-1 fractions of the large volume and the sub-volumes.
    """

    volumes: np.ndarray
    corners: np.ndarray
    samples: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


def latin_hypercube_subvolumes(volume: Any, n: int, size: int | Sequence[int] = 64, *,
                               threshold: float | None = None, rng_seed: int | None = None) -> SubVolumes:
    """Cut ``n`` sub-volumes at Latin-hypercube positions from one large two-phase volume (seed 001 §5).

    Parameters
    ----------
    volume : array_like, shape (X, Y, Z), or str / os.PathLike
        The large volume, or a path / ``s3://`` URI read by :func:`load_two_phase`.  Not periodic: every
        sub-volume lies inside it.
    n : int
        Number of sub-volumes; paper: 1000.
    size : int or 3 ints
        Sub-volume edge(s) in voxels; paper: 64.
    threshold : float, optional
        Binarize grey values (> threshold is phase 1); without it the volume must hold only 0 and 1.
    rng_seed : int or None
        Seed of the Latin hypercube.

    Returns
    -------
    SubVolumes
        ``volumes`` (n, *size) uint8, ``corners`` (n, 3), ``samples`` (n, 3), ``attrs``.

    Raises
    ------
    ValueError
        Sub-volume larger than the volume, non-binary volume without ``threshold``, one phase only.
    """
    from scipy.stats import qmc

    n = positive_int(n, "'n'")
    sub = _shape3(size, "size")
    source = str(volume) if isinstance(volume, str | os.PathLike) else "volume"
    if isinstance(volume, str | os.PathLike):
        big = load_two_phase(volume, threshold=threshold)
    else:
        big = binarize(volume, threshold=threshold)
    if any(s > d for s, d in zip(sub, big.shape, strict=True)):
        raise ValueError(f"{source}: field 'size': sub-volume {sub} does not fit in the volume {big.shape}; expected "
                         f"every edge <= the volume's")
    seq = _seed_sequence(rng_seed)
    samples = qmc.LatinHypercube(d=3, rng=np.random.default_rng(seq)).random(n)
    span = np.asarray(big.shape) - np.asarray(sub) + 1  # admissible corners per axis: 0 .. L - s
    corners = np.minimum(np.floor(samples * span).astype(np.int64), span - 1)
    volumes = np.stack([big[x:x + sub[0], y:y + sub[1], z:z + sub[2]] for x, y, z in corners])
    fractions = volumes.reshape(n, -1).mean(axis=1, dtype=np.float64)
    attrs = {"generator": "micropipe.ve.twophase.latin_hypercube_subvolumes", "source": source,
             "params": {"n": n, "size": list(sub), "threshold": threshold, "volume_shape": list(big.shape)},
             "rng_seed": rng_seed, "seed_entropy": str(seq.entropy),
             "volume_fraction_source": float(big.mean(dtype=np.float64)),
             "volume_fraction_mean": float(fractions.mean()),
             "volume_fraction_min": float(fractions.min()), "volume_fraction_max": float(fractions.max())}
    if span.min() < n:
        log.warning("latin_hypercube_subvolumes: %d samples but only %s corner positions per axis; strata are "
                    "narrower than a voxel and corners repeat", n, span.tolist())
    log.info("latin_hypercube_subvolumes: %d x %s from %s %s, p1 %.4f (source %.4f)", n, sub, source, big.shape,
             fractions.mean(), attrs["volume_fraction_source"])
    return SubVolumes(volumes=volumes, corners=corners, samples=samples, attrs=attrs)


# --------------------------------------------------------------------------------------------------
# a synthetic stand-in for a µCT scan
# --------------------------------------------------------------------------------------------------


def synthetic_large_volume(shape: Sequence[int] | int = (128, 128, 128), *, volume_fraction: float = 0.25,
                           correlation_length: Sequence[float] = (6.0, 2.0, 2.0),
                           rng_seed: int | None = 0) -> np.ndarray:
    """A µCT-like binary two-phase volume: thresholded, Gaussian-filtered white noise.

    Stands in for the WPC scan of seed 001 §5 in tests and the small preset: elongated inclusions
    (fibre-like along x with the default anisotropic ``correlation_length``) at an exact volume fraction.

    Parameters
    ----------
    shape : 3 ints or int
        Grid (X, Y, Z) in voxels.
    volume_fraction : float
        Inclusion fraction in (0, 1), met to within one voxel (threshold at the quantile).
    correlation_length : 3 floats
        Standard deviations of the Gaussian filter along x, y, z in voxels (periodic filtering).
    rng_seed : int or None
        Seed of the noise; the same seed gives the same bytes.

    Returns
    -------
    volume : numpy.ndarray, shape (X, Y, Z), uint8
        1 = inclusion, 0 = matrix.
    """
    from scipy import ndimage

    shape = _shape3(shape)
    target = _fraction(volume_fraction)
    sigma = tuple(float(s) for s in np.asarray(correlation_length, dtype=np.float64).reshape(-1))
    if len(sigma) != 3 or not all(math.isfinite(s) and s > 0 for s in sigma):
        raise ValueError(f"field 'correlation_length': expected 3 positive voxel lengths, got {correlation_length!r}")
    rng = np.random.default_rng(_seed_sequence(rng_seed))
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    k = int(round(target * field_.size))
    if not 0 < k < field_.size:
        raise ValueError(f"field 'volume_fraction': {target} leaves one phase empty on a grid of {shape}")
    # The k largest values become phase 1: an exact voxel count, independent of float ties in a quantile.
    out = np.zeros(field_.size, dtype=np.uint8)
    out[np.argpartition(field_, field_.size - k, axis=None)[field_.size - k:]] = 1
    return out.reshape(shape)
