"""Crystal-plasticity runs over a VE dataset: one Parquet file of volume-averaged curves per shard, gathered.

Layout under a dataset URI (beside the VE shards of :mod:`micropipe.ve.dataset`)::

    <dataset_uri>/cp/shards/shard-00000.parquet   one row per VE of VE shard 0 (written by :func:`write_shard`)
    <dataset_uri>/cp/cp_results.parquet           every row, in VE id order (written by :func:`gather`)
    <dataset_uri>/cp/manifest.json                written last by :func:`gather`

Columns (DESIGN §3 "CP results"); stresses in Pa, times in s, one entry per *output* increment, the
undeformed state first, stopping at the last converged increment when a run did not converge:

================  ================================================================================
``ve_id``         str, the VE's id in the dataset
``converged``     bool; a VE that does not converge is a row with its ``reason``, never dropped
``reason``        str, empty when converged
``time``          list of float, s
``strain``        list of float: engineering strain ``F_zz - 1`` (21 values for seed 003's load case)
``stress``        list of float: volume-averaged Cauchy ``sigma_zz``, Pa
``sigma``         list of 6-lists: volume-averaged Cauchy stress, Voigt order 11, 22, 33, 23, 13, 12, Pa
``F``             list of 9-lists: volume-averaged deformation gradient, row-major
``iterations``    list of int: global iterations per output increment
``cutbacks``      list of int: cutback levels per output increment
``n_increments``  int: output increments completed (``len(strain) - 1``)
``backend``       str: ``builtin`` or ``damask_grid``
``wall_time_s``   float: seconds for this VE (a batch's time divided by its size)
``n_grains``      int
``cells``         list of 3 int
================  ================================================================================

In memory (:func:`read_results`, :func:`run_shard`) the list columns hold numpy arrays: ``sigma`` (n, 6),
``F`` (n, 9), the others (n,).  Every Parquet file carries, in its schema metadata under ``micropipe``,
the provenance, the number of rows, a fingerprint of the parameters and ``complete: true``; it is
written under a temporary name and renamed, so a file without that record is never taken as complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import damask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from micropipe import provenance as _provenance
from micropipe import store
from micropipe.crystal import MATERIALS, shipped_material
from micropipe.crystal.loadcase import Loadcase, loadcase_from_config, uniaxial_tension_z
from micropipe.crystal.material import Phase, load_phase, parse_phase
from micropipe.crystal.numerics import MICROPIPE_KEY, Numerics, numerics_from_config
from micropipe.params import integral_floats_to_int
from micropipe.report import Report
from micropipe.ve import io
from micropipe.ve.volume import VolumeElement, resample

log = logging.getLogger(__name__)

RESULTS_FORMAT = "micropipe-cp-results"
RESULTS_FORMAT_VERSION = 1
MANIFEST_FORMAT = "micropipe-cp-dataset"
META_KEY = b"micropipe"
RESULTS_DIR = "cp"
GATHERED = f"{RESULTS_DIR}/cp_results.parquet"
MANIFEST = f"{RESULTS_DIR}/manifest.json"
BACKENDS = ("builtin", "damask")
"""CP solvers: the built-in spectral solver (:mod:`micropipe.spectral.cp`) or DAMASK_grid (the damask image)."""

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
"""Tensor indices of the Voigt order 11, 22, 33, 23, 13, 12."""

SCHEMA = pa.schema([
    ("ve_id", pa.string()),
    ("converged", pa.bool_()),
    ("reason", pa.string()),
    ("time", pa.list_(pa.float64())),
    ("strain", pa.list_(pa.float64())),
    ("stress", pa.list_(pa.float64())),
    ("sigma", pa.list_(pa.list_(pa.float64(), 6))),
    ("F", pa.list_(pa.list_(pa.float64(), 9))),
    ("iterations", pa.list_(pa.int64())),
    ("cutbacks", pa.list_(pa.int64())),
    ("n_increments", pa.int64()),
    ("backend", pa.string()),
    ("wall_time_s", pa.float64()),
    ("n_grains", pa.int64()),
    ("cells", pa.list_(pa.int64(), 3)),
])
COLUMNS = tuple(SCHEMA.names)
_NESTED = {"sigma": 6, "F": 9}
_INT_LISTS = ("iterations", "cutbacks", "cells")

LOADCASE_KEYS = ("strain", "rate", "increments", "f_out")
"""Keys of a load-case mapping that parametrises :func:`~micropipe.crystal.loadcase.uniaxial_tension_z`."""

STRAIN_POINTS = (0.002, 0.01)
"""Engineering strains at which the report and metrics give the mean sigma_zz."""
MAX_CURVES = 1000
"""Converged curves drawn one by one in the report (all go into the mean and spread)."""


# --------------------------------------------------------------------------------------------- names
def shard_results_name(index: int) -> str:
    """Path of the results of VE shard ``index`` relative to the dataset URI."""
    return f"{RESULTS_DIR}/shards/shard-{index:05d}.parquet"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown CP solver {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


# ------------------------------------------------------------------------------------------ inputs
def resolve_phase(material: str | os.PathLike) -> Phase:
    """The single phase a dataset is run with.

    Parameters
    ----------
    material : str or os.PathLike
        A shipped material name (``Cu``, ``Mg``, ``Fe``), the path of a material.yaml-style file with a
        ``phase:`` section holding exactly one phase, or such a file's YAML text.
    """
    text = str(material)
    if text in MATERIALS:
        return load_phase(shipped_material(text))
    if "\n" not in text and ":" not in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"material: {text!r} is neither a shipped material ({', '.join(MATERIALS)}) "
                                    f"nor an existing material.yaml")
        return load_phase(path)
    try:
        config = damask.YAML.load(StringIO(text))
    except Exception as e:  # yaml errors carry their position
        raise ValueError(f"material: not readable as YAML ({e})") from e
    phases = config.get("phase") if isinstance(config, Mapping) else None
    if not isinstance(phases, Mapping) or len(phases) != 1:
        found = ", ".join(phases) if isinstance(phases, Mapping) else "none"
        raise ValueError(f"material: expected YAML with a 'phase:' section holding exactly one phase, got {found}")
    name, definition = next(iter(phases.items()))
    return parse_phase(name, definition, "material")


def resolve_loadcase(spec: Mapping[str, Any] | Loadcase | None) -> Loadcase:
    """The load case of a run.

    Parameters
    ----------
    spec : mapping, Loadcase or None
        None or ``{}``: seed 003's uniaxial tension along z to 1 % at 1e-3/s in 20 increments. A mapping
        with ``loadstep``: a DAMASK_grid load.yaml as a mapping. Otherwise keyword arguments of
        :func:`~micropipe.crystal.loadcase.uniaxial_tension_z` (``strain``, ``rate``, ``increments``, ``f_out``).
    """
    if isinstance(spec, Loadcase):
        return spec
    if not spec:
        return uniaxial_tension_z()
    if not isinstance(spec, Mapping):
        raise ValueError(f"loadcase: expected a mapping, got {spec!r}")
    spec = integral_floats_to_int(dict(spec))  # KFP sends every number as a float
    if "loadstep" in spec:
        return loadcase_from_config(spec, source="loadcase")
    unknown = sorted(set(spec) - set(LOADCASE_KEYS))
    if unknown:
        raise ValueError(f"loadcase: unknown key(s) {', '.join(unknown)}; expected a load.yaml mapping "
                         f"(with 'loadstep') or uniaxial tension keys {', '.join(LOADCASE_KEYS)}")
    return uniaxial_tension_z(**spec)


def resolve_numerics(spec: Mapping[str, Any] | Numerics | None) -> Numerics | None:
    """Solver numerics from a flat mapping of :class:`~micropipe.crystal.numerics.Numerics` fields or a numerics.yaml
    mapping (see :func:`~micropipe.crystal.numerics.numerics_from_config`); None or ``{}``: defaults."""
    if spec is None or isinstance(spec, Numerics):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"numerics: expected a mapping of Numerics fields, got {spec!r}")
    if not spec:
        return None
    spec = integral_floats_to_int(dict(spec))
    fields = {f.name for f in dataclasses.fields(Numerics)}
    if set(spec) & fields:  # flat Numerics fields, as in presets
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise ValueError(f"numerics: unknown key(s) {', '.join(unknown)}; expected Numerics fields "
                             f"{', '.join(sorted(fields))} or a numerics.yaml mapping")
        return numerics_from_config({MICROPIPE_KEY: spec}, source="numerics")
    return numerics_from_config(spec, source="numerics")


def parameters(phase: Phase, loadcase: Loadcase, numerics: Numerics | None, backend: str,
               cells: Sequence[int] | None = None) -> dict[str, Any]:
    """JSON-ready record of what decides a CP result (recorded in provenance and fingerprinted).

    ``cells``: the grid CP is solved on when it is not the VE's own (see :func:`check_cells`)."""
    out = {"phase": {phase.name: json.loads(_provenance.dumps(dict(phase.config)))},
           "loadcase": json.loads(_provenance.dumps(_loadcase_record(loadcase))),
           "numerics": dataclasses.asdict(numerics or Numerics()), "backend": backend}
    if cells:
        out["cells"] = list(cells)
    return out


