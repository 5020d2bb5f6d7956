"""Built-in spectral crystal-plasticity solver: wall time per volume element, throughput against batch size,
peak memory, and the ratio to DAMASK_grid on the same VE and cores when the binary is on PATH.

Cu (DAMASK's phenopowerlaw example, micropipe/crystal/materials/Cu.yaml), random-texture Voronoi
polycrystals, seed 003's load case (uniaxial tension along z, 1e-3/s, 20 increments to 1 %).

``python -m benchmarks cp_solver`` runs the 8³ and 16³ cases on CPU (and every case on CUDA when available);
``--full`` adds 32³ / 50 grains on CPU, the issue's target size (about a minute more on 2 cores).
"""

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import damask
import numpy as np
import torch

from benchmarks import save_results
from micropipe.backends import damask_grid
from micropipe.crystal import shipped_material
from micropipe.crystal.loadcase import uniaxial_tension_z
from micropipe.crystal.material import load_phase, material_config, material_from_config
from micropipe.spectral import cp

CASES = [(8, 10), (16, 20)]
FULL_CASES = [(32, 50)]
TARGET_CASE = (32, 50)
TARGET_S_CPU = 60.0
"""The issue's targets: a 32³ / 50-grain Cu VE in <= 60 s on 2 CPU cores, >= 1 such VE per second on one GPU."""
TARGET_VES_PER_S_GPU = 1.0
BATCHES = (1, 4)
"""Batch sizes for the throughput rows (8³ only on CPU; every size on CUDA)."""


def volume_element(cells: int, grains: int, seed: int):
    """Grain ids (cells³) of a Voronoi tessellation with random seeds, and its Cu material (random texture)."""
    size = np.ones(3)
    seeds = damask.seeds.from_random(size, grains, np.array([cells] * 3), rng_seed=seed)
    ids = damask.GeomGrid.from_Voronoi_tessellation(np.array([cells] * 3), size, seeds).material
    phase = load_phase(shipped_material("Cu"))
    O = damask.Rotation.from_random(grains, rng_seed=seed + 1000).as_quaternion()
    return ids, material_from_config(material_config({"Cu": phase}, O, "Cu")), phase, O


def run(cells: int, grains: int, batch: int, device: str) -> dict:
    """Solve ``batch`` VEs together; wall time per VE, convergence, cutbacks, peak memory."""
    ves = [volume_element(cells, grains, seed) for seed in range(batch)]
    phase = ves[0][2]
    ids = np.stack([v[0] for v in ves])
    O = np.stack([v[3] for v in ves])
    lc = uniaxial_tension_z()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    results = cp.solve_orientations(phase, ids, O, lc, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"cells": cells, "grains": grains, "batch": batch, "device": device, "threads": torch.get_num_threads(),
            "wall_s": wall, "s_per_ve": wall / batch, "ves_per_s": batch / wall,
            "converged": sum(r.converged for r in results), "cutbacks": int(sum(r.cutbacks.sum() for r in results)),
            "iterations": int(sum(r.iterations.sum() for r in results)),
            "sigma_zz_1pct_MPa": float(np.mean([r.sigma[-1, 2, 2] for r in results if r.converged] or [np.nan])) / 1e6,
            "peak_memory_MiB": peak / 2**20}


def versus_damask(cells: int, grains: int) -> dict | None:
    """DAMASK_grid and the built-in solver on the same VE and the same cores; None without the binary."""
    if damask_grid.find_binary() is None:
        return None
    ids, material, _, _ = volume_element(cells, grains, 0)
    lc = uniaxial_tension_z()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ref = damask_grid.solve(ids, material, lc, workdir=Path(tmp), nprocs=torch.get_num_threads())
        t_damask = time.perf_counter() - t0
    t0 = time.perf_counter()
    (ours,) = cp.solve(ids, material, lc, device="cpu")
    t_ours = time.perf_counter() - t0
    return {"cells": cells, "grains": grains, "damask_s": t_damask, "builtin_s": t_ours, "ratio": t_damask / t_ours,
            "sigma_zz_rel_diff": float(np.abs(ours.sigma[1:, 2, 2] - ref.sigma[1:, 2, 2]).max()
                                       / np.abs(ref.sigma[1:, 2, 2]).max())}


def main() -> None:
    full = "--full" in sys.argv
    rows = []
    cases = CASES + (FULL_CASES if full else [])
    for cells, grains in cases:
        for batch in BATCHES if cells == 8 else (1,):
            rows.append(run(cells, grains, batch, "cpu"))
            print(json.dumps(rows[-1]), flush=True)
    if torch.cuda.is_available():
        for cells, grains in CASES + FULL_CASES:
            for batch in (1, 8, 32):
                rows.append(run(cells, grains, batch, "cuda"))
                print(json.dumps(rows[-1]), flush=True)
    comparison = [c for c in (versus_damask(cells, grains) for cells, grains in cases) if c is not None]
    print(f"\nBuilt-in CP solver, Cu, 20 increments to 1 %, on {platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"{'grid':>5s} {'grains':>6s} {'dev':>4s} {'batch':>5s} {'s/VE':>8s} {'VE/s':>8s} {'conv':>5s} "
          f"{'cutbacks':>8s} {'peak MiB':>9s}")
    for r in rows:
        print(f"{r['cells']:>4d}³ {r['grains']:6d} {r['device']:>4s} {r['batch']:5d} {r['s_per_ve']:8.1f} "
              f"{r['ves_per_s']:8.3f} {r['converged']:>2d}/{r['batch']:<2d} {r['cutbacks']:8d} "
              f"{r['peak_memory_MiB']:9.0f}")
    for r in rows:
        if (r["cells"], r["grains"]) == TARGET_CASE:
            target = TARGET_S_CPU if r["device"] == "cpu" else 1.0 / TARGET_VES_PER_S_GPU
            print(f"target {TARGET_CASE[0]}³ / {TARGET_CASE[1]} grains on {r['device']} (batch {r['batch']}): "
                  f"{r['s_per_ve']:.1f} s per VE against {target:g} s, {r['s_per_ve'] / target:.1f}x the target")
    if comparison:
        for c in comparison:
            print(f"DAMASK_grid {c['cells']}³: {c['damask_s']:.1f} s, built-in {c['builtin_s']:.1f} s, "
                  f"ratio {c['ratio']:.2f}, max sigma_zz difference {c['sigma_zz_rel_diff']:.2%}")
    else:
        print("DAMASK_grid not on PATH: no side-by-side ratio")
    save_results("cp_solver", {"rows": rows, "damask": comparison})


if __name__ == "__main__":
    main()
