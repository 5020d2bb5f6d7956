"""Self-describing training checkpoints: atomic save, safe load, and a check that a checkpoint's
config is the architecture that was asked for.

A checkpoint is a dict with at least ``'kind'`` (architecture name), ``'config'`` (plain nested dict of
the dataclass fields), ``'model'``, ``'optimizer'``, ``'step'`` and ``'best_metric'`` (nanoGPT style),
plus ``'format'`` and ``'provenance'`` added on save. It holds only tensors, containers and scalars,
so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT = "micropipe.checkpoint/1"
REQUIRED = ("kind", "config", "model", "optimizer", "step", "best_metric")


def _plain(obj: Any) -> Any:
    """Nested dicts/lists of scalars: dataclasses become dicts, tuples lists (as torch.load returns them)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, Mapping):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_config(saved: Any, requested: Any, *, source: str = "checkpoint") -> None:
    """Raise ValueError naming every field where two (nested) configs differ.

    Parameters
    ----------
    saved, requested : dataclass or mapping
        Configs to compare; nested mappings are compared field by field (``'generator.filters'``).
    source : str
        Where ``saved`` comes from, for the message.
    """
    a, b = _flatten(_plain(saved)), _flatten(_plain(requested))
    diffs = [f"{k}: {a.get(k, '<missing>')!r} in {source}, {b.get(k, '<missing>')!r} requested"
             for k in sorted(set(a) | set(b)) if a.get(k, "<missing>") != b.get(k, "<missing>")]
    if diffs:
        raise ValueError(f"checkpoint from another architecture: {source} differs in {'; '.join(diffs)}")


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (readers see the old file or the complete new one).

    ``state`` must hold the keys of ``REQUIRED``; ``'config'`` may be a dataclass or nested dict of them.
    Adds ``'format'`` and ``'provenance'`` (package version, git commit, seed from ``state['seed']``).
    """
    from micropipe import provenance
    from micropipe.store import atomic_path

    if missing := [k for k in REQUIRED if k not in state]:
        raise ValueError(f"checkpoint state lacks {missing}; has {sorted(state)}")
    config = _plain(state["config"])
    full = {**state, "config": config, "format": FORMAT,
            "provenance": provenance.record(seed=state.get("seed"), params=config, step=f"train.{state['kind']}")}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(full, tmp)
    log.info("saved %s checkpoint at step %d to %s", state["kind"], state["step"], path)
    return path


def read_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` of a file of tensors and plain data only (``weights_only=True``, never anything else); a file
    torch cannot read that way (not a torch file, truncated, pickled objects) is a ``ValueError`` naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (zip reader), EOFError, KeyError, ... for bad bytes
        raise ValueError(f"not a micropipe checkpoint: {path} (torch cannot read it as tensors and plain data: "
                         f"{type(e).__name__}); expected a file written by micropipe's training steps") from None


def load_checkpoint(path: str | Path | Mapping[str, Any], *, kind: str | None = None, config: Any = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, and check it.

    Parameters
    ----------
    path : str, Path or mapping
        The file, or a checkpoint already in memory (e.g. one of the several in a predictor bundle), which is
        checked the same way.
    kind : str or None
        Expected architecture name; another one raises ValueError.
    config : dataclass or mapping or None
        Expected (part of the) config: every key it has must match the stored one, else ValueError
        "checkpoint from another architecture" naming the fields. Keys it lacks are not compared.
    map_location : str or torch.device
        Where tensors are loaded.
    """
    if isinstance(path, Mapping):
        ckpt, path = dict(path), "a checkpoint in memory"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        ckpt = read_torch(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a {FORMAT} checkpoint (format {found!r})")
    if kind is not None and ckpt["kind"] != kind:
        raise ValueError(f"checkpoint from another architecture: {path} holds a {ckpt['kind']!r} model, "
                         f"{kind!r} requested")
    if config is not None:
        requested = _plain(config)
        stored = {k: ckpt["config"].get(k) for k in requested} if isinstance(requested, dict) else ckpt["config"]
        check_config(stored, requested, source=str(path))
    return ckpt
