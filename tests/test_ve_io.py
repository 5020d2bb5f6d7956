"""Readers and writers of micropipe.ve.io: round trips, atomic shards, DREAM.3D/damask compatibility, bad input."""

from __future__ import annotations

import logging

import damask
import h5py
import numpy as np
import pandas as pd
import pytest

from micropipe.ve import io
from micropipe.ve.volume import VolumeElement

# --------------------------------------------------------------------------------------------------
# small VEs, built here (no dependency on the generator)
# --------------------------------------------------------------------------------------------------


def _voronoi(cells, spacing, n_grains, rng_seed):
    rng = np.random.default_rng(rng_seed)
    size = np.asarray(cells) * np.asarray(spacing)
    grid = damask.GeomGrid.from_Voronoi_tessellation(cells, size, rng.random((n_grains, 3)) * size)
    return np.unique(grid.material, return_inverse=True)[1].reshape(grid.material.shape).astype(np.int32)


def _euler(n, rng_seed):
    e = np.random.default_rng(rng_seed).random((n, 3)) * [2 * np.pi, np.pi, 2 * np.pi]
    e[0] = [0.0, 0.0, 0.0]  # range edges must survive every format
    if n > 1:
        e[1] = [2 * np.pi, np.pi, 2 * np.pi]
    return e


def make_ve(kind: str) -> VolumeElement:
    attrs = {"generator": "test", "params": {"kind": kind, "esd": [5.78, 0.1]}, "seed": 7, "note": "io test"}
    if kind == "cubic":
        g = np.zeros((4, 4, 4), dtype=np.int32)
        g[2:] = 1
        g[:, 3:] = 2
        return VolumeElement(grain_ids=g, euler=_euler(3, 1), phase=np.zeros(3, np.int32),
                             spacing=np.full(3, 0.25), lattice="cF", attrs=attrs)
    if kind == "noncubic":  # (5, 6, 7) cells and anisotropic spacing catch axis-order mistakes
        g = _voronoi((5, 6, 7), (0.25, 0.5, 1.0), 8, 2)
        return VolumeElement(grain_ids=g, euler=_euler(int(g.max()) + 1, 2), phase=np.zeros(g.max() + 1, np.int32),
                             spacing=np.array([0.25, 0.5, 1.0]), lattice="hP", attrs=attrs)
    if kind == "twophase":
        g = _voronoi((5, 6, 7), (1.0, 1.0, 1.0), 6, 3)
        n = int(g.max()) + 1
        phase = (np.arange(n) % 2).astype(np.int32)
        return VolumeElement(grain_ids=g, euler=_euler(n, 3), phase=phase, spacing=np.ones(3), lattice="cI",
                             phase_ids=phase[g].astype(np.uint8), attrs=attrs)
    raise ValueError(kind)


KINDS = ["cubic", "noncubic", "twophase"]


@pytest.fixture(autouse=True)
def _no_git(monkeypatch):
    monkeypatch.setenv("MICROPIPE_GIT_COMMIT", "test")


def assert_same_ve(a: VolumeElement, b: VolumeElement, *, euler_atol: float = 0.0) -> None:
    np.testing.assert_array_equal(a.grain_ids, b.grain_ids)
    assert b.grain_ids.dtype == np.int32
    np.testing.assert_allclose(b.euler, a.euler, rtol=0, atol=euler_atol)
    assert b.euler.dtype == np.float64
    np.testing.assert_array_equal(a.phase, b.phase)
    np.testing.assert_array_equal(a.spacing, b.spacing)
    assert a.lattice == b.lattice
    if a.phase_ids is None:
        assert b.phase_ids is None
    else:
        np.testing.assert_array_equal(a.phase_ids, b.phase_ids)
        assert b.phase_ids.dtype == np.uint8
    assert a.attrs == b.attrs


