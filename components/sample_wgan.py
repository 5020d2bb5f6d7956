from kfp.dsl import Dataset, Input, Model, Output

from components import torch_component


@torch_component
def sample_wgan(generator: Input[Model], n: int, seed: int, sigma_pred: float, volumes: Output[Dataset]):
    """Binary volumes drawn from a trained generator (z ~ N(0, sigma_pred^2))."""
    import logging

    from micropipe import gan_homogenization as gh
    from micropipe import provenance
    from micropipe.models.wgan3d import load_generator, sample

    logging.basicConfig(level=logging.INFO)
    net, config = load_generator(generator.path, device=None)
    stack = sample(net, n, rng_seed=seed, sigma_pred=sigma_pred)
    gh.save_volumes(volumes.path, stack, provenance.record(seed=seed, step="gan.sample", params={
        "n": n, "sigma_pred": sigma_pred, "generator": config.to_dict()}))
    volumes.metadata.update({"n": n, "p1_mean": float(stack.mean())})
