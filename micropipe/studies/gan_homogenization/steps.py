"""The steps of seed 001's study: two-phase training volumes, and WGAN-GP training with its checkpoint kept in the
store so that a rerun resumes."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from micropipe import provenance, store
from micropipe.params import config_from, integral_floats_to_int
from micropipe.ve import twophase

log = logging.getLogger(__name__)


SOURCES = ("spheres", "subvolumes")


def make_volumes(source: str, n: int, *, size: int, seed: int, radius: float = 4.0,
                 volume_fraction: float = 0.2, volume_uri: str = "", threshold: float | None = None
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """Training volumes of seed 001: periodic spheres (§5.1) or Latin-hypercube sub-volumes of one large
    volume (§5.2; ``volume_uri`` empty = the built-in synthetic fibre-like volume)."""
    if source not in SOURCES:
        raise ValueError(f"source: unknown data source {source!r}; expected one of {', '.join(SOURCES)}")
    if source == "spheres":
        made = twophase.sphere_volumes(n, shape=(size,) * 3, radius=radius, volume_fraction=volume_fraction,
                                       rng_seed=seed)
    else:
        volume = volume_uri or twophase.synthetic_large_volume(rng_seed=seed)
        made = twophase.latin_hypercube_subvolumes(volume, n, size=size, threshold=threshold, rng_seed=seed)
    attrs = provenance.record(seed=seed, step="gan.make_volumes",
                              params={"source": source, "n": n, "size": size, "radius": radius,
                                      "volume_fraction": volume_fraction, "volume_uri": volume_uri,
                                      "threshold": threshold, "made": made.attrs})
    return made.volumes, attrs


def configs(model: str, model_overrides: Mapping[str, Any], train_config: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """``(generator, discriminator, training)`` configs of the pipeline parameters ``model`` (a preset of
    :data:`micropipe.models.wgan3d.PRESETS`), ``model_overrides`` (``{'generator': {...}, 'discriminator':
    {...}}``) and ``train_config`` (:class:`micropipe.train.wgan.TrainConfig` fields); a ``ValueError`` naming the
    parameter and field otherwise."""
    from micropipe.models import wgan3d
    from micropipe.train import wgan

    if model not in wgan3d.PRESETS:
        raise ValueError(f"model: unknown preset {model!r}; expected one of {', '.join(wgan3d.PRESETS)}")
    model_overrides = integral_floats_to_int(dict(model_overrides))
    unknown = sorted(set(model_overrides) - {"generator", "discriminator"})
    if unknown:
        raise ValueError(f"model_overrides: unknown key(s) {unknown}; expected 'generator' and/or 'discriminator'")
    gen, disc = (config_from(f"model_overrides.{part}", type(base), {**base.to_dict(), **model_overrides.get(part, {})})
                 for part, base in zip(("generator", "discriminator"), wgan3d.PRESETS[model], strict=True))
    return gen, disc, config_from("train_config", wgan.TrainConfig, integral_floats_to_int(dict(train_config)))


def train(volumes: np.ndarray, *, model: str, model_overrides: dict[str, Any], train_config: dict[str, Any],
          checkpoint_uri: str, device: str | None = None):
    """Train (or resume) the WGAN-GP with its checkpoint kept at ``checkpoint_uri`` (path or s3://).

    A rerun with the same ``checkpoint_uri`` continues the run from its last checkpoint.
    """
    from micropipe.train import wgan

    gen, disc, config = configs(model, model_overrides, train_config)
    if store.is_remote(checkpoint_uri):
        with tempfile.TemporaryDirectory() as tmp:
            if store.exists(checkpoint_uri):
                store.get_dir(checkpoint_uri, tmp)

            def sync(step: int) -> None:
                if step % config.checkpoint_every == 0:
                    store.put_dir(tmp, checkpoint_uri)

            result = wgan.train(volumes, tmp, gen, disc, config, device=device, on_step=sync)
            store.put_dir(tmp, checkpoint_uri)
            return result
    return wgan.train(volumes, checkpoint_uri, gen, disc, config, device=device)
