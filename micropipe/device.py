"""The one place that chooses the torch device and the default floating-point dtype."""

from __future__ import annotations

import logging

import torch

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
