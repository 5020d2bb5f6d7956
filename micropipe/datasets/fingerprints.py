"""Fingerprint files: Parquet, one row per VE: ``set``, ``ve_id``, ``fingerprint`` (list of float32, a VAE's encoder
mean) and optionally ``texture`` (the VE's :data:`micropipe.ve.stats.TEXTURE_DESCRIPTORS`, for diagnostics only),
with the VAE's digest, its lattice and provenance in the schema metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from micropipe import provenance, store
from micropipe.ve.stats import TEXTURE_DESCRIPTORS

FINGERPRINTS_FORMAT = "micropipe-fingerprints"


META_KEY = b"micropipe"


def write_fingerprints(df: pd.DataFrame, path: str | Path, *, vae_path: str | Path, lattice: str) -> dict[str, Any]:
    """Parquet with the VAE's digest, lattice and provenance in the schema metadata (atomic write); returns that
    metadata."""
    dim = len(df["fingerprint"].iloc[0]) if len(df) else 0
    record = provenance.record(seed=None, step="cp_surrogate.fingerprint",
                               params={"vae_sha256": provenance.file_sha256(vae_path), "lattice": lattice, "dim": dim,
                                       "sets": sorted(set(df["set"]))})
    fields = [("set", pa.string()), ("ve_id", pa.string()), ("fingerprint", pa.list_(pa.float32()))]
    columns = {"fingerprint": [np.asarray(f, np.float32) for f in df["fingerprint"]]}
    meta = {"format": FINGERPRINTS_FORMAT, "dim": dim, "lattice": lattice, "n": len(df), "provenance": record}
    if "texture" in df:
        fields.append(("texture", pa.list_(pa.float32())))
        columns["texture"] = [np.asarray(t, np.float32) for t in df["texture"]]
        meta["texture_descriptors"] = list(TEXTURE_DESCRIPTORS)
    table = pa.Table.from_pandas(df.assign(**columns)[[f for f, _ in fields]], schema=pa.schema(fields),
                                 preserve_index=False)
    table = table.replace_schema_metadata({META_KEY: provenance.dumps(meta).encode()})
    with store.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return meta


def read_fingerprints(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(frame, metadata)`` of a fingerprints file; ``fingerprint`` cells are float32 arrays."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    if meta.get("format") != FINGERPRINTS_FORMAT:
        raise ValueError(f"{path}: schema metadata 'format' is {meta.get('format')!r}, expected "
                         f"{FINGERPRINTS_FORMAT!r} (written by micropipe.datasets.fingerprints.write_fingerprints)")
    df = table.to_pandas()
    for column in ("fingerprint", "texture"):
        if column in df:
            df[column] = [np.asarray(f, np.float32) for f in df[column]]
    return df, meta


def matrix(df: pd.DataFrame, name: str, column: str = "fingerprint") -> tuple[list[str], np.ndarray]:
    """``(ve ids, fingerprints (n, d))`` of set ``name`` (``column="texture"``: its texture descriptors)."""
    part = df[df["set"] == name]
    if part.empty:
        raise ValueError(f"fingerprints: no rows of set {name!r}; sets present: {sorted(set(df['set']))}")
    return part["ve_id"].tolist(), np.stack(part[column].to_numpy()).astype(np.float32)
