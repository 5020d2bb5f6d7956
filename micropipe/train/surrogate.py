"""Fitting and scoring the stress-curve surrogate of seed 003 (§2.3, §2.4, §3.4); the model, its scaler, its file
format and prediction are :mod:`micropipe.models.surrogate`'s.

Data: ``X`` (n, d) fingerprints (VAE encoder means), ``Y`` (n, 21) volume-averaged ``sigma_zz`` in Pa at
the undeformed state and 20 strain increments (the ``stress`` column of :mod:`micropipe.datasets.cp_results`, converged
runs only). Stresses are min-max scaled with one global minimum and maximum of the training split; the
network is trained with Adam on the mean-squared error of the scaled curves (lr 1e-5, weight decay 1e-5,
batch 128, 10,000 epochs in the paper) and the weights of the epoch with the lowest validation MSE are kept.

All training data lives on the device as two tensors and every epoch is a seeded permutation sliced into
minibatches: no DataLoader, no host round trip per step (one per epoch, for the validation MSE that picks
the best epoch). The permutation comes from a CPU ``torch.Generator`` seeded with ``TrainConfig.seed``, and
the initial weights from the same seed, so on the CPU a fit is repeatable bit for bit.
"""

from __future__ import annotations

import logging
import math
import numbers
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from micropipe.models.surrogate import (
    KIND,
    SHOW,
    MinMaxScaler,
    Surrogate,
    SurrogateConfig,
    check_fingerprints,
    finite_array,
    finite_table,
    predict,
    predict_scaled,
)
from micropipe.params import FromDict

log = logging.getLogger(__name__)

_EVAL_CHUNK = 65536  # rows per forward pass when scoring the validation split during training


# ----------------------------------------------------------------------------------------------- scaling


# ------------------------------------------------------------------------------------------ input checks


def _pairs(X: Any, Y: Any, split: str, d: int | None = None, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    X = finite_table(X, f"X_{split}", "fingerprint component", d)
    Y = finite_table(Y, f"Y_{split}", "strain increment", k)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X_{split} has {X.shape[0]} rows but Y_{split} has {Y.shape[0]}; expected one "
                         f"stress curve per fingerprint")
    return X, Y


# ------------------------------------------------------------------------------------------------ fitting


@dataclass(frozen=True)
class TrainConfig(FromDict):
    """Optimisation of seed 003, §2.4 and §3.4.

    epochs : int
        Passes over the training split (10,000).
    batch_size : int
        Minibatch rows (128); the last minibatch of an epoch holds the remainder.
    lr, weight_decay : float
        Adam learning rate and (L2, added to the gradient as in ``torch.optim.Adam``) weight decay (1e-5 each).
    seed : int
        Seed of the initial weights and of the minibatch permutations.
    patience : int or None
        Stop after this many epochs without a lower validation MSE; None trains all ``epochs``.
    log_every : int
        Epochs between progress log lines.
    """

    epochs: int = 10_000
    batch_size: int = 128
    lr: float = 1e-5
    weight_decay: float = 1e-5
    seed: int = 0
    patience: int | None = None
    log_every: int = 100

    def __post_init__(self):
        for name in ("epochs", "batch_size", "log_every", "patience"):
            value = getattr(self, name)
            if name == "patience" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"invalid {name} {value!r}; expected a positive integer"
                                 + (" or None" if name == "patience" else ""))
            object.__setattr__(self, name, int(value))
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"invalid seed {self.seed!r}; expected a non-negative integer")
        object.__setattr__(self, "seed", int(self.seed))
        for name, low in (("lr", "> 0"), ("weight_decay", ">= 0")):
            value = getattr(self, name)
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not (value > 0 if name == "lr" else value >= 0):
                raise ValueError(f"invalid {name} {value!r}; expected a finite number {low}")
            object.__setattr__(self, name, float(value))


