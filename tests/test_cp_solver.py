"""Built-in spectral crystal-plasticity solver: closed forms, an independent integrator and DAMASK's own results."""

import dataclasses
from pathlib import Path

import damask
import numpy as np
import pytest
import torch

from micropipe.crystal import elastic, shipped_material
from micropipe.crystal.loadcase import load_loadcase, uniaxial_tension_z
from micropipe.crystal.material import load_material, load_phase
from micropipe.crystal.numerics import Numerics
from micropipe.spectral import cp
from micropipe.spectral.constitutive import Phenopowerlaw
from micropipe.spectral.elastic import StiffnessField, homogenize
from micropipe.spectral.tensors import voigt_from_mandel

REFS = Path(__file__).resolve().parents[2] / "shared" / "refs" / "damask"
TIGHT = Numerics(eps_abs_P=1e-3, eps_rel_P=1e-12, eps_rel_div=1e-9)


def _ref_case(name: str) -> Path:
    case = REFS / name
    if not case.is_dir():
        pytest.skip(f"reference case {case} not found (refs/damask is shipped next to the repository)")
    return case


def test_cube_single_crystal_matches_damask_grid():
    """DAMASK_grid's a_Cu_cube_8, run on its own geom.vti, material.yaml and load.yaml unchanged."""
    case = _ref_case("a_Cu_cube_8")
    geom = damask.GeomGrid.load(case / "geom.vti")
    (r,) = cp.solve(geom.material, load_material(case / "material.yaml"), load_loadcase(case / "load.yaml"),
                    size=geom.size)
    ref = np.genfromtxt(case / "curve.csv", delimiter=",", names=True)
    assert r.converged, r.reason
    np.testing.assert_allclose(r.time, ref["time_s"], rtol=1e-12)
    np.testing.assert_allclose(r.F[:, 2, 2], ref["F_zz"], rtol=1e-12)
    rel = np.abs(r.sigma[1:, 2, 2] - ref["sigma_zz_Pa"][1:]) / ref["sigma_zz_Pa"][1:]
    # DAMASK meets P_xx = P_yy = 0 only to its tolerance (264 Pa at increment 1); measured <= 1.1e-5.
    assert rel.max() < 5e-5, rel
    np.testing.assert_allclose(r.F[:, 0, 0], ref["F_xx"], rtol=1e-7)


def _goss() -> np.ndarray:
    return damask.Rotation.from_Euler_angles([0.0, 45.0, 0.0], degrees=True).as_quaternion()


_CUTS_BACK = pytest.mark.xfail(strict=True, reason=(
    "known gap (issue 4): the local (S, xi) Newton iteration fails at the first yield of non-cube orientations, "
    "so the increment is cut back and its time discretization differs from the single-step integrator's"))


@pytest.mark.parametrize("O", [np.array([1.0, 0.0, 0.0, 0.0]),
                               pytest.param(_goss(), marks=_CUTS_BACK),
                               pytest.param(damask.Rotation.from_random(rng_seed=7).as_quaternion(),
                                            marks=_CUTS_BACK)],
                         ids=["cube", "goss", "random"])