def check_cells(cells: Sequence[int] | None) -> tuple[int, int, int] | None:
    """The CP grid: None or empty for each VE's own cells, else 3 positive ints (an int gives a cube)."""
    if cells is None or (not isinstance(cells, int | np.integer) and len(cells) == 0):
        return None
    c = [cells] * 3 if isinstance(cells, int | np.integer) else integral_floats_to_int(list(cells))
    if (len(c) != 3 or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in c)):
        raise ValueError(f"cells: expected 3 positive integers (the CP grid, voxels along x, y, z) or [] for "
                         f"each VE's own grid, got {cells!r}")
    return tuple(int(v) for v in c)


def _loadcase_record(loadcase: Loadcase) -> dict[str, Any]:
    steps = []
    for s in loadcase.steps:
        steps.append({"deformation_key": s.deformation_key, "stress_key": s.stress_key,
                      "deformation": _nan_to_x(s.deformation), "stress": _nan_to_x(s.stress),
                      "t": s.t, "N": s.N, "f_out": s.f_out, "r": s.r})
    return {"solver": loadcase.solver, "steps": steps}


def _nan_to_x(a: np.ndarray) -> list[list[Any]]:
    return [["x" if np.isnan(v) else float(v) for v in row] for row in a]


def fingerprint(params: Mapping[str, Any]) -> str:
    """SHA-256 of the parameters' canonical JSON: equal fingerprints, equal results (up to float tolerance)."""
    return hashlib.sha256(_provenance.dumps(params).encode()).hexdigest()


# ------------------------------------------------------------------------------------------- rows
def quaternions(euler: np.ndarray) -> np.ndarray:
    """DAMASK unit quaternions, shape (G, 4), of Bunge Euler angles in radians, shape (G, 3)."""
    return damask.Rotation.from_Euler_angles(np.asarray(euler, float), degrees=False).as_quaternion()


