"""Stacks of phase volumes as they travel between the steps of the two-phase studies: one ``.npz`` file with
``volumes`` (N, X, Y, Z) uint8 phase labels and ``attrs`` (the JSON provenance of the stack)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from micropipe import provenance, store


def save_volumes(path: str | Path, volumes: np.ndarray, attrs: dict[str, Any]) -> None:
    """Write a volume stack to ``path`` (any name: KFP artifact paths have no suffix)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, volumes=np.asarray(volumes, dtype=np.uint8), attrs=provenance.dumps(attrs))
    with store.atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())


def load_volumes(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """``(volumes (N, X, Y, Z) uint8, attrs)`` of a stack written by :func:`save_volumes`."""
    with np.load(path, allow_pickle=False) as z:
        if "volumes" not in z.files:
            raise ValueError(f"{path}: field 'volumes' missing; expected a stack written by save_volumes")
        volumes = z["volumes"]
        attrs = json.loads(str(z["attrs"])) if "attrs" in z.files else {}
    if volumes.ndim != 4:
        raise ValueError(f"{path}: field 'volumes' must have shape (N, X, Y, Z), got {volumes.shape}")
    return volumes, attrs
