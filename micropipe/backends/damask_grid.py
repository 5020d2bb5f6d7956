"""DAMASK_grid backend: write geometry, material, load case and numerics, run ``DAMASK_grid``, read the result.

Used by the ``damask`` image (``DAMASK_grid`` on PATH); everywhere else the built-in spectral solver
(:mod:`micropipe.spectral.cp`) is the default.  The inputs are DAMASK's own formats, written with the damask
library: ``geom.vti`` (:class:`damask.GeomGrid`), ``material.yaml`` (:class:`damask.ConfigMaterial`),
``load.yaml`` (:class:`damask.LoadcaseGrid`) and ``numerics.yaml`` (:func:`~micropipe.crystal.numerics.save_numerics`).
The run is ``DAMASK_grid --load load.yaml --geom geom.vti --material material.yaml [--numerics numerics.yaml]
--jobname JOB`` in the case directory (under ``mpiexec -n N`` for N > 1 processes); DAMASK_grid (3.0 and later)
writes ``JOB.hdf5`` (DADF5, read with :class:`damask.Result`) and ``JOB.sta`` (one line per converged
(sub-)increment: increment, time, cutback level, converged, iterations[, staggered iterations]).  Without
``--jobname`` DAMASK would name them ``geom_load_material[_numerics]``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import damask
import numpy as np

from micropipe.backends import BackendUnavailable, find_executable, tail
from micropipe.crystal.loadcase import Loadcase, loadcase_from_config, save_loadcase
from micropipe.crystal.material import Material
from micropipe.crystal.numerics import Numerics, save_numerics
from micropipe.spectral.cp import CPResult
from micropipe.store import atomic_path

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

BINARY_ENV = "MICROPIPE_DAMASK_GRID"
"""Environment variable naming the DAMASK_grid executable; wins over PATH."""
NOT_FOUND = "DAMASK_grid not found on PATH (nor in $MICROPIPE_DAMASK_GRID); use the built-in solver or the damask image"
BACKEND = "damask_grid"

GEOM, MATERIAL, LOAD, NUMERICS = "geom.vti", "material.yaml", "load.yaml", "numerics.yaml"
"""File names of a case directory."""
LOG = "DAMASK_grid.log"
"""DAMASK_grid's stdout and stderr, in the case directory."""
JOBNAME = "micropipe"
"""Default ``--jobname``: results in ``micropipe.hdf5``, convergence in ``micropipe.sta``."""
REQUIRED_OUTPUT = ("F", "P")
"""Phase outputs (``phase/*/mechanical/output``) that :func:`read_result` needs; added when missing."""


class DamaskGridError(RuntimeError):
    """DAMASK_grid failed or timed out.

    Attributes
    ----------
    log : pathlib.Path
        Its output.
    returncode : int or None
        Exit status; None after a timeout.
    result : pathlib.Path or None
        The results file, when DAMASK_grid had written one (it holds the increments that converged).
    """

    def __init__(self, message: str, *, log: Path, returncode: int | None, result: Path | None):
        super().__init__(message)
        self.log, self.returncode, self.result = log, returncode, result


# --------------------------------------------------------------------------------------------------
# writing a case
# --------------------------------------------------------------------------------------------------

