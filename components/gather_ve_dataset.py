from typing import List

from kfp.dsl import Dataset, Output

from components import component


@component
def gather_ve_dataset(dataset_uri: str, n_ve: int, shard_size: int, seed: int, generator: dict, backend: str,
                      shards: List[str], dataset: Output[Dataset]):
    """Fan-in: check every shard under ``dataset_uri`` and write the dataset manifest.

    ``shards``: the URIs the ``generate_ve_shard`` tasks returned (``dsl.Collected``); they must be exactly the
    shards the manifest lists. The Dataset artifact holds the manifest (JSON); the shards stay in the store at
    ``dataset_uri``.
    """
    import json
    import logging

    from micropipe.datasets.ve import gather

    logging.basicConfig(level=logging.INFO)
    manifest = gather(dataset_uri, n_ve=n_ve, shard_size=shard_size, generator=generator, seed=seed,
                      backend=backend, collected=shards)
    with open(dataset.path, "w") as f:
        json.dump(manifest, f, indent=1)
    dataset.metadata.update({"dataset_uri": dataset_uri, "n_ve": n_ve, "n_shards": len(manifest["shards"]),
                             "seed": seed, "backend": backend, "git_commit": manifest["provenance"]["git_commit"],
                             "version": manifest["provenance"]["version"]})
