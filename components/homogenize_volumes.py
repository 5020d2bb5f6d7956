from kfp.dsl import Dataset, Input, Output

from components import torch_component


@torch_component
def homogenize_volumes(volumes: Input[Dataset], n_max: int, E: list, nu: list, tol: float,
                       stiffness: Output[Dataset]):
    """Effective stiffness (Voigt, Mandel) of the first ``n_max`` volumes of a stack, batched FFT solves."""
    import io
    import logging
    from pathlib import Path

    import numpy as np

    from micropipe import gan_homogenization as gh
    from micropipe.spectral.elastic import homogenize_stack

    logging.basicConfig(level=logging.INFO)
    stack, _ = gh.load_volumes(volumes.path)
    result = homogenize_stack(stack[:n_max], [float(e) for e in E], [float(v) for v in nu], tol=tol)
    buf = io.BytesIO()
    np.savez(buf, C_voigt=result.C_voigt(), C_mandel=result.C, iterations=result.iterations,
             residual=result.residual)
    Path(stiffness.path).write_bytes(buf.getvalue())
    stiffness.metadata.update({"n": len(result.C), "max_iterations": int(result.iterations.max()), "tol": tol})
