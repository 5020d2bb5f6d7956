"""Measured VE statistics on hand-built periodic geometries with closed-form answers."""

from __future__ import annotations

import json

import damask
import numpy as np
import pytest
from scipy import integrate
from scipy.special import ndtr

from micropipe.ve import stats
from micropipe.ve import texture as tex
from micropipe.ve.generator import GeneratorConfig, generate
from micropipe.ve.volume import VolumeElement


def make_ve(grain_ids: np.ndarray, euler: np.ndarray | None = None, spacing: float = 0.5,
            lattice: str = "cF") -> VolumeElement:
    g = np.asarray(grain_ids, dtype=np.int32)
    n = int(g.max()) + 1
    e = np.zeros((n, 3)) if euler is None else np.asarray(euler, dtype=float)
    return VolumeElement(grain_ids=g, euler=e, phase=np.zeros(n, dtype=np.int32),
                         spacing=np.full(3, spacing), lattice=lattice)


def ellipsoid(cells, centre, semi_axes, rotation=None) -> np.ndarray:
    """Grain 1 = voxels whose centres lie in the (periodically wrapped) ellipsoid; grain 0 elsewhere."""
    rotation = np.eye(3) if rotation is None else rotation
    x = np.indices(cells).reshape(3, -1).T + 0.5
    d = x - centre
    d -= np.asarray(cells) * np.round(d / np.asarray(cells))
    local = d @ rotation  # coordinates along the ellipsoid axes (columns of rotation)
    inside = np.sum((local / np.asarray(semi_axes)) ** 2, axis=1) <= 1.0
    return inside.reshape(cells).astype(np.int32)


@pytest.mark.parametrize("corner", [(32.0, 32.0, 32.0), (0.0, 0.0, 0.0), (63.0, 5.0, 60.0)])
def test_box_grain_across_the_faces_has_box_moments(corner):
    """A 5 x 7 x 9 voxel box: centroid at its centre, variance n**2/12 per axis, whatever the wrap."""
    cells = (64, 64, 64)
    g = np.zeros(cells, dtype=np.int32)
    lo = np.asarray(corner, dtype=int)
    idx = [np.arange(lo[k], lo[k] + n) % cells[k] for k, n in enumerate((5, 7, 9))]
    g[np.ix_(*idx)] = 1
    s = stats.grain_statistics(make_ve(g, spacing=0.5))
    assert s["volume_voxels"][1] == 315
    assert s["esd"][1] == pytest.approx((6 / np.pi * 315 * 0.125) ** (1 / 3))
    np.testing.assert_allclose(s["centroid"][1], np.mod((lo + np.array([2.5, 3.5, 4.5])) * 0.5, 32.0))
    np.testing.assert_allclose(s["second_moment"][1], np.diag(np.array([25, 49, 81]) / 12 * 0.25), atol=1e-12)
    np.testing.assert_allclose(s["axis_ratio"][1], [1, 7 / 5, 9 / 5])
    assert not s["spans_box"][1].any()


@pytest.mark.parametrize("centre", [(32, 32, 32), (1, 62, 3)])
def test_ellipsoid_semi_axes_directions_and_ratios(centre):
    rot = damask.Rotation.from_Euler_angles([30, 40, 50], degrees=True).as_matrix()
    g = ellipsoid((64, 64, 64), np.asarray(centre, float), (14.0, 7.0, 5.0), rot)
    s = stats.grain_statistics(make_ve(g, spacing=1.0))
    np.testing.assert_allclose(s["semi_axes"][1], [14, 7, 5], rtol=0.03)
    np.testing.assert_allclose(s["principal_ratio"][1], [2.8, 1.4, 1.0], rtol=0.04)
    cos = np.abs(np.sum(s["principal_directions"][1] * rot, axis=0))  # column k vs ellipsoid axis k
    assert np.all(cos > 0.99)
    assert s["esd"][1] == pytest.approx(2 * (14 * 7 * 5) ** (1 / 3), rel=0.02)


def test_axis_aligned_ellipsoid_axis_ratio():
    g = ellipsoid((64, 48, 48), np.array([2.0, 24.0, 46.0]), (16.0, 8.0, 8.0))
    s = stats.grain_statistics(make_ve(g))
    np.testing.assert_allclose(s["axis_ratio"][1], [2, 1, 1], rtol=0.03)


def test_laminate_spans_box_neighbours_intercepts():
    """Three layers along x (thickness 4, 6, 6 voxels): every pair meets (periodic), intercept along x = 16/3."""
    g = np.zeros((16, 8, 8), dtype=np.int32)
    g[4:10] = 1
    g[10:] = 2
    ve = make_ve(g, spacing=0.5)
    s = stats.grain_statistics(ve)
    np.testing.assert_array_equal(s["spans_box"], [[False, True, True]] * 3)
    np.testing.assert_array_equal(stats.neighbour_pairs(g), [[0, 1], [0, 2], [1, 2]])
    np.testing.assert_array_equal(s["n_neighbours"], [2, 2, 2])
    intercept = stats.mean_intercept_length(ve)
    assert intercept[0] == pytest.approx(16 / 3 * 0.5)
    assert np.all(np.isinf(intercept[1:]))


