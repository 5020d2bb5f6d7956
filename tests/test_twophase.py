"""Two-phase volumes: periodic sphere packings, Latin-hypercube sub-volumes, the synthetic µCT stand-in."""

from __future__ import annotations

import math

import numpy as np
import pytest

from micropipe.metrics.correlations import p2_axes
from micropipe.ve import twophase as tp
from micropipe.ve.io import save_tiff_stack

# --------------------------------------------------------------------------------------------------
# spheres
# --------------------------------------------------------------------------------------------------


def _ball_size(radius: float, centre=(16.0, 16.0, 16.0), shape=(32, 32, 32)) -> int:
    return len(tp._ball(np.asarray(centre), radius, shape)[0])


def _max_ball_size(radius: float) -> int:
    # The voxel count of a ball depends on where its centre sits in the voxel; bound it over a fine grid.
    offsets = np.linspace(0.0, 1.0, 6)
    return max(_ball_size(radius, (16 + a, 16 + b, 16 + c)) for a in offsets for b in offsets for c in offsets)


@pytest.mark.parametrize("overlap", [False, True])
def test_paper_spheres_reach_the_volume_fraction(overlap):
    s = tp.sphere_volumes(20, **tp.PAPER_SPHERES, overlap=overlap, rng_seed=0)
    assert s.volumes.shape == (20, 32, 32, 32) and s.volumes.dtype == np.uint8
    assert set(np.unique(s.volumes)) == {0, 1}
    np.testing.assert_array_equal(s.volume_fractions, s.volumes.reshape(20, -1).mean(axis=1))
    # Stop rule: at most half a sphere's voxel count away from the target.
    tolerance = 0.5 * _max_ball_size(4.0) / 32 ** 3
    assert tolerance < 0.0045
    assert np.all(np.abs(s.volume_fractions - 0.2) <= tolerance)
    assert s.attrs["achieved_volume_fraction_mean"] == pytest.approx(s.volume_fractions.mean())
    assert s.attrs["params"]["overlap"] is overlap


def test_non_overlapping_spheres_are_disjoint_and_periodic():
    s = tp.sphere_volumes(5, rng_seed=7)
    box = np.array([32.0, 32.0, 32.0])
    for vol, centres in zip(s.volumes, s.centres, strict=True):
        for i, c in enumerate(centres):
            others = np.delete(centres, i, axis=0)
            assert tp._min_image_distance(others, c, box).min() > 8.0
        # Disjoint: the inclusion voxels are exactly the sum of the balls, each stamped with periodic wrap.
        sizes = [_ball_size(4.0, c) for c in centres]
        assert int(vol.sum()) == sum(sizes)
        rebuilt = np.zeros_like(vol)
        for c in centres:
            rebuilt[tp._ball(c, 4.0, vol.shape)] = 1
        np.testing.assert_array_equal(rebuilt, vol)


def test_sphere_wraps_across_faces():
    inner = _ball_size(4.0, (16.3, 16.2, 16.1))
    corner = np.zeros((32, 32, 32), dtype=np.uint8)
    corner[tp._ball(np.array([0.3, 0.2, 0.1]), 4.0, corner.shape)] = 1
    assert corner.sum() == inner
    # The same ball seen from the box's centre: rolling by half the box moves it inside.
    rolled = np.roll(corner, (16, 16, 16), axis=(0, 1, 2))
    expected = np.zeros_like(corner)
    expected[tp._ball(np.array([16.3, 16.2, 16.1]), 4.0, corner.shape)] = 1
    np.testing.assert_array_equal(rolled, expected)
    assert _ball_size(4.0, (16.5, 16.5, 16.5)) == sum(1 for x in range(-4, 5) for y in range(-4, 5)
                                                     for z in range(-4, 5) if x * x + y * y + z * z <= 16)


