"""Crystallography of micropipe.crystal: slip/twin systems, Schmid factors, interaction tables, stiffness."""

from __future__ import annotations

import damask
import numpy as np
import pytest

from micropipe.crystal import elastic, lattice

C_A_MG = 1.62350
CA = {"cF": None, "cI": None, "hP": C_A_MG}
R6 = 1.0 / np.sqrt(6.0)


@pytest.mark.parametrize(("lat", "N_sl", "N_tw"), [("cF", (12, 6), (12,)), ("cI", (12, 12, 24), (12,)),
                                                  ("hP", (3, 3, 6, 12, 6), (6, 6, 6, 6))])
def test_counts_per_family(lat, N_sl, N_tw):
    assert lattice.N_max(lat, "slip") == N_sl and len(lattice.SLIP_FAMILIES[lat]) == len(N_sl)
    assert lattice.N_max(lat, "twin") == N_tw and len(lattice.TWIN_FAMILIES[lat]) == len(N_tw)
    d, n = lattice.slip_systems(lat, c_a=CA[lat])
    assert d.shape == n.shape == (sum(N_sl), 3)


@pytest.mark.parametrize("lat", ["cF", "cI", "hP"])
@pytest.mark.parametrize("mode", ["slip", "twin"])
def test_systems_unit_and_orthogonal(lat, mode):
    d, n = (lattice.slip_systems if mode == "slip" else lattice.twin_systems)(lat, c_a=CA[lat])
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("ni,ni->n", d, n), 0.0, atol=1e-12)
    P = lattice.schmid_tensors(lat, **({"N_sl": lattice.N_max(lat)} if mode == "slip"
                                       else {"N_tw": lattice.N_max(lat, "twin")}), c_a=CA[lat])
    np.testing.assert_allclose(np.trace(P, axis1=1, axis2=2), 0.0, atol=1e-12)  # isochoric
    sym = 0.5 * (P + P.transpose(0, 2, 1))
    np.testing.assert_allclose(np.einsum("nij,nij->n", sym, sym), 0.5, atol=1e-12)  # |sym(d⊗n)|² = 1/2
    ref = lattice.crystal(lat, CA[lat]).Schmid(**({"N_slip": "*"} if mode == "slip" else {"N_twin": "*"}))
    np.testing.assert_allclose(P, ref, atol=1e-14)


