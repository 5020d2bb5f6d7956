"""3D WGAN-GP training speed (iterations per second, one critic and one generator step of batch 8) against
the paper's 1e5 iterations in about 1 h on an RTX 3090 (~28 it/s, §4.1, growing critic at 32^3), for the
paper widths and the small preset, on the CPU and, when present, on CUDA with mixed precision.

``python -m benchmarks.wgan3d [--full]``: the default keeps to ~2 minutes on two CPU cores; ``--full`` adds
the constant-critic and 64^3 cases on the CPU and runs longer."""

import logging
import sys
import tempfile
import time

import numpy as np
import torch

from benchmarks import device_cases, machine, save_results
from micropipe.models.wgan3d import PRESETS
from micropipe.train.wgan import TrainConfig, train

PAPER_IT_PER_S = 1e5 / 3600  # §4.1: growing topology, 1e5 iterations in about 1 h on an RTX 3090
# (preset, warm-up iterations, timed iterations) per device; CPU numbers keep the default run short.
CASES = {
    "cpu": [("small", 2, 10), ("spheres32", 1, 5)],
    "cpu_full": [("small", 2, 20), ("spheres32", 1, 10), ("spheres32_constant", 1, 2), ("wpc64", 1, 2)],
    "cuda": [("small", 20, 100), ("spheres32", 20, 100), ("spheres32_constant", 10, 50),
             ("spheres32_best", 10, 50), ("wpc64", 5, 20)],
}


def _rate(preset: str, device: str, warmup: int, timed: int) -> dict:
    g, d = PRESETS[preset]
    size = g.out_size
    volumes = (np.random.default_rng(0).random((64, size, size, size)) < 0.2).astype(np.uint8)
    stamps: list[float] = []

    def stamp(step: int) -> None:
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        result = train(volumes, tmp, g, d, TrainConfig(iterations=warmup + timed, checkpoint_every=10**9,
                                                        log_every=10**9), device=device, on_step=stamp)
    seconds = stamps[-1] - stamps[warmup - 1]
    return {"preset": preset, "device": device, "size": size, "G_params": result.generator.n_params(),
            "D_params": result.discriminator.n_params(), "iterations": timed, "it_per_s": timed / seconds,
            "amp": device == "cuda"}


def main(full: bool | None = None) -> None:
    full = "--full" in sys.argv[1:] if full is None else full
    logging.getLogger("micropipe").setLevel(logging.WARNING)
    rows = [_rate(preset, device, warmup, timed) for device, (preset, warmup, timed) in device_cases(CASES, full)]
    print(machine("3D WGAN-GP training") + "; batch 8, 1 critic step")
    print(f"{'preset':20s} {'device':6s} {'size':>4s} {'G params':>9s} {'D params':>9s} {'it/s':>8s} "
          f"{'vs paper':>8s} {'1e5 it':>8s}")
    for r in rows:
        hours = 1e5 / r["it_per_s"] / 3600
        print(f"{r['preset']:20s} {r['device']:6s} {r['size']:4d} {r['G_params'] / 1e6:8.2f}M "
              f"{r['D_params'] / 1e6:8.2f}M {r['it_per_s']:8.2f} {r['it_per_s'] / PAPER_IT_PER_S:8.3f} "
              f"{hours:7.1f}h")
    print(f"paper: 1e5 iterations of spheres32 in ~1 h on an RTX 3090 = {PAPER_IT_PER_S:.1f} it/s "
          f"(constant critic ~3 h); 'vs paper' is it/s divided by that")
    save_results("wgan3d", {"torch": torch.__version__, "paper_it_per_s": PAPER_IT_PER_S, "rows": rows})


if __name__ == "__main__":
    main()