def result_row(ve_id: str, result: Any, *, n_grains: int, cells: Sequence[int]) -> dict[str, Any]:
    """One results row (see the module docstring) of a :class:`micropipe.spectral.cp.CPResult`."""
    F = np.asarray(result.F, float).reshape(-1, 3, 3)
    sigma = np.asarray(result.sigma, float).reshape(-1, 3, 3)
    return {
        "ve_id": str(ve_id),
        "converged": bool(result.converged),
        "reason": str(result.reason or ""),
        "time": np.asarray(result.time, float).reshape(-1),
        "strain": F[:, 2, 2] - 1.0,
        "stress": sigma[:, 2, 2].copy(),
        "sigma": np.stack([sigma[:, i, j] for i, j in VOIGT], axis=-1).reshape(-1, 6),
        "F": F.reshape(-1, 9),
        "iterations": np.asarray(result.iterations, np.int64).reshape(-1),
        "cutbacks": np.asarray(result.cutbacks, np.int64).reshape(-1),
        "n_increments": max(len(F) - 1, 0),
        "backend": str(result.backend),
        "wall_time_s": float(result.wall_time),
        "n_grains": int(n_grains),
        "cells": np.asarray(cells, np.int64).reshape(3),
    }


def failed_row(ve_id: str, reason: str, *, backend: str, wall_time: float, n_grains: int,
               cells: Sequence[int]) -> dict[str, Any]:
    """Row of a VE whose solve raised: not converged, only the undeformed state."""
    return {"ve_id": ve_id, "converged": False, "reason": reason, "time": np.zeros(1), "strain": np.zeros(1),
            "stress": np.zeros(1), "sigma": np.zeros((1, 6)), "F": np.eye(3).reshape(1, 9),
            "iterations": np.zeros(0, np.int64), "cutbacks": np.zeros(0, np.int64), "n_increments": 0,
            "backend": backend, "wall_time_s": float(wall_time), "n_grains": int(n_grains),
            "cells": np.asarray(cells, np.int64).reshape(3)}


def frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """DataFrame with the results columns in order (also for no rows)."""
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


# ------------------------------------------------------------------------------------------ solving
def run_shard(shard_path: str | os.PathLike, material_phase: Phase, loadcase: Loadcase, *,
              numerics: Numerics | None = None, backend: str = "builtin", device: Any = None,
              batch_size: int = 8, progress: bool | None = None, threads: int | None = None,
              nprocs: int | None = None, timeout: float | None = None,
              cells: Sequence[int] | None = None) -> pd.DataFrame:
    """Solve every VE of one HDF5 VE shard; one row per VE (columns: module docstring).

    VEs of equal cells and size go through the built-in solver ``batch_size`` at a time
    (:func:`micropipe.spectral.cp.solve_orientations`); DAMASK_grid runs them one by one. A VE that does
    not converge is a row with ``converged=False`` and its reason; so is a VE whose solve raised (a
    batch that raises is split in halves and retried, so one bad VE costs only itself).

    Parameters
    ----------
    shard_path : str or os.PathLike
        Local HDF5 shard (:func:`micropipe.ve.io.write_shard`); single-phase VEs of ``material_phase``'s lattice.
    material_phase : Phase
        The phase every grain is made of.
    loadcase : Loadcase
        Boundary conditions and increments.
    numerics : Numerics, optional
        Solver tolerances; default DAMASK's.
    backend : {'builtin', 'damask'}
        CP solver.
    device : str or torch.device, optional
        Built-in solver only; as :func:`micropipe.device.pick_device`.
    batch_size : int
        VEs solved together by the built-in solver.
    progress : bool, optional
        A tqdm bar (True) or log lines (False); default: a bar when stderr is a terminal.
    threads : int, optional
        CPU threads of the built-in solver (torch) while this shard runs; default torch's (every core).
        Set it when several shards share a machine: oversubscribed torch threads slow down by 5x and more.
    nprocs, timeout : int, float, optional
        DAMASK_grid only: MPI processes (default: all cores) and seconds per VE before it is given up.
    cells : sequence of 3 int, optional
        Solve on this grid instead of each VE's own: the VE is resampled (nearest neighbour,
        :func:`micropipe.ve.volume.resample`), e.g. to run CP on a 2x coarser grid than the VAE sees.
        The row's ``cells`` is the grid that was solved.

    Returns
    -------
    pandas.DataFrame
        One row per VE, in VE id order.
    """
    check_backend(backend)
    cells = check_cells(cells)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    damask_grid = _damask_backend() if backend == "damask" else None
    shard_path = Path(shard_path)
    ves = list(io.iter_shard(shard_path))
    if cells is not None:
        ves = [(ve_id, resample(ve, cells)) for ve_id, ve in ves]
    for ve_id, ve in ves:
        _check_ve(ve, material_phase, f"{shard_path} [{ve_id}]")
    groups: dict[tuple, list[tuple[str, VolumeElement]]] = {}
    for ve_id, ve in ves:
        groups.setdefault((ve.cells, tuple(np.round(ve.size, 12))), []).append((ve_id, ve))
    size = batch_size if damask_grid is None else 1
    batches = [items[i:i + size] for items in groups.values() for i in range(0, len(items), size)]
    rows: dict[str, dict[str, Any]] = {}
    interactive = sys.stderr.isatty() if progress is None else bool(progress)
    name = shard_path.stem
    log.info("%s: %d VEs in %d batch(es) with the %s solver", name, len(ves), len(batches), backend)
    with _progress_bar(len(ves), name, interactive) as bar, _torch_threads(threads):
        for b, batch in enumerate(batches):
            label = f"{name}: batch {b + 1}/{len(batches)} ({batch[0][0]}..{batch[-1][0]})"
            report = _increment_reporter(label, bar, interactive)
            if damask_grid is None:
                solved = _solve_builtin(batch, material_phase, loadcase, numerics, device, report)
            else:
                solved = _solve_damask(damask_grid, batch, material_phase, loadcase, numerics, nprocs, timeout)
            rows.update((r["ve_id"], r) for r in solved)
            n_ok = sum(r["converged"] for r in solved)
            bar.update(len(batch))
            if not interactive:
                log.info("%s: %d/%d converged, %.1f s per VE", label, n_ok, len(batch),
                         np.mean([r["wall_time_s"] for r in solved]))
    return frame([rows[ve_id] for ve_id, _ in ves])


