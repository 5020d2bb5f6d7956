"""1- and 2-point correlations of two-phase voxel volumes and the mean relative errors of seed 001, eq. (34).

Definitions (seed 001 §2.3, eqs. (18)-(19)), with Φ the indicator of phase 1 (the inclusions) on a periodic
grid of N = X·Y·Z voxels:

* ``p1 = E_x[Φ(x)]``: the inclusion volume fraction.
* ``p2(s) = E_x[Φ(x) Φ(x + s)]``: the periodic two-point autocorrelation, computed for every shift s at
  once with FFTs, ``p2 = IFFT(|FFT(Φ)|²) / N``.  Invariants: ``p2(0) = p1``, ``p2(s) = p2(-s)``, and for a
  structure without long-range order ``p2(|s| -> large) -> p1²``.
* The paper reduces the p2 map to a curve "using FFT and a radial norm" (§4) and plots it against the
  distance r (Figs. 3, 7, 10): :func:`p2_radial` averages p2 over shells of minimum-image length
  ``round(|s|) = r`` voxels, r = 0 .. r_max.  :func:`p2_axes` gives the curves along x, y and z.

Errors (eq. (34)): ``E(•) = 1/n_s Σ_i ||•̂_i - •_i||_2 / ||•̂_i||_2`` over the n_s evaluated (synthetic)
samples •_i, "with respect to a baseline [that] is calculated from a training dataset".  The default
baseline is the training-set mean (the same •̂ for every i; for p2 the mean radial curve);
``baseline='paired'`` compares sample i with training sample i instead.  With the mean baseline the error
of the training set against itself is not zero but its own scatter about the mean: report that floor next
to the GAN's error.

Every correlation function takes numpy arrays or torch tensors with leading batch axes (..., X, Y, Z),
computes in torch (CPU or CUDA, same code) and returns the type it was given.  Phase values need not be
binary: GAN outputs in [0, 1] are correlated as they are.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import torch

from micropipe.device import DTYPE, pick_device
from micropipe.spectral.grid import irfft, rfft

log = logging.getLogger(__name__)

Baseline = Literal["mean", "paired"]
BASELINES = ("mean", "paired")
BATCH_SIZE = 64
"""Volumes per FFT batch in :func:`p2_radial` and :func:`p2_axes` (bounds memory at ~2·B·N·16 bytes)."""


# --------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------


def _as_tensor(volumes: Any, name: str, device: str | torch.device | None,
               dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
    """(tensor on the chosen device in ``dtype``, whether the input was numpy)."""
    is_numpy = not isinstance(volumes, torch.Tensor)
    if is_numpy:
        a = np.asarray(volumes)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"field '{name}': expected a real numeric array (..., X, Y, Z), got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a))
        target = torch.device("cpu") if device is None else pick_device(str(device))
    else:
        t = volumes.detach()
        if t.is_complex():
            raise ValueError(f"field '{name}': expected a real tensor (..., X, Y, Z), got dtype {t.dtype}")
        target = t.device if device is None else pick_device(str(device))
    if t.ndim < 3:
        raise ValueError(f"field '{name}': expected shape (..., X, Y, Z), got {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"field '{name}': expected non-empty volumes, got shape {tuple(t.shape)}")
    t = t.to(device=target, dtype=dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"field '{name}': expected finite values, got NaN or inf")
    return t, is_numpy


def _out(t: torch.Tensor, is_numpy: bool) -> np.ndarray | torch.Tensor:
    return t.cpu().numpy() if is_numpy else t


def _default_r_max(spatial: tuple[int, ...], r_max: int | None) -> int:
    half = min(spatial) // 2
    if r_max is None:
        return half
    if isinstance(r_max, bool) or not isinstance(r_max, int | np.integer) or r_max < 0:
        raise ValueError(f"field 'r_max': expected a non-negative int (voxels), got {r_max!r}")
    return int(r_max)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"field 'batch_size': expected a positive int, got {batch_size!r}")
    return int(batch_size)


# --------------------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------------------


def p1(volumes: Any, *, device: str | torch.device | None = None,
       dtype: torch.dtype = DTYPE) -> np.ndarray | torch.Tensor:
    """1-point correlation (inclusion volume fraction), eq. (18).

    Parameters
    ----------
    volumes : numpy.ndarray or torch.Tensor, shape (..., X, Y, Z)
        Indicator of phase 1 (1 = inclusion, 0 = matrix), or any real field.
    device : str or torch.device, optional
        Where to compute; default: the tensor's device, the CPU for numpy input.
    dtype : torch.dtype
        Computation dtype (float64 by default).

    Returns
    -------
    p1 : same type as ``volumes``, shape (...)
        Mean over the voxels, dimensionless.
    """
    t, is_numpy = _as_tensor(volumes, "volumes", device, dtype)
    return _out(t.mean(dim=(-3, -2, -1)), is_numpy)


def _p2_tensor(t: torch.Tensor) -> torch.Tensor:
    cells = t.shape[-3:]
    f = rfft(t)
    return irfft(f * f.conj(), cells) / float(np.prod(cells))


def p2(volumes: Any, *, device: str | torch.device | None = None,
       dtype: torch.dtype = DTYPE) -> np.ndarray | torch.Tensor:
    """Periodic 2-point autocorrelation for every shift, eq. (19), via FFT.

    Parameters
    ----------
    volumes : numpy.ndarray or torch.Tensor, shape (..., X, Y, Z)
        Indicator of phase 1, or any real field; the grid is taken as periodic.
    device, dtype
        As in :func:`p1`.

    Returns
    -------
    p2 : same type as ``volumes``, shape (..., X, Y, Z)
        ``p2[..., i, j, k] = mean_x Φ(x) Φ(x + s)`` with shift ``s = (i, j, k)`` voxels (index ``i`` stands
        for the shifts i and i - X alike), dimensionless.  ``p2[..., 0, 0, 0] = p1``.
    """
    t, is_numpy = _as_tensor(volumes, "volumes", device, dtype)
    return _out(_p2_tensor(t), is_numpy)


def shift_lengths(cells: tuple[int, int, int]) -> np.ndarray:
    """Minimum-image length |s| of every periodic shift, shape (X, Y, Z), in voxels.

    Shift index i along an axis of N voxels is the shift ``min(i, N - i)`` in length.
    """
    axes = [np.minimum(np.arange(n), n - np.arange(n)).astype(np.float64) for n in cells]
    d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    return np.sqrt(d2)


def _batches(t: torch.Tensor, batch_size: int):
    flat = t.reshape((-1,) + tuple(t.shape[-3:]))
    for start in range(0, flat.shape[0], batch_size):
        yield flat[start:start + batch_size]


def p2_radial(volumes: Any, *, r_max: int | None = None, batch_size: int = BATCH_SIZE,
              device: str | torch.device | None = None,
              dtype: torch.dtype = DTYPE) -> tuple[np.ndarray, np.ndarray | torch.Tensor]:
    """Radially averaged 2-point correlation p2(r): the curve the paper plots and compares.

    Parameters
    ----------
    volumes : numpy.ndarray or torch.Tensor, shape (..., X, Y, Z)
        Indicator of phase 1; periodic grid.
    r_max : int, optional
        Largest distance in voxels; default ``min(X, Y, Z) // 2`` (beyond it a shell leaves the box).
    batch_size : int
        Volumes per FFT batch.
    device, dtype
        As in :func:`p1`.

    Returns
    -------
    r : numpy.ndarray, shape (R,), R = r_max + 1
        Distances 0, 1, ..., r_max in voxels.
    p2_r : same type as ``volumes``, shape (..., R)
        Mean of p2 over the shifts whose minimum-image length rounds to r (shell [r - 1/2, r + 1/2));
        ``p2_r[..., 0] = p1``.  Shells without a lattice shift are NaN (only possible on tiny grids).
    """
    t, is_numpy = _as_tensor(volumes, "volumes", device, dtype)
    batch_size = _check_batch_size(batch_size)
    cells = tuple(t.shape[-3:])
    r_max = _default_r_max(cells, r_max)
    bins = np.floor(shift_lengths(cells).reshape(-1) + 0.5).astype(np.int64)
    keep = bins <= r_max
    index = torch.from_numpy(bins[keep]).to(t.device)
    keep_t = torch.from_numpy(keep).to(t.device)
    counts = torch.zeros(r_max + 1, dtype=t.dtype, device=t.device).index_add_(
        0, index, torch.ones(index.shape[0], dtype=t.dtype, device=t.device))
    parts = []
    for chunk in _batches(t, batch_size):
        flat = _p2_tensor(chunk).reshape(chunk.shape[0], -1)[:, keep_t]
        sums = torch.zeros(chunk.shape[0], r_max + 1, dtype=t.dtype, device=t.device).index_add_(1, index, flat)
        parts.append(sums / counts)
    curve = torch.cat(parts).reshape(tuple(t.shape[:-3]) + (r_max + 1,))
    log.debug("p2_radial: %d volume(s) of %s, r_max=%d", int(np.prod(t.shape[:-3], dtype=np.int64)), cells, r_max)
    return np.arange(r_max + 1, dtype=np.float64), _out(curve, is_numpy)


def p2_axes(volumes: Any, *, r_max: int | None = None, batch_size: int = BATCH_SIZE,
            device: str | torch.device | None = None,
            dtype: torch.dtype = DTYPE) -> tuple[np.ndarray, np.ndarray | torch.Tensor]:
    """2-point correlation along the x, y and z axes, p2(r e_x), p2(r e_y), p2(r e_z).

    Parameters
    ----------
    volumes, batch_size, device, dtype
        As in :func:`p2_radial`.
    r_max : int, optional
        Largest shift in voxels, at most ``min(X, Y, Z) - 1``; default ``min(X, Y, Z) // 2``.

    Returns
    -------
    r : numpy.ndarray, shape (R,)
        Shifts 0 .. r_max in voxels.
    p2_xyz : same type as ``volumes``, shape (..., 3, R)
        Row a is p2 along axis a; dimensionless.
    """
    t, is_numpy = _as_tensor(volumes, "volumes", device, dtype)
    batch_size = _check_batch_size(batch_size)
    cells = tuple(t.shape[-3:])
    r_max = _default_r_max(cells, r_max)
    if r_max >= min(cells):
        raise ValueError(f"field 'r_max': expected at most {min(cells) - 1} for volumes of {cells}, got {r_max}")
    r = torch.arange(r_max + 1, device=t.device)
    parts = []
    for chunk in _batches(t, batch_size):
        m = _p2_tensor(chunk)
        parts.append(torch.stack([m[:, r, 0, 0], m[:, 0, r, 0], m[:, 0, 0, r]], dim=1))
    curve = torch.cat(parts).reshape(tuple(t.shape[:-3]) + (3, r_max + 1))
    return np.arange(r_max + 1, dtype=np.float64), _out(curve, is_numpy)


# --------------------------------------------------------------------------------------------------
# errors, eq. (34)
# --------------------------------------------------------------------------------------------------


def _as_samples(values: Any, name: str) -> np.ndarray:
    a = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"field '{name}': expected real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(f"field '{name}': expected samples along axis 0, shape (n, ...) with n >= 1, "
                         f"got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"field '{name}': expected finite values, got NaN or inf")
    return a


def relative_errors(values: Any, reference: Any, *, baseline: Baseline = "mean") -> np.ndarray:
    """Per-sample relative errors ``||•̂_i - •_i||_2 / ||•̂_i||_2`` of eq. (34).

    Parameters
    ----------
    values : array_like, shape (n, ...)
        The evaluated quantity •_i of n samples (e.g. synthetic volumes): scalars (n,) or curves (n, R).
    reference : array_like, shape (m, ...)
        The same quantity on the training data set, the source of the baseline •̂.
    baseline : {'mean', 'paired'}
        ``'mean'``: •̂_i = mean of ``reference`` over its m samples, for every i.  ``'paired'``:
        •̂_i = ``reference[i]`` (needs m = n).

    Returns
    -------
    errors : numpy.ndarray, shape (n,)
        Dimensionless; the 2-norm is taken over all trailing axes (absolute value for scalars).
    """
    x = _as_samples(values, "values")
    ref = _as_samples(reference, "reference")
    if x.shape[1:] != ref.shape[1:]:
        raise ValueError(f"field 'reference': expected per-sample shape {x.shape[1:]} like 'values', "
                         f"got {ref.shape[1:]}")
    if baseline == "mean":
        base = np.broadcast_to(ref.mean(axis=0), x.shape)
    elif baseline == "paired":
        if ref.shape[0] != x.shape[0]:
            raise ValueError(f"field 'reference': baseline='paired' needs as many samples as 'values' "
                             f"({x.shape[0]}), got {ref.shape[0]}")
        base = ref
    else:
        raise ValueError(f"field 'baseline': expected one of {BASELINES}, got {baseline!r}")
    diff = (base - x).reshape(x.shape[0], -1)
    norm = np.linalg.norm(base.reshape(x.shape[0], -1), axis=1)
    if np.any(norm == 0):
        raise ValueError("field 'reference': baseline has zero norm, the relative error is undefined")
    return np.linalg.norm(diff, axis=1) / norm


def mean_relative_error(values: Any, reference: Any, *, baseline: Baseline = "mean") -> float:
    """Mean relative error E of eq. (34): the mean over the n samples of :func:`relative_errors`."""
    return float(relative_errors(values, reference, baseline=baseline).mean())


def _check_ndim(values: Any, ndim: int, name: str, shape_doc: str) -> None:
    shape = np.shape(values)
    if len(shape) != ndim:
        raise ValueError(f"field '{name}': expected shape {shape_doc}, got {tuple(shape)}")


def _eq34(values: Any, reference: Any, name: str, baseline: Baseline, curve: bool = False) -> float:
    """Eq. (34) for per-sample scalars (n,) or, with ``curve``, per-sample curves (n, R), after checking shapes."""
    tail, ndim = (", R", 2) if curve else ("", 1)
    _check_ndim(values, ndim, f"{name}_values", f"(n{tail})")
    _check_ndim(reference, ndim, f"{name}_reference", f"(m{tail})")
    return mean_relative_error(values, reference, baseline=baseline)


def E_p1(p1_values: Any, p1_reference: Any, *, baseline: Baseline = "mean") -> float:
    """E_p1, eq. (34) for the 1-point correlation.

    Parameters
    ----------
    p1_values : array_like, shape (n,)
        Volume fractions of the evaluated (synthetic) volumes, from :func:`p1`.
    p1_reference : array_like, shape (m,)
        Volume fractions of the training volumes.
    baseline : {'mean', 'paired'}
        See :func:`relative_errors`.
    """
    return _eq34(p1_values, p1_reference, "p1", baseline)


def E_p2(p2_values: Any, p2_reference: Any, *, baseline: Baseline = "mean") -> float:
    """E_p2, eq. (34) for the 2-point correlation, the 2-norm taken over the curve.

    Parameters
    ----------
    p2_values : array_like, shape (n, R)
        Radial p2 curves of the evaluated volumes, from :func:`p2_radial` (same r grid for both sets).
    p2_reference : array_like, shape (m, R)
        Radial p2 curves of the training volumes.
    baseline : {'mean', 'paired'}
        See :func:`relative_errors`.
    """
    return _eq34(p2_values, p2_reference, "p2", baseline, curve=True)


def E_C11(C11_values: Any, C11_reference: Any, *, baseline: Baseline = "mean") -> float:
    """E_C̄11, eq. (34) for the effective stiffness component C̄11.

    Parameters
    ----------
    C11_values : array_like, shape (n,)
        C̄11 of the evaluated volumes (any stress unit, the same for both sets).
    C11_reference : array_like, shape (m,)
        C̄11 of the training volumes.
    baseline : {'mean', 'paired'}
        See :func:`relative_errors`.
    """
    return _eq34(C11_values, C11_reference, "C11", baseline)