def test_first_systems_as_damask_documents():
    s2, s3 = np.sqrt(2.0), np.sqrt(3.0)
    d, n = lattice.slip_systems("cF", [1])  # crystal.f90: AC(d) [0 1 -1](1 1 1)
    np.testing.assert_allclose(d[0], [0, 1 / s2, -1 / s2])
    np.testing.assert_allclose(n[0], [1 / s3, 1 / s3, 1 / s3])
    d, n = lattice.slip_systems("cI", [1])  # [1 -1 1](0 1 1)
    np.testing.assert_allclose(d[0], np.array([1, -1, 1]) / s3)
    np.testing.assert_allclose(n[0], np.array([0, 1, 1]) / s2)
    d, n = lattice.slip_systems("hP", [1], c_a=C_A_MG)  # basal [2-1-10](0001): a_1 along x, c along z
    np.testing.assert_allclose(d[0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(n[0], [0, 0, 1], atol=1e-12)
    # damask.Crystal.Schmid docstring examples
    np.testing.assert_allclose(np.round(lattice.schmid_tensors("cF", N_sl=[12])[3], 3),
                               [[0, 0, 0], [0.408, 0.408, -0.408], [0.408, 0.408, -0.408]])
    np.testing.assert_allclose(np.round(lattice.schmid_tensors("hP", N_sl=[0, 0, 0, 0, 1], c_a=521.03 / 320.91), 3),
                               [[[-0.112, -0.193, -0.138], [-0.193, -0.335, -0.238], [0.362, 0.628, 0.447]]])


@pytest.mark.parametrize("lat", ["cF", "cI", "hP"])
def test_sample_frame_matches_damask_orientation(lat):
    kw = {"a": 1.0, "c": C_A_MG} if lat == "hP" else {}
    O = damask.Orientation.from_random(shape=(2, 3), lattice=lat, rng_seed=3, **kw)
    P = lattice.schmid_tensors_sample(O.quaternion, lat, N_sl=lattice.N_max(lat), c_a=CA[lat])
    assert P.shape == (2, 3, sum(lattice.N_max(lat)), 3, 3)
    np.testing.assert_allclose(P, np.moveaxis(O.Schmid(N_slip="*"), 0, -3), atol=1e-12)


def test_schmid_factors_textbook():
    """Cube and Goss under z tension (Hosford, Mechanical Behavior of Materials, ch. 4: m = 1/sqrt(6) on 8
    {111}<110> systems for <100> and on 4 for <110> tension); bcc {110}<111> for <100>: 1/sqrt(6) on 8."""
    cube = np.array([1.0, 0, 0, 0])
    m = np.abs(lattice.schmid_factors(cube, "cF", N_sl=[12]))
    assert m.max() == pytest.approx(R6) and np.isclose(m, R6).sum() == 8 and np.isclose(m, 0).sum() == 4
    goss = damask.Rotation.from_Euler_angles([0, 45, 0], degrees=True)
    m = np.abs(lattice.schmid_factors(goss, "cF", N_sl=[12]))
    assert m.max() == pytest.approx(R6) and np.isclose(m, R6).sum() == 4 and np.isclose(m, 0).sum() == 8
    m = np.abs(lattice.schmid_factors(cube, "cI", N_sl=[12]))
    assert m.max() == pytest.approx(R6) and np.isclose(m, R6).sum() == 8


def test_basal_schmid_factor_45_degrees():
    # c axis and the a_1 slip direction both at 45 deg to the load axis: m = cos 45 cos 45 = 0.5
    O = damask.Rotation.from_axis_angle([0, 1, 0, 45], degrees=True)
    m = np.abs(lattice.schmid_factors(O, "hP", N_sl=[3], c_a=C_A_MG))
    assert m.max() == pytest.approx(0.5)
    # rotating about the load axis changes nothing
    spin = damask.Rotation.from_axis_angle([0, 0, 1, 37], degrees=True)
    np.testing.assert_allclose(np.sort(np.abs(lattice.schmid_factors(O * spin, "hP", N_sl=[3], c_a=C_A_MG))),
                               np.sort(m), atol=1e-12)


def test_twin_shear_sign_convention():
    s = lattice.characteristic_shear_twin("hP", [6, 0, 6], C_A_MG)
    expected = [abs(3 - C_A_MG**2) / (np.sqrt(3) * C_A_MG)] * 6 + [abs(4 * C_A_MG**2 - 9) / (np.sqrt(48) * C_A_MG)] * 6
    np.testing.assert_allclose(s, expected)
    # {10.2} extension twins of Mg shear under c-axis tension: positive resolved shear for a crystal at cube
    assert (lattice.schmid_factors(np.array([1.0, 0, 0, 0]), "hP", N_tw=[6], c_a=C_A_MG) > 0).all()


# DAMASK's tables tell apart two interaction types per lattice by a sign convention that crystal symmetry does not
# preserve (cF: glissile junctions I/II = types 5/6); merged, every table is invariant under the lattice's
# symmetry operations applied to damask's systems, which cross-checks the copied tables against damask's order.
CONVENTION_PAIRS = {"cF": (5, 6), "cI": (21, 22), "hP": (64, 65)}
KINDS = {"cF": ("sl-sl", "sl-tw", "tw-tw"), "cI": ("sl-sl", "sl-tw", "tw-tw"),
         "hP": ("sl-sl", "sl-tw", "tw-sl", "tw-tw")}


def _permutations(lat, mode):
    P = lattice.schmid_tensors(lat, **({"N_sl": lattice.N_max(lat)} if mode == "slip"
                                       else {"N_tw": lattice.N_max(lat, "twin")}), c_a=CA[lat])
    ops = lattice.crystal(lat, CA[lat]).symmetry_operations.as_matrix()
    Q = np.einsum("gia,nab,gjb->gnij", ops, P, ops)
    diff = np.minimum(np.abs(Q[:, :, None] - P[None, None]).max((-1, -2)),
                      np.abs(Q[:, :, None] + P[None, None]).max((-1, -2)))
    assert np.allclose(diff.min(-1), 0.0)
    return diff.argmin(-1)


@pytest.mark.parametrize(("lat", "kind"), [(lat, k) for lat, ks in KINDS.items() for k in ks])
def test_interaction_tables_invariant_under_symmetry(lat, kind):
    T = lattice.interaction_types(lat, kind).copy()
    if kind == "sl-sl":
        a, b = CONVENTION_PAIRS[lat]
        T[T == b] = a
    modes = {"sl": "slip", "tw": "twin"}
    reacting, acting = (modes[k] for k in kind.split("-"))
    for pr, pa in zip(_permutations(lat, reacting), _permutations(lat, acting), strict=True):
        np.testing.assert_array_equal(T[np.ix_(pr, pa)], T)


def test_interaction_matrix_matches_table_and_cu_is_symmetric():
    h = [1, 1, 5.123, 0.574, 1.123, 1.123, 1]
    H = lattice.interaction_matrix("cF", h, N_sl=[12])
    T = lattice.interaction_types("cF")[:12, :12]
    np.testing.assert_array_equal(H, np.asarray(h)[T - 1])
    np.testing.assert_array_equal(np.diag(H), 1.0)
    np.testing.assert_array_equal(H, H.T)  # glissile I and II have the same value for Cu
    assert lattice.interaction_types("cF", "tw-tw").tolist() == lattice.interaction_types("cF", "tw-tw").T.tolist()


def test_interaction_matrix_selects_first_systems_per_family():
    values = np.arange(1, 70, dtype=float)
    H = lattice.interaction_matrix("hP", values, N_sl=[3, 3, 6, 0, 6])
    T = lattice.interaction_types("hP")
    used = np.r_[0:12, 24:30]
    np.testing.assert_array_equal(H, T[np.ix_(used, used)])
    H = lattice.interaction_matrix("hP", np.arange(1, 21.0), kind="tw-sl", N_sl=[3, 3, 6, 0, 6], N_tw=[6, 0, 6])
    assert H.shape == (12, 18)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: lattice.interaction_matrix("cF", [1, 1, 1], N_sl=[12]), "h_sl-sl: 3 values.*up to 7"),
    (lambda: lattice.interaction_types("cF", "tw-sl"), "no twin-by-slip"),
    (lambda: lattice.slip_systems("cF", [13]), "N_sl: family 1 has 13"),
    (lambda: lattice.slip_systems("cF", [12, 6, 1]), "N_sl: 3 families"),
    (lambda: lattice.slip_systems("hP", [3]), "c/a: required"),
    (lambda: lattice.slip_systems("hP", [3], c_a=2.5), "c/a: 2.5 outside"),
    (lambda: lattice.slip_systems("cF", [3], c_a=1.6), "c/a: given"),
    (lambda: lattice.slip_systems("tI", [3]), "unknown lattice 'tI'"),
])
def test_bad_lattice_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_isotropic_cubic_stiffness_is_rotation_invariant():
    C_11, C_12 = 200e9, 100e9
    C = elastic.stiffness("cF", C_11, C_12, (C_11 - C_12) / 2)
    O = damask.Rotation.from_random(shape=5, rng_seed=0)
    np.testing.assert_allclose(elastic.rotate_to_sample(C, O.quaternion), np.broadcast_to(C, (5, 6, 6)),
                               rtol=0, atol=1e-6 * C_11)