def test_spheres_are_deterministic_and_shardable():
    a = tp.sphere_volumes(4, rng_seed=5)
    b = tp.sphere_volumes(4, rng_seed=5)
    np.testing.assert_array_equal(a.volumes, b.volumes)
    assert not np.array_equal(a.volumes, tp.sphere_volumes(4, rng_seed=6).volumes)
    # Volume i depends on (seed, start + i) only: two shards equal one call.
    tail = tp.sphere_volumes(2, start=2, rng_seed=5)
    np.testing.assert_array_equal(tail.volumes, a.volumes[2:])
    assert a.attrs["seed_entropy"] == "5"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"volume_fraction": 0.0}, "volume_fraction"),
    ({"volume_fraction": 1.0}, "volume_fraction"),
    ({"volume_fraction": float("nan")}, "volume_fraction"),
    ({"volume_fraction": "a"}, "volume_fraction"),
    ({"radius": -1.0}, "radius"),
    ({"radius": 16.0}, "shape"),
    ({"shape": (32, 32)}, "shape"),
    ({"n": 0}, "'n'"),
    ({"min_gap": -1.0}, "min_gap"),
    ({"rng_seed": -3}, "rng_seed"),
    ({"shape": (10, 10, 10), "radius": 2.0, "volume_fraction": 0.6}, "jams"),
])
def test_sphere_bad_input(kwargs, match):
    args = {"n": 1, "rng_seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        tp.sphere_volumes(**args)


# --------------------------------------------------------------------------------------------------
# Latin-hypercube sub-volumes
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large():
    return tp.synthetic_large_volume((96, 80, 72), rng_seed=0)


@pytest.mark.parametrize("n", [1, 7, 16])
def test_lhs_positions_are_stratified(large, n):
    sv = tp.latin_hypercube_subvolumes(large, n, size=32, rng_seed=n)
    assert sv.volumes.shape == (n, 32, 32, 32) and sv.volumes.dtype == np.uint8
    # Exactly one sample per stratum along each axis.
    for axis in range(3):
        np.testing.assert_array_equal(np.sort(np.floor(sv.samples[:, axis] * n)), np.arange(n))
    span = np.array(large.shape) - 32 + 1
    np.testing.assert_array_equal(sv.corners, np.floor(sv.samples * span).astype(int))
    assert sv.corners.min() >= 0 and np.all(sv.corners < span)
    for vol, (x, y, z) in zip(sv.volumes, sv.corners, strict=True):
        np.testing.assert_array_equal(vol, large[x:x + 32, y:y + 32, z:z + 32])


def test_lhs_corners_cover_their_strata(large):
    # With at least as many corner positions as samples, each stratum's corner lies in its interval.
    n, size = 8, 24
    sv = tp.latin_hypercube_subvolumes(large, n, size=size, rng_seed=3)
    span = np.array(large.shape) - size + 1
    for axis in range(3):
        lo = np.floor(np.arange(n) * span[axis] / n)
        hi = np.ceil(np.arange(1, n + 1) * span[axis] / n)
        c = np.sort(sv.corners[:, axis])
        assert np.all((lo <= c) & (c < hi))


def test_lhs_is_deterministic_and_records_fractions(large):
    a = tp.latin_hypercube_subvolumes(large, 5, size=(16, 20, 24), rng_seed=2)
    b = tp.latin_hypercube_subvolumes(large, 5, size=(16, 20, 24), rng_seed=2)
    np.testing.assert_array_equal(a.corners, b.corners)
    np.testing.assert_array_equal(a.volumes, b.volumes)
    assert a.volumes.shape == (5, 16, 20, 24)
    assert a.attrs["volume_fraction_source"] == pytest.approx(0.25, abs=1e-6)
    assert a.attrs["volume_fraction_mean"] == pytest.approx(a.volumes.mean())


def test_lhs_reads_paths_and_thresholds_grey_values(large, tmp_path):
    save_tiff_stack(tmp_path / "scan.tif", large)
    from_file = tp.latin_hypercube_subvolumes(tmp_path / "scan.tif", 4, size=16, rng_seed=1)
    from_array = tp.latin_hypercube_subvolumes(large, 4, size=16, rng_seed=1)
    np.testing.assert_array_equal(from_file.volumes, from_array.volumes)
    assert from_file.attrs["source"].endswith("scan.tif")
    grey = np.where(large == 1, 200, 40).astype(np.uint8)
    np.save(tmp_path / "grey.npy", grey)
    thresholded = tp.latin_hypercube_subvolumes(str(tmp_path / "grey.npy"), 4, size=16, threshold=128, rng_seed=1)
    np.testing.assert_array_equal(thresholded.volumes, from_array.volumes)


def test_lhs_reads_s3(large, tmp_path, s3_server):
    from micropipe import store

    np.save(tmp_path / "scan.npy", large)
    uri = f"s3://{s3_server.make_bucket()}/scans/scan.npy"
    store.put_file(tmp_path / "scan.npy", uri)
    sv = tp.latin_hypercube_subvolumes(uri, 3, size=16, rng_seed=4)
    np.testing.assert_array_equal(sv.volumes, tp.latin_hypercube_subvolumes(large, 3, size=16, rng_seed=4).volumes)


@pytest.mark.parametrize(("volume", "kwargs", "match"), [
    (np.ones((32, 32, 32), dtype=np.uint8), {"size": 16}, r"fraction in \(0, 1\)"),
    (np.zeros((32, 32, 32), dtype=np.uint8), {"size": 16}, r"fraction in \(0, 1\)"),
    (np.arange(32 ** 3).reshape(32, 32, 32) % 7, {"size": 16}, "binary.*threshold="),
    (np.random.default_rng(0).random((32, 32, 32)), {"size": 16}, "binary.*threshold="),
    (np.zeros((32, 32)), {"size": 16}, r"shape \(X, Y, Z\)"),
    (tp.synthetic_large_volume((40, 40, 20), rng_seed=0), {"size": 32}, "does not fit"),
    (tp.synthetic_large_volume((40, 40, 40), rng_seed=0), {"size": (16, 16, 41)}, "does not fit"),
    (tp.synthetic_large_volume((40, 40, 40), rng_seed=0), {"size": 0}, "size"),
    (tp.synthetic_large_volume((40, 40, 40), rng_seed=0), {"size": 16, "n": 0}, "'n'"),
])
def test_lhs_bad_input(volume, kwargs, match):
    args = {"n": 3, "rng_seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        tp.latin_hypercube_subvolumes(volume, **args)


def test_lhs_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        tp.latin_hypercube_subvolumes(tmp_path / "nope.npy", 2, size=8, rng_seed=0)


def test_binarize_threshold_makes_grey_values_usable():
    grey = np.random.default_rng(1).random((16, 16, 16))
    out = tp.binarize(grey, threshold=0.7)
    np.testing.assert_array_equal(out, (grey > 0.7).astype(np.uint8))
    np.testing.assert_array_equal(tp.binarize(grey > 0.5), (grey > 0.5).astype(np.uint8))


# --------------------------------------------------------------------------------------------------
# synthetic large volume
# --------------------------------------------------------------------------------------------------


def test_synthetic_large_volume_is_exact_deterministic_and_anisotropic():
    v = tp.synthetic_large_volume((64, 64, 64), volume_fraction=0.3, rng_seed=1)
    assert v.dtype == np.uint8 and v.shape == (64, 64, 64)
    assert int(v.sum()) == round(0.3 * 64 ** 3)
    np.testing.assert_array_equal(v, tp.synthetic_large_volume((64, 64, 64), volume_fraction=0.3, rng_seed=1))
    assert not np.array_equal(v, tp.synthetic_large_volume((64, 64, 64), volume_fraction=0.3, rng_seed=2))
    # Elongated along x (correlation length 6 vs 2): p2 decays more slowly along x than along y and z.
    _, axes = p2_axes(v, r_max=6)
    assert axes[0, 4] > axes[1, 4] + 0.02 and axes[0, 4] > axes[2, 4] + 0.02
    assert math.isclose(axes[0, 0], 0.3, abs_tol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"volume_fraction": 1.2}, "volume_fraction"),
    ({"correlation_length": (1.0, 2.0)}, "correlation_length"),
    ({"correlation_length": (1.0, 0.0, 2.0)}, "correlation_length"),
    ({"shape": (8, 8, -1)}, "shape"),
])
def test_synthetic_large_volume_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tp.synthetic_large_volume(**{"shape": (16, 16, 16), **kwargs})
