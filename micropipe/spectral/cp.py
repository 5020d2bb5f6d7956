"""Built-in spectral crystal-plasticity solver: finite strain, DAMASK phenopowerlaw, mixed boundary conditions.

What it solves
--------------
Quasi-static equilibrium ``div P = 0`` on a periodic grid of material points, each following
:mod:`micropipe.spectral.constitutive` (``F = F_e F_p``, DAMASK's phenopowerlaw), under DAMASK_grid's mixed
macroscopic boundary conditions: every component of the average deformation gradient is either prescribed
(``dot_F``, ``F`` or ``L``) or free, with the matching component of the average first Piola-Kirchhoff stress
prescribed (``P`` or ``dot_P``).  Finite strain throughout; no small-strain shortcut.

How
---
Galerkin (Fourier) discretization of the deformation gradient, as in de Geus et al. (2017, CMAME 318:412):
the unknown ``F`` lies in the space of compatible fields ``F = F_avg + grad u`` with the prescribed average
components fixed.  Let ``Pi`` be the orthogonal projection onto the *variations* of that space -- the gradient
projection of :func:`micropipe.spectral.grid.project_gradient` plus the average restricted to the free
components.  Each increment is solved by Newton's method on ``Pi P(F) = Pi P*`` (``P*`` the prescribed
average stress), with the linear systems ``Pi K Pi dF = -Pi (P - P*)`` (K = dP/dF, the consistent tangent
including the change of the slip resistances in the step) solved by BiCGSTAB to a relative tolerance, in
float32 (inexact Newton; the tangent is not symmetric; it is computed only for iterates a Newton step starts
from).  The material points are solved inexactly too while the global iterate is far from equilibrium: to
:data:`LOCAL_RTOL_FAR` at first, tightening with the residual to ``eps_rel_state``, and an increment that
converges on looser solutions is evaluated once more to ``eps_rel_state`` (the curve is the same to ~1e-7; at
32³ about 11 % fewer local Jacobians per global iteration).  Free average components are unknowns of the same
Newton iteration, so the mixed boundary condition converges with equilibrium.  Steps that increase the residual, or
that a material point cannot follow, are recomputed with Levenberg-Marquardt damping (see :func:`_step`):
at the first yield the undamped step overshoots along the directions of easy slip.  Near equilibrium, where the
corrections shrink only linearly (a few voxels overshooting their solution with every step), the next iterate
is the Anderson mix of the last two Newton steps (:func:`_anderson`).

Convergence of an increment (per volume element), as DAMASK_grid tests it and with its default tolerances: the
RMS over voxels of ``div P`` (derivative per voxel edge, :func:`micropipe.spectral.grid.divergence_rms`; Pa) is
below ``max(eps_rel_div max|P_avg|, eps_abs_div)`` and every prescribed average stress component is met to
``max(eps_rel_P max|P_avg|, eps_abs_P)`` (:class:`~micropipe.crystal.numerics.Numerics`); the
Levenberg-Marquardt merit below is the square of that equilibrium measure plus the squared stress-BC errors.
Increments that fail (a local solve does not converge, or equilibrium is not reached in ``N_iter_max``
iterations) are cut back, halving the step up to ``N_cutback_max`` times as DAMASK does; a volume element that
still fails is reported ``converged=False`` with the increment and residual, and the rest of the batch goes on.
Unlike DAMASK_grid, the first increment of a load step whose elastic trial overshoots the slip resistances
(:data:`RAMP_OVERSTRESS`) is taken in sub-steps whose lengths double from ``1 / (2^N_ramp - 1)`` of it (``N_ramp``
of them; more where a sub-step took more than :data:`SUBSTEP_GROWTH_ITERATIONS` global iterations, after which
the length is kept), and the increment after it in two, 1 : 2 (:class:`~micropipe.crystal.numerics.Numerics`;
``N_ramp = 1`` takes DAMASK's single steps): the first
has no rate to extrapolate the predictor from and then holds the elastic-plastic transition, where one
backward-Euler step converges slowly and is least accurate, and in the second the rate still changes fast
(Cu at 16³: 24 global iterations as one step, 9 in two).  For DAMASK's Cu example (yield within a tenth of
seed 003's first increment) the sub-steps move sigma_zz at the first increment by 0.5-0.9 % towards the
time-converged value, and the curves meet again within a few increments.

Batches of volume elements of the same shape are solved together (leading axis), on CPU or CUDA; increments
are taken in lockstep, so a cutback in one volume element halves the step of its whole batch for the rest of
that increment.

Also here: the Taylor (iso-strain, ``coupling="taylor"``: the same Galerkin iteration with no fluctuation
field) and Sachs (:func:`sachs`: every grain a free single crystal in a uniaxial stress state) estimates of the
same model, which bracket the full-field response from above and below.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import damask
import numpy as np
import torch

from micropipe.crystal.loadcase import Loadcase, LoadStep
from micropipe.crystal.material import Material, Phase
from micropipe.crystal.numerics import Numerics
from micropipe.device import DTYPE, keep_freed_memory, pick_device, release_memory
from micropipe.spectral import grid
from micropipe.spectral.constitutive import Phenopowerlaw, State

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CPResult:
    """Volume-averaged response of one volume element.

    Arrays have one row per *output* increment, the undeformed state first (row 0, t = 0); when the run did
    not converge they stop at the last converged output increment.

    Attributes
    ----------
    converged : bool
        True when every increment converged.
    reason : str
        Empty when converged; else why, e.g. ``"increment 3 (t = 1.5 s): equilibrium residual 2.1e-3 > 5e-6
        after 4 cutbacks"``.
    time : numpy.ndarray, shape (n,)
        Time at the end of each output increment, s.
    F : numpy.ndarray, shape (n, 3, 3)
        Volume-averaged deformation gradient.
    P : numpy.ndarray, shape (n, 3, 3)
        Volume-averaged first Piola-Kirchhoff stress, Pa.
    sigma : numpy.ndarray, shape (n, 3, 3)
        Volume-averaged Cauchy stress, Pa (DAMASK's convention: the average of the local sigma over the
        reference volume).
    iterations : numpy.ndarray of int, shape (n - 1,)
        Global iterations per output increment (summed over cutback sub-steps).
    cutbacks : numpy.ndarray of int, shape (n - 1,)
        Number of cutback levels used per output increment.
    wall_time : float
        Seconds for this VE (the batch's time divided by its size when solved batched).
    backend : str
        ``"builtin"`` or ``"damask_grid"``.
    fields : dict of numpy.ndarray, optional
        Local fields of the last converged increment: ``F``, ``P``, ``sigma`` (X, Y, Z, 3, 3), ``xi``,
        ``gamma`` (X, Y, Z, N) for single-phase grids; only when asked for.
    """

    converged: bool
    reason: str
    time: np.ndarray
    F: np.ndarray
    P: np.ndarray
    sigma: np.ndarray
    iterations: np.ndarray
    cutbacks: np.ndarray
    wall_time: float
    backend: str = "builtin"
    fields: dict[str, np.ndarray] | None = None

    @property
    def strain(self) -> np.ndarray:
        """Engineering strain ``F - I`` (volume average), shape (n, 3, 3); ``strain[:, 2, 2]`` is eps_zz."""
        return self.F - np.eye(3)


# ---------------------------------------------------------------------------------------------------------------
# Load schedule


@dataclasses.dataclass(frozen=True)
class _Increment:
    step: LoadStep
    index: int  # 1-based over the whole load case
    t_start: float  # time at the start of the load step, s
    t0: float  # start of the increment (relative to the load step), s
    t1: float  # end of the increment (relative to the load step), s
    output: bool


def increments(loadcase: Loadcase) -> Iterator[_Increment]:
    """The increments of a load case in order, with DAMASK's geometric progression ``r`` of their lengths."""
    t_start, k = 0.0, 0
    for step in loadcase.steps:
        if step.r == 1.0:
            bounds = np.linspace(0.0, step.t, step.N + 1)
        else:
            w = step.r ** np.arange(step.N)
            bounds = np.concatenate([[0.0], np.cumsum(w) / w.sum() * step.t])
        for i in range(step.N):
            k += 1
            yield _Increment(step, k, t_start, float(bounds[i]), float(bounds[i + 1]),
                             output=(i + 1) % step.f_out == 0 or i + 1 == step.N)
        t_start += step.t


class _Targets:
    """Average deformation and stress the boundary conditions prescribe during one load step (per VE)."""

    def __init__(self, step: LoadStep, F_avg0: torch.Tensor, P_aim0: torch.Tensor):
        self.step = step
        dev, dt = F_avg0.device, F_avg0.dtype
        self.mask_F = torch.as_tensor(step.deformation_mask, device=dev)
        self.mask_P = ~self.mask_F
        self.D = torch.as_tensor(np.nan_to_num(step.deformation), device=dev, dtype=dt)
        self.S = torch.as_tensor(np.nan_to_num(step.stress), device=dev, dtype=dt)
        self.F_avg0, self.P_aim0 = F_avg0, P_aim0

    def F(self, t: float, F_avg_prev: torch.Tensor, dt: float) -> torch.Tensor:
        """Average deformation gradient (b, 3, 3) at time t into the step; valid on the prescribed components."""
        key = self.step.deformation_key
        if key == "dot_F":
            return self.F_avg0 + t * self.D
        if key == "F":
            return self.F_avg0 + t / self.step.t * (self.D - self.F_avg0)
        return F_avg_prev + dt * self.D @ F_avg_prev  # L: dot_F = L F

    def P(self, t: float) -> torch.Tensor:
        """Prescribed average first Piola-Kirchhoff stress (b, 3, 3), Pa, on the free components."""
        if self.step.stress_key == "dot_P":
            return self.P_aim0 + t * self.S
        return self.P_aim0 + t / self.step.t * (self.S - self.P_aim0)


# ---------------------------------------------------------------------------------------------------------------
# The spectral solver


COUPLINGS = ("full", "taylor")
"""How the material points of a grid are coupled (see :func:`solve`)."""


class _Grid:
    """Batched fields on one grid: components first (b, 3, 3, X, Y, Z) for FFTs, voxels first for material points.

    ``coupling`` picks the space the deformation gradient's fluctuation lives in: compatible gradients
    (``"full"``, the full-field solution) or none (``"taylor"``: every point has the average F).
    """

    def __init__(self, cells: Sequence[int], size: Sequence[float] | None, device: torch.device,
                 coupling: str = "full"):
        self.cells = tuple(int(c) for c in cells)
        self.N = int(np.prod(self.cells))
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling: expected one of {', '.join(COUPLINGS)}, got {coupling!r}")
        self.n = grid.directions(self.cells, size, device=device)
        self._n2: dict[torch.dtype, torch.Tensor] = {}  # the directions paired for real views, per dtype
        self._d2 = grid.paired(grid.divergence_vectors(self.cells, size, device=device))
        self.coupling = coupling

    def flat(self, field: torch.Tensor) -> torch.Tensor:
        """(b, 3, 3, X, Y, Z) -> (b * X * Y * Z, 3, 3)."""
        return field.permute(0, 3, 4, 5, 1, 2).reshape(-1, 3, 3)

    def field(self, flat: torch.Tensor, b: int) -> torch.Tensor:
        """(b * X * Y * Z, 3, 3) -> (b, 3, 3, X, Y, Z)."""
        return flat.reshape(b, *self.cells, 3, 3).permute(0, 4, 5, 1, 2, 3)

    def fluctuation(self, X: torch.Tensor) -> torch.Tensor:
        """Part of a field in the fluctuation space, ``G X``: its compatible (gradient) part without the average
        for the full-field coupling, zero for Taylor."""
        if self.coupling == "taylor":
            return torch.zeros_like(X)
        return self._gradient_part(torch.view_as_real(grid.rfft(X)))

    def residual(self, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Galerkin residual ``G P`` (b, 3, 3, X, Y, Z) and DAMASK_grid's equilibrium measure (b,), Pa: the
        RMS of div P per voxel edge (:func:`micropipe.spectral.grid.divergence_rms`); zero for Taylor."""
        if self.coupling == "taylor":
            return torch.zeros_like(P), P.new_zeros(P.shape[0])
        P_hat = torch.view_as_real(grid.rfft(P))
        return self._gradient_part(P_hat), grid.divergence_rms(P_hat, self._d2.to(P.dtype), self.cells)

    def _gradient_part(self, X_hat: torch.Tensor) -> torch.Tensor:
        """``G X`` in real space from the rfft of X on real views (b, 3, 3, X, Y, Z', 2)."""
        if X_hat.dtype not in self._n2:
            self._n2[X_hat.dtype] = grid.paired(self.n, X_hat.dtype)
        return grid.irfft(torch.view_as_complex(grid.gradient_pairs(X_hat, self._n2[X_hat.dtype])), self.cells)

    def project(self, X: torch.Tensor, mask_P: torch.Tensor) -> torch.Tensor:
        """``Pi X``: compatible fluctuation plus the average on the free (stress-prescribed) components."""
        return self.fluctuation(X) + X.mean((-3, -2, -1), keepdim=True) * mask_P[:, :, None, None, None]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum((1, 2, 3, 4, 5))


class _Batch:
    """State of a batch of volume elements of one grid: fields, per-phase material points, bookkeeping."""

    def __init__(self, models: list[Phenopowerlaw], phase_of_voxel: torch.Tensor, O: torch.Tensor, b: int,
                 g: _Grid):
        self.models, self.g, self.b = models, g, b
        self.voxels = [torch.nonzero(phase_of_voxel == p).squeeze(-1) for p in range(len(models))]
        self.single = len(models) == 1
        self.states = [m.initial_state(O[idx]) for m, idx in zip(models, self.voxels, strict=True)]
        dev = O.device
        eye = torch.eye(3, dtype=DTYPE, device=dev)
        self.F = eye[None, :, :, None, None, None].expand(b, 3, 3, *g.cells).clone()
        self.F_rate = torch.zeros_like(self.F)
        self.P = torch.zeros_like(self.F)
        # The two steps before: rate of the earlier one and both lengths, for the quadratic predictor.
        self.F_rate_prev: torch.Tensor | None = None
        self.steps: tuple[float, ...] = ()

    def evaluate(self, F: torch.Tensor, dt: torch.Tensor, guesses: list[State] | None, tol: float | None = None):
        """Material points at F: P field, trial states, ok per VE (b,), and a function that returns the tangent
        K (b*V, 9, 9), computed on its first call (which also sets the states' ``dy_dF``): an iterate that
        converges, or that the globalization rejects, never needs it.  ``tol``: the local solves' relative
        tolerance (default each model's ``numerics.eps_rel_state``)."""
        Ff = self.g.flat(F)
        Pf = torch.empty_like(Ff)
        ok = torch.ones(Ff.shape[0], dtype=torch.bool, device=Ff.device)
        states, updates = [], []
        for p, (m, idx) in enumerate(zip(self.models, self.voxels, strict=True)):
            sel = slice(None) if self.single else idx
            u = m.update(Ff[sel], self.states[p], dt.expand(idx.numel()), guess=None if guesses is None else guesses[p],
                         tangent="deferred", tol=tol)
            Pf[sel] = u.P
            ok[sel] = u.ok
            states.append(u.state)
            updates.append((sel, u))
        K: list[torch.Tensor] = []

        def tangent() -> torch.Tensor:
            if not K:
                K.append(torch.empty(Ff.shape[0], 9, 9, dtype=Ff.dtype, device=Ff.device))
                for sel, u in updates:
                    K[0][sel] = u.complete().reshape(-1, 9, 9)
            return K[0]

        return self.g.field(Pf, self.b), states, ok.reshape(self.b, -1).all(-1), tangent

    def overstress(self, F: torch.Tensor) -> torch.Tensor:
        """Per VE (b,): the largest ``|tau| / xi`` over systems and voxels if F were reached elastically."""
        Ff = self.g.flat(F)
        out = torch.zeros(Ff.shape[0], dtype=Ff.dtype, device=Ff.device)
        for p, (m, idx) in enumerate(zip(self.models, self.voxels, strict=True)):
            sel = slice(None) if self.single else idx
            out[sel] = m.overstress(Ff[sel], self.states[p])
        return out.reshape(self.b, -1).amax(-1)

    def keep(self, alive: torch.Tensor) -> None:
        """Drop the volume elements where ``alive`` (b,) is False."""
        V = self.g.N
        ve_of = [idx // V for idx in self.voxels]
        new_index = torch.cumsum(alive.long(), 0) - 1
        for p in range(len(self.models)):
            keep = alive[ve_of[p]]
            self.states[p] = self.states[p].select(keep)
            old = self.voxels[p][keep]
            self.voxels[p] = new_index[old // V] * V + old % V
        self.F, self.F_rate, self.P = self.F[alive], self.F_rate[alive], self.P[alive]
        if self.F_rate_prev is not None:
            self.F_rate_prev = self.F_rate_prev[alive]
        self.b = int(alive.sum())

    def commit(self, F: torch.Tensor, P: torch.Tensor, states: list[State], dt: float) -> None:
        """Accept the step of length dt (s) to F, P and the material states."""
        self.F_rate, self.F_rate_prev = (F - self.F) / dt, self.F_rate
        self.steps = (*self.steps[-1:], dt)
        self.F, self.P = F, P
        self.states = [dataclasses.replace(st, dy_dF=None) for st in states]  # the next step has other equations

    def forget_rates(self) -> None:
        """A new load step: the rates before it say nothing about the curvature of the path after it."""
        self.steps = ()


def _local_cauchy_mean(F: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Average over voxels of the local Cauchy stress ``P F^T / det F``, (b, 3, 3) from fields (b, 3, 3, X, Y, Z)."""
    Fv = F.flatten(3).permute(0, 3, 1, 2)
    Pv = P.flatten(3).permute(0, 3, 1, 2)
    sigma = Pv @ Fv.transpose(-1, -2) / torch.linalg.det(Fv)[..., None, None]
    return sigma.mean(1)


def _bicgstab(apply: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, tol: torch.Tensor, max_iter: int
              ) -> tuple[torch.Tensor, int]:
    """BiCGSTAB (van der Vorst 1992), batched over the leading axis; stops per VE when ``|r| <= tol`` (b,).

    For the tangent operator, which is neither symmetric nor positive definite away from the solution
    (finite rotations; an overshooting iterate's soft slip modes), where conjugate gradients break down.
    """
    def bcast(a: torch.Tensor) -> torch.Tensor:
        return a[:, None, None, None, None, None]

    def safe(a: torch.Tensor) -> torch.Tensor:
        return torch.where(a.abs() > 0, a, torch.ones_like(a))

    x = torch.zeros_like(rhs)
    r = rhs.clone()
    r0 = r.clone()
    rho = alpha = omega = torch.ones(rhs.shape[0], dtype=rhs.dtype, device=rhs.device)
    v = torch.zeros_like(rhs)
    p = torch.zeros_like(rhs)
    done = _dot(r, r).sqrt() <= tol
    it = 0
    for it in range(1, max_iter + 1):
        if bool(done.all()):
            return x, it - 1
        rho_new = _dot(r0, r)
        beta = (rho_new / safe(rho)) * (alpha / safe(omega))
        p = r + bcast(beta) * (p - bcast(omega) * v)
        v = apply(p)
        alpha = torch.where(done, torch.zeros_like(rho_new), rho_new / safe(_dot(r0, v)))
        s = r - bcast(alpha) * v
        t = apply(s)
        omega = torch.where(done, torch.zeros_like(rho_new), _dot(t, s) / safe(_dot(t, t)))
        x = x + bcast(alpha) * p + bcast(omega) * s
        r = s - bcast(omega) * t
        rho = rho_new
        breakdown = (rho_new == 0) | (omega == 0) | ~torch.isfinite(_dot(r, r))
        done = done | (_dot(r, r).sqrt() <= tol) | breakdown
    return x, it


RAMP_OVERSTRESS = 2.0
"""The first increment of a load step is ramped (Numerics.N_ramp) when, taken elastically from the predictor, it
would load some slip or twin system beyond this many times its resistance (measured at seed 003's first
increment: DAMASK's Cu 15, the Mg set 0.8)."""
KRYLOV_RTOL = 1e-2
"""Relative tolerance of the linear solves of the inexact Newton iteration (forcing term)."""
KRYLOV_MAX_ITER = 500
KRYLOV_DTYPE = torch.float32
"""Precision of those linear solves.  A Newton correction is wanted to KRYLOV_RTOL (1e-2) only, far above
float32's round-off, and the residuals, stresses and material points stay in float64; float32 halves the
memory traffic of the tangent products and FFTs (32^3 operator 9.1 -> 4.3 ms; Cu 16^3: 85 or 86 global iterations
against 85, one increment's last residual lying at its tolerance, and sigma_zz within 1e-8)."""


def solve(material_ids: np.ndarray, material: Material, loadcase: Loadcase, *,
          size: Sequence[float] | None = None, numerics: Numerics | None = None,
          device: Any = None, fields: bool = False, coupling: str = "full",
          progress: Callable[[int, int], None] | None = None) -> list[CPResult]:
    """Solve a batch of grids of material ids (DAMASK_grid's ``material`` field) with the built-in solver.

    Parameters
    ----------
    material_ids : numpy.ndarray of int, shape (X, Y, Z) or (B, X, Y, Z)
        0-based index into ``material.materials`` per voxel; a leading batch axis solves B volume
        elements of the same shape together.
    material : Material
        Phases and material entries (orientation per entry) from material.yaml.  Each entry must have one
        constituent (DAMASK's ``homogenization: {mechanical: {type: pass}}``).
    loadcase : Loadcase
        Boundary conditions and increments.
    size : sequence of 3 float, optional
        Box edge lengths (any unit; only ratios matter); default ``cells``.
    numerics : Numerics, optional
        Tolerances; default :class:`Numerics()`.
    device : str or torch.device, optional
        As :func:`micropipe.device.pick_device`.
    fields : bool
        Also return the local fields of the last increment.
    coupling : {"full", "taylor"}
        ``"full"`` (default): the full-field spectral solution.  ``"taylor"``: every voxel takes the average
        deformation gradient (iso-strain, DAMASK's ``isostrain`` homogenization), the same material points,
        load case and tolerances; an upper estimate of the full-field stress (see also :func:`sachs`).
    progress : callable(done, total), optional
        Called after every increment with the number of increments done and in total.

    Returns
    -------
    list of CPResult, one per volume element.

    Raises
    ------
    ValueError
        Material ids without an entry in ``material``, or entries with more than one constituent, or an
        unknown coupling.
    """
    ids = np.asarray(material_ids)
    if ids.ndim == 3:
        ids = ids[None]
    if ids.ndim != 4 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"material ids: expected an integer array (X, Y, Z) or (B, X, Y, Z), got {ids.dtype} "
                         f"{ids.shape}")
    n_mat = len(material.materials)
    if ids.min() < 0 or ids.max() >= n_mat:
        missing = sorted(set(np.unique(ids).tolist()) - set(range(n_mat)))
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"material ids {shown} in the grid have no entry in material.yaml, which defines "
                         f"{n_mat} materials (ids 0 to {n_mat - 1})")
    for i in np.unique(ids):
        if len(material.materials[i].constituents) != 1:
            raise ValueError(f"material.yaml: material entry {i} has {len(material.materials[i].constituents)} "
                             "constituents; the built-in solver takes one per entry (homogenization type 'pass')")
    names = list(material.phases)
    entry_phase = np.array([names.index(m.constituents[0].phase) for m in material.materials])
    O = damask.Rotation.from_quaternion(material.orientations()).as_matrix()
    return _solve(entry_phase[ids], O[ids], [material.phases[n] for n in names], loadcase, size=size,
                  numerics=numerics, device=device, fields=fields, coupling=coupling, progress=progress)


def solve_orientations(phase: Phase, grain_ids: np.ndarray, O: np.ndarray, loadcase: Loadcase, **kwargs: Any
                       ) -> list[CPResult]:
    """Solve single-phase volume elements given as grain ids plus one orientation per grain.

    Parameters
    ----------
    phase : Phase
        The phase every voxel belongs to.
    grain_ids : numpy.ndarray of int, shape (X, Y, Z) or (B, X, Y, Z)
        0-based grain index per voxel.
    O : numpy.ndarray, shape (G, 4) or (B, G, 4)
        DAMASK unit quaternions per grain (G = the largest grain count; unused rows are ignored).
    **kwargs
        As :func:`solve`.
    """
    g = np.asarray(grain_ids)
    q = np.asarray(O, float)
    if g.ndim == 3:
        g, q = g[None], q[None] if q.ndim == 2 else q
    if q.ndim != 3 or q.shape[0] != g.shape[0] or q.shape[-1] != 4:
        raise ValueError(f"orientations: expected quaternions (B, G, 4) for {g.shape[0]} grids, got {q.shape}")
    if g.min() < 0 or g.max() >= q.shape[1]:
        raise ValueError(f"grain ids: range {g.min()}..{g.max()} but only {q.shape[1]} orientations given")
    R = damask.Rotation.from_quaternion(q).as_matrix()  # (B, G, 3, 3)
    Ov = np.take_along_axis(R, g.reshape(g.shape[0], -1)[:, :, None, None], axis=1).reshape(*g.shape, 3, 3)
    return _solve(np.zeros(g.shape, int), Ov, [phase], loadcase, **kwargs)


def sachs(material_ids: np.ndarray, material: Material, loadcase: Loadcase, **kwargs: Any) -> CPResult:
    """Sachs estimate of one volume element: every grain a free single crystal in the polycrystal's stress state.

    Every material id present is solved as a homogeneous single crystal under the load case with its shear
    components released: the upper off-diagonal deformation-rate components stay prescribed (no rigid
    rotation), the lower ones become stress-free, so for uniaxial tension each grain is in uniaxial stress
    along the axis (equilibrium everywhere, compatibility between grains ignored).  The estimate is the
    volume-weighted average of the grains' F, P and Cauchy stress, the classic Sachs average (about
    ``2.24 xi_0`` at yield for random FCC, against Taylor's ``3.06 xi_0``); it lies below the full-field
    response.

    Parameters
    ----------
    material_ids : numpy.ndarray of int, shape (X, Y, Z)
        As :func:`solve` (one volume element).
    material, loadcase, **kwargs
        As :func:`solve`; the load case's deformation must be prescribed on diagonal components only, besides
        off-diagonal zeros.

    Raises
    ------
    ValueError
        A load step that prescribes a non-zero or stress off-diagonal component.
    """
    ids = np.asarray(material_ids)
    if ids.ndim != 3:
        raise ValueError(f"material ids: expected one grid (X, Y, Z), got shape {ids.shape}")
    steps = []
    lower = np.tril(np.ones((3, 3), bool), -1)
    off = ~np.eye(3, dtype=bool)
    for k, step in enumerate(loadcase.steps):
        if not (step.deformation_mask[off].all() and np.all(step.deformation[off] == 0.0)):
            raise ValueError(f"load step {k + 1}: the Sachs estimate needs zero off-diagonal deformation rates "
                             f"(a diagonal load), got {step.deformation_key} = {step.deformation.tolist()}")
        deformation = np.where(lower, np.nan, step.deformation)
        stress = np.where(lower, 0.0, step.stress)
        steps.append(dataclasses.replace(step, deformation=deformation, stress=stress))
    free = dataclasses.replace(loadcase, steps=tuple(steps))
    grains, counts = np.unique(ids, return_counts=True)
    results = solve(grains.reshape(-1, 1, 1, 1), material, free, **kwargs)
    w = counts / counts.sum()
    n = min(len(r.time) for r in results)
    reasons = [f"grain {g}: {r.reason}" for g, r in zip(grains, results, strict=True) if not r.converged]

    def avg(key: str) -> np.ndarray:
        return np.einsum("g,gnij->nij", w, np.stack([getattr(r, key)[:n] for r in results]))

    return CPResult(converged=not reasons, reason="; ".join(reasons), time=results[0].time[:n], F=avg("F"),
                    P=avg("P"), sigma=avg("sigma"), iterations=results[0].iterations[:n - 1],
                    cutbacks=np.max([r.cutbacks[:n - 1] for r in results], axis=0),
                    wall_time=float(sum(r.wall_time for r in results)))


def _solve(phase_ids: np.ndarray, O: np.ndarray, phases: list[Phase], loadcase: Loadcase, **kwargs: Any
           ) -> list[CPResult]:
    """phase_ids (B, X, Y, Z) int, O (B, X, Y, Z, 3, 3) orientation matrices (passive, sample -> crystal).

    The per-point temporaries are large (85 MB per Jacobian at 32³): glibc keeps freed memory for reuse while the
    solver runs (:func:`micropipe.device.keep_freed_memory`), and gets it back after it.
    """
    keep_freed_memory()
    try:
        return _run(phase_ids, O, phases, loadcase, **kwargs)
    finally:
        release_memory()


def _run(phase_ids: np.ndarray, O: np.ndarray, phases: list[Phase], loadcase: Loadcase, *,
         size: Sequence[float] | None = None, numerics: Numerics | None = None, device: Any = None,
         fields: bool = False, coupling: str = "full", progress: Callable[[int, int], None] | None = None
         ) -> list[CPResult]:
    num = numerics or Numerics()
    dev = device if isinstance(device, torch.device) else pick_device(device)
    t_wall = time.perf_counter()
    B, cells = phase_ids.shape[0], phase_ids.shape[1:]
    g = _Grid(cells, size, dev, coupling)
    models = [Phenopowerlaw(p, num, device=dev) for p in phases]
    batch = _Batch(models, torch.as_tensor(phase_ids.reshape(-1), device=dev),
                   torch.as_tensor(O.reshape(-1, 3, 3), device=dev, dtype=DTYPE), B, g)

    eye = np.eye(3)
    history = [{"time": [0.0], "F": [eye], "P": [np.zeros((3, 3))], "sigma": [np.zeros((3, 3))],
                "iterations": [], "cutbacks": []} for _ in range(B)]
    reasons = [""] * B
    ve = torch.arange(B, device=dev)  # original index of every VE still in the batch
    incs = list(increments(loadcase))
    F_avg = torch.eye(3, dtype=DTYPE, device=dev).expand(B, 3, 3).clone()
    P_aim = torch.zeros(B, 3, 3, dtype=DTYPE, device=dev)
    targets = None
    pending_it = torch.zeros(B, dtype=torch.long, device=dev)
    pending_cut = torch.zeros(B, dtype=torch.long, device=dev)
    ramped = -2  # the last increment that was ramped
    for k, inc in enumerate(incs):
        if batch.b == 0:
            break
        if targets is None or targets.step is not inc.step:
            targets = _Targets(inc.step, F_avg.clone(), P_aim.clone())
            batch.forget_rates()
        span = inc.t1 - inc.t0
        t, level, dt_next = inc.t0, 0, span
        if num.N_ramp > 1 and (k == 0 or incs[k - 1].step is not inc.step):
            # The first increment of a load step, when its elastic trial overshoots the slip resistances: a ramp
            # of sub-steps doubling in length (Numerics.N_ramp), and the next increment in two (1 : 2).
            over = float(batch.overstress(_predictor(batch, targets, t, span)).max())
            if over > RAMP_OVERSTRESS:
                dt_next = span / (2 ** num.N_ramp - 1)
                ramped = k
                log.debug("increment %d: elastic trial at %.3g times the slip resistance, %d sub-steps", inc.index,
                          over, num.N_ramp)
        elif ramped == k - 1:
            dt_next = span / 3
        while t < inc.t1 - 1e-12 * inc.step.t and batch.b:
            dt = min(dt_next, inc.t1 - t)
            ok, its, why = _step(batch, targets, t, dt, num)
            pending_it[ve] += its
            if bool(ok.all()):
                t += dt
                # The next sub-step twice as long, unless this one was hard to converge.
                grow = 2.0 if its <= SUBSTEP_GROWTH_ITERATIONS else 1.0
                dt_next = min(grow * dt, span / 2 ** level)
                pending_cut[ve] = torch.maximum(pending_cut[ve], torch.full_like(ve, level))
                continue
            if level < num.N_cutback_max:
                level += 1
                dt_next = min(dt / 2.0, span / 2 ** level)
                log.debug("increment %d: cutting back to level %d (%s)", inc.index, level, why[0])
                continue
            for i in torch.nonzero(~ok).squeeze(-1).tolist():
                orig = int(ve[i])
                reasons[orig] = (f"increment {inc.index} (t = {inc.t_start + inc.t1:.6g} s): {why[i]} "
                                 f"after {num.N_cutback_max} cutbacks")
                log.warning("volume element %d not converged: %s", orig, reasons[orig])
            batch.keep(ok)
            targets.F_avg0, targets.P_aim0 = targets.F_avg0[ok], targets.P_aim0[ok]
            F_avg, P_aim, ve = F_avg[ok], P_aim[ok], ve[ok]
        if batch.b == 0:
            break
        F_avg = batch.F.mean((-3, -2, -1))
        P_mean = batch.P.mean((-3, -2, -1))
        P_aim = torch.where(targets.mask_P, targets.P(inc.t1), P_mean)
        if inc.output:
            sigma = _local_cauchy_mean(batch.F, batch.P)
            for i, orig in enumerate(ve.tolist()):
                h = history[orig]
                h["time"].append(inc.t_start + inc.t1)
                h["F"].append(F_avg[i].cpu().numpy())
                h["P"].append(P_mean[i].cpu().numpy())
                h["sigma"].append(sigma[i].cpu().numpy())
                h["iterations"].append(int(pending_it[orig]))
                h["cutbacks"].append(int(pending_cut[orig]))
            pending_it.zero_()
            pending_cut.zero_()
        if progress is not None:
            progress(k + 1, len(incs))

    wall = (time.perf_counter() - t_wall) / B
    field_out: dict[int, dict[str, np.ndarray]] = {}
    if fields and batch.b:
        field_out = _fields(batch, ve)
    results = []
    for i, h in enumerate(history):
        results.append(CPResult(converged=not reasons[i], reason=reasons[i], time=np.asarray(h["time"]),
                                F=np.stack(h["F"]), P=np.stack(h["P"]), sigma=np.stack(h["sigma"]),
                                iterations=np.asarray(h["iterations"], int), cutbacks=np.asarray(h["cutbacks"], int),
                                wall_time=wall, fields=field_out.get(i)))
    return results


SUBSTEP_GROWTH_ITERATIONS = 5
"""A sub-step (of a ramp or a cutback) that took more global iterations than this is followed by one of the same
length instead of one twice as long (32³ Cu, measured with the tighter tolerances used before DAMASK's: the ramp took 36
global iterations instead of 44, its third sub-step alone 12; with unconditional doubling the last sub-step
took 18)."""
DAMPING_START = 1e-3
"""First Levenberg-Marquardt damping of a rejected global step, relative to the mean tangent stiffness."""
LOCAL_RTOL_FAR = 1e-5
"""Relative tolerance of the material points' solves at a global iterate far from equilibrium (see :func:`_step`)."""
FAR = 100.0
"""A global iterate whose residual is this many times its tolerance or more is far from equilibrium."""
DAMPING_GROWTH = 10.0
"""Factor by which the damping grows after each rejected step."""
DAMPING_MAX = 1e2
"""Largest relative damping tried before the increment is cut back."""
NEAR = 10.0
"""Residuals below this many times their tolerance take every step the material points can follow."""
ANDERSON_RATIO = 0.3
"""A Newton correction at least this fraction of the one before it (linear convergence) is Anderson-accelerated
(:func:`_anderson`; 32³ Cu seeds 0 and 1: 80 -> 75 and 82 -> 78 global iterations, 16³ seeds 0-3: 282 -> 276,
none more)."""


def _pick(keep_new: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per volume element: ``new`` where ``keep_new`` (b,) else ``old``, for fields (b, ...) and for per-voxel
    tensors (b * V, ...)."""
    if bool(keep_new.all()):
        return new
    shape = (keep_new.shape[0], -1) + (1,) * (new.dim() - 1)
    if new.shape[0] == keep_new.shape[0]:
        return torch.where(keep_new.reshape(shape[:1] + shape[2:]), new, old)
    return torch.where(keep_new.reshape(shape), new.reshape(keep_new.shape[0], -1, *new.shape[1:]),
                       old.reshape(keep_new.shape[0], -1, *old.shape[1:])).reshape(new.shape)


def _merge_states(keep_new: torch.Tensor, new: list[State], old: list[State], batch: _Batch) -> list[State]:
    """Per volume element: the material states ``new`` where ``keep_new`` (b,) else ``old``."""
    if bool(keep_new.all()):
        return new
    return [a.where(keep_new[idx // batch.g.N], o) for idx, a, o in zip(batch.voxels, new, old, strict=True)]


QUADRATIC_PREDICTOR = True
"""Use the parabola through the last three states where :func:`_predictor` allows it (False: the last rate)."""
PREDICTOR_MARGIN = 1e-2
"""A step's first iterate, the predictor, is accepted only with residuals below this fraction of the tolerances."""


def _predictor(batch: _Batch, targets: _Targets, t: float, dt: float) -> torch.Tensor:
    """Start of a step's iteration, then the prescribed average components set exactly.

    The last step's rate extrapolated; after two steps of the length of this one in the same load step, the
    parabola through the last three states (``F + dt (2 r_n - r_n-1)``), which halves the first residual of a
    steady increment and saves it one global iteration.  Not after steps of other lengths: the ramp's sub-steps
    cross the elastic-plastic transition, where the path's curvature does not carry over.
    """
    F = batch.F + dt * batch.F_rate
    if QUADRATIC_PREDICTOR and len(batch.steps) == 2 and all(abs(h - dt) <= 1e-9 * dt for h in batch.steps):
        F = F + dt * (batch.F_rate - batch.F_rate_prev)
    F_target = targets.F(t + dt, batch.F.mean((-3, -2, -1)), dt)
    mask_F = targets.mask_F[:, :, None, None, None]
    return F + torch.where(mask_F, (F_target - F.mean((-3, -2, -1)))[..., None, None, None], torch.zeros_like(F))


def _step(batch: _Batch, targets: _Targets, t: float, dt: float, num: Numerics
          ) -> tuple[torch.Tensor, int, list[str]]:
    """One (sub)step from ``t`` to ``t + dt`` (s, into the load step) for the whole batch.

    Newton's method, globalized per volume element by Levenberg-Marquardt damping: a step that makes the
    residual (``|equilibrium residual|^2 + |stress BC error|^2``) grow, or that a material point cannot follow
    (its local solve fails), is rejected and recomputed from the last accepted iterate with ``K + mu I``
    instead of ``K``, mu growing tenfold from :data:`DAMPING_START` times the mean tangent stiffness up to
    :data:`DAMPING_MAX`; an accepted step halves mu (to zero below :data:`DAMPING_START`).  Near the
    elastic-plastic transition the tangent is nearly singular in the directions of easy slip, and the undamped
    step overshoots far along them.
    Commits the new fields and states when every VE converged.  Returns ``ok`` (b,) bool, the number of
    global iterations (material evaluations), and a reason per VE (empty where it converged).
    """
    g, b = batch.g, batch.b
    dev = batch.F.device
    P_target = targets.P(t + dt)
    F = _predictor(batch, targets, t, dt)
    dt_t = torch.tensor(dt, dtype=DTYPE, device=dev)
    guesses = batch.states  # the local solves start from the last converged state, then their usual starts
    ok = torch.zeros(b, dtype=torch.bool, device=dev)
    why = ["no iteration"] * b
    accepted = None  # (F, P, K, states, merit) of the last accepted iterate
    mu = torch.zeros(b, dtype=DTYPE, device=dev)  # damping, relative to the mean tangent stiffness
    tol_a = torch.zeros(b, dtype=DTYPE, device=dev)  # tolerance at the last accepted iterate
    tight = num.eps_rel_state
    local_tol = max(LOCAL_RTOL_FAR, tight)  # the predictor's: it converges only in elastic steps

    def residuals(P: torch.Tensor):
        """Average stress, Galerkin residual field, stress-BC error (b, 3, 3) and their norms (Pa) for P."""
        P_avg = P.mean((-3, -2, -1))
        r_div, err_div = g.residual(P)
        bc = torch.where(targets.mask_P, P_avg - P_target, torch.zeros_like(P_avg))
        return P_avg, r_div, bc, err_div, bc.abs().amax((-1, -2))

    newton: tuple[torch.Tensor, torch.Tensor] | None = None  # the last Newton step's start and correction
    it = 0
    for it in range(1, num.N_iter_max + 1):
        P, states, local_ok, tangent = batch.evaluate(F, dt_t, guesses, local_tol)
        P_avg, r_div, bc, err_div, err_bc = residuals(P)
        merit = torch.where(local_ok, err_div.square() + bc.square().sum((-1, -2)), torch.full_like(err_div, torch.inf))
        merit = merit.nan_to_num(torch.inf)
        if accepted is None:
            if not bool(local_ok.all()):
                why = ["local (material point) solve did not converge" if not bool(o) else "" for o in local_ok]
                return local_ok & False, it, why
            take = torch.ones(b, dtype=torch.bool, device=dev)
        else:
            F_a, P_a, K_a, states_a, merit_a = accepted
            # Within a few orders of the tolerance the Newton iteration is in its basin, and a residual that
            # does not shrink is round-off of the local solves, not an overshoot.
            take = (merit < merit_a) | (local_ok & (merit_a < (NEAR * tol_a) ** 2))
            back = ~take
            mu = torch.where(take, torch.where(mu > DAMPING_START, 0.5 * mu, 0.0),
                             torch.clamp(DAMPING_GROWTH * mu, min=DAMPING_START))
            if bool((mu > DAMPING_MAX).any()):
                why = ["local (material point) solve did not converge" if not bool(o)
                       else (f"no step reduces the residual {float(m.sqrt()):.3g} Pa (damping {DAMPING_MAX:g})"
                             if bool(bk) else "")
                       for o, m, bk in zip(local_ok, merit_a, back, strict=True)]
                return torch.zeros(b, dtype=torch.bool, device=dev), it, why
            P = _pick(take, P, P_a)
            F = _pick(take, F, F_a)
            merit = torch.where(take, merit, merit_a)
            if bool(back.any()):
                newton = None  # Anderson mixing only along a run of accepted, undamped steps
                log.debug("  iteration %d: %d volume element(s) reject the step, damping %s", it,
                          int(back.sum()), ", ".join(f"{float(m):.0e}" for m in mu[back][:4]))
                P_avg, r_div, bc, err_div, err_bc = residuals(P)
        norm_P = P_avg.abs().amax((-1, -2))  # DAMASK's maxval(abs(P_av))
        tol_div = torch.clamp(num.eps_rel_div * norm_P, min=num.eps_abs_div)
        tol_bc = torch.clamp(num.eps_rel_P * norm_P, min=num.eps_abs_P)
        # The predictor itself only well within the tolerances: its error is of the size of its residual, where
        # a Newton step's is far below (quadratic convergence).
        margin = PREDICTOR_MARGIN if it == 1 else 1.0
        ok = (err_div <= margin * tol_div) & (err_bc <= margin * tol_bc)
        tol_a = torch.minimum(tol_div, tol_bc)
        why = [f"equilibrium residual {float(e):.3g} Pa (tolerance {float(tl):.3g}), stress BC error "
               f"{float(c):.3g} Pa (tolerance {float(tb):.3g})"
               for e, tl, c, tb in zip(err_div, tol_div, err_bc, tol_bc, strict=True)]
        if bool(ok.all()) and it >= num.N_iter_min:
            if accepted is not None:
                states = _merge_states(take, states, states_a, batch)
            if local_tol <= tight:
                break
            # In equilibrium with material points solved to less than their tolerance (a predictor that met
            # the tolerances): solved again at the same F, to their tolerance, from these solutions.
            accepted, guesses, local_tol = None, states, tight
            continue
        # Another Newton step: the tangent of the iterate it starts from (the new one where taken).
        if accepted is None:
            K, newton = tangent(), None
        else:
            K = _pick(take, tangent(), K_a) if bool(take.any()) else K_a
            states = _merge_states(take, states, states_a, batch)  # after tangent(): dy_dF set where taken
        accepted = (F, P, K, states, merit)
        guesses = states
        # Inexact Newton: far from equilibrium, the material points need not be solved much more accurately than
        # the equilibrium itself is met; their tolerance follows the residual down to eps_rel_state.
        distance = merit.sqrt() / tol_a  # residual in units of its tolerance, per VE
        local_tol = tight * min(max(float(distance.min()) / FAR, 1.0), max(LOCAL_RTOL_FAR / tight, 1.0))
        rhs = -(r_div + bc[..., None, None, None] * torch.ones_like(P))
        rhs = torch.where(ok[:, None, None, None, None, None], torch.zeros_like(rhs), rhs)
        stiffness = K.diagonal(dim1=-2, dim2=-1).mean(-1).reshape(b, -1).mean(-1)
        damping = (mu * stiffness).to(KRYLOV_DTYPE)[:, None, None, None, None, None]
        K_lin = K.to(KRYLOV_DTYPE)

        def apply(x: torch.Tensor, K: torch.Tensor = K_lin, damping: torch.Tensor = damping) -> torch.Tensor:
            Kx = torch.bmm(K, g.flat(x).reshape(-1, 9, 1)).reshape(-1, 3, 3)
            return g.project(g.field(Kx, b), targets.mask_P) + damping * x

        # Scale tolerances: |rhs| as a sum over voxels; stop at KRYLOV_RTOL of it or well below the Newton tol.
        rhs_norm = _dot(rhs, rhs).sqrt()
        lin_tol = torch.clamp(KRYLOV_RTOL * rhs_norm, min=0.1 * tol_div * math.sqrt(g.N))
        dF, n_lin = _bicgstab(apply, rhs.to(KRYLOV_DTYPE), lin_tol.to(KRYLOV_DTYPE), KRYLOV_MAX_ITER)
        log.debug("  iteration %d: residual %.3g Pa (tolerance %.3g), BC %.3g Pa, %d BiCGSTAB iterations", it,
                  float(err_div.max()), float(tol_div.max()), float(err_bc.max()), n_lin)
        dF = dF.to(DTYPE)
        # Anderson mixing near equilibrium only: far from it, where the damping works, it can lead the iteration
        # astray (a homogeneous single crystal at first yield, in one step: 42 iterations and a cutback, not 20).
        F = accepted[0] + dF if newton is None else _anderson(*newton, accepted[0], dF, distance < FAR)
        newton = None if bool((mu > 0).any()) else (accepted[0], dF)
    else:
        if not bool(ok.all()):
            return ok, it, [f"not in equilibrium after {num.N_iter_max} iterations: {w}" if not bool(o) else ""
                            for w, o in zip(why, ok, strict=True)]
    batch.commit(F, P, states, dt)
    return ok, it, ["" for _ in range(b)]


def _anderson(x0: torch.Tensor, f0: torch.Tensor, x1: torch.Tensor, f1: torch.Tensor, use: torch.Tensor
              ) -> torch.Tensor:
    """The global iterate after ``x1``, whose Newton correction is ``f1``, Anderson-accelerated (depth 1) with the
    iterate ``x0`` before it and its correction ``f0``, where ``use`` (b,); fields (b, 3, 3, X, Y, Z).

    Plain Newton goes to ``x1 + f1``.  At the elastic-plastic transition a few voxels can alternate about their
    solution with every step (32³ Cu, third ramp sub-step: ten voxels at one grain boundary held 59 % of the
    residual, each correction about -1.85 times their error, and the residual stayed between 5 and 10 times
    its tolerance for six iterations).  The corrections then shrink linearly, and Anderson mixing, which treats
    ``x -> x + f(x)`` as a fixed-point map, takes the secant step ``x1 + f1 - gamma (x1 - x0 + f1 - f0)`` with
    ``gamma`` minimizing ``|f1 - gamma (f1 - f0)|`` per volume element.  Only where ``|f1| >= ANDERSON_RATIO
    |f0|``: where Newton converges fast, gamma is zero.
    """
    df = f1 - f0
    gamma = _dot(df, f1) / _dot(df, df).clamp_min(torch.finfo(f1.dtype).tiny)
    slow = _dot(f1, f1) >= ANDERSON_RATIO ** 2 * _dot(f0, f0)
    gamma = torch.where(use & slow & torch.isfinite(gamma), gamma, torch.zeros_like(gamma))
    return x1 + f1 - gamma[:, None, None, None, None, None] * (x1 - x0 + df)


def _fields(batch: _Batch, ve: torch.Tensor) -> dict[int, dict[str, np.ndarray]]:
    """Local fields of the last increment per original VE index: F, P, sigma (X, Y, Z, 3, 3), xi, gamma."""
    out = {}
    Fv = batch.F.permute(0, 3, 4, 5, 1, 2)
    Pv = batch.P.permute(0, 3, 4, 5, 1, 2)
    sigma = Pv @ Fv.transpose(-1, -2) / torch.linalg.det(Fv)[..., None, None]
    cells = batch.g.cells
    for i, orig in enumerate(ve.tolist()):
        d = {"F": Fv[i].cpu().numpy(), "P": Pv[i].cpu().numpy(), "sigma": sigma[i].cpu().numpy()}
        if batch.single:
            s = batch.states[0]
            V = batch.g.N
            d["xi"] = s.xi[i * V:(i + 1) * V].reshape(*cells, -1).cpu().numpy()
            d["gamma"] = s.gamma[i * V:(i + 1) * V].reshape(*cells, -1).cpu().numpy()
        out[orig] = d
    return out
