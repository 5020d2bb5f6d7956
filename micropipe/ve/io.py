"""Readers and writers for volume elements: HDF5 shards, .dream3d, .vti, .npz/.npy, TIFF stacks, CSV grain tables.

Every reader validates what it reads and raises one message that names the file, the field and the
expectation (``ValueError``; ``FileNotFoundError`` for missing files).  Every writer writes to a
temporary name in the target directory and renames it into place, so a half-written file is never
found under the final name.

Formats (axis order is always stated; micropipe arrays are (X, Y, Z) with x fastest in physical space):

=============  ========================================================================================
HDF5 shard     ``write_shard`` / ``read_shard``: the VE dataset format (DESIGN §3), one group per VE.
``.dream3d``   DREAM.3D 6.x layout (``FileVersion`` 7.0), arrays stored (Z, Y, X, C), ids 1-based.
``.vti``       VTK ImageData via ``damask.VTK``: cell data ``material`` = grain id (0-based).
``.npz``       ``numpy.savez_compressed`` of the VE arrays plus a JSON ``meta`` string.
``.npy``       grain ids (X, Y, Z) plus a CSV grain table ``<stem>.grains.csv`` next to it.
TIFF stack     one page per z slice, each page (Y, X): a grain-id or phase-id label stack.
CSV table      one row per grain: ``grain_id, phase, phi1, Phi, phi2`` (Bunge, radians).
=============  ========================================================================================
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

import micropipe
from micropipe import provenance as _provenance
from micropipe.crystal import LATTICES, check_lattice
from micropipe.store import atomic_path
from micropipe.ve.volume import EULER_NORM, VolumeElement, check_euler_range, validate

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

SHARD_FORMAT = "micropipe-ve-shard"
SHARD_FORMAT_VERSION = 1
META_TAG = "micropipe-ve"
"""Marker of the JSON metadata line micropipe writes into .vti comments, .npz and CSV headers."""

VE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
GRAIN_TABLE_COLUMNS = ("grain_id", "phase", "phi1", "Phi", "phi2")

DREAM3D_FILE_VERSION = "7.0"
DREAM3D_CRYSTAL_STRUCTURES = {"hP": 0, "cF": 1, "cI": 1}
"""DREAM.3D (EbsdLib) crystal-structure codes: 0 Hexagonal_High, 1 Cubic_High; 999 marks 'unknown'.
DREAM.3D does not distinguish fcc from bcc: both are Cubic_High (m-3m)."""
DREAM3D_UNKNOWN = 999
_D3D_AM_CELL, _D3D_AM_CELL_FEATURE, _D3D_AM_CELL_ENSEMBLE = 3, 7, 11  # SIMPL AttributeMatrix::Type
_D3D_PHASE_TYPE_PRIMARY = 0  # SIMPL PhaseType::Type::Primary
_D3D_OBJECT_TYPES = {np.dtype(np.int32): "DataArray<int32_t>", np.dtype(np.uint32): "DataArray<uint32_t>",
                     np.dtype(np.float32): "DataArray<float>", np.dtype(np.uint8): "DataArray<uint8_t>"}

_H5_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_TOL = 1e-9


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------


def _existing_file(path: PathLike, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


def _build_ve(source: str, *, grain_ids: np.ndarray, euler: np.ndarray, phase: np.ndarray,
              spacing: np.ndarray, lattice: str, phase_ids: np.ndarray | None,
              attrs: dict[str, Any]) -> VolumeElement:
    """Validate the fields with ``source`` in every message, then build the VolumeElement."""
    fields = dict(grain_ids=grain_ids, euler=euler, phase=phase, spacing=spacing, lattice=lattice,
                  phase_ids=phase_ids, attrs=attrs)
    validate(types.SimpleNamespace(**fields), source)  # type: ignore[arg-type]
    return VolumeElement(**fields)


def _meta(ve: VolumeElement, *, grains: bool = False) -> str:
    """JSON text of what a format cannot hold natively: lattice, spacing, attrs (and the grain table)."""
    meta: dict[str, Any] = {"format": META_TAG, "format_version": 1, "lattice": ve.lattice,
                            "spacing": [float(s) for s in ve.spacing], "has_phase_ids": ve.phase_ids is not None,
                            "attrs": ve.attrs}
    if grains:
        # JSON floats are Python reprs, which round-trip float64 exactly.
        meta["grains"] = {"phase": ve.phase.tolist(), "euler": ve.euler.tolist()}
    return _provenance.dumps(meta)


def _parse_meta(text: str, source: str) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: field 'meta': expected micropipe JSON metadata, got unparsable text ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != META_TAG:
        raise ValueError(f"{source}: field 'meta': expected a JSON object with format={META_TAG!r}")
    return meta


def _as_int_labels(a: np.ndarray, source: str, field: str, dtype: type = np.int32) -> np.ndarray:
    """Cast an integer-valued label array to ``dtype`` without silent wrap-around."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            raise ValueError(f"{source}: field '{field}': expected integer labels, got non-integer floats")
    elif a.dtype.kind not in "iub":
        raise ValueError(f"{source}: field '{field}': expected integer labels, got dtype {a.dtype}")
    info = np.iinfo(dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise ValueError(f"{source}: field '{field}': values [{a.min()}, {a.max()}] do not fit {np.dtype(dtype)}")
    return a.astype(dtype)


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel to 0..G-1 in ascending order of the original labels; returns (new labels, original labels)."""
    present, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int32), present


def _first_voxel_values(labels: np.ndarray, field: np.ndarray, n: int) -> np.ndarray:
    """Value of ``field`` (shape labels.shape + extra) at the first voxel (C order) of each label 0..n-1."""
    flat = labels.reshape(-1)
    present, first = np.unique(flat, return_index=True)
    if not np.array_equal(present, np.arange(n)):
        raise ValueError(f"labels must be exactly 0..{n - 1}")  # internal: callers pass compacted labels
    return field.reshape((flat.size,) + field.shape[labels.ndim:])[first]


def _euler_float32(euler: np.ndarray) -> np.ndarray:
    """Euler angles (..., 3) as float32 that stay inside [0, 2 pi] x [0, pi] x [0, 2 pi].

    float32(2 pi) and float32(pi) round up past the float64 bounds, and damask.Rotation refuses them.
    """
    upper = EULER_NORM
    e32 = np.asarray(euler).astype(np.float32)
    below = np.nextafter(upper.astype(np.float32), np.float32(0.0))
    return np.where(e32.astype(np.float64) > upper, below, e32).astype(np.float32)


def _check_constant_per_grain(labels: np.ndarray, field: np.ndarray, per_grain: np.ndarray, source: str,
                              field_name: str, atol: float) -> None:
    if not np.allclose(field, per_grain[labels], rtol=0.0, atol=atol):
        raise ValueError(f"{source}: field '{field_name}': expected one value per grain, got values that vary "
                         f"inside grains (measured data? average orientations per grain first)")


# --------------------------------------------------------------------------------------------------
# HDF5 shards: the VE dataset format
# --------------------------------------------------------------------------------------------------

def _h5_group(parent: h5py.Group, name: str) -> h5py.Group:
    """Create a group without creation/modification timestamps, so that file bytes are reproducible."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def _h5_create_file(path: Path) -> h5py.File:
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)  # the root group's header would otherwise carry timestamps
    return h5py.File(h5py.h5f.create(str(path).encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl))


def _h5_dataset(group: h5py.Group, name: str, data: np.ndarray, *, compress: bool = True) -> h5py.Dataset:
    kwargs: dict[str, Any] = dict(_H5_COMPRESSION, chunks=data.shape) if compress and data.size else {}
    return group.create_dataset(name, data=data, track_times=False, **kwargs)


