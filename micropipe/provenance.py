"""Provenance records attached to every artifact: package version, git commit, seed, parameters."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import micropipe


@functools.cache
def git_commit() -> str:
    """Commit of the code that runs.

    ``MICROPIPE_GIT_COMMIT`` wins (images bake it in at build time, where no ``.git`` exists);
    otherwise ``git rev-parse HEAD`` in the source tree, with ``-dirty`` when it has local changes;
    ``'unknown'`` when neither is available.
    """
    if env := os.environ.get("MICROPIPE_GIT_COMMIT"):
        return env
    root = Path(micropipe.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def record(*, seed: int | None, params: dict[str, Any], step: str) -> dict[str, Any]:
    """Provenance of one artifact.

    Parameters
    ----------
    seed : int or None
        Random seed that made the artifact (None for deterministic steps).
    params : dict
        JSON-serialisable parameters of the step.
    step : str
        Name of the producing step, e.g. ``'ve.generate'``.
    """
    return {
        "package": "micropipe",
        "version": micropipe.__version__,
        "git_commit": git_commit(),
        "step": step,
        "seed": seed,
        "params": json.loads(json.dumps(params, default=_jsonable)),
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "host": platform.node(),
    }


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot record {type(obj).__name__} in provenance")


def dumps(obj: Any) -> str:
    """JSON text of ``obj`` with numpy arrays, paths and dataclasses made serialisable."""
    return json.dumps(obj, default=_jsonable, sort_keys=True)


def digest(obj: Any) -> str:
    """SHA-256 (hex) of ``obj``'s canonical JSON (:func:`dumps`: sorted keys): equal inputs, equal digests. What
    decides whether a stored result may be reused, and what names a run's default data folder."""
    return hashlib.sha256(dumps(obj).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
