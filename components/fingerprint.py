from kfp.dsl import Dataset, Input, Model, Output

from components import torch_component


@torch_component
def fingerprint(vae: Input[Model], dataset_uri: str, device: str, fingerprints: Output[Dataset]):
    """Encoder means (seed 003's fingerprints) of every VE of a VE dataset in the store: of each set when
    ``dataset_uri`` holds a family of sets (``sets.json``), else of the one dataset there. Parquet, one row per VE."""
    import logging

    from micropipe.studies.cp_surrogate.fingerprints import fingerprint as fingerprint_step

    logging.basicConfig(level=logging.INFO)
    df, meta = fingerprint_step(vae.path, dataset_uri, fingerprints.path, device=device or None)
    fingerprints.metadata.update({"n": len(df), "sets": sorted(set(df["set"])), "lattice": meta["lattice"],
                                  "dataset_uri": dataset_uri})
