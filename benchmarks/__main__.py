"""Run benchmarks: `python -m benchmarks [name ...] [--full]` (all of them when no name is given)."""

import sys

from benchmarks import bench_ve, cp_solver, fft_elastic, vae3d, wgan3d

BENCHMARKS = {"ve": bench_ve.main, "fft_elastic": fft_elastic.main, "wgan3d": wgan3d.main,
              "cp_solver": cp_solver.main, "vae3d": vae3d.main}

if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    for name in names:
        BENCHMARKS[name]()