@dataclass
class FitResult:
    """What :func:`fit` returns.

    model : Surrogate
        Weights of ``best_epoch``, in eval mode, on the training device.
    scaler : MinMaxScaler
        Fitted on the training stresses.
    model_config, train_config : SurrogateConfig, TrainConfig
    history : list of dict
        One row per epoch run: ``epoch`` (1-based), ``mse_train`` (mean of the epoch's minibatch losses,
        weighted by rows, as the training curve of Fig. 9a), ``mse_val`` (validation split after the epoch),
        both on scaled stresses.
    best_epoch : int
        Epoch of the lowest ``mse_val``, whose weights ``model`` holds.
    fingerprint_dim : int
        Columns of ``X``: the VAE latent dimension.
    train_mean_curve : numpy.ndarray, shape (k,)
        Mean training curve in Pa, the trivial baseline of :func:`evaluate`.
    n_train, n_val : int
        Rows of the two splits.
    stopped_early : bool
        Whether ``patience`` ended the run before ``epochs``.
    """

    model: Surrogate
    scaler: MinMaxScaler
    model_config: SurrogateConfig
    train_config: TrainConfig
    history: list[dict[str, float]]
    best_epoch: int
    fingerprint_dim: int
    train_mean_curve: np.ndarray
    n_train: int
    n_val: int
    stopped_early: bool = False

    @property
    def best_mse_val(self) -> float:
        return self.history[self.best_epoch - 1]["mse_val"]


def _device(device: str | torch.device | None) -> torch.device:
    from micropipe.device import pick_device
    return pick_device(None if device is None else str(device))


