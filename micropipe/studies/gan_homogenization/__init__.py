"""gan_homogenization (seed 001): a 3D WGAN-GP trained on two-phase volumes, its samples judged by p1, p2 and the
FFT-homogenized C11 against the training volumes.

``steps``: the training volumes (periodic spheres or Latin-hypercube sub-volumes) and the resumable training.
``report``: eq. (34) errors beside the paper's and the training set's own floor. Volume stacks travel as
:mod:`micropipe.datasets.volumes`; the stiffness as :meth:`micropipe.spectral.elastic.Homogenization.to_record`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """The pipeline's parameters, checked as its steps will read them (``ValueError`` naming the parameter)."""
    from micropipe.params import integral_floats_to_int, positive_int
    from micropipe.studies import arguments as check
    from micropipe.studies.gan_homogenization.steps import SOURCES, configs

    a = integral_floats_to_int(dict(arguments))
    if a["source"] not in SOURCES:
        raise ValueError(f"source: unknown data source {a['source']!r}; expected one of {', '.join(SOURCES)}")
    for name in ("n_train", "size", "n_samples", "n_homogenize"):
        positive_int(a[name], name)
    check.seed(a["seed"])
    check.seed(a["sample_seed"], "sample_seed")
    check.positive(a["radius"], "radius")
    check.fraction(a["volume_fraction"], "volume_fraction")
    check.positive(a["sigma_pred"], "sigma_pred")
    check.positive(a["tol"], "tol")
    generator, _, _ = configs(a["model"], a["model_overrides"], a["train_config"])
    if generator.out_size != a["size"]:
        raise ValueError(f"size: {a['size']}, but model {a['model']!r} generates volumes of {generator.out_size}^3; "
                         f"expected the model's size (or model_overrides.generator.out_size)")
    E, nu = list(a["E"]), list(a["nu"])
    if len(E) != len(nu) or len(E) < 2:
        raise ValueError(f"E, nu: {len(E)} and {len(nu)} values; expected one per phase (two for two phases)")
    for k, (e, v) in enumerate(zip(E, nu, strict=True)):
        check.positive(e, f"E[{k}]")
        check.fraction(v, f"nu[{k}]", low=-1.0, high=0.5)
