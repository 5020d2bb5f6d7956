"""VE generation speed: the size-targeted Laguerre generator against a plain Voronoi tessellation of the
same seeds (the cost of hitting the grain-size targets), measured side by side in one run, plus shard
write/read throughput and the projected cost of the paper preset."""

import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import damask
import numpy as np

from benchmarks import save_results
from micropipe.ve import io
from micropipe.ve.generator import GeneratorConfig, generate, ve_seed

CASES = {
    "small preset 32^3": {"cells": 32, "spacing": 0.5},
    "paper 64^3 (~40 grains)": {"cells": 64, "spacing": 0.25},
    "small grains 64^3 (~380 grains)": {"cells": 64, "spacing": 0.25, "morphology": "small_grains"},
}
REPEATS = 5


def _best(fn, repeats=REPEATS):
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        out = fn(i)
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), out


def main() -> None:
    logging.getLogger().setLevel(logging.WARNING)  # damask configures the root logger at INFO on import
    rows = []
    for name, params in CASES.items():
        config = GeneratorConfig.from_dict(params)
        t_gen, med_gen, ve = _best(lambda i, c=config: generate(c, rng_seed=ve_seed(0, i)))
        seeds = damask.seeds.from_random(config.size, ve.N_grains, rng_seed=1)

        def voronoi(i, c=config, s=seeds):
            return damask.GeomGrid.from_Voronoi_tessellation(c.cells, c.size, s, periodic=True)

        t_vor, med_vor, _ = _best(voronoi)
        with tempfile.TemporaryDirectory() as tmp:
            ves = {f"ve_{i:07d}": generate(config, rng_seed=ve_seed(0, i)) for i in range(8)}
            path = Path(tmp) / "shard.h5"
            t_w, _, _ = _best(lambda i, p=path, v=ves: io.write_shard(p, v, provenance={}), 3)
            t_r, _, _ = _best(lambda i, p=path: io.read_shard(p), 3)
            kb = path.stat().st_size / 1e3 / len(ves)
        rows.append({"case": name, "grains": ve.N_grains, "generate_s": t_gen, "generate_median_s": med_gen,
                     "voronoi_s": t_vor, "ratio_generate_over_voronoi": t_gen / t_vor,
                     "shard_kB_per_ve": kb, "write_ve_per_s": len(ves) / t_w, "read_ve_per_s": len(ves) / t_r})
    paper = rows[1]["generate_median_s"]
    print(f"\nVE generation on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"best of {REPEATS}, one process (damask's KD-tree query may use several threads)")
    print(f"{'case':34s} {'grains':>6s} {'gen s':>8s} {'voronoi s':>9s} {'ratio':>6s} {'kB/VE':>7s} "
          f"{'write VE/s':>10s} {'read VE/s':>9s}")
    for r in rows:
        print(f"{r['case']:34s} {r['grains']:6d} {r['generate_s']:8.3f} {r['voronoi_s']:9.3f} "
              f"{r['ratio_generate_over_voronoi']:6.1f} {r['shard_kB_per_ve']:7.1f} {r['write_ve_per_s']:10.1f} "
              f"{r['read_ve_per_s']:9.1f}")
    print(f"\npaper preset (100,000 VEs of 64^3): {paper * 1e5 / 3600:.1f} process-hours of generation "
          f"at {paper:.2f} s per VE")
    save_results("bench_ve", {"rows": rows})


if __name__ == "__main__":
    main()
