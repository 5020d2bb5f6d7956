"""DREAM.3D backend: write a synthetic-microstructure pipeline, run ``PipelineRunner``, read the VE back.

Used by the ``dream3d`` image; everywhere else the built-in generator (:mod:`micropipe.ve.generator`)
is the default.  The pipeline follows DREAM.3D 6.5's example "(01) Single Cubic Phase Equiaxed"
(``ExamplePipelines/Synthetic/01_CubicSingleEquiaxed.json``):

    StatsGeneratorFilter -> InitializeSyntheticVolume -> EstablishShapeTypes -> PackPrimaryPhases
    -> FindNeighbors (also stores SurfaceFeatures) -> MatchCrystallography -> DataContainerWriter

Reproducibility: DREAM.3D 6.5 takes no user seed for packing or crystallography -- PackPrimaryPhases
seeds its generator with ``QDateTime::currentMSecsSinceEpoch()`` -- so two runs of the same pipeline
give different VEs.  ``rng_seed`` is recorded (pipeline name, VE attrs) but cannot make DREAM.3D's
output bit-reproducible; use the built-in generator where bytes must repeat.

Configuration: the built-in generator's :class:`~micropipe.ve.generator.GeneratorConfig` (or the same plain
dict, ``morphology`` presets included), validated there only.  This pipeline is single-phase with a
uniform ODF, so ``texture`` must be 'random' and ``second_phase_fraction`` 0 (:func:`check_supported`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import micropipe
from micropipe.backends import BackendUnavailable, find_executable, tail
from micropipe.ve import io
from micropipe.ve.generator import GeneratorConfig
from micropipe.ve.texture import reduce_to_fundamental_zone
from micropipe.ve.volume import VolumeElement

log = logging.getLogger(__name__)

RUNNER_ENV = "DREAM3D_PIPELINE_RUNNER"
"""Environment variable naming the PipelineRunner executable; wins over PATH."""
NOT_FOUND = "DREAM.3D PipelineRunner not found on PATH; use the built-in generator or the dream3d image"
GENERATOR_NAME = "dream3d.PipelineRunner"

PIPELINE_VERSION = 6  # SIMPL::PipelineVersionNumbers::CurrentVersion for DREAM.3D 6.x JSON pipelines
SYNTHETIC_FILTER_VERSION = "6.5.141"  # SyntheticBuilding/Statistics plugins of DREAM.3D 6.5
SIMPL_FILTER_VERSION = "1.2.675"  # SIMPL core filters (DataContainerWriter) of DREAM.3D 6.5
FILTER_UUIDS = {
    "StatsGeneratorFilter": "{f642e217-4722-5dd8-9df9-cee71e7b26ba}",
    "InitializeSyntheticVolume": "{c2ae366b-251f-5dbd-9d70-d790376c0c0d}",
    "EstablishShapeTypes": "{4edbbd35-a96b-5ff1-984a-153d733e2abb}",
    "PackPrimaryPhases": "{84305312-0d10-50ca-b89a-fda17a353cc9}",
    "FindNeighbors": "{97cf66f8-7a9b-5ec2-83eb-f8c4c8a17bac}",
    "MatchCrystallography": "{7bfb6e4a-6075-56da-8006-b262d99dff30}",
    "DataContainerWriter": "{3fcd4c43-9d75-5b86-aad4-4441bc914f37}",
}
"""SIMPL filter UUIDs (``Filter_Uuid``), the keys PipelineRunner 6.5 looks filters up by."""

STATS_DC = "StatsGeneratorDataContainer"
VOLUME_DC = "SyntheticVolumeDataContainer"
CELL_AM, FEATURE_AM, ENSEMBLE_AM = "CellData", "Grain Data", "CellEnsembleData"
SHAPE_ELLIPSOID = 0  # SIMPL ShapeType::Type::Ellipsoid; 999 is the dummy phase 0


def check_supported(config: GeneratorConfig | Mapping[str, Any]) -> GeneratorConfig:
    """``config`` as a :class:`GeneratorConfig` (a mapping goes through ``GeneratorConfig.from_dict``).

    Raises
    ------
    ValueError
        From ``GeneratorConfig`` for bad fields, or here for what this pipeline cannot make:
        a ``texture`` other than 'random', a ``second_phase_fraction`` above 0.
    """
    if not isinstance(config, GeneratorConfig):
        config = GeneratorConfig.from_dict(config)
    if config.texture != "random":
        raise ValueError(f"dream3d backend: texture must be 'random' (the pipeline has a uniform ODF), "
                         f"got {config.texture!r}; use the built-in generator for textured VEs")
    if config.second_phase_fraction > 0:
        raise ValueError(f"dream3d backend: second_phase_fraction must be 0 (single-phase pipeline), "
                         f"got {config.second_phase_fraction!r}; use the built-in generator for two phases")
    return config


def _bin_step(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"bin_step must be a finite number > 0 (length units), got {value!r}")
    return v


# --------------------------------------------------------------------------------------------------
# StatsGenerator statistics
# --------------------------------------------------------------------------------------------------

def esd_bins(mu: float, sigma: float, min_cutoff: float, max_cutoff: float,
             bin_step: float) -> tuple[np.ndarray, float, float]:
    """Size bins as DREAM.3D's ``StatsGen::ComputeNumberOfBins`` makes them.

    Returns
    -------
    bins : numpy.ndarray, shape (n,)
        Lower ESD edge of each bin in length units: ``min + i * bin_step``.
    min_esd, max_esd : float
        ``exp(mu - min_cutoff * sigma)`` and ``exp(mu + max_cutoff * sigma)``.
    """
    min_esd = math.exp(mu - min_cutoff * sigma)
    max_esd = math.exp(mu + max_cutoff * sigma)
    n = int((max_esd - min_esd) / bin_step) + 1
    return min_esd + bin_step * np.arange(n), min_esd, max_esd


def _beta(alpha: Sequence[float], beta: Sequence[float]) -> dict[str, Any]:
    return {"Alpha": [float(a) for a in alpha], "Beta": [float(b) for b in beta],
            "Distribution Type": "Beta Distribution"}


def _neighbor_distribution(n: int, base: float, slope: float) -> dict[str, Any]:
    """DREAM.3D preset: mu_i = ln(base + slope (i - n//2)), sigma_i = 0.3 + (n//2 - i) / (10 n//2).

    The log argument is kept >= 1: DREAM.3D's presets take logs of negative numbers for long bin lists.
    """
    mid = n // 2
    mus = [math.log(max(base + slope * (i - mid), 1.0)) for i in range(n)]
    sigmas = [0.3 + ((mid - i) / (mid * 10.0) if mid else 0.0) for i in range(n)]
    return {"Average": mus, "Distribution Type": "Log Normal Distribution", "Standard Deviation": sigmas}


def _axis_odf_euler(axis_ratio: Sequence[float]) -> np.ndarray:
    """Bunge angles that turn the ellipsoid axes (a >= b >= c) onto the sample axes of ``axis_ratio``.

    PackPrimaryPhases maps sample to ellipsoid coordinates with the orientation matrix of these angles
    (``x' = g x``, rows of g = ellipsoid axes in the sample frame), the passive convention damask uses.
    """
    import damask

    order = np.argsort(-np.asarray(axis_ratio, dtype=float), kind="stable")  # a, b, c -> sample axes
    g = np.eye(3)[order]
    if np.linalg.det(g) < 0:
        g[2] *= -1.0  # flip c: an ellipsoid is symmetric, the rotation must be proper
    return damask.Rotation.from_matrix(g).as_Euler_angles()


def primary_stats(config: GeneratorConfig | Mapping[str, Any], *, bin_step: float = 0.5) -> dict[str, Any]:
    """StatsGenerator JSON for one primary phase (the ``StatsDataArray`` entry ``"1"``).

    ``config`` gives ``esd_mean``, ``esd_sigma``, the cut-offs, ``axis_ratio`` and ``lattice``;
    ``bin_step`` is the width of the ESD bins in length units.  Size: log-normal ESD with
    ``mu = ln(esd_mean) - esd_sigma**2 / 2`` (so that ``esd_mean`` is the mean ESD, as StatsGenerator
    shows it) and Sigma = ``esd_sigma``; cut-offs in sigmas.  Shape and
    neighbour distributions per size bin follow DREAM.3D's presets -- "Primary Equiaxed" when all
    three ``axis_ratio`` entries are equal, else "Primary Rolled" with A/B and A/C from the sorted
    ``axis_ratio`` and an axis ODF that aligns the long axis with the longest sample direction -- with
    each preset's random jitter replaced by the middle of its range, so the file is deterministic.
    The ODF and MDF are left empty: random (uniform) orientations.
    """
    cfg = check_supported(config)
    bin_step = _bin_step(bin_step)
    esd_sigma, axis_ratio = cfg.esd_sigma, cfg.axis_ratio
    mu = math.log(cfg.esd_mean) - esd_sigma**2 / 2.0
    bins, min_esd, max_esd = esd_bins(mu, esd_sigma, cfg.esd_min_cutoff, cfg.esd_max_cutoff, bin_step)
    n = bins.size
    a, b, c = sorted((float(r) for r in axis_ratio), reverse=True)
    if a == c:  # PrimaryEquiaxedPreset
        b_over_a = c_over_a = _beta([15.5] * n, [1.5] * n)
        neighbors = _neighbor_distribution(n, 14.0, 2.0)
        axis_odf: dict[str, Any] = {}
    else:  # PrimaryRolledPreset with AspectRatio1 = A/B, AspectRatio2 = A/C
        b_over_a = _beta([1.1 + 28.9 * b / a + 0.5] * n, [30.0 - 28.9 * b / a + 0.5] * n)
        c_over_a = _beta([1.1 + 28.9 * c / a + 0.5] * n, [30.0 - 28.9 * c / a + 0.5] * n)
        neighbors = _neighbor_distribution(n, 8.0, 1.0)
        weight = 46656.0 * (1.0 - (b / a) ** 2)
        spread = int(1.0 + 5.0 * b / a) if weight > 0 else 1
        euler = _axis_odf_euler(axis_ratio)
        axis_odf = {"Euler 1": [float(euler[0])], "Euler 2": [float(euler[1])], "Euler 3": [float(euler[2])],
                    "Sigma": [float(spread)], "Weight": [weight / max(8 * (spread - 1) ** 3, 1)]}
    return {
        "AxisODF-Weights": axis_odf,
        "Bin Count": n,
        "BinNumber": bins.tolist(),
        "BoundaryArea": 0,
        "Crystal Symmetry": io.DREAM3D_CRYSTAL_STRUCTURES[cfg.lattice],
        "FeatureSize Distribution": {"Average": mu, "Standard Deviation": esd_sigma},
        "FeatureSize Vs B Over A Distributions": b_over_a,
        "FeatureSize Vs C Over A Distributions": c_over_a,
        "FeatureSize Vs Neighbors Distributions": neighbors,
        "FeatureSize Vs Omega3 Distributions": _beta([10.5] * n, [1.75] * n),
        "Feature_Diameter_Info": [bin_step, max_esd, min_esd],
        "MDF-Weights": {},
        "Name": "Primary",
        "ODF-Weights": {},
        "PhaseFraction": 1.0,
        "PhaseType": "Primary",
    }


# --------------------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------------------

def _path(dc: str, am: str = "", da: str = "") -> dict[str, str]:
    return {"Attribute Matrix Name": am, "Data Array Name": da, "Data Container Name": dc}


def _filter(name: str, label: str, version: str = SYNTHETIC_FILTER_VERSION, **params: Any) -> dict[str, Any]:
    return {"FilterVersion": version, "Filter_Enabled": True, "Filter_Human_Label": label, "Filter_Name": name,
            "Filter_Uuid": FILTER_UUIDS[name], **params}


def pipeline(config: GeneratorConfig | Mapping[str, Any], *, output_path: str | os.PathLike,
             rng_seed: int | None = None, bin_step: float = 0.5, periodic: bool = True) -> dict[str, Any]:
    """The DREAM.3D 6.5 pipeline as a JSON-ready dict; see :func:`write_pipeline_json`."""
    c = check_supported(config)
    stats = primary_stats(c, bin_step=bin_step)
    cells, spacing = c.cells, (c.spacing,) * 3
    if rng_seed is not None:
        log.info("DREAM.3D takes no seed: rng_seed=%s is recorded only, the output is not reproducible", rng_seed)
    ensemble = lambda da: _path(STATS_DC, ENSEMBLE_AM, da)
    feature = lambda da: _path(VOLUME_DC, FEATURE_AM, da)
    feature_ids = _path(VOLUME_DC, CELL_AM, "FeatureIds")
    xyz = lambda v: dict(zip("xyz", v, strict=True))

    filters = [
        _filter("StatsGeneratorFilter", "StatsGenerator",
                CellEnsembleAttributeMatrixName=ENSEMBLE_AM, CrystalStructuresArrayName="CrystalStructures",
                PhaseNamesArrayName="PhaseName", PhaseTypesArrayName="PhaseTypes",
                StatsDataArray={"1": stats, "Name": "Statistics", "Phase Count": 2},
                StatsDataArrayName="Statistics", StatsGeneratorDataContainerName=STATS_DC),
        # "Resolution" is the 6.5 key; 6.6 renamed it "Spacing" -- each version ignores the other key
        _filter("InitializeSyntheticVolume", "Initialize Synthetic Volume",
                CellAttributeMatrixName=CELL_AM, DataContainerName=VOLUME_DC, Dimensions=xyz(cells),
                EnsembleAttributeMatrixName=ENSEMBLE_AM, EstimateNumberOfFeatures=0, EstimatedPrimaryFeatures="",
                InputPhaseTypesArrayPath=ensemble("PhaseTypes"), InputStatsArrayPath=ensemble("Statistics"),
                InputStatsFile="", Origin=xyz((0.0, 0.0, 0.0)), Resolution=xyz(spacing), Spacing=xyz(spacing)),
        _filter("EstablishShapeTypes", "Establish Shape Types",
                InputPhaseTypesArrayPath=ensemble("PhaseTypes"), ShapeTypeData=[999, SHAPE_ELLIPSOID],
                ShapeTypesArrayName="ShapeTypes"),
        _filter("PackPrimaryPhases", "Pack Primary Phases",
                CellPhasesArrayName="Phases", CsvOutputFile="", FeatureGeneration=0, FeatureIdsArrayName="FeatureIds",
                FeatureInputFile="", FeaturePhasesArrayName="Phases", HaveFeatures=0,
                InputPhaseNamesArrayPath=ensemble("PhaseName"), InputPhaseTypesArrayPath=ensemble("PhaseTypes"),
                InputShapeTypesArrayPath=ensemble("ShapeTypes"), InputStatsArrayPath=ensemble("Statistics"),
                MaskArrayPath=_path(""), NewAttributeMatrixPath=_path(VOLUME_DC,
                                                                      "Synthetic Shape Parameters (Primary Phase)"),
                NumFeaturesArrayName="NumFeatures", OutputCellAttributeMatrixPath=_path(VOLUME_DC, CELL_AM),
                OutputCellEnsembleAttributeMatrixName=ENSEMBLE_AM, OutputCellFeatureAttributeMatrixName=FEATURE_AM,
                PeriodicBoundaries=int(periodic), SaveGeometricDescriptions=0, SelectedAttributeMatrixPath=_path(""),
                UseMask=0, WriteGoalAttributes=0),
        _filter("FindNeighbors", "Find Feature Neighbors",
                BoundaryCellsArrayName="BoundaryCells", CellFeatureAttributeMatrixPath=_path(VOLUME_DC, FEATURE_AM),
                FeatureIdsArrayPath=feature_ids, NeighborListArrayName="NeighborList",
                NumNeighborsArrayName="NumNeighbors", SharedSurfaceAreaListArrayName="SharedSurfaceAreaList",
                StoreBoundaryCells=0, StoreSurfaceFeatures=1, SurfaceFeaturesArrayName="SurfaceFeatures"),
        _filter("MatchCrystallography", "Match Crystallography",
                AvgQuatsArrayName="AvgQuats", CellEulerAnglesArrayName="EulerAngles",
                CrystalStructuresArrayPath=ensemble("CrystalStructures"), FeatureEulerAnglesArrayName="EulerAngles",
                FeatureIdsArrayPath=feature_ids, FeaturePhasesArrayPath=feature("Phases"),
                InputStatsArrayPath=ensemble("Statistics"), MaxIterations=100000,
                NeighborListArrayPath=feature("NeighborList"),
                NumFeaturesArrayPath=_path(VOLUME_DC, ENSEMBLE_AM, "NumFeatures"),
                PhaseTypesArrayPath=ensemble("PhaseTypes"),
                SharedSurfaceAreaListArrayPath=feature("SharedSurfaceAreaList"),
                SurfaceFeaturesArrayPath=feature("SurfaceFeatures"), VolumesArrayName="Volumes"),
        _filter("DataContainerWriter", "Write DREAM.3D Data File", SIMPL_FILTER_VERSION,
                OutputFile=str(Path(output_path).expanduser().resolve()), WriteTimeSeries=0, WriteXdmfFile=0),
    ]
    doc: dict[str, Any] = {str(i): f for i, f in enumerate(filters)}
    doc["PipelineBuilder"] = {"Name": f"micropipe {micropipe.__version__} synthetic polycrystal "
                                      f"(rng_seed={rng_seed}, not used by DREAM.3D)",
                              "Number_Filters": len(filters), "Version": PIPELINE_VERSION}
    return doc


def write_pipeline_json(path: str | os.PathLike, config: GeneratorConfig | Mapping[str, Any], *,
                        output_path: str | os.PathLike, rng_seed: int | None = None, bin_step: float = 0.5) -> Path:
    """Write the DREAM.3D 6.5 pipeline (``PipelineRunner -p path``) for one synthetic polycrystal.

    Parameters
    ----------
    path : str or os.PathLike
        The JSON file to write.
    config : GeneratorConfig or mapping
        The built-in generator's config (a mapping goes through ``GeneratorConfig.from_dict``):
        ``cells``, ``spacing`` (DREAM.3D "Resolution"), ``esd_mean``/``esd_sigma`` (the log-normal's
        mu is ``ln(esd_mean) - esd_sigma**2 / 2``), the cut-offs in sigmas, ``axis_ratio`` (equal
        entries give equiaxed grains) and ``lattice`` (DREAM.3D: Cubic_High for both cubic lattices);
        ``texture`` must be 'random' and ``second_phase_fraction`` 0.
    output_path : str or os.PathLike
        The .dream3d file the pipeline writes (stored as an absolute path).
    rng_seed : int, optional
        Recorded in the pipeline name only: DREAM.3D 6.5 has no user seed (PackPrimaryPhases seeds
        from the clock), so its output is not bit-reproducible.
    bin_step : float, optional
        Width of the ESD bins in length units (seed 003: 0.5).

    Returns
    -------
    path : pathlib.Path
        The written JSON file.  Packing uses periodic boundaries; orientations are random (uniform ODF)
        and matched by MatchCrystallography.
    """
    doc = pipeline(config, output_path=output_path, rng_seed=rng_seed, bin_step=bin_step)
    target = Path(path).expanduser()
    target.write_text(json.dumps(doc, indent=4, sort_keys=True) + "\n")
    log.debug("wrote DREAM.3D pipeline %s", target)
    return target


# --------------------------------------------------------------------------------------------------
# running PipelineRunner
# --------------------------------------------------------------------------------------------------

def find_binary() -> str | None:
    """Path of DREAM.3D's ``PipelineRunner``: ``$DREAM3D_PIPELINE_RUNNER`` if set, else from PATH."""
    return find_executable("PipelineRunner", RUNNER_ENV)


def run_pipeline(json_path: str | os.PathLike, *, timeout_s: float) -> None:
    """Run ``PipelineRunner -p json_path``; its output is logged, failures raise ``RuntimeError``.

    Raises
    ------
    FileNotFoundError
        PipelineRunner is not installed, or ``json_path`` does not exist.
    RuntimeError
        Non-zero exit or timeout; the message ends with the last lines of the runner's output.
    """
    runner = find_binary()
    if runner is None:
        raise BackendUnavailable(NOT_FOUND)
    json_path = Path(json_path).expanduser()
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: pipeline file not found")
    cmd = [runner, "-p", str(json_path.resolve())]
    log.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=json_path.parent)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise RuntimeError(f"PipelineRunner timed out after {timeout_s} s on {json_path}:\n{tail(out)}") from None
    output = (proc.stdout or "") + (proc.stderr or "")
    for line in output.splitlines():
        log.debug("PipelineRunner: %s", line)
    if proc.returncode != 0:
        raise RuntimeError(f"PipelineRunner failed (exit {proc.returncode}) on {json_path}:\n{tail(output)}")


def generate(config: GeneratorConfig | Mapping[str, Any], rng_seed: int | None, workdir: str | os.PathLike, *,
             timeout_s: float = 3600.0, bin_step: float = 0.5) -> VolumeElement:
    """One synthetic polycrystal from DREAM.3D: write the pipeline, run PipelineRunner, read the result.

    Parameters
    ----------
    config : GeneratorConfig or mapping
        The built-in generator's config; a mapping (e.g. ``{'cells': 64, 'morphology': 'small_grains'}``)
        goes through ``GeneratorConfig.from_dict``.  ``texture`` must be 'random' and
        ``second_phase_fraction`` 0; ``spread_deg`` and ``texture_sampling`` have no effect.
    rng_seed : int or None
        Recorded in ``attrs['seed']``; DREAM.3D cannot use it (see the module docstring).
    workdir : str or os.PathLike
        Directory for ``pipeline.json`` and ``synthetic.dream3d`` (created if missing).
    timeout_s : float, optional
        Wall-clock limit for PipelineRunner in seconds.
    bin_step : float, optional
        Width of StatsGenerator's ESD bins in length units (seed 003: 0.5).

    Returns
    -------
    ve : VolumeElement
        Grains as DREAM.3D made them, orientations reduced to the fundamental zone of the lattice (as
        the built-in generator gives them), with ``attrs = {'generator': 'dream3d.PipelineRunner',
        'params': config.to_dict() | {'bin_step': bin_step}, 'seed': rng_seed}``.

    Raises
    ------
    ValueError
        Bad or unsupported config, or bad ``bin_step`` (before anything is run or written).
    FileNotFoundError
        PipelineRunner is not installed.
    RuntimeError
        PipelineRunner failed, timed out or wrote no .dream3d file.
    """
    c = check_supported(config)
    bin_step = _bin_step(bin_step)
    if find_binary() is None:
        raise BackendUnavailable(NOT_FOUND)
    workdir = Path(workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "synthetic.dream3d"
    output.unlink(missing_ok=True)  # a stale result must not pass for this run's
    json_path = write_pipeline_json(workdir / "pipeline.json", c, output_path=output, rng_seed=rng_seed,
                                    bin_step=bin_step)
    run_pipeline(json_path, timeout_s=timeout_s)
    if not output.is_file():
        raise RuntimeError(f"PipelineRunner finished but wrote no {output} (see the log of its output)")
    ve = io.load_dream3d(output, lattice=c.lattice)
    return dataclasses.replace(ve, euler=reduce_to_fundamental_zone(ve.euler, c.lattice),
                               attrs={"generator": GENERATOR_NAME, "params": c.to_dict() | {"bin_step": bin_step},
                                      "seed": rng_seed})
