"""Linear-elastic FFT homogenization: effective stiffness of periodic voxel volumes, batched, CPU or CUDA.

Problem: for a macroscopic strain E find the compatible periodic fluctuation ``eps~`` with zero mean such
that ``sigma = C(x) : (E + eps~)`` is in equilibrium.  In Galerkin form (Zeman et al. 2010, Vondřejc et al.
2014, de Geus et al. 2017): ``P[C : eps~] = -P[C : E]`` with P the orthogonal projection onto compatible
symmetric fields (:func:`micropipe.spectral.grid.project_symmetric_mandel`).  The operator ``P C P`` is
symmetric positive definite on compatible fields, so conjugate gradients apply, preconditioned by the
Green operator of an isotropic reference medium (:func:`reference_medium`); iterations grow like
``sqrt(contrast)`` instead of the basic scheme's ``contrast``, and contrasts of 1e4 converge.  The six
unit strains and the volumes are one batch: every (volume, load case) pair has its own CG coefficients.

Conventions: Mandel notation throughout (see :mod:`micropipe.crystal.tensors`); ``Homogenization.C`` is
Mandel, ``Homogenization.C_voigt()`` the Voigt matrix of tensor components.  Stiffness in any stress unit
(the result is in the same unit).  Discretization: trigonometric collocation with the Nyquist handling of
:mod:`micropipe.spectral.grid` (laminates exact).

Convergence criterion, per volume and load case: ``||P[sigma]||_2 / ||C : E||_2 <= tol``, L2 norms over all
voxels and Mandel components: the non-equilibrated part of the stress field relative to the stress of the
unrelaxed (Voigt) field.  It is the true residual, evaluated in float64 on the float64 solution.

Precision: by default (``precision="mixed"``) the CG iterations run in float32 and their result is a
correction to the float64 solution (iterative refinement): the float64 residual of the corrected solution is
recomputed and, while above ``tol``, the next float32 solve corrects it again.  Each float32 solve reduces its
own residual by 1e-4, well inside float32's reach for contrasts up to 1e4, so the iterations add up to 0-11 %
more than a float64 CG's (measured at contrasts 1e-3 to 1e4) while each costs about half.  The residual
tolerance holds as in float64 (``precision="double"``, CG in float64 throughout); if a float32 correction fails
to reduce the residual tenfold the remaining corrections run in float64.  The same residual is not the same
error in C-bar: a restarted CG leaves more of its error in the slow modes, and at contrast 1e3 the C-bar error
measured 2e-5 (mixed) against 3e-6 (double) at tol 1e-6, 7e-8 against 2e-8 at tol 1e-8.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micropipe.crystal.tensors import bulk_shear, isotropic_part, isotropic_stiffness, voigt_from_mandel
from micropipe.device import DTYPE, pick_device
from micropipe.spectral import grid

log = logging.getLogger(__name__)

TOL = 1e-8
"""Default tolerance on the relative equilibrium residual (module docstring)."""
MAX_ITER = 5000
CONVENTION = "Mandel"


# --------------------------------------------------------------------------------------------------
# stiffness fields
# --------------------------------------------------------------------------------------------------

class StiffnessField:
    """Per-voxel stiffness of a batch of B volumes on a grid (X, Y, Z), on one device.

    Either isotropic (Lamé fields ``lam``, ``mu``, shape (B, X, Y, Z): 2 numbers per voxel and a cheap
    product) or general (Mandel matrices ``C``, shape (B, 6, 6, X, Y, Z)).  Build with
    :meth:`from_phases` or :meth:`from_field`.
    """

    def __init__(self, *, lam: torch.Tensor | None = None, mu: torch.Tensor | None = None,
                 C: torch.Tensor | None = None):
        if (C is None) == (lam is None or mu is None):
            raise ValueError("give either lam and mu, or C")
        self.lam, self.mu, self.C = lam, mu, C
        ref = C if C is not None else lam
        self.cells = tuple(ref.shape[-3:])
        self.batch = ref.shape[0]
        self.device, self.dtype = ref.device, ref.dtype

    @classmethod
    def from_phases(cls, phases: Any, C_phases: Any, *, device: torch.device | str | None = None,
                    dtype: torch.dtype = DTYPE) -> StiffnessField:
        """Stiffness from phase labels and one Mandel matrix per phase.

        Parameters
        ----------
        phases : array_like of int, shape (B, X, Y, Z) or (X, Y, Z)
            Phase index per voxel, 0 <= phase < P.
        C_phases : array_like, shape (P, 6, 6)
            Mandel stiffness of each phase (:func:`~micropipe.crystal.tensors.isotropic_stiffness`, ...).
            If every phase is isotropic the cheap isotropic representation is used.
        """
        device = pick_device(device) if not isinstance(device, torch.device) else device
        phases = torch.as_tensor(np.asarray(phases), device=device).long()
        if phases.ndim == 3:
            phases = phases[None]
        C_phases = np.asarray(C_phases, dtype=float)
        if phases.ndim != 4 or C_phases.ndim != 3 or C_phases.shape[1:] != (6, 6):
            raise ValueError(f"expected phases (B, X, Y, Z) and C_phases (P, 6, 6), got {tuple(phases.shape)} "
                             f"and {C_phases.shape}")
        if int(phases.min()) < 0 or int(phases.max()) >= len(C_phases):
            raise ValueError(f"phase labels span [{int(phases.min())}, {int(phases.max())}] but "
                             f"{len(C_phases)} stiffness matrices were given")
        K, G = isotropic_part(C_phases)
        lam = K - 2.0 / 3.0 * G
        if np.allclose(isotropic_stiffness(lam=lam, mu=G), C_phases, rtol=0, atol=1e-12 * np.abs(C_phases).max()):
            table = torch.as_tensor(np.stack([lam, G]), device=device, dtype=dtype)
            return cls(lam=table[0][phases], mu=table[1][phases])
        table = torch.as_tensor(C_phases, device=device, dtype=dtype)
        return cls(C=table[phases].permute(0, 4, 5, 1, 2, 3).contiguous())

    @classmethod
    def from_field(cls, C: Any, *, device: torch.device | str | None = None,
                   dtype: torch.dtype = DTYPE) -> StiffnessField:
        """Stiffness from a per-voxel Mandel field C, shape (B, 6, 6, X, Y, Z) or (6, 6, X, Y, Z)."""
        device = pick_device(device) if not isinstance(device, torch.device) else device
        C = torch.as_tensor(C if isinstance(C, torch.Tensor) else np.array(C, dtype=float), device=device, dtype=dtype)
        if C.ndim == 5:
            C = C[None]
        if C.ndim != 6 or C.shape[1:3] != (6, 6):
            raise ValueError(f"expected a stiffness field (B, 6, 6, X, Y, Z), got {tuple(C.shape)}")
        return cls(C=C)

    def to(self, dtype: torch.dtype) -> StiffnessField:
        """The same field in another floating-point dtype."""
        if self.C is None:
            return StiffnessField(lam=self.lam.to(dtype), mu=self.mu.to(dtype))
        return StiffnessField(C=self.C.to(dtype))

    def select(self, start: int, stop: int) -> StiffnessField:
        """Volumes ``start:stop`` of the batch (views, no copy)."""
        if self.C is None:
            return StiffnessField(lam=self.lam[start:stop], mu=self.mu[start:stop])
        return StiffnessField(C=self.C[start:stop])

    def apply(self, eps: torch.Tensor) -> torch.Tensor:
        """Stress ``C(x) : eps(x)`` of Mandel strain fields (B, L, 6, X, Y, Z) (L load cases); same shape."""
        if self.C is None:
            lam, two_mu = self.lam[:, None, None], 2.0 * self.mu[:, None, None]
            sigma = two_mu * eps
            sigma[:, :, :3] += lam * eps[:, :, :3].sum(2, keepdim=True)
            return sigma
        sigma = self.C[:, None, :, 0] * eps[:, :, 0:1]
        for j in range(1, 6):  # a (B, L, 6, 6, X, Y, Z) product would hold 36 fields at once
            sigma += self.C[:, None, :, j] * eps[:, :, j:j + 1]
        return sigma

    def mean(self) -> torch.Tensor:
        """Volume average of the stiffness, the Voigt upper bound of C-bar, Mandel (B, 6, 6)."""
        if self.C is not None:
            return self.C.mean((-3, -2, -1))
        lam, mu = self.lam.mean((-3, -2, -1)), self.mu.mean((-3, -2, -1))
        C = torch.zeros((self.batch, 6, 6), device=self.device, dtype=self.dtype)
        C[:, :3, :3] = lam[:, None, None]
        C[:, range(6), range(6)] += 2.0 * mu[:, None]
        return C


# --------------------------------------------------------------------------------------------------
# solver
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Solution:
    """Local fields of one Lippmann-Schwinger solve.

    strain, stress : torch.Tensor, shape (B, L, 6, X, Y, Z)
        Mandel strain (dimensionless) and stress (unit of the stiffness) per volume and load case.
    iterations : numpy.ndarray of int, shape (B, L)
        CG iterations (operator applications) per volume and load case.
    residual : numpy.ndarray, shape (B, L)
        Final relative residual ``||P[sigma]|| / ||C : E||``.
    """

    strain: torch.Tensor
    stress: torch.Tensor
    iterations: np.ndarray
    residual: np.ndarray


def reference_medium(stiffness: StiffnessField) -> tuple[float, float]:
    """Isotropic reference medium ``(lam0, mu0)`` of the preconditioner of :func:`solve`.

    Bulk and shear moduli are the geometric means of their smallest and largest values over all voxels (of
    the isotropic part, :func:`~micropipe.crystal.tensors.isotropic_part`, for anisotropic voxels).  For
    isotropic phases the preconditioned operator's eigenvalues then lie in ``[1/sqrt(k), sqrt(k)]`` with
    ``k = max(K_max / K_min, G_max / G_min)``: its condition number is the phase contrast ``k`` itself, where the
    unpreconditioned projection ``P C P`` also carries each phase's ratio ``3K / 2G`` (3.25 at nu = 0.3).
    """
    if stiffness.C is None:
        K, G = stiffness.lam + 2.0 / 3.0 * stiffness.mu, stiffness.mu
    else:
        K, G = isotropic_part(stiffness.C.movedim((1, 2), (-2, -1)))
    K0 = math.sqrt(float(K.min()) * float(K.max()))
    G0 = math.sqrt(float(G.min()) * float(G.max()))
    if not (K0 > 0 and G0 > 0 and math.isfinite(K0) and math.isfinite(G0)):
        raise ValueError(f"stiffness field: isotropic parts must be positive and finite, got K in "
                         f"[{float(K.min()):.4g}, {float(K.max()):.4g}], G in [{float(G.min()):.4g}, "
                         f"{float(G.max()):.4g}]")
    return K0 - 2.0 / 3.0 * G0, G0


PRECISIONS = ("mixed", "double")
REFINE = 1e-4
"""Residual reduction asked of each float32 CG solve under ``precision="mixed"`` (module docstring)."""
MAX_CORRECTIONS = 10
CHUNK_BYTES = 16 * 2**20
"""On the CPU, (volume, load case) pairs are solved in groups whose Mandel field (6 components) stays within
this many bytes: temporaries of that size are reused by the allocator and stay in cache, where one group of
all 36 fields of a 64^3 volume would allocate fresh pages for every temporary (2.7x slower, measured)."""


class _Galerkin:
    """The CG's Fourier-space operators for one grid, reference medium and dtype, on real views."""

    def __init__(self, cells: tuple[int, ...], size: Sequence[float] | None, lam0: float, mu0: float,
                 device: torch.device, dtype: torch.dtype):
        self.cells, self.dtype, self.lam0, self.mu0 = cells, dtype, lam0, mu0
        self.n2 = grid.paired(grid.directions(cells, size, device=device, dtype=dtype))
        weights = grid.rfft_weights(cells, device=device, dtype=dtype) / math.prod(cells)
        self.w2 = weights[:, None].expand(-1, 2).contiguous()
        self.c0 = grid.green_coefficient(lam0, mu0)

    def traction(self, stress: torch.Tensor) -> torch.Tensor:
        """``a = sigma_hat n`` of real Mandel fields (..., 6, X, Y, Z): real view (..., 3, X, Y, Z', 2)."""
        return grid.traction_pairs(torch.view_as_real(grid.rfft(stress)), self.n2)

    def norms(self, a: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(|P tau|^2, <tau, Gamma0 tau>) summed over voxels (Parseval), float64, from a = tau_hat n, q = n . a."""
        a2 = (a.square() * self.w2).sum((-5, -4, -3, -2, -1)).double()
        q2 = (q.square() * self.w2).sum((-4, -3, -2, -1)).double()
        return 2.0 * a2 - q2, a2 / self.mu0 - self.c0 * q2

    def precondition(self, a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``Gamma0 tau`` in real space (..., 6, X, Y, Z) from a = tau_hat n and q = n . a."""
        z = grid.green_pairs(a, q, self.n2, self.lam0, self.mu0)
        return grid.irfft(torch.view_as_complex(z), self.cells)


def _bcast(v: torch.Tensor, like: torch.Tensor, trailing: int) -> torch.Tensor:
    return v.to(like.dtype).reshape(*v.shape, *(1,) * trailing)


def _cg(stiffness: StiffnessField, ops: _Galerkin, a: torch.Tensor, stop: torch.Tensor,
        iterations: torch.Tensor, max_iter: int, scale: torch.Tensor, tol: float) -> torch.Tensor:
    """Preconditioned CG on ``P C P d = r`` for the residual given by its traction ``a`` (real view, consumed).

    Returns the compatible correction d (b, l, 6, X, Y, Z) in ``ops.dtype``; a pair stops once its recurrence
    residual ``|P r|^2`` falls to ``stop`` (float64, (b, l)).  ``iterations`` (b, l) is incremented in place.
    """
    q = grid.normal_pairs(a, ops.n2)
    rr, rz = ops.norms(a, q)
    p = ops.precondition(a, q)
    d = torch.zeros_like(p)
    active = rr > stop
    while bool(active.any()):
        if int(iterations.max()) >= max_iter:
            worst = float((torch.sqrt(rr.clamp_min(0.0)) / scale).max())
            raise RuntimeError(f"FFT solver did not converge in max_iter={max_iter} iterations: relative "
                               f"residual {worst:.3g} > tol={tol:g}; raise max_iter or tol")
        tau = stiffness.apply(p)
        pAp = torch.linalg.vecdot(p.flatten(-4), tau.flatten(-4)).double()  # = <p, P C p>: p is compatible
        alpha = torch.where(active, rz / torch.where(pAp > 0, pAp, torch.ones_like(pAp)), torch.zeros_like(rz))
        d.addcmul_(p, _bcast(alpha, p, 4))
        a.sub_(ops.traction(tau).mul_(_bcast(alpha, p, 5)))
        q = grid.normal_pairs(a, ops.n2)
        rr, rz_new = ops.norms(a, q)
        beta = torch.where(active, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p.mul_(_bcast(beta, p, 4)).add_(ops.precondition(a, q))
        iterations += active.long()
        rz = rz_new
        active = active & (rr > stop)
        if int(iterations.max()) % 100 == 0:
            log.debug("CG iteration %d: max relative residual %.3g", int(iterations.max()),
                      float((torch.sqrt(rr.clamp_min(0.0)) / scale).max()))
    return d


def _solve_group(stiffness: StiffnessField, E: torch.Tensor, ops: dict[torch.dtype, _Galerkin], tol: float,
                 max_iter: int, precision: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Strain, iterations and relative residual of b volumes x l load cases (E: (b, l, 6), float64)."""
    cells = stiffness.cells
    E_field = E[..., None, None, None].expand(*E.shape, *cells)
    stress0 = stiffness.apply(E_field)
    scale = torch.linalg.vector_norm(stress0.flatten(-4), dim=-1).double()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    x = torch.zeros((*E.shape, *cells), device=E.device, dtype=E.dtype)
    iterations = torch.zeros(E.shape[:2], dtype=torch.long, device=E.device)
    inner = torch.float32 if precision == "mixed" else E.dtype
    fields = {E.dtype: stiffness}
    rel = None
    for correction in range(MAX_CORRECTIONS + 1):
        a = ops[E.dtype].traction(stiffness.apply(E_field + x)).neg_()  # of the residual r = -P[C : (E + x)]
        rr, _ = ops[E.dtype].norms(a, grid.normal_pairs(a, ops[E.dtype].n2))
        rel, previous = torch.sqrt(rr.clamp_min(0.0)) / scale, rel
        active = rel > tol
        if not bool(active.any()) or correction == MAX_CORRECTIONS:
            break
        if inner != E.dtype and previous is not None and bool((rel > 0.1 * previous)[active].any()):
            log.debug("float32 correction reduced the residual less than tenfold: continuing in float64")
            inner = E.dtype
        if correction and inner == E.dtype:
            log.debug("CG restart %d: true residual above tol after the recurrence converged", correction)
        if inner not in fields:
            fields[inner] = stiffness.to(inner)
        goal = (tol * scale).square() if inner == E.dtype else torch.maximum(REFINE ** 2 * rr,
                                                                             (0.5 * tol * scale).square())
        stop = torch.where(active, goal, torch.full_like(rr, math.inf))
        x += _cg(fields[inner], ops[inner], a.to(inner), stop, iterations, max_iter, scale, tol).to(E.dtype)
    return E_field + x, iterations, rel


def _groups(stiffness: StiffnessField, L: int, precision: str) -> list[tuple[int, int, int, int]]:
    """(b0, b1, l0, l1) blocks of (volume, load case) pairs solved together (CHUNK_BYTES on the CPU)."""
    B = stiffness.batch
    if stiffness.device.type != "cpu":
        return [(0, B, 0, L)]
    itemsize = 4 if precision == "mixed" else torch.finfo(stiffness.dtype).bits // 8
    per_case = max(1, CHUNK_BYTES // (6 * math.prod(stiffness.cells) * itemsize))
    if per_case >= B * L:
        return [(0, B, 0, L)]
    if per_case >= L:
        step = per_case // L
        return [(b, min(b + step, B), 0, L) for b in range(0, B, step)]
    return [(b, b + 1, l, min(l + per_case, L)) for b in range(B) for l in range(0, L, per_case)]


def solve(stiffness: StiffnessField, E: Any, *, tol: float = TOL, max_iter: int = MAX_ITER,
          size: Sequence[float] | None = None, precision: str = "mixed") -> Solution:
    """Strain and stress fields for prescribed macroscopic strains, preconditioned Galerkin conjugate gradients.

    Conjugate gradients on ``P C P eps~ = -P C E`` (compatible fluctuations, module docstring), preconditioned
    by the Green operator ``Gamma0`` of an isotropic reference medium (:func:`reference_medium`): ``Gamma0`` is
    the inverse of ``P C0 P`` on compatible fields, so the preconditioned operator is ``C0^-1 C`` there and
    its condition number is the phase contrast (Ladecky et al. 2023 call it the reference-material
    preconditioner).  The residual stays in Fourier space, so an iteration costs one forward and one inverse
    FFT of the six Mandel components.

    Parameters
    ----------
    stiffness : StiffnessField
        B volumes.
    E : array_like, shape (L, 6) or (B, L, 6)
        Macroscopic Mandel strains, L load cases per volume.
    tol : float
        Relative residual ``||P[sigma]||_2 / ||C : E||_2`` at which a (volume, load case) stops.
    max_iter : int
        Maximum CG iterations per (volume, load case), all corrections together; exceeding it raises
        ``RuntimeError``.
    size : sequence of 3 float, optional
        Box edge lengths (any unit); default: cubic voxels.
    precision : {'mixed', 'double'}
        CG iterations in float32 refining a float64 solution, or in float64 (module docstring).  The result
        and its residual are float64 either way.

    Raises
    ------
    RuntimeError
        Not converged in ``max_iter`` iterations (the message gives the residual reached).
    """
    if not 0.0 < tol < 1.0:
        raise ValueError(f"invalid tol {tol}; expected 0 < tol < 1")
    if max_iter < 1:
        raise ValueError(f"invalid max_iter {max_iter}; expected >= 1")
    if precision not in PRECISIONS:
        raise ValueError(f"invalid precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    dev, dt, cells = stiffness.device, stiffness.dtype, stiffness.cells
    E = torch.as_tensor(np.asarray(E, dtype=float), device=dev, dtype=dt)
    E = E.expand(stiffness.batch, *E.shape) if E.ndim == 2 else E
    if E.ndim != 3 or E.shape[0] != stiffness.batch or E.shape[-1] != 6:
        raise ValueError(f"expected E (L, 6) or ({stiffness.batch}, L, 6), got {tuple(E.shape)}")
    lam0, mu0 = reference_medium(stiffness)
    ops = {t: _Galerkin(cells, size, lam0, mu0, dev, t) for t in {dt, torch.float32 if precision == "mixed" else dt}}
    strain = torch.empty((*E.shape, *cells), device=dev, dtype=dt)
    iterations = torch.empty(E.shape[:2], dtype=torch.long, device=dev)
    residual = torch.empty(E.shape[:2], dtype=torch.float64, device=dev)
    for b0, b1, l0, l1 in _groups(stiffness, E.shape[1], precision):
        part = stiffness if (b0, b1) == (0, stiffness.batch) else stiffness.select(b0, b1)
        strain[b0:b1, l0:l1], iterations[b0:b1, l0:l1], residual[b0:b1, l0:l1] = _solve_group(
            part, E[b0:b1, l0:l1], ops, tol, max_iter, precision)
    return Solution(strain=strain, stress=stiffness.apply(strain), iterations=iterations.cpu().numpy(),
                    residual=residual.cpu().numpy())


@dataclasses.dataclass(frozen=True)
class Homogenization:
    """Effective stiffness of B volumes.

    C : numpy.ndarray, shape (B, 6, 6)
        Effective stiffness in **Mandel** notation, ``C[b, :, j] = <sigma>`` under the unit Mandel strain
        ``e_j``; unit of the input stiffness.  :meth:`C_voigt` gives Voigt.
    iterations, residual : numpy.ndarray, shape (B, 6)
        CG iterations and final relative residual per volume and load case.
    tol : float
        The tolerance used.
    strain, stress : torch.Tensor, shape (B, 6, 6, X, Y, Z), or None
        Local Mandel fields (volume, load case, component, x, y, z), if requested.
    """

    C: np.ndarray
    iterations: np.ndarray
    residual: np.ndarray
    tol: float
    strain: torch.Tensor | None = None
    stress: torch.Tensor | None = None

    def C_voigt(self) -> np.ndarray:
        """Effective stiffness in Voigt notation (tensor components C_ijkl), shape (B, 6, 6)."""
        return voigt_from_mandel(self.C)

    def to_record(self, index: int | None = None) -> dict[str, Any]:
        """The result as JSON-ready data, the one shape in which every step and the CLI write it.

        ``C_voigt``, ``C_mandel`` (unit of the input stiffness), ``iterations``, ``residual`` and ``tol``, with
        ``order`` naming the component order; of every volume ((B, 6, 6), (B, 6)) or, with ``index``, of one
        ((6, 6), (6,)). :meth:`from_record` reads it back.
        """
        part = slice(None) if index is None else index
        return {"order": "11 22 33 23 13 12", "C_voigt": self.C_voigt()[part].tolist(),
                "C_mandel": np.asarray(self.C)[part].tolist(), "iterations": np.asarray(self.iterations)[part].tolist(),
                "residual": np.asarray(self.residual)[part].tolist(), "tol": float(self.tol)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Homogenization:
        """The result of a :meth:`to_record` record (of one volume or of several; always batched here)."""
        C = np.asarray(record["C_mandel"], float)
        if C.shape[-2:] != (6, 6):
            raise ValueError(f"stiffness record: field 'C_mandel' has shape {C.shape}, expected (..., 6, 6)")
        batch = C.reshape(-1, 6, 6)
        return cls(C=batch, iterations=np.asarray(record["iterations"]).reshape(len(batch), 6),
                   residual=np.asarray(record["residual"], float).reshape(len(batch), 6), tol=float(record["tol"]))


def homogenize(stiffness: StiffnessField, *, tol: float = TOL, max_iter: int = MAX_ITER, fields: bool = False,
               size: Sequence[float] | None = None, precision: str = "mixed") -> Homogenization:
    """Full effective stiffness from the 6 unit Mandel strains (one batch with the volumes).

    Parameters
    ----------
    stiffness : StiffnessField
        B volumes.
    tol, max_iter, size, precision
        As for :func:`solve`.
    fields : bool
        Keep the local strain and stress fields (6 x 2 x 6 x X Y Z numbers per volume).
    """
    sol = solve(stiffness, np.eye(6), tol=tol, max_iter=max_iter, size=size, precision=precision)
    C = sol.stress.mean((-3, -2, -1)).transpose(-1, -2).cpu().numpy()
    log.info("homogenized %d volume(s) %s: %d CG iterations (max over load cases), residual <= %.2g",
             stiffness.batch, "x".join(map(str, stiffness.cells)), int(sol.iterations.max()),
             float(sol.residual.max()))
    return Homogenization(C=C, iterations=sol.iterations, residual=sol.residual, tol=tol,
                          strain=sol.strain if fields else None, stress=sol.stress if fields else None)


# --------------------------------------------------------------------------------------------------
# input validation and volumes
# --------------------------------------------------------------------------------------------------

def phase_stiffness(phases: np.ndarray, E: Sequence[float], nu: Sequence[float]) -> np.ndarray:
    """Validated isotropic Mandel stiffness per phase, shape (P, 6, 6), for labels 0..P-1 in ``phases``.

    Parameters
    ----------
    phases : numpy.ndarray of int
        Phase labels; P = max label + 1 and every label 0..P-1 must occur.
    E, nu : sequence of float, length P
        Young's modulus (> 0, any stress unit) and Poisson's ratio (-1 < nu < 0.5) of each phase.
    """
    present = np.unique(phases)
    P = int(present.max()) + 1
    if len(present) != P:
        raise ValueError(f"field 'phases': labels must be 0..{P - 1} without gaps, got {present.tolist()}")
    for name, values in (("E", E), ("nu", nu)):
        if len(values) != P:
            raise ValueError(f"field '{name}': got {len(values)} value(s) {list(values)} but the volume has "
                             f"{P} phase(s) (labels {present.tolist()}); give one value per phase")
    for i, (e, v) in enumerate(zip(E, nu, strict=True)):
        if not np.isfinite(e) or e <= 0:
            raise ValueError(f"field 'E': phase {i} has E={e}; moduli must be positive and finite")
        if not np.isfinite(v) or not -1.0 < v < 0.5:
            raise ValueError(f"field 'nu': phase {i} has nu={v}; Poisson's ratio must lie in (-1, 0.5)")
    return isotropic_stiffness(E=np.asarray(E, float), nu=np.asarray(nu, float))


def phase_labels(a: Any, source: str = "volume", *, threshold: float | None = None) -> np.ndarray:
    """Phase labels (X, Y, Z), uint8, from an integer label array, or a grey-value array and a threshold.

    With ``threshold`` the labels are ``a > threshold`` (0 or 1).  Without it, non-integer values raise
    ``ValueError`` naming the field and suggesting a threshold.
    """
    a = np.asarray(a)
    if a.ndim != 3 or min(a.shape) < 1:
        raise ValueError(f"{source}: field 'phases': expected a 3D array (X, Y, Z), got shape {a.shape}")
    if threshold is not None:
        if a.dtype.kind not in "iubf" or not np.all(np.isfinite(a)):
            raise ValueError(f"{source}: field 'phases': cannot threshold dtype {a.dtype} or non-finite values")
        return (a > threshold).astype(np.uint8)
    if a.dtype.kind == "b":
        return a.astype(np.uint8)
    if a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a))):
        bad = a.flat[np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))[0]]
        raise ValueError(f"{source}: field 'phases': expected integer phase labels, got value {bad} "
                         f"(dtype {a.dtype}); pass threshold (CLI: --threshold) to binarise a grey-value volume")
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{source}: field 'phases': expected integer phase labels, got dtype {a.dtype}")
    if a.min() < 0 or a.max() > 255:
        raise ValueError(f"{source}: field 'phases': expected labels in [0, 255], got [{a.min()}, {a.max()}]")
    return a.astype(np.uint8)


def load_phases(path: str | Path, *, threshold: float | None = None) -> np.ndarray:
    """Phase labels (X, Y, Z), uint8, of a volume file: ``.npy``, ``.vti``, TIFF stack, ``.dream3d``, ``.npz``.

    ``.vti``: cell data ``phase_ids``, else ``phase``, else ``material``.  ``.dream3d``: cell array
    ``Phases`` (1-based there).  ``threshold`` binarises grey-value ``.npy``/TIFF/``.vti`` volumes.
    """
    from micropipe.ve import io

    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected a volume file (.dream3d, .h5, .npy, .npz, .tif, .vti)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: volume not found")
    if suffix == ".npy":
        a = io.load_array(path, "integer phase labels (X, Y, Z)")
    elif suffix in (".tif", ".tiff"):
        a = io.load_tiff_stack(path)
    elif suffix == ".vti":
        v = io.load_vti_data(path)
        cells = tuple(int(c) - 1 for c in v.vtk_data.GetDimensions())
        labels = v.labels.get("Cell Data", [])
        name = next((n for n in ("phase_ids", "phase", "material") if n in labels), None)
        if name is None:
            raise ValueError(f"{path}: field 'phase_ids' is missing: expected cell data phase_ids, phase or "
                             f"material, found {list(labels)}")
        a = v.get(name).reshape(cells, order="F")
    elif suffix in (".dream3d", ".npz", ".h5", ".hdf5"):
        a = io.load_phase_array(path)
    else:
        raise ValueError(f"{path}: unsupported suffix {suffix!r} for a volume; supported: .dream3d, .h5, .npy, "
                         f".npz, .tif, .tiff, .vti")
    return phase_labels(a, str(path), threshold=threshold)


# --------------------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------------------

def laminate_stiffness(C_phases: Any, fractions: Any, normal: int = 2) -> np.ndarray:
    """Exact effective Mandel stiffness (6, 6) of a laminate of anisotropic layers with normal ``e_normal``.

    In-plane strains and normal/out-of-plane stresses are uniform across the layers; the in-plane
    response averages like Voigt and the normal one like Reuss (Backus 1962).
    """
    C_phases, f = np.asarray(C_phases, float), np.asarray(fractions, float)
    t, s = normal, [a for a in range(3) if a != normal]
    shear_of = {frozenset(p): 3 + k for k, p in enumerate(((1, 2), (0, 2), (0, 1)))}
    n_idx = [t, shear_of[frozenset((s[0], t))], shear_of[frozenset((s[1], t))]]
    a_idx = [s[0], s[1], shear_of[frozenset(s)]]
    Caa, Can = C_phases[:, a_idx][:, :, a_idx], C_phases[:, a_idx][:, :, n_idx]
    Cna, Cnn = C_phases[:, n_idx][:, :, a_idx], C_phases[:, n_idx][:, :, n_idx]
    Cnn_inv = np.linalg.inv(Cnn)
    avg = lambda X: np.einsum("p,p...->...", f, X)  # noqa: E731 - short local average
    S_nn = np.linalg.inv(avg(Cnn_inv))  # sigma_n = S_nn (<eps_n> + <Cnn^-1 Cna> eps_a)
    K = avg(Cnn_inv @ Cna)
    M = avg(Can @ Cnn_inv)
    C = np.zeros((6, 6))
    ix_a, ix_n = np.ix_(a_idx, a_idx), np.ix_(a_idx, n_idx)
    C[ix_a] = avg(Caa - Can @ Cnn_inv @ Cna) + M @ S_nn @ K
    C[ix_n] = M @ S_nn
    C[np.ix_(n_idx, a_idx)] = S_nn @ K
    C[np.ix_(n_idx, n_idx)] = S_nn
    return C


def hashin_shtrikman(E: Sequence[float], nu: Sequence[float], fractions: Sequence[float]) -> dict[str, tuple]:
    """Hashin-Shtrikman bounds on the bulk and shear modulus of a two-phase isotropic composite.

    Returns ``{'K': (lower, upper), 'G': (lower, upper)}`` in the unit of E (Hashin & Shtrikman 1963).
    """
    K, G = bulk_shear(E, nu)
    f = np.asarray(fractions, float)
    lo, hi = (np.argmin(K), np.argmax(K)) if np.argmin(K) == np.argmin(G) else (None, None)
    if lo is None:
        raise ValueError("Hashin-Shtrikman bounds here need the stiffer phase stiffer in both K and G")

    def bound(a: int, b: int) -> tuple[float, float]:  # HS bound with phase a as the reference
        Kb = K[a] + f[b] / (1.0 / (K[b] - K[a]) + 3.0 * f[a] / (3.0 * K[a] + 4.0 * G[a]))
        Gb = G[a] + f[b] / (1.0 / (G[b] - G[a])
                            + 6.0 * f[a] * (K[a] + 2.0 * G[a]) / (5.0 * G[a] * (3.0 * K[a] + 4.0 * G[a])))
        return float(Kb), float(Gb)

    (K_lo, G_lo), (K_hi, G_hi) = bound(lo, hi), bound(hi, lo)
    return {"K": (K_lo, K_hi), "G": (G_lo, G_hi)}


def homogenize_stack(phases: Any, E: Sequence[float], nu: Sequence[float], *, batch_size: int = 8,
                     tol: float = TOL, max_iter: int = MAX_ITER, device: torch.device | str | None = None,
                     precision: str = "mixed") -> Homogenization:
    """Effective stiffness of many two- or more-phase volumes, ``batch_size`` volumes per solve.

    Parameters
    ----------
    phases : array_like of int, shape (B, X, Y, Z)
        Phase labels 0..P-1; a volume need not hold every phase (a generated one may not).
    E, nu : sequence of float, length P
        Isotropic moduli of each phase, validated as in :func:`phase_stiffness`.
    tol, max_iter, device, precision
        As for :func:`solve` and :meth:`StiffnessField.from_phases`.

    Returns
    -------
    Homogenization
        ``C`` (B, 6, 6) Mandel, ``iterations`` and ``residual`` (B, 6), concatenated over the batches.
    """
    phases = np.asarray(phases)
    if phases.ndim != 4 or phases.shape[0] < 1:
        raise ValueError(f"phases: expected shape (B, X, Y, Z) with B >= 1, got {phases.shape}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    C_phases = phase_stiffness(np.arange(len(E)), E, nu)
    if phases.min() < 0 or phases.max() >= len(E):
        raise ValueError(f"phases: labels must lie in [0, {len(E) - 1}] (one E and nu per phase), "
                         f"got [{phases.min()}, {phases.max()}]")
    parts = [homogenize(StiffnessField.from_phases(phases[i:i + batch_size], C_phases, device=device),
                        tol=tol, max_iter=max_iter, precision=precision)
             for i in range(0, len(phases), int(batch_size))]
    return Homogenization(C=np.concatenate([p.C for p in parts]),
                          iterations=np.concatenate([p.iterations for p in parts]),
                          residual=np.concatenate([p.residual for p in parts]), tol=tol)
