from kfp.dsl import Dataset, Input, Output

from components import torch_component


@torch_component
def homogenize_volumes(volumes: Input[Dataset], n_max: int, E: list, nu: list, tol: float,
                       stiffness: Output[Dataset]):
    """Effective stiffness (Voigt, Mandel) of the first ``n_max`` volumes of a stack, batched FFT solves; JSON,
    the record of micropipe.spectral.elastic.Homogenization.to_record."""
    import json
    import logging

    from micropipe import provenance
    from micropipe.datasets.volumes import load_volumes
    from micropipe.spectral.elastic import homogenize_stack

    logging.basicConfig(level=logging.INFO)
    stack, _ = load_volumes(volumes.path)
    result = homogenize_stack(stack[:n_max], [float(e) for e in E], [float(v) for v in nu], tol=tol)
    record = provenance.record(seed=None, step="homogenize_volumes", params={"E": E, "nu": nu, "tol": tol,
                                                                             "n_max": n_max})
    with open(stiffness.path, "w") as f:
        json.dump({**result.to_record(), "cells": list(stack.shape[1:]), "provenance": record}, f)
    stiffness.metadata.update({"n": len(result.C), "max_iterations": int(result.iterations.max()), "tol": tol})
