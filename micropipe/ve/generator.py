"""Built-in synthetic polycrystal generator: the micropipe stand-in for DREAM.3D's synthetic-microstructure step.

Method (seed 003 §2.1; DREAM.3D "StatsGenerator" + "Pack Primary Phases" in spirit)
-------------------------------------------------------------------------------------
1. **Grain sizes.** Equivalent-sphere diameters (ESD) are drawn from a log-normal distribution,
   ``ln D ~ N(mu, sigma)``, truncated at ``mu - esd_min_cutoff * sigma`` and
   ``mu + esd_max_cutoff * sigma`` (DREAM.3D's min/max cut-offs, in sigmas), until the sphere volumes
   fill the box, as DREAM.3D packs features until the volume is full. The grain that crosses the box
   volume is kept if that leaves the total closer to the box volume. The target volumes are then
   scaled to sum exactly to the box volume.
2. **Seeds.** One seed per grain, uniformly random in the periodic box (``damask.seeds.from_random``).
3. **Tessellation.** A periodic Laguerre (power) tessellation, ``damask.GeomGrid.from_Laguerre_tessellation``,
   built in a frame whose axes are divided by the volume-preserving scale factors
   ``s = axis_ratio / prod(axis_ratio)**(1/3)``: statistically equiaxed cells in that frame are
   elongated by ``axis_ratio`` in voxel space.
4. **Size fitting.** The Laguerre weights (power-distance offsets, length²) start at ``r_target**2`` and
   are iterated, ``w_i += ETA * (r_target_i**2 - r_measured_i**2)`` with r the equivalent-sphere
   radius of the cell's voxel volume. A cell that vanished has ``r_measured = 0`` and grows back.
   The first :data:`N_LLOYD` iterations run on a grid coarsened up to 4x (the update is in physical
   units, so it carries over) and also move each seed to the periodic centroid of its cell (Lloyd
   relaxation), which makes the cells compact and equiaxed (about 14 neighbours on average), closer
   to packed DREAM.3D features than a Poisson-Voronoi structure. Then weight-only iterations on the
   coarse grid and on the full grid, each stage stopping once the rms relative volume error is below
   :data:`RMS_TOL` (typically 0.5-2 % at the end; the mean ESD is then good to far better than 1 %).
5. **Labels and orientations.** Grains are renumbered 0 ... G-1 in seed order, empty cells dropped;
   one orientation per grain from :func:`micropipe.ve.texture.sample_orientations`.
6. **Second phase.** With ``second_phase_fraction > 0``, grains taken in random order join phase 1
   whenever that brings the phase-1 volume fraction closer to the target.

Random streams: the seed of :func:`generate` is split (``numpy.random.SeedSequence.spawn``) into
independent streams for sizes, positions, orientations and phases, so for one seed a textured and a
random VE share the same grain structure.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import damask
import numpy as np
from scipy import special

from micropipe.crystal import LATTICES
from micropipe.ve import texture as tex
from micropipe.ve.volume import VolumeElement

log = logging.getLogger(__name__)

GENERATOR_NAME = "micropipe.laguerre"

MORPHOLOGIES: dict[str, dict[str, Any]] = {
    "equiaxed": {"esd_mean": 5.78},
    "large_grains": {"esd_mean": 12.24},
    "small_grains": {"esd_mean": 2.73},
    "elongated": {"esd_mean": 9.54, "axis_ratio": (2, 1, 1)},
}
"""Seed 003 table 1 and §2.1.2 presets; all with sigma 0.1 and 0.25 length units per voxel (64³ voxels).

