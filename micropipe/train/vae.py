"""Training loop of the ResNet3D VAE of seed 003 (loss §2.2.3, Adam §2.2.2 and §3.1) with resumable
checkpoints. Loading a trained VAE and its fingerprints ``mu`` (§2.2.1) are the model's
(:meth:`micropipe.models.vae3d.VAE3D.from_checkpoint`, :func:`micropipe.models.vae3d.encode_mean`).

Per epoch: one pass over the training VEs in a random order (batches of ``batch_size``, the last
incomplete one dropped), then a deterministic validation pass (BatchNorm in eval mode, ``z = mu``). The
run keeps the latest state in ``checkpoint.pt``, the best-validation weights in ``best.pt`` and one
loss-log row per epoch in ``loss_log.csv``.

All randomness after the seeded initial weights (data order, reparameterisation noise) comes from one CPU
``torch.Generator`` whose state is checkpointed, so on the CPU a resumed run repeats the uninterrupted one
bit for bit. Mixed precision runs only on CUDA: bfloat16 autocast by default (no loss scaling needed; the
exponent range of float32 keeps 3D BatchNorm sums and ``exp(logvar)`` finite), or float16 with a
GradScaler. The loss itself is always computed in float32.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from micropipe.models.checkpoint import check_config, load_checkpoint, save_checkpoint
from micropipe.models.vae3d import KIND, VAE3D, VAEConfig, as_dataset, autocast, data_loader
from micropipe.params import FromDict
from micropipe.train import loss_log

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
LOSS_LOG = "loss_log.csv"
LOSS_TERMS = ("bce", "spectral", "kl", "stats", "total")
LOG_FIELDS = ("epoch", *(f"train_{k}" for k in LOSS_TERMS), *(f"val_{k}" for k in LOSS_TERMS), "wall_s", "ve_per_s")
"""Loss-log columns: epoch (1-based); mean training and validation terms of :func:`vae_loss` (validation NaN
without validation data); wall time of the epoch in s (training + validation); training throughput in VE/s."""
STOP_EPOCHS, STOP_PATIENCE = "epochs", "patience"
"""Values of ``TrainResult.stopped_reason``: all ``epochs`` done, or early stopping after ``patience``."""
AMP_DTYPES = ("bfloat16", "float16")
_RESUMABLE = ("epochs", "patience", "checkpoint_every", "num_workers")  # may change on resumption


def vae_loss(x: torch.Tensor, x_hat: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, alpha: float = 0.999,
             kl_weight: float | None = None, stats: tuple[torch.Tensor, torch.Tensor] | None = None,
             stats_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Seed 003 loss, Eq. (1), plus the KL term: ``alpha BCE + (1 - alpha) L_FFT + kl_weight KL``, plus
    ``stats_weight`` times the auxiliary head's error when the model has one (not in seed 003).

    Parameters
    ----------
    x, x_hat : torch.Tensor, shape (B, C, N, N, N)
        VEs and reconstructions, values in [0, 1] (``x_hat`` strictly inside, from a sigmoid).
    mu, logvar : torch.Tensor, shape (B, latent_dim)
        Mean and ``ln(sigma^2)`` of q(z|x).
    alpha : float
        Weight of the BCE against the Fourier term (0.999, §2.2.3).
    kl_weight : float or None
        Weight of the KL divergence; None is ``1 / (C N^3)``, one over the number of values per VE.
    stats : (prediction, target) or None
        The auxiliary head's output and its target, each (B, C) (:meth:`VAE3D.predict_stats`,
        :meth:`VAE3D.channel_stats`); None for a model without the head.
    stats_weight : float
        Weight of the ``stats`` term (0: seed 003's loss).

    Returns
    -------
    dict of str to torch.Tensor, each shape (), float32
        ``bce``: binary cross-entropy, mean over all B C N^3 values. ``spectral``: L_FFT, mean over all
        B C N^3 coefficients of the per-channel 3D FFT (``norm='backward'``, unnormalised forward) of
        ``|F(x) - F(x_hat)|^2 = (Re diff)^2 + (Im diff)^2``. ``kl``: ``KL(q(z|x) || N(0, 1))`` =
        ``-1/2 sum_j (1 + logvar - mu^2 - exp(logvar))``, summed over the latent, mean over the batch.
        ``stats``: mean squared error of the auxiliary head over B C values (0 without ``stats``).
        ``total``: ``alpha bce + (1 - alpha) spectral + kl_weight kl + stats_weight stats``.

    Notes
    -----
    By Parseval, with these normalisations ``spectral = N^3 MSE(x, x_hat)`` exactly: the Fourier term is a
    scaled mean squared error. Checked on a generated 64^3 cubic VE (~40 grains, random texture): the
    ratio spectral / BCE is 3.4e4 for ``x_hat = 0.5`` (an untrained decoder), 2.3e4 for the per-channel
    mean and 3.2e3 for a 5^3 box blur of ``x``, so the seed's "1e4 to 1e5 times larger" holds early in
    training with these normalisations; it falls as training lowers the MSE, while the BCE stays above the
    entropy of the non-binary targets (~0.5 here).

    The seed does not state the KL weight. With ``1 / (C N^3)`` and ``alpha = 1`` the total is the negative
    ELBO of a Bernoulli decoder per input value (BCE is a per-value mean, KL is per VE), the usual VAE
    balance; the Fourier term then adds a reconstruction penalty on top. Larger weights trade
    reconstruction for a smoother latent space.

    The FFT is taken of ``x - x_hat`` (linear, so equal to ``F(x) - F(x_hat)``), in float32 outside any
    autocast region: cuFFT's float16 needs power-of-2 sizes and would lose precision in sums of N^3 terms.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"invalid alpha {alpha!r}; expected a weight in [0, 1]")
    if kl_weight is not None and not kl_weight >= 0:
        raise ValueError(f"invalid kl_weight {kl_weight!r}; expected >= 0 or None")
    if not stats_weight >= 0:
        raise ValueError(f"invalid stats_weight {stats_weight!r}; expected >= 0")
    if x.shape != x_hat.shape or x.ndim < 4:
        raise ValueError(f"invalid shapes x {tuple(x.shape)}, x_hat {tuple(x_hat.shape)}; expected equal "
                         f"(B, C, N, N, N)")
    if kl_weight is None:
        kl_weight = 1.0 / x[0].numel()
    with torch.autocast(x.device.type, enabled=False):
        x, x_hat, mu, logvar = x.float(), x_hat.float(), mu.float(), logvar.float()
        bce = F.binary_cross_entropy(x_hat, x)
        diff = torch.fft.fftn(x - x_hat, dim=(-3, -2, -1), norm="backward")
        spectral = (diff.real.square() + diff.imag.square()).mean()
        kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1)).mean()
        aux = (torch.zeros((), device=x.device) if stats is None else
               (stats[0].float() - stats[1].float()).square().mean())
        total = alpha * bce + (1 - alpha) * spectral + kl_weight * kl + stats_weight * aux
    return {"bce": bce, "spectral": spectral, "kl": kl, "stats": aux, "total": total}


@dataclass(frozen=True)
class TrainConfig(FromDict):
    """Optimisation of seed 003, §2.2.2 and §3.1.

    epochs : int
        Passes over the training set (200 in §3.1.1, 100 in §3.1.2).
    batch_size : int
        VEs per step (not stated in the seed; 32 fits 64^3 ResNet18 in ~10 GB of activations in bfloat16).
    lr, weight_decay : float
        Adam learning rate and (L2) weight decay, both 1e-5 in the seed.
    alpha : float
        BCE weight of Eq. (1) (0.999).
    kl_weight : float or None
        KL weight; None is ``1 / (C N^3)``, see :func:`vae_loss`.
    stats_weight : float
        Not in seed 003 (default 0): weight of the auxiliary head's error in the loss; needs a model with
        ``stats_head``. Its targets are standardised with the training VEs' statistics, fixed when the run
        starts.
    patience : int or None
        Stop after this many epochs without a lower validation total loss; None trains all ``epochs``
        (the seed's fixed-length runs).
    seed : int
        Seed of the initial weights and of the run's random stream (data order, reparameterisation noise).
    amp : bool
        Mixed precision on CUDA; ignored on the CPU.
    amp_dtype : {'bfloat16', 'float16'}
        Autocast dtype on CUDA; float16 adds a GradScaler.
    num_workers : int
        DataLoader worker processes (0 loads in the training process).
    checkpoint_every : int
        Epochs between writes of ``checkpoint.pt`` and ``best.pt`` (and always after the last epoch).
    """

    epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 1e-5
    alpha: float = 0.999
    kl_weight: float | None = None
    stats_weight: float = 0.0
    patience: int | None = None
    seed: int = 0
    amp: bool = True
    amp_dtype: str = "bfloat16"
    num_workers: int = 0
    checkpoint_every: int = 1

    def __post_init__(self):
        for name, low in (("epochs", 0), ("batch_size", 1), ("num_workers", 0), ("checkpoint_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"invalid {name} {value!r}; expected an integer >= {low}")
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(self.patience, int)
                                          or self.patience < 1):
            raise ValueError(f"invalid patience {self.patience!r}; expected a positive integer or None")
        if not self.lr > 0:
            raise ValueError(f"invalid lr {self.lr!r}; expected > 0")
        if not self.weight_decay >= 0:
            raise ValueError(f"invalid weight_decay {self.weight_decay!r}; expected >= 0")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"invalid alpha {self.alpha!r}; expected a weight in [0, 1]")
        if self.kl_weight is not None and not self.kl_weight >= 0:
            raise ValueError(f"invalid kl_weight {self.kl_weight!r}; expected >= 0 or None")
        if isinstance(self.stats_weight, bool) or not self.stats_weight >= 0:
            raise ValueError(f"invalid stats_weight {self.stats_weight!r}; expected a number >= 0")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"invalid amp_dtype {self.amp_dtype!r}; expected one of {AMP_DTYPES}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"invalid seed {self.seed!r}; expected an integer")



@dataclass
class TrainResult:
    """What :func:`train` leaves.

    model : VAE3D
        Best-validation weights (the latest ones if no epoch ran), eval mode, on the training device.
    config, train_config : VAEConfig, TrainConfig
    epoch : int
        Epochs done (counting those of resumed runs).
    best_epoch : int
        Epoch of the lowest validation total loss (training total without validation data); 0 if none.
    best_val : float
        That loss (inf if no epoch ran).
    stopped_reason : str
        :data:`STOP_EPOCHS` or :data:`STOP_PATIENCE`.
    loss_log : list of dict
        One row per epoch, keys :data:`LOG_FIELDS`.
    checkpoint_path, best_path, loss_log_path : Path
        ``checkpoint.pt``, ``best.pt`` (absent if no epoch ran) and ``loss_log.csv``.
    data : dict
        What the checkpoints record about the data: ``n_train``, ``n_val`` and the ``data`` given to :func:`train`.
    """

    model: VAE3D
    config: VAEConfig
    train_config: TrainConfig
    epoch: int
    best_epoch: int
    best_val: float
    stopped_reason: str
    loss_log: list[dict[str, float]]
    checkpoint_path: Path
    best_path: Path
    loss_log_path: Path
    data: dict[str, Any]


def _stats(model: VAE3D, x: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(prediction, target) of the auxiliary head, or None for a model without it."""
    return (model.predict_stats(mu), model.channel_stats(x)) if model.config.stats_head else None


def train_step(model: VAE3D, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, x: torch.Tensor,
               *, alpha: float = 0.999, kl_weight: float | None = None, stats_weight: float = 0.0,
               amp_dtype: torch.dtype | None = None, generator: torch.Generator | None = None
               ) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch ``x`` (B, C, N, N, N) on the model's device; returns the detached losses.

    ``amp_dtype`` None runs in float32; otherwise the network runs under autocast of that dtype and
    ``scaler`` (a GradScaler, needed for float16) scales the loss. ``generator`` draws the
    reparameterisation noise.
    """
    model.train()
    with autocast(x.device, amp_dtype):
        x_hat, mu, logvar = model(x, generator)
    losses = vae_loss(x, x_hat, mu, logvar, alpha, kl_weight, _stats(model, x, mu), stats_weight)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(losses["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        losses["total"].backward()
        optimizer.step()
    return {k: v.detach() for k, v in losses.items()}


@torch.no_grad()
def _evaluate(model: VAE3D, dataset: Dataset, batch_size: int, num_workers: int, device: torch.device,
              amp_dtype: torch.dtype | None, alpha: float, kl_weight: float | None, stats_weight: float
              ) -> dict[str, float]:
    """Mean loss terms over ``dataset`` with ``z = mu`` and BatchNorm in eval mode."""
    model.eval()
    sums, count = torch.zeros(len(LOSS_TERMS), dtype=torch.float64, device=device), 0
    for x in data_loader(dataset, batch_size, None, num_workers, device):
        x = x.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            mu, logvar = model.encode(x)
            x_hat = model.decode(mu)
        losses = vae_loss(x, x_hat, mu, logvar, alpha, kl_weight, _stats(model, x, mu), stats_weight)
        sums += torch.stack([losses[k] for k in LOSS_TERMS]).double() * len(x)
        count += len(x)
    return dict(zip(LOSS_TERMS, (sums / count).tolist(), strict=True))


@torch.no_grad()
def _channel_mean_stats(dataset: Dataset, batch_size: int, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over ``dataset`` of :meth:`VAE3D.channel_means`, each (C,) float32 on the CPU;
    a standard deviation of 0 (a constant channel) becomes 1."""
    means = torch.cat([VAE3D.channel_means(x) for x in data_loader(dataset, batch_size, None, num_workers,
                                                               torch.device("cpu"))]).double()
    std = means.std(dim=0, unbiased=False) if len(means) > 1 else torch.zeros(means.shape[1], dtype=torch.float64)
    return means.mean(dim=0).float(), torch.where(std > 0, std, torch.ones_like(std)).float()


def read_loss_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``loss_log.csv`` (``epoch`` as int, the rest as float)."""
    return loss_log.read(path, "epoch")


def train(train_data: Any, val_data: Any, out_dir: str | Path, model_config: VAEConfig | None = None,
          train_config: TrainConfig | None = None, device: str | torch.device | None = None,
          progress: bool | Callable[[dict[str, float]], None] | None = None, resume: bool = True,
          data: Mapping[str, Any] | None = None) -> TrainResult:
    """Train the ResNet3D VAE, checkpointing to ``out_dir`` and resuming from it.

    Parameters
    ----------
    train_data, val_data : Dataset or array_like, shape (n, C, N, N, N)
        VEs with values in [0, 1]: a torch Dataset whose items are (C, N, N, N) arrays or tensors (or
        tuples starting with one), read lazily by a DataLoader, or an in-memory float array (checked
        whole). ``val_data`` may be None: then the training loss selects the best epoch and drives
        early stopping.
    out_dir : str or Path
        Holds ``checkpoint.pt`` (latest state), ``best.pt`` (best weights) and ``loss_log.csv``.
    model_config : VAEConfig or None
        Architecture; default ResNet18 at 64^3 (``PRESETS['resnet18']``).
    train_config : TrainConfig or None
    device : str, torch.device or None
        As :func:`micropipe.device.pick_device`; None picks CUDA when available.
    progress : bool, callable or None
        A tqdm bar over the batches of each epoch (True; default when stderr is a terminal) or not
        (False); a callable is called with each epoch's loss-log row after its checkpoint is written.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when present (epoch count, loss log, best model, early
        stopping counter, optimiser and RNG state) up to ``train_config.epochs``; its architecture must
        match ``model_config``, else ValueError. A finished run does no work. False starts afresh and
        overwrites it.
    data : mapping or None
        Provenance of the data (scalars, e.g. ``{'lattice': 'cF', 'dataset_uri': ...}``), stored with
        ``n_train`` and ``n_val`` as ``'data'`` in both checkpoints (consumers read the fundamental zone
        from it); a change on resumption is logged as a warning.
    """
    from tqdm.auto import tqdm

    from micropipe.device import pick_device

    config = model_config or VAEConfig()
    tc = train_config or TrainConfig()
    if tc.stats_weight > 0 and not config.stats_head:
        raise ValueError(f"invalid stats_weight {tc.stats_weight!r} for a model without the auxiliary head; "
                         f"set stats_head: true in the model config, or stats_weight 0")
    train_ds = as_dataset(train_data, config, "train_data")
    val_ds = None if val_data is None else as_dataset(val_data, config, "val_data")
    n_train = len(train_ds)
    batch = min(tc.batch_size, n_train)
    n_batches = n_train // batch
    if batch * config.feature_size ** 3 < 2:
        raise ValueError(f"invalid batch_size {batch} ({n_train} training VEs) for a final feature volume of 1^3: "
                         f"BatchNorm needs at least 2 values per channel; use batch_size >= 2")
    device = pick_device(None if device is None else str(device))
    amp_dtype = getattr(torch, tc.amp_dtype) if tc.amp and device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest 3D kernels
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, best_path, log_path = out_dir / CHECKPOINT, out_dir / BEST, out_dir / LOSS_LOG

    with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the global stream
        torch.manual_seed(tc.seed)
        model = VAE3D(config)
    model.to(device)
    fused = device.type == "cuda" or None  # one kernel for 0.6 G parameters; the CPU's default is foreach
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=fused)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    rng = torch.Generator().manual_seed(tc.seed)
    run_config = {"model": config, "train": tc}
    data_info = {**dict(data or {}), "n_train": len(train_ds), "n_val": 0 if val_ds is None else len(val_ds)}
    epoch, rows, best_val, best_epoch, bad, saved_at = 0, [], math.inf, 0, 0, None
    best_state: dict[str, torch.Tensor] | None = None  # set when the best epoch is newer than best.pt

    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, kind=KIND, map_location=device, config={"model": config})
        _warn_changes(ckpt, run_config, data_info)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # the saved groups carry the saving device's kernel choice
            group["fused"] = fused
        if ckpt["scaler"]:  # empty when saved without float16 loss scaling
            scaler.load_state_dict(ckpt["scaler"])
        rng.set_state(ckpt["rng"].cpu())  # map_location moved it with the rest
        epoch, rows = ckpt["step"], list(ckpt["loss_log"])[: ckpt["step"]]
        best_epoch, bad = ckpt["best_epoch"], ckpt["epochs_since_best"]
        best_val = math.inf if ckpt["best_metric"] is None else ckpt["best_metric"]
        saved_at = epoch
        del ckpt  # GBs at the paper's scale
        log.info("resuming %s from %s at epoch %d of %d (best %.6g at epoch %d)", KIND, ckpt_path, epoch,
                 tc.epochs, best_val, best_epoch)
    else:
        log.info("training %s from scratch on %s: %d parameters, %d training and %s validation VEs of %s",
                 KIND, device, model.n_params(), len(train_ds), data_info["n_val"], config.input_shape)
        if config.stats_head:
            mean, std = _channel_mean_stats(train_ds, tc.batch_size, tc.num_workers)
            model.stats_mean.copy_(mean)
            model.stats_std.copy_(std)
            log.info("auxiliary head (weight %g): VE channel means %s +- %s over the training VEs", tc.stats_weight,
                     mean.numpy().round(4), std.numpy().round(4))

    def save() -> None:
        nonlocal best_state, saved_at
        saved_at = epoch
        meta = {"kind": KIND, "config": run_config, "data": data_info, "seed": tc.seed, "best_epoch": best_epoch,
                "best_metric": None if math.isinf(best_val) else best_val}
        if best_state is not None:  # first: checkpoint.pt must never point at a best.pt not yet written
            save_checkpoint(best_path, {**meta, "model": best_state, "optimizer": None, "step": best_epoch})
            best_state = None
        save_checkpoint(ckpt_path, {**meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scaler": scaler.state_dict(), "rng": rng.get_state(), "step": epoch,
                                    "loss_log": rows, "epochs_since_best": bad})

    interactive = sys.stderr.isatty() if progress is None else progress is True
    on_epoch = progress if callable(progress) else None
    while epoch < tc.epochs and not (tc.patience is not None and bad >= tc.patience):
        t0 = time.perf_counter()
        order = torch.randperm(n_train, generator=rng)[: n_batches * batch].tolist()
        sums = torch.zeros(len(LOSS_TERMS), dtype=torch.float64, device=device)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch", leave=False,
                   disable=not interactive, file=sys.stderr)
        for x in data_loader(train_ds, batch, order, tc.num_workers, device):
            losses = train_step(model, optimizer, scaler, x.to(device, non_blocking=True), alpha=tc.alpha,
                                kl_weight=tc.kl_weight, stats_weight=tc.stats_weight, amp_dtype=amp_dtype,
                                generator=rng)
            sums += torch.stack([losses[k] for k in LOSS_TERMS]).double()
            bar.update()
        bar.close()
        train_losses = dict(zip(LOSS_TERMS, (sums / n_batches).tolist(), strict=True))  # syncs the device
        t_train = time.perf_counter() - t0
        if not math.isfinite(train_losses["total"]):
            raise FloatingPointError(f"non-finite training loss {train_losses} in epoch {epoch + 1}; "
                                     f"{ckpt_path} holds the last good state (lower lr, or amp_dtype='bfloat16')")
        val_losses = (dict.fromkeys(LOSS_TERMS, math.nan) if val_ds is None else
                      _evaluate(model, val_ds, tc.batch_size, tc.num_workers, device, amp_dtype, tc.alpha,
                                tc.kl_weight, tc.stats_weight))
        epoch += 1
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in train_losses.items()},
               **{f"val_{k}": v for k, v in val_losses.items()},
               "wall_s": time.perf_counter() - t0, "ve_per_s": n_batches * batch / t_train}
        rows.append(row)
        monitored = train_losses["total"] if val_ds is None else val_losses["total"]
        if monitored < best_val:
            best_val, best_epoch, bad = monitored, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad += 1
        log.info("epoch %d/%d  train %.6g (BCE %.4g, FFT %.4g, KL %.4g%s)  val %.6g  %.1f s, %.1f VE/s%s", epoch,
                 tc.epochs, row["train_total"], row["train_bce"], row["train_spectral"], row["train_kl"],
                 f", stats {row['train_stats']:.4g}" if config.stats_head else "", row["val_total"], row["wall_s"],
                 row["ve_per_s"], "  *" if best_epoch == epoch else "")
        loss_log.write(log_path, rows, LOG_FIELDS)
        stopping = epoch == tc.epochs or (tc.patience is not None and bad >= tc.patience)
        if epoch % tc.checkpoint_every == 0 or stopping:
            save()
        if on_epoch is not None:
            on_epoch(row)
    if saved_at != epoch:  # 0 epochs on a fresh run
        save()
        loss_log.write(log_path, rows, LOG_FIELDS)

    early = tc.patience is not None and bad >= tc.patience and epoch < tc.epochs
    if early:
        log.info("early stopping after epoch %d: no better %s loss than %.6g (epoch %d) for %d epochs", epoch,
                 "training" if val_ds is None else "validation", best_val, best_epoch, tc.patience)
    if best_path.is_file():
        model.load_state_dict(load_checkpoint(best_path, kind=KIND, map_location=device)["model"])
    return TrainResult(model.eval(), config, tc, epoch, best_epoch, best_val, STOP_PATIENCE if early else STOP_EPOCHS,
                       rows, ckpt_path, best_path, log_path, data_info)


def _warn_changes(ckpt: dict[str, Any], run_config: dict[str, Any], data_info: dict[str, Any]) -> None:
    """Log changes of training settings or data on resumption; the architecture was checked already."""
    pairs = {"train": (ckpt["config"].get("train", {}), run_config["train"].to_dict()),
             "data": (ckpt.get("data") or {}, data_info)}
    for part, (saved, requested) in pairs.items():
        old = {k: v for k, v in saved.items() if k not in _RESUMABLE}
        new = {k: v for k, v in requested.items() if k not in _RESUMABLE}
        try:
            check_config(old, new, source="the checkpoint")
        except ValueError as err:
            log.warning("resuming with changed %s settings (%s)", part, str(err).split("differs in ", 1)[-1])


