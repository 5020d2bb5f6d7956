"""KFP components, one module per step. Each is thin: parse inputs, call `micropipe`, write outputs.

Bodies import inside the function because KFP ships only the function's source to the pod; the
image (or, locally, the current venv) provides `micropipe`. Components never pip-install at run time.
"""

from __future__ import annotations

import functools
import os

from kfp import dsl

from micropipe import __version__

BASE_IMAGE = os.environ.get("MICROPIPE_BASE_IMAGE", f"ghcr.io/micropipe/micropipe-base:{__version__}")
"""CPU image with micropipe and its pinned dependencies (images/base)."""

TORCH_IMAGE = os.environ.get("MICROPIPE_TORCH_IMAGE", f"ghcr.io/micropipe/micropipe-torch:{__version__}")
"""CUDA image for GPU steps (images/torch)."""

DAMASK_IMAGE = os.environ.get("MICROPIPE_DAMASK_IMAGE", f"ghcr.io/micropipe/micropipe-damask:{__version__}")
"""The base image plus DAMASK_grid (images/damask): for CP steps run with ``backend='damask'``."""

DREAM3D_IMAGE = os.environ.get("MICROPIPE_DREAM3D_IMAGE", f"ghcr.io/micropipe/micropipe-dream3d:{__version__}")
"""The base image plus DREAM.3D's PipelineRunner (images/dream3d): for VE steps run with ``backend='dream3d'``."""

component = functools.partial(dsl.component, base_image=BASE_IMAGE, install_kfp_package=False)
"""``@component`` for CPU steps: the base image, no run-time pip install."""

torch_component = functools.partial(dsl.component, base_image=TORCH_IMAGE, install_kfp_package=False)
"""``@torch_component`` for steps that may use a GPU."""