@torch.no_grad()
def _mse(model: Surrogate, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    total = torch.zeros((), device=X.device)
    for i in range(0, X.shape[0], _EVAL_CHUNK):
        total += F.mse_loss(model(X[i:i + _EVAL_CHUNK]), Y[i:i + _EVAL_CHUNK], reduction="sum")
    return total / Y.numel()


def fit(X_train: Any, Y_train: Any, X_val: Any, Y_val: Any, config: TrainConfig | None = None, *,
        model_config: SurrogateConfig | Mapping[str, Any] | None = None,
        device: str | torch.device | None = None, progress: bool | None = None) -> FitResult:
    """Train the surrogate on one split and keep the weights of the best validation epoch.

    Parameters
    ----------
    X_train, X_val : array_like, shape (n, d), (m, d)
        Fingerprints (VAE encoder means).
    Y_train, Y_val : array_like, shape (n, k), (m, k)
        ``sigma_zz`` in Pa per strain increment (k = 21 for seed 003), converged runs only.
    config : TrainConfig or None
        Defaults to the paper's settings (10,000 epochs).
    model_config : SurrogateConfig, dict or None
        Defaults to ``SurrogateConfig(in_dim=d, out_dim=k)``; given, its ``in_dim`` and ``out_dim`` must
        match the data.
    device : str, torch.device or None
        None picks CUDA when available.
    progress : bool or None
        A tqdm bar (True) or log lines every ``config.log_every`` epochs (False); default: a bar when stderr
        is a terminal.

    Raises
    ------
    ValueError
        Arrays not 2D, row counts of X and Y differing, column counts differing between the splits or from
        ``model_config``, NaN/inf anywhere (the message names the array, rows and columns), an empty split,
        or training stresses all equal. Rows are counted in the arrays as passed, from 0.
    FloatingPointError
        The training MSE became NaN/inf (learning rate too large).
    """
    config = config or TrainConfig()
    X_train, Y_train = _pairs(X_train, Y_train, "train")
    if X_train.shape[0] == 0:
        raise ValueError("empty training set (X_train has 0 rows); expected at least one fingerprint")
    n, d = X_train.shape
    k = Y_train.shape[1]
    X_val, Y_val = _pairs(X_val, Y_val, "val", d, k)
    if X_val.shape[0] == 0:
        raise ValueError("empty validation set (X_val has 0 rows); fit needs held-out rows to pick the best epoch")
    if model_config is None:
        model_config = SurrogateConfig(in_dim=d, out_dim=k)
    elif isinstance(model_config, Mapping):
        model_config = SurrogateConfig.from_dict(dict(model_config))
    if (model_config.in_dim, model_config.out_dim) != (d, k):
        raise ValueError(f"model_config has in_dim {model_config.in_dim}, out_dim {model_config.out_dim}; the data "
                         f"has {d} fingerprint components and {k} strain increments")
    scaler = MinMaxScaler.fit(Y_train)
    device = _device(device)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32)).to(device)

    Xt, Yt = tensor(X_train), tensor(scaler.transform(Y_train))
    Xv, Yv = tensor(X_val), tensor(scaler.transform(Y_val))
    with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the global stream
        torch.manual_seed(config.seed)
        model = Surrogate(model_config)
    model.to(device)
    # Fused: one kernel for all parameters (CPU and CUDA); a step costs a third of the for-loop version's.
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    rng = torch.Generator().manual_seed(config.seed)
    log.info("fitting %s (%d parameters) on %s: %d train / %d val rows, %d -> %d, %d epochs of batch %d",
             KIND, model.n_params(), device, n, X_val.shape[0], d, k, config.epochs, config.batch_size)

    from tqdm.auto import tqdm
    interactive = sys.stderr.isatty() if progress is None else bool(progress)
    bar = tqdm(total=config.epochs, desc=KIND, unit="epoch", disable=not interactive, file=sys.stderr)
    history: list[dict[str, float]] = []
    best, best_epoch, best_state = math.inf, 0, None
    B, t0 = config.batch_size, time.perf_counter()
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            perm = torch.randperm(n, generator=rng).to(device)
            Xe, Ye = Xt[perm], Yt[perm]  # one gather per epoch; minibatches are then contiguous slices
            total = torch.zeros((), device=device)
            for i in range(0, n, B):
                loss = F.mse_loss(model(Xe[i:i + B]), Ye[i:i + B])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * Ye[i:i + B].shape[0]
            model.eval()
            mse_train, mse_val = torch.stack([total / n, _mse(model, Xv, Yv)]).tolist()  # one sync per epoch
            history.append({"epoch": epoch, "mse_train": mse_train, "mse_val": mse_val})
            if mse_val < best:
                best, best_epoch = mse_val, epoch
                best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
            bar.update(1)
            if interactive:
                bar.set_postfix(mse_train=f"{mse_train:.3g}", mse_val=f"{mse_val:.3g}", best=best_epoch, refresh=False)
            elif epoch % config.log_every == 0 or epoch == config.epochs:
                log.info("epoch %d/%d  mse train %.4g  val %.4g  best %.4g at %d  (%.1f epochs/s)", epoch,
                         config.epochs, mse_train, mse_val, best, best_epoch, epoch / (time.perf_counter() - t0))
            if not math.isfinite(mse_train):
                raise FloatingPointError(f"training MSE is {mse_train} at epoch {epoch}; lower the learning rate "
                                         f"(lr {config.lr})")
            if config.patience is not None and epoch - best_epoch >= config.patience:
                log.info("early stop at epoch %d: no lower validation MSE for %d epochs (best %.4g at %d)",
                         epoch, config.patience, best, best_epoch)
                break
    finally:
        bar.close()
    if best_state is None:  # every validation MSE was NaN
        raise FloatingPointError("validation MSE was never finite; check the fingerprints and the learning rate")
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(model=model, scaler=scaler, model_config=model_config, train_config=config, history=history,
                     best_epoch=best_epoch, fingerprint_dim=d, train_mean_curve=Y_train.mean(axis=0),
                     n_train=n, n_val=X_val.shape[0], stopped_early=len(history) < config.epochs)


# ------------------------------------------------------------------------------------------- checkpoints


# ---------------------------------------------------------------------------------- prediction and scores


