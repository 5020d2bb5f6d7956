from kfp.dsl import Dataset, Input, Model, Output

from components import torch_component


@torch_component
def fingerprint(vae: Input[Model], dataset_uri: str, device: str, fingerprints: Output[Dataset]):
    """Encoder means (seed 003's fingerprints) of every VE of a VE dataset in the store: of each set when
    ``dataset_uri`` holds a family of sets (``sets.json``), else of the one dataset there. Parquet, one row per VE."""
    import logging

    from micropipe import cp_surrogate, store
    from micropipe.ve import sets

    logging.basicConfig(level=logging.INFO)
    if store.exists(store.join(dataset_uri, sets.INDEX)):
        uris = {k: v["uri"] for k, v in cp_surrogate.load_index(dataset_uri)["sets"].items()}
    else:
        uris = {"dataset": dataset_uri}
    df = cp_surrogate.fingerprint_sets(vae.path, uris, device=device or None)
    lattice = cp_surrogate.vae_lattice(vae.path)
    cp_surrogate.write_fingerprints(df, fingerprints.path, vae_path=vae.path, lattice=lattice)
    fingerprints.metadata.update({"n": len(df), "sets": sorted(set(df["set"])), "lattice": lattice,
                                  "dataset_uri": dataset_uri})
