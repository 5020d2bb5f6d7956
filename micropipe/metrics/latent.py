"""Latent-space metrics of seed 003 §3.3: clustering accuracy under the best cluster-to-class matching, linear
read-outs of what an embedding encodes (ridge regression), and a 2D t-SNE map of several sets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from micropipe.datasets.fingerprints import matrix
from micropipe.ve.stats import TEXTURE_DESCRIPTORS


def clustering_accuracy(labels_true: Sequence[int], labels_pred: Sequence[int]) -> float:
    """Fraction classified correctly under the best one-to-one matching of cluster to class (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    t, p = np.asarray(labels_true), np.asarray(labels_pred)
    classes, clusters = np.unique(t), np.unique(p)
    counts = np.array([[np.sum((t == c) & (p == k)) for k in clusters] for c in classes])
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(t))


def ridge_readout() -> Any:
    """Standardised inputs, then ridge regression with the penalty chosen by leave-one-out (scikit-learn): the
    linear read-out of :func:`fingerprint_probe` and of
    :func:`micropipe.studies.cp_surrogate.surrogate.texture_reference`."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))


def fingerprint_probe(fingerprints: pd.DataFrame, *, fit_set: str = "train", score_set: str = "validation"
                      ) -> dict[str, Any]:
    """What the fingerprints encode: for each of :data:`TEXTURE_DESCRIPTORS`, ridge regression from the
    standardised fingerprints of ``fit_set`` (penalty by leave-one-out, scikit-learn ``RidgeCV``), scored as R^2
    on ``score_set``.

    R^2 near 1: a linear read-out of the fingerprint recovers the descriptor; near 0 or below: it does not
    (a nonlinear one might). ``{}`` for fingerprints written without descriptors.
    """
    if "texture" not in fingerprints:
        return {}
    (_, X), (_, T) = matrix(fingerprints, fit_set), matrix(fingerprints, fit_set, "texture")
    (_, Xs), (_, Ts) = matrix(fingerprints, score_set), matrix(fingerprints, score_set, "texture")
    r2: dict[str, float | None] = {}
    for k, name in enumerate(TEXTURE_DESCRIPTORS):
        if len(Xs) < 2 or float(np.var(Ts[:, k])) == 0.0:
            r2[name] = None  # R^2 undefined
            continue
        model = ridge_readout().fit(X, T[:, k])
        r2[name] = float(model.score(Xs, Ts[:, k]))
    return {"fit_set": fit_set, "score_set": score_set, "n_fit": len(X), "n_score": len(Xs), "r2": r2}


def tsne_by_set(fingerprints: pd.DataFrame, names: Sequence[str], seed: int, max_points: int = 2000) -> dict[str, Any]:
    """2D t-SNE (scikit-learn) of the fingerprints of every set together, at most ``max_points`` of them
    (the first VEs of each set in proportion); {set: coordinates}."""
    from sklearn.manifold import TSNE

    per_set = max(1, max_points // max(1, len(names)))
    parts = {n: matrix(fingerprints, n)[1][:per_set] for n in names}
    z = np.concatenate(list(parts.values()))
    if len(z) < 5:
        return {}
    xy = TSNE(n_components=2, perplexity=float(min(30, (len(z) - 1) / 3)), random_state=seed,
              init="pca").fit_transform(z)
    out, k = {}, 0
    for n, part in parts.items():
        out[n] = xy[k:k + len(part)].tolist()
        k += len(part)
    return out