def evaluate(model: Surrogate, scaler: MinMaxScaler, X: Any, Y: Any, *, baseline_curve: Any,
             batch_size: int = 4096, device: str | torch.device | None = None, source: str | None = None,
             timing_repeats: int = 20) -> dict[str, Any]:
    """Scores of the surrogate on a split (§3.4, Fig. 9), against predicting one curve for every VE.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Fingerprints.
    Y : array_like, shape (n, k)
        True ``sigma_zz`` in Pa.
    baseline_curve : array_like, shape (k,)
        Trivial prediction for every VE in Pa: the mean training curve (``FitResult.train_mean_curve``).
    timing_repeats : int
        Calls of batch-of-one prediction whose median is ``latency_s_single_ve``.

    Returns
    -------
    dict
        ``n``;
        ``mse``: mean squared error of the scaled curves over all VEs and increments, the paper's loss
        (2.9e-4 train, 9.3e-4 validation);
        ``mae_MPa_per_increment`` (k,): mean over VEs of ``|y - y^|`` at each increment, Fig. 9c's curve;
        ``abs_err_MPa_std_per_increment`` (k,): std over VEs of ``|y - y^|`` at each increment, Fig. 9c's band;
        ``mae_MPa``: mean of ``mae_MPa_per_increment`` (= mean over all entries), the paper's 2.75 MPa;
        ``mae_MPa_std``: std over increments of ``mae_MPa_per_increment``, how the error varies along the
        curve (one reading of the paper's +- 0.46 MPa);
        ``mae_MPa_std_over_ves``: std over VEs of each VE's mean ``|y - y^|``, how it varies between VEs
        (the other reading);
        ``baseline_mse``, ``baseline_mae_MPa``, ``baseline_mae_MPa_per_increment`` (k,): the same for
        ``baseline_curve``;
        ``mae_ratio``: ``baseline_mae_MPa / mae_MPa`` (> 1: the model beats the baseline);
        ``mae_ratio_ci95``: [low, high], its 95 % paired bootstrap interval over VEs
        (:func:`bootstrap_ratio_interval`): how much of the margin a different draw of VEs could undo;
        ``skill``: ``1 - mse / baseline_mse`` (1 perfect, 0 no better than the baseline);
        ``inference_s_per_ve``: seconds of :func:`predict` on all of ``X`` (after a warm-up) divided by n;
        ``latency_s_single_ve``: median seconds of :func:`predict` on one fingerprint.
        Arrays are numpy float64, the rest Python floats.
    """
    X = check_fingerprints(model, X, source)
    k = model.config.out_dim
    Y = finite_table(Y, f"Y of {source}" if source else "Y", "strain increment", k)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; expected one stress curve per fingerprint")
    if X.shape[0] == 0:
        raise ValueError("nothing to evaluate: X has 0 rows")
    base = finite_array(baseline_curve, "baseline_curve")
    if base.shape != (k,):
        raise ValueError(f"baseline_curve has shape {base.shape}; expected ({k},), one stress per strain increment")
    if isinstance(timing_repeats, bool) or not isinstance(timing_repeats, numbers.Integral) or timing_repeats < 1:
        raise ValueError(f"invalid timing_repeats {timing_repeats!r}; expected a positive integer")

    scaled = predict_scaled(model, X, batch_size, device)
    pred = scaler.inverse(scaled)
    Ys = scaler.transform(Y)
    mse = float(np.mean((scaled - Ys) ** 2))
    mse_base = float(np.mean((scaler.transform(base) - Ys) ** 2))
    err = np.abs(pred - Y) / 1e6
    err_base = np.abs(base - Y) / 1e6
    per_inc, per_inc_base = err.mean(axis=0), err_base.mean(axis=0)
    mae, mae_base = float(per_inc.mean()), float(per_inc_base.mean())

    predict(model, scaler, X[:batch_size], batch_size=batch_size, device=device)  # warm-up (kernels, caches)
    t = time.perf_counter()
    predict(model, scaler, X, batch_size=batch_size, device=device)
    per_ve = (time.perf_counter() - t) / X.shape[0]
    single = []
    for _ in range(timing_repeats):
        t = time.perf_counter()
        predict(model, scaler, X[:1], batch_size=batch_size, device=device)
        single.append(time.perf_counter() - t)

    return {
        "n": int(X.shape[0]),
        "mse": mse,
        "mae_MPa": mae,
        "mae_MPa_std": float(per_inc.std()),
        "mae_MPa_std_over_ves": float(err.mean(axis=1).std()),
        "mae_MPa_per_increment": per_inc,
        "abs_err_MPa_std_per_increment": err.std(axis=0),
        "baseline_mse": mse_base,
        "baseline_mae_MPa": mae_base,
        "baseline_mae_MPa_per_increment": per_inc_base,
        "mae_ratio": mae_base / mae if mae > 0 else math.inf,
        "mae_ratio_ci95": bootstrap_ratio_interval(err_base.mean(axis=1), err.mean(axis=1)),
        "skill": 1.0 - mse / mse_base if mse_base > 0 else (0.0 if mse == 0 else -math.inf),
        "inference_s_per_ve": per_ve,
        "latency_s_single_ve": statistics.median(single),
    }