In 64³: equiaxed ~39 grains, large_grains ~4, small_grains ~373, elongated ~9 grains whose long axis
(1.59 x 38 voxels) nearly reaches around the periodic box.
"""

ETA = 1.5
"""Weight-update gain. Growing w_i by dw moves a face at distance ~r by dw / (4 r), i.e. r² by ~dw / 2;
the neighbours shrink at the same time, so gains of 2 and more oscillate."""
N_LLOYD = 12
"""Iterations on the coarse grid that also move the seeds to their cell centroids."""
N_COARSE = 8
"""Further weight-only iterations on the coarse grid (fewer if converged)."""
N_FINE = 4
"""Weight-only iterations on the full grid (fewer if converged)."""
RMS_TOL = 0.01
"""Stop a weight-only stage when the rms relative volume error is below this."""
COARSE_MIN_VOXELS = 50.0
"""Coarsen the grid only while the mean grain keeps at least this many coarse voxels."""


def _fail(field: str, value: Any, expected: str) -> None:
    raise ValueError(f"generator config: {field} must be {expected}, got {value!r}")


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool):
        _fail(field, value, "a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        _fail(field, value, "a number")
    if math.isnan(v):
        _fail(field, value, "a number (not NaN)")
    return v


def _triple(field: str, value: Any, kind: type) -> tuple:
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        value = (value,) * 3
    try:
        items = tuple(value)
    except TypeError:
        _fail(field, value, f"one or three {kind.__name__}s")
    if len(items) != 3:
        _fail(field, value, f"one or three {kind.__name__}s (x, y, z)")
    if kind is int:
        # KFP passes dict parameters through protobuf Struct, where every number is a double: accept 16.0
        if not all(not isinstance(i, bool) and (isinstance(i, int | np.integer)
                                                or (isinstance(i, float | np.floating) and float(i).is_integer()))
                   for i in items):
            _fail(field, value, "integers (voxels along x, y, z)")
        return tuple(int(i) for i in items)
    return tuple(_number(field, i) for i in items)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Morphology and texture statistics of one family of VEs.

    Attributes
    ----------
    cells : tuple of 3 int
        Voxels along x, y, z (an int gives a cube). Seed 003: 64³.
    spacing : float
        Voxel edge length in length units (seed 003: 0.25 units per voxel).
    esd_mean : float
        Mean equivalent-sphere diameter (ESD) in length units: DREAM.3D's "Mean feature ESD".
        DREAM.3D's StatsGenerator stores the log-normal parameters (Mu, Sigma) of ln(ESD) and shows
        ``ESD = exp(Mu + Sigma**2 / 2)``, the mean of the (untruncated) log-normal
        (``StatsGenFeatureSizeWidget.cpp``); here ``mu = ln(esd_mean) - esd_sigma**2 / 2`` accordingly.
        Seed 003: 5.78 → 23.1 voxels, about 40 grains in 64³.
    esd_sigma : float
        Standard deviation of ln(ESD), >= 0 (DREAM.3D "Sigma"; seed 003: 0.1).
    esd_min_cutoff, esd_max_cutoff : float
        DREAM.3D cut-offs in sigmas: ESDs lie in ``[exp(mu - min * sigma), exp(mu + max * sigma)]``
        (DREAM.3D ``StatsGen::ComputeNumberOfBins``).
    axis_ratio : tuple of 3 float
        Relative grain extents along x, y, z: (2, 1, 1) elongates grains along x, any permutation
        chooses the axis. Grain volumes (hence ESDs) are unchanged.
    lattice : {'cF', 'cI', 'hP'}
        Bravais lattice; sets the fundamental zone of the orientations.
    texture : {'random', 'brass', 'copper', 'cube', 'goss'}
        Orientation distribution, see :mod:`micropipe.ve.texture`.
    spread_deg : float
        Scatter about an ideal texture component in degrees.
    texture_sampling : {'spherical', 'euler'}
        How the scatter is drawn, see :func:`micropipe.ve.texture.sample_orientations`.
    second_phase_fraction : float
        Target volume fraction of phase 1 in [0, 1); 0 gives single-phase VEs.
    """

    cells: tuple[int, int, int] = (64, 64, 64)
    spacing: float = 0.25
    esd_mean: float = 5.78
    esd_sigma: float = 0.1
    esd_min_cutoff: float = 5.0
    esd_max_cutoff: float = 5.0
    axis_ratio: tuple[float, float, float] = (1.0, 1.0, 1.0)
    lattice: str = "cF"
    texture: str = "random"
    spread_deg: float = 2.0
    texture_sampling: str = "spherical"
    second_phase_fraction: float = 0.0

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)
        put("cells", _triple("cells", self.cells, int))
        if min(self.cells) < 1:
            _fail("cells", self.cells, "positive integers (voxels along x, y, z)")
        for name in ("spacing", "esd_mean"):
            v = _number(name, getattr(self, name))
            if not (v > 0 and math.isfinite(v)):
                _fail(name, getattr(self, name), "a finite number > 0 (length units)")
            put(name, v)
        v = _number("esd_sigma", self.esd_sigma)
        if not (v >= 0 and math.isfinite(v)):
            _fail("esd_sigma", self.esd_sigma, "a finite number >= 0 (standard deviation of ln ESD)")
        put("esd_sigma", v)
        for name in ("esd_min_cutoff", "esd_max_cutoff"):
            v = _number(name, getattr(self, name))
            if not v > 0:
                _fail(name, getattr(self, name), "a number > 0 (cut-off in sigmas)")
            put(name, v)
        ratio = _triple("axis_ratio", self.axis_ratio, float)
        if not all(r > 0 and math.isfinite(r) for r in ratio):
            _fail("axis_ratio", self.axis_ratio, "three finite numbers > 0 (relative extents along x, y, z)")
        put("axis_ratio", ratio)
        if self.lattice not in LATTICES:
            _fail("lattice", self.lattice, f"one of {', '.join(LATTICES)}")
        if self.texture not in tex.TEXTURE_NAMES:
            _fail("texture", self.texture, f"one of {', '.join(tex.TEXTURE_NAMES)}")
        v = _number("spread_deg", self.spread_deg)
        if not (v >= 0 and math.isfinite(v)):
            _fail("spread_deg", self.spread_deg, "a finite number >= 0 (degrees)")
        put("spread_deg", v)
        if self.texture_sampling not in tex.SAMPLINGS:
            _fail("texture_sampling", self.texture_sampling, f"one of {', '.join(tex.SAMPLINGS)}")
        v = _number("second_phase_fraction", self.second_phase_fraction)
        if not 0.0 <= v < 1.0:
            _fail("second_phase_fraction", self.second_phase_fraction, "a volume fraction in [0, 1)")
        put("second_phase_fraction", v)
        if self.expected_grain_voxels < 1.0:
            raise ValueError(
                f"generator config: esd_mean={self.esd_mean} (esd_sigma={self.esd_sigma}) at "
                f"spacing={self.spacing} gives an expected grain volume of {self.expected_grain_voxels:.3g} "
                f"voxels (< 1): more grains than voxels; increase esd_mean or decrease spacing")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GeneratorConfig:
        """Build and validate a config from plain data (a preset YAML section, a KFP parameter).

        A ``morphology`` key (one of :data:`MORPHOLOGIES`) fills in defaults; explicit keys win.

        Raises
        ------
        ValueError
            Unknown key or morphology, or a field out of range; the message names the field,
            the bad value and what was expected.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"generator config: expected a mapping of fields, got {type(d).__name__}")
        d = dict(d)
        fields = [f.name for f in dataclasses.fields(cls)]
        morphology = d.pop("morphology", None)
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"generator config: unknown field(s) {', '.join(map(repr, unknown))}, "
                             f"expected some of morphology, {', '.join(fields)}")
        if morphology is not None:
            if morphology not in MORPHOLOGIES:
                _fail("morphology", morphology, f"one of {', '.join(MORPHOLOGIES)}")
            d = {**MORPHOLOGIES[morphology], **d}
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; ``GeneratorConfig.from_dict(c.to_dict()) == c``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @property
    def esd_mu(self) -> float:
        """Location of the log-normal, mean of ln(ESD / length unit)."""
        return math.log(self.esd_mean) - 0.5 * self.esd_sigma**2

    @property
    def esd_bounds(self) -> tuple[float, float]:
        """Smallest and largest ESD in length units (the cut-offs)."""
        return (math.exp(self.esd_mu - self.esd_min_cutoff * self.esd_sigma),
                math.exp(self.esd_mu + self.esd_max_cutoff * self.esd_sigma))

    @property
    def size(self) -> np.ndarray:
        """Box edge lengths in length units, shape (3,)."""
        return np.asarray(self.cells, dtype=float) * self.spacing

    @property
    def expected_grain_voxels(self) -> float:
        """Mean grain volume in voxels, ``pi/6 E[D**3] / spacing**3`` of the untruncated log-normal."""
        mean_d3 = math.exp(3.0 * self.esd_mu + 4.5 * self.esd_sigma**2)
        return math.pi / 6.0 * mean_d3 / self.spacing**3

    @property
    def expected_grains(self) -> float:
        """Box volume over mean grain volume."""
        return float(np.prod(self.cells)) / self.expected_grain_voxels


def _check_seed(seed: Any, name: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def ve_seed(seed: int, index: int) -> int:
    """Seed of VE ``index`` of a dataset made with ``seed``: independent of sharding.

    ``numpy.random.SeedSequence(seed, spawn_key=(index,))``, 63 bits (fits int64 attributes;
    100,000 VEs collide with probability ~5e-10).
    """
    seq = np.random.SeedSequence(_check_seed(seed, "seed"), spawn_key=(_check_seed(index, "index"),))
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_esd(config: GeneratorConfig, box_volume: float,
               rng_seed: int | np.random.SeedSequence | None = None) -> np.ndarray:
    """Draw truncated log-normal ESDs until their sphere volumes fill ``box_volume``.

    Parameters
    ----------
    config : GeneratorConfig
        ESD distribution (esd_mean, esd_sigma, cut-offs).
    box_volume : float
        Volume to fill in length units³.
    rng_seed : int, SeedSequence or None
        Seed for ``numpy.random.default_rng``.

    Returns
    -------
    esd : numpy.ndarray of float64, shape (N,)
        Diameters in length units, N >= 1; the last one is kept only if that leaves
        ``sum(pi/6 esd**3)`` closer to ``box_volume``.
    """
    rng = np.random.default_rng(rng_seed)
    mu, sigma = config.esd_mu, config.esd_sigma
    u_lo, u_hi = special.ndtr(-config.esd_min_cutoff), special.ndtr(config.esd_max_cutoff)
    chunk = int(1.2 * box_volume / (config.expected_grain_voxels * config.spacing**3)) + 8
    parts: list[np.ndarray] = []
    total = 0.0
    while True:
        # inverse-CDF sampling of the truncated normal: exact, no rejection loop
        d = np.exp(mu + sigma * special.ndtri(rng.uniform(u_lo, u_hi, chunk)))
        filled = total + np.cumsum(np.pi / 6.0 * d**3)
        k = int(np.searchsorted(filled, box_volume))
        if k < chunk:
            before = filled[k - 1] if k > 0 else total
            n_take = k + 1 if filled[k] - box_volume <= box_volume - before else k
            parts.append(d[:n_take])
            break
        parts.append(d)
        total = filled[-1]
    esd = np.concatenate(parts)
    return esd if esd.size else d[:1]


def _scale_factors(axis_ratio: tuple[float, float, float]) -> np.ndarray:
    r = np.asarray(axis_ratio, dtype=float)
    return r / np.prod(r) ** (1.0 / 3.0)


def _coordinates(cells: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Cell-centre coordinates, shape (prod(cells), 3), ordered as damask orders the tessellation."""
    return damask.grid_filters.coordinates0_point(cells, size).reshape(-1, 3)


