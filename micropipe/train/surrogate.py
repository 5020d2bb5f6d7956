"""Fitting, saving, applying and scoring the stress-curve surrogate of seed 003 (§2.3, §2.4, §3.4).

Data: ``X`` (n, d) fingerprints (VAE encoder means), ``Y`` (n, 21) volume-averaged ``sigma_zz`` in Pa at
the undeformed state and 20 strain increments (the ``stress`` column of :mod:`micropipe.cp_runs`, converged
runs only). Stresses are min-max scaled with one global minimum and maximum of the training split; the
network is trained with Adam on the mean-squared error of the scaled curves (lr 1e-5, weight decay 1e-5,
batch 128, 10,000 epochs in the paper) and the weights of the epoch with the lowest validation MSE are kept.

All training data lives on the device as two tensors and every epoch is a seeded permutation sliced into
minibatches: no DataLoader, no host round trip per step (one per epoch, for the validation MSE that picks
the best epoch). The permutation comes from a CPU ``torch.Generator`` seeded with ``TrainConfig.seed``, and
the initial weights from the same seed, so on the CPU a fit is repeatable bit for bit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from micropipe.models.surrogate import KIND, Surrogate, SurrogateConfig
from micropipe.params import FromDict

log = logging.getLogger(__name__)

_SHOW = 5  # non-finite entries quoted in an error message
_EVAL_CHUNK = 65536  # rows per forward pass when scoring the validation split during training


# ----------------------------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class MinMaxScaler:
    """Min-max scaling of stresses to ``[0, 1]`` with ONE minimum and maximum over all values.

    Seed 003 §2.3 scales "across the whole dataset to a range of [0, 1]"; here the range is fitted on the
    training split only, so validation curves never inform the model (they may scale slightly outside
    ``[0, 1]``, which the sigmoid output cannot reach: an honest error, not a leak).

    Why global and not per increment: increment 0 is the undeformed state, ``sigma_zz = 0`` for every VE,
    so a per-increment range would divide by zero there; and the elastic increments, whose spread over VEs
    is small, would be stretched to ``[0, 1]`` like the plastic ones, so the MSE would weigh a 1 MPa error
    at 0.05 % strain like a 20 MPa error at 1 %. One range keeps the loss proportional to the error in Pa.

    lo, hi : float
        Stress mapped to 0 and to 1, Pa.
    """

    lo: float
    hi: float

    def __post_init__(self):
        for name in ("lo", "hi"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"invalid {name} {value!r}; expected a finite stress in Pa")
            object.__setattr__(self, name, float(value))  # plain floats: checkpoints load with weights_only
        if not self.hi > self.lo:
            raise ValueError(f"invalid stress range [{self.lo}, {self.hi}] Pa; expected lo < hi "
                             f"(all training stresses equal?)")

    @classmethod
    def fit(cls, stress: Any) -> MinMaxScaler:
        """Scaler of the range of ``stress``.

        Parameters
        ----------
        stress : array_like, shape (n, k)
            Training stresses in Pa, e.g. ``sigma_zz`` of n VEs at k increments; at least one row.
        """
        a = _table(stress, "stress", "strain increment")
        if a.shape[0] == 0:
            raise ValueError("empty stress table; cannot fit a min-max scaler")
        return cls(float(a.min()), float(a.max()))

    def transform(self, stress_Pa: Any) -> np.ndarray:
        """Scaled stress ``(stress - lo) / (hi - lo)``, same shape as ``stress_Pa`` (Pa), float64."""
        a = _finite(stress_Pa, "stress_Pa")
        return (a - self.lo) / (self.hi - self.lo)

    def inverse(self, scaled: Any) -> np.ndarray:
        """Stress in Pa ``lo + scaled (hi - lo)``, same shape as ``scaled``, float64."""
        a = _finite(scaled, "scaled")
        return self.lo + a * (self.hi - self.lo)

    def to_dict(self) -> dict[str, float]:
        return {"lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MinMaxScaler:
        if set(d) != {"lo", "hi"}:
            raise ValueError(f"invalid scaler fields {sorted(d)}; expected ['hi', 'lo']")
        return cls(d["lo"], d["hi"])


# ------------------------------------------------------------------------------------------ input checks


def _array(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected a numeric array of equal-length rows ({err}); drop runs that did "
                         f"not converge, their curves stop early") from None


def _finite(a: Any, name: str) -> np.ndarray:
    a = _array(a, name)
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))
        where = "; ".join(f"index {tuple(int(i) for i in idx)} ({a[tuple(idx)]})" for idx in bad[:_SHOW])
        raise ValueError(f"{name} has {len(bad)} non-finite value(s): {where}")
    return a


def _table(a: Any, name: str, column: str, n_cols: int | None = None) -> np.ndarray:
    """``a`` as a finite float64 (n, k) array; ValueError naming the rows and columns of NaN/inf entries."""
    a = _array(a, name)
    if a.ndim != 2:
        raise ValueError(f"{name} has shape {a.shape}; expected a 2D array (rows, {column}s)")
    if n_cols is not None and a.shape[1] != n_cols:
        raise ValueError(f"{name} has {a.shape[1]} columns; expected {n_cols} ({column}s)")
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))
        where = "; ".join(f"row {i}, column {j} ({column} {j}): {a[i, j]}" for i, j in bad[:_SHOW])
        more = f"; and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
        hint = "; drop runs that did not converge before fitting" if column == "strain increment" else ""
        raise ValueError(f"{name} has {len(bad)} non-finite value(s) (NaN/inf) in row(s) "
                         f"{sorted({int(i) for i in bad[:, 0]})[:_SHOW]}: {where}{more}{hint}")
    return a


def _pairs(X: Any, Y: Any, split: str, d: int | None = None, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    X = _table(X, f"X_{split}", "fingerprint component", d)
    Y = _table(Y, f"Y_{split}", "strain increment", k)
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


def _plain_data(obj: Any, where: str = "extra") -> Any:
    """``obj`` with numpy and torch values turned into lists and scalars (checkpoints load with weights_only)."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(key): _plain_data(v, f"{where}.{key}") for key, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"{where}: cannot store a {type(obj).__name__} in a checkpoint; expected plain data "
                     f"(numbers, strings, lists, dicts, arrays)")