def _check_ve(ve: VolumeElement, phase: Phase, source: str) -> None:
    if ve.lattice != phase.lattice:
        raise ValueError(f"{source}: field 'lattice' is {ve.lattice!r}, but material phase {phase.name!r} has "
                         f"lattice {phase.lattice!r}; expected VEs generated for the material's lattice")
    if ve.phase_ids is not None or (ve.phase.size and int(ve.phase.max()) > 0):
        raise ValueError(f"{source}: field 'phase': expected a single-phase VE (phase 0 only) for a CP run "
                         f"with one material phase")


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if not threads:
        yield
        return
    import torch

    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _progress_bar(total: int, name: str, interactive: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=name, unit="VE", disable=not interactive, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


def _increment_reporter(label: str, bar: Any, interactive: bool) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        if interactive:
            bar.set_postfix_str(f"increment {done}/{total}")
        else:
            log.info("%s: increment %d/%d", label, done, total)
    return report


def _solve_builtin(batch: list[tuple[str, VolumeElement]], phase: Phase, loadcase: Loadcase,
                   numerics: Numerics | None, device: Any, progress: Callable[[int, int], None]
                   ) -> list[dict[str, Any]]:
    from micropipe.spectral import cp

    grain_ids = np.stack([ve.grain_ids for _, ve in batch]).astype(np.int64)
    G = max(ve.N_grains for _, ve in batch)
    O = np.zeros((len(batch), G, 4))
    O[..., 0] = 1.0  # padding rows: identity, never referenced
    for b, (_, ve) in enumerate(batch):
        O[b, :ve.N_grains] = quaternions(ve.euler)
    start = time.perf_counter()
    try:
        results = cp.solve_orientations(phase, grain_ids, O, loadcase, size=tuple(batch[0][1].size),
                                        numerics=numerics, device=device or None, progress=progress)
    except (ValueError, TypeError, NotImplementedError):
        raise  # bad input or missing code: not a property of the VE
    except Exception as e:
        if len(batch) > 1:
            log.warning("batch %s..%s raised %s: %s; solving it in halves", batch[0][0], batch[-1][0],
                        type(e).__name__, e)
            half = len(batch) // 2
            return (_solve_builtin(batch[:half], phase, loadcase, numerics, device, progress)
                    + _solve_builtin(batch[half:], phase, loadcase, numerics, device, progress))
        ve_id, ve = batch[0]
        log.warning("%s: solver raised %s: %s; recorded as not converged", ve_id, type(e).__name__, e)
        return [failed_row(ve_id, f"solver error: {type(e).__name__}: {e}", backend="builtin",
                           wall_time=time.perf_counter() - start, n_grains=ve.N_grains, cells=ve.cells)]
    return [result_row(ve_id, r, n_grains=ve.N_grains, cells=ve.cells)
            for (ve_id, ve), r in zip(batch, results, strict=True)]


def _damask_backend() -> Any:
    """The DAMASK_grid backend module, after checking that its binary is there (fail fast)."""
    from micropipe.backends import damask_grid

    if damask_grid.find_binary() is None:
        raise damask_grid.BackendUnavailable(damask_grid.NOT_FOUND)
    return damask_grid


def _solve_damask(damask_grid: Any, batch: list[tuple[str, VolumeElement]], phase: Phase, loadcase: Loadcase,
                  numerics: Numerics | None, nprocs: int | None, timeout: float | None) -> list[dict[str, Any]]:
    from micropipe.crystal.material import material_config

    rows = []
    for ve_id, ve in batch:
        config = material_config({phase.name: phase}, quaternions(ve.euler), phase.name)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"micropipe-damask-{ve_id}-") as workdir:
            try:
                result = damask_grid.solve(ve.grain_ids, config, loadcase, size=tuple(ve.size), numerics=numerics,
                                           workdir=workdir, nprocs=nprocs or os.cpu_count() or 1,
                                           timeout=timeout)
            except (ValueError, TypeError, FileNotFoundError):
                raise
            except Exception as e:
                log.warning("%s: DAMASK_grid raised %s: %s; recorded as not converged", ve_id, type(e).__name__, e)
                rows.append(failed_row(ve_id, f"solver error: {type(e).__name__}: {e}", backend="damask_grid",
                                       wall_time=time.perf_counter() - start, n_grains=ve.N_grains,
                                       cells=ve.cells))
                continue
        rows.append(result_row(ve_id, result, n_grains=ve.N_grains, cells=ve.cells))
    return rows


# ---------------------------------------------------------------------------------------- parquet
def _table(df: pd.DataFrame) -> pa.Table:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"CP results: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    arrays = []
    for field in SCHEMA:
        values = df[field.name].tolist()
        if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type):
            values = [np.asarray(v).tolist() for v in values]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def write_results(df: pd.DataFrame, uri: str | os.PathLike, provenance: Mapping[str, Any], *,
                  params_sha256: str | None = None, ve_sha256: str | None = None) -> str:
    """Write CP results to Parquet at ``uri`` (local path or ``s3://``), atomically; returns ``uri``.

    The schema metadata key ``micropipe`` holds JSON: ``format``, ``format_version``, ``n_ve``,
    ``n_converged``, ``params_sha256`` (:func:`fingerprint` of the solver parameters), ``ve_sha256``
    (:func:`ve_digest` of the VE shard the rows were computed from), ``provenance`` and ``complete: true``.
    The file is written under a temporary name and renamed (or uploaded in one PUT), so nothing
    half-written appears at ``uri``.
    """
    table = _table(df)
    meta = {"format": RESULTS_FORMAT, "format_version": RESULTS_FORMAT_VERSION, "n_ve": int(len(df)),
            "n_converged": int(np.sum(df["converged"].to_numpy(bool))), "params_sha256": params_sha256,
            "ve_sha256": ve_sha256, "provenance": dict(provenance), "complete": True}
    table = table.replace_schema_metadata({META_KEY: _provenance.dumps(meta).encode()})
    with store.staged_output(uri) as path:
        pq.write_table(table, path, compression="zstd")
    log.info("wrote %s (%d VEs, %d converged)", uri, meta["n_ve"], meta["n_converged"])
    return str(uri)