def bootstrap_ratio_interval(numerator: Any, denominator: Any, *, level: float = 0.95, n_resamples: int = 2000,
                             seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of ``mean(numerator) / mean(denominator)`` over paired samples.

    Parameters
    ----------
    numerator, denominator : array_like, shape (n,)
        Paired per-sample values, e.g. each test VE's mean absolute error (MPa) of the baseline and of the
        model; resampled together (the same VEs in both means), ``n_resamples`` times, seeded.
    level : float
        Coverage of the two-sided interval.

    Returns
    -------
    [low, high] : list of 2 float
        ``inf`` where a resample's denominator mean is 0.
    """
    a, b = np.asarray(numerator, float), np.asarray(denominator, float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"expected paired 1D samples of equal length, got shapes {a.shape} and {b.shape}")
    if not 0 < level < 1:
        raise ValueError(f"invalid level {level!r}; expected 0 < level < 1")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_resamples, a.size))
    num, den = a[idx].mean(axis=1), b[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(ratios, q, method="inverted_cdf")) for q in (tail, 100 - tail)]


# -------------------------------------------------------------------------------------------- splitting


def split(ids: Sequence[Any] | np.ndarray, n_train: int | None = None, train_fraction: float = 0.8,
          rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled split of VE ids into training and validation ids.

    Seed 003 trains on 40,000 of 48,401 converged runs and validates on the other 8,401
    (``n_train=40_000``).

    Parameters
    ----------
    ids : sequence, shape (n,)
        Distinct ids (strings or integers; ``numpy.arange(n)`` to split row indices); n >= 2.
    n_train : int or None
        Training rows, 1 <= n_train <= n - 1; overrides ``train_fraction``.
    train_fraction : float
        Share of training rows in (0, 1), rounded, at least one row in each split.
    rng_seed : int
        Seed of ``numpy.random.default_rng`` that draws the split.

    Returns
    -------
    train_ids, val_ids : numpy.ndarray
        Disjoint, together ``ids``; each in the order of ``ids``.
    """
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"ids has shape {a.shape}; expected a 1D sequence of ids")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"cannot split {n} row(s); expected at least 2 (one to train, one to validate)")
    uniq, counts = np.unique(a, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"duplicate ids {uniq[counts > 1][:SHOW].tolist()}; expected distinct ids")
    if n_train is None:
        if isinstance(train_fraction, bool) or not isinstance(train_fraction, numbers.Real) \
                or not 0 < train_fraction < 1:
            raise ValueError(f"invalid train_fraction {train_fraction!r}; expected a number in (0, 1)")
        n_train = min(max(round(train_fraction * n), 1), n - 1)
    elif isinstance(n_train, bool) or not isinstance(n_train, numbers.Integral) or not 1 <= n_train <= n - 1:
        raise ValueError(f"invalid n_train {n_train!r} for {n} rows; expected 1 <= n_train <= {n - 1}")
    perm = np.random.default_rng(rng_seed).permutation(n)
    return a[np.sort(perm[:n_train])], a[np.sort(perm[n_train:])]
