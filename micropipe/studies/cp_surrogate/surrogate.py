"""The surrogate step of seed 003: join the CP results with the fingerprints of their VEs, split, fit the MLP,
score it against the training-mean baseline and beside a texture-descriptor reference, and save the surrogate
and the predictor bundle."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micropipe import provenance
from micropipe.datasets.fingerprints import matrix
from micropipe.metrics.latent import ridge_readout
from micropipe.params import config_from, integral_floats_to_int
from micropipe.studies.cp_surrogate.predictor import save_predictor
from micropipe.ve.stats import TEXTURE_DESCRIPTORS


def surrogate_data(fingerprints: pd.DataFrame, results: pd.DataFrame, *, set_name: str = "cp") -> dict[str, Any]:
    """Join the CP results with the fingerprints of their VEs.

    Non-converged runs are listed in ``excluded`` with their reason, never silently dropped. The number of
    outputs is that of the converged curves (21 for seed 003's load case: the initial state and 20
    increments).

    Raises
    ------
    ValueError
        No converged run; converged curves of different lengths; a converged VE without a fingerprint.

    Returns
    -------
    dict
        ``ids`` (list), ``X`` (n, d) float32, ``Y`` (n, k) sigma_zz in Pa, ``strain`` (k,) the mean engineering
        strain per output, ``excluded`` (list of {ve_id, reason}); ``T`` (n, 5) the texture descriptors, when
        the fingerprints have them.
    """
    ids, X = matrix(fingerprints, set_name)
    by_id = dict(zip(ids, X, strict=True))
    excluded = [{"ve_id": r.ve_id, "reason": f"not converged: {r.reason}"}
                for r in results.itertuples(index=False) if not r.converged]
    keep = [r for r in results.itertuples(index=False) if r.converged]
    if not keep:
        raise ValueError(f"CP results: none of the {len(results)} runs converged; nothing to train the surrogate "
                         f"on (reasons: {sorted({e['reason'] for e in excluded})[:3]})")
    lengths = {len(r.stress) for r in keep}
    if len(lengths) > 1:
        raise ValueError(f"CP results: converged curves have {sorted(lengths)} values; expected one load case "
                         f"(one length) for every run")
    for r in keep:
        bad = np.flatnonzero(~np.isfinite(np.asarray(r.stress, float)))
        if bad.size:
            raise ValueError(f"CP results: VE {r.ve_id} is marked converged but its stress has NaN/inf at "
                             f"output(s) {bad.tolist()[:5]}; expected finite sigma_zz (Pa) for every converged run")
    missing = [r.ve_id for r in keep if r.ve_id not in by_id]
    if missing:
        raise ValueError(f"fingerprints: no fingerprint for converged CP run(s) {missing[:5]} of set {set_name!r}; "
                         f"expected the CP results and the fingerprints of the same VE set")
    Y = np.stack([np.asarray(r.stress, float) for r in keep])
    strain = np.mean(np.stack([np.asarray(r.strain, float) for r in keep]), axis=0)
    out = {"ids": [r.ve_id for r in keep], "X": np.stack([by_id[r.ve_id] for r in keep]), "Y": Y,
           "strain": strain, "excluded": excluded}
    if "texture" in fingerprints:
        texture = dict(zip(*matrix(fingerprints, set_name, "texture"), strict=True))
        out["T"] = np.stack([texture[r.ve_id] for r in keep])
    return out


def configs(model: Mapping[str, Any], train: Mapping[str, Any], in_dim: int, out_dim: int | None = None
            ) -> tuple[Any, Any]:
    """``(SurrogateConfig, TrainConfig)`` of the pipeline parameters ``surrogate`` and ``surrogate_train`` for
    fingerprints of ``in_dim`` values and curves of ``out_dim`` (default the model's); a ``ValueError`` naming the
    parameter and field otherwise."""
    from micropipe.models.surrogate import SurrogateConfig
    from micropipe.train import surrogate as sur

    fields = {**integral_floats_to_int(dict(model)), "in_dim": int(in_dim)}
    if out_dim is not None:
        fields["out_dim"] = int(out_dim)
    return (config_from("surrogate", SurrogateConfig, fields),
            config_from("surrogate_train", sur.TrainConfig, integral_floats_to_int(dict(train))))


def fit_surrogate(data: Mapping[str, Any], *, model: Mapping[str, Any], train: Mapping[str, Any],
                  train_fraction: float = 0.8, n_train: int | None = None, val_fraction: float = 0.15,
                  seed: int = 0, device: str | None = None) -> dict[str, Any]:
    """Split (seed 003: 40,000 / 8,401), fit the surrogate on the training split, evaluate both splits against
    the training-mean-curve baseline.

    The epoch whose weights are kept is chosen on ``val_fraction`` of the *training* split, held out from the
    fit; the test split is used only for the final scores (choosing the epoch on it would flatter them).

    Returns ``result`` (FitResult), ``split`` (train, test and the validation part of train), ``evaluation``
    (train, test), ``baseline_curve`` (Pa) and, with texture descriptors in ``data``, ``texture_reference``
    (:func:`texture_reference`).
    """
    from micropipe.train import surrogate as sur

    ids = list(data["ids"])
    train_ids, test_ids = sur.split(ids, n_train=n_train, train_fraction=train_fraction, rng_seed=seed)
    fit_ids, val_ids = sur.split(train_ids, train_fraction=1.0 - val_fraction, rng_seed=seed + 1)
    pos = {i: k for k, i in enumerate(ids)}
    rows = {name: [pos[i] for i in part] for name, part in
            (("train", train_ids), ("test", test_ids), ("fit", fit_ids), ("val", val_ids))}
    X, Y = np.asarray(data["X"]), np.asarray(data["Y"])
    model_config, config = configs(model, train, X.shape[1], Y.shape[1])
    result = sur.fit(X[rows["fit"]], Y[rows["fit"]], X[rows["val"]], Y[rows["val"]], config,
                     model_config=model_config, device=device)
    baseline = Y[rows["train"]].mean(axis=0)
    evaluation = {name: sur.evaluate(result.model, result.scaler, X[rows[name]], Y[rows[name]],
                                     baseline_curve=baseline) for name in ("train", "test")}
    out = {"result": result, "split": {"train": list(train_ids), "test": list(test_ids),
                                       "validation_of_train": list(val_ids)},
           "evaluation": evaluation, "baseline_curve": baseline}
    if "T" in data:
        T = np.asarray(data["T"])
        out["texture_reference"] = texture_reference(T[rows["train"]], Y[rows["train"]], T[rows["test"]],
                                                     Y[rows["test"]])
    return out


def texture_reference(T_train: np.ndarray, Y_train: np.ndarray, T_test: np.ndarray, Y_test: np.ndarray
                      ) -> dict[str, Any]:
    """A reference beside the surrogate, not seed 003's method: ridge regression (standardised inputs, penalty by
    leave-one-out) from the :data:`TEXTURE_DESCRIPTORS` (n, 5) to the stress curves (n, k) in Pa, fitted on the
    training split and scored on the test split. It shows how much of the CP response texture explains with this
    many runs, which is what a fingerprint that encodes texture could reach.

    Returns ``method``, ``descriptors``, ``mae_MPa`` and ``mae_MPa_per_increment`` (k,) on the test split.
    """
    model = ridge_readout().fit(T_train, Y_train / 1e6)
    err = np.abs(model.predict(T_test) - Y_test / 1e6)
    return {"method": "ridge regression on the texture descriptors (reference)",
            "descriptors": list(TEXTURE_DESCRIPTORS), "mae_MPa": float(err.mean()),
            "mae_MPa_per_increment": err.mean(axis=0).tolist()}


def fit_and_save(fingerprints: pd.DataFrame, results: pd.DataFrame, *, vae_path: str | Path,
                 surrogate_path: str | Path, predictor_path: str | Path, lattice: str, model: Mapping[str, Any],
                 train: Mapping[str, Any], train_fraction: float = 0.8, n_train: int | None = None, seed: int = 0,
                 device: str | None = None) -> dict[str, Any]:
    """The ``fit_surrogate`` step: join, fit, evaluate, write the surrogate and the predictor bundle.

    Returns a JSON-ready record: ``split``, ``excluded``, ``strain``, ``evaluation`` (train, test), ``history``,
    ``baseline_curve_Pa``, ``texture_reference`` (None without texture descriptors) and the test split's true
    and predicted curves (Pa) for the report.
    """
    from micropipe.models.surrogate import predict, save_surrogate

    data = surrogate_data(fingerprints, results)
    fitted = fit_surrogate(data, model=model, train=train, train_fraction=train_fraction, n_train=n_train,
                           seed=seed, device=device)
    result = fitted["result"]
    save_surrogate(surrogate_path, result, fingerprint_dim=data["X"].shape[1], lattice=lattice,
                       extra={"n_excluded": len(data["excluded"])})
    save_predictor(predictor_path, vae_path, surrogate_path, strain=data["strain"],
                   extra={"n_train": len(fitted["split"]["train"]), "n_test": len(fitted["split"]["test"])})
    pos = {i: k for k, i in enumerate(data["ids"])}
    test_rows = [pos[i] for i in fitted["split"]["test"]]
    y_pred = predict(result.model, result.scaler, data["X"][test_rows], device=device)
    return json.loads(provenance.dumps({
        "split": fitted["split"], "excluded": data["excluded"], "strain": data["strain"],
        "evaluation": fitted["evaluation"], "history": result.history, "best_epoch": result.best_epoch,
        "texture_reference": fitted.get("texture_reference"),
        "baseline_curve_Pa": fitted["baseline_curve"], "test_true_Pa": data["Y"][test_rows],
        "test_pred_Pa": y_pred, "n_converged": len(data["ids"]), "n_runs": len(results),
        "provenance": provenance.record(seed=seed, step="cp_surrogate.fit_surrogate",
                                        params={"model": dict(model), "train": dict(train),
                                                "train_fraction": train_fraction, "n_train": n_train}),
    }))