def results_metadata(uri: str | os.PathLike) -> dict[str, Any]:
    """The ``micropipe`` metadata record of a results file, without reading its rows.

    Raises
    ------
    ValueError
        Not a Parquet file, or no micropipe record, or a record of another format.
    """
    with store.local_copy(uri) as path:
        try:
            schema = pq.read_schema(path)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
            raise ValueError(f"{uri}: not a readable Parquet file, expected CP results ({e})") from e
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{uri}: schema metadata 'micropipe' is missing: not written by micropipe.cp_runs")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{uri}: schema metadata 'micropipe': expected JSON text ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{uri}: schema metadata 'micropipe': field 'format' is "
                         f"{meta.get('format') if isinstance(meta, dict) else meta!r}, expected {RESULTS_FORMAT!r}")
    return meta


def read_results(uri: str | os.PathLike) -> pd.DataFrame:
    """CP results written by :func:`write_results`; list columns as numpy arrays (see module docstring).

    ``df.attrs['micropipe']`` holds the file's metadata record (provenance included).

    Raises
    ------
    ValueError
        The file is not complete CP results, or its columns differ from the schema.
    """
    meta = results_metadata(uri)
    if meta.get("complete") is not True:
        raise ValueError(f"{uri}: schema metadata 'micropipe': field 'complete' is not true: not written to the end")
    with store.local_copy(uri) as path:
        table = pq.read_table(path)
    if table.schema.names != list(COLUMNS):
        raise ValueError(f"{uri}: columns {table.schema.names}, expected {list(COLUMNS)}")
    if table.num_rows != meta.get("n_ve"):
        raise ValueError(f"{uri}: {table.num_rows} rows, but schema metadata 'micropipe' field 'n_ve' says "
                         f"{meta.get('n_ve')}")
    df = table.to_pandas()
    for column, width in _NESTED.items():
        df[column] = [np.stack(v).astype(float) if len(v) else np.zeros((0, width)) for v in df[column]]
    for column in ("time", "strain", "stress"):
        df[column] = [np.asarray(v, float) for v in df[column]]
    for column in _INT_LISTS:
        df[column] = [np.asarray(v, np.int64) for v in df[column]]
    df.attrs["micropipe"] = meta
    return df


def shard_complete(output_uri: str | os.PathLike, n_ve: int | None = None, params_sha256: str | None = None,
                   ve_sha256: str | None = None) -> bool:
    """Whether ``output_uri`` holds complete results, so that a rerun may skip the shard.

    Complete: the file exists, its ``micropipe`` record says ``complete`` and, where given, holds ``n_ve``
    rows computed with parameters of fingerprint ``params_sha256`` from the VE shard of hash ``ve_sha256``.
    Anything else (missing, unreadable, other VE count, other parameters, other VEs) means: compute again.
    """
    if not store.exists(output_uri):
        return False
    try:
        meta = results_metadata(output_uri)
    except ValueError as e:
        log.warning("%s is not usable (%s); computing it again", output_uri, e)
        return False
    if meta.get("complete") is not True:
        return False
    if n_ve is not None and meta.get("n_ve") != int(n_ve):
        log.warning("%s holds %s VEs, expected %d; computing it again", output_uri, meta.get("n_ve"), n_ve)
        return False
    if params_sha256 is not None and meta.get("params_sha256") != params_sha256:
        log.warning("%s was computed with other parameters; computing it again", output_uri)
        return False
    if ve_sha256 is not None and meta.get("ve_sha256") != ve_sha256:
        log.warning("%s was computed from other VEs (the VE shard changed); computing it again", output_uri)
        return False
    return True