# --------------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("suffix", [".h5", ".dream3d", ".vti", ".npz", ".npy"])
def test_round_trip(tmp_path, kind, suffix):
    ve = make_ve(kind)
    path = tmp_path / f"ve_000001{suffix}"
    if suffix == ".npy" and ve.phase_ids is not None:
        with pytest.raises(ValueError, match="phase_ids"):
            io.save(path, ve)
        return
    assert io.save(path, ve) == path
    # .dream3d stores Euler angles as float32, DREAM.3D's type
    assert_same_ve(ve, io.load(path), euler_atol=1e-6 if suffix == ".dream3d" else 0.0)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_shard_round_trip_and_info(tmp_path):
    ves = {f"ve_{i:06d}": make_ve(k) for i, k in zip((3, 1, 2), KINDS, strict=True)}
    prov = {"step": "test", "seed": 1}
    path = io.write_shard(tmp_path / "shard.h5", ves, provenance=prov)
    read = io.read_shard(path)
    assert list(read) == ["ve_000001", "ve_000002", "ve_000003"]
    for ve_id, ve in ves.items():
        assert_same_ve(ve, read[ve_id])
    assert [i for i, _ in io.iter_shard(path)] == list(read)
    info = io.shard_info(path)
    assert info["ids"] == list(read) and info["n_ve"] == 3 and info["provenance"] == prov
    assert info["cells"]["ve_000001"] == (5, 6, 7) and info["cells"]["ve_000003"] == (4, 4, 4)
    with h5py.File(path) as f:
        assert f.attrs["format"] == "micropipe-ve-shard" and f.attrs["format_version"] == 1
        g = f["ve_000001"]
        assert g["grain_ids"].dtype == np.int32 and g["grain_ids"].compression == "gzip"
        assert g["euler"].dtype == np.float64 and g["phase"].dtype == np.int32
        np.testing.assert_allclose(g.attrs["size"], [1.25, 3.0, 7.0])
        assert g.attrs["lattice"] == "hP" and g.attrs["seed"] == 7


def test_shard_bytes_are_reproducible(tmp_path):
    ves = {"ve_000000": make_ve("noncubic"), "ve_000001": make_ve("twophase")}
    a = io.write_shard(tmp_path / "a.h5", ves, provenance={"seed": 1})
    b = io.write_shard(tmp_path / "b.h5", dict(reversed(ves.items())), provenance={"seed": 1})
    assert a.read_bytes() == b.read_bytes()


def test_seed_none_round_trips(tmp_path):
    ve = make_ve("cubic")
    ve = VolumeElement(**{**ve.__dict__, "attrs": {"generator": "x", "params": {}, "seed": None}})
    io.write_shard(tmp_path / "s.h5", {"ve_0": ve}, provenance={})
    assert io.read_shard(tmp_path / "s.h5")["ve_0"].attrs["seed"] is None


# --------------------------------------------------------------------------------------------------
# atomicity
# --------------------------------------------------------------------------------------------------

