from kfp.dsl import Dataset, Model, Output

from components import torch_component


@torch_component
def train_vae(dataset_uri: str, model: dict, train: dict, device: str, vae: Output[Model],
              loss_log: Output[Dataset]):
    """Train seed 003's 3D ResNet VAE on the ``train`` set of ``dataset_uri`` (validation: ``validation``);
    the run lives at ``<dataset_uri>/vae``, so a rerun resumes (or, when finished, returns at once)."""
    import logging
    import shutil

    from micropipe.studies.cp_surrogate.vae import train_vae as train_the_vae

    logging.basicConfig(level=logging.INFO)
    result = train_the_vae(dataset_uri, model=model, train=train, device=device or None)
    shutil.copyfile(result.best_path, vae.path)
    shutil.copyfile(result.loss_log_path, loss_log.path)
    vae.metadata.update({"epoch": result.epoch, "best_epoch": result.best_epoch, "best_val": result.best_val,
                         "stopped": result.stopped_reason, "lattice": result.data["lattice"],
                         "model": result.config.to_dict()})