# ------------------------------------------------------------------------------------------- dataset
def write_shard(dataset_uri: str, shard_index: int, *, material: str | Phase = "Cu",
                loadcase: Mapping[str, Any] | Loadcase | None = None,
                numerics: Mapping[str, Any] | Numerics | None = None, backend: str = "builtin",
                device: Any = None, batch_size: int = 8, progress: bool | None = None,
                threads: int | None = None, cells: Sequence[int] | None = None, force: bool = False) -> str:
    """Run CP on VE shard ``shard_index`` of a gathered VE dataset; write its results; return their URI.

    Skips the work when complete results of the same VEs (:func:`ve_digest`) and parameters are already at
    ``<dataset_uri>/cp/shards/shard-<index>.parquet``, unless ``force``.

    Parameters
    ----------
    dataset_uri : str
        A VE dataset with its manifest (:func:`micropipe.ve.dataset.gather`).
    shard_index : int
        Index into the manifest's shards.
    material, loadcase, numerics
        See :func:`resolve_phase`, :func:`resolve_loadcase`, :func:`resolve_numerics`.
    backend, device, batch_size, progress, threads, cells
        See :func:`run_shard`.
    force : bool
        Compute even when complete results exist.
    """
    from micropipe.ve import dataset

    check_backend(backend)
    phase = material if isinstance(material, Phase) else resolve_phase(material)
    lc = resolve_loadcase(loadcase)
    nm = resolve_numerics(numerics)
    manifest = dataset.load_manifest(dataset_uri)
    shards = manifest["shards"]
    if isinstance(shard_index, bool) or not 0 <= int(shard_index) < len(shards):
        raise ValueError(f"shard_index must lie in [0, {len(shards) - 1}] for the {len(shards)} shards of "
                         f"{dataset_uri}, got {shard_index!r}")
    shard = shards[int(shard_index)]
    cells = check_cells(cells)
    params = parameters(phase, lc, nm, backend, cells)
    sha = fingerprint(params)
    out = store.join(dataset_uri, shard_results_name(int(shard_index)))
    with store.local_copy(store.join(dataset_uri, shard["path"])) as path:
        ve_sha = ve_digest(path)
        if not force and shard_complete(out, shard["n_ve"], sha, ve_sha):
            log.info("%s is complete (%d VEs); skipping shard %d", out, shard["n_ve"], shard_index)
            return out
        record = _provenance.record(seed=manifest["provenance"].get("seed"), step="cp.write_shard",
                                    params={**params, "dataset_uri": dataset_uri, "shard_index": int(shard_index),
                                            "ve_shard": shard["path"], "ve_sha256": ve_sha, "batch_size": batch_size,
                                            "device": str(device) if device else None})
        df = run_shard(path, phase, lc, numerics=nm, backend=backend, device=device, batch_size=batch_size,
                       progress=progress, threads=threads, cells=cells)
    write_results(df, out, record, params_sha256=sha, ve_sha256=ve_sha)
    return out


def gather(dataset_uri: str) -> pd.DataFrame:
    """Check the results of every VE shard and write ``cp/cp_results.parquet`` and ``cp/manifest.json``.

    Returns
    -------
    pandas.DataFrame
        Every row, in VE id order.

    Raises
    ------
    ValueError
        Results of a shard are missing or incomplete, hold other VE ids than the VE shard, or were computed
        with other parameters than the rest.
    """
    from micropipe.ve import dataset

    ve_manifest = dataset.load_manifest(dataset_uri)
    frames, shards, shas = [], [], set()
    for index, shard in enumerate(ve_manifest["shards"]):
        uri = store.join(dataset_uri, shard_results_name(index))
        if not store.exists(uri):
            raise ValueError(f"CP results of shard {index} ({uri}) are missing; expected one results file per VE "
                             f"shard ({len(ve_manifest['shards'])})")
        df = read_results(uri)
        expected = [dataset.ve_id(i) for i in _id_range(shard)]
        if df["ve_id"].tolist() != expected:
            raise ValueError(f"{uri}: holds VE ids {df['ve_id'].tolist()[:3]}..., expected {shard['first']} ... "
                             f"{shard['last']}")
        meta = df.attrs["micropipe"]
        shas.add(meta.get("params_sha256"))
        frames.append(df)
        shards.append({"path": shard_results_name(index), "n_ve": len(df), "n_converged": meta["n_converged"]})
    if len(shas) > 1:
        raise ValueError(f"{dataset_uri}/{RESULTS_DIR}/shards: results were computed with different parameters "
                         f"(fingerprints {sorted(map(str, shas))}); rerun the shards with one set")
    first = frames[0].attrs["micropipe"]["provenance"]
    df = pd.concat(frames, ignore_index=True)
    df.attrs = {}
    params = {k: v for k, v in first.get("params", {}).items()
              if k not in ("shard_index", "ve_shard", "ve_sha256", "dataset_uri")}
    record = _provenance.record(seed=ve_manifest["provenance"].get("seed"), step="cp.gather",
                                params={**params, "dataset_uri": dataset_uri, "n_shards": len(shards)})
    write_results(df, store.join(dataset_uri, GATHERED), record, params_sha256=shas.pop())
    n_converged = int(df["converged"].sum())
    manifest = {"format": MANIFEST_FORMAT, "format_version": 1, "uri": dataset_uri, "results": GATHERED,
                "n_ve": len(df), "n_converged": n_converged, "shards": shards, "provenance": record}
    store.write_text(store.join(dataset_uri, MANIFEST), json.dumps(manifest, indent=1))
    log.info("gathered CP results of %d shards (%d VEs, %d converged) into %s", len(shards), len(df),
             n_converged, store.join(dataset_uri, GATHERED))
    df.attrs["micropipe"] = {"provenance": record, "n_ve": len(df), "n_converged": n_converged}
    return df


def ve_digest(shard_path: str | os.PathLike) -> str:
    """SHA-256 of what CP sees of a VE shard: ids, grain ids, orientations, phases, spacing, lattice.

    Not of the file's bytes, which change with the provenance timestamp when the same VEs are written again.
    """
    h = hashlib.sha256()
    for ve_id, ve in io.iter_shard(shard_path):
        h.update(f"{ve_id}|{ve.lattice}|{ve.cells}|".encode())
        for a, dtype in ((ve.grain_ids, np.int64), (ve.euler, np.float64), (ve.phase, np.int64),
                         (ve.spacing, np.float64)):
            h.update(np.ascontiguousarray(a, dtype=dtype).tobytes())
    return h.hexdigest()


def _id_range(shard: Mapping[str, Any]) -> range:
    first = int(str(shard["first"]).split("_")[-1])
    return range(first, first + int(shard["n_ve"]))


def load_manifest(dataset_uri: str) -> dict[str, Any]:
    """The CP manifest of a dataset (written by :func:`gather`)."""
    uri = store.join(dataset_uri, MANIFEST)
    try:
        manifest = json.loads(store.read_text(uri))
    except store.KeyNotFoundError:
        raise store.KeyNotFoundError(f"{uri}: no CP manifest; the CP results were never gathered") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{uri}: not valid JSON ({err})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{uri}: field 'format' is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    return manifest


