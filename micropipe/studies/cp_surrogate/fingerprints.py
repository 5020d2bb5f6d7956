"""The fingerprint step: the encoder means of every VE of a VE dataset (or of every set of a family) with their
texture descriptors, written as a :mod:`micropipe.datasets.fingerprints` file."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micropipe import store
from micropipe.datasets import ve_sets
from micropipe.datasets.fingerprints import write_fingerprints
from micropipe.datasets.ve_tensors import VESetTensors
from micropipe.models.checkpoint import load_checkpoint
from micropipe.models.vae3d import KIND, VAE3D, encode_mean
from micropipe.studies.cp_surrogate.vae import vae_lattice
from micropipe.ve.stats import texture_descriptors

log = logging.getLogger(__name__)


def fingerprint_sets(model: VAE3D, lattice: str, dataset_uris: Mapping[str, str], *, device: str | None = None,
                     batch_size: int = 32) -> pd.DataFrame:
    """Encoder means of every VE of each dataset; one row per VE: ``set``, ``ve_id``, ``fingerprint``, and
    ``texture`` (the VE's :data:`micropipe.ve.stats.TEXTURE_DESCRIPTORS`).

    ``model``: a trained VAE of the fundamental zone of ``lattice`` (:func:`micropipe.studies.cp_surrogate.vae.
    vae_lattice`). ``dataset_uris``: {name: VE dataset URI}; any gathered VE dataset of that lattice and the VAE's
    cells works.
    """
    rows = []
    for name, uri in dataset_uris.items():
        x = VESetTensors(uri, lattice)
        ids = x.ids
        if x.grain_ids.shape[1:] != (model.config.size,) * 3:
            raise ValueError(f"{uri}: VEs of {x.grain_ids.shape[1:]} cells, but the VAE takes "
                             f"{(model.config.size,) * 3}; resample them (micropipe.ve.volume.resample)")
        mu = encode_mean(model, x, batch_size=batch_size, device=device)
        texture = texture_descriptors(x.grain_ids, x.euler, lattice)
        rows += [{"set": name, "ve_id": i, "fingerprint": m.astype(np.float32), "texture": t}
                 for i, m, t in zip(ids, mu, texture, strict=True)]
        log.info("fingerprinted %d VEs of %s", len(ids), uri)
    return pd.DataFrame(rows, columns=["set", "ve_id", "fingerprint", "texture"])


def fingerprint(vae_path: str | Path, dataset_uri: str, out_path: str | Path, *, device: str | None = None
                ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The ``fingerprint`` step: fingerprints of every VE of each set when ``dataset_uri`` holds a family of sets
    (``sets.json``), else of the one VE dataset there, written to ``out_path``.

    The VAE checkpoint (2.5 GB at paper scale) is read once; its digest for the file's provenance is one more
    streaming pass. Returns the frame and the metadata written with it (``lattice``, ``sets``, ...).
    """
    if store.exists(store.join(dataset_uri, ve_sets.INDEX)):
        uris = {k: v["uri"] for k, v in ve_sets.load_index(dataset_uri)["sets"].items()}
    else:
        uris = {"dataset": dataset_uri}
    checkpoint = load_checkpoint(vae_path, kind=KIND)
    lattice = vae_lattice(checkpoint, str(vae_path))
    model = VAE3D.from_checkpoint(checkpoint, device=device)
    del checkpoint
    df = fingerprint_sets(model, lattice, uris, device=device)
    meta = write_fingerprints(df, out_path, vae_path=vae_path, lattice=lattice)
    return df, meta
