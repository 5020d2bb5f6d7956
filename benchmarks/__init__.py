"""Speed and scale benchmarks; `make bench` runs them all. Results go in benchmarks/README.md."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
"""Where each benchmark leaves its rows as JSON (not tracked)."""


def device_cases(cases: Mapping[str, Sequence[Any]], full: bool) -> list[tuple[str, Any]]:
    """``(device, case)`` of a benchmark: ``cases['cpu_full' if full else 'cpu']`` on the CPU, then ``cases['cuda']``
    where a CUDA device is present."""
    import torch

    runs = [("cpu", c) for c in cases["cpu_full" if full else "cpu"]]
    if torch.cuda.is_available():
        runs += [("cuda", c) for c in cases["cuda"]]
    return runs


def machine(what: str) -> str:
    """The first line of a torch benchmark's table: what ran, on which CPU (cores, torch threads), GPU and torch."""
    import os

    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"
    return (f"\n{what} on {platform.machine()}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads)"
            f"{gpu}; torch {torch.__version__}")


def save_results(name: str, payload: Any) -> Path:
    """Write ``payload`` (with the machine it ran on, where it is a mapping) to ``results/<name>.json``."""
    if isinstance(payload, Mapping):
        payload = {"machine": platform.platform(), **payload}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path