# -------------------------------------------------------------------------------------------- report
@dataclasses.dataclass
class BuiltReport:
    report: Report
    summary: dict[str, Any]
    metrics: dict[str, float]


def stress_at(df: pd.DataFrame, strain: float) -> np.ndarray:
    """sigma_zz (Pa) of every converged VE at engineering strain ``strain`` (linear interpolation), shape (n,).

    VEs that did not reach ``strain`` are left out.
    """
    out = [np.interp(strain, s, t) for s, t, ok in zip(df["strain"], df["stress"], df["converged"], strict=True)
           if ok and len(s) > 1 and s[-1] >= strain * (1 - 1e-9)]
    return np.asarray(out, float)


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Counts, stresses at :data:`STRAIN_POINTS`, wall times and iterations of a results frame."""
    ok = df["converged"].to_numpy(bool)
    wall = df["wall_time_s"].to_numpy(float)
    its = [np.asarray(v) for v in df["iterations"]]
    summary: dict[str, Any] = {
        "n_ve": int(len(df)), "n_converged": int(ok.sum()), "n_failed": int((~ok).sum()),
        "backends": sorted(set(df["backend"])),
        "reasons": df.loc[~ok, "reason"].value_counts().to_dict(),
        "wall_time_s": {"mean": _mean(wall), "min": _min(wall), "max": _max(wall), "total": float(wall.sum())},
        "iterations_per_increment_mean": _mean(np.concatenate(its)) if its else None,
        "cutbacks_total": int(sum(np.asarray(v).sum() for v in df["cutbacks"])),
        "n_grains_mean": _mean(df["n_grains"].to_numpy(float)),
        "stress_at": {},
    }
    for e in STRAIN_POINTS:
        s = stress_at(df, e)
        summary["stress_at"][f"{e:g}"] = {"n": int(s.size), "mean_MPa": _mean(s / 1e6), "std_MPa": _std(s / 1e6),
                                          "min_MPa": _min(s / 1e6), "max_MPa": _max(s / 1e6)}
    return summary


def _mean(a: np.ndarray) -> float | None:
    return float(np.mean(a)) if np.size(a) else None


def _std(a: np.ndarray) -> float | None:
    return float(np.std(a)) if np.size(a) else None


def _min(a: np.ndarray) -> float | None:
    return float(np.min(a)) if np.size(a) else None


def _max(a: np.ndarray) -> float | None:
    return float(np.max(a)) if np.size(a) else None


def metrics_of(summary: Mapping[str, Any]) -> dict[str, float]:
    """Scalar metrics for KFP's Metrics artifact and the CLI table (stresses in MPa)."""
    m: dict[str, float] = {"n_ves": summary["n_ve"], "n_converged": summary["n_converged"],
                           "n_failed": summary["n_failed"]}
    for key, name in (("0.002", "sigma_zz_MPa_at_0p2pct_mean"), ("0.01", "sigma_zz_MPa_at_1pct_mean")):
        at = summary["stress_at"][key]
        if at["mean_MPa"] is not None:
            m[name] = at["mean_MPa"]
            m[name.replace("_mean", "_std")] = at["std_MPa"]
    if summary["wall_time_s"]["mean"] is not None:
        m["wall_time_s_mean"] = summary["wall_time_s"]["mean"]
    if summary["iterations_per_increment_mean"] is not None:
        m["iterations_per_increment_mean"] = summary["iterations_per_increment_mean"]
    return m


def build_report(df: pd.DataFrame, *, provenance: Mapping[str, Any] | None = None, source: str = "",
                 max_failures: int = 50) -> BuiltReport:
    """The CP dataset report: stress-strain curves, convergence, wall time, iterations.

    Parameters
    ----------
    df : pandas.DataFrame
        CP results (:func:`read_results` / :func:`gather`).
    provenance : mapping, optional
        Provenance of the results (default: ``df.attrs['micropipe']['provenance']`` when there).
    source : str
        Where the results are, for the subtitle.
    max_failures : int
        Non-converged VEs listed one by one.
    """
    if not len(df):
        raise ValueError("CP results: no rows to report on")
    prov = dict(provenance or df.attrs.get("micropipe", {}).get("provenance") or {})
    params = prov.get("params", {})
    summary = summarize(df)
    phase = next(iter(params.get("phase", {"?": None})))
    cells = "×".join(map(str, np.asarray(df["cells"].iloc[0]).tolist()))
    r = Report("CP dataset report",
               subtitle=f"{summary['n_ve']} VEs of {cells} voxels (about {summary['n_grains_mean']:.0f} grains), "
                        f"phase {phase}, {', '.join(summary['backends'])} solver"
                        + (f", results at {source}" if source else "")
                        + (f". micropipe {prov.get('version')}, commit {prov.get('git_commit')}" if prov else "")
                        + ".")
    r.section("Summary").table(_summary_rows(summary))
    r.section("Stress-strain curves").figure(
        _curves_figure(df), f"Volume-averaged Cauchy σ_zz against engineering strain ε_zz: each VE faint (the first "
        f"{MAX_CURVES} at most), the mean ± one standard deviation across converged VEs bold; non-converged runs "
        "dashed red up to their last converged increment.")
    r.section("Convergence").table(_convergence_rows(summary))
    failed = df.loc[~df["converged"].to_numpy(bool)]
    if len(failed):
        r.table([{"ve_id": row.ve_id, "increments completed": int(row.n_increments), "reason": row.reason}
                 for row in failed.head(max_failures).itertuples()],
                f"Non-converged VEs (first {min(len(failed), max_failures)} of {len(failed)}); they stay in the "
                "results with converged = false.")
    r.figure(_iterations_figure(df), "Global iterations per increment (mean and range over VEs) and cutbacks "
                                     "per increment (summed over VEs).")
    r.section("Wall time").figure(_wall_time_figure(df), f"Wall time per VE; mean "
                                  f"{summary['wall_time_s']['mean']:.3g} s.")
    if params:
        r.section("Parameters").json(params)
    if prov:
        r.section("Provenance").json({k: v for k, v in prov.items() if k != "params"})
    return BuiltReport(report=r, summary=summary, metrics=metrics_of(summary))


