from typing import List

from components import component


@component
def plan_dataset_shards(dataset_uri: str) -> List[int]:
    """Indices of the shards of a gathered VE dataset (from its manifest): the fan-out items of a CP step."""
    from micropipe.datasets.ve import load_manifest

    return list(range(len(load_manifest(dataset_uri)["shards"])))
