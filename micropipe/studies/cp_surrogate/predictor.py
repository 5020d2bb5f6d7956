"""The predictor of the cp_surrogate study: one file with the VAE and the surrogate that turns a VE into its
sigma_zz-strain curve (what ``micropipe predict`` loads), needing no training code."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from micropipe import provenance, store
from micropipe.datasets.ve_tensors import ve_tensor
from micropipe.models.checkpoint import load_checkpoint, read_torch
from micropipe.models.surrogate import load_surrogate, predict
from micropipe.models.vae3d import VAE3D, encode_mean
from micropipe.studies.cp_surrogate.vae import vae_lattice
from micropipe.ve.volume import VolumeElement

PREDICTOR_FORMAT = "micropipe.predictor/1"


def save_predictor(path: str | Path, vae_path: str | Path, surrogate_path: str | Path, *,
                   strain: Sequence[float], extra: Mapping[str, Any] | None = None) -> Path:
    """One file with both checkpoints (VAE, surrogate) and the strain of each output: what ``micropipe
    predict`` needs to turn a VE into a stress-strain curve."""
    import torch


    vae_ckpt, sur_ckpt = load_checkpoint(vae_path), load_checkpoint(surrogate_path)
    latent, in_dim = vae_ckpt["config"]["model"]["latent_dim"], sur_ckpt["config"]["model"]["in_dim"]
    if latent != in_dim:
        raise ValueError(f"{surrogate_path}: the surrogate takes fingerprints of dimension {in_dim}, but the VAE "
                         f"{vae_path} makes fingerprints of dimension {latent}; expected the VAE whose fingerprints "
                         f"trained the surrogate")
    if len(strain) != sur_ckpt["config"]["model"]["out_dim"]:
        raise ValueError(f"strain: {len(strain)} values, but the surrogate has "
                         f"{sur_ckpt['config']['model']['out_dim']} outputs")
    bundle = {"format": PREDICTOR_FORMAT, "vae": vae_ckpt, "surrogate": sur_ckpt,
              "strain": [float(s) for s in strain], "lattice": vae_lattice(vae_ckpt, str(vae_path)),
              "provenance": provenance.record(seed=None, step="cp_surrogate.predictor",
                                              params={"vae_sha256": provenance.file_sha256(vae_path),
                                                      "surrogate_sha256": provenance.file_sha256(surrogate_path),
                                                      **dict(extra or {})})}
    with store.atomic_path(path) as tmp:
        torch.save(bundle, tmp)
    return Path(path)


@dataclasses.dataclass
class Predictor:
    """A loaded predictor: ``predict(ve)`` gives the sigma_zz curve (Pa) at ``strain``."""

    vae: Any
    surrogate: Any
    scaler: Any
    lattice: str
    strain: np.ndarray
    size: int
    device: Any = None

    def fingerprints(self, ves: Sequence[VolumeElement], sources: Sequence[str] | None = None) -> np.ndarray:
        sources = sources or [f"VE {k}" for k in range(len(ves))]
        xs = []
        for ve, source in zip(ves, sources, strict=True):
            if ve.cells != (self.size,) * 3:
                raise ValueError(f"{source}: cells {ve.cells}, but the VAE takes {(self.size,) * 3}; resample the VE "
                                 f"(micropipe.ve.volume.resample) or use a VAE trained on this size")
            xs.append(ve_tensor(ve, self.lattice, source))
        return encode_mean(self.vae, np.stack(xs), device=self.device)

    def predict(self, ves: Sequence[VolumeElement], sources: Sequence[str] | None = None) -> np.ndarray:
        """sigma_zz in Pa, shape (n, n_outputs), of each VE."""
        return predict(self.surrogate, self.scaler, self.fingerprints(ves, sources), device=self.device)


def load_predictor(path: str | Path, device: str | None = None) -> Predictor:
    """Rebuild a :class:`Predictor` from a file of :func:`save_predictor` (no training code needed)."""

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictor file")
    bundle = read_torch(path)
    if not isinstance(bundle, dict) or bundle.get("format") != PREDICTOR_FORMAT:
        raise ValueError(f"{path}: not a {PREDICTOR_FORMAT} file (written by "
                         f"micropipe.studies.cp_surrogate.predictor.save_predictor; the pipeline's 'predictor' output)")
    model = VAE3D.from_checkpoint(bundle["vae"], device=device)
    surrogate, scaler, _ = load_surrogate(bundle["surrogate"], device=device)
    return Predictor(vae=model, surrogate=surrogate, scaler=scaler, lattice=bundle["lattice"],
                     strain=np.asarray(bundle["strain"]), size=int(model.config.size), device=device)