def _tessellate(cells: np.ndarray, size: np.ndarray, seeds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Periodic Laguerre cell index of every voxel, shape (X, Y, Z)."""
    grid = damask.GeomGrid.from_Laguerre_tessellation(cells, size, seeds, weights, periodic=True)
    return grid.material


def _centroids(labels: np.ndarray, coords: np.ndarray, seeds: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Periodic centroids of the cells, unwrapped about their seeds; empty cells keep their seed."""
    n = len(seeds)
    lab = labels.ravel()
    d = coords - seeds[lab]
    d -= size * np.round(d / size)
    counts = np.bincount(lab, minlength=n)
    shift = np.stack([np.bincount(lab, weights=d[:, k], minlength=n) for k in range(3)], axis=-1)
    shift /= np.maximum(counts, 1)[:, None]
    moved = np.mod(seeds + shift, size)
    # np.mod(-tiny, L) rounds to L, which the periodic KDTree rejects
    return np.where(moved >= size, 0.0, moved)


def fit_laguerre(cells: np.ndarray, size: np.ndarray, seeds: np.ndarray, volumes: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Periodic Laguerre tessellation whose cells have prescribed volumes (see the module docstring).

    Parameters
    ----------
    cells : numpy.ndarray of int, shape (3,)
        Voxels along x, y, z of the final grid.
    size : numpy.ndarray of float, shape (3,)
        Box edge lengths in length units (of the tessellation frame).
    seeds : numpy.ndarray of float, shape (N, 3)
        Initial seed positions in length units inside ``[0, size)``.
    volumes : numpy.ndarray of float, shape (N,)
        Target cell volumes in length units³, summing to ``prod(size)``.

    Returns
    -------
    labels : numpy.ndarray of int, shape (X, Y, Z)
        Cell (seed) index of every voxel; cells may be empty.
    seeds : numpy.ndarray of float, shape (N, 3)
        Final seed positions.
    """
    cells = np.asarray(cells, dtype=int)
    size = np.asarray(size, dtype=float)
    seeds = np.array(seeds, dtype=float)
    r2_target = (3.0 * volumes / (4.0 * np.pi)) ** (2.0 / 3.0)
    weights = r2_target.copy()
    n = len(seeds)
    if n == 1:
        return np.zeros(cells, dtype=int), seeds

    voxel = np.prod(size / cells)
    factor = 1
    while factor < 4 and volumes.mean() / (voxel * (2 * factor) ** 3) >= COARSE_MIN_VOXELS \
            and np.all(cells // (2 * factor) >= 8):
        factor *= 2
    coarse = np.maximum(np.round(cells / factor).astype(int), 1)
    # (grid, iterations, move seeds to centroids, stop early when converged)
    schedule = ([(coarse, N_LLOYD, True, False), (coarse, N_COARSE, False, True), (cells, N_FINE, False, True)]
                if factor > 1 else [(cells, N_LLOYD, True, False), (cells, N_COARSE + N_FINE, False, True)])

    labels = np.zeros(cells, dtype=int)
    for step, (grid_cells, n_iter, lloyd, early_stop) in enumerate(schedule):
        coords = _coordinates(grid_cells, size) if lloyd else None
        v_voxel = np.prod(size / grid_cells)
        last = step == len(schedule) - 1
        for it in range(n_iter):
            labels = _tessellate(grid_cells, size, seeds, weights)
            measured = np.bincount(labels.ravel(), minlength=n) * v_voxel
            rms = float(np.sqrt(np.mean((measured / volumes - 1.0) ** 2)))
            log.debug("Laguerre fit step %d (%s cells) iteration %d: rms volume error %.4f, %d empty",
                      step, grid_cells.tolist(), it, rms, int(np.sum(measured == 0)))
            if (early_stop and rms < RMS_TOL) or (last and it == n_iter - 1):
                break
            if lloyd:
                seeds = _centroids(labels, coords, seeds, size)
            r2 = (3.0 * measured / (4.0 * np.pi)) ** (2.0 / 3.0)
            weights = weights + ETA * (r2_target - r2)
    return labels, seeds


def _assign_phases(volumes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Phase 0/1 per grain with the phase-1 volume fraction as close to ``fraction`` as a greedy pass gets."""
    phase = np.zeros(len(volumes), dtype=np.int32)
    if fraction <= 0.0:
        return phase
    total = float(volumes.sum())
    f = 0.0
    for g in rng.permutation(len(volumes)):
        f_new = f + volumes[g] / total
        if abs(f_new - fraction) < abs(f - fraction):
            phase[g] = 1
            f = f_new
    return phase


def generate(config: GeneratorConfig, rng_seed: int | None = None) -> VolumeElement:
    """Generate one periodic polycrystalline VE (method in the module docstring).

    Parameters
    ----------
    config : GeneratorConfig
        Morphology and texture statistics.
    rng_seed : int or None
        Non-negative seed; same config and seed give byte-identical ``grain_ids`` and ``euler``.
        None draws a fresh seed, which is recorded in ``attrs['seed']``.

    Returns
    -------
    ve : VolumeElement
        ``grain_ids`` int32 (X, Y, Z) with every grain 0 ... G-1 present, ``euler`` (G, 3) Bunge radians
        in the fundamental zone, ``phase`` (G,), ``phase_ids`` uint8 (X, Y, Z) if two-phase;
        ``attrs`` = {'generator', 'params', 'seed'}.
    """
    if not isinstance(config, GeneratorConfig):
        raise ValueError(f"config must be a GeneratorConfig, got {type(config).__name__}")
    if rng_seed is None:
        rng_seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
    seed = _check_seed(rng_seed, "rng_seed")
    seq_size, seq_seeds, seq_orientation, seq_phase = np.random.SeedSequence(seed).spawn(4)

    cells = np.asarray(config.cells)
    size = config.size
    box = float(np.prod(size))
    esd = sample_esd(config, box, rng_seed=seq_size)
    volumes = np.pi / 6.0 * esd**3
    volumes *= box / volumes.sum()

    # tessellate in a frame shrunk by the scale factors (det 1): isotropic cells there are elongated here
    size_frame = size / _scale_factors(config.axis_ratio)
    seeds = damask.seeds.from_random(size_frame, len(volumes), rng_seed=seq_seeds)
    labels, _ = fit_laguerre(cells, size_frame, seeds, volumes)

    present, grain_ids = np.unique(labels, return_inverse=True)
    grain_ids = grain_ids.reshape(labels.shape).astype(np.int32)
    n_grains = len(present)
    if n_grains < len(volumes):
        log.debug("%d of %d Laguerre cells vanished on the voxel grid", len(volumes) - n_grains, len(volumes))

    euler = tex.sample_orientations(n_grains, config.texture, config.lattice, config.spread_deg,
                                    config.texture_sampling, rng_seed=seq_orientation)
    grain_voxels = np.bincount(grain_ids.ravel(), minlength=n_grains).astype(float)
    phase = _assign_phases(grain_voxels, config.second_phase_fraction, np.random.default_rng(seq_phase))
    phase_ids = phase[grain_ids].astype(np.uint8) if config.second_phase_fraction > 0 else None

    return VolumeElement(grain_ids=grain_ids, euler=euler, phase=phase,
                         spacing=np.full(3, config.spacing), lattice=config.lattice, phase_ids=phase_ids,
                         attrs={"generator": GENERATOR_NAME, "params": config.to_dict(), "seed": seed})


def generate_many(config: GeneratorConfig, seed: int, indices: Iterable[int]
                  ) -> Iterator[tuple[int, VolumeElement]]:
    """VEs ``indices`` of the dataset made with ``seed``: yields ``(index, generate(config, ve_seed(seed, index)))``."""
    _check_seed(seed, "seed")
    for index in indices:
        yield int(index), generate(config, ve_seed(seed, index))
