from components import component


@component
def generate_set_shard(dataset_uri: str, item: str, sets: dict, generator: dict, seed: int, backend: str) -> str:
    """Generate one shard (``item`` = ``'<set>/<index>'``) of seed 003's VE sets under ``<dataset_uri>/sets/``;
    a shard already there with the same generator and seed is kept, not generated again."""
    import logging

    from micropipe.datasets.ve_sets import SetsConfig, write_set_shard

    logging.basicConfig(level=logging.INFO)
    return write_set_shard(dataset_uri, item, SetsConfig.from_dict(sets, generator, seed), backend=backend)
