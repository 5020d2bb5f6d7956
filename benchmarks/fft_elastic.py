"""FFT elastic homogenization: the preconditioned Galerkin conjugate-gradient solver (micropipe.spectral.elastic)
against the basic Moulinec-Suquet fixed-point scheme written plainly in numpy, same volumes, same tolerance, same
residual definition, one run (after one small warm-up solve).  Full 6x6 C-bar (6 load cases) of two-phase
random-sphere volumes.  The solver runs twice per case: its default (float32 CG iterations refining a float64
solution) and ``precision="double"`` (float64 throughout); each time is the median of REPEATS solves."""

import json
import logging
import os
import platform
import time

import numpy as np
import torch

from benchmarks import save_results
from micropipe.crystal import tensors
from micropipe.spectral import elastic
from micropipe.ve.twophase import overlapping_spheres

TOL = 1e-6
CASES = [(32, 10.0), (32, 1e3), (64, 10.0), (64, 1e3)]
NU = 0.3
REPEATS = 3
GPU_BATCH = 64
BASELINE_BUDGET_S = 120.0
"""The basic scheme needs ~contrast * ln(1/tol) iterations; past this budget it is stopped and the ratio
is a lower bound."""




def moulinec_suquet(phases: np.ndarray, E: list[float], nu: float, tol: float, budget_s: float):
    """Basic scheme, eps <- eps - Gamma0 * sigma(eps), reference medium the arithmetic mean of the extremes.

    Stops when ``||P sigma|| / ||C : E|| <= tol`` (the CG solver's criterion) for every load case.
    Returns (C-bar Mandel (6, 6), iterations, converged, seconds).
    """
    t0 = time.perf_counter()
    cells = phases.shape
    lam_p, mu_p = tensors.lame(np.asarray(E), nu)
    lam, mu = lam_p[phases], mu_p[phases]
    lam0, mu0 = 0.5 * (lam_p.min() + lam_p.max()), 0.5 * (mu_p.min() + mu_p.max())
    k = [np.fft.fftfreq(n, 1 / n) for n in cells[:2]] + [np.fft.rfftfreq(cells[2], 1 / cells[2])]
    xi = np.stack(np.meshgrid(*k, indexing="ij"))
    norm = np.sqrt((xi ** 2).sum(0))
    nvec = xi / np.where(norm > 0, norm, 1.0)
    # Nyquist: zero where a Nyquist component meets another non-zero one (as the solver does)
    nyq = np.stack([(np.abs(xi[i]) == cells[i] // 2) & (cells[i] % 2 == 0) for i in range(3)])
    nvec[:, nyq.any(0) & ((xi != 0).sum(0) > 1)] = 0.0
    w = np.full(xi.shape[-1], 2.0)
    w[0] = 1.0
    if cells[2] % 2 == 0:
        w[-1] = 1.0
    N = phases.size
    E_macro = tensors.from_mandel(np.eye(6))  # (6 load cases, 3, 3)
    eps = np.broadcast_to(E_macro[..., None, None, None], (6, 3, 3, *cells)).copy()
    eye = np.eye(3)[:, :, None, None, None]

    def stress(e):
        return lam * np.trace(e, axis1=1, axis2=2)[:, None, None] * eye + 2.0 * mu * e

    scale = np.sqrt((stress(eps) ** 2).sum((1, 2, 3, 4, 5)))
    it = 0
    while True:
        sigma_hat = np.fft.rfftn(stress(eps), axes=(-3, -2, -1))
        a = np.einsum("lij...,j...->li...", sigma_hat, nvec)
        q = np.einsum("li...,i...->l...", a, nvec)
        res2 = (w * (2.0 * (np.abs(a) ** 2).sum(1) - np.abs(q) ** 2)).sum((-3, -2, -1)) / N
        if np.all(np.sqrt(np.maximum(res2, 0)) <= tol * scale):
            converged = True
            break
        if time.perf_counter() - t0 > budget_s:
            converged = False
            break
        na = a[:, :, None] * nvec[None, None, :]
        gamma = (na + na.transpose(0, 2, 1, 3, 4, 5)) / (2 * mu0) \
            - (lam0 + mu0) / (mu0 * (lam0 + 2 * mu0)) * q[:, None, None] * nvec[None, :, None] * nvec[None, None, :]
        eps = eps - np.fft.irfftn(gamma, s=cells, axes=(-3, -2, -1))
        it += 1
    C = tensors.to_mandel(stress(eps).mean((-3, -2, -1))).T
    return C, it, converged, time.perf_counter() - t0


def median_of(solve):
    """(median seconds, last result) of REPEATS calls: the basic scheme runs once, so not the best of them."""
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        out = solve()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> None:
    logging.getLogger().setLevel(logging.WARNING)
    # warm-up: torch's first FFT call plans and starts its thread pool (~0.3 s, not part of a solve)
    elastic.homogenize(elastic.StiffnessField.from_phases(overlapping_spheres(16, n=2, radius=0.2, rng_seed=0),
                                                          tensors.isotropic_stiffness(E=[1.0, 2.0], nu=[NU, NU]),
                                                          device="cpu"), tol=TOL)
    rows = []
    for cells, contrast in CASES:
        phases = overlapping_spheres(cells, n=12, radius=0.14, rng_seed=0)
        E = [1.0, contrast]
        C_phases = tensors.isotropic_stiffness(E=E, nu=[NU, NU])
        field = elastic.StiffnessField.from_phases(phases, C_phases, device="cpu")
        cg = {p: median_of(lambda p=p, f=field: elastic.homogenize(f, tol=TOL, precision=p))
              for p in elastic.PRECISIONS}
        (t_cg, h), (t_cg64, h64) = cg["mixed"], cg["double"]
        C_ms, it_ms, conv, t_ms = moulinec_suquet(phases, E, NU, TOL, BASELINE_BUDGET_S)
        rows.append({"cells": cells, "contrast": contrast, "fraction": float(phases.mean()),
                     "cg_s": t_cg, "cg_iterations": int(h.iterations.max()), "cg_double_s": t_cg64,
                     "cg_double_iterations": int(h64.iterations.max()), "ms_s": t_ms, "ms_iterations": it_ms,
                     "ms_converged": conv, "ratio": t_ms / t_cg, "ratio_double": t_ms / t_cg64,
                     "C_rel_diff": float(np.abs(h.C[0] - C_ms).max() / np.abs(h.C[0]).max()),
                     "C_rel_diff_double": float(np.abs(h.C[0] - h64.C[0]).max() / np.abs(h.C[0]).max())})
        print(json.dumps(rows[-1]), flush=True)
    if torch.cuda.is_available():  # batched throughput, the goal: >= 1000 volumes of 32^3 per second
        phases = np.stack([overlapping_spheres(32, n=12, radius=0.14, rng_seed=s) for s in range(GPU_BATCH)])
        C_phases = tensors.isotropic_stiffness(E=[1.0, 10.0], nu=[NU, NU])
        field = elastic.StiffnessField.from_phases(phases, C_phases, device="cuda")
        for p in elastic.PRECISIONS:
            t, _ = median_of(lambda p=p: (elastic.homogenize(field, tol=TOL, precision=p), torch.cuda.synchronize())[0])
            print(f"cuda {torch.cuda.get_device_name()}: {GPU_BATCH} x 32^3, contrast 10, precision {p}: "
                  f"{t:.3f} s, {GPU_BATCH / t:.0f} volumes/s")
    print(f"\nFFT elastic homogenization, tol {TOL:g}, on {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    print(f"{'grid':>5s} {'contrast':>8s} {'CG s':>7s} {'CG it':>6s} {'CG64 s':>7s} {'CG64 it':>7s} {'MS s':>8s} "
          f"{'MS it':>6s} {'ratio':>7s} {'ratio64':>7s} {'C-bar diff':>10s}")
    for r in rows:
        lower = "" if r["ms_converged"] else ">"
        print(f"{r['cells']:>4d}³ {r['contrast']:>8g} {r['cg_s']:7.2f} {r['cg_iterations']:6d} {r['cg_double_s']:7.2f} "
              f"{r['cg_double_iterations']:7d} {r['ms_s']:8.1f} {lower}{r['ms_iterations']:5d} "
              f"{lower}{r['ratio']:6.1f} {lower}{r['ratio_double']:6.1f} {r['C_rel_diff']:10.1e}")
    save_results("fft_elastic", rows)


if __name__ == "__main__":
    main()
