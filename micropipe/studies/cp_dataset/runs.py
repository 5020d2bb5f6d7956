"""Crystal plasticity of the VEs of one shard (the ``cp_runs`` step of cp_dataset and cp_surrogate): solve every VE
with the chosen backend, one results row per VE, and write the shard's results unless complete results of the
same VEs and parameters are already in the store."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import damask
import numpy as np
import pandas as pd

from micropipe import backends, store
from micropipe import provenance as _provenance
from micropipe.crystal.loadcase import Loadcase
from micropipe.crystal.material import Phase
from micropipe.crystal.numerics import Numerics
from micropipe.datasets import cp_results
from micropipe.datasets import ve as ve_dataset
from micropipe.datasets.shards import check_checksum
from micropipe.studies.cp_dataset.inputs import (
    check_cells,
    parameters,
    resolve_loadcase,
    resolve_numerics,
    resolve_phase,
)
from micropipe.ve import io
from micropipe.ve.volume import VolumeElement, resample

log = logging.getLogger(__name__)

def check_backend(backend: str) -> str:
    """``backend`` if it names a CP solver (:func:`micropipe.backends.get`), else a ``ValueError``."""
    return backends.get("cp", backend).name


def quaternions(euler: np.ndarray) -> np.ndarray:
    """DAMASK unit quaternions, shape (G, 4), of Bunge Euler angles in radians, shape (G, 3)."""
    return damask.Rotation.from_Euler_angles(np.asarray(euler, float), degrees=False).as_quaternion()


def run_shard(shard_path: str | os.PathLike, material_phase: Phase, loadcase: Loadcase, *,
              numerics: Numerics | None = None, backend: str = "builtin", device: Any = None,
              batch_size: int = 8, progress: bool | None = None, threads: int | None = None,
              nprocs: int | None = None, timeout: float | None = None,
              cells: Sequence[int] | None = None) -> pd.DataFrame:
    """Solve every VE of one HDF5 VE shard; one row per VE (columns: :mod:`micropipe.datasets.cp_results`).

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
    damask_grid = backends.get("cp", backend).require()  # None: the built-in solver
    cells = check_cells(cells)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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
    return cp_results.frame([rows[ve_id] for ve_id, _ in ves])


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
        return [cp_results.failed_row(ve_id, f"solver error: {type(e).__name__}: {e}", backend="builtin",
                           wall_time=time.perf_counter() - start, n_grains=ve.N_grains, cells=ve.cells)]
    return [cp_results.result_row(ve_id, r, n_grains=ve.N_grains, cells=ve.cells)
            for (ve_id, ve), r in zip(batch, results, strict=True)]


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
                rows.append(cp_results.failed_row(ve_id, f"solver error: {type(e).__name__}: {e}",
                                                  backend="damask_grid",
                                       wall_time=time.perf_counter() - start, n_grains=ve.N_grains,
                                       cells=ve.cells))
                continue
        rows.append(cp_results.result_row(ve_id, result, n_grains=ve.N_grains, cells=ve.cells))
    return rows


def write_shard(dataset_uri: str, shard_index: int, *, material: str | Phase = "Cu",
                loadcase: Mapping[str, Any] | Loadcase | None = None,
                numerics: Mapping[str, Any] | Numerics | None = None, backend: str = "builtin",
                device: Any = None, batch_size: int = 8, progress: bool | None = None,
                threads: int | None = None, cells: Sequence[int] | None = None, force: bool = False) -> str:
    """Run CP on VE shard ``shard_index`` of a gathered VE dataset; write its results; return their URI.

    Skips the work when complete results of the same VEs (:func:`micropipe.datasets.cp_results.ve_digest`) and
    parameters are already at ``<dataset_uri>/cp/shards/shard-<index>.parquet``, unless ``force``.

    Parameters
    ----------
    dataset_uri : str
        A VE dataset with its manifest (:func:`micropipe.datasets.ve.gather`).
    shard_index : int
        Index into the manifest's shards.
    material, loadcase, numerics
        See :func:`resolve_phase`, :func:`resolve_loadcase`, :func:`resolve_numerics`.
    backend, device, batch_size, progress, threads, cells
        See :func:`run_shard`.
    force : bool
        Compute even when complete results exist.
    """
    check_backend(backend)
    phase = material if isinstance(material, Phase) else resolve_phase(material)
    lc = resolve_loadcase(loadcase)
    nm = resolve_numerics(numerics)
    manifest = ve_dataset.load_manifest(dataset_uri)
    shards = manifest["shards"]
    if isinstance(shard_index, bool) or not 0 <= int(shard_index) < len(shards):
        raise ValueError(f"shard_index must lie in [0, {len(shards) - 1}] for the {len(shards)} shards of "
                         f"{dataset_uri}, got {shard_index!r}")
    shard = shards[int(shard_index)]
    cells = check_cells(cells)
    params = parameters(phase, lc, nm, backend, cells)
    sha = _provenance.digest(params)
    out = store.join(dataset_uri, cp_results.shard_results_name(int(shard_index)))
    ve_uri = store.join(dataset_uri, shard["path"])
    with store.local_copy(ve_uri) as path:
        if shard.get("sha256"):  # the VEs the dataset was gathered with (manifests before checksums have none)
            check_checksum(ve_uri, path, shard["sha256"])
        ve_sha = cp_results.ve_digest(path)
        if not force and cp_results.shard_complete(out, shard["n_ve"], sha, ve_sha):
            log.info("%s is complete (%d VEs); skipping shard %d", out, shard["n_ve"], shard_index)
            return out
        record = _provenance.record(seed=manifest["provenance"].get("seed"), step="cp.write_shard",
                                    params={**params, "dataset_uri": dataset_uri, "shard_index": int(shard_index),
                                            "ve_shard": shard["path"], "ve_sha256": ve_sha, "batch_size": batch_size,
                                            "device": str(device) if device else None})
        df = run_shard(path, phase, lc, numerics=nm, backend=backend, device=device, batch_size=batch_size,
                       progress=progress, threads=threads, cells=cells)
    cp_results.write_results(df, out, record, params_sha256=sha, ve_sha256=ve_sha)
    return out
