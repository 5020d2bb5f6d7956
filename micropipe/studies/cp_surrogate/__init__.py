"""cp_surrogate (seed 003 end to end): VE sets -> 3D ResNet VAE -> fingerprints -> latent-space analysis -> CP runs
-> stress-curve surrogate -> report.

``vae``: training the VAE on the sets' ``train`` set. ``fingerprints``: the encoder means of every set.
``analysis``: phi4 of reconstructions, PCA, t-SNE, clustering, what the fingerprints encode. ``surrogate``: join
CP results and fingerprints, fit, score, save. ``predictor``: VAE + surrogate in one file for ``micropipe
predict``. ``report``: every number beside seed 003's. The CP runs are :mod:`micropipe.studies.cp_dataset`'s;
the sets, tensors and fingerprint files are :mod:`micropipe.datasets`'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """The pipeline's parameters, checked as its steps will read them (``ValueError`` naming the parameter)."""
    from micropipe import backends
    from micropipe.datasets.ve_sets import SetsConfig
    from micropipe.params import positive_int
    from micropipe.studies import arguments as check
    from micropipe.studies.cp_surrogate import surrogate, vae

    sets = SetsConfig.from_dict(arguments["sets"], arguments["generator"], check.seed(arguments["seed"]))
    backends.get("ve", arguments["ve_backend"])
    cells = sets.generator_of("train").cells
    if len(set(cells)) != 1:
        raise ValueError(f"generator.cells: {cells}; the VAE takes cubic VEs (N, N, N)")
    model, _ = vae.configs(arguments["vae"], arguments["vae_train"], cells[0])
    positive_int(arguments["n_reconstruct"], "n_reconstruct")
    check.cp_runs(arguments, sets.lattice)
    surrogate.configs(arguments["surrogate"], arguments["surrogate_train"], model.latent_dim)
    check.fraction(arguments["train_fraction"], "train_fraction")
