from kfp.dsl import Dataset, Input, Model, Output

from components import torch_component


@torch_component
def fit_surrogate(fingerprints: Input[Dataset], results: Input[Dataset], vae: Input[Model], model: dict,
                  train: dict, train_fraction: float, seed: int, device: str, surrogate: Output[Model],
                  predictor: Output[Model], evaluation: Output[Dataset]):
    """Fit seed 003's surrogate (fingerprint -> 21 sigma_zz values) on the converged CP runs, evaluate it against
    the training-mean baseline; ``predictor`` bundles VAE + surrogate for ``micropipe predict``."""
    import json
    import logging

    from micropipe.datasets.cp_results import read_results
    from micropipe.datasets.fingerprints import read_fingerprints
    from micropipe.studies.cp_surrogate.surrogate import fit_and_save

    logging.basicConfig(level=logging.INFO)
    df, meta = read_fingerprints(fingerprints.path)
    fitted = fit_and_save(df, read_results(results.path), vae_path=vae.path, model=model, train=train,
                          train_fraction=train_fraction, seed=seed, device=device or None,
                          surrogate_path=surrogate.path, predictor_path=predictor.path, lattice=meta["lattice"])
    with open(evaluation.path, "w") as f:
        json.dump(fitted, f)
    test = fitted["evaluation"]["test"]
    surrogate.metadata.update({"n_train": len(fitted["split"]["train"]), "n_test": len(fitted["split"]["test"]),
                               "mse_test": test["mse"], "mae_MPa_test": test["mae_MPa"]})
