from typing import List, NamedTuple

from kfp.dsl import Dataset, Output

from components import component


@component
def gather_ve_sets(dataset_uri: str, sets: dict, generator: dict, seed: int, backend: str, shards: List[str],
                   index: Output[Dataset]) -> NamedTuple("Outputs", [("cp_uri", str)]):
    """Fan-in: check and gather every set, write ``<dataset_uri>/sets.json``; ``cp_uri`` is the CP set's URI.

    ``shards``: the URIs the ``generate_set_shard`` tasks returned (``dsl.Collected``); each set must have
    received exactly as many distinct shards as it has.
    """
    import json
    import logging
    from collections import namedtuple

    from micropipe.datasets.ve_sets import SetsConfig, gather

    logging.basicConfig(level=logging.INFO)
    written = gather(dataset_uri, SetsConfig.from_dict(sets, generator, seed), backend=backend, collected=shards)
    with open(index.path, "w") as f:
        json.dump(written, f, indent=1)
    index.metadata.update({"dataset_uri": dataset_uri, "lattice": written["lattice"],
                           "n_ve": {k: v["n_ve"] for k, v in written["sets"].items()}})
    return namedtuple("Outputs", ["cp_uri"])(written["sets"].get("cp", {}).get("uri", ""))
