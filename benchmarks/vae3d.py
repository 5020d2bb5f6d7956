"""3D ResNet VAE training speed (VE/s of forward + backward + Adam step on synthetic VEs, after warm-up) for
ResNet12 and ResNet18 at 32^3 and 64^3, at the paper widths (64-512, hidden 8192, |z| 256) and a small
width (16-128), on the CPU and, when present, on CUDA with bfloat16 autocast (and float32 for comparison).

References: seed 003 trains ResNet18 on 1e5 64^3 VEs for 200 epochs in ~28 h on two A100s (§2.1.1, §3.1.1),
~99 VE/s per A100 (validation passes not counted); our goal is >= 400 VE/s at 64^3 on one H100.

``python -m benchmarks.vae3d [--full]``: the default keeps to ~5 minutes on two CPU cores (~11 GB of
memory for the 64^3 paper-width model with Adam's state); ``--full`` adds ResNet12 at 64^3 paper width and
more timed steps and runs ~15 minutes.
"""

import logging
import sys
import time

import numpy as np
import torch

from benchmarks import device_cases, machine, save_results
from micropipe.models.vae3d import VAE3D, VAEConfig
from micropipe.train.vae import train_step

PAPER_VE_PER_S = 200 * 100_000 / (28 * 3600) / 2  # §3.1.1: 200 epochs x 1e5 VEs in ~28 h on 2 A100s, per GPU
GOAL_VE_PER_S = 400.0  # 64^3 on one H100
WIDTHS = {"paper": (64, 128, 256, 512), "small": (16, 32, 64, 128)}
# (depth, size, width, batch, warm-up steps, timed steps, amp) per device; CPU numbers keep the default short.
CASES = {
    "cpu": [(12, 32, "small", 4, 1, 3, False), (18, 32, "small", 4, 1, 3, False),
            (12, 32, "paper", 2, 1, 2, False), (18, 32, "paper", 2, 1, 2, False),
            (12, 64, "small", 2, 1, 2, False), (18, 64, "small", 2, 1, 2, False),
            (18, 64, "paper", 1, 1, 1, False)],
    "cpu_full": [(12, 32, "small", 4, 2, 6, False), (18, 32, "small", 4, 2, 6, False),
                 (12, 32, "paper", 4, 1, 4, False), (18, 32, "paper", 4, 1, 4, False),
                 (12, 64, "small", 2, 1, 4, False), (18, 64, "small", 2, 1, 4, False),
                 (12, 64, "paper", 2, 1, 2, False), (18, 64, "paper", 2, 1, 2, False)],
    "cuda": [(d, s, w, 32, 5, 20, True) for s in (32, 64) for w in ("small", "paper") for d in (12, 18)]
    + [(18, 64, "paper", 32, 3, 10, False), (34, 64, "paper", 32, 3, 10, True)],
}


