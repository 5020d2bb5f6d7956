from kfp.dsl import Dataset, Input, Model, Output

from components import torch_component


@torch_component
def sample_wgan(generator: Input[Model], n: int, seed: int, sigma_pred: float, volumes: Output[Dataset]):
    """Binary volumes drawn from a trained generator (z ~ N(0, sigma_pred^2))."""
    import logging

    from micropipe import provenance
    from micropipe.datasets.volumes import save_volumes
    from micropipe.models.wgan3d import Generator, sample

    logging.basicConfig(level=logging.INFO)
    net = Generator.from_checkpoint(generator.path, device=None)
    stack = sample(net, n, rng_seed=seed, sigma_pred=sigma_pred)
    save_volumes(volumes.path, stack, provenance.record(seed=seed, step="gan.sample", params={
        "n": n, "sigma_pred": sigma_pred, "generator": net.config.to_dict()}))
    volumes.metadata.update({"n": n, "p1_mean": float(stack.mean())})