def write_case(workdir: PathLike, material_ids: np.ndarray, size: Sequence[float],
               material_config: damask.ConfigMaterial | Mapping[str, Any] | Material,
               loadcase: Loadcase | Mapping[str, Any], numerics: Numerics | None = None) -> dict[str, Path]:
    """Write the DAMASK_grid input files of one volume element into ``workdir`` (created if missing).

    Parameters
    ----------
    workdir : str or os.PathLike
        The case directory.
    material_ids : numpy.ndarray of int, shape (X, Y, Z)
        0-based index into ``material_config['material']`` per cell (DAMASK's ``material`` field).
    size : sequence of 3 float
        Edge lengths of the box, m (only ratios matter for local constitutive models).
    material_config : damask.ConfigMaterial, mapping or Material
        Material configuration as in material.yaml (a :class:`~micropipe.crystal.material.Material` is
        converted).  Phases without ``F`` and ``P`` in ``mechanical/output`` get them added, since
        :func:`read_result` averages them; the input is not modified.
    loadcase : Loadcase or mapping
        The load case (a mapping as in load.yaml is validated first).
    numerics : Numerics, optional
        Written as numerics.yaml in DAMASK 3.x layout.  None writes no file (and removes a stale one), so
        DAMASK_grid uses its own defaults, as the reference runs in ``shared/refs/damask`` did.

    Returns
    -------
    paths : dict of str to pathlib.Path
        ``'geom'``, ``'material'``, ``'load'`` and, when written, ``'numerics'``.

    Raises
    ------
    ValueError
        Bad ``material_ids``, ``size``, material configuration or load case, or a material id in the grid
        without an entry in the material configuration (the message names material.yaml and the ids).
    """
    workdir = Path(workdir).expanduser()
    ids = _material_ids(material_ids)
    size_ = _size(size)
    if not isinstance(loadcase, Loadcase):
        loadcase = loadcase_from_config(loadcase, source="loadcase")
    config = _material_config(material_config, workdir / MATERIAL)
    n_entries = len(config["material"])
    present = np.unique(ids)
    missing = present[(present < 0) | (present >= n_entries)]
    if missing.size:
        raise ValueError(f"{workdir / MATERIAL}: material id(s) {missing.tolist()} of the grid have no entry; "
                         f"'material' has {n_entries} entries, expected every id in 0..{n_entries - 1}")
    if n_entries > present.size:
        log.debug("%s: %d of %d material entries are not used by the grid", workdir / MATERIAL,
                  n_entries - present.size, n_entries)

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"geom": workdir / GEOM, "material": workdir / MATERIAL, "load": workdir / LOAD}
    with atomic_path(paths["geom"]) as tmp:
        damask.GeomGrid(material=ids, size=size_,
                        comments=f"micropipe DAMASK_grid backend, cells {ids.shape}").save(tmp)
    with atomic_path(paths["material"]) as tmp:
        config.save(tmp)
    save_loadcase(loadcase, paths["load"])
    if numerics is not None:
        paths["numerics"] = save_numerics(numerics, workdir / NUMERICS)
    elif (workdir / NUMERICS).exists():
        (workdir / NUMERICS).unlink()
        log.info("removed stale %s: no numerics given, DAMASK_grid uses its defaults", workdir / NUMERICS)
    log.info("wrote DAMASK_grid case %s (cells %s, %d materials)", workdir, ids.shape, n_entries)
    return paths


