from kfp.dsl import Dataset, Output

from components import component


@component
def twophase_volumes(source: str, n: int, size: int, seed: int, radius: float, volume_fraction: float,
                     volume_uri: str, threshold: float, volumes: Output[Dataset]):
    """Seed 001 training volumes: periodic spheres, or LHS sub-volumes of a large volume (``threshold`` < 0: none)."""
    import logging

    from micropipe.datasets.volumes import save_volumes
    from micropipe.studies.gan_homogenization.steps import make_volumes

    logging.basicConfig(level=logging.INFO)
    stack, attrs = make_volumes(source, n, size=size, seed=seed, radius=radius, volume_fraction=volume_fraction,
                                volume_uri=volume_uri, threshold=None if threshold < 0 else threshold)
    save_volumes(volumes.path, stack, attrs)
    volumes.metadata.update({"n": len(stack), "size": size, "source": source, "p1_mean": float(stack.mean())})
