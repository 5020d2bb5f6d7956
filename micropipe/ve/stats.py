"""Measured statistics of generated VEs (grain sizes, shapes, textures, misorientations) against their targets.

Everything returns plain dicts of numpy arrays or, for :func:`summarize`, JSON types, to feed reports.
Lengths are in the VE's length units (``ve.spacing`` per voxel), angles in degrees.

Grains cross the periodic box faces. Per grain and axis the voxel coordinates are unwrapped by cutting
the circle of positions at the largest gap in the grain's projection on that axis; a grain whose
projection covers the whole axis (it spans the box) is flagged in ``spans_box``, and its extent along
that axis is not meaningful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import damask
import numpy as np
from scipy import special

from micropipe.ve import texture as tex
from micropipe.ve.generator import GeneratorConfig
from micropipe.ve.volume import EULER_NORM, VolumeElement

MACKENZIE_SAMPLES = 200_000
"""Random pairs used for the Mackenzie reference in :func:`summarize`: the mean's standard error is < 0.03 deg
(cubic: 40.75 against Mackenzie's 40.74; 10,000 pairs gave 40.94), at 0.6 s."""


def _unwrap_offsets(labels: np.ndarray, x: np.ndarray, L: int, n_grains: int) -> tuple[np.ndarray, np.ndarray]:
    """Per grain: the position where its projection (voxel indices ``x`` in [0, L)) starts after the
    largest gap, and whether the projection covers the whole axis."""
    occupied = np.zeros((n_grains, L), dtype=bool)
    occupied[labels, x] = True
    doubled = np.concatenate([occupied, occupied], axis=1)
    idx = np.arange(2 * L)
    last_occupied = np.maximum.accumulate(np.where(doubled, idx, -1), axis=1)
    gap = (idx - last_occupied)[:, L:]  # length of the empty run ending at each bin of the second copy
    end = np.argmax(gap, axis=1)
    spans = gap.max(axis=1) == 0
    start = np.where(spans, 0, (end + 1) % L)
    return start, spans


def grain_statistics(ve: VolumeElement) -> dict[str, Any]:
    """Size and shape of every grain.

    Parameters
    ----------
    ve : VolumeElement
        Any VE (periodic box).

    Returns
    -------
    stats : dict
        ``volume_voxels`` (G,) int; ``esd`` (G,) equivalent-sphere diameter in length units;
        ``centroid`` (G, 3) in length units inside the box (voxel centres at (i + 0.5) * spacing);
        ``second_moment`` (G, 3, 3) covariance of the position in length units², with the voxel's own
        ``spacing**2 / 12`` added so it approximates the continuous body;
        ``extent_std`` (G, 3) square roots of its diagonal (lab x, y, z);
        ``axis_ratio`` (G, 3) ``extent_std`` normalised by its smallest entry (2:1:1 = elongated along x);
        ``semi_axes`` (G, 3) semi-axes of the equivalent ellipsoid, ``sqrt(5 * eigenvalue)``, largest first;
        ``principal_directions`` (G, 3, 3) unit vectors, column k belongs to ``semi_axes[:, k]``;
        ``principal_ratio`` (G, 3) ``semi_axes`` normalised by the smallest;
        ``spans_box`` (G, 3) bool, the grain's projection covers the whole axis;
        ``n_neighbours`` (G,) face-sharing neighbour grains (periodic).
    """
    g = np.asarray(ve.grain_ids)
    n = ve.N_grains
    spacing = np.asarray(ve.spacing, dtype=float)
    lab = g.ravel()
    counts = np.bincount(lab, minlength=n)
    voxel_volume = float(np.prod(spacing))
    esd = (6.0 / np.pi * counts * voxel_volume) ** (1.0 / 3.0)

    u = np.empty((lab.size, 3))
    spans = np.zeros((n, 3), dtype=bool)
    index = np.indices(g.shape).reshape(3, -1)
    for k, (x, L) in enumerate(zip(index, g.shape, strict=True)):
        start, spans[:, k] = _unwrap_offsets(lab, x, L, n)
        u[:, k] = (np.mod(x - start[lab], L) + start[lab] + 0.5) * spacing[k]

    safe = np.maximum(counts, 1).astype(float)
    mean = np.stack([np.bincount(lab, weights=u[:, k], minlength=n) for k in range(3)], axis=-1) / safe[:, None]
    d = u - mean[lab]
    cov = np.empty((n, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            cov[:, i, j] = cov[:, j, i] = np.bincount(lab, weights=d[:, i] * d[:, j], minlength=n) / safe
    cov[:, range(3), range(3)] += spacing**2 / 12.0

    eigval, eigvec = np.linalg.eigh(cov)
    semi_axes = np.sqrt(5.0 * np.clip(eigval[:, ::-1], 0.0, None))
    extent = np.sqrt(cov[:, range(3), range(3)])
    neighbours = neighbour_pairs(g)
    n_neighbours = np.bincount(neighbours.ravel(), minlength=n)
    return {
        "volume_voxels": counts,
        "esd": esd,
        "centroid": np.mod(mean, np.asarray(g.shape) * spacing),
        "second_moment": cov,
        "extent_std": extent,
        "axis_ratio": extent / extent.min(axis=1, keepdims=True),
        "semi_axes": semi_axes,
        "principal_directions": eigvec[:, :, ::-1],
        "principal_ratio": semi_axes / semi_axes[:, -1:],
        "spans_box": spans,
        "n_neighbours": n_neighbours,
    }


def neighbour_pairs(grain_ids: np.ndarray) -> np.ndarray:
    """Unique pairs of grains that share a voxel face, periodic in x, y, z.

    Parameters
    ----------
    grain_ids : numpy.ndarray of int, shape (X, Y, Z)

    Returns
    -------
    pairs : numpy.ndarray of int64, shape (P, 2)
        ``pairs[:, 0] < pairs[:, 1]``, sorted.
    """
    g = np.asarray(grain_ids).astype(np.int64)
    n = int(g.max()) + 1
    keys = []
    for axis in range(3):
        a, b = g, np.roll(g, -1, axis=axis)
        m = a != b
        lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
        keys.append(lo * n + hi)
    key = np.unique(np.concatenate(keys))
    return np.stack([key // n, key % n], axis=-1)


def mean_intercept_length(ve: VolumeElement) -> np.ndarray:
    """Mean linear intercept (grain-boundary spacing) along lines parallel to x, y and z.

    Total line length divided by the number of grain-boundary crossings, periodic; the classical
    metallographic grain size, robust for grains that span the box. For a structure stretched
    affinely by ``axis_ratio`` the three intercepts are in that ratio.

    Returns
    -------
    intercept : numpy.ndarray, shape (3,)
        Length units; inf along an axis without boundaries.
    """
    g = np.asarray(ve.grain_ids)
    crossings = np.array([np.count_nonzero(g != np.roll(g, -1, axis=k)) for k in range(3)], dtype=float)
    with np.errstate(divide="ignore"):
        return g.size * np.asarray(ve.spacing, dtype=float) / crossings


def misorientation_distribution(ve: VolumeElement) -> np.ndarray:
    """Disorientation angles between face-sharing grains (each pair once, not weighted by boundary area).

    Parameters
    ----------
    ve : VolumeElement
        All grains are taken to have the lattice ``ve.lattice``.

    Returns
    -------
    omega : numpy.ndarray, shape (P,)
        Disorientation angles in degrees, one per neighbouring pair of :func:`neighbour_pairs`.
    """
    pairs = neighbour_pairs(ve.grain_ids)
    if len(pairs) == 0:
        return np.zeros(0)
    return tex.misorientation_deg(ve.euler[pairs[:, 0]], ve.euler[pairs[:, 1]], ve.lattice)


def random_mdf_reference(lattice: str, n: int, rng_seed: int | None = None) -> np.ndarray:
    """Disorientation angles of ``n`` pairs of uniformly random orientations (the Mackenzie distribution).

    Parameters
    ----------
    lattice : {'cF', 'cI', 'hP'}
    n : int
        Number of pairs.
    rng_seed : int or None
        Seed for ``numpy.random.default_rng``.

    Returns
    -------
    omega : numpy.ndarray, shape (n,)
        Degrees; mean 40.7 for cubic symmetry (Mackenzie 1958).
    """
    euler = damask.Rotation.from_random(shape=(2, int(n)), rng_seed=np.random.default_rng(rng_seed)).as_Euler_angles()
    return tex.misorientation_deg(euler[0], euler[1], lattice)


def texture_statistics(ve: VolumeElement, texture: str, spread_deg: float) -> dict[str, Any]:
    """Misorientation of every grain to the ideal component of ``texture``.

    Parameters
    ----------
    ve : VolumeElement
    texture : {'brass', 'copper', 'cube', 'goss'}
        Ideal component, see :data:`micropipe.ve.texture.TEXTURES`.
    spread_deg : float
        Spread the VE was generated with, degrees.

    Returns
    -------
    stats : dict
        ``misorientation_deg`` (G,) symmetry-aware disorientation angle to the ideal;
        ``threshold_deg`` = 3 * spread; ``fraction_within`` fraction of grains within it;
        ``volume_fraction_within`` the same by volume; ``mean_misorientation_deg``.
    """
    if texture not in tex.TEXTURES:
        raise ValueError(f"texture: expected one of {', '.join(tex.TEXTURES)} (an ideal component), "
                         f"got {texture!r}")
    ideal = np.radians(tex.TEXTURES[texture])
    omega = tex.misorientation_deg(ve.euler, ideal, ve.lattice)
    threshold = 3.0 * float(spread_deg)
    within = omega <= threshold
    volume = np.bincount(np.asarray(ve.grain_ids).ravel(), minlength=ve.N_grains)
    return {
        "misorientation_deg": omega,
        "threshold_deg": threshold,
        "fraction_within": float(within.mean()),
        "volume_fraction_within": float(volume[within].sum() / volume.sum()),
        "mean_misorientation_deg": float(omega.mean()),
    }


def esd_pdf(config: GeneratorConfig, x: np.ndarray) -> np.ndarray:
    """Target ESD probability density: the log-normal of ``config`` truncated at its cut-offs, normalised.

    Parameters
    ----------
    config : GeneratorConfig
        ``esd_sigma`` must be > 0 (0 is a point mass at ``esd_mean``).
    x : numpy.ndarray, shape (...)
        ESD in length units.

    Returns
    -------
    pdf : numpy.ndarray, shape (...)
        Density in 1 / length unit; zero outside ``config.esd_bounds``.
    """
    if config.esd_sigma <= 0:
        raise ValueError(f"esd_sigma: {config.esd_sigma} gives a point mass at esd_mean={config.esd_mean}, "
                         f"not a density; expected esd_sigma > 0")
    x = np.asarray(x, dtype=float)
    mu, sigma = config.esd_mu, config.esd_sigma
    lo, hi = config.esd_bounds
    mass = special.ndtr(config.esd_max_cutoff) - special.ndtr(-config.esd_min_cutoff)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.log(x) - mu) / sigma
        pdf = np.exp(-0.5 * z**2) / (x * sigma * math.sqrt(2.0 * np.pi) * mass)
    return np.where((x >= lo) & (x <= hi), pdf, 0.0)


def _ratio(values: np.ndarray) -> list[float]:
    """Normalised by the smallest entry: (2, 1, 1) for grains twice as long along x."""
    return [float(v) for v in values / values.min()]


def measure(ve: VolumeElement, config: GeneratorConfig) -> dict[str, Any]:
    """Everything measured on one VE, once: the input of :func:`summarize` and of report figures.

    Returns
    -------
    measured : dict
        ``grains`` (:func:`grain_statistics`), ``mdf`` (:func:`misorientation_distribution`),
        ``intercept`` (:func:`mean_intercept_length`), ``texture`` (:func:`texture_statistics`,
        textured configs only), ``phase1_fraction`` (two-phase configs only).
    """
    out: dict[str, Any] = {"n_grains": ve.N_grains, "grains": grain_statistics(ve),
                           "mdf": misorientation_distribution(ve), "intercept": mean_intercept_length(ve)}
    if config.texture != "random":
        out["texture"] = texture_statistics(ve, config.texture, config.spread_deg)
    if config.second_phase_fraction > 0:
        out["phase1_fraction"] = float(np.mean(ve.phase_ids == 1)) if ve.phase_ids is not None else 0.0
    return out


def summarize(ves: Sequence[VolumeElement], config: GeneratorConfig,
              measured: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Statistics of a set of VEs against the targets of the config that made them (JSON types).

    Grain-level quantities are pooled over all VEs. Keys: ``n_ve``; ``grains`` per VE (mean, min, max,
    expected = box volume / mean target grain volume); ``esd`` (measured_mean, target_mean,
    relative_error) in length units; ``sigma_ln_esd`` (measured, target); ``axis_ratio``;
    ``mean_intercept_length`` (3,) in length units; ``neighbours_mean``; ``mdf``; ``texture`` for
    textured and ``second_phase_fraction`` for two-phase configs.

    - ``axis_ratio.measured``: mean extent (``extent_std``) along x, y, z over grains that do not span
      the box; None when every grain spans the box (seed 003's elongated preset in 64³ does: its grains
      are ~60 voxels long). ``axis_ratio.measured_intercept``: from the mean linear intercepts, which need
      no whole grains but are biased when grains reach around the box. Both, and ``axis_ratio.target``,
      are normalised by their smallest entry; for a structure stretched affinely by ``axis_ratio`` the
      measured values estimate the target.
    - ``mdf``: mean neighbour disorientation (deg), number of pairs, and ``random_reference_mean_deg``,
      the Mackenzie mean of random pairs sampled with a fixed seed.
    - ``texture``: ``fraction_within`` (grains pooled) 3 x spread of the ideal component, the smallest
      per-VE fraction ``min_fraction_within_per_ve``, ``mean_misorientation_deg``.
    - ``second_phase_fraction``: ``measured_mean`` phase-1 volume fraction over VEs and ``target``.
    """
    if len(ves) == 0:
        raise ValueError("summarize: expected at least one VE, got none")
    if measured is None:
        measured = [measure(ve, config) for ve in ves]
    grains = [m["grains"] for m in measured]
    n_grains = np.array([m["n_grains"] for m in measured])
    esd = np.concatenate([s["esd"] for s in grains])
    extent = np.concatenate([s["extent_std"] for s in grains])
    spans = np.concatenate([s["spans_box"] for s in grains]).any(axis=1)
    neighbours = np.concatenate([s["n_neighbours"] for s in grains])
    mdf = np.concatenate([m["mdf"] for m in measured])
    intercept = np.mean([m["intercept"] for m in measured], axis=0)
    out: dict[str, Any] = {
        "n_ve": len(ves),
        "grains": {"mean": float(n_grains.mean()), "min": int(n_grains.min()), "max": int(n_grains.max()),
                   "expected": float(config.expected_grains)},
        "esd": {"measured_mean": float(esd.mean()), "target_mean": config.esd_mean,
                "relative_error": float(esd.mean() / config.esd_mean - 1.0)},
        "sigma_ln_esd": {"measured": float(np.log(esd).std()), "target": config.esd_sigma},
        "axis_ratio": {"measured": _ratio(extent[~spans].mean(axis=0)) if np.any(~spans) else None,
                       "measured_intercept": _ratio(intercept),
                       "target": _ratio(np.asarray(config.axis_ratio)),
                       "grains_spanning_box": int(spans.sum())},
        "mean_intercept_length": [float(v) for v in intercept],
        "neighbours_mean": float(neighbours.mean()),
        "mdf": {"mean_deg": float(mdf.mean()) if mdf.size else None, "pairs": int(mdf.size),
                "random_reference_mean_deg": float(
                    random_mdf_reference(config.lattice, MACKENZIE_SAMPLES, rng_seed=0).mean())},
    }
    if config.texture != "random":
        tx = [m["texture"] for m in measured]
        omega = np.concatenate([t["misorientation_deg"] for t in tx])
        out["texture"] = {"name": config.texture, "threshold_deg": 3.0 * config.spread_deg,
                          "fraction_within": float(np.mean(omega <= 3.0 * config.spread_deg)),
                          "min_fraction_within_per_ve": float(min(t["fraction_within"] for t in tx)),
                          "mean_misorientation_deg": float(omega.mean())}
    if config.second_phase_fraction > 0:
        out["second_phase_fraction"] = {"measured_mean": float(np.mean([m["phase1_fraction"] for m in measured])),
                                        "target": config.second_phase_fraction}
    return out


TEXTURE_DESCRIPTORS = ("mean_phi1", "mean_Phi", "mean_phi2", "cos2_Phi", "schmid_max_z")
"""Per-VE texture descriptors kept beside each fingerprint, never fed to a network; volume averages over the
grains of: the three normalised Euler channels (what the VAE sees, averaged); cos^2 Phi, the alignment of the
crystal c axis ([001] for cubic lattices) with the load axis z; and the largest Schmid factor for tension along z
over the lattice's primary slip family (basal <a> for hP, {111}<110> for cF, {110}<111> for cI), which sets where
a grain yields. They say what a fingerprint encodes (:func:`micropipe.metrics.latent.fingerprint_probe`) and how
much of the CP response texture alone explains (:func:`micropipe.studies.cp_surrogate.surrogate.texture_reference`)."""

PRIMARY_SLIP_FAMILY = {"hP": [3], "cF": [12], "cI": [12]}
"""``N_sl`` that selects the first slip family of each lattice (DAMASK's order)."""


def texture_descriptors(grain_ids: np.ndarray, euler: np.ndarray, lattice: str) -> np.ndarray:
    """:data:`TEXTURE_DESCRIPTORS` of n VEs, float32 (n, 5).

    Parameters
    ----------
    grain_ids : array of int, shape (n, X, Y, Z)
        Grain of every voxel, 0-based.
    euler : numpy.ndarray, shape (n, G, 3)
        Fundamental-zone Bunge Euler angles per grain divided by (2 pi, pi, 2 pi) (rows past a VE's own grains
        are ignored).
    lattice : str
        ``cF``, ``cI`` or ``hP``.
    """
    import damask

    from micropipe.crystal.lattice import schmid_factors

    if lattice not in PRIMARY_SLIP_FAMILY:
        raise ValueError(f"lattice {lattice!r}: expected one of {sorted(PRIMARY_SLIP_FAMILY)}")
    n, G = euler.shape[:2]
    w = np.stack([np.bincount(np.asarray(g).ravel(), minlength=G)[:G] for g in grain_ids]).astype(float)
    w /= w.sum(axis=1, keepdims=True)
    radians = euler.astype(float) * EULER_NORM
    q = damask.Rotation.from_Euler_angles(radians.reshape(-1, 3)).quaternion.reshape(n, G, 4)
    # the basal <a> Schmid factor does not depend on c/a: the ideal ratio stands in for the material's
    c_a = np.sqrt(8.0 / 3.0) if lattice == "hP" else None
    m = np.abs(schmid_factors(q, lattice, N_sl=PRIMARY_SLIP_FAMILY[lattice], c_a=c_a)).max(axis=-1)
    per_grain = np.concatenate([euler.astype(float), np.cos(radians[..., 1:2]) ** 2, m[..., None]], axis=-1)
    return np.einsum("ng,ngk->nk", w, per_grain).astype(np.float32)