def test_failed_shard_write_leaves_nothing(tmp_path, monkeypatch):
    real, calls = io._write_ve_group, []

    def failing(f, ve_id, ve):
        calls.append(ve_id)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        real(f, ve_id, ve)

    monkeypatch.setattr(io, "_write_ve_group", failing)
    ves = {"ve_000000": make_ve("cubic"), "ve_000001": make_ve("noncubic")}
    with pytest.raises(RuntimeError, match="disk full"):
        io.write_shard(tmp_path / "shard.h5", ves, provenance={})
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_previous_shard(tmp_path, monkeypatch):
    path = io.write_shard(tmp_path / "shard.h5", {"ve_000000": make_ve("cubic")}, provenance={"v": 1})
    before = path.read_bytes()
    monkeypatch.setattr(io, "_write_ve_group", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        io.write_shard(path, {"ve_000000": make_ve("noncubic")}, provenance={"v": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["shard.h5"]


def test_shard_without_complete_is_refused(tmp_path):
    path = io.write_shard(tmp_path / "shard.h5", {"ve_000000": make_ve("cubic")}, provenance={})
    with h5py.File(path, "a") as f:
        del f.attrs["complete"]
    for reader in (io.read_shard, io.shard_info, io.iter_shard):
        with pytest.raises(ValueError, match="'complete' is missing"):
            reader(path)


# --------------------------------------------------------------------------------------------------
# bad shards: one message naming the file, the VE and the field
# --------------------------------------------------------------------------------------------------

def _break(path, action):
    with h5py.File(path, "a") as f:
        action(f["ve_000000"], f)


def _replace(name, data):
    def action(g, f):
        if name in g:
            del g[name]
        g[name] = data
    return action


@pytest.mark.parametrize(("action", "match"), [
    (_replace("grain_ids", np.zeros((4, 4, 4))), r"ve_000000\]: field 'grain_ids': expected int32"),
    (_replace("grain_ids", np.zeros((4, 4), np.int32)), r"field 'grain_ids': expected int32 dataset \(X, Y, Z\)"),
    (lambda g, f: g.__delitem__("euler"), r"ve_000000\]: field 'euler' is missing"),
    (_replace("euler", np.full((3, 3), 7.0)), r"ve_000000\]: euler out of range"),
    (_replace("euler", np.full((3, 3), np.nan)), r"ve_000000\]: euler contains NaN"),
    (_replace("euler", np.zeros((2, 3))), r"grain_ids must lie in \[0, 1\]"),
    (_replace("phase", np.zeros(3, np.int64)), r"field 'phase': expected int32"),
    (_replace("phase_ids", np.zeros((4, 4, 4), np.int32)), r"field 'phase_ids': expected uint8"),
    (lambda g, f: g.attrs.__delitem__("spacing"), r"attribute 'spacing' is missing"),
    (lambda g, f: g.attrs.__setitem__("size", [1.0, 1.0, 2.0]), r"attribute 'size': expected cells x spacing"),
    (lambda g, f: g.attrs.__setitem__("lattice", "xY"), r"unknown lattice 'xY'"),
    (lambda g, f: f.attrs.__setitem__("format", "other"), r"file attribute 'format'"),
    (lambda g, f: f.attrs.__setitem__("n_ve", 5), r"file attribute 'n_ve'"),
])
def test_bad_shard_is_refused_with_clear_message(tmp_path, action, match):
    path = io.write_shard(tmp_path / "bad.h5", {"ve_000000": make_ve("cubic")}, provenance={})
    _break(path, action)
    with pytest.raises(ValueError, match=match) as err:
        io.read_shard(path)
    assert "bad.h5" in str(err.value)


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        io.read_shard(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="text.h5: not a readable HDF5 file"):
        io.read_shard(tmp_path / "text.h5")
    with pytest.raises(ValueError, match="text.h5: not a readable HDF5 file"):
        io.load_dream3d(tmp_path / "text.h5")


def test_write_shard_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="invalid ve_id"):
        io.write_shard(tmp_path / "s.h5", {"a/b": make_ve("cubic")}, provenance={})
    with pytest.raises(ValueError, match="no volume elements"):
        io.write_shard(tmp_path / "s.h5", {}, provenance={})
    assert list(tmp_path.iterdir()) == []
    # Like every store write, a shard creates its parent directories.
    io.write_shard(tmp_path / "new" / "s.h5", {"ve_0": make_ve("cubic")}, provenance={})
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["s.h5"]


# --------------------------------------------------------------------------------------------------
# .dream3d: layout, damask compatibility, files in DREAM.3D's own arrangement
# --------------------------------------------------------------------------------------------------

def test_dream3d_layout(tmp_path):
    ve = make_ve("noncubic")
    path = io.save_dream3d(tmp_path / "ve.dream3d", ve)
    dc = "DataContainers/SyntheticVolumeDataContainer"
    with h5py.File(path) as f:
        assert f.attrs["FileVersion"] == b"7.0"
        assert f.attrs.get_id("FileVersion").get_type().get_strpad() == h5py.h5t.STR_NULLTERM
        geom = f[f"{dc}/_SIMPL_GEOMETRY"]
        np.testing.assert_array_equal(geom["DIMENSIONS"][()], [5, 6, 7])
        np.testing.assert_allclose(geom["SPACING"][()], [0.25, 0.5, 1.0])
        assert geom.attrs["GeometryTypeName"] == b"ImageGeometry" and geom.attrs["GeometryType"][0] == 0
        fid = f[f"{dc}/CellData/FeatureIds"]
        assert fid.shape == (7, 6, 5, 1) and fid.dtype == np.int32
        np.testing.assert_array_equal(fid[..., 0], ve.grain_ids.transpose(2, 1, 0) + 1)
        assert fid.attrs["ObjectType"] == b"DataArray<int32_t>"
        assert fid.attrs["Tuple Axis Dimensions"] == b"x=5,y=6,z=7"
        np.testing.assert_array_equal(fid.attrs["TupleDimensions"], [5, 6, 7])
        np.testing.assert_array_equal(fid.attrs["ComponentDimensions"], [1])
        assert fid.attrs["DataArrayVersion"][0] == 2
        eu = f[f"{dc}/CellData/EulerAngles"]
        assert eu.shape == (7, 6, 5, 3) and eu.dtype == np.float32
        np.testing.assert_allclose(eu[2, 1, 4], ve.euler[ve.grain_ids[4, 1, 2]], atol=1e-6)
        cell = f[f"{dc}/CellData"]
        assert cell.attrs["AttributeMatrixType"][0] == 3
        np.testing.assert_array_equal(cell.attrs["TupleDimensions"], [5, 6, 7])
        feat = f[f"{dc}/CellFeatureData"]
        assert feat.attrs["AttributeMatrixType"][0] == 7 and feat["EulerAngles"].shape == (ve.N_grains + 1, 3)
        ens = f[f"{dc}/CellEnsembleData"]
        assert ens.attrs["AttributeMatrixType"][0] == 11
        np.testing.assert_array_equal(ens["CrystalStructures"][:, 0], [999, 0])  # hP -> Hexagonal_High
        np.testing.assert_array_equal(ens["PhaseTypes"][:, 0], [999, 0])
        assert ens["CrystalStructures"].dtype == np.uint32


@pytest.mark.parametrize("kind", KINDS)
def test_damask_reads_our_dream3d(tmp_path, kind):
    ve = make_ve(kind)
    path = io.save_dream3d(tmp_path / "ve.dream3d", ve)
    grid = damask.GeomGrid.load_DREAM3D(path, feature_IDs="FeatureIds")
    np.testing.assert_array_equal(grid.material, ve.grain_ids + 1)
    np.testing.assert_allclose(grid.size, ve.size, rtol=1e-6)
    # cell-wise mode groups cells by (orientation, phase): same grains, numbered by first appearance
    cellwise = damask.GeomGrid.load_DREAM3D(path)
    ours = io.load_dream3d(path)
    pairs = np.unique(np.stack([cellwise.material.ravel(), ve.grain_ids.ravel()]), axis=1)
    assert pairs.shape[1] == ve.N_grains == np.unique(cellwise.material).size
    np.testing.assert_array_equal(ours.grain_ids, ve.grain_ids)


def _as_dream3d_writes_it(path, *, keep_features=True):
    """Rearrange our file the way a PipelineRunner synthetic run leaves it: no micropipe metadata,
    CrystalStructures only in StatsGeneratorDataContainer, feature data in 'Grain Data' next to a
    second CellFeature matrix, and one feature id that no cell uses."""
    dc = "DataContainers/SyntheticVolumeDataContainer"
    with h5py.File(path, "a") as f:
        del f.attrs["micropipe"]
        stats = f.create_group("DataContainers/StatsGeneratorDataContainer/CellEnsembleData")
        stats.attrs["AttributeMatrixType"] = np.array([11], np.uint32)
        f.move(f"{dc}/CellEnsembleData/CrystalStructures", stats.name + "/CrystalStructures")
        shape = f.create_group(f"{dc}/Synthetic Shape Parameters (Primary Phase)")
        shape.attrs["AttributeMatrixType"] = np.array([7], np.uint32)
        shape["AxisEulerAngles"] = np.zeros((3, 3), np.float32)
        if keep_features:
            f.move(f"{dc}/CellFeatureData", f"{dc}/Grain Data")
            feat = f[f"{dc}/Grain Data"]
            eu, ph = feat["EulerAngles"][()], feat["Phases"][()]
            del feat["EulerAngles"], feat["Phases"]
            # feature 1 unused by cells: shift ids >= 1 up by one
            feat["EulerAngles"] = np.vstack([eu[:1], [[1.0, 1.0, 1.0]], eu[1:]]).astype(np.float32)
            feat["Phases"] = np.vstack([ph[:1], [[1]], ph[1:]]).astype(np.int32)
            fid = f[f"{dc}/CellData/FeatureIds"]
            fid[...] = fid[()] + 1
        else:
            del f[f"{dc}/CellFeatureData"]


def test_load_dream3d_in_dream3d_arrangement(tmp_path, caplog):
    ve = make_ve("cubic")
    path = io.save_dream3d(tmp_path / "synthetic.dream3d", ve)
    _as_dream3d_writes_it(path)
    with caplog.at_level(logging.WARNING, logger="micropipe.ve.io"):
        got = io.load_dream3d(path)
    assert "fcc from bcc" in caplog.text
    assert got.lattice == "cF" and got.attrs["generator"] == "DREAM.3D"
    np.testing.assert_array_equal(got.grain_ids, ve.grain_ids)
    np.testing.assert_allclose(got.euler, ve.euler, atol=1e-6)
    np.testing.assert_array_equal(got.phase, ve.phase)
    np.testing.assert_allclose(got.spacing, ve.spacing)
    assert got.phase_ids is None
    assert io.load_dream3d(path, lattice="cI").lattice == "cI"


@pytest.mark.parametrize("kind", ["noncubic", "twophase"])
def test_load_dream3d_cell_data_only(tmp_path, kind):
    """Without feature arrays, Euler angles per cell give the grains; without FeatureIds, damask's numbering."""
    ve = make_ve(kind)
    path = io.save_dream3d(tmp_path / "cells.dream3d", ve)
    _as_dream3d_writes_it(path, keep_features=False)
    got = io.load_dream3d(path)
    np.testing.assert_array_equal(got.grain_ids, ve.grain_ids)
    np.testing.assert_allclose(got.euler, ve.euler, atol=1e-6)
    with h5py.File(path, "a") as f:
        del f["DataContainers/SyntheticVolumeDataContainer/CellData/FeatureIds"]
    got = io.load_dream3d(path)
    np.testing.assert_array_equal(got.grain_ids, damask.GeomGrid.load_DREAM3D(path).material)
    np.testing.assert_allclose(got.euler[got.grain_ids], ve.euler[ve.grain_ids], atol=1e-6)
    np.testing.assert_array_equal(got.phase[got.grain_ids], ve.phase[ve.grain_ids])
    if kind == "twophase":
        np.testing.assert_array_equal(got.phase_ids, ve.phase_ids)


def test_load_phase_array(tmp_path):
    ve = make_ve("twophase")
    for suffix in (".dream3d", ".npz", ".h5"):
        io.save(tmp_path / f"v{suffix}", ve)
        np.testing.assert_array_equal(io.load_phase_array(tmp_path / f"v{suffix}"), ve.phase_ids)
    io.save_tiff_stack(tmp_path / "p.tif", ve.phase_ids)
    np.save(tmp_path / "p.npy", ve.phase_ids.astype(np.int64))
    for name in ("p.tif", "p.npy"):
        got = io.load_phase_array(tmp_path / name)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, ve.phase_ids)
    np.save(tmp_path / "bad.npy", np.full((2, 2, 2), -1))
    with pytest.raises(ValueError, match=r"bad.npy: field 'phase_ids': expected labels in \[0, 255\]"):
        io.load_phase_array(tmp_path / "bad.npy")


def _d3d(path, edit):
    with h5py.File(path, "a") as f:
        edit(f, f["DataContainers/SyntheticVolumeDataContainer"])


def _set(name, fn):
    def edit(f, dc):
        data = fn(dc[name][()])
        del dc[name]
        dc[name] = data
    return edit


@pytest.mark.parametrize(("edit", "match"), [
    (lambda f, dc: f.attrs.__setitem__("FileVersion", np.bytes_(b"8.0")), r"'FileVersion': expected '7.0'"),
    (_set("CellData/FeatureIds", lambda a: a * 0), r"expected feature ids >= 1 in every cell"),
    (_set("CellData/FeatureIds", lambda a: a[1:]), r"FeatureIds': expected shape \(Z, Y, X, 1\)"),
    (_set("CellFeatureData/Phases", lambda a: a * 0), r"field 'Phases': expected DREAM.3D phases >= 1"),
    (_set("CellFeatureData/EulerAngles", lambda a: a + 10), r"euler out of range"),
    (lambda f, dc: f.__delitem__("DataContainers/SyntheticVolumeDataContainer/_SIMPL_GEOMETRY"),
     r"field '_SIMPL_GEOMETRY': expected exactly one image-geometry data container"),
])
def test_bad_dream3d_is_refused(tmp_path, edit, match):
    path = io.save_dream3d(tmp_path / "bad.dream3d", make_ve("cubic"))
    _d3d(path, edit)
    with pytest.raises(ValueError, match=match) as err:
        io.load_dream3d(path)
    assert "bad.dream3d" in str(err.value)


def test_dream3d_without_crystal_structures_needs_lattice(tmp_path):
    path = io.save_dream3d(tmp_path / "x.dream3d", make_ve("cubic"))
    _as_dream3d_writes_it(path)
    with h5py.File(path, "a") as f:
        del f["DataContainers/StatsGeneratorDataContainer"]
    with pytest.raises(ValueError, match="'CrystalStructures' is missing"):
        io.load_dream3d(path)
    assert io.load_dream3d(path, lattice="cI").lattice == "cI"


# --------------------------------------------------------------------------------------------------
# .vti, .npy, TIFF, CSV
# --------------------------------------------------------------------------------------------------

def test_vti_is_a_damask_geometry(tmp_path):
    ve = make_ve("noncubic")
    path = io.save_vti(tmp_path / "ve.vti", ve)
    grid = damask.GeomGrid.load(path)
    np.testing.assert_array_equal(grid.material, ve.grain_ids)
    np.testing.assert_allclose(grid.size, ve.size)
    np.testing.assert_allclose(grid.initial_conditions["Euler_angles"], ve.euler_field(), atol=1e-6)


def test_vti_written_by_damask_alone(tmp_path):
    ve = make_ve("noncubic")
    grid = damask.GeomGrid(material=ve.grain_ids + 10, size=ve.size,
                           initial_conditions={"Euler_angles": ve.euler_field()})
    grid.save(tmp_path / "plain.vti")
    with pytest.raises(ValueError, match="plain.vti: lattice unknown"):
        io.load_vti(tmp_path / "plain.vti")
    got = io.load_vti(tmp_path / "plain.vti", lattice="hP")
    np.testing.assert_array_equal(got.grain_ids, ve.grain_ids)  # labels compacted to 0..G-1
    np.testing.assert_allclose(got.euler, ve.euler, atol=1e-6)  # damask stores float32
    np.testing.assert_allclose(got.spacing, ve.spacing)
    damask.GeomGrid(material=ve.grain_ids, size=ve.size).save(tmp_path / "no_euler.vti")
    with pytest.raises(ValueError, match="field 'Euler_angles' is missing"):
        io.load_vti(tmp_path / "no_euler.vti", lattice="hP")


def test_npy_pair_layout_and_foreign_table(tmp_path):
    ve = make_ve("noncubic")
    io.save_npy(tmp_path / "g.npy", ve)
    assert np.load(tmp_path / "g.npy").dtype == np.int32
    table = io.load_grain_table(tmp_path / "g.grains.csv")
    assert list(table.columns) == ["grain_id", "phase", "phi1", "Phi", "phi2"]
    table.to_csv(tmp_path / "plain.csv", index=False)  # no micropipe first line
    with pytest.raises(ValueError, match="spacing unknown"):
        io.load_npy(tmp_path / "g.npy", grain_table=tmp_path / "plain.csv")
    got = io.load_npy(tmp_path / "g.npy", grain_table=tmp_path / "plain.csv", spacing=0.25, lattice="cF")
    np.testing.assert_array_equal(got.spacing, [0.25, 0.25, 0.25])
    np.testing.assert_array_equal(got.euler, ve.euler)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8])
