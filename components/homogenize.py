from typing import NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Output

from components import torch_component


@torch_component
def homogenize(volume: Input[Dataset], E: list, nu: list, stiffness: Output[Dataset], metrics: Output[Metrics],
               volume_suffix: str = ".npy", tol: float = 1e-8, max_iter: int = 5000, threshold: float = -1.0,
               device: str = "", precision: str = "mixed"
               ) -> NamedTuple("Outputs", [("iterations", int), ("residual", float)]):
    """Effective elastic stiffness (6x6, Voigt and Mandel) of one periodic phase volume by FFT.

    ``volume_suffix`` names the file format when the artifact path has no suffix; ``threshold`` < 0 means
    integer phase labels; ``device`` '' picks CUDA when available; ``precision`` 'mixed' (float32 CG iterations
    refining a float64 solution) or 'double' (micropipe.spectral.elastic).
    """
    import json
    import logging
    import os
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from micropipe import provenance
    from micropipe.device import pick_device
    from micropipe.spectral import elastic

    logging.basicConfig(level=logging.INFO)
    dev = pick_device(device or None)
    path = Path(volume.path)
    with tempfile.TemporaryDirectory() as tmp:
        if not path.suffix:  # KFP artifact paths carry no suffix; the readers choose the format by it
            path = Path(shutil.copy(path, os.path.join(tmp, "volume" + volume_suffix)))
        phases = elastic.load_phases(path, threshold=None if threshold < 0 else threshold)
    C_phases = elastic.phase_stiffness(phases, [float(e) for e in E], [float(v) for v in nu])
    result = elastic.homogenize(elastic.StiffnessField.from_phases(phases, C_phases, device=dev),
                                tol=tol, max_iter=max_iter, precision=precision)
    record = provenance.record(seed=None, step="homogenize",
                               params={"E": E, "nu": nu, "tol": tol, "precision": precision,
                                       "threshold": threshold, "device": str(dev)})
    with open(stiffness.path, "w") as f:
        json.dump({**result.to_record(0), "cells": list(phases.shape), "provenance": record}, f, indent=1)
    iterations, residual = int(result.iterations.max()), float(result.residual.max())
    metrics.log_metric("cg_iterations", iterations)
    metrics.log_metric("residual", residual)
    for i in range(3):
        metrics.log_metric(f"C_{i + 1}{i + 1}", float(result.C_voigt()[0, i, i]))
    return namedtuple("Outputs", ["iterations", "residual"])(iterations, residual)
