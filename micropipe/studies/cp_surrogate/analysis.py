"""Seed 003 §3.2-3.3 on a trained VAE: misorientation of reconstructions per set, PCA, t-SNE and spectral
clustering of the fingerprints, and what they encode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micropipe.datasets.fingerprints import matrix
from micropipe.datasets.ve_sets import TEXTURE_EDGE_CASES, load_index
from micropipe.datasets.ve_tensors import load_tensors
from micropipe.metrics.latent import clustering_accuracy, fingerprint_probe, tsne_by_set


def analyze(vae_path: str | Path, fingerprints: pd.DataFrame, dataset_uri: str, *, n_reconstruct: int = 32,
            n_components: int = 3, seed: int = 0, device: str | None = None) -> dict[str, Any]:
    """Seed 003 §3.2-3.3 on a trained VAE: phi4 of reconstructions per set, PCA of the fingerprints fitted on
    the training set, spectral clustering of the textured edge cases on ``n_components`` principal
    components, a few input/reconstruction slices, and :func:`micropipe.metrics.latent.fingerprint_probe`
    (train -> validation).

    Returns a JSON-ready dict; ``examples`` holds mid-plane slices (lists) of inputs and reconstructions.
    """
    from sklearn.cluster import SpectralClustering
    from sklearn.decomposition import PCA

    from micropipe.metrics.misorientation import mean_phi4
    from micropipe.models.checkpoint import load_checkpoint
    from micropipe.models.vae3d import KIND, VAE3D, reconstruct

    index = load_index(dataset_uri)
    lattice = index["lattice"]
    checkpoint = load_checkpoint(vae_path, kind=KIND)
    model = VAE3D.from_checkpoint(checkpoint, device=device)
    train_settings = checkpoint["config"].get("train", {})
    del checkpoint
    phi4, examples = {}, {}
    for name in index["sets"]:
        _, x = load_tensors(index["sets"][name]["uri"], lattice, limit=n_reconstruct)
        x_hat = reconstruct(model, x, device=device)
        values = mean_phi4(x, x_hat, lattice)
        phi4[name] = {"mean": float(values.mean()), "std": float(values.std()), "n": len(values)}
        mid = x.shape[-1] // 2
        examples[name] = {"input": x[0, :, :, :, mid].tolist(), "reconstruction": x_hat[0, :, :, :, mid].tolist()}
    _, f_train = matrix(fingerprints, "train")
    pca = PCA(n_components=min(n_components, *f_train.shape), random_state=seed).fit(f_train)
    coords = {name: pca.transform(matrix(fingerprints, name)[1]).tolist() for name in index["sets"]
              if name in set(fingerprints["set"])}
    out: dict[str, Any] = {"lattice": lattice, "vae": {"model": model.config.to_dict(), "train": train_settings},
                           "phi4": phi4, "examples": examples,
                           "pca": {"explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
                                   "coords": coords},
                           "tsne": tsne_by_set(fingerprints, [n for n in index["sets"] if n in coords], seed),
                           "probe": fingerprint_probe(fingerprints)}
    textures = [t for t in TEXTURE_EDGE_CASES if t in coords]
    if len(textures) >= 2:
        z = np.concatenate([np.asarray(coords[t]) for t in textures])
        truth = np.concatenate([np.full(len(coords[t]), k) for k, t in enumerate(textures)])
        n_neighbors = int(min(10, len(z) - 1))
        pred = SpectralClustering(n_clusters=len(textures), affinity="nearest_neighbors", n_neighbors=n_neighbors,
                                  random_state=seed).fit_predict(z)
        out["clustering"] = {"classes": textures, "accuracy": clustering_accuracy(truth, pred),
                             "n": len(z), "labels_true": truth.tolist(), "labels_pred": pred.tolist(),
                             "features": f"first {z.shape[1]} principal components (fitted on train)"}
    return out
