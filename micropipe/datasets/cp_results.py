"""Crystal-plasticity results of a VE dataset: one Parquet file of volume-averaged curves per VE shard, gathered.

Layout under a dataset URI (beside the VE shards of :mod:`micropipe.datasets.ve`)::

    <dataset_uri>/cp/shards/shard-00000.parquet   one row per VE of VE shard 0 (:func:`write_results`)
    <dataset_uri>/cp/cp_results.parquet           every row, in VE id order (written by :func:`gather`)
    <dataset_uri>/cp/manifest.json                written last by :func:`gather`

Columns (DESIGN §3 "CP results"); stresses in Pa, times in s, one entry per *output* increment, the
undeformed state first, stopping at the last converged increment when a run did not converge:

================  ================================================================================
``ve_id``         str, the VE's id in the dataset
``converged``     bool; a VE that does not converge is a row with its ``reason``, never dropped
``reason``        str, empty when converged
``time``          list of float, s
``strain``        list of float: engineering strain ``F_zz - 1`` (21 values for seed 003's load case)
``stress``        list of float: volume-averaged Cauchy ``sigma_zz``, Pa
``sigma``         list of 6-lists: volume-averaged Cauchy stress, Voigt order 11, 22, 33, 23, 13, 12, Pa
``F``             list of 9-lists: volume-averaged deformation gradient, row-major
``iterations``    list of int: global iterations per output increment
``cutbacks``      list of int: cutback levels per output increment
``n_increments``  int: output increments completed (``len(strain) - 1``)
``backend``       str: ``builtin`` or ``damask_grid``
``wall_time_s``   float: seconds for this VE (a batch's time divided by its size)
``n_grains``      int
``cells``         list of 3 int
================  ================================================================================

In memory (:func:`read_results`, :func:`micropipe.studies.cp_dataset.runs.run_shard`) the list columns hold
numpy arrays: ``sigma`` (n, 6), ``F`` (n, 9), the others (n,).  Every Parquet file carries, in its schema
metadata under ``micropipe``, the provenance, the number of rows, a fingerprint of the parameters and
``complete: true``; it is written under a temporary name and renamed, so a file without that record is never
taken as complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from micropipe import provenance as _provenance
from micropipe import store
from micropipe.crystal.tensors import VOIGT_PAIRS
from micropipe.datasets import shards
from micropipe.datasets import ve as ve_dataset
from micropipe.datasets.shards import Kind, check_collected, publish, recorded_checksum
from micropipe.ve import io

log = logging.getLogger(__name__)


RESULTS_FORMAT = "micropipe-cp-results"
RESULTS_FORMAT_VERSION = 1
META_KEY = b"micropipe"
RESULTS_DIR = "cp"
KIND = Kind(format="micropipe-cp-dataset", suffix=".parquet", prefix=RESULTS_DIR,
            missing_manifest="no CP manifest; the CP results were never gathered",
            missing_shard="CP results of shard {index} ({uri}) are missing; expected one results file per VE shard "
                          "({n_shards})")
"""CP results: one Parquet file per VE shard under ``cp/shards/``, then ``cp/manifest.json``."""
GATHERED = f"{RESULTS_DIR}/cp_results.parquet"
MANIFEST = f"{RESULTS_DIR}/{shards.MANIFEST}"

SCHEMA = pa.schema([
    ("ve_id", pa.string()),
    ("converged", pa.bool_()),
    ("reason", pa.string()),
    ("time", pa.list_(pa.float64())),
    ("strain", pa.list_(pa.float64())),
    ("stress", pa.list_(pa.float64())),
    ("sigma", pa.list_(pa.list_(pa.float64(), 6))),
    ("F", pa.list_(pa.list_(pa.float64(), 9))),
    ("iterations", pa.list_(pa.int64())),
    ("cutbacks", pa.list_(pa.int64())),
    ("n_increments", pa.int64()),
    ("backend", pa.string()),
    ("wall_time_s", pa.float64()),
    ("n_grains", pa.int64()),
    ("cells", pa.list_(pa.int64(), 3)),
])
COLUMNS = tuple(SCHEMA.names)
_NESTED = {"sigma": 6, "F": 9}
_INT_LISTS = ("iterations", "cutbacks", "cells")


def shard_results_name(index: int) -> str:
    """Path of the results of VE shard ``index`` relative to the dataset URI."""
    return KIND.shard_name(index)


def result_row(ve_id: str, result: Any, *, n_grains: int, cells: Sequence[int]) -> dict[str, Any]:
    """One results row (see the module docstring) of a :class:`micropipe.spectral.cp.CPResult`."""
    F = np.asarray(result.F, float).reshape(-1, 3, 3)
    sigma = np.asarray(result.sigma, float).reshape(-1, 3, 3)
    return {
        "ve_id": str(ve_id),
        "converged": bool(result.converged),
        "reason": str(result.reason or ""),
        "time": np.asarray(result.time, float).reshape(-1),
        "strain": F[:, 2, 2] - 1.0,
        "stress": sigma[:, 2, 2].copy(),
        "sigma": np.stack([sigma[:, i, j] for i, j in VOIGT_PAIRS], axis=-1).reshape(-1, 6),
        "F": F.reshape(-1, 9),
        "iterations": np.asarray(result.iterations, np.int64).reshape(-1),
        "cutbacks": np.asarray(result.cutbacks, np.int64).reshape(-1),
        "n_increments": max(len(F) - 1, 0),
        "backend": str(result.backend),
        "wall_time_s": float(result.wall_time),
        "n_grains": int(n_grains),
        "cells": np.asarray(cells, np.int64).reshape(3),
    }


def failed_row(ve_id: str, reason: str, *, backend: str, wall_time: float, n_grains: int,
               cells: Sequence[int]) -> dict[str, Any]:
    """Row of a VE whose solve raised: not converged, only the undeformed state."""
    return {"ve_id": ve_id, "converged": False, "reason": reason, "time": np.zeros(1), "strain": np.zeros(1),
            "stress": np.zeros(1), "sigma": np.zeros((1, 6)), "F": np.eye(3).reshape(1, 9),
            "iterations": np.zeros(0, np.int64), "cutbacks": np.zeros(0, np.int64), "n_increments": 0,
            "backend": backend, "wall_time_s": float(wall_time), "n_grains": int(n_grains),
            "cells": np.asarray(cells, np.int64).reshape(3)}


def frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """DataFrame with the results columns in order (also for no rows)."""
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def _table(df: pd.DataFrame) -> pa.Table:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"CP results: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    arrays = []
    for field in SCHEMA:
        values = df[field.name].tolist()
        if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type):
            values = [np.asarray(v).tolist() for v in values]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def write_results(df: pd.DataFrame, uri: str | os.PathLike, provenance: Mapping[str, Any], *,
                  params_sha256: str | None = None, ve_sha256: str | None = None) -> str:
    """Write CP results to Parquet at ``uri`` (local path or ``s3://``), atomically; returns ``uri``.

    The schema metadata key ``micropipe`` holds JSON: ``format``, ``format_version``, ``n_ve``,
    ``n_converged``, ``params_sha256`` (:func:`fingerprint` of the solver parameters), ``ve_sha256``
    (:func:`ve_digest` of the VE shard the rows were computed from), ``provenance`` and ``complete: true``.
    The file is written under a temporary name and renamed (or uploaded in one PUT), so nothing
    half-written appears at ``uri``; its SHA-256 goes into ``<uri>.sha256`` beside it
    (:func:`micropipe.datasets.shards.publish`).
    """
    table = _table(df)
    meta = {"format": RESULTS_FORMAT, "format_version": RESULTS_FORMAT_VERSION, "n_ve": int(len(df)),
            "n_converged": int(np.sum(df["converged"].to_numpy(bool))), "params_sha256": params_sha256,
            "ve_sha256": ve_sha256, "provenance": dict(provenance), "complete": True}
    table = table.replace_schema_metadata({META_KEY: _provenance.dumps(meta).encode()})
    publish(str(uri), lambda path: pq.write_table(table, path, compression="zstd"))
    log.info("wrote %s (%d VEs, %d converged)", uri, meta["n_ve"], meta["n_converged"])
    return str(uri)


def results_metadata(uri: str | os.PathLike) -> dict[str, Any]:
    """The ``micropipe`` metadata record of a results file, without reading its rows.

    Raises
    ------
    ValueError
        Not a Parquet file, or no micropipe record, or a record of another format.
    """
    with store.local_copy(uri) as path:
        try:
            schema = pq.read_schema(path)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
            raise ValueError(f"{uri}: not a readable Parquet file, expected CP results ({e})") from e
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{uri}: schema metadata 'micropipe' is missing: not written by micropipe.datasets.cp_results")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{uri}: schema metadata 'micropipe': expected JSON text ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{uri}: schema metadata 'micropipe': field 'format' is "
                         f"{meta.get('format') if isinstance(meta, dict) else meta!r}, expected {RESULTS_FORMAT!r}")
    return meta


def read_results(uri: str | os.PathLike) -> pd.DataFrame:
    """CP results written by :func:`write_results`; list columns as numpy arrays (see module docstring).

    ``df.attrs['micropipe']`` holds the file's metadata record (provenance included).

    Raises
    ------
    ValueError
        The file is not complete CP results, or its columns differ from the schema.
    """
    meta = results_metadata(uri)
    if meta.get("complete") is not True:
        raise ValueError(f"{uri}: schema metadata 'micropipe': field 'complete' is not true: not written to the end")
    with store.local_copy(uri) as path:
        table = pq.read_table(path)
    if table.schema.names != list(COLUMNS):
        raise ValueError(f"{uri}: columns {table.schema.names}, expected {list(COLUMNS)}")
    if table.num_rows != meta.get("n_ve"):
        raise ValueError(f"{uri}: {table.num_rows} rows, but schema metadata 'micropipe' field 'n_ve' says "
                         f"{meta.get('n_ve')}")
    df = table.to_pandas()
    for column, width in _NESTED.items():
        df[column] = [np.stack(v).astype(float) if len(v) else np.zeros((0, width)) for v in df[column]]
    for column in ("time", "strain", "stress"):
        df[column] = [np.asarray(v, float) for v in df[column]]
    for column in _INT_LISTS:
        df[column] = [np.asarray(v, np.int64) for v in df[column]]
    df.attrs["micropipe"] = meta
    return df


def shard_complete(output_uri: str | os.PathLike, n_ve: int | None = None, params_sha256: str | None = None,
                   ve_sha256: str | None = None) -> bool:
    """Whether ``output_uri`` holds complete results, so that a rerun may skip the shard.

    Complete: the file exists, its ``micropipe`` record says ``complete`` and, where given, holds ``n_ve``
    rows computed with parameters of fingerprint ``params_sha256`` from the VE shard of hash ``ve_sha256``.
    Anything else (missing, unreadable, other VE count, other parameters, other VEs) means: compute again.
    """
    expected = {"complete": True, "n_ve": None if n_ve is None else int(n_ve), "params_sha256": params_sha256,
                "ve_sha256": ve_sha256}
    return KIND.is_complete(str(output_uri), _record, {k: v for k, v in expected.items() if v is not None})


def _record(path: Path) -> dict[str, Any]:
    return results_metadata(path)


def gather(dataset_uri: str, collected: Sequence[str] | None = None) -> pd.DataFrame:
    """Check the results of every VE shard and write ``cp/cp_results.parquet`` and ``cp/manifest.json``.

    ``collected``: the results URIs the fan-out's tasks returned, checked first against one per VE shard
    (:func:`micropipe.datasets.shards.check_collected`).

    Returns
    -------
    pandas.DataFrame
        Every row, in VE id order.

    Raises
    ------
    ValueError
        Results of a shard are missing or incomplete, hold other VE ids than the VE shard, or were computed
        with other parameters than the rest.
    """
    ve_manifest = ve_dataset.load_manifest(dataset_uri)
    if collected is not None:
        check_collected(collected, [KIND.shard_uri(dataset_uri, i) for i in range(len(ve_manifest["shards"]))])
    frames, shas = [], set()

    def check(index: int, uri: str, path: Path) -> dict[str, Any]:
        df = read_results(path)
        shard = ve_manifest["shards"][index]
        expected = [ve_dataset.ve_id(i) for i in _id_range(shard)]
        if df["ve_id"].tolist() != expected:
            raise ValueError(f"{uri}: holds VE ids {df['ve_id'].tolist()[:3]}..., expected {shard['first']} ... "
                             f"{shard['last']}")
        meta = df.attrs["micropipe"]
        shas.add(meta.get("params_sha256"))
        frames.append(df)
        return {"path": shard_results_name(index), "n_ve": len(df), "n_converged": meta["n_converged"]}

    shards = KIND.check_shards(dataset_uri, len(ve_manifest["shards"]), check)
    if len(shas) > 1:
        raise ValueError(f"{dataset_uri}/{RESULTS_DIR}/shards: results were computed with different parameters "
                         f"(fingerprints {sorted(map(str, shas))}); rerun the shards with one set")
    first = frames[0].attrs["micropipe"]["provenance"]
    df = pd.concat(frames, ignore_index=True)
    df.attrs = {}
    params = {k: v for k, v in first.get("params", {}).items()
              if k not in ("shard_index", "ve_shard", "ve_sha256", "dataset_uri")}
    record = _provenance.record(seed=ve_manifest["provenance"].get("seed"), step="cp.gather",
                                params={**params, "dataset_uri": dataset_uri, "n_shards": len(shards)})
    gathered = write_results(df, store.join(dataset_uri, GATHERED), record, params_sha256=shas.pop())
    n_converged = int(df["converged"].sum())
    KIND.write_manifest(dataset_uri, {"results": GATHERED, "results_sha256": recorded_checksum(gathered),
                                      "n_ve": len(df), "n_converged": n_converged, "shards": shards,
                                      "provenance": record})
    log.info("gathered CP results of %d shards (%d VEs, %d converged) into %s", len(shards), len(df),
             n_converged, store.join(dataset_uri, GATHERED))
    df.attrs["micropipe"] = {"provenance": record, "n_ve": len(df), "n_converged": n_converged}
    return df


def ve_digest(shard_path: str | os.PathLike) -> str:
    """SHA-256 of what CP sees of a VE shard: ids, grain ids, orientations, phases, spacing, lattice.

    Not of the file's bytes, which change with the provenance timestamp when the same VEs are written again.
    """
    h = hashlib.sha256()
    for ve_id, ve in io.iter_shard(shard_path):
        h.update(f"{ve_id}|{ve.lattice}|{ve.cells}|".encode())
        for a, dtype in ((ve.grain_ids, np.int64), (ve.euler, np.float64), (ve.phase, np.int64),
                         (ve.spacing, np.float64)):
            h.update(np.ascontiguousarray(a, dtype=dtype).tobytes())
    return h.hexdigest()


def _id_range(shard: Mapping[str, Any]) -> range:
    first = int(str(shard["first"]).split("_")[-1])
    return range(first, first + int(shard["n_ve"]))


def load_manifest(dataset_uri: str) -> dict[str, Any]:
    """The CP manifest of a dataset (written by :func:`gather`)."""
    return KIND.load_manifest(dataset_uri)
