"""The one place that chooses the torch device and the default floating-point dtype."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

log = logging.getLogger(__name__)

DTYPE = torch.float64
"""Default dtype of physics computations: FFT solvers need float64 to reach tolerances of 1e-8."""

DEVICES = ("cpu", "cuda")


def pick_device(name: str | None = None) -> torch.device:
    """Torch device for a computation.

    Parameters
    ----------
    name : {'cpu', 'cuda', 'cuda:N'} or None
        None (or ``'auto'``) picks CUDA when available, the CPU otherwise.

    Raises
    ------
    ValueError
        Unknown device name, or CUDA requested on a machine without a usable GPU.
    """
    if name in (None, "", "auto"):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        log.debug("device: %s (auto)", device)
        return device
    if not isinstance(name, str) or name.split(":")[0] not in DEVICES:
        raise ValueError(f"invalid device {name!r}; expected one of {', '.join(DEVICES)} (or None for auto)")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available "
                             f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use 'cpu'")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) are visible")
        return device
    return torch.device("cpu")


BATCHED_SOLVE_MIN = 256
"""Batches of at least this many small systems are solved by numpy's LAPACK on the CPU (see batched_solve)."""
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (the process it belongs to, its size, the pool)
_blas: ThreadpoolController | None = None


def batched_solve(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve many small linear systems ``A X = B``: LU with partial pivoting, per system.

    Parameters
    ----------
    A : torch.Tensor, shape (V, n, n)
    B : torch.Tensor, shape (V, n, r)

    Returns
    -------
    X : torch.Tensor, shape (V, n, r)
    ok : torch.Tensor of bool, shape (V,)
        False where ``A`` is singular (LAPACK's ``info != 0``) or X is not finite.

    The same algorithm on every device; only the kernel differs.  On CUDA, and for small batches, it is
    ``torch.linalg.solve_ex``.  On the CPU, batches of at least :data:`BATCHED_SOLVE_MIN` systems go to numpy's
    ``dgesv`` loop instead, split over ``torch.get_num_threads()`` threads with the BLAS library itself held to
    one thread.  For the crystal-plasticity solver's 18 x 18 local systems (32768 of them, 2 cores) that is 41
    against 95-139 ms with one right-hand side and 63 against 167-244 ms with seven: torch's CPU kernel spends
    ~4 us per matrix in ``getrf`` alone.  A batch in which numpy finds an exactly singular matrix is solved again
    by ``torch.linalg.solve_ex``, which flags the matrix.
    """
    if A.device.type != "cpu" or A.shape[0] < BATCHED_SOLVE_MIN or A.requires_grad or B.requires_grad:
        X, info = torch.linalg.solve_ex(A, B)
        return X, (info == 0) & torch.isfinite(X).all(-1).all(-1)
    global _pool, _blas
    parts = max(1, min(torch.get_num_threads(), A.shape[0] // BATCHED_SOLVE_MIN))
    if _blas is None:
        _blas = ThreadpoolController()
    if parts > 1 and (_pool is None or _pool[0] != os.getpid() or _pool[1] < parts):  # a new one after a fork
        _pool = (os.getpid(), parts, ThreadPoolExecutor(parts, thread_name_prefix="micropipe-solve"))
    a, b = A.numpy(), B.numpy()
    X = torch.empty_like(B)
    x = X.numpy()
    bounds = np.linspace(0, A.shape[0], parts + 1).astype(int)

    def part(i: int) -> bool:
        s = slice(bounds[i], bounds[i + 1])
        try:
            x[s] = np.linalg.solve(a[s], b[s])
        except np.linalg.LinAlgError:
            return False
        return True

    with _blas.limit(limits=1, user_api="blas"):
        done = list(_pool[2].map(part, range(parts))) if parts > 1 else [part(0)]
    ok = torch.isfinite(X).all(-1).all(-1)
    for i, d in enumerate(done):
        if not d:
            s = slice(int(bounds[i]), int(bounds[i + 1]))
            X[s], info = torch.linalg.solve_ex(A[s], B[s])
            ok[s] = (info == 0) & torch.isfinite(X[s]).all(-1).all(-1)
    return X, ok


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_malloc_kept: bool | None = None


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory for large blocks instead of returning it to the kernel (process-wide).

    By default glibc serves every block above its mmap threshold (at most 32 MiB) with fresh pages from the
    kernel and unmaps it when freed, so every large temporary is page-faulted in again on first touch: the
    crystal-plasticity solver's per-point Jacobians at 32³ are 85 MB each, and a 32³ solve spent about 15 % of
    its time in those page faults (54-61 s against 48-50 s with this, same iterations and peak memory).  This
    turns off mmap for allocations (``M_MMAP_MAX = 0``) and the automatic trimming of the heap
    (``M_TRIM_THRESHOLD``); :func:`release_memory` gives the free memory back.  A no-op (returning False) where
    the C library is not glibc, or with ``MICROPIPE_KEEP_FREED_MEMORY=0`` in the environment.  Idempotent.
    """
    global _malloc_kept
    if _malloc_kept is None:
        libc = _libc() if os.environ.get("MICROPIPE_KEEP_FREED_MEMORY", "1") != "0" else None
        _malloc_kept = bool(libc and libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
        log.debug("malloc keeps freed memory: %s", _malloc_kept)
    return _malloc_kept


def release_memory() -> None:
    """Return the heap's free memory to the kernel (glibc's ``malloc_trim(0)``) after :func:`keep_freed_memory`."""
    if _malloc_kept and (libc := _libc()) is not None:
        libc.malloc_trim(0)