@pytest.mark.parametrize(("lattice", "a", "b", "omega"), [("cF", (0, 0, 0), (0, 45, 0), 45.0),
                                                           ("hP", (0, 0, 0), (60, 0, 0), 0.0)])
def test_misorientation_distribution_of_a_bicrystal(lattice, a, b, omega):
    g = np.zeros((8, 8, 8), dtype=np.int32)
    g[:, :, 4:] = 1
    ve = make_ve(g, np.radians([a, b]), lattice=lattice)
    np.testing.assert_allclose(stats.misorientation_distribution(ve), [omega], atol=1e-6)


def test_random_mdf_reference_is_mackenzie():
    omega = stats.random_mdf_reference("cF", 5000, rng_seed=1)
    assert omega.shape == (5000,)
    assert omega.mean() == pytest.approx(40.74, abs=0.6)
    assert omega.max() <= 62.8 + 0.05
    assert np.array_equal(omega, stats.random_mdf_reference("cF", 5000, rng_seed=1))
    assert stats.random_mdf_reference("hP", 2000, rng_seed=1).max() <= 93.84 + 0.05


def test_texture_statistics_counts_grains_and_volume():
    g = np.zeros((10, 10, 10), dtype=np.int32)
    g[:, :, 6:] = 1
    g[:, :, 9:] = 2
    ideal = np.radians(tex.TEXTURES["goss"])
    off = tex.wrap_euler(ideal + np.radians([0.0, 10.0, 0.0]))
    ve = make_ve(g, np.stack([ideal, ideal, off]))
    t = stats.texture_statistics(ve, "goss", 2.0)
    np.testing.assert_allclose(t["misorientation_deg"], [0, 0, 10], atol=1e-5)
    assert t["threshold_deg"] == 6.0
    assert t["fraction_within"] == pytest.approx(2 / 3)
    assert t["volume_fraction_within"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="texture.*'random'"):
        stats.texture_statistics(ve, "random", 2.0)


@pytest.mark.parametrize(("sigma", "cut"), [(0.1, 5.0), (0.3, 1.5), (0.5, 3.0)])
def test_esd_pdf_is_normalised_and_truncated(sigma, cut):
    c = GeneratorConfig(esd_sigma=sigma, esd_min_cutoff=cut, esd_max_cutoff=cut)
    lo, hi = c.esd_bounds
    x = np.linspace(lo, hi, 20001)
    pdf = stats.esd_pdf(c, x)
    assert integrate.trapezoid(pdf, x) == pytest.approx(1.0, rel=1e-4)
    assert np.all(stats.esd_pdf(c, np.array([lo * 0.99, hi * 1.01])) == 0)
    # truncated log-normal mean: esd_mean (Phi(b - sigma) - Phi(-a - sigma)) / (Phi(b) - Phi(-a))
    mean = c.esd_mean * (ndtr(cut - sigma) - ndtr(-cut - sigma)) / (ndtr(cut) - ndtr(-cut))
    assert integrate.trapezoid(x * pdf, x) == pytest.approx(mean, rel=1e-4)


def test_esd_pdf_rejects_zero_sigma():
    with pytest.raises(ValueError, match="esd_sigma"):
        stats.esd_pdf(GeneratorConfig(esd_sigma=0.0), np.array([5.78]))


def test_summarize_is_json_and_compares_with_targets():
    c = GeneratorConfig(cells=32, esd_mean=2.73, texture="copper", second_phase_fraction=0.2)
    ves = [generate(c, rng_seed=s) for s in range(2)]
    summary = stats.summarize(ves, c)
    json.dumps(summary)
    assert summary["n_ve"] == 2
    g = summary["grains"]
    assert g["min"] <= g["mean"] <= g["max"] and g["expected"] == pytest.approx(c.expected_grains)
    assert abs(summary["esd"]["relative_error"]) < 0.05
    assert summary["sigma_ln_esd"]["target"] == 0.1
    np.testing.assert_allclose(summary["axis_ratio"]["measured"], [1, 1, 1], atol=0.1)
    assert summary["axis_ratio"]["target"] == [1, 1, 1]
    assert summary["texture"]["fraction_within"] >= 0.95
    assert summary["mdf"]["mean_deg"] < 10  # neighbours share the copper component
    assert summary["mdf"]["random_reference_mean_deg"] == pytest.approx(40.74, abs=0.6)
    assert summary["second_phase_fraction"]["measured_mean"] == pytest.approx(0.2, abs=0.05)
    with pytest.raises(ValueError, match="at least one VE"):
        stats.summarize([], c)
