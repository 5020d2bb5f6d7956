from typing import List

from components import component


@component
def plan_ve_sets(sets: dict, generator: dict, seed: int) -> List[str]:
    """Fan-out items ``'<set>/<shard index>'`` of every shard of seed 003's VE sets (micropipe.datasets.ve_sets)."""
    from micropipe.datasets.ve_sets import SetsConfig

    return SetsConfig.from_dict(sets, generator, seed).items()