def _check_ve_id(ve_id: Any) -> str:
    if not isinstance(ve_id, str) or not VE_ID_PATTERN.match(ve_id):
        raise ValueError(f"invalid ve_id {ve_id!r}: expected letters, digits, '_', '-', '.' such as 've_000123'")
    return ve_id


def _write_ve_group(f: h5py.File, ve_id: str, ve: VolumeElement) -> None:
    g = _h5_group(f, ve_id)
    _h5_dataset(g, "grain_ids", np.ascontiguousarray(ve.grain_ids, dtype=np.int32))
    _h5_dataset(g, "euler", np.ascontiguousarray(ve.euler, dtype=np.float64))
    _h5_dataset(g, "phase", np.ascontiguousarray(ve.phase, dtype=np.int32))
    if ve.phase_ids is not None:
        _h5_dataset(g, "phase_ids", np.ascontiguousarray(ve.phase_ids, dtype=np.uint8))
    attrs = dict(ve.attrs)
    seed = attrs.pop("seed", None)
    if seed is not None and (not isinstance(seed, int | np.integer) or seed < 0):
        raise ValueError(f"ve {ve_id!r}: attrs['seed'] must be a non-negative int or None, got {seed!r}")
    g.attrs["spacing"] = np.asarray(ve.spacing, dtype=np.float64)
    g.attrs["size"] = np.asarray(ve.size, dtype=np.float64)
    g.attrs["lattice"] = ve.lattice
    g.attrs["generator"] = str(attrs.pop("generator", "unknown"))
    g.attrs["params"] = _provenance.dumps(attrs.pop("params", {}))
    g.attrs["seed"] = np.int64(-1 if seed is None else seed)
    g.attrs["extra"] = _provenance.dumps(attrs)


def write_shard(path: PathLike, ves: Mapping[str, VolumeElement], *, provenance: dict[str, Any]) -> Path:
    """Write volume elements to one HDF5 shard, atomically.

    Layout: one group per VE, named by its id, holding the datasets ``grain_ids`` (X, Y, Z) int32,
    ``euler`` (G, 3) float64 Bunge angles in radians, ``phase`` (G,) int32 and, for two-phase volumes,
    ``phase_ids`` (X, Y, Z) uint8 (gzip level 4 + shuffle, one chunk per array, no timestamps); group
    attributes ``spacing`` (3,) and ``size`` (3,) float64 in length units, ``lattice``, ``generator``,
    ``params`` (JSON text), ``seed`` (int64, -1 for none) and ``extra`` (JSON text of the other
    ``VolumeElement.attrs`` keys).  File attributes: ``format='micropipe-ve-shard'``,
    ``format_version=1``, ``provenance`` (JSON text), ``n_ve`` and, written last, ``complete=True``.

    The file is written under a temporary name in the same directory and renamed into place, so a
    crash never leaves a partial shard under ``path``.  Same VEs and provenance give identical bytes.

    Parameters
    ----------
    path : str or os.PathLike
        Target file, conventionally ``*.h5``.
    ves : mapping of str to VolumeElement
        VEs keyed by id (``'ve_000123'``); written in sorted id order.
    provenance : dict
        JSON-serialisable record of what made the shard (see :func:`micropipe.provenance.record`).

    Returns
    -------
    path : pathlib.Path
        The written shard.
    """
    if not ves:
        raise ValueError(f"{path}: no volume elements to write")
    ids = sorted(_check_ve_id(i) for i in ves)
    for ve_id in ids:
        if not isinstance(ves[ve_id], VolumeElement):
            raise TypeError(f"{path}: ves[{ve_id!r}] is {type(ves[ve_id]).__name__}, expected VolumeElement")
    prov_text = _provenance.dumps(provenance)
    target = Path(path).expanduser()
    with atomic_path(target) as tmp:
        with _h5_create_file(tmp) as f:
            f.attrs["format"] = SHARD_FORMAT
            f.attrs["format_version"] = np.int64(SHARD_FORMAT_VERSION)
            f.attrs["provenance"] = prov_text
            f.attrs["n_ve"] = np.int64(len(ids))
            for ve_id in ids:
                _write_ve_group(f, ve_id, ves[ve_id])
            f.attrs["complete"] = True  # last: readers refuse files without it
    log.info("wrote shard %s with %d VEs", target, len(ids))
    return target


def _open_h5(path: Path, what: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file, expected {what} ({e})") from e


@contextlib.contextmanager
def _damage(source: str) -> Iterator[None]:
    """h5py's errors for a file whose bytes were damaged after it was written (``OSError``/``KeyError`` 'incorrect
    metadata checksum', 'wrong B-tree signature', a failed filter) as one ``ValueError`` naming the file."""
    try:
        yield
    except (OSError, KeyError, RuntimeError) as e:
        reason = str(e).strip("'\"").splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{source}: damaged HDF5 data ({reason}); expected an intact file: regenerate it, or run "
                         f"'micropipe data verify' on its dataset") from None


def _check_shard_header(f: h5py.File, path: Path) -> list[str]:
    fmt = f.attrs.get("format")
    if fmt != SHARD_FORMAT:
        raise ValueError(f"{path}: file attribute 'format': expected {SHARD_FORMAT!r}, got {fmt!r}")
    version = f.attrs.get("format_version")
    if version is None or int(version) > SHARD_FORMAT_VERSION:
        raise ValueError(f"{path}: file attribute 'format_version': expected <= {SHARD_FORMAT_VERSION}, "
                         f"got {version!r}")
    if not bool(f.attrs.get("complete", False)):
        raise ValueError(f"{path}: file attribute 'complete' is missing: the shard was not written to the end")
    ids = sorted(k for k, v in f.items() if isinstance(v, h5py.Group))
    n_ve = f.attrs.get("n_ve")
    if n_ve is None or int(n_ve) != len(ids):
        raise ValueError(f"{path}: file attribute 'n_ve': expected the number of VE groups ({len(ids)}), got {n_ve!r}")
    return ids


def _read_dataset(g: h5py.Group, name: str, dtype: type, ndim: int, shape_doc: str, source: str,
                  required: bool = True) -> np.ndarray | None:
    if name not in g:
        if required:
            raise ValueError(f"{source}: field '{name}' is missing: expected dataset {shape_doc} {np.dtype(dtype)}")
        return None
    d = g[name]
    if not isinstance(d, h5py.Dataset) or d.dtype != np.dtype(dtype) or d.ndim != ndim:
        got = f"{d.dtype} {d.shape}" if isinstance(d, h5py.Dataset) else "a group"
        raise ValueError(f"{source}: field '{name}': expected {np.dtype(dtype)} dataset {shape_doc}, got {got}")
    return d[()]


def _read_ve_group(g: h5py.Group, source: str) -> VolumeElement:
    grain_ids = _read_dataset(g, "grain_ids", np.int32, 3, "(X, Y, Z)", source)
    euler = _read_dataset(g, "euler", np.float64, 2, "(G, 3)", source)
    phase = _read_dataset(g, "phase", np.int32, 1, "(G,)", source)
    phase_ids = _read_dataset(g, "phase_ids", np.uint8, 3, "(X, Y, Z)", source, required=False)
    for name in ("spacing", "size", "lattice", "generator", "params", "seed"):
        if name not in g.attrs:
            raise ValueError(f"{source}: attribute '{name}' is missing")
    spacing = np.asarray(g.attrs["spacing"], dtype=float)
    if spacing.shape != (3,):
        raise ValueError(f"{source}: attribute 'spacing': expected 3 numbers, got shape {spacing.shape}")
    size = np.asarray(g.attrs["size"], dtype=float)
    if size.shape != (3,) or not np.allclose(size, spacing * np.asarray(grain_ids.shape), rtol=_TOL, atol=0.0):
        raise ValueError(f"{source}: attribute 'size': expected cells x spacing = "
                         f"{spacing * np.asarray(grain_ids.shape)}, got {size}")
    try:
        attrs = {"generator": str(g.attrs["generator"]), "params": json.loads(g.attrs["params"]),
                 **json.loads(g.attrs.get("extra", "{}"))}
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{source}: attribute 'params' or 'extra': expected JSON text ({e})") from e
    seed = int(g.attrs["seed"])
    attrs["seed"] = None if seed < 0 else seed
    return _build_ve(source, grain_ids=grain_ids, euler=euler, phase=phase, spacing=spacing,
                     lattice=str(g.attrs["lattice"]), phase_ids=phase_ids, attrs=attrs)


