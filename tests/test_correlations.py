"""1- and 2-point correlations and the eq. (34) errors: closed forms, invariants, brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from micropipe.metrics import correlations as corr
from micropipe.ve.twophase import _ball, sphere_volumes


def _random_binary(shape, fraction=0.3, seed=0):
    return (np.random.default_rng(seed).random(shape) < fraction).astype(np.uint8)


def _brute_force_p2(v: np.ndarray) -> np.ndarray:
    out = np.empty(v.shape)
    for s in itertools.product(*(range(n) for n in v.shape)):
        out[s] = np.mean(v * np.roll(v, shift=tuple(-k for k in s), axis=(0, 1, 2)))
    return out


# --------------------------------------------------------------------------------------------------
# p1, p2
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 6, 7), (4, 4, 4), (3, 8, 5)])
def test_fft_p2_equals_brute_force(shape):
    v = _random_binary(shape, seed=sum(shape))
    np.testing.assert_allclose(corr.p2(v), _brute_force_p2(v), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_p2_at_zero_is_p1_and_symmetric(seed):
    v = _random_binary((3, 9, 10, 11), fraction=0.1 + 0.2 * seed, seed=seed)
    m = corr.p2(v)
    np.testing.assert_allclose(m[..., 0, 0, 0], corr.p1(v), atol=1e-12)
    np.testing.assert_allclose(corr.p1(v), v.reshape(3, -1).mean(axis=1))
    # p2(s) = p2(-s): index i along an axis of N is the shift i and i - N.
    mirrored = np.roll(m[..., ::-1, ::-1, ::-1], shift=1, axis=(-3, -2, -1))
    np.testing.assert_allclose(m, mirrored, atol=1e-12)
    r, curve = corr.p2_radial(v)
    np.testing.assert_allclose(curve[..., 0], corr.p1(v), atol=1e-12)
    assert r[0] == 0 and curve.shape == (3, 5)  # r_max = min(9, 10, 11) // 2 = 4


@pytest.mark.parametrize("shift", [(1, 0, 0), (3, -5, 7), (15, 16, 31)])
def test_translation_invariance(shift):
    v = sphere_volumes(2, rng_seed=3).volumes
    rolled = np.roll(v, shift, axis=(1, 2, 3))
    np.testing.assert_allclose(corr.p2(rolled), corr.p2(v), atol=1e-12)
    np.testing.assert_allclose(corr.p2_radial(rolled)[1], corr.p2_radial(v)[1], atol=1e-12)


def test_single_sphere_matches_two_sphere_overlap_volume():
    R, L = 8.0, 40
    v = np.zeros((L, L, L), dtype=np.uint8)
    v[_ball(np.array([L / 2 + 0.3, L / 2 + 0.1, L / 2 + 0.7]), R, v.shape)] = 1
    r, curve = corr.p2_radial(v, r_max=int(2 * R) + 3)
    V_sphere = 4.0 / 3.0 * math.pi * R ** 3
    V_overlap = np.where(r <= 2 * R, V_sphere * (1 - 3 * r / (4 * R) + r ** 3 / (16 * R ** 3)), 0.0)
    expected = V_overlap / L ** 3
    # Voxelization and shell binning: errors of order 1/R of the peak value.
    np.testing.assert_allclose(curve, expected, atol=0.035 * expected[0])
    assert np.all(curve[r > 2 * R + 1] == pytest.approx(0.0, abs=1e-12))
    _, axes = corr.p2_axes(v, r_max=int(2 * R) + 3)
    np.testing.assert_allclose(axes, np.broadcast_to(expected, axes.shape), atol=0.05 * expected[0])


def test_p2_tends_to_p1_squared_for_random_spheres():
    # Boolean model (independent centres) at low fraction: p2(r > 2R) = p1² in expectation.
    s = sphere_volumes(24, shape=(32, 32, 32), radius=2.0, volume_fraction=0.05, overlap=True, rng_seed=11)
    r, curve = corr.p2_radial(s.volumes)
    far = curve[:, r >= 8].mean()
    assert far == pytest.approx(np.mean(s.volume_fractions ** 2), rel=0.05)
    assert curve[:, 0].mean() == pytest.approx(s.volume_fractions.mean(), rel=1e-12)


def test_p2_axes_are_entries_of_the_map():
    v = _random_binary((2, 8, 10, 12), seed=5)
    m = corr.p2(v)
    r, axes = corr.p2_axes(v, r_max=7)
    assert axes.shape == (2, 3, 8)
    np.testing.assert_allclose(axes[:, 0], m[:, :8, 0, 0])
    np.testing.assert_allclose(axes[:, 1], m[:, 0, :8, 0])
    np.testing.assert_allclose(axes[:, 2], m[:, 0, 0, :8])


def test_radial_shells_are_means_of_the_map():
    v = _random_binary((6, 7, 8), seed=9)
    m = corr.p2(v)
    lengths = corr.shift_lengths(v.shape)
    r, curve = corr.p2_radial(v)
    for k in r.astype(int):
        shell = np.floor(lengths + 0.5) == k
        assert curve[k] == pytest.approx(m[shell].mean(), abs=1e-12)


def test_numpy_and_torch_agree_and_batches_do_not_matter():
    v = sphere_volumes(5, rng_seed=1).volumes
    r, a = corr.p2_radial(v, batch_size=2)
    _, b = corr.p2_radial(torch.from_numpy(v))
    assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
    np.testing.assert_allclose(a, b.numpy(), atol=1e-12)
    _, c = corr.p2_radial(v, dtype=torch.float32)
    np.testing.assert_allclose(a, c, atol=1e-6)
    _, single = corr.p2_radial(v[2])
    np.testing.assert_allclose(single, a[2], atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    v = sphere_volumes(4, rng_seed=2).volumes
    _, cpu = corr.p2_radial(v)
    _, gpu = corr.p2_radial(torch.from_numpy(v).cuda())
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, atol=1e-12)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"volumes": np.zeros((4, 4))}, "volumes"),
    ({"volumes": np.full((4, 4, 4), np.nan)}, "finite"),
    ({"volumes": np.zeros((4, 4, 4)), "r_max": -1}, "r_max"),
    ({"volumes": np.zeros((4, 4, 4)), "batch_size": 0}, "batch_size"),
])
def test_bad_correlation_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        corr.p2_radial(**kwargs)


# --------------------------------------------------------------------------------------------------
# eq. (34)
# --------------------------------------------------------------------------------------------------


def test_errors_vanish_for_identical_sets():
    s = sphere_volumes(6, rng_seed=4)
    p1 = corr.p1(s.volumes)
    _, p2r = corr.p2_radial(s.volumes)
    assert corr.E_p1(p1, p1, baseline="paired") == 0.0
    assert corr.E_p2(p2r, p2r, baseline="paired") == 0.0
    assert corr.E_C11([3.0, 4.0], [3.0, 4.0], baseline="paired") == 0.0
    # Mean baseline: zero when every sample equals the training mean ...
    assert corr.E_C11([2.0, 2.0, 2.0], [1.0, 3.0]) == 0.0
    # ... and the training set against itself gives its own scatter, the floor of the metric.
    floor = corr.E_p1(p1, p1)
    assert floor == pytest.approx(np.mean(np.abs(p1 - p1.mean())) / p1.mean())


@pytest.mark.parametrize("scale", [0.5, 0.9, 1.02, 1.5])
@pytest.mark.parametrize("baseline", ["mean", "paired"])
def test_errors_scale_with_relative_deviation(scale, baseline):
    ref = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    assert corr.E_p2(scale * ref, ref, baseline=baseline) == pytest.approx(abs(scale - 1))
    assert corr.E_p1(scale * ref[:, 1], ref[:, 1], baseline=baseline) == pytest.approx(abs(scale - 1))
    assert corr.E_C11(scale * ref[:, 2], ref[:, 2], baseline=baseline) == pytest.approx(abs(scale - 1))


def test_error_is_mean_of_per_sample_relative_errors():
    # eq. (34): E = 1/n sum_i ||b_i - x_i|| / ||b_i||, baseline b from the training set.
    values = np.array([1.1, 0.7, 1.0])
    reference = np.array([0.9, 1.1])  # mean 1.0
    assert corr.E_p1(values, reference) == pytest.approx((0.1 + 0.3 + 0.0) / 3)
    assert corr.E_p1(values[:2], reference, baseline="paired") == pytest.approx((0.2 / 0.9 + 0.4 / 1.1) / 2)
    curves = np.array([[3.0, 4.0], [0.0, 0.0]])
    assert corr.E_p2(curves, np.array([[3.0, 4.0]])) == pytest.approx((0.0 + 1.0) / 2)
    np.testing.assert_allclose(corr.relative_errors(curves, np.array([[3.0, 4.0]])), [0.0, 1.0])


@pytest.mark.parametrize(("func", "values", "reference", "kwargs", "match"), [
    (corr.E_p1, np.ones((3, 2)), np.ones(3), {}, "p1_values"),
    (corr.E_p2, np.ones((3, 4)), np.ones((3, 5)), {}, "per-sample shape"),
    (corr.E_C11, np.ones(3), np.ones(2), {"baseline": "paired"}, "paired"),
    (corr.E_C11, np.ones(3), np.ones(3), {"baseline": "median"}, "baseline"),
    (corr.E_C11, np.ones(3), np.zeros(3), {}, "zero norm"),
    (corr.E_C11, np.ones(3), np.array([1.0, np.nan]), {}, "finite"),
    (corr.E_C11, np.ones(3), np.array([]), {}, "n >= 1"),
])
def test_bad_error_input(func, values, reference, kwargs, match):
    with pytest.raises(ValueError, match=match):
        func(values, reference, **kwargs)