def _material_ids(material_ids: Any) -> np.ndarray:
    ids = np.asarray(material_ids)
    if ids.ndim != 3 or 0 in ids.shape:
        raise ValueError(f"material_ids: expected a non-empty array of shape (X, Y, Z), got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"material_ids: expected integer material ids, got dtype {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def _size(size: Any) -> np.ndarray:
    try:
        s = np.asarray(size, dtype=float)
    except (TypeError, ValueError):
        s = np.full(0, np.nan)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or not np.all(s > 0):
        raise ValueError(f"size: expected 3 positive finite edge lengths in m, got {size!r}")
    return s


def _material_config(config: Any, where: Path) -> damask.ConfigMaterial:
    """A deep copy of ``config`` as ConfigMaterial, checked for its layout, with F and P in every phase's output."""
    if isinstance(config, Material):
        config = _config_from_material(config)
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: material configuration must be a mapping or damask.ConfigMaterial, "
                         f"got {type(config).__name__}")
    cfg = damask.ConfigMaterial(copy.deepcopy(dict(config)))
    for key in ("homogenization", "phase", "material"):
        if not cfg.get(key):
            raise ValueError(f"{where}: missing or empty top-level key {key!r}")
    if not isinstance(cfg["phase"], Mapping) or not isinstance(cfg["homogenization"], Mapping):
        raise ValueError(f"{where}: 'phase' and 'homogenization' must map names to definitions")
    if not isinstance(cfg["material"], list):
        raise ValueError(f"{where}: 'material' must be a list of entries, got {type(cfg['material']).__name__}")
    for i, entry in enumerate(cfg["material"]):
        constituents = entry.get("constituents") if isinstance(entry, Mapping) else None
        if not isinstance(constituents, list) or not constituents:
            raise ValueError(f"{where}: material entry {i}: expected a mapping with a non-empty 'constituents' list")
        for j, c in enumerate(constituents):
            if not isinstance(c, Mapping) or c.get("phase") not in cfg["phase"]:
                raise ValueError(f"{where}: material entry {i}, constituent {j}: 'phase' must name one of "
                                 f"{', '.join(map(str, cfg['phase']))}, got {c!r}")
    for name, phase in cfg["phase"].items():
        mech = phase.get("mechanical") if isinstance(phase, Mapping) else None
        if not isinstance(mech, dict):
            raise ValueError(f"{where}: phase {name!r}: missing key 'mechanical'")
        output = list(mech.get("output") or [])
        added = [o for o in REQUIRED_OUTPUT if o not in output]
        if added:
            mech["output"] = output + added
            log.info("%s: phase %r: added %s to mechanical/output (read_result averages them)", where, name, added)
    return cfg


def _config_from_material(m: Material) -> dict[str, Any]:
    return {
        "homogenization": copy.deepcopy(dict(m.homogenizations)),
        "phase": {name: copy.deepcopy(dict(p.config)) for name, p in m.phases.items()},
        "material": [{"constituents": [{"phase": c.phase, "O": [float(q) for q in c.O], "v": float(c.v)}
                                       for c in entry.constituents],
                      "homogenization": entry.homogenization} for entry in m.materials],
    }


# --------------------------------------------------------------------------------------------------
# running DAMASK_grid
# --------------------------------------------------------------------------------------------------

def find_binary() -> str | None:
    """Path of ``DAMASK_grid``: ``$MICROPIPE_DAMASK_GRID`` if set (a path or a name on PATH), else from PATH."""
    return find_executable("DAMASK_grid", BINARY_ENV)


def command(workdir: PathLike, *, binary: str, nprocs: int = 1, jobname: str = JOBNAME) -> list[str]:
    """The DAMASK_grid command line for the case in ``workdir`` (file names relative to it).

    ``--numerics`` is given when ``workdir/numerics.yaml`` exists.  With ``nprocs`` > 1 the command runs under
    ``mpiexec -n nprocs`` when mpiexec is on PATH, else serially (with a warning).
    """
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs: expected a positive integer number of MPI processes, got {nprocs!r}")
    if not isinstance(jobname, str) or not jobname or "/" in jobname or jobname != jobname.strip() \
            or any(c.isspace() for c in jobname):
        raise ValueError(f"jobname: expected a file name stem without '/' or spaces, got {jobname!r}")
    cmd = [binary, "--load", LOAD, "--geom", GEOM, "--material", MATERIAL]
    if (Path(workdir) / NUMERICS).is_file():
        cmd += ["--numerics", NUMERICS]
    cmd += ["--jobname", jobname]
    if nprocs > 1:
        mpiexec = shutil.which("mpiexec")
        if mpiexec is None:
            log.warning("nprocs=%d but mpiexec is not on PATH; running DAMASK_grid as one process", nprocs)
        else:
            cmd = [mpiexec, "-n", str(nprocs)] + cmd
    return cmd


def run(workdir: PathLike, *, nprocs: int = 1, timeout: float | None = None, jobname: str = JOBNAME) -> Path:
    """Run DAMASK_grid on the case in ``workdir`` (see :func:`write_case`); return the results file.

    Parameters
    ----------
    workdir : str or os.PathLike
        Case directory with geom.vti, material.yaml, load.yaml and optionally numerics.yaml.
    nprocs : int
        MPI processes (``mpiexec -n nprocs``).
    timeout : float, optional
        Wall-clock limit in s; the process group is terminated when it is exceeded.
    jobname : str
        ``--jobname``: the results are ``workdir/<jobname>.hdf5`` and ``workdir/<jobname>.sta``; stale files of
        that name are removed first.

    Returns
    -------
    hdf5 : pathlib.Path
        The DADF5 results file.

    Raises
    ------
    BackendUnavailable
        DAMASK_grid is not installed.
    FileNotFoundError
        An input file is missing.
    DamaskGridError
        (a RuntimeError) Non-zero exit, timeout or no results file; the message names the log
        (``workdir/DAMASK_grid.log``) and ends with its last lines.
    """
    binary = find_binary()
    if binary is None:
        raise BackendUnavailable(NOT_FOUND)
    workdir = Path(workdir).expanduser().resolve()
    for name in (GEOM, MATERIAL, LOAD):
        if not (workdir / name).is_file():
            raise FileNotFoundError(f"{workdir / name}: DAMASK_grid input not found; write the case with write_case")
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"timeout: expected a positive number of seconds or None, got {timeout!r}")
    cmd = command(workdir, binary=binary, nprocs=nprocs, jobname=jobname)
    result, sta, log_path = workdir / f"{jobname}.hdf5", workdir / f"{jobname}.sta", workdir / LOG
    for stale in (result, sta):
        stale.unlink(missing_ok=True)  # a stale result must not pass for this run's
    log.info("running %s in %s", " ".join(cmd), workdir)
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # own process group: a timeout ends mpiexec's ranks too
        try:
            returncode: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _terminate(proc)
            returncode = None
    written = result if result.is_file() else None
    if returncode is None:
        raise DamaskGridError(f"DAMASK_grid timed out after {timeout} s in {workdir}; log {log_path}:\n"
                              f"{_tail(log_path)}", log=log_path, returncode=None, result=written)
    if returncode != 0:
        raise DamaskGridError(f"DAMASK_grid failed (exit {returncode}) in {workdir}; log {log_path}:\n"
                              f"{_tail(log_path)}", log=log_path, returncode=returncode, result=written)
    if written is None:
        raise DamaskGridError(f"DAMASK_grid finished but wrote no {result}; log {log_path}:\n{_tail(log_path)}",
                              log=log_path, returncode=returncode, result=None)
    log.info("DAMASK_grid finished: %s", result)
    return result