def iter_shard(path: PathLike) -> Iterator[tuple[str, VolumeElement]]:
    """Yield ``(ve_id, VolumeElement)`` from a shard in sorted id order, reading one VE at a time.

    The file-level checks (format, ``complete``) run at once; each VE is validated when it is read.
    """
    path = _existing_file(path, "VE shard")
    with _open_h5(path, "a micropipe VE shard") as f, _damage(str(path)):
        ids = _check_shard_header(f, path)

    def _generate() -> Iterator[tuple[str, VolumeElement]]:
        with _open_h5(path, "a micropipe VE shard") as f:
            for ve_id in ids:
                source = f"{path} [{ve_id}]"
                with _damage(source):
                    ve = _read_ve_group(f[ve_id], source)
                yield ve_id, ve

    return _generate()


def read_shard(path: PathLike) -> dict[str, VolumeElement]:
    """All VEs of a shard, keyed by id in sorted order (see :func:`write_shard` for the layout)."""
    return dict(iter_shard(path))


def shard_info(path: PathLike) -> dict[str, Any]:
    """Summary of a shard without reading voxel arrays.

    Returns
    -------
    info : dict
        ``path``, ``format_version``, ``n_ve``, ``ids`` (sorted), ``cells`` ({id: (X, Y, Z)}),
        ``n_grains`` ({id: G}) and ``provenance`` (dict).
    """
    path = _existing_file(path, "VE shard")
    with _open_h5(path, "a micropipe VE shard") as f, _damage(str(path)):
        ids = _check_shard_header(f, path)
        cells, n_grains = {}, {}
        for ve_id in ids:
            g = f[ve_id]
            for name in ("grain_ids", "euler"):
                if name not in g:
                    raise ValueError(f"{path} [{ve_id}]: field '{name}' is missing")
            cells[ve_id] = tuple(int(c) for c in g["grain_ids"].shape)
            n_grains[ve_id] = int(g["euler"].shape[0])
        try:
            prov = json.loads(f.attrs.get("provenance", "{}"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: file attribute 'provenance': expected JSON text ({e})") from e
        return {"path": str(path), "format_version": int(f.attrs["format_version"]), "n_ve": len(ids),
                "ids": ids, "cells": cells, "n_grains": n_grains, "provenance": prov}


# --------------------------------------------------------------------------------------------------
# .dream3d (DREAM.3D 6.x, FileVersion 7.0)
# --------------------------------------------------------------------------------------------------

def _d3d_string(value: str) -> tuple[np.ndarray, h5py.Datatype]:
    """A fixed-length, null-terminated ASCII string, the way SIMPL's H5Lite writes strings."""
    b = value.encode("ascii")
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(b) + 1)
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    return np.array(b, dtype=f"S{len(b) + 1}"), h5py.Datatype(tid)


def _d3d_str_attr(obj: h5py.HLObject, name: str, value: str) -> None:
    data, dtype = _d3d_string(value)
    obj.attrs.create(name, data, dtype=dtype)


def _d3d_attribute_matrix(parent: h5py.Group, name: str, am_type: int, tuple_dims: tuple[int, ...]) -> h5py.Group:
    g = _h5_group(parent, name)
    g.attrs.create("AttributeMatrixType", np.array([am_type], dtype=np.uint32))
    g.attrs.create("TupleDimensions", np.array(tuple_dims, dtype=np.uint64))
    return g


def _d3d_array(am: h5py.Group, name: str, data: np.ndarray, tuple_dims: tuple[int, ...]) -> None:
    """A SIMPL DataArray: data shaped reversed(tuple_dims) + (components,), with its five attributes."""
    d = _h5_dataset(am, name, data, compress=False)
    d.attrs.create("ComponentDimensions", np.array([data.shape[-1]], dtype=np.uint64))
    d.attrs.create("DataArrayVersion", np.array([2], dtype=np.int32))
    _d3d_str_attr(d, "ObjectType", _D3D_OBJECT_TYPES[data.dtype])
    _d3d_str_attr(d, "Tuple Axis Dimensions", ",".join(f"{a}={n}" for a, n in zip("xyz", tuple_dims, strict=False)))
    d.attrs.create("TupleDimensions", np.array(tuple_dims, dtype=np.uint64))


def _xyz_to_d3d(a: np.ndarray) -> np.ndarray:
    """(X, Y, Z[, C]) -> DREAM.3D's (Z, Y, X, C): x is the fastest-varying index in both."""
    a = np.swapaxes(a, 0, 2)
    return np.ascontiguousarray(a if a.ndim == 4 else a[..., np.newaxis])


def _d3d_to_xyz(a: np.ndarray) -> np.ndarray:
    """DREAM.3D's (Z, Y, X[, C]) -> (X, Y, Z[, C]); a single component axis is dropped."""
    if a.ndim == 4 and a.shape[3] == 1:
        a = a[..., 0]
    return np.ascontiguousarray(np.swapaxes(a, 0, 2))


def save_dream3d(path: PathLike, ve: VolumeElement, *,
                 data_container: str = "SyntheticVolumeDataContainer") -> Path:
    """Write a VE as a DREAM.3D 6.x file (``FileVersion`` 7.0) that DREAM.3D and damask can read.

    Layout under ``/DataContainers/<data_container>/``: ``_SIMPL_GEOMETRY`` (ImageGeometry:
    ``DIMENSIONS`` int64 (X, Y, Z), ``ORIGIN`` and ``SPACING`` float32); ``CellData``
    (``FeatureIds`` int32 (Z, Y, X, 1) = grain id + 1, ``Phases`` int32 (Z, Y, X, 1) = phase + 1,
    ``EulerAngles`` float32 (Z, Y, X, 3) radians); ``CellFeatureData`` (``EulerAngles`` float32
    (G+1, 3), ``Phases`` int32 (G+1, 1); row 0 is DREAM.3D's reserved feature 0); ``CellEnsembleData``
    (``CrystalStructures`` and ``PhaseTypes`` uint32 (P+1, 1), row 0 = 999 'unknown').  Every array
    carries SIMPL's ``ComponentDimensions``, ``DataArrayVersion``, ``ObjectType``,
    ``Tuple Axis Dimensions`` and ``TupleDimensions``; every attribute matrix ``AttributeMatrixType``
    and ``TupleDimensions``.  Euler angles are float32, DREAM.3D's type (round trip to ~2e-7 rad).
    Every phase gets the crystal structure of ``ve.lattice`` (0 Hexagonal_High, 1 Cubic_High).
    The root attribute ``micropipe`` holds lattice, spacing and attrs as JSON.
    """
    n_phases = int(max(ve.phase.max(), ve.phase_ids.max() if ve.phase_ids is not None else 0)) + 1
    cells = ve.cells
    cell_phase = ve.phase_ids.astype(np.int32) if ve.phase_ids is not None else ve.phase[ve.grain_ids]
    feature_euler = _euler_float32(np.vstack([np.zeros((1, 3)), ve.euler]))
    feature_phase = np.concatenate([[0], ve.phase + 1]).astype(np.int32)[:, np.newaxis]
    structures = np.array([DREAM3D_UNKNOWN] + [DREAM3D_CRYSTAL_STRUCTURES[ve.lattice]] * n_phases,
                          dtype=np.uint32)[:, np.newaxis]
    phase_types = np.array([DREAM3D_UNKNOWN] + [_D3D_PHASE_TYPE_PRIMARY] * n_phases, dtype=np.uint32)[:, np.newaxis]
    pipeline = json.dumps({"PipelineBuilder": {"Name": f"micropipe {micropipe.__version__} save_dream3d",
                                               "Number_Filters": 0, "Version": 6}})

    target = Path(path).expanduser()
    with atomic_path(target) as tmp:
        with _h5_create_file(tmp) as f:
            _d3d_str_attr(f, "FileVersion", DREAM3D_FILE_VERSION)
            _d3d_str_attr(f, "DREAM3D Version", f"micropipe {micropipe.__version__}")
            _d3d_str_attr(f, "micropipe", _meta(ve))
            _h5_group(f, "DataContainerBundles")
            dc = _h5_group(_h5_group(f, "DataContainers"), data_container)

            geom = _h5_group(dc, "_SIMPL_GEOMETRY")
            _h5_dataset(geom, "DIMENSIONS", np.array(cells, dtype=np.int64), compress=False)
            _h5_dataset(geom, "ORIGIN", np.zeros(3, dtype=np.float32), compress=False)
            _h5_dataset(geom, "SPACING", np.asarray(ve.spacing, dtype=np.float32), compress=False)
            _d3d_str_attr(geom, "GeometryName", "ImageGeometry")
            geom.attrs.create("GeometryType", np.array([0], dtype=np.uint32))
            _d3d_str_attr(geom, "GeometryTypeName", "ImageGeometry")
            geom.attrs.create("SpatialDimensionality", np.array([3], dtype=np.uint32))
            geom.attrs.create("UnitDimensionality", np.array([3], dtype=np.uint32))

            cell = _d3d_attribute_matrix(dc, "CellData", _D3D_AM_CELL, cells)
            _d3d_array(cell, "EulerAngles", _xyz_to_d3d(_euler_float32(ve.euler_field())), cells)
            _d3d_array(cell, "FeatureIds", _xyz_to_d3d(ve.grain_ids.astype(np.int32) + 1), cells)
            _d3d_array(cell, "Phases", _xyz_to_d3d(cell_phase + 1), cells)

            n_features = (ve.N_grains + 1,)
            feat = _d3d_attribute_matrix(dc, "CellFeatureData", _D3D_AM_CELL_FEATURE, n_features)
            _d3d_array(feat, "EulerAngles", feature_euler, n_features)
            _d3d_array(feat, "Phases", feature_phase, n_features)

            n_ensembles = (n_phases + 1,)
            ens = _d3d_attribute_matrix(dc, "CellEnsembleData", _D3D_AM_CELL_ENSEMBLE, n_ensembles)
            _d3d_array(ens, "CrystalStructures", structures, n_ensembles)
            _d3d_array(ens, "PhaseTypes", phase_types, n_ensembles)

            pg = _h5_group(f, "Pipeline")
            pg.attrs.create("Pipeline Version", np.array([2], dtype=np.int32))
            _d3d_str_attr(pg, "Current Pipeline", "Pipeline")
            data, dtype = _d3d_string(pipeline)
            pg.create_dataset("Pipeline", data=data, dtype=dtype, track_times=False)
    return target


def _attr_text(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _attr_text(value.reshape(()).item())
    return str(value)


def _d3d_open(path: PathLike) -> tuple[Path, h5py.File]:
    path = _existing_file(path, "DREAM.3D file")
    f = _open_h5(path, "a DREAM.3D file")
    version = _attr_text(f.attrs.get("FileVersion", ""))
    if version != DREAM3D_FILE_VERSION:
        f.close()
        raise ValueError(f"{path}: file attribute 'FileVersion': expected {DREAM3D_FILE_VERSION!r} "
                         f"(DREAM.3D 6.x), got {version!r}")
    return path, f


def _d3d_base_group(f: h5py.File, path: Path, base_group: str | None) -> str:
    if base_group is not None:
        if f"{base_group}/_SIMPL_GEOMETRY/DIMENSIONS" not in f:
            raise ValueError(f"{path}: data container {base_group!r}: expected an image geometry "
                             f"'_SIMPL_GEOMETRY/DIMENSIONS'")
        return base_group
    found: list[str] = []
    f.visit(lambda p: found.append(p.rsplit("/", 2)[0]) if p.endswith("_SIMPL_GEOMETRY/SPACING") else None)
    images = [b for b in found if f"{b}/_SIMPL_GEOMETRY/DIMENSIONS" in f and _attr_text(
        f[f"{b}/_SIMPL_GEOMETRY"].attrs.get("GeometryTypeName", "ImageGeometry")) == "ImageGeometry"]
    if len(images) != 1:
        raise ValueError(f"{path}: field '_SIMPL_GEOMETRY': expected exactly one image-geometry data container, "
                         f"found {images or 'none'}; pass base_group=")
    return images[0]


def _d3d_geometry(f: h5py.File, path: Path, base: str) -> tuple[tuple[int, int, int], np.ndarray]:
    geom = f[f"{base}/_SIMPL_GEOMETRY"]
    cells = np.asarray(geom["DIMENSIONS"][()]).reshape(-1)
    spacing = np.asarray(geom["SPACING"][()], dtype=float).reshape(-1)
    if cells.shape != (3,) or np.any(cells < 1):
        raise ValueError(f"{path}: field '{base}/_SIMPL_GEOMETRY/DIMENSIONS': expected 3 positive integers, "
                         f"got {cells}")
    if spacing.shape != (3,):
        raise ValueError(f"{path}: field '{base}/_SIMPL_GEOMETRY/SPACING': expected 3 numbers, got {spacing}")
    if "ORIGIN" in geom and np.any(np.asarray(geom["ORIGIN"][()]) != 0):
        log.info("%s: ignoring non-zero ORIGIN %s (VEs are periodic boxes at the origin)", path, geom["ORIGIN"][()])
    return tuple(int(c) for c in cells), spacing  # type: ignore[return-value]


def _d3d_matrices(f: h5py.File, base: str, am_type: int) -> list[h5py.Group]:
    return [g for g in f[base].values()
            if isinstance(g, h5py.Group) and int(np.asarray(g.attrs.get("AttributeMatrixType", [-1])).reshape(-1)[0])
            == am_type]


def _d3d_cell_group(f: h5py.File, path: Path, base: str, cells: tuple[int, int, int],
                    names: tuple[str, ...]) -> h5py.Group:
    """The cell attribute matrix: AttributeMatrixType 3, else any group with (Z, Y, X, C) arrays (as damask)."""
    zyx = cells[::-1]
    candidates = _d3d_matrices(f, base, _D3D_AM_CELL) or [
        g for g in f[base].values() if isinstance(g, h5py.Group)
        and any(isinstance(d, h5py.Dataset) and d.shape[:3] == zyx for d in g.values())]
    with_data = [g for g in candidates if any(n in g for n in names)]
    if not with_data:
        raise ValueError(f"{path}: cell data in {base!r}: expected a group with one of {list(names)} "
                         f"shaped (Z, Y, X, C) = {zyx}")
    return with_data[0]


def _d3d_cell_array(g: h5py.Group, path: Path, name: str, cells: tuple[int, int, int], components: int) -> np.ndarray:
    d = g[name]
    zyx = cells[::-1]
    if d.shape not in (zyx + (components,),) + ((zyx,) if components == 1 else ()):
        raise ValueError(f"{path}: field '{d.name}': expected shape (Z, Y, X, {components}) = "
                         f"{zyx + (components,)}, got {d.shape}")
    return _d3d_to_xyz(d[()])


def _d3d_feature_array(f: h5py.File, base: str, name: str, n_rows: int, components: int) -> np.ndarray | None:
    """A per-feature array from a CellFeature attribute matrix with at least ``n_rows`` rows."""
    for am in _d3d_matrices(f, base, _D3D_AM_CELL_FEATURE):
        d = am.get(name)
        if isinstance(d, h5py.Dataset) and d.ndim == 2 and d.shape[1] == components and d.shape[0] >= n_rows:
            return d[()]
    return None


def _d3d_crystal_structures(f: h5py.File, base: str) -> np.ndarray | None:
    """CrystalStructures of the VE's data container, else of any container (StatsGenerator's in synthetics)."""
    for am in _d3d_matrices(f, base, _D3D_AM_CELL_ENSEMBLE):
        if "CrystalStructures" in am:
            return np.asarray(am["CrystalStructures"][()]).reshape(-1)
    found: list[str] = []
    f.visit(lambda p: found.append(p) if p.rsplit("/", 1)[-1] == "CrystalStructures" else None)
    return np.asarray(f[found[0]][()]).reshape(-1) if found else None


def _lattice_from_code(code: int, path: Path) -> str:
    if code in (0, 2):  # Hexagonal_High, Hexagonal_Low
        return "hP"
    if code in (1, 3):  # Cubic_High, Cubic_Low
        log.warning("%s: DREAM.3D does not distinguish fcc from bcc; assuming lattice 'cF' (pass lattice='cI' "
                    "for bcc)", path)
        return "cF"
    raise ValueError(f"{path}: field 'CrystalStructures': expected 0 (Hexagonal_High) or 1 (Cubic_High) for "
                     f"phase 1, got {code}; pass lattice= to override")


def load_dream3d(path: PathLike, *, base_group: str | None = None, feature_ids: str = "FeatureIds",
                 phases: str = "Phases", euler_angles: str = "EulerAngles",
                 lattice: str | None = None) -> VolumeElement:
    """Read a VE from a DREAM.3D 6.x file (``FileVersion`` 7.0), e.g. one written by PipelineRunner.

    The image data container and its cell attribute matrix are found automatically (as
    ``damask.util.DREAM3D_base_group`` does).  With a ``FeatureIds`` cell array, grains are DREAM.3D's
    features: Euler angles and phases come from a CellFeature attribute matrix when it holds them,
    else from the cell arrays (which must then be constant inside each feature).  Without one, cells
    of equal (phase, Euler angles) form a grain, numbered in order of first appearance with x fastest,
    as ``damask.GeomGrid.load_DREAM3D`` does.  Feature ids are compacted to 0..G-1 (DREAM.3D's feature
    0 must not occur); phase = DREAM.3D phase - 1.  Orientations are returned as stored: no reduction
    to the fundamental zone.

    Parameters
    ----------
    path : str or os.PathLike
        The .dream3d file.
    base_group : str, optional
        Data container path, e.g. ``'DataContainers/SyntheticVolumeDataContainer'``.
    feature_ids, phases, euler_angles : str, optional
        Array names in the cell (and feature) attribute matrices.
    lattice : {'cF', 'cI', 'hP'}, optional
        Overrides the lattice; otherwise micropipe's metadata, else ``CrystalStructures`` of phase 1
        (Cubic_High -> 'cF': DREAM.3D has no fcc/bcc distinction).

    Returns
    -------
    ve : VolumeElement
        ``grain_ids`` (X, Y, Z), ``euler`` (G, 3) float64 radians, spacing from ``SPACING``.
    """
    if lattice is not None:
        check_lattice(lattice, str(path))
    path, f = _d3d_open(path)
    with f:
        base = _d3d_base_group(f, path, base_group)
        cells, spacing = _d3d_geometry(f, path, base)
        cell = _d3d_cell_group(f, path, base, cells, (feature_ids, euler_angles))
        meta = _parse_meta(_attr_text(f.attrs["micropipe"]), f"{path}: attribute 'micropipe'") \
            if "micropipe" in f.attrs else None
        cell_phase = (_as_int_labels(_d3d_cell_array(cell, path, phases, cells, 1), str(path), phases)
                      if phases in cell else None)
        cell_euler = (_d3d_cell_array(cell, path, euler_angles, cells, 3).astype(np.float64)
                      if euler_angles in cell else None)

        if feature_ids in cell:
            fid = _as_int_labels(_d3d_cell_array(cell, path, feature_ids, cells, 1), str(path), feature_ids)
            if fid.min() < 1:
                raise ValueError(f"{path}: field '{cell[feature_ids].name}': expected feature ids >= 1 in every "
                                 f"cell, got {int(np.count_nonzero(fid < 1))} cells with id <= 0 (unassigned)")
            grain_ids, present = _compact(fid)
            n = present.size
            if present[-1] != n:
                log.info("%s: %d feature ids unused in the cell map; relabelled to 0..%d", path, present[-1] - n, n - 1)
            feat_euler = _d3d_feature_array(f, base, euler_angles, int(present[-1]) + 1, 3)
            feat_phase = _d3d_feature_array(f, base, phases, int(present[-1]) + 1, 1)
            if feat_euler is not None:
                euler = feat_euler[present].astype(np.float64)
            elif cell_euler is not None:
                euler = _first_voxel_values(grain_ids, cell_euler, n)
                _check_constant_per_grain(grain_ids, cell_euler, euler, str(path), euler_angles, 1e-5)
            else:
                raise ValueError(f"{path}: field '{euler_angles}' is missing: expected Euler angles per feature "
                                 f"or per cell")
            if feat_phase is not None:
                phase_d3d = feat_phase[present, 0].astype(np.int64)
            elif cell_phase is not None:
                phase_d3d = _first_voxel_values(grain_ids, cell_phase, n).astype(np.int64)
            else:
                phase_d3d = np.ones(n, dtype=np.int64)
        else:
            if cell_euler is None:
                raise ValueError(f"{path}: fields '{feature_ids}' and '{euler_angles}' are both missing from "
                                 f"{cell.name!r}: expected at least one")
            ph = cell_phase if cell_phase is not None else np.ones(cells, dtype=np.int32)
            key = np.concatenate([ph[..., np.newaxis].astype(np.float64), cell_euler], axis=-1)
            key_f = np.moveaxis(key, 3, 0).reshape(4, -1, order="F").T  # x fastest, as damask numbers grains
            _, first, inverse = np.unique(key_f, axis=0, return_index=True, return_inverse=True)
            order = np.argsort(np.argsort(first))  # label in order of first appearance
            grain_ids = order[inverse.reshape(-1)].reshape(cells, order="F").astype(np.int32)
            euler = key_f[np.sort(first), 1:]
            phase_d3d = key_f[np.sort(first), 0].astype(np.int64)

        if phase_d3d.min() < 1:
            raise ValueError(f"{path}: field '{phases}': expected DREAM.3D phases >= 1 for every grain, got "
                             f"{int(np.count_nonzero(phase_d3d < 1))} grains in phase 0 (unknown)")
        if lattice is None:
            if meta is not None:
                lattice = meta["lattice"]
            else:
                structures = _d3d_crystal_structures(f, base)
                if structures is None or structures.size < 2:
                    raise ValueError(f"{path}: field 'CrystalStructures' is missing: expected an ensemble array "
                                     f"with one code per phase; pass lattice= to override")
                lattice = _lattice_from_code(int(structures[1]), path)

        has_phase_ids = meta["has_phase_ids"] if meta is not None else \
            cell_phase is not None and np.unique(cell_phase).size > 1
        phase_ids = None
        if has_phase_ids and cell_phase is not None:
            if cell_phase.min() < 1 or cell_phase.max() > 256:
                raise ValueError(f"{path}: field '{phases}': expected cell phases in [1, 256], got "
                                 f"[{cell_phase.min()}, {cell_phase.max()}]")
            phase_ids = (cell_phase - 1).astype(np.uint8)
        attrs = meta["attrs"] if meta is not None else {
            "generator": "DREAM.3D", "params": {}, "seed": None, "source_file": path.name,
            "dream3d_version": _attr_text(f.attrs.get("DREAM3D Version", "unknown"))}
        if meta is not None:
            spacing = np.asarray(meta["spacing"], dtype=float)  # exact; SPACING is float32
        return _build_ve(str(path), grain_ids=grain_ids, euler=euler, phase=(phase_d3d - 1).astype(np.int32),
                         spacing=spacing, lattice=lattice, phase_ids=phase_ids, attrs=attrs)


# --------------------------------------------------------------------------------------------------
# label arrays: phase fields (two-phase volumes) and TIFF stacks
# --------------------------------------------------------------------------------------------------

def _check_labels(a: np.ndarray, source: str, field: str, max_value: int) -> np.ndarray:
    a = _as_int_labels(a, source, field, np.int64)
    if a.ndim != 3 or min(a.shape) < 1:
        raise ValueError(f"{source}: field '{field}': expected a 3D array (X, Y, Z), got shape {a.shape}")
    if a.min() < 0 or a.max() > max_value:
        raise ValueError(f"{source}: field '{field}': expected labels in [0, {max_value}], got [{a.min()}, {a.max()}]")
    return a


def load_phase_array(path: PathLike, *, name: str = "Phases", base_group: str | None = None) -> np.ndarray:
    """Per-voxel phase index of a (two-phase) volume, shape (X, Y, Z), uint8, 0-based.

    ``.dream3d``: cell array ``name`` (DREAM.3D phases are 1-based; 1 is subtracted, phase 0 is refused);
    ``.npy``: an integer array (X, Y, Z) used as is; ``.tif``/``.tiff``: a stack as written by
    :func:`save_tiff_stack`; ``.npz``/``.h5``: the ``phase_ids`` of a single VE.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".dream3d":
        path, f = _d3d_open(path)
        with f:
            base = _d3d_base_group(f, path, base_group)
            cells, _ = _d3d_geometry(f, path, base)
            a = _d3d_cell_array(_d3d_cell_group(f, path, base, cells, (name,)), path, name, cells, 1)
        a = _as_int_labels(a, str(path), name, np.int64)
        if a.min() < 1:
            raise ValueError(f"{path}: field '{name}': expected DREAM.3D phases >= 1, got "
                             f"{int(np.count_nonzero(a < 1))} cells in phase 0 (unknown)")
        return _check_labels(a - 1, str(path), name, 255).astype(np.uint8)
    if suffix == ".npy":
        path = _existing_file(path, "phase array")
        return _check_labels(np.load(path, allow_pickle=False), str(path), "phase_ids", 255).astype(np.uint8)
    if suffix in (".tif", ".tiff"):
        return _check_labels(load_tiff_stack(path), str(path), "phase_ids", 255).astype(np.uint8)
    if suffix in (".npz", ".h5", ".hdf5"):
        ve = load(path)
        if ve.phase_ids is None:
            raise ValueError(f"{path}: field 'phase_ids' is missing: expected a two-phase volume")
        return ve.phase_ids
    raise ValueError(f"{path}: unsupported suffix {suffix!r} for a phase array; supported: "
                     f".dream3d, .h5, .hdf5, .npy, .npz, .tif, .tiff")


def save_tiff_stack(path: PathLike, labels: np.ndarray, *, spacing: np.ndarray | None = None) -> Path:
    """Write a label field (X, Y, Z) as a TIFF stack: page k is the slice z = k, stored as (Y, X).

    The dtype is kept (int32 grain ids, uint8 phase ids); pages are zlib compressed.  The image
    description holds JSON with ``axes='ZYX'`` and, if given, ``spacing`` (x, y, z) in length units.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: labels must be an integer array (X, Y, Z), got {labels.dtype} {labels.shape}")
    import tifffile

    metadata: dict[str, Any] = {"axes": "ZYX"}
    if spacing is not None:
        metadata["spacing"] = [float(s) for s in np.asarray(spacing).reshape(3)]
    target = Path(path).expanduser()
    with atomic_path(target) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(np.swapaxes(labels, 0, 2)), compression="zlib",
                         metadata=metadata)
    return target


def load_tiff_stack(path: PathLike) -> np.ndarray:
    """Read a TIFF label stack (pages = z slices of shape (Y, X)) as an array (X, Y, Z), dtype kept.

    A single page (Y, X) is read as Z = 1.  Colour (RGB) images are refused.
    """
    import tifffile

    path = _existing_file(path, "TIFF stack")
    try:
        with tifffile.TiffFile(path) as t:
            a = t.asarray()
    except (tifffile.TiffFileError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable TIFF file ({e})") from e
    if a.ndim == 2:
        a = a[np.newaxis]
    if a.ndim != 3 or a.dtype.kind not in "iub":
        raise ValueError(f"{path}: field 'pages': expected integer label slices (Z, Y, X), got {a.dtype} {a.shape}")
    return np.ascontiguousarray(np.swapaxes(a, 0, 2))


# --------------------------------------------------------------------------------------------------
# CSV grain tables
# --------------------------------------------------------------------------------------------------

def save_grain_table(path: PathLike, euler: np.ndarray, phase: np.ndarray | None = None, *,
                     comment: str | None = None) -> Path:
    """Write one row per grain: ``grain_id, phase, phi1, Phi, phi2`` (Bunge Euler angles in radians).

    Parameters
    ----------
    euler : numpy.ndarray, shape (G, 3)
        Bunge Euler angles in radians of grains 0..G-1.
    phase : numpy.ndarray of int, shape (G,), optional
        Phase index per grain; zeros if omitted.
    comment : str, optional
        One line written first as ``# comment`` (readers skip ``#`` lines).
    """
    import pandas as pd

    euler = np.asarray(euler, dtype=np.float64)
    if euler.ndim != 2 or euler.shape[1] != 3:
        raise ValueError(f"{path}: euler must have shape (G, 3), got {euler.shape}")
    phase = np.zeros(len(euler), dtype=np.int32) if phase is None else np.asarray(phase)
    if phase.shape != (len(euler),):
        raise ValueError(f"{path}: phase must have shape ({len(euler)},), got {phase.shape}")
    table = pd.DataFrame({"grain_id": np.arange(len(euler)), "phase": phase.astype(np.int64),
                          "phi1": euler[:, 0], "Phi": euler[:, 1], "phi2": euler[:, 2]})
    target = Path(path).expanduser()
    with atomic_path(target) as tmp:
        with open(tmp, "w", newline="") as fh:
            if comment is not None:
                fh.write(f"# {comment}\n")
            table.to_csv(fh, index=False, float_format="%.17g")
    return target


def _csv_comment(path: Path) -> str | None:
    with open(path) as fh:
        first = fh.readline()
    return first[2:].rstrip("\n") if first.startswith("# ") else None


def load_grain_table(path: PathLike) -> pd.DataFrame:
    """Read and validate a CSV grain table.

    Returns
    -------
    table : pandas.DataFrame
        Columns ``grain_id`` (int, exactly 0..G-1 after sorting), ``phase`` (int >= 0) and ``phi1``,
        ``Phi``, ``phi2`` (float64, radians, phi1, phi2 in [0, 2 pi], Phi in [0, pi]), sorted by grain id.
    """
    import pandas as pd

    path = _existing_file(path, "grain table")
    try:
        table = pd.read_csv(path, comment="#", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty grain table: expected a header {','.join(GRAIN_TABLE_COLUMNS)} "
                         f"and one row per grain") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV grain table ({e})") from e
    missing = [c for c in GRAIN_TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}: expected {', '.join(GRAIN_TABLE_COLUMNS)}, "
                         f"got {list(table.columns)}")
    if len(table) == 0:
        raise ValueError(f"{path}: empty grain table: expected one row per grain")
    for c in GRAIN_TABLE_COLUMNS:
        values = pd.to_numeric(table[c], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            raise ValueError(f"{path}: column '{c}': expected finite numbers, got NaN/inf or text in "
                             f"{int(bad.sum())} row(s), first at grain row {int(np.argmax(bad))}")
        table[c] = values
    for c in ("grain_id", "phase"):
        if not np.array_equal(table[c], np.round(table[c])) or table[c].min() < 0:
            raise ValueError(f"{path}: column '{c}': expected non-negative integers")
        table[c] = table[c].astype(np.int32)
    table = table.sort_values("grain_id", kind="stable").reset_index(drop=True)
    if not np.array_equal(table["grain_id"].to_numpy(), np.arange(len(table))):
        raise ValueError(f"{path}: column 'grain_id': expected each of 0..{len(table) - 1} exactly once")
    check_euler_range(table[["phi1", "Phi", "phi2"]].to_numpy(dtype=np.float64), str(path), "Euler angles")
    return table[list(GRAIN_TABLE_COLUMNS)]


# --------------------------------------------------------------------------------------------------
# .vti, .npz, .npy
# --------------------------------------------------------------------------------------------------

def save_vti(path: PathLike, ve: VolumeElement) -> Path:
    """Write a VE as VTK ImageData (``.vti``) with ``damask.VTK``, readable by ``damask.GeomGrid.load``.

    Cell data: ``material`` int32 = grain id (0-based, DAMASK's material index), ``Euler_angles``
    (3 components, radians; float32 because damask stores doubles as single precision), ``phase``
    int32 per voxel and, for two-phase volumes, ``phase_ids`` uint8.  Size = cells x spacing, origin 0.
    Field data ``comments`` holds one line ``micropipe-ve <JSON>`` with lattice, spacing, attrs and the
    exact float64 grain table, which :func:`load_vti` prefers over the float32 cell data.
    """
    import damask

    v = damask.VTK.from_image_data(ve.cells, ve.size, np.zeros(3))
    v = v.set("material", ve.grain_ids.reshape(-1, order="F").astype(np.int32))
    v = v.set("Euler_angles", _euler_float32(ve.euler_field().reshape(-1, 3, order="F")))
    v = v.set("phase", ve.phase[ve.grain_ids].reshape(-1, order="F").astype(np.int32))
    if ve.phase_ids is not None:
        v = v.set("phase_ids", ve.phase_ids.reshape(-1, order="F").astype(np.uint8))
    v.comments = [f"{META_TAG} {_meta(ve, grains=True)}"]
    target = Path(path).expanduser()
    with atomic_path(target) as tmp:
        v.save(tmp, parallel=False, compress=True)
    return target


def load_vti_data(path: PathLike) -> Any:
    """The ``damask.VTK`` of a ``.vti`` file; a file VTK cannot read is one ``ValueError`` (VTK's own C++ messages
    kept off the console)."""
    import damask

    path = _existing_file(path, "VTK ImageData file")
    if path.suffix != ".vti":
        raise ValueError(f"{path}: expected a .vti file")
    try:
        with quiet_vtk():
            return damask.VTK.load(path)
    except (TypeError, ValueError, OSError, KeyError) as e:
        raise ValueError(f"{path}: not a readable VTK ImageData file ({e})") from e


def load_vti(path: PathLike, *, lattice: str | None = None) -> VolumeElement:
    """Read a VE from a ``.vti`` written by :func:`save_vti`, or any VTK ImageData with ``material``.

    Foreign files need per-voxel ``Euler_angles`` cell data (radians, constant per material) and
    ``lattice=``; ``material`` labels are compacted to 0..G-1 in ascending order.
    """
    v = load_vti_data(path)
    path = Path(path)
    cells = tuple(int(c) - 1 for c in v.vtk_data.GetDimensions())
    if "material" not in v.labels.get("Cell Data", []):
        raise ValueError(f"{path}: field 'material' is missing: expected cell data with the grain id per voxel")
    material = _as_int_labels(v.get("material").reshape(cells, order="F"), str(path), "material", np.int64)
    grain_ids, _ = _compact(material)
    meta = next((_parse_meta(c[len(META_TAG) + 1:], f"{path}: comments") for c in v.comments
                 if c.startswith(META_TAG + " ")), None)

    def cell(label: str, components: int) -> np.ndarray | None:
        if label not in v.labels.get("Cell Data", []):
            return None
        return v.get(label).reshape(cells + ((components,) if components > 1 else ()), order="F")

    phase_ids = None
    if meta is not None:
        euler = np.asarray(meta["grains"]["euler"], dtype=np.float64).reshape(-1, 3)
        phase = np.asarray(meta["grains"]["phase"], dtype=np.int32)
        spacing = np.asarray(meta["spacing"], dtype=float)
        lattice = lattice or meta["lattice"]
        attrs = meta["attrs"]
        if meta["has_phase_ids"]:
            phase_ids = cell("phase_ids", 1)
            if phase_ids is None:
                raise ValueError(f"{path}: field 'phase_ids' is missing although the metadata lists it")
            phase_ids = _check_labels(phase_ids, str(path), "phase_ids", 255).astype(np.uint8)
    else:
        field = cell("Euler_angles", 3)
        if field is None:
            raise ValueError(f"{path}: field 'Euler_angles' is missing: expected per-voxel Bunge Euler angles "
                             f"(radians) as cell data")
        n = int(grain_ids.max()) + 1
        euler = _first_voxel_values(grain_ids, field.astype(np.float64), n)
        _check_constant_per_grain(grain_ids, field, euler, str(path), "Euler_angles", 1e-5)
        ph = cell("phase", 1)
        phase = np.zeros(n, np.int32) if ph is None else \
            _first_voxel_values(grain_ids, _as_int_labels(ph, str(path), "phase"), n)
        bounds = np.array(v.vtk_data.GetBounds()).reshape(3, 2)
        spacing = (bounds[:, 1] - bounds[:, 0]) / np.asarray(cells)
        attrs = {"generator": "unknown", "params": {}, "seed": None, "source_file": path.name}
        if lattice is None:
            raise ValueError(f"{path}: lattice unknown: the file has no micropipe metadata; pass lattice= "
                             f"(one of {', '.join(LATTICES)})")
    return _build_ve(str(path), grain_ids=grain_ids, euler=euler, phase=phase, spacing=spacing,
                     lattice=lattice, phase_ids=phase_ids, attrs=attrs)


_NPZ_KEYS = ("grain_ids", "euler", "phase", "spacing", "lattice")


def save_npz(path: PathLike, ve: VolumeElement) -> Path:
    """Write a VE as ``.npz`` (``numpy.savez_compressed``): full fidelity, no extra dependencies.

    Arrays: ``grain_ids`` (X, Y, Z) int32, ``euler`` (G, 3) float64 radians, ``phase`` (G,) int32,
    ``spacing`` (3,) float64, ``lattice`` (0-d str), ``meta`` (0-d str, JSON with attrs) and, for
    two-phase volumes, ``phase_ids`` (X, Y, Z) uint8.  Read without pickle.
    """
    arrays = {"grain_ids": ve.grain_ids.astype(np.int32), "euler": ve.euler.astype(np.float64),
              "phase": ve.phase.astype(np.int32), "spacing": np.asarray(ve.spacing, dtype=np.float64),
              "lattice": np.array(ve.lattice), "meta": np.array(_meta(ve))}
    if ve.phase_ids is not None:
        arrays["phase_ids"] = ve.phase_ids.astype(np.uint8)
    target = Path(path).expanduser()
    with atomic_path(target) as tmp:
        np.savez_compressed(tmp, **arrays)
    return target


def load_npz(path: PathLike) -> VolumeElement:
    """Read a VE from ``.npz`` (see :func:`save_npz`); integer and float dtypes are cast if values fit."""
    path = _existing_file(path, ".npz file")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    missing = [k for k in _NPZ_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: field(s) {missing} missing: expected arrays {', '.join(_NPZ_KEYS)}")
    source = str(path)
    meta = _parse_meta(str(data["meta"]), f"{path}: field 'meta'") if "meta" in data else None
    euler = np.asarray(data["euler"])
    if euler.dtype.kind != "f":
        raise ValueError(f"{path}: field 'euler': expected float radians, got dtype {euler.dtype}")
    phase_ids = data.get("phase_ids")
    return _build_ve(source, grain_ids=_as_int_labels(data["grain_ids"], source, "grain_ids"),
                     euler=euler.astype(np.float64), phase=_as_int_labels(data["phase"], source, "phase"),
                     spacing=np.asarray(data["spacing"], dtype=float), lattice=str(data["lattice"]),
                     phase_ids=None if phase_ids is None else _check_labels(phase_ids, source, "phase_ids", 255)
                     .astype(np.uint8),
                     attrs=meta["attrs"] if meta is not None else {})


def grain_table_path(npy_path: PathLike) -> Path:
    """The grain table that accompanies a ``.npy`` grain-id array: ``<stem>.grains.csv``."""
    p = Path(npy_path)
    return p.with_name(f"{p.stem}.grains.csv")


def save_npy(path: PathLike, ve: VolumeElement) -> Path:
    """Write ``grain_ids`` (X, Y, Z) int32 to ``.npy`` and the grain table to ``<stem>.grains.csv``.

    The CSV's first line ``# micropipe-ve <JSON>`` carries lattice, spacing and attrs.  Two-phase
    volumes (``phase_ids``) do not fit this pair of files: use .npz, .h5, .vti or .dream3d.
    """
    if ve.phase_ids is not None:
        raise ValueError(f"{path}: the .npy + CSV format holds no phase_ids; save two-phase volumes as "
                         f".npz, .h5, .vti or .dream3d")
    target = Path(path).expanduser()
    save_grain_table(grain_table_path(target), ve.euler, ve.phase, comment=f"{META_TAG} {_meta(ve)}")
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, ve.grain_ids.astype(np.int32), allow_pickle=False)
    return target


def load_array(path: PathLike, what: str) -> np.ndarray:
    """A ``.npy`` file's array, read without pickle; a file numpy cannot read that way (truncated, not ``.npy``,
    pickled Python objects) is one ``ValueError`` naming the file and ``what`` was expected in it."""
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy file (no NumPy header); expected a .npy of {what}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise ValueError(f"{path}: holds pickled Python objects, not an array; expected a .npy of {what}") \
                from None
        raise ValueError(f"{path}: not a readable .npy file ({e}); expected {what}") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy file ({e}); expected {what}") from None


@contextlib.contextmanager
def quiet_vtk() -> Iterator[None]:
    """VTK's readers print their C++ errors on stderr before Python sees an exception; keep them off the console
    (the caller raises one line instead)."""
    from vtkmodules.vtkCommonCore import vtkObject

    before = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        yield
    finally:
        vtkObject.SetGlobalWarningDisplay(before)


def load_npy(path: PathLike, *, grain_table: PathLike | None = None, spacing: Any = None,
             lattice: str | None = None) -> VolumeElement:
    """Read ``grain_ids`` from ``.npy`` and the grains from ``<stem>.grains.csv`` (or ``grain_table``).

    ``spacing`` and ``lattice`` override (or, for tables without micropipe's first line, supply) the
    metadata.
    """
    path = _existing_file(path, ".npy grain-id array")
    table_path = _existing_file(grain_table if grain_table is not None else grain_table_path(path), "grain table")
    grain_ids = load_array(path, "grain ids (X, Y, Z)")
    table = load_grain_table(table_path)
    comment = _csv_comment(table_path)
    meta = _parse_meta(comment[len(META_TAG) + 1:], f"{table_path}: first line") \
        if comment is not None and comment.startswith(META_TAG + " ") else None
    if spacing is None and meta is None:
        raise ValueError(f"{table_path}: spacing unknown: the table has no micropipe metadata; pass spacing=")
    if lattice is None and meta is None:
        raise ValueError(f"{table_path}: lattice unknown: the table has no micropipe metadata; pass lattice= "
                         f"(one of {', '.join(LATTICES)})")
    spacing = np.broadcast_to(np.asarray(spacing if spacing is not None else meta["spacing"], dtype=float), (3,))
    return _build_ve(f"{path} + {table_path.name}", grain_ids=_as_int_labels(grain_ids, str(path), "grain_ids"),
                     euler=table[["phi1", "Phi", "phi2"]].to_numpy(dtype=np.float64),
                     phase=table["phase"].to_numpy(dtype=np.int32), spacing=np.array(spacing),
                     lattice=lattice or meta["lattice"], phase_ids=None,
                     attrs=meta["attrs"] if meta is not None else {})


# --------------------------------------------------------------------------------------------------
# dispatch on the suffix
# --------------------------------------------------------------------------------------------------

_SUPPORTED = (".dream3d", ".h5", ".hdf5", ".npy", ".npz", ".vti")


def _unsupported(path: PathLike) -> ValueError:
    return ValueError(f"{path}: unsupported suffix {Path(path).suffix!r}; supported: {', '.join(_SUPPORTED)} "
                      f"(TIFF stacks and CSV grain tables hold one part of a VE: use load_tiff_stack / "
                      f"load_grain_table)")


def save(path: PathLike, ve: VolumeElement) -> Path:
    """Write one VE, choosing the format by suffix: .dream3d, .h5/.hdf5 (single-VE shard), .npy, .npz, .vti."""
    suffix = Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5"):
        stem = Path(path).stem
        ve_id = stem if VE_ID_PATTERN.match(stem) else "ve_000000"
        prov = _provenance.record(seed=ve.attrs.get("seed"), params=ve.attrs.get("params", {}), step="ve.io.save")
        return write_shard(path, {ve_id: ve}, provenance=prov)
    writers = {".dream3d": save_dream3d, ".npy": save_npy, ".npz": save_npz, ".vti": save_vti}
    if suffix not in writers:
        raise _unsupported(path)
    return writers[suffix](path, ve)


def load(path: PathLike) -> VolumeElement:
    """Read one VE, choosing the format by suffix (see :func:`save`); a .h5 shard must hold exactly one VE."""
    suffix = Path(path).suffix.lower()
    if suffix in (".h5", ".hdf5"):
        info = shard_info(path)
        if info["n_ve"] != 1:
            raise ValueError(f"{path}: the shard holds {info['n_ve']} VEs; load() reads single-VE files, "
                             f"use read_shard() or iter_shard()")
        return read_shard(path)[info["ids"][0]]
    readers = {".dream3d": load_dream3d, ".npy": load_npy, ".npz": load_npz, ".vti": load_vti}
    if suffix not in readers:
        raise _unsupported(path)
    return readers[suffix](path)