def report(df: pd.DataFrame, out_dir: str | os.PathLike, **kwargs: Any) -> BuiltReport:
    """Build the report (:func:`build_report`) and write ``report.html``, ``report.md``, ``metrics.json`` and
    ``summary.json`` to ``out_dir``."""
    built = build_report(df, **kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("report.html", built.report.to_html()), ("report.md", built.report.to_markdown()),
                       ("metrics.json", json.dumps(built.metrics, indent=1)),
                       ("summary.json", json.dumps(built.summary, indent=1))):
        store.write_text(str(out / name), text)
    log.info("wrote CP report to %s", out)
    return built


def _summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"quantity": "VEs", "value": summary["n_ve"], "note": ""},
        {"quantity": "converged", "value": summary["n_converged"],
         "note": f"{summary['n_converged'] / summary['n_ve']:.1%}"},
    ]
    for key, at in summary["stress_at"].items():
        rows.append({"quantity": f"σ_zz at ε_zz = {float(key):.1%} (MPa)", "value": at["mean_MPa"],
                     "note": "" if at["mean_MPa"] is None else
                     f"± {at['std_MPa']:.3g} (std), range {at['min_MPa']:.4g} … {at['max_MPa']:.4g}, "
                     f"{at['n']} VEs"})
    wall = summary["wall_time_s"]
    rows.append({"quantity": "wall time per VE (s)", "value": wall["mean"],
                 "note": f"range {wall['min']:.3g} … {wall['max']:.3g}, total {wall['total']:.4g}"})
    rows.append({"quantity": "global iterations per increment", "value": summary["iterations_per_increment_mean"],
                 "note": f"{summary['cutbacks_total']} cutbacks in all"})
    return rows


def _convergence_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [{"outcome": "converged", "VEs": summary["n_converged"]}]
    rows += [{"outcome": f"not converged: {reason or '(no reason given)'}", "VEs": n}
             for reason, n in sorted(summary["reasons"].items(), key=lambda kv: -kv[1])[:20]]
    if len(summary["reasons"]) > 20:
        rows.append({"outcome": f"not converged: {len(summary['reasons']) - 20} further reasons",
                     "VEs": sum(sorted(summary["reasons"].values(), reverse=True)[20:])})
    return rows


def _curves_figure(df: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ok = df["converged"].to_numpy(bool)
    alpha = max(0.05, min(0.5, 8.0 / max(len(df), 1)))
    shown = np.zeros(len(df), bool)
    shown[:MAX_CURVES] = True  # drawing 50,000 lines adds nothing to the picture but minutes
    shown |= ~ok
    for s, t, good in zip(df["strain"][shown], df["stress"][shown], ok[shown], strict=True):
        if good:
            ax.plot(100 * s, t / 1e6, color="C0", lw=0.7, alpha=alpha)
        else:
            ax.plot(100 * s, t / 1e6, color="C3", lw=0.8, ls="--", alpha=min(1.0, 2 * alpha))
    if (~ok).any():
        ax.plot([], [], color="C3", ls="--", label=f"{int((~ok).sum())} not converged")
    if ok.any():
        grid = max((np.asarray(s) for s, g in zip(df["strain"], ok, strict=True) if g), key=len)
        curves = np.array([np.interp(grid, s, t, right=np.nan)
                           for s, t, g in zip(df["strain"], df["stress"], ok, strict=True) if g]) / 1e6
        mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
        ax.fill_between(100 * grid, mean - std, mean + std, color="C0", alpha=0.25, lw=0, label="± 1 std")
        ax.plot(100 * grid, mean, color="k", lw=2, label=f"mean of {int(ok.sum())} converged VEs")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("engineering strain ε_zz (%)")
    ax.set_ylabel("Cauchy stress σ_zz (MPa)")
    ax.grid(alpha=0.3)
    return fig


def _iterations_figure(df: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    n = max((len(v) for v in df["iterations"]), default=0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    if n:
        its = np.full((len(df), n), np.nan)
        cuts = np.zeros(n)
        for k, (i, c) in enumerate(zip(df["iterations"], df["cutbacks"], strict=True)):
            its[k, :len(i)] = i
            cuts[:len(c)] += c
        x = np.arange(1, n + 1)
        a.fill_between(x, np.nanmin(its, axis=0), np.nanmax(its, axis=0), alpha=0.3, lw=0)
        a.plot(x, np.nanmean(its, axis=0), "o-", ms=3)
        b.bar(x, cuts, color="C1")
    a.set_xlabel("increment")
    a.set_ylabel("global iterations")
    b.set_xlabel("increment")
    b.set_ylabel("cutbacks (all VEs)")
    return fig


def _wall_time_figure(df: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    wall = df["wall_time_s"].to_numpy(float)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(wall, bins=min(30, max(5, len(wall) // 2)), alpha=0.7)
    ax.axvline(wall.mean(), color="k", ls="--", label=f"mean {wall.mean():.3g} s")
    ax.set_xlabel("wall time per VE (s)")
    ax.set_ylabel("VEs")
    ax.legend(fontsize=8)
    return fig
