"""Stress-curve surrogate of seed 003 (§2.4): a one-hidden-layer MLP from a VE's fingerprint to its
min-max scaled ``sigma_zz`` at every strain increment of uniaxial tension along z.

The fingerprint is the mean of the VAE encoder's posterior (DESIGN §4, "fingerprint VEs (encoder mean)"),
so its length is the VAE's latent dimension (256 in the paper). The 21 outputs are the undeformed state
and the 20 increments to 1 % strain; the sigmoid keeps them in ``[0, 1]``, the range of the min-max scaled
training stresses (:class:`MinMaxScaler` maps them to and from Pa).

The model owns its file format: :func:`save_surrogate` writes a self-describing checkpoint (weights, config,
scaler, the fit's record), :func:`load_surrogate` rebuilds model and scaler from it without any training
code, and :func:`predict` turns fingerprints into curves in Pa.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from micropipe.params import FromDict, positive_int

log = logging.getLogger(__name__)

KIND = "surrogate"
"""Name of the architecture in checkpoints and in the model registry."""

N_INCREMENTS = 21
"""Outputs of the paper's surrogate: sigma_zz of the undeformed state and of 20 strain increments."""


@dataclass(frozen=True)
class SurrogateConfig(FromDict):
    """Surrogate of seed 003, §2.4.

    in_dim : int
        Fingerprint length: the latent dimension of the VAE whose encoder means are the inputs.
    hidden : int
        Width of the hidden layer (512).
    out_dim : int
        Strain increments predicted, the undeformed state included (21: 20 increments to 1 % strain).
    negative_slope : float
        Slope of the leaky ReLU for negative inputs; the paper names the activation only, 0.01 is PyTorch's
        default.
    """

    in_dim: int
    hidden: int = 512
    out_dim: int = N_INCREMENTS
    negative_slope: float = 0.01

    def __post_init__(self):
        # Coerced so that numpy integers from array shapes become plain ints, which checkpoints loaded
        # with weights_only=True can hold.
        for name in ("in_dim", "hidden", "out_dim"):
            object.__setattr__(self, name, positive_int(getattr(self, name), name))
        slope = self.negative_slope
        if isinstance(slope, bool) or not isinstance(slope, numbers.Real) or not (math.isfinite(slope) and slope >= 0):
            raise ValueError(f"invalid negative_slope {slope!r}; expected a finite number >= 0")
        object.__setattr__(self, "negative_slope", float(slope))


class Surrogate(nn.Module):
    """Fingerprint -> scaled stress curve: ``sigmoid(W2 lrelu(W1 x + b1) + b2)``.

    Shapes: input (B, in_dim), the fingerprints (VAE encoder means) of B VEs; output (B, out_dim) in
    ``[0, 1]``, min-max scaled volume-averaged ``sigma_zz`` per strain increment (21 values including the
    undeformed state).
    """

    def __init__(self, config: SurrogateConfig):
        super().__init__()
        self.config = config
        self.hidden = nn.Linear(config.in_dim, config.hidden)
        self.act = nn.LeakyReLU(config.negative_slope)
        self.out = nn.Linear(config.hidden, config.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.act(self.hidden(x))))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


SHOW = 5  # non-finite entries quoted in an error message


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
        a = finite_table(stress, "stress", "strain increment")
        if a.shape[0] == 0:
            raise ValueError("empty stress table; cannot fit a min-max scaler")
        return cls(float(a.min()), float(a.max()))

    def transform(self, stress_Pa: Any) -> np.ndarray:
        """Scaled stress ``(stress - lo) / (hi - lo)``, same shape as ``stress_Pa`` (Pa), float64."""
        a = finite_array(stress_Pa, "stress_Pa")
        return (a - self.lo) / (self.hi - self.lo)

    def inverse(self, scaled: Any) -> np.ndarray:
        """Stress in Pa ``lo + scaled (hi - lo)``, same shape as ``scaled``, float64."""
        a = finite_array(scaled, "scaled")
        return self.lo + a * (self.hi - self.lo)

    def to_dict(self) -> dict[str, float]:
        return {"lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MinMaxScaler:
        if set(d) != {"lo", "hi"}:
            raise ValueError(f"invalid scaler fields {sorted(d)}; expected ['hi', 'lo']")
        return cls(d["lo"], d["hi"])


def _array(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected a numeric array of equal-length rows ({err}); drop runs that did "
                         f"not converge, their curves stop early") from None


def finite_array(a: Any, name: str) -> np.ndarray:
    a = _array(a, name)
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))
        where = "; ".join(f"index {tuple(int(i) for i in idx)} ({a[tuple(idx)]})" for idx in bad[:SHOW])
        raise ValueError(f"{name} has {len(bad)} non-finite value(s): {where}")
    return a