def _terminate(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return tail(text, lines)


# --------------------------------------------------------------------------------------------------
# reading results
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Convergence:
    """DAMASK_grid's ``.sta`` file: one row per converged (sub-)increment.

    Attributes
    ----------
    increment : numpy.ndarray of int, shape (m,)
        Increment number (counted over all load steps, 1-based); repeated for the sub-steps of a cutback.
    time : numpy.ndarray, shape (m,)
        Time at the end of the (sub-)increment, s.
    cutback_level : numpy.ndarray of int, shape (m,)
        Cutback level of the (sub-)increment (its time step is the increment's divided by 2**level).
    converged : numpy.ndarray of bool, shape (m,)
    iterations : numpy.ndarray of int, shape (m,)
        Mechanical solver iterations.
    """

    increment: np.ndarray
    time: np.ndarray
    cutback_level: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray

    def per_output(self, output_increments: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Iterations (summed) and cutback level (largest) between consecutive output increments.

        Parameters
        ----------
        output_increments : sequence of int, length n
            Increments with results, ascending, the undeformed state (0) first.

        Returns
        -------
        iterations, cutbacks : numpy.ndarray of int, shape (n - 1,)
            For output k, over the rows with ``output_increments[k-1] < increment <= output_increments[k]``.
        """
        out = np.asarray(output_increments, dtype=int)
        iterations = np.zeros(max(out.size - 1, 0), dtype=int)
        cutbacks = np.zeros_like(iterations)
        for k in range(1, out.size):
            rows = (self.increment > out[k - 1]) & (self.increment <= out[k])
            iterations[k - 1] = self.iterations[rows].sum()
            cutbacks[k - 1] = self.cutback_level[rows].max(initial=0)
        return iterations, cutbacks


_STA_COLUMNS = ("Increment", "Time", "CutbackLevel", "Converged", "IterationsNeeded")


def load_sta(path: PathLike) -> Convergence:
    """Read DAMASK_grid's convergence file ``<jobname>.sta``.

    The header must start with ``Increment Time CutbackLevel Converged IterationsNeeded`` (DAMASK 3.x; later
    versions add ``StagIterationsNeeded``, which is not kept); ``Converged`` is Fortran's ``T``/``F``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Another header or a malformed row; the message names the file, the line and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: DAMASK_grid convergence file not found")
    lines = path.read_text().splitlines()
    header = lines[0].split() if lines else []
    if tuple(header[:len(_STA_COLUMNS)]) != _STA_COLUMNS:
        raise ValueError(f"{path}: line 1: expected the header {' '.join(_STA_COLUMNS)} [...], got {header}")
    rows: list[tuple[int, float, int, bool, int]] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) < len(_STA_COLUMNS) or fields[3] not in ("T", "F"):
                raise ValueError
            rows.append((int(fields[0]), float(fields[1]), int(fields[2]), fields[3] == "T", int(fields[4])))
        except ValueError:
            raise ValueError(f"{path}: line {number}: expected {len(header)} columns ({' '.join(header)}) "
                             f"with integers, a time and T/F, got {line.strip()!r}") from None
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    return Convergence(increment=np.array(cols[0], dtype=int), time=np.array(cols[1], dtype=float),
                       cutback_level=np.array(cols[2], dtype=int), converged=np.array(cols[3], dtype=bool),
                       iterations=np.array(cols[4], dtype=int))


def output_increments(loadcase: Loadcase) -> list[int]:
    """Increments DAMASK_grid writes results for: 0, then every ``f_out``-th increment of each load step.

    Increments are counted over all load steps (DAMASK's ``totalIncsCounter``); the ``f_out`` test uses the
    increment within its step, so the last increment of a step is written only when ``f_out`` divides ``N``.
    """
    out, offset = [0], 0
    for step in loadcase.steps:
        out += [offset + i for i in range(1, step.N + 1) if i % step.f_out == 0]
        offset += step.N
    return out


def read_result(hdf5_path: PathLike, *, wall_time: float, loadcase: Loadcase) -> CPResult:
    """Volume-averaged response from a DAMASK_grid results file (DADF5).

    F and P of every cell are read with :class:`damask.Result` per increment; the Cauchy stress of each cell is
    :func:`damask.mechanics.stress_Cauchy` (what ``Result.add_stress_Cauchy`` stores, computed here without
    writing to the file).  Averages give every cell the same weight, as DAMASK's post-processing does for a
    grid.  Iterations and cutbacks come from ``<stem>.sta`` beside the file when it exists, else they are 0.

    Parameters
    ----------
    hdf5_path : str or os.PathLike
        ``<jobname>.hdf5``.
    wall_time : float
        Seconds the run took (stored in the result).
    loadcase : Loadcase
        The load case that was run: the run converged when every output increment of it is in the file.

    Returns
    -------
    result : CPResult
        One row per increment in the file (time, F, P, sigma of shape (n,), (n, 3, 3)); ``converged`` False
        with a reason naming the last increment present when the file stops short of the load case.

    Raises
    ------
    FileNotFoundError
        If ``hdf5_path`` does not exist.
    ValueError
        The file has more than one constituent per cell, or lacks the phase outputs F and P.
    """
    path = Path(hdf5_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: DAMASK results file not found")
    r = damask.Result(path)
    if r.N_constituents != 1:
        raise ValueError(f"{path}: {r.N_constituents} constituents per cell, expected 1 (homogenization 'pass')")
    increments = [int(name.split("_")[-1]) for name in r.increments]
    F, P = np.empty((len(increments), 3, 3)), np.empty((len(increments), 3, 3))
    sigma = np.empty_like(F)
    for k, name in enumerate(r.increments):
        data = r.view(increments=name).get(["F", "P"], flatten=False) or {}
        phases = data.get(name, {}).get("phase", {})
        F_k = _cells(phases, "F", path, name, r.N_materialpoints)
        P_k = _cells(phases, "P", path, name, r.N_materialpoints)
        F[k], P[k] = F_k.mean(axis=0), P_k.mean(axis=0)
        sigma[k] = damask.mechanics.stress_Cauchy(P_k, F_k).mean(axis=0)
    times = np.asarray(r.times, dtype=float)

    expected = output_increments(loadcase)
    missing = [i for i in expected if i not in increments]
    extra = sorted(set(increments) - set(expected))
    if extra:
        log.warning("%s: increments %s are not output increments of the given load case", path, extra)
    converged = not missing
    reason = "" if converged else (
        f"{path}: results stop at increment {increments[-1]} (t = {times[-1]:g} s); the load case writes up to "
        f"increment {expected[-1]} (t = {sum(s.t for s in loadcase.steps):g} s), missing {_ranges(missing)}")

    sta = path.with_suffix(".sta")
    if sta.is_file():
        iterations, cutbacks = load_sta(sta).per_output(increments)
    else:
        log.debug("%s: no convergence file %s; iterations and cutbacks set to 0", path, sta)
        iterations = cutbacks = np.zeros(max(len(increments) - 1, 0), dtype=int)
    return CPResult(converged=converged, reason=reason, time=times, F=F, P=P, sigma=sigma, iterations=iterations,
                    cutbacks=cutbacks, wall_time=float(wall_time), backend=BACKEND)


def _cells(phases: Mapping[str, Any], label: str, path: Path, increment: str, n_cells: int) -> np.ndarray:
    """``label`` of every cell in one increment, shape (n_cells, 3, 3): the phases' arrays one after the other."""
    arrays = [np.asarray(fields[label]) for fields in
              (phase.get("mechanical", {}) for phase in phases.values()) if label in fields]
    total = sum(a.shape[0] for a in arrays)
    if total != n_cells:
        raise ValueError(f"{path}: {increment}: phase output {label!r} found for {total} of {n_cells} cells; "
                         f"expected it in phase/*/mechanical/output of every phase")
    return np.concatenate(arrays, axis=0).reshape(n_cells, 3, 3)


def _ranges(values: Sequence[int]) -> str:
    if len(values) <= 3:
        return ", ".join(map(str, values))
    return f"{values[0]}..{values[-1]} ({len(values)} increments)"


# --------------------------------------------------------------------------------------------------
# all together
# --------------------------------------------------------------------------------------------------

def solve(material_ids: np.ndarray, material_config: damask.ConfigMaterial | Mapping[str, Any] | Material,
          loadcase: Loadcase | Mapping[str, Any], *, size: Sequence[float] | None = None,
          numerics: Numerics | None = None, workdir: PathLike | None = None, nprocs: int = 1,
          timeout: float | None = None) -> CPResult:
    """Solve one volume element with DAMASK_grid: :func:`write_case`, :func:`run`, :func:`read_result`.

    Parameters
    ----------
    material_ids : numpy.ndarray of int, shape (X, Y, Z)
        0-based material entry per cell.
    material_config : damask.ConfigMaterial, mapping or Material
        As material.yaml.
    loadcase : Loadcase or mapping
        Boundary conditions and increments.
    size : sequence of 3 float, optional
        Box edge lengths, m; default ``cells`` (as the built-in solver).
    numerics : Numerics, optional
        None: DAMASK_grid's own defaults (no numerics.yaml).
    workdir : str or os.PathLike, optional
        Case directory, kept; default a temporary directory, removed afterwards.
    nprocs : int
        MPI processes, at most the number of cells along z (DAMASK_grid gives each process a slab of z-layers).
    timeout : float, optional
        Wall-clock limit for DAMASK_grid, s.

    Returns
    -------
    result : CPResult
        ``backend='damask_grid'``.  When DAMASK_grid stops early (it exits with an error once an increment fails
        after ``N_cutback_max`` cutbacks) or times out, the increments it wrote are returned with
        ``converged=False`` and a reason naming the exit and the last increment.

    Raises
    ------
    BackendUnavailable
        DAMASK_grid is not installed (raised before anything is written).
    ValueError
        Bad inputs (see :func:`write_case`).
    DamaskGridError
        DAMASK_grid failed without writing a readable results file.
    """
    if find_binary() is None:
        raise BackendUnavailable(NOT_FOUND)
    ids = _material_ids(material_ids)
    if not isinstance(loadcase, Loadcase):
        loadcase = loadcase_from_config(loadcase, source="loadcase")
    size_ = np.asarray(ids.shape, dtype=float) if size is None else size
    if isinstance(nprocs, int) and not isinstance(nprocs, bool) and nprocs > ids.shape[2]:
        log.info("nprocs=%d > %d cells along z; DAMASK_grid splits the grid into z-slabs, using %d processes",
                 nprocs, ids.shape[2], ids.shape[2])
        nprocs = ids.shape[2]
    keep = workdir is not None
    with (contextlib.nullcontext(workdir) if keep else tempfile.TemporaryDirectory(prefix="micropipe-damask-grid-")
          ) as where:
        case = Path(where).expanduser()
        start = time.perf_counter()
        write_case(case, ids, size_, material_config, loadcase, numerics)
        try:
            hdf5 = run(case, nprocs=nprocs, timeout=timeout)
        except DamaskGridError as e:
            if e.result is None:
                raise
            log.warning("%s", e)
            try:
                res = read_result(e.result, wall_time=time.perf_counter() - start, loadcase=loadcase)
            except Exception as read_error:
                raise e from read_error
            why = "timed out" if e.returncode is None else f"exited with code {e.returncode}"
            kept = f"; log {e.log}" if keep else ""
            return dataclasses.replace(res, converged=False,
                                       reason=f"DAMASK_grid {why}{kept}; {res.reason or 'all increments written'}")
        return read_result(hdf5, wall_time=time.perf_counter() - start, loadcase=loadcase)


def available() -> bool:
    """Whether DAMASK_grid can be run here."""
    return find_binary() is not None
