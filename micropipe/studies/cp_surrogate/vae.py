"""The VAE of the cp_surrogate study: training (or resuming) it on the ``train`` set of a family of VE sets, and the
fundamental zone a trained VAE belongs to."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from micropipe import store
from micropipe.datasets.ve_sets import load_index
from micropipe.datasets.ve_tensors import VESetTensors
from micropipe.params import config_from, integral_floats_to_int


def configs(model: Mapping[str, Any], train: Mapping[str, Any], size: int) -> tuple[Any, Any]:
    """``(VAEConfig, TrainConfig)`` of the pipeline parameters ``vae`` and ``vae_train`` for VEs of ``size``^3
    voxels; a ``ValueError`` naming the parameter and field otherwise."""
    from micropipe.models.vae3d import VAEConfig
    from micropipe.train import vae

    return (config_from("vae", VAEConfig, {**integral_floats_to_int(dict(model)), "size": int(size)}),
            config_from("vae_train", vae.TrainConfig, integral_floats_to_int(dict(train))))


def train_vae(dataset_uri: str, *, model: Mapping[str, Any], train: Mapping[str, Any], device: str | None = None):
    """Train (or resume) the VAE on the ``train`` set, validating on ``validation``; the run directory is
    ``<dataset_uri>/vae`` (local or s3://), so a rerun with the same data resumes or returns at once."""
    from micropipe.train import vae

    index = load_index(dataset_uri)
    lattice = index["lattice"]
    x_train = VESetTensors(index["sets"]["train"]["uri"], lattice)
    x_val = VESetTensors(index["sets"]["validation"]["uri"], lattice)
    cells = x_train.grain_ids.shape[1:]
    if len(set(cells)) != 1:
        raise ValueError(f"{x_train.uri}: VEs of {cells} cells; the VAE takes cubic VEs (N, N, N)")
    model_config, train_config = configs(model, train, cells[0])
    data = {"lattice": lattice, "dataset_uri": dataset_uri, "n_train": len(x_train), "n_validation": len(x_val)}
    run_uri = store.join(dataset_uri, "vae")
    if not store.is_remote(run_uri):
        return vae.train(x_train, x_val, run_uri, model_config, train_config, device=device, data=data)
    with tempfile.TemporaryDirectory() as tmp:
        if store.exists(store.join(run_uri, vae.CHECKPOINT)):
            store.get_dir(run_uri, tmp)
        result = vae.train(x_train, x_val, tmp, model_config, train_config, device=device, data=data)
        store.put_dir(tmp, run_uri)
    return result


def vae_lattice(checkpoint: Mapping[str, Any] | str | Path, source: str | None = None) -> str:
    """The fundamental zone a VAE was trained on, from its checkpoint (a loaded dict or a path)."""
    if not isinstance(checkpoint, Mapping):
        from micropipe.models.checkpoint import load_checkpoint

        source = source or str(checkpoint)
        checkpoint = load_checkpoint(checkpoint)
    lattice = (checkpoint.get("data") or {}).get("lattice")
    if lattice is None:
        raise ValueError(f"{source}: field 'data.lattice' missing; expected a VAE checkpoint written by "
                         f"micropipe.train.vae.train with its fundamental zone")
    return str(lattice)