def save_surrogate(path: str | Path, result: FitResult | tuple[Surrogate, MinMaxScaler], *,
                   fingerprint_dim: int | None = None, lattice: str | None = None,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write a self-describing surrogate checkpoint (atomically) that :func:`load_surrogate` rebuilds.

    Parameters
    ----------
    path : str or Path
    result : FitResult or (Surrogate, MinMaxScaler)
        A fit (its training config, history, best epoch and mean training curve are stored too), or a model
        and the scaler of its outputs.
    fingerprint_dim : int or None
        Length of the fingerprints the model takes; must equal the model's ``in_dim`` (checked), which it
        defaults to.
    lattice : {'cF', 'cI', 'hP'} or None
        Lattice of the VAE that made the fingerprints (its fundamental zone), so that the surrogate is not
        fed fingerprints of another VAE.
    extra : mapping or None
        Plain data stored under ``'extra'`` (numpy arrays become lists), e.g. the ids of the split.

    Checkpoint: ``config = {'model', 'scaler', 'train', 'fingerprint': {'dim', 'lattice'}}``, ``model`` the
    state dict, ``step`` the best epoch, ``best_metric`` its validation MSE; no optimizer state, a fit is
    not resumed.
    """
    from micropipe.train.checkpoint import save_checkpoint
    from micropipe.crystal import LATTICES

    if isinstance(result, FitResult):
        model, scaler, fitted = result.model, result.scaler, result
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        (model, scaler), fitted = result, None
    else:
        raise ValueError(f"invalid result {type(result).__name__}; expected a FitResult or (Surrogate, MinMaxScaler)")
    if not isinstance(model, Surrogate) or not isinstance(scaler, MinMaxScaler):
        raise ValueError(f"invalid (model, scaler) ({type(model).__name__}, {type(scaler).__name__}); expected "
                         f"(Surrogate, MinMaxScaler)")
    in_dim = model.config.in_dim
    if fingerprint_dim is not None and fingerprint_dim != in_dim:
        raise ValueError(f"fingerprint_dim {fingerprint_dim} does not match the surrogate's input dimension {in_dim}")
    if lattice is not None and lattice not in LATTICES:
        raise ValueError(f"invalid lattice {lattice!r}; expected one of {', '.join(LATTICES)} or None")
    config = {"model": model.config.to_dict(), "scaler": scaler.to_dict(),
              "train": fitted.train_config.to_dict() if fitted else None,
              "fingerprint": {"dim": in_dim, "lattice": lattice}}
    state = {
        "kind": KIND, "config": config, "optimizer": {},
        "model": {name: t.detach().cpu().clone() for name, t in model.state_dict().items()},
        "step": fitted.best_epoch if fitted else 0,
        "best_metric": fitted.best_mse_val if fitted else None,
        "seed": fitted.train_config.seed if fitted else None,
        "history": fitted.history if fitted else [],
        "train_mean_curve": fitted.train_mean_curve.tolist() if fitted else None,
        "n_train": fitted.n_train if fitted else None, "n_val": fitted.n_val if fitted else None,
        "extra": _plain_data(dict(extra or {})),
    }
    return save_checkpoint(path, state)


def load_surrogate(path: str | Path, device: str | torch.device | None = None
                   ) -> tuple[Surrogate, MinMaxScaler, dict[str, Any]]:
    """Surrogate and scaler of a checkpoint by :func:`save_surrogate`, rebuilt from its stored config.

    Needs only the model and the checkpoint reader, no training code; the model is in eval mode on
    ``device`` (None picks CUDA when available).

    Returns
    -------
    model : Surrogate
    scaler : MinMaxScaler
    meta : dict
        ``fingerprint_dim``, ``lattice``, ``model`` and ``train`` (config dicts, ``train`` None when saved
        without a fit), ``best_epoch``, ``best_mse_val``, ``history``, ``train_mean_curve`` (numpy array in
        Pa or None), ``n_train``, ``n_val``, ``extra``, ``provenance``.
    """
    from micropipe.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, kind=KIND)
    cfg = ckpt["config"]
    model = Surrogate(SurrogateConfig.from_dict(cfg["model"]))
    model.load_state_dict(ckpt["model"])
    model = model.to(_device(device)).eval()
    scaler = MinMaxScaler.from_dict(cfg["scaler"])
    curve = ckpt.get("train_mean_curve")
    meta = {"fingerprint_dim": cfg["fingerprint"]["dim"], "lattice": cfg["fingerprint"]["lattice"],
            "model": cfg["model"], "train": cfg["train"], "best_epoch": ckpt["step"],
            "best_mse_val": ckpt["best_metric"], "history": ckpt.get("history", []),
            "train_mean_curve": None if curve is None else np.asarray(curve, np.float64),
            "n_train": ckpt.get("n_train"), "n_val": ckpt.get("n_val"), "extra": ckpt.get("extra", {}),
            "provenance": ckpt.get("provenance")}
    log.info("loaded %s (%d -> %d, %d parameters) from %s, best epoch %d", KIND, model.config.in_dim,
             model.config.out_dim, model.n_params(), path, ckpt["step"])
    return model, scaler, meta


# ---------------------------------------------------------------------------------- prediction and scores


def _fingerprints(model: Surrogate, X: Any, source: str | None) -> np.ndarray:
    name = source or "X"
    X = _table(X, name, "fingerprint component")
    if X.shape[1] != model.config.in_dim:
        prefix = f"{source}: " if source else ""
        raise ValueError(f"{prefix}fingerprint dimension {X.shape[1]} does not match the surrogate's input "
                         f"dimension {model.config.in_dim}; were the fingerprints made by the VAE the surrogate "
                         f"was trained on?")
    return X


@torch.no_grad()
def _predict_scaled(model: Surrogate, X: np.ndarray, batch_size: int, device: str | torch.device | None
                    ) -> np.ndarray:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"invalid batch_size {batch_size!r}; expected a positive integer")
    own = next(model.parameters()).device
    run = own if device is None else _device(device)
    net = model
    if run != own:  # the caller's model stays where it is
        import copy
        net = copy.deepcopy(model).to(run)
    was_training = net.training
    net.eval()
    try:
        Xt = torch.from_numpy(X.astype(np.float32))
        out = [net(Xt[i:i + batch_size].to(run)).cpu() for i in range(0, X.shape[0], batch_size)]
    finally:
        net.train(was_training)
    if not out:
        return np.zeros((0, model.config.out_dim))
    return torch.cat(out).double().numpy()


def predict(model: Surrogate, scaler: MinMaxScaler, X: Any, *, batch_size: int = 4096,
            device: str | torch.device | None = None, source: str | None = None) -> np.ndarray:
    """Stress curves of fingerprints.

    Parameters
    ----------
    model : Surrogate
        Not modified (its train/eval mode is restored; copied when ``device`` differs from its own).
    scaler : MinMaxScaler
        The one the model was trained with.
    X : array_like, shape (n, d)
        Fingerprints; ``d`` must be the model's ``in_dim``.
    batch_size : int
        Rows per forward pass (does not change the result).
    device : str, torch.device or None
        None runs on the model's device.
    source : str or None
        Where ``X`` comes from, named in error messages.

    Returns
    -------
    stress : numpy.ndarray, shape (n, k)
        ``sigma_zz`` in Pa per strain increment, float64.
    """
    X = _fingerprints(model, X, source)
    return scaler.inverse(_predict_scaled(model, X, batch_size, device))


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
    X = _fingerprints(model, X, source)
    k = model.config.out_dim
    Y = _table(Y, f"Y of {source}" if source else "Y", "strain increment", k)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; expected one stress curve per fingerprint")
    if X.shape[0] == 0:
        raise ValueError("nothing to evaluate: X has 0 rows")
    base = _finite(baseline_curve, "baseline_curve")
    if base.shape != (k,):
        raise ValueError(f"baseline_curve has shape {base.shape}; expected ({k},), one stress per strain increment")
    if isinstance(timing_repeats, bool) or not isinstance(timing_repeats, numbers.Integral) or timing_repeats < 1:
        raise ValueError(f"invalid timing_repeats {timing_repeats!r}; expected a positive integer")

    scaled = _predict_scaled(model, X, batch_size, device)
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
        raise ValueError(f"duplicate ids {uniq[counts > 1][:_SHOW].tolist()}; expected distinct ids")
    if n_train is None:
        if isinstance(train_fraction, bool) or not isinstance(train_fraction, numbers.Real) \
                or not 0 < train_fraction < 1:
            raise ValueError(f"invalid train_fraction {train_fraction!r}; expected a number in (0, 1)")
        n_train = min(max(round(train_fraction * n), 1), n - 1)
    elif isinstance(n_train, bool) or not isinstance(n_train, numbers.Integral) or not 1 <= n_train <= n - 1:
        raise ValueError(f"invalid n_train {n_train!r} for {n} rows; expected 1 <= n_train <= {n - 1}")
    perm = np.random.default_rng(rng_seed).permutation(n)
    return a[np.sort(perm[:n_train])], a[np.sort(perm[n_train:])]