def test_tiff_stack_round_trip_and_axis_order(tmp_path, dtype):
    import tifffile

    labels = make_ve("noncubic").grain_ids.astype(dtype)
    path = io.save_tiff_stack(tmp_path / "s.tif", labels, spacing=[0.25, 0.5, 1.0])
    got = io.load_tiff_stack(path)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, labels)
    with tifffile.TiffFile(path) as t:
        assert len(t.pages) == 7  # one page per z slice
        np.testing.assert_array_equal(t.pages[2].asarray(), labels[:, :, 2].T)  # page = (Y, X)
        assert t.shaped_metadata[0]["spacing"] == [0.25, 0.5, 1.0]


def test_tiff_bad_input(tmp_path):
    (tmp_path / "x.tif").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="x.tif: not a readable TIFF"):
        io.load_tiff_stack(tmp_path / "x.tif")
    with pytest.raises(ValueError, match="integer array"):
        io.save_tiff_stack(tmp_path / "y.tif", np.zeros((2, 2, 2)))


def test_grain_table_round_trip_is_exact(tmp_path):
    ve = make_ve("twophase")
    io.save_grain_table(tmp_path / "g.csv", ve.euler, ve.phase)
    t = io.load_grain_table(tmp_path / "g.csv")
    np.testing.assert_array_equal(t[["phi1", "Phi", "phi2"]].to_numpy(), ve.euler)
    np.testing.assert_array_equal(t["phase"], ve.phase)