def finite_table(a: Any, name: str, column: str, n_cols: int | None = None) -> np.ndarray:
    """``a`` as a finite float64 (n, k) array; ValueError naming the rows and columns of NaN/inf entries."""
    a = _array(a, name)
    if a.ndim != 2:
        raise ValueError(f"{name} has shape {a.shape}; expected a 2D array (rows, {column}s)")
    if n_cols is not None and a.shape[1] != n_cols:
        raise ValueError(f"{name} has {a.shape[1]} columns; expected {n_cols} ({column}s)")
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))
        where = "; ".join(f"row {i}, column {j} ({column} {j}): {a[i, j]}" for i, j in bad[:SHOW])
        more = f"; and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
        hint = "; drop runs that did not converge before fitting" if column == "strain increment" else ""
        raise ValueError(f"{name} has {len(bad)} non-finite value(s) (NaN/inf) in row(s) "
                         f"{sorted({int(i) for i in bad[:, 0]})[:SHOW]}: {where}{more}{hint}")
    return a


def plain_data(obj: Any, where: str = "extra") -> Any:
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
        return {str(key): plain_data(v, f"{where}.{key}") for key, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"{where}: cannot store a {type(obj).__name__} in a checkpoint; expected plain data "
                     f"(numbers, strings, lists, dicts, arrays)")


def save_surrogate(path: str | Path, result: Any, *,
                   fingerprint_dim: int | None = None, lattice: str | None = None,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write a self-describing surrogate checkpoint (atomically) that :func:`load_surrogate` rebuilds.

    Parameters
    ----------
    path : str or Path
    result : micropipe.train.surrogate.FitResult or (Surrogate, MinMaxScaler)
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
    from micropipe.crystal import LATTICES
    from micropipe.models.checkpoint import save_checkpoint

    if hasattr(result, "train_config"):  # a FitResult of micropipe.train.surrogate.fit
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
        "extra": plain_data(dict(extra or {})),
    }
    return save_checkpoint(path, state)


def load_surrogate(path: str | Path | Mapping[str, Any], device: str | torch.device | None = None
                   ) -> tuple[Surrogate, MinMaxScaler, dict[str, Any]]:
    """Surrogate and scaler of a checkpoint by :func:`save_surrogate` (a file, or such a checkpoint already in
    memory), rebuilt from its stored config.

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
    from micropipe.models.checkpoint import load_checkpoint

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


def check_fingerprints(model: Surrogate, X: Any, source: str | None) -> np.ndarray:
    name = source or "X"
    X = finite_table(X, name, "fingerprint component")
    if X.shape[1] != model.config.in_dim:
        prefix = f"{source}: " if source else ""
        raise ValueError(f"{prefix}fingerprint dimension {X.shape[1]} does not match the surrogate's input "
                         f"dimension {model.config.in_dim}; were the fingerprints made by the VAE the surrogate "
                         f"was trained on?")
    return X


@torch.no_grad()
def predict_scaled(model: Surrogate, X: np.ndarray, batch_size: int, device: str | torch.device | None
                    ) -> np.ndarray:
    positive_int(batch_size, "batch_size")
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
    X = check_fingerprints(model, X, source)
    return scaler.inverse(predict_scaled(model, X, batch_size, device))


def _device(device: str | torch.device | None) -> torch.device:
    from micropipe.device import pick_device
    return pick_device(None if device is None else str(device))