def test_homogeneous_single_crystal_equals_material_point(O):
    """A single crystal on a homogeneous grid is the independently integrated material point (tests/mp_reference)."""
    from mp_reference import integrate

    phase = load_phase(shipped_material("Cu"))
    lc = uniaxial_tension_z(strain=0.004, increments=8)
    (r,) = cp.solve_orientations(phase, np.zeros((2, 2, 2), int), O[None], lc, numerics=TIGHT)
    ref = integrate(phase, O, lc)
    assert r.converged, r.reason
    np.testing.assert_allclose(r.F, ref["F"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.sigma[1:, 2, 2], ref["sigma"][1:, 2, 2], rtol=1e-6)


def test_consistent_tangent_matches_finite_differences():
    """dP/dF of the converged step; without hardening the resistances are constant, so the tangent is exact."""
    phase = load_phase(shipped_material("Cu"))
    phase = dataclasses.replace(phase, plastic=dataclasses.replace(phase.plastic, h_0_sl_sl=(0.0,)))
    m = Phenopowerlaw(phase)
    V = 3
    O = torch.tensor(damask.Rotation.from_random(V, rng_seed=2).as_matrix())
    old = m.initial_state(O)
    dt = torch.full((V,), 0.5, dtype=torch.float64)
    F = torch.tensor(np.diag([0.99976, 0.99975, 1.0005]))[None].repeat(V, 1, 1)
    F[:, 0, 1] = 1e-5
    u = m.update(F, old, dt)
    assert bool(u.ok.all())
    K_fd = torch.zeros_like(u.K)
    h = 1e-8
    for k in range(3):
        for l in range(3):  # noqa: E741
            Fp, Fm = F.clone(), F.clone()
            Fp[:, k, l] += h
            Fm[:, k, l] -= h
            up = m.update(Fp, old, dt, guess=u.state, tangent=False)
            um = m.update(Fm, old, dt, guess=u.state, tangent=False)
            K_fd[:, :, :, k, l] = (up.P - um.P) / (2 * h)
    err = (u.K - K_fd).abs().amax() / K_fd.abs().amax()
    assert err < 1e-5, float(err)


def test_elastic_polycrystal_equals_fft_homogenization():
    """Loading far below the slip resistance: the CP solver's stress is that of the FFT elastic homogenization."""
    phase = load_phase(shipped_material("Cu"))
    plastic = dataclasses.replace(phase.plastic, xi_0_sl=(1e15,), xi_inf_sl=(2e15,))
    phase = dataclasses.replace(phase, plastic=plastic)
    rng = np.random.default_rng(3)
    grains = rng.integers(0, 6, size=(6, 6, 6))
    q = damask.Rotation.from_random(6, rng_seed=4).as_quaternion()
    eps = 1e-6
    lc = uniaxial_tension_z(strain=eps, rate=1e-3, increments=1)
    (r,) = cp.solve_orientations(phase, grains, q, lc, numerics=Numerics(eps_rel_div=1e-10, eps_abs_P=1e-6,
                                                                           eps_rel_P=1e-12))
    assert r.converged, r.reason
    C_grain = elastic.rotate_to_sample(phase.stiffness(notation="mandel"), q, notation="mandel")
    C_field = np.moveaxis(C_grain[grains], (-2, -1), (0, 1))
    C = voigt_from_mandel(homogenize(StiffnessField.from_field(C_field), tol=1e-10).C[0])
    # Uniaxial stress along z, no shear strain: eliminate the free normal strains.
    e_xy = -np.linalg.solve(C[:2, :2], C[:2, 2]) * eps
    sigma_zz = C[2, 2] * eps + C[2, :2] @ e_xy
    assert r.sigma[1, 2, 2] == pytest.approx(sigma_zz, rel=2e-5)
    np.testing.assert_allclose(r.F[1, [0, 1], [0, 1]] - 1.0, e_xy, rtol=2e-4)


def test_bad_material_ids_name_the_missing_entries():
    case = _ref_case("a_Cu_cube_8")
    mat = load_material(case / "material.yaml")
    with pytest.raises(ValueError, match=r"material ids 3 in the grid have no entry in material.yaml"):
        cp.solve(np.full((2, 2, 2), 3), mat, uniaxial_tension_z(increments=1))


def test_increments_follow_damask_geometric_progression():
    from micropipe.crystal.loadcase import loadcase_from_config

    lc = loadcase_from_config({"solver": {"mechanical": "spectral_basic"}, "loadstep": [{
        "boundary_conditions": {"mechanical": {"dot_F": [[0, 0, 0], [0, 0, 0], [0, 0, 1e-3]]}},
        "discretization": {"t": 7.0, "N": 3, "r": 2.0}}]})
    incs = list(cp.increments(lc))
    np.testing.assert_allclose([i.t1 - i.t0 for i in incs], [1.0, 2.0, 4.0])