GOOD_ROWS = "grain_id,phase,phi1,Phi,phi2\n0,0,0.1,0.2,0.3\n1,0,1.0,1.0,1.0\n"


@pytest.mark.parametrize(("text", "match"), [
    ("", "empty grain table"),
    ("grain_id,phase,phi1,Phi,phi2\n", "empty grain table"),
    ("grain_id,phase,phi1,Phi\n0,0,0.1,0.2\n", r"missing column\(s\) \['phi2'\]"),
    ("grain_id,phase,phi1,Phi,phi2\n0,0,nan,0.2,0.3\n", "column 'phi1': expected finite numbers"),
    ("grain_id,phase,phi1,Phi,phi2\n0,0,0.1,,0.3\n", "column 'Phi': expected finite numbers"),
    ("grain_id,phase,phi1,Phi,phi2\n0,0,10,45,30\n", "Euler angles out of range.*degrees"),
    ("grain_id,phase,phi1,Phi,phi2\n0,0,0.1,0.2,0.3\n0,0,0.1,0.2,0.3\n", "column 'grain_id'"),
    ("grain_id,phase,phi1,Phi,phi2\n0,-1,0.1,0.2,0.3\n", "column 'phase': expected non-negative integers"),
])
def test_bad_grain_table(tmp_path, text, match):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        io.load_grain_table(tmp_path / "t.csv")
    assert "t.csv" in str(err.value)


def test_grain_table_sorted_by_id(tmp_path):
    (tmp_path / "t.csv").write_text("grain_id,phase,phi1,Phi,phi2\n1,0,1.0,1.0,1.0\n0,0,0.1,0.2,0.3\n")
    t = io.load_grain_table(tmp_path / "t.csv")
    assert t["grain_id"].tolist() == [0, 1] and t["phi1"].tolist() == [0.1, 1.0]
    assert isinstance(t, pd.DataFrame)


# --------------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------------

def test_dispatch_errors(tmp_path):
    ve = make_ve("cubic")
    with pytest.raises(ValueError, match=r"unsupported suffix '.xyz'; supported: .dream3d, .h5"):
        io.save(tmp_path / "v.xyz", ve)
    with pytest.raises(ValueError, match="load_tiff_stack"):
        io.load(tmp_path / "v.tif")
    io.write_shard(tmp_path / "two.h5", {"a": ve, "b": ve}, provenance={})
    with pytest.raises(ValueError, match="holds 2 VEs.*read_shard"):
        io.load(tmp_path / "two.h5")
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "missing.npz")