def _gflop_per_ve(config: VAEConfig) -> float:
    """Forward + backward FLOP per VE (multiply-add = 2), counted on the meta device (no memory, no time)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        model = VAE3D(config)
        x = torch.empty(1, *config.input_shape)
        with FlopCounterMode(display=False) as counter:
            model(x)[0].sum().backward()
    return counter.get_total_flops() / 1e9


def _rate(depth: int, size: int, width: str, batch: int, warmup: int, timed: int, amp: bool, device: str) -> dict:
    config = VAEConfig(depth=depth, size=size, channels=WIDTHS[width])
    dev = torch.device(device)
    torch.manual_seed(0)
    model = VAE3D(config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=1e-5, fused=dev.type == "cuda" or None)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_dtype = torch.bfloat16 if amp else None
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *config.input_shape, generator=gen).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        train_step(model, optimizer, None, x, amp_dtype=amp_dtype, generator=gen)
    sync()
    t0 = time.perf_counter()
    for _ in range(timed):
        train_step(model, optimizer, None, x, amp_dtype=amp_dtype, generator=gen)
    sync()
    seconds = time.perf_counter() - t0
    gflop = _gflop_per_ve(config)
    rate = batch * timed / seconds
    row = {"depth": depth, "size": size, "width": width, "device": device, "amp": "bf16" if amp else "fp32",
           "batch": batch, "steps": timed, "params": model.n_params(), "gflop_per_ve": gflop, "ve_per_s": rate,
           "tflop_per_s": rate * gflop / 1e3}
    if dev.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    del model, optimizer
    return row


def _surrogate_inference(device: str) -> dict:
    """Seconds per VE of the seed's surrogate (256 -> 512 -> 21) from fingerprints: a batch of 4096, and one VE."""
    from micropipe.models.surrogate import MinMaxScaler, Surrogate, SurrogateConfig, predict

    model = Surrogate(SurrogateConfig(in_dim=256)).to(device).eval()
    scaler = MinMaxScaler(0.0, 2e8)
    X = np.random.default_rng(0).normal(size=(4096, 256)).astype(np.float32)
    out = {"device": device}
    for name, x in (("batch_4096", X), ("single", X[:1])):
        predict(model, scaler, x, device=device)
        best = np.inf
        for _ in range(20):
            t = time.perf_counter()
            predict(model, scaler, x, device=device)
            best = min(best, time.perf_counter() - t)
        out[name] = best / len(x)
    return out


def main(full: bool | None = None) -> None:
    full = "--full" in sys.argv[1:] if full is None else full
    logging.getLogger("micropipe").setLevel(logging.WARNING)
    rows = [_rate(*case, device=device) for device, case in device_cases(CASES, full)]
    print(machine("3D ResNet VAE training (forward + backward + Adam)"))
    print(f"{'model':9s} {'size':>4s} {'width':6s} {'device':6s} {'amp':4s} {'batch':>5s} {'params':>8s} "
          f"{'GFLOP/VE':>8s} {'VE/s':>8s} {'TFLOP/s':>7s} {'vs A100':>7s} {'vs goal':>7s} {'epoch 1e5':>9s}")
    for r in rows:
        hours = 1e5 / r["ve_per_s"] / 3600
        goal = f"{r['ve_per_s'] / GOAL_VE_PER_S:7.3f}" if r["size"] == 64 else f"{'-':>7s}"
        print(f"ResNet{r['depth']:<3d} {r['size']:4d} {r['width']:6s} {r['device']:6s} {r['amp']:4s} {r['batch']:5d} "
              f"{r['params'] / 1e6:7.1f}M {r['gflop_per_ve']:8.1f} {r['ve_per_s']:8.2f} {r['tflop_per_s']:7.3f} "
              f"{r['ve_per_s'] / PAPER_VE_PER_S:7.4f} {goal} {hours:8.2f}h")
    print(f"'vs A100': VE/s / {PAPER_VE_PER_S:.0f} (seed: ResNet18, 64^3, paper width, 200 epochs x 1e5 VEs in ~28 h "
          f"on 2 A100s); 'vs goal': VE/s / {GOAL_VE_PER_S:.0f} (64^3 on one H100). Paper width: channels "
          f"{WIDTHS['paper']}, small: {WIDTHS['small']}; hidden 8192, |z| 256, stem stride 2.")
    inference = [_surrogate_inference(d) for d in ("cpu", "cuda") if d == "cpu" or torch.cuda.is_available()]
    print("\nSurrogate inference (256 -> 512 -> 21, min-max inverse included), seconds per VE, best of 20; "
          "seed: O(1e-4) s on an Apple M3 Max")
    for r in inference:
        print(f"  {r['device']:5s} batch of 4096: {r['batch_4096']:.2e} s/VE   one VE: {r['single']:.2e} s")
    save_results("vae3d", {"torch": torch.__version__, "paper_ve_per_s_per_a100": PAPER_VE_PER_S,
                           "goal_ve_per_s_h100": GOAL_VE_PER_S, "rows": rows, "surrogate_inference": inference})


if __name__ == "__main__":
    main()
