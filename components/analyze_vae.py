from kfp.dsl import Dataset, Input, Model, Output

from components import torch_component


@torch_component
def analyze_vae(vae: Input[Model], fingerprints: Input[Dataset], dataset_uri: str, n_reconstruct: int, seed: int,
                device: str, analysis: Output[Dataset]):
    """Seed 003 §3.2-3.3: phi4 of reconstructions per set, PCA of the fingerprints, spectral clustering of the
    textured edge cases (JSON)."""
    import json
    import logging

    from micropipe.datasets.fingerprints import read_fingerprints
    from micropipe.studies.cp_surrogate.analysis import analyze

    logging.basicConfig(level=logging.INFO)
    df, _ = read_fingerprints(fingerprints.path)
    out = analyze(vae.path, df, dataset_uri, n_reconstruct=n_reconstruct, seed=seed,
                               device=device or None)
    with open(analysis.path, "w") as f:
        json.dump(out, f)
    analysis.metadata.update({"phi4": {k: v["mean"] for k, v in out["phi4"].items()},
                              "clustering_accuracy": out.get("clustering", {}).get("accuracy")})
