from kfp.dsl import Dataset, Input, Model, Output

from components import torch_component


@torch_component
def train_wgan(volumes: Input[Dataset], model: str, model_overrides: dict, train_config: dict,
               checkpoint_uri: str, generator: Output[Model], loss_log: Output[Dataset]):
    """Train the 3D WGAN-GP; a rerun with the same ``checkpoint_uri`` resumes from its last checkpoint."""
    import csv
    import logging
    import shutil

    from micropipe.datasets.volumes import load_volumes
    from micropipe.studies.gan_homogenization.steps import train
    from micropipe.train.wgan import LOG_FIELDS

    logging.basicConfig(level=logging.INFO)
    stack, _ = load_volumes(volumes.path)
    result = train(stack, model=model, model_overrides=model_overrides, train_config=train_config,
                   checkpoint_uri=checkpoint_uri)
    shutil.copyfile(result.checkpoint, generator.path)
    with open(loss_log.path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(result.loss_log)
    generator.metadata.update({"step": result.step, "model": model, "checkpoint_uri": checkpoint_uri})
