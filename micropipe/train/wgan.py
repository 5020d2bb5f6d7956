"""WGAN-GP training loop of seed 001 (Algorithm 1, Eqs. (29)-(33)) with resumable checkpoints.

Per iteration: ``critic_steps`` critic updates on ``L_D = E[D(G(z))] - E[D(I_data)] + lambda E[(|grad D(I^)| - 1)^2]``
(Eqs. (29)-(31)), then one generator update on ``L_G = -E[D(G(z))]`` (Eq. (32)). The paper updates both
once per iteration (Algorithm 1) and keeps the critic ahead with ``alpha_D = 2 alpha_G`` instead of extra
critic steps, so ``critic_steps = 1`` by default. Real volumes are standardised to mean 0, std 1 (§3.4) and
the generator's output range is set to the standardised voxel range, Eq. (26).

All randomness (batch indices, ``z``, interpolation weights) comes from one CPU ``torch.Generator`` whose
state is checkpointed, so on the CPU a resumed run repeats the uninterrupted one bit for bit.
Mixed precision (float16 autocast with a GradScaler per network) runs only on CUDA.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from micropipe.models.checkpoint import check_config, load_checkpoint, save_checkpoint
from micropipe.models.wgan3d import KIND, Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from micropipe.params import FromDict
from micropipe.train import loss_log

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOSS_LOG = "loss_log.csv"
LOG_FIELDS = ("step", "wasserstein", "gp", "loss_d", "loss_g")
"""Loss-log columns: iteration (1-based), W estimate E[D(real)] - E[D(fake)], penalty, L_D, L_G."""
_RESUMABLE = ("iterations", "checkpoint_every", "log_every")  # may change between a run and its resumption


@dataclass(frozen=True)
class TrainConfig(FromDict):
    """Optimisation of seed 001, §4 and Table 1.

    iterations : int
        Generator updates (paper 1e5 to 3e6).
    batch_size : int
        ``n_B`` (8).
    critic_steps : int
        Critic updates per generator update (1, Algorithm 1).
    lr_d, lr_g : float
        Nadam learning rates (1e-4, 5e-5); the mapping network's 0.1 multiplier is inside the model.
    beta1, beta2 : float
        Nadam moments (0.9, 0.999).
    gp_weight : float
        ``lambda`` of Eq. (31) (10).
    clip_norm : float or None
        Global gradient-norm clipping per network; the paper clips but gives no value, 1.0 is our choice.
    checkpoint_every, log_every : int
        Iterations between checkpoints (plus one at the end) and between progress log lines.
    seed : int
        Seed of the run's random stream.
    amp : bool
        Mixed precision on CUDA (the paper's TensorFlow mixed precision); ignored on the CPU.
    """

    iterations: int = 100_000
    batch_size: int = 8
    critic_steps: int = 1
    lr_d: float = 1e-4
    lr_g: float = 5e-5
    beta1: float = 0.9
    beta2: float = 0.999
    gp_weight: float = 10.0
    clip_norm: float | None = 1.0
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0
    amp: bool = True

    def __post_init__(self):
        for name in ("iterations", "batch_size", "critic_steps", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "iterations" else 1):
                raise ValueError(f"invalid {name} {value!r}; expected a positive integer")
        for name in ("lr_d", "lr_g"):
            if not getattr(self, name) > 0:
                raise ValueError(f"invalid {name} {getattr(self, name)!r}; expected > 0")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"invalid clip_norm {self.clip_norm!r}; expected > 0 or None")


@dataclass
class TrainResult:
    """What :func:`train` leaves: the networks, the step reached, the loss log and the checkpoint path."""

    generator: Generator
    discriminator: Discriminator
    step: int
    loss_log: list[dict[str, float]]
    checkpoint: Path


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor,
                     weight: float = 10.0, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """``L_GP = weight * E[(||grad_x D(x^)||_2 - 1)^2]``, Eq. (31), at ``x^ = eps real + (1 - eps) fake``.

    Parameters
    ----------
    critic : nn.Module
        Maps (B, ...) to (B,).
    real, fake : torch.Tensor, shape (B, ...)
    eps : torch.Tensor, shape (B, 1, ...)
        Interpolation weights, uniform on [0, 1].
    scaler : GradScaler or None
        Under mixed precision the input gradient is taken of the scaled output (no float16 underflow)
        and unscaled before the norm, as in PyTorch's AMP gradient-penalty recipe.

    Returns
    -------
    gp : torch.Tensor, shape ()
        Differentiable with respect to the critic's parameters.
    """
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    out = critic(x_hat).sum()
    if scaler is not None and scaler.is_enabled():
        (grad,) = torch.autograd.grad(scaler.scale(out), x_hat, create_graph=True)
        grad = grad.float() / scaler.scale(torch.ones((), device=grad.device))  # 1/scale without a host sync
    else:
        (grad,) = torch.autograd.grad(out, x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(dim=1)
    return weight * ((norm - 1) ** 2).mean()


def standardize_stats(volumes: torch.Tensor) -> dict[str, float]:
    """Mean and std of all voxels, and the standardised range ``[value_min, value_max]`` of Eq. (26)."""
    x = volumes.to(torch.float64)
    mean, std = x.mean().item(), x.std().item()
    if not std > 0:
        raise ValueError(f"training volumes are constant (all voxels {mean}); need both phases")
    return {"mean": mean, "std": std, "value_min": (x.min().item() - mean) / std,
            "value_max": (x.max().item() - mean) / std, "n": int(volumes.shape[0])}


def _as_volumes(volumes: Any, size: int) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(volumes)) if not isinstance(volumes, torch.Tensor) else volumes
    if v.ndim != 4 or tuple(v.shape[1:]) != (size,) * 3 or v.shape[0] < 1:
        raise ValueError(f"invalid volumes of shape {tuple(v.shape)}; expected (N, {size}, {size}, {size})")
    if v.dtype != torch.uint8 and v.dtype != torch.bool:
        raise ValueError(f"invalid volumes dtype {v.dtype}; expected uint8 (binary phases 0/1)")
    v = v.to(torch.uint8)
    if (top := int(v.max())) > 1:
        raise ValueError(f"invalid voxel value {top} in volumes; expected binary phases 0/1")
    return v


def read_loss_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``loss_log.csv`` (``step`` as int, the rest as float)."""
    return loss_log.read(path, "step")


def train(volumes: Any, out_dir: str | Path, generator: GeneratorConfig | None = None,
          discriminator: DiscriminatorConfig | None = None, config: TrainConfig | None = None,
          device: str | torch.device | None = None, resume: bool = True,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train the 3D WGAN-GP, checkpointing to ``out_dir`` and resuming from it.

    Parameters
    ----------
    volumes : array_like, shape (N, S, S, S), uint8
        Binary training volumes (phase 1 = inclusion); S must equal both configs' sizes.
    out_dir : str or Path
        Holds ``checkpoint.pt`` (latest, written atomically) and ``loss_log.csv``.
    generator, discriminator : config or None
        Architecture (defaults: the §4.1 growing setup at 32^3). The generator's value range is replaced
        by that of the standardised data.
    config : TrainConfig or None
    device : str, torch.device or None
        None picks CUDA when available.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when present (same step count, loss log, RNG stream) up
        to ``config.iterations``; its architecture must match, else ValueError. False starts afresh and
        overwrites it.
    on_step : callable or None
        Called with the completed iteration count after every iteration (progress, timing, stopping).
    """
    from micropipe.device import pick_device

    config = config or TrainConfig()
    generator = generator or GeneratorConfig()
    discriminator = discriminator or DiscriminatorConfig()
    if generator.out_size != discriminator.in_size:
        raise ValueError(f"generator out_size {generator.out_size} != discriminator in_size {discriminator.in_size}")
    data = _as_volumes(volumes, generator.out_size)
    stats = standardize_stats(data)
    generator = dataclasses.replace(generator, value_min=stats["value_min"], value_max=stats["value_max"])
    device = pick_device(None if device is None else str(device))
    use_amp = config.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest 3D kernels

    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT
    with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the global stream
        torch.manual_seed(config.seed)
        G, D = Generator(generator).to(device), Discriminator(discriminator).to(device)
    opt_g = torch.optim.NAdam(G.parameters(), lr=config.lr_g, betas=(config.beta1, config.beta2))
    opt_d = torch.optim.NAdam(D.parameters(), lr=config.lr_d, betas=(config.beta1, config.beta2))
    scaler_g = torch.amp.GradScaler(device.type, enabled=use_amp)
    scaler_d = torch.amp.GradScaler(device.type, enabled=use_amp)
    rng = torch.Generator().manual_seed(config.seed)
    step, rows, saved_at = 0, [], None
    run_config = {"generator": generator, "discriminator": discriminator, "train": config,
                  "data": {k: stats[k] for k in ("mean", "std", "n")}}

    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, kind=KIND, map_location=device,
                               config={"generator": generator, "discriminator": discriminator})
        _warn_changes(ckpt["config"], run_config)
        G.load_state_dict(ckpt["model"]["generator"])
        D.load_state_dict(ckpt["model"]["discriminator"])
        opt_g.load_state_dict(ckpt["optimizer"]["generator"])
        opt_d.load_state_dict(ckpt["optimizer"]["discriminator"])
        for scaler, name in ((scaler_g, "generator"), (scaler_d, "discriminator")):
            if ckpt["scaler"][name]:  # empty when saved without mixed precision
                scaler.load_state_dict(ckpt["scaler"][name])
        rng.set_state(ckpt["rng"].cpu())  # map_location moved it with the rest
        step, rows = ckpt["step"], list(ckpt["loss_log"])[: ckpt["step"]]
        saved_at = step
        log.info("resuming %s from %s at step %d of %d", KIND, ckpt_path, step, config.iterations)
    else:
        log.info("training %s from scratch on %s: G %d, D %d parameters, %d volumes of %d^3",
                 KIND, device, G.n_params(), D.n_params(), stats["n"], generator.out_size)

    def save() -> None:
        nonlocal saved_at
        saved_at = step
        save_checkpoint(ckpt_path, {
            "kind": KIND, "config": run_config, "step": step, "best_metric": None, "seed": config.seed,
            "model": {"generator": G.state_dict(), "discriminator": D.state_dict()},
            "optimizer": {"generator": opt_g.state_dict(), "discriminator": opt_d.state_dict()},
            "scaler": {"generator": scaler_g.state_dict(), "discriminator": scaler_d.state_dict()},
            "rng": rng.get_state(), "loss_log": rows})
        loss_log.write(out_dir / LOSS_LOG, rows, LOG_FIELDS)

    data = data.to(device)
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=use_amp)
    B, N = config.batch_size, data.shape[0]

    def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.randint(N, (B,), generator=rng)
        z = torch.randn(B, generator.z_dim, generator=rng)
        eps = torch.rand(B, 1, 1, 1, 1, generator=rng)
        real = (data[idx.to(device)].unsqueeze(1).float() - stats["mean"]) / stats["std"]
        return real, z.to(device), eps.to(device)

    def update(loss: torch.Tensor, net: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler):
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.clip_norm is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(net.parameters(), config.clip_norm)
        scaler.step(opt)
        scaler.update()

    pending: list[torch.Tensor] = []  # per-iteration losses kept on the device: no sync every step

    def flush() -> None:
        if pending:
            values = torch.stack(pending).double().cpu().tolist()
            first = step - len(pending) + 1
            rows.extend(dict(zip(LOG_FIELDS, (first + i, *v), strict=True)) for i, v in enumerate(values))
            pending.clear()

    t0, s0 = time.perf_counter(), step
    G.train()
    D.train()
    while step < config.iterations:
        acc = torch.zeros(3, device=device)
        for _ in range(config.critic_steps):
            real, z, eps = draw()
            with torch.no_grad(), autocast:
                fake = G(z)
            with autocast:
                w_est = D(real).float().mean() - D(fake).float().mean()
                gp = gradient_penalty(D, real, fake, eps, config.gp_weight, scaler_d)
                loss_d = gp - w_est
            update(loss_d, D, opt_d, scaler_d)
            acc += torch.stack([w_est, gp, loss_d]).detach()
        z = torch.randn(B, generator.z_dim, generator=rng).to(device)
        D.requires_grad_(False)  # the generator step needs gradients through D, not of D's weights
        with autocast:
            loss_g = -D(G(z)).float().mean()
        update(loss_g, G, opt_g, scaler_g)
        D.requires_grad_(True)
        step += 1
        pending.append(torch.cat([acc / config.critic_steps, loss_g.detach()[None]]))
        if step % config.log_every == 0 or step == config.iterations:
            flush()
            r = rows[-1]
            log.info("step %d/%d  W %.4g  GP %.4g  L_D %.4g  L_G %.4g  (%.2f it/s)", step, config.iterations,
                     r["wasserstein"], r["gp"], r["loss_d"], r["loss_g"], (step - s0) / (time.perf_counter() - t0))
        if step % config.checkpoint_every == 0 or step == config.iterations:
            flush()
            save()
        if on_step is not None:
            on_step(step)
    flush()
    if saved_at != step:  # 0 iterations requested on a fresh run
        save()
    return TrainResult(G, D, step, rows, ckpt_path)


def _warn_changes(saved: dict[str, Any], requested: dict[str, Any]) -> None:
    """Log changes of training settings or data on resumption; the architecture was checked already."""
    for part in ("train", "data"):
        req = dataclasses.asdict(requested[part]) if part == "train" else requested[part]
        old = {k: v for k, v in saved.get(part, {}).items() if k not in _RESUMABLE}
        new = {k: v for k, v in req.items() if k not in _RESUMABLE}
        try:
            check_config(old, new, source="the checkpoint")
        except ValueError as err:
            log.warning("resuming with changed %s settings (%s)", part, str(err).split("differs in ", 1)[-1])
