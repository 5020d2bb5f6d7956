"""FFT elastic homogenization against closed forms, plus the projection's invariants and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from micropipe import cli
from micropipe.crystal import tensors
from micropipe.device import pick_device
from micropipe.spectral import elastic, grid
from micropipe.ve.twophase import overlapping_spheres

ISO = tensors.isotropic_stiffness(E=[1.0, 10.0], nu=[0.3, 0.2])
CUBIC = np.stack([ISO[0], tensors.cubic_stiffness(10.0, 6.0, 3.0)])


def C_bar(phases, C_phases, **kw):
    return elastic.homogenize(elastic.StiffnessField.from_phases(phases, C_phases), **kw)


# ------------------------------------------------------------------------------------------- tensors
def test_notation_round_trips():
    rng = np.random.default_rng(0)
    A = rng.random((4, 6, 6))
    assert np.allclose(tensors.voigt_from_mandel(tensors.mandel_from_voigt(A)), A)
    T = rng.random((4, 3, 3))
    T = T + np.swapaxes(T, -1, -2)
    v = tensors.to_mandel(T)
    assert np.allclose(tensors.from_mandel(v), T)
    assert np.allclose((v * v).sum(-1), (T * T).sum((-1, -2)))  # orthonormal: eps:eps = eps_M . eps_M
    assert torch.allclose(tensors.to_mandel(torch.as_tensor(T)), torch.as_tensor(v))


def test_isotropic_constructors_agree():
    E, nu = 210.0, 0.3
    lam, mu = tensors.lame(E, nu)
    assert np.allclose(tensors.isotropic_stiffness(E=E, nu=nu), tensors.isotropic_stiffness(lam=lam, mu=mu))
    K, G = tensors.isotropic_part(tensors.isotropic_stiffness(E=E, nu=nu))
    assert np.allclose((K, G), tensors.bulk_shear(E, nu))
    S = np.linalg.inv(tensors.voigt_from_mandel(tensors.isotropic_stiffness(E=E, nu=nu)))  # Voigt compliance
    assert math.isclose(1 / S[0, 0], E) and math.isclose(-S[0, 1] / S[0, 0], nu)


@pytest.mark.parametrize("angle", [math.pi / 2, 2 * math.pi])
def test_rotation_invariance(angle):
    c, s = math.cos(angle), math.sin(angle)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    for C in (ISO[0], CUBIC[1], tensors.hexagonal_stiffness(160, 90, 66, 181, 46)):
        assert np.allclose(tensors.rotate_stiffness(C, R), C)
    Q = tensors.rotation_mandel(np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0.0]]))
    assert np.allclose(Q @ Q.T, np.eye(6))


# ---------------------------------------------------------------------------------------------- grid
@pytest.mark.parametrize("cells", [(4, 4, 4), (6, 8, 5), (8, 1, 6), (5, 7, 3)])
def test_projection_is_a_real_orthogonal_projector(cells):
    gen = torch.Generator().manual_seed(0)
    n = grid.directions(cells)
    x, y = (torch.randn(2, 3, 3, *cells, dtype=torch.float64, generator=gen) for _ in range(2))
    x, y = x + x.transpose(1, 2), y + y.transpose(1, 2)
    Px = grid.project_symmetric(grid.rfft(x), n)
    assert torch.allclose(grid.project_symmetric(Px, n), Px, atol=1e-12)  # idempotent
    px = grid.irfft(Px, cells)
    py = grid.irfft(grid.project_symmetric(grid.rfft(y), n), cells)
    assert torch.allclose(grid.rfft(px), Px, atol=1e-12)  # Hermitian: real fields stay real
    assert math.isclose(float((px * y).sum()), float((x * py).sum()), rel_tol=1e-12)  # self-adjoint
    assert float(px.mean((-3, -2, -1)).abs().max()) < 1e-13  # zero mean
    mandel = tensors.to_mandel(x.movedim((1, 2), (-2, -1))).movedim(-1, 1)
    want = tensors.to_mandel(px.movedim((1, 2), (-2, -1))).movedim(-1, 1)
    got = grid.irfft(grid.project_symmetric_mandel(grid.rfft(mandel), n), cells)
    assert torch.allclose(got, want, atol=1e-12)
    G = grid.project_gradient(grid.rfft(x), n)
    assert torch.allclose(grid.project_gradient(G, n), G, atol=1e-12)


def test_projection_keeps_compatible_fields():
    cells = (8, 6, 4)
    gen = torch.Generator().manual_seed(1)
    u_hat = grid.rfft(torch.randn(3, *cells, dtype=torch.float64, generator=gen))
    xi = grid.wave_vectors(cells)
    grad = u_hat[:, None] * xi[None, :] * 2j * math.pi  # exact gradient of the trigonometric interpolant
    n = grid.directions(cells)
    keep = (n != 0).any(0)  # the zeroed mixed-Nyquist frequencies carry no compatible field
    eps = 0.5 * (grad + grad.transpose(0, 1)) * keep
    assert torch.allclose(grid.project_symmetric(eps, n), eps, atol=1e-10)


@pytest.mark.parametrize("cells", [(6, 8, 5), (8, 4, 6)])
def test_green_operator_inverts_the_reference_medium_on_compatible_fields(cells):
    # the preconditioner of elastic.solve: Gamma0 [P (C0 : eps)] = eps for every compatible eps
    gen = torch.Generator().manual_seed(2)
    n = grid.directions(cells)
    lam0, mu0 = 1.7, 0.6
    C0 = torch.as_tensor(tensors.isotropic_stiffness(lam=lam0, mu=mu0))
    eps = grid.irfft(grid.project_symmetric_mandel(grid.rfft(torch.randn(2, 6, *cells, dtype=torch.float64,
                                                                         generator=gen)), n), cells)
    tau_hat = grid.project_symmetric_mandel(grid.rfft(torch.einsum("ij,bj...->bi...", C0, eps)), n)
    back = grid.irfft(grid.green_isotropic_mandel(tau_hat, n, lam0, mu0), cells)
    assert torch.allclose(back, eps, atol=1e-12)
    # Mandel form = tensor form (Moulinec & Suquet)
    x = torch.randn(3, 3, *cells, dtype=torch.float64, generator=gen)
    x = x + x.transpose(0, 1)
    want = tensors.to_mandel(grid.irfft(grid.green_isotropic(grid.rfft(x), n, lam0, mu0), cells)
                             .movedim((0, 1), (-2, -1))).movedim(-1, 0)
    mandel = tensors.to_mandel(x.movedim((0, 1), (-2, -1))).movedim(-1, 0)
    got = grid.irfft(grid.green_isotropic_mandel(grid.rfft(mandel), n, lam0, mu0), cells)
    assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("cells, size, h", [((8, 8, 8), (2.0, 2.0, 2.0), 0.25), ((8, 8, 4), (1.0, 1.0, 1.0), 0.125)])
def test_divergence_rms_is_damasks_measure(cells, size, h):
    """DAMASK_grid's equilibrium measure for P_i3 = a_i sin(2 pi z / L_z): div P_i = a_i (2 pi / L_z) cos(...),
    per voxel edge (times h, the middle edge) its RMS is |a| (2 pi h / L_z) / sqrt(2); Nyquist and the
    average do not count."""
    z = torch.arange(cells[2], dtype=torch.float64) * size[2] / cells[2]
    a = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    P = torch.zeros(2, 3, 3, *cells, dtype=torch.float64)
    P[0, :, 2] = a[:, None, None, None] * torch.sin(2 * math.pi * z / size[2])
    P[1] = 7.0  # uniform: divergence-free
    P[1, 0, 0] += torch.tensor([(-1.0) ** i for i in range(cells[0])], dtype=torch.float64)[:, None, None]  # Nyquist
    d2 = grid.paired(grid.divergence_vectors(cells, size))
    got = grid.divergence_rms(torch.view_as_real(grid.rfft(P)), d2, cells)
    want = float(torch.linalg.vector_norm(a)) * 2 * math.pi * h / size[2] / math.sqrt(2)
    torch.testing.assert_close(got, torch.tensor([want, 0.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_reference_medium_is_the_geometric_mean():
    C = tensors.isotropic_stiffness(E=np.array([1.0, 100.0]), nu=np.array([0.2, 0.35]))
    field = elastic.StiffnessField.from_phases(np.array([[[[0, 1]]]]), C)
    K, G = tensors.isotropic_part(C)
    lam0, mu0 = elastic.reference_medium(field)
    assert mu0 == pytest.approx(math.sqrt(G[0] * G[1])) and lam0 + 2 / 3 * mu0 == pytest.approx(math.sqrt(K[0] * K[1]))
    general = elastic.StiffnessField.from_field(np.stack([C[0], C[1]], -1)[:, :, None, None])
    assert elastic.reference_medium(general) == pytest.approx((lam0, mu0))


# ------------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("C", [ISO[1], CUBIC[1]], ids=["isotropic", "cubic"])
def test_homogeneous_medium_is_exact(C):
    h = C_bar(np.zeros((6, 5, 4), np.uint8), C[None])
    assert np.allclose(h.C[0], C, rtol=1e-14, atol=0) and h.iterations.max() == 0
    field = np.broadcast_to(C[:, :, None, None, None], (6, 6, 4, 4, 4))
    h = elastic.homogenize(elastic.StiffnessField.from_field(field), fields=True)
    assert np.allclose(h.C[0], C, rtol=1e-14, atol=0)
    assert torch.allclose(h.strain.mean((-3, -2, -1))[0], torch.eye(6, dtype=torch.float64))


@pytest.mark.parametrize("normal", [0, 1, 2])
@pytest.mark.parametrize("cells, layers", [(16, 5), (9, 4), (8, 1)])
@pytest.mark.parametrize("C_phases", [ISO, CUBIC, tensors.isotropic_stiffness(E=[1.0, 1e4], nu=[0.3, 0.3])],
                         ids=["iso", "cubic", "contrast1e4"])
def test_laminate(normal, cells, layers, C_phases):
    phases = np.zeros((cells,) * 3, np.uint8)
    phases[(slice(None),) * normal + (slice(0, layers),)] = 1
    f = [1 - layers / cells, layers / cells]
    h = C_bar(phases, C_phases)
    exact = elastic.laminate_stiffness(C_phases, f, normal)
    assert np.abs(h.C[0] - exact).max() <= 1e-6 * np.abs(exact).max()
    if C_phases is ISO:  # shear moduli: in-plane Voigt average, out-of-plane Reuss average
        two_mu = ISO[:, 3, 3]
        in_plane = {0: 3, 1: 4, 2: 5}[normal]
        out = [i for i in (3, 4, 5) if i != in_plane]
        assert math.isclose(h.C[0, in_plane, in_plane], np.dot(f, two_mu), rel_tol=1e-6)
        for i in out:
            assert math.isclose(h.C[0, i, i], 1 / np.dot(f, 1 / two_mu), rel_tol=1e-6)


@pytest.mark.parametrize("contrast", [10.0, 1e4, 1e-4])
def test_random_spheres_symmetric_bounded(contrast):
    phases = overlapping_spheres(16, 8, 0.17, rng_seed=0)
    E, nu = [1.0, contrast], [0.3, 0.25]
    C_phases = tensors.isotropic_stiffness(E=E, nu=nu)
    h = C_bar(phases, C_phases, tol=1e-8)
    C = h.C[0]
    assert (h.residual <= 1e-8).all()
    assert np.abs(C - C.T).max() <= 1e-6 * np.abs(C).max()
    C = 0.5 * (C + C.T)
    assert np.linalg.eigvalsh(C).min() > 0
    f = [1 - phases.mean(), phases.mean()]
    voigt = np.einsum("p,pij->ij", f, C_phases)
    reuss = np.linalg.inv(np.einsum("p,pij->ij", f, np.linalg.inv(C_phases)))
    tol = 1e-8 * np.abs(C).max()
    assert np.linalg.eigvalsh(voigt - C).min() >= -tol and np.linalg.eigvalsh(C - reuss).min() >= -tol
    K, G = tensors.isotropic_part(C)
    hs = elastic.hashin_shtrikman(E, nu, f)
    assert hs["K"][0] < K < hs["K"][1] and hs["G"][0] < G < hs["G"][1]


def test_grid_refinement_converges():
    C_phases = tensors.isotropic_stiffness(E=[1.0, 10.0], nu=[0.3, 0.3])
    results = []
    for cells in (8, 16, 32):  # a cube inclusion of half the edge: the same geometry on every grid
        phases = np.zeros((cells,) * 3, np.uint8)
        phases[cells // 4:3 * cells // 4, cells // 4:3 * cells // 4, cells // 4:3 * cells // 4] = 1
        results.append(C_bar(phases, C_phases).C[0])
    d1, d2 = np.abs(results[1] - results[0]).max(), np.abs(results[2] - results[1]).max()
    assert d2 < 0.6 * d1, (d1, d2)


def test_batch_equals_single_volumes():
    a, b = overlapping_spheres(8, 4, 0.2, rng_seed=1), overlapping_spheres(8, 4, 0.2, rng_seed=2)
    both = C_bar(np.stack([a, b]), ISO)
    assert np.allclose(both.C[0], C_bar(a, ISO).C[0], rtol=1e-12, atol=1e-12)
    assert np.allclose(both.C[1], C_bar(b, ISO).C[0], rtol=1e-12, atol=1e-12)


def test_fields_and_general_loads():
    phases = overlapping_spheres(8, 4, 0.25, rng_seed=3)
    h = C_bar(phases, CUBIC, fields=True)
    assert h.strain.shape == h.stress.shape == (1, 6, 6, 8, 8, 8)
    E = np.array([[0.01, -0.002, 0.0, 0.003, 0.0, 0.001]])
    sol = elastic.solve(elastic.StiffnessField.from_phases(phases, CUBIC), E)
    want = h.C[0] @ E[0]  # both solves reach tol 1e-8: the error is relative to the stress's size, not per component
    assert np.allclose(sol.stress.mean((-3, -2, -1))[0, 0].numpy(), want, rtol=0, atol=1e-7 * np.abs(want).max())
    assert np.allclose(h.C_voigt(), tensors.voigt_from_mandel(h.C))


def _true_residual(field, h):
    """max over load cases of ||P[C : eps]||_2 / ||C : E||_2, recomputed from the returned float64 strain with
    the tensor-form projection (not the solver's traction operators)."""
    cells = field.cells
    n = grid.directions(cells)
    stress = field.apply(h.strain)
    P = grid.project_symmetric(grid.rfft(tensors.from_mandel(stress.movedim(2, -1)).movedim((-2, -1), (2, 3))), n)
    Pr = grid.irfft(P, cells)
    E = h.strain.mean((-3, -2, -1))[..., None, None, None].expand_as(h.strain)
    return (torch.linalg.vector_norm(Pr.flatten(-5), dim=-1) /
            torch.linalg.vector_norm(field.apply(E).flatten(-4), dim=-1)).max().item()


@pytest.mark.parametrize("contrast", [1e-3, 1e3])
def test_mixed_precision_reaches_the_tolerance_of_double(contrast):
    phases = overlapping_spheres(16, 8, 0.17, rng_seed=5)
    field = elastic.StiffnessField.from_phases(phases, tensors.isotropic_stiffness(E=[1.0, contrast], nu=[0.3, 0.25]))
    mixed = elastic.homogenize(field, tol=1e-8, fields=True)
    double = elastic.homogenize(field, tol=1e-8, fields=True, precision="double")
    assert mixed.strain.dtype == torch.float64
    assert _true_residual(field, mixed) <= 1e-8 and _true_residual(field, double) <= 1e-8
    exact = elastic.homogenize(field, tol=1e-12, precision="double").C
    # the same residual does not mean the same C-bar error: measured 7e-8 (mixed) and 2e-8 (double) at 1e3
    for h in (mixed, double):
        assert np.abs(h.C - exact).max() <= 1e-6 * np.abs(exact).max()
    assert mixed.iterations.max() <= 1.2 * double.iterations.max()


def test_mixed_precision_falls_back_to_double_when_float32_stalls(monkeypatch):
    phases = overlapping_spheres(8, 4, 0.25, rng_seed=3)
    want = C_bar(phases, ISO, precision="double")
    cg = elastic._cg

    def stalled(stiffness, ops, *args):  # a float32 correction that corrects nothing
        d = cg(stiffness, ops, *args)
        return torch.zeros_like(d) if ops.dtype == torch.float32 else d

    monkeypatch.setattr(elastic, "_cg", stalled)
    got = C_bar(phases, ISO)
    assert (got.residual <= 1e-8).all()
    assert np.abs(got.C - want.C).max() <= 1e-7 * np.abs(want.C).max()


def test_groups_of_pairs_equal_one_batch(monkeypatch):
    phases = np.stack([overlapping_spheres(8, 4, 0.2, rng_seed=s) for s in (1, 2)])
    field = elastic.StiffnessField.from_phases(phases, ISO)
    assert elastic._groups(field, 6, "mixed") == [(0, 2, 0, 6)]
    whole = C_bar(phases, ISO)
    case = 6 * 8 ** 3 * 4  # bytes of one float32 Mandel field
    monkeypatch.setattr(elastic, "CHUNK_BYTES", 6 * case)
    assert elastic._groups(field, 6, "mixed") == [(0, 1, 0, 6), (1, 2, 0, 6)]
    monkeypatch.setattr(elastic, "CHUNK_BYTES", 4 * case)
    assert elastic._groups(field, 6, "mixed") == [(0, 1, 0, 4), (0, 1, 4, 6), (1, 2, 0, 4), (1, 2, 4, 6)]
    split = C_bar(phases, ISO)
    assert np.allclose(split.C, whole.C, rtol=0, atol=1e-12 * np.abs(whole.C).max())
    assert np.array_equal(split.iterations, whole.iterations)


def test_fft_in_chunks_equals_one_call(monkeypatch):
    x = torch.randn(3, 2, 5, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).transpose(0, 1)
    whole = grid.rfft(x)
    monkeypatch.setattr(grid, "FFT_CHUNK_BYTES", 2 * 5 * 6 * 8 * 8)  # two fields per call
    assert torch.allclose(grid.rfft(x), whole, rtol=0, atol=1e-13)
    assert torch.allclose(grid.irfft(whole, (5, 6, 8)), x, rtol=0, atol=1e-13)
    assert grid.rfft(x).shape == whole.shape == (2, 3, 5, 6, 5)


def test_bad_precision():
    with pytest.raises(ValueError, match="invalid precision 'half'; expected one of mixed, double"):
        C_bar(overlapping_spheres(8, 4, 0.2, rng_seed=1), ISO, precision="half")


def test_not_converged_is_an_error():
    with pytest.raises(RuntimeError, match="max_iter=2"):
        C_bar(overlapping_spheres(8, 4, 0.2, rng_seed=1), ISO, max_iter=2)


@pytest.mark.slow
def test_random_spheres_32_contrast_1e4_hashin_shtrikman():
    phases = overlapping_spheres(32, 10, 0.15, rng_seed=4)
    E, nu = [1.0, 1e4], [0.3, 0.3]
    h = C_bar(phases, tensors.isotropic_stiffness(E=E, nu=nu))
    K, G = tensors.isotropic_part(0.5 * (h.C[0] + h.C[0].T))
    hs = elastic.hashin_shtrikman(E, nu, [1 - phases.mean(), phases.mean()])
    assert hs["K"][0] < K < hs["K"][1] and hs["G"][0] < G < hs["G"][1]


# ------------------------------------------------------------------------------------------ devices
def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="invalid device 'tpu'"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_cuda_matches_cpu():
    phases = np.stack([overlapping_spheres(16, 6, 0.2, rng_seed=s) for s in range(3)])
    cpu = C_bar(phases, CUBIC)
    gpu = elastic.homogenize(elastic.StiffnessField.from_phases(phases, CUBIC, device="cuda"))
    assert np.allclose(gpu.C, cpu.C, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("E, nu, match", [
    ([1.0, -2.0], [0.3, 0.3], "field 'E': phase 1 has E=-2.0"),
    ([1.0, 0.0], [0.3, 0.3], "field 'E': phase 1 has E=0.0"),
    ([1.0, 2.0], [0.3, 0.5], "field 'nu': phase 1 has nu=0.5"),
    ([1.0, 2.0], [-1.0, 0.3], "field 'nu': phase 0 has nu=-1.0"),
    ([1.0, 2.0, 3.0], [0.3, 0.3, 0.3], "field 'E': got 3 value.*2 phase"),
    ([1.0, 2.0], [0.3], "field 'nu': got 1 value"),
])
def test_bad_moduli(E, nu, match):
    with pytest.raises(ValueError, match=match):
        elastic.phase_stiffness(np.array([[[0, 1]]]), E, nu)


def test_bad_volumes():
    grey = np.random.default_rng(0).random((4, 4, 4))
    with pytest.raises(ValueError, match="field 'phases': expected integer phase labels.*threshold"):
        elastic.phase_labels(grey)
    assert set(np.unique(elastic.phase_labels(grey, threshold=0.5))) == {0, 1}
    with pytest.raises(ValueError, match=r"expected labels in \[0, 255\], got \[-1"):
        elastic.phase_labels(np.full((2, 2, 2), -1))
    with pytest.raises(ValueError, match="3D array"):
        elastic.phase_labels(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="without gaps"):
        elastic.phase_stiffness(np.array([[[0, 2]]]), [1, 2, 3], [0.3] * 3)


# ------------------------------------------------------------------------------------ CLI, component
def test_cli_homogenize(tmp_path, capsys):
    phases = np.zeros((8, 8, 8), np.int32)
    phases[:, :, :3] = 1
    np.save(tmp_path / "lam.npy", phases)
    assert cli.main(["homogenize", str(tmp_path / "lam.npy"), "--E", "1,10", "--nu", "0.3,0.2",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    exact = tensors.voigt_from_mandel(elastic.laminate_stiffness(ISO, [5 / 8, 3 / 8], 2))
    assert out["convention"] == "Voigt" and np.allclose(out["C"], exact, rtol=1e-6)
    assert len(out["iterations"]) == 6 and max(out["residual"]) <= 1e-8
    assert cli.main(["homogenize", str(tmp_path / "lam.npy"), "--E", "1,10", "--nu", "0.3,0.2"]) == 0
    assert "Voigt" in capsys.readouterr().out
    assert cli.main(["homogenize", str(tmp_path / "lam.npy"), "--E", "1", "--nu", "0.3,0.2"]) == 2
    assert "field 'E': got 1 value" in capsys.readouterr().err


def test_component(tmp_path):
    from kfp import dsl

    from components.homogenize import homogenize

    phases = np.zeros((8, 8, 8), np.uint8)
    phases[:4] = 1
    np.save(tmp_path / "vol.npy", phases)
    (tmp_path / "vol").write_bytes((tmp_path / "vol.npy").read_bytes())  # KFP artifact: no suffix
    out = dsl.Artifact(uri=str(tmp_path / "C.json"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    volume = dsl.Dataset(uri=str(tmp_path / "vol"))
    for a in (out, metrics, volume):
        a.path = a.uri  # local paths for python_func
    got = homogenize.python_func(volume=volume, E=[1.0, 10.0], nu=[0.3, 0.2], stiffness=out, metrics=metrics,
                                 device="cpu")
    data = json.loads((tmp_path / "C.json").read_text())
    exact = tensors.voigt_from_mandel(elastic.laminate_stiffness(ISO, [0.5, 0.5], 0))
    assert np.allclose(data["C_voigt"], exact, rtol=1e-6) and got.iterations >= 1
