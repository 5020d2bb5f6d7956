from typing import List

from components import component


@component
def plan_shards(n_items: int, shard_size: int) -> List[int]:
    """Indices of the shards that split ``n_items`` into groups of ``shard_size``: the fan-out items."""
    from micropipe.datasets.ve import shard_ranges

    return list(range(len(shard_ranges(n_items, shard_size))))