@pytest.mark.parametrize("lat", ["cF", "hP"])
def test_stiffness_invariants_and_positive_definite(lat):
    C_V = elastic.stiffness(lat, 59.3e9, 25.7e9, 16.4e9, *((21.4e9, 61.5e9) if lat == "hP" else ()))
    C_M = elastic.stiffness(lat, 59.3e9, 25.7e9, 16.4e9, *((21.4e9, 61.5e9) if lat == "hP" else ()),
                            notation="mandel")
    np.testing.assert_allclose(C_V[:3, :3], C_M[:3, :3])
    np.testing.assert_allclose(C_V[3:, 3:] * 2, C_M[3:, 3:])
    assert np.linalg.eigvalsh(C_M).min() > 0
    O = damask.Rotation.from_random(shape=4, rng_seed=1)
    C_rot = elastic.rotate_to_sample(C_M, O, notation="mandel")
    np.testing.assert_allclose(np.linalg.eigvalsh(C_rot), np.broadcast_to(np.linalg.eigvalsh(C_M), (4, 6)),
                               rtol=1e-10)
    # rotating back with the inverse orientation recovers the lattice-frame stiffness
    np.testing.assert_allclose(elastic.rotate_to_sample(C_rot[0], ~O[0], notation="mandel"), C_M, atol=1e-3)


def test_hexagonal_stiffness_transversely_isotropic():
    C = elastic.stiffness("hP", 59.3e9, 25.7e9, 16.4e9, 21.4e9, 61.5e9)
    spin = damask.Rotation.from_axis_angle([0, 0, 1, 23], degrees=True)
    np.testing.assert_allclose(elastic.rotate_to_sample(C, spin), C, atol=1e-3)
    assert C[5, 5] == pytest.approx((59.3e9 - 25.7e9) / 2)


def test_stiffness_rotation_consistent_with_schmid_frame():
    """The resolved shear of a sample-frame stress equals that of the lattice-frame stress (same R)."""
    O = damask.Rotation.from_random(rng_seed=7)
    R = lattice.crystal_to_sample(O)
    P_s = lattice.schmid_tensors_sample(O, "cF", N_sl=[12])
    P_c = lattice.schmid_tensors("cF", N_sl=[12])
    sigma_c = np.diag([1.0, 2.0, -0.5])
    sigma_s = R @ sigma_c @ R.T
    np.testing.assert_allclose(np.einsum("nij,ij->n", P_s, sigma_s), np.einsum("nij,ij->n", P_c, sigma_c))


@pytest.mark.parametrize(("args", "match"), [
    (("hP", 1e9, 1e9, 1e9), "needs C_11, C_12, C_13, C_33"),
    (("cF", 1e9, 1e9, 1e9, 1e9, 1e9), "takes C_11, C_12 and C_44 only"),
    (("xx", 1e9, 1e9, 1e9), "unknown lattice"),
])
def test_bad_stiffness_input(args, match):
    with pytest.raises(ValueError, match=match):
        elastic.stiffness(*args)
