from components import component


@component
def generate_ve_shard(dataset_uri: str, shard_index: int, n_ve: int, shard_size: int, seed: int,
                      generator: dict, backend: str) -> str:
    """Generate one shard of volume elements (``backend``: builtin or dream3d) and write it to the store."""
    import logging

    from micropipe.datasets.ve import write_shard

    logging.basicConfig(level=logging.INFO)
    return write_shard(dataset_uri, shard_index, n_ve=n_ve, shard_size=shard_size, generator=generator,
                       seed=seed, backend=backend)
