"""Seed 003's family of VE datasets: training, validation, the edge cases of §2.1.2 and the CP set.

Every set is an ordinary VE dataset (:mod:`micropipe.datasets.ve`: HDF5 shards + manifest) under
``<dataset_uri>/sets/<name>``, so any tool that reads a VE dataset reads a set. The sets share one base
generator (the training distribution); the edge cases change one thing each:

==============  ===========================================================================
train           base generator, random texture
validation      the same distribution, other seeds
large_grains    mean ESD x 12.24 / 5.78 (seed 003: 12.24 against the training 5.78)
small_grains    mean ESD x 2.73 / 5.78
elongated       mean ESD x 9.54 / 5.78, grains 2:1:1 along x
brass ... goss  base morphology, orientations about the ideal component (2 deg spread, seed's
                Euler-angle recipe: noise folded positive where the ideal angle is zero)
cp              base generator, random texture: the VEs that get crystal plasticity and train the
                surrogate (fingerprinted by a VAE that never saw them)
==============  ===========================================================================

The ESD ratios keep the seed's edge cases relative to the training distribution when the base
generator is rescaled (smaller VEs in the ``small`` preset). Orientations are reduced to the
fundamental zone of the base generator's lattice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from micropipe import store
from micropipe.datasets import ve as dataset
from micropipe.datasets.shards import check_collected, read_json
from micropipe.params import integral_floats_to_int
from micropipe.ve.generator import MORPHOLOGIES, GeneratorConfig

log = logging.getLogger(__name__)

TRAINING_ESD = MORPHOLOGIES["equiaxed"]["esd_mean"]
MORPHOLOGY_EDGE_CASES = ("large_grains", "small_grains", "elongated")
TEXTURE_EDGE_CASES = ("brass", "copper", "cube", "goss")
EDGE_CASES = MORPHOLOGY_EDGE_CASES + TEXTURE_EDGE_CASES
SET_NAMES = ("train", "validation", *EDGE_CASES, "cp")
INDEX = "sets.json"
"""Written last by :func:`gather`: the set URIs, counts and generators."""
INDEX_FORMAT = "micropipe-ve-sets"


@dataclasses.dataclass(frozen=True)
class SetsConfig:
    """How many VEs each set holds and how they are made.

    Attributes
    ----------
    generator : dict
        Base :class:`~micropipe.ve.generator.GeneratorConfig` fields (the training distribution); its
        ``lattice`` is the fundamental zone of every set.
    n_train, n_validation, n_edge, n_cp : int
        VEs in the training and validation sets, in each edge-case set (0 leaves them out) and in the
        CP set (seed 003: 100,000, 10,000, 100 per edge case, 50,000).
    shard_size : int
        VEs per shard (the unit of the generation fan-out and of the CP fan-out).
    seed : int
        Seed of the whole family; each set draws from its own stream.
    spread_deg : float
        Scatter of the textured edge cases about their ideal component (seed: 2 deg).
    texture_sampling : {'euler', 'spherical'}
        'euler': the seed's recipe; see :func:`micropipe.ve.texture.sample_orientations`.
    """

    generator: dict[str, Any]
    n_train: int = 192
    n_validation: int = 48
    n_edge: int = 16
    n_cp: int = 64
    shard_size: int = 16
    seed: int = 0
    spread_deg: float = 2.0
    texture_sampling: str = "euler"

    def __post_init__(self) -> None:
        for name in ("n_train", "n_validation", "n_edge", "n_cp", "shard_size"):
            v = getattr(self, name)
            low = 1 if name in ("n_train", "n_validation", "shard_size") else 0
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise ValueError(f"sets: field {name!r} must be an integer >= {low}, got {v!r}")
        base = GeneratorConfig.from_dict(self.generator)
        if base.texture != "random":
            raise ValueError(f"sets: field 'generator.texture' must be 'random' (the training distribution; the "
                             f"textured edge cases are made from it), got {base.texture!r}")
        for name in self.names:  # every set's generator must be valid before anything is written
            self.generator_of(name)

    @classmethod
    def from_dict(cls, d: dict[str, Any], generator: dict[str, Any], seed: int) -> SetsConfig:
        """From the pipeline parameters ``sets`` (counts etc.), ``generator`` and ``seed`` (KFP passes the
        integers of dict parameters as floats; integral floats become ints)."""
        d, generator = integral_floats_to_int(dict(d)), integral_floats_to_int(dict(generator))
        fields = {f.name for f in dataclasses.fields(cls)} - {"generator", "seed"}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"sets: unknown field(s) {', '.join(unknown)}; expected some of "
                             f"{', '.join(sorted(fields))}")
        return cls(generator=dict(generator), seed=int(seed), **d)

    @property
    def lattice(self) -> str:
        return GeneratorConfig.from_dict(self.generator).lattice

    @property
    def names(self) -> tuple[str, ...]:
        """The sets this config makes, in :data:`SET_NAMES` order (edge cases and CP set only when counted)."""
        return tuple(n for n in SET_NAMES if self.count(n) > 0)

    def count(self, name: str) -> int:
        if name in EDGE_CASES:
            return self.n_edge
        if name not in SET_NAMES:
            raise ValueError(f"unknown set {name!r}; expected one of {', '.join(SET_NAMES)}")
        return {"train": self.n_train, "validation": self.n_validation, "cp": self.n_cp}[name]

    def generator_of(self, name: str) -> GeneratorConfig:
        base = GeneratorConfig.from_dict(self.generator)
        if name in MORPHOLOGY_EDGE_CASES:
            recipe = dict(MORPHOLOGIES[name])
            recipe["esd_mean"] = base.esd_mean * recipe["esd_mean"] / TRAINING_ESD
            return dataclasses.replace(base, **recipe)
        if name in TEXTURE_EDGE_CASES:
            return dataclasses.replace(base, texture=name, spread_deg=self.spread_deg,
                                       texture_sampling=self.texture_sampling)
        self.count(name)
        return base

    def seed_of(self, name: str) -> int:
        """Seed of set ``name``: its own stream of the family seed, so sets never share VEs."""
        return int(np.random.SeedSequence([self.seed, SET_NAMES.index(name)]).generate_state(1)[0])

    def items(self) -> list[str]:
        """Fan-out items ``'<set>/<shard index>'`` of every shard of every set."""
        return [f"{name}/{i}" for name in self.names
                for i in range(len(dataset.shard_ranges(self.count(name), self.shard_size)))]


def set_uri(dataset_uri: str, name: str) -> str:
    return store.join(dataset_uri, "sets", name)


def _parse_item(item: str, config: SetsConfig) -> tuple[str, int]:
    name, sep, index = str(item).partition("/")
    if not sep or name not in config.names or not index.isdigit():
        raise ValueError(f"item: expected '<set>/<shard index>' with set one of {', '.join(config.names)}, "
                         f"got {item!r}")
    return name, int(index)


def write_set_shard(dataset_uri: str, item: str, config: SetsConfig, backend: str = "builtin") -> str:
    """Generate shard ``item`` (``'<set>/<index>'``) unless an identical one (same generator, seed, range) is
    already in the store; returns the shard URI."""
    name, index = _parse_item(item, config)
    uri_base = set_uri(dataset_uri, name)
    generator = config.generator_of(name).to_dict()
    seed = config.seed_of(name)
    expected = {"seed": seed, "params.generator": generator, "params.backend": backend,
                "params.n_ve": config.count(name), "params.shard_size": config.shard_size}
    uri = dataset.KIND.shard_uri(uri_base, index)
    if dataset.KIND.is_complete(uri, dataset.shard_record, expected):
        log.info("%s exists with the same generator and seed; not generated again", uri)
        return uri
    return dataset.write_shard(uri_base, index, n_ve=config.count(name), shard_size=config.shard_size,
                               generator=generator, seed=seed, backend=backend)


def gather(dataset_uri: str, config: SetsConfig, backend: str = "builtin",
           collected: Sequence[str] | None = None) -> dict[str, Any]:
    """Gather every set (:func:`micropipe.datasets.ve.gather`), then write the index ``sets.json``.

    ``collected``: the shard URIs the fan-out's tasks returned, checked first against the shards of every set.
    """
    if collected is not None:
        check_collected(collected, [dataset.KIND.shard_uri(set_uri(dataset_uri, name), i)
                                    for name in config.names
                                    for i in range(len(dataset.shard_ranges(config.count(name), config.shard_size)))])
    sets = {}
    for name in config.names:
        manifest = dataset.gather(set_uri(dataset_uri, name), n_ve=config.count(name),
                                  shard_size=config.shard_size, generator=config.generator_of(name).to_dict(),
                                  seed=config.seed_of(name), backend=backend)
        sets[name] = {"uri": manifest["uri"], "n_ve": manifest["n_ve"], "n_shards": len(manifest["shards"]),
                      "generator": config.generator_of(name).to_dict(), "seed": config.seed_of(name)}
    index = {"format": INDEX_FORMAT, "format_version": 1, "lattice": config.lattice,
             "seed": config.seed, "sets": sets}
    store.write_text(store.join(dataset_uri, INDEX), json.dumps(index, indent=1))
    return index


def load_index(dataset_uri: str) -> dict[str, Any]:
    """The ``sets.json`` index of a family of VE sets (written by :func:`gather`)."""
    return read_json(store.join(dataset_uri, INDEX), INDEX_FORMAT,
                     "no VE set index; generate and gather the sets first")
