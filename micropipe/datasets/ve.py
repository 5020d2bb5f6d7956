"""VE datasets in the store: shards written independently (fan-out), then gathered into a manifest (fan-in).

Layout under a dataset URI (local path or ``s3://bucket/prefix``)::

    <dataset_uri>/shards/shard-00000.h5     HDF5 shards, micropipe.ve.io format
    <dataset_uri>/shards/shard-00001.h5
    <dataset_uri>/manifest.json             written last by :func:`gather`; a dataset without it is incomplete

VE ``i`` of a dataset is made from ``ve_seed(seed, i)`` alone, so the bytes of a VE do not depend on
how the dataset was split into shards or on which machine a shard ran.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from micropipe import backends, provenance, store
from micropipe.datasets import shards
from micropipe.datasets.shards import Kind, check_collected, plan
from micropipe.ve import io
from micropipe.ve.generator import GeneratorConfig, generate_many, ve_seed
from micropipe.ve.volume import VolumeElement

log = logging.getLogger(__name__)

KIND = Kind(format="micropipe-ve-dataset", suffix=".h5",
            missing_shard="dataset {dataset_uri}: shard {index} ({uri}) is missing; expected {n_shards} shards for "
                          "n_ve={n_ve}, shard_size={shard_size}")
"""VE datasets: HDF5 shards (:func:`micropipe.ve.io.write_shard`) at the dataset's root, then ``manifest.json``."""
MANIFEST = shards.MANIFEST


def shard_name(index: int) -> str:
    return KIND.shard_name(index)


def ve_id(index: int) -> str:
    return f"ve_{index:07d}"


def shard_ranges(n_ve: int, shard_size: int) -> list[tuple[int, int]]:
    """Half-open VE index ranges ``[start, stop)`` of every shard."""
    return plan(n_ve, shard_size, "n_ve")


def check_backend(backend: str) -> str:
    """``backend`` if it names a VE generator (:func:`micropipe.backends.get`), else a ``ValueError``."""
    return backends.get("ve", backend).name


def generate_ves(config: GeneratorConfig, seed: int, indices: Iterable[int],
                 backend: str = "builtin") -> Iterator[tuple[int, VolumeElement]]:
    """``(index, VE)`` for each index; VE ``i`` is made from ``ve_seed(seed, i)`` by ``backend``."""
    dream3d = backends.get("ve", backend).load()
    if dream3d is None:
        yield from generate_many(config, seed, indices)
        return
    with tempfile.TemporaryDirectory(prefix="micropipe-dream3d-") as tmp:
        for i in indices:
            yield i, dream3d.generate(config, ve_seed(seed, i), Path(tmp) / ve_id(i))


def write_shard(dataset_uri: str, shard_index: int, *, n_ve: int, shard_size: int,
                generator: dict[str, Any], seed: int, backend: str = "builtin") -> str:
    """Generate the VEs of one shard and write them to ``<dataset_uri>/shards/``; returns the shard URI.

    The shard appears only when complete (see :meth:`micropipe.datasets.shards.Kind.write_shard`).
    """
    check_backend(backend)
    ranges = shard_ranges(n_ve, shard_size)
    if not 0 <= shard_index < len(ranges):
        raise ValueError(f"shard_index must lie in [0, {len(ranges) - 1}] for n_ve={n_ve}, "
                         f"shard_size={shard_size}; got {shard_index}")
    config = GeneratorConfig.from_dict(generator)
    start, stop = ranges[shard_index]
    ves = {ve_id(i): ve for i, ve in generate_ves(config, seed, range(start, stop), backend)}
    record = provenance.record(seed=seed, step="ve.write_shard",
                               params={"generator": config.to_dict(), "backend": backend, "n_ve": n_ve,
                                       "shard_size": shard_size, "shard_index": shard_index,
                                       "ve_range": [start, stop]})
    uri = KIND.write_shard(dataset_uri, shard_index, lambda path: io.write_shard(path, ves, provenance=record))
    log.info("wrote %d VEs to %s", len(ves), uri)
    return uri


def shard_record(path: str | Path) -> dict[str, Any]:
    """The provenance record of a complete HDF5 VE shard (what made it); ``ValueError`` for an unreadable or
    incomplete shard."""
    return io.shard_info(path)["provenance"]


def gather(dataset_uri: str, *, n_ve: int, shard_size: int, generator: dict[str, Any],
           seed: int, backend: str = "builtin", collected: Sequence[str] | None = None) -> dict[str, Any]:
    """Check that every shard of the dataset is present and complete, then write its manifest.

    ``collected``: the shard URIs the fan-out's tasks returned, checked against the shards first
    (:func:`micropipe.datasets.shards.check_collected`).

    Raises
    ------
    ValueError
        A shard is missing, incomplete, or holds other VE ids than its range; ``collected`` is not the shards.
    """
    ranges = shard_ranges(n_ve, shard_size)
    if collected is not None:
        check_collected(collected, [KIND.shard_uri(dataset_uri, i) for i in range(len(ranges))])

    def check(index: int, uri: str, path: Path) -> dict[str, Any]:
        start, stop = ranges[index]
        info = io.shard_info(path)
        expected = [ve_id(i) for i in range(start, stop)]
        if list(info["ids"]) != expected:
            raise ValueError(f"{uri}: holds VE ids {info['ids'][:3]}..., expected {expected[0]} ... {expected[-1]}")
        return {"path": shard_name(index), "n_ve": stop - start, "first": expected[0], "last": expected[-1],
                "cells": info.get("cells")}

    shards = KIND.check_shards(dataset_uri, len(ranges), check, n_ve=n_ve, shard_size=shard_size)
    manifest = KIND.write_manifest(dataset_uri, {
        "n_ve": n_ve,
        "shard_size": shard_size,
        "shards": shards,
        "provenance": provenance.record(seed=seed, step="ve.gather",
                                        params={"generator": GeneratorConfig.from_dict(generator).to_dict(),
                                                "backend": backend, "n_ve": n_ve, "shard_size": shard_size}),
    })
    log.info("gathered %d shards (%d VEs) into %s", len(shards), n_ve, dataset_uri)
    return manifest


def load_manifest(dataset_uri: str) -> dict[str, Any]:
    """The manifest of a gathered dataset; a clear error if it is missing or malformed."""
    return KIND.load_manifest(dataset_uri)


def iter_ves(manifest: dict[str, Any], limit: int | None = None) -> Iterator[tuple[str, VolumeElement]]:
    """Yield ``(ve_id, VolumeElement)`` of a gathered dataset in id order, reading one shard at a time."""
    count = 0
    for shard in manifest["shards"]:
        with store.local_copy(store.join(manifest["uri"], shard["path"])) as path:
            for item in io.iter_shard(path):
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
