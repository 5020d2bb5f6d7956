"""Independent single-material-point integrator of DAMASK's phenopowerlaw model (numpy), a reference for tests.

Written straight from ``refs/damask/phenopowerlaw.md``, separately from :mod:`micropipe.spectral` (nothing of it is
imported here; the lattice stiffness is built from the Hooke constants in this module too).  It integrates one
material point under homogeneous deformation, i.e. a single crystal under the mixed boundary conditions of a
DAMASK_grid load case, which is what DAMASK_grid computes for a one-grain volume element.

Model (finite strain, all in the **lattice frame**, as DAMASK works):

- ``F = F_e F_p``.  The plastic deformation starts as the orientation matrix, ``F_p(0) = O`` (the passive
  sample -> crystal matrix of the DAMASK quaternion, ``damask.Rotation(O).as_matrix()``), so
  ``F_p(0)^-1 = R = crystal_to_sample(O)`` and ``F_e(0) = F R`` maps lattice vectors into the sample frame.
  With ``F = I + eps`` this gives ``P = R (C : (R^T eps R)) R^T``, i.e. the stiffness rotated to the sample
  frame (checked in ``tests/test_mp_reference.py``).
- ``S = C : E_e``, ``E_e = (F_e^T F_e - I) / 2`` with the lattice-frame Hooke stiffness ``C``; Mandel stress
  ``M = S``; ``tau_a = S : P_a`` with lattice-frame Schmid tensors ``P_a = d_a (x) n_a``.
- Slip ``gdot_a = gdot_0 |tau_a / xi_a|^n sign(tau_a)``; twins (unidirectional pseudo-slip, no reorientation)
  ``gdot_t = (1 - F_tw) gdot_0,tw (tau_t / xi_t)^n_tw`` for ``tau_t > 0``, else 0, ``F_tw = sum_t gamma_t / s_t``;
  ``L_p = sum_a gdot_a P_a + sum_t gdot_t P_t``.
- Hardening (factor of the *reacting* system a, as ``phenopowerlaw.md`` and DAMASK's ``left_SlipSlip``)::

      xidot_a = h_0 (1 + c_1 F_tw^c_2) sgn(1 - xi_a/xi_sat,a) |1 - xi_a/xi_sat,a|^a_sl sum_b H_ab |gdot_b|
                + sum_t H^sl-tw_at gdot_t,                     xi_sat,a = xi_inf,a + f_sat_sl-tw sqrt(F_tw)
      xidot_t = h_0,tw-sl (sum_a gamma_a)^c_3 sum_a H^tw-sl_ta |gdot_a| + h_0,tw-tw F_tw^c_4 sum_k H^tw-tw_tk gdot_k

- Accumulated shear: ``gamma_a`` integrates ``|gdot_a|`` (slip), ``gamma_t`` integrates ``gdot_t`` (twins,
  >= 0), with the same backward-Euler step as the rest of the state.

Numerics: one fully implicit (backward-Euler) step per (sub)increment, as DAMASK:
``F_p,new^-1 = F_p,old^-1 (I - dt L_p,new)``, ``state_new = state_old + dt statedot(state_new, S_new)``.  DAMASK
solves this by Newton on ``L_p`` staggered with a fixed-point iteration on the state; here the same equations are
solved at once, by Newton's method on the unknowns ``y = (S [6, Mandel, lattice frame], xi_sl, xi_tw)`` with the
analytic Jacobian and a backtracking (Armijo) line search on ``|R| / sigma_ref``.  The accumulated shears are
explicit in those unknowns (``gamma_new = gamma_old + dt |gdot_new|``; for twins the implicit
``gdot_t = (1 - F_tw,new) r_t`` has a closed form, see :meth:`Model._kinetics`).  ``|tau/xi|^n`` is evaluated
through a clipped exponent so that no iterate overflows, and iterates with ``xi <= 0`` are rejected.  Starting
points, tried in turn: a nearby solution (warm start), the stress with the previous step's ``L_p`` (DAMASK's
predictor), the elastic trial stress, the previous stress -- each scaled down, if needed, so that no system
would shear faster than ten times the overall deformation rate (started far above the yield surface, Newton on
``|tau/xi|^20`` creeps down by ``~tau/n`` per iteration and the line search stalls).  If none converges, the
step's own solution is reached by continuation, through backward-Euler steps from the same old state with
``(lam dt, F(lam))``, lam -> 1 (so the result is still the single step asked for).  Converged to a scaled residual
of 1e-10 or less (round-off: ~1e-12; stresses to ~1e-3 Pa or better).  The stress comes from the unscaled
``F_p,new^-1``; the stored ``F_p`` is rescaled to ``det F_p = 1`` (as DAMASK does; ``det(I - dt L_p) - 1`` is of second
order in ``dt L_p``, not zero, and without the rescaling a_Cu_cube_8 deviates from DAMASK by up to 1e-4).

Limits: with Cu's latent-hardening matrix (not positive definite) the implicit hardening equations can lose
uniqueness when a single step carries far more slip than DAMASK's increments (seen for some orientations at 1 %
strain in one step); the local or the boundary-condition Newton then fails with a RuntimeError -- use ``substeps``.

Boundary conditions: components of the load step's deformation (``dot_F``, ``F`` or ``L``, DAMASK_grid's rules
for each) give the new ``F`` there; the other components are unknowns, solved by Newton's method with a
forward-difference Jacobian (each evaluation a full local solve) until ``P`` there (or the ``dot_P``-integrated
target) holds to 1e-10 of ``max |P|`` (at least 1e-10 Pa).  Increment lengths follow DAMASK_grid (``t``, ``N``, ``r``);
every increment is returned (``f_out`` is ignored).  Units: Pa, s, 1/s.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from micropipe.crystal import lattice
from micropipe.crystal.loadcase import Loadcase, load_loadcase
from micropipe.crystal.material import Phase, load_material

__all__ = ["Model", "PointState", "compare_with_damask", "hooke_mandel", "integrate", "mandel", "read_curve",
           "unmandel"]

_SQ2 = math.sqrt(2.0)
_LOG_MAX = 300.0  # |tau/xi|^n is evaluated as exp(min(n log|tau/xi|, _LOG_MAX))
_EYE = np.eye(3)


def mandel(A: np.ndarray) -> np.ndarray:
    """Mandel vector of the symmetric part of ``A``, shape (..., 3, 3) -> (..., 6), order 11, 22, 33, 23, 13, 12."""
    A = np.asarray(A, float)
    return np.stack([A[..., 0, 0], A[..., 1, 1], A[..., 2, 2],
                     (A[..., 1, 2] + A[..., 2, 1]) / _SQ2,
                     (A[..., 0, 2] + A[..., 2, 0]) / _SQ2,
                     (A[..., 0, 1] + A[..., 1, 0]) / _SQ2], axis=-1)


def unmandel(v: np.ndarray) -> np.ndarray:
    """Symmetric tensor (..., 3, 3) from its Mandel vector (..., 6)."""
    v = np.asarray(v, float)
    a, b, c = v[..., 3] / _SQ2, v[..., 4] / _SQ2, v[..., 5] / _SQ2
    return np.stack([np.stack([v[..., 0], c, b], -1),
                     np.stack([c, v[..., 1], a], -1),
                     np.stack([b, a, v[..., 2]], -1)], -2)


def hooke_mandel(phase: Phase) -> np.ndarray:
    """Lattice-frame Hooke stiffness of a phase in Mandel notation, shape (6, 6), Pa.

    Built here from the constants (cubic: ``C_11, C_12, C_44``; hP, c along z: also ``C_13, C_33`` and
    ``C_66 = (C_11 - C_12) / 2``), at the reference temperature.
    """
    el = phase.elastic
    C = np.zeros((6, 6))
    if phase.lattice == "hP":
        C[0, 0] = C[1, 1] = el.C_11
        C[2, 2] = el.C_33
        C[0, 1] = C[1, 0] = el.C_12
        C[0, 2] = C[2, 0] = C[1, 2] = C[2, 1] = el.C_13
        C[3, 3] = C[4, 4] = el.C_44
        C[5, 5] = 0.5 * (el.C_11 - el.C_12)
    else:
        C[:3, :3] = el.C_12
        C[0, 0] = C[1, 1] = C[2, 2] = el.C_11
        C[3, 3] = C[4, 4] = C[5, 5] = el.C_44
    w = np.array([1.0, 1.0, 1.0, _SQ2, _SQ2, _SQ2])
    return C * np.outer(w, w)


def _norm(v: np.ndarray) -> float:
    """Euclidean norm, inf (without a warning) where it overflows."""
    with np.errstate(over="ignore", invalid="ignore"):
        n = float(np.linalg.norm(v))
    return n if np.isfinite(n) else math.inf


def _pow(x: np.ndarray, p: Any) -> np.ndarray:
    """``x**p`` for x >= 0 with ``0**0 = 1``."""
    return np.power(np.maximum(x, 0.0), p)


def _dpow(x: np.ndarray, p: Any) -> np.ndarray:
    """d(x**p)/dx for x >= 0; 0 where p == 0 and where the derivative is infinite (x == 0, p < 1)."""
    x = np.maximum(np.asarray(x, float), 0.0)
    p = np.broadcast_to(np.asarray(p, float), np.broadcast_shapes(np.shape(x), np.shape(p)))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = p * np.power(x, p - 1.0)
    return np.where((p == 0.0) | ~np.isfinite(d), 0.0, d)


def _rate_power(tau: np.ndarray, xi: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``|tau/xi|^n`` and ``|tau/xi|^(n-1) / xi`` with a clipped exponent (no overflow), shapes as ``tau``."""
    ratio = np.abs(tau) / xi
    with np.errstate(divide="ignore"):
        log_r = np.log(ratio)
    pw = np.exp(np.minimum(n * log_r, _LOG_MAX))
    with np.errstate(invalid="ignore"):
        pw1 = np.where(n == 1.0, 1.0, np.exp(np.minimum((n - 1.0) * log_r, _LOG_MAX)))
    return pw, pw1 / xi


@dataclasses.dataclass
class PointState:
    """State of the material point after a (sub)step.

    Attributes
    ----------
    Fp_inv : numpy.ndarray, shape (3, 3)
        Stored inverse plastic deformation (reference sample frame -> lattice frame), det 1.
    xi_sl, gamma_sl : numpy.ndarray, shape (N_sl,)
        Slip resistance (Pa) and accumulated slip (-).
    xi_tw, gamma_tw : numpy.ndarray, shape (N_tw,)
        Twin resistance (Pa) and accumulated twin shear (-).
    s : numpy.ndarray, shape (6,)
        Second Piola-Kirchhoff stress in the lattice frame, Mandel, Pa.
    Lp : numpy.ndarray, shape (3, 3)
        Plastic velocity gradient of the last step, lattice frame, 1/s.
    F : numpy.ndarray, shape (3, 3)
        Deformation gradient (sample frame).
    """

    Fp_inv: np.ndarray
    xi_sl: np.ndarray
    gamma_sl: np.ndarray
    xi_tw: np.ndarray
    gamma_tw: np.ndarray
    s: np.ndarray
    Lp: np.ndarray
    F: np.ndarray


class Model:
    """phenopowerlaw parameters of one phase, per system, with the local backward-Euler solver.

    Parameters
    ----------
    phase : micropipe.crystal.material.Phase
        Hooke elasticity and phenopowerlaw plasticity.
    twins : bool
        Include the twin systems (if the phase has any); without, the phase is treated as slip-only.
    """

    def __init__(self, phase: Phase, *, twins: bool = True) -> None:
        pl = phase.plastic
        self.phase = phase
        self.C = hooke_mandel(phase)
        self.ns = pl.sum_N_sl
        self.nt = pl.sum_N_tw if twins else 0
        ns, nt = self.ns, self.nt
        self.P_sl = phase.schmid_slip() if ns else np.zeros((0, 3, 3))
        self.P_tw = phase.schmid_twin() if nt else np.zeros((0, 3, 3))
        self.p_sl = mandel(self.P_sl).reshape(ns, 6)
        self.p_tw = mandel(self.P_tw).reshape(nt, 6)
        zeros_s, zeros_t = np.zeros(ns), np.zeros(nt)
        if ns:
            self.xi0_sl = pl.per_system("xi_0_sl")
            self.xi_inf = pl.per_system("xi_inf_sl")
            self.g0_sl = pl.per_system("dot_gamma_0_sl")
            self.n_sl = pl.per_system("n_sl")
            self.a_sl = pl.per_system("a_sl")
            self.h0_sl = pl.per_system("h_0_sl_sl")
            self.H_ss = pl.interaction(phase.lattice, "sl-sl")
        else:
            self.xi0_sl = self.xi_inf = self.g0_sl = self.n_sl = self.a_sl = self.h0_sl = zeros_s
            self.H_ss = np.zeros((0, 0))
        if nt:
            self.xi0_tw = pl.per_system("xi_0_tw")
            self.g0_tw = pl.per_system("dot_gamma_0_tw")
            self.n_tw = pl.per_system("n_tw")
            self.h0_tt = pl.per_system("h_0_tw_tw")
            self.H_tt = pl.interaction(phase.lattice, "tw-tw")
            self.gamma_char = lattice.characteristic_shear_twin(phase.lattice, pl.N_tw, phase.c_a)
        else:
            self.xi0_tw = self.g0_tw = self.n_tw = self.h0_tt = self.gamma_char = zeros_t
            self.H_tt = np.zeros((0, 0))
        if ns and nt:
            self.h0_ts = pl.per_system("h_0_tw_sl")
            self.f_sat = pl.per_system("f_sat_sl_tw")
            self.H_st = pl.interaction(phase.lattice, "sl-tw")
            self.H_ts = pl.interaction(phase.lattice, "tw-sl")
        else:
            self.h0_ts, self.f_sat = zeros_t, zeros_s
            self.H_st, self.H_ts = np.zeros((ns, nt)), np.zeros((nt, ns))
        self.c_1, self.c_2, self.c_3, self.c_4 = pl.c_1, pl.c_2, pl.c_3, pl.c_4
        self.size = 6 + ns + nt

    # ------------------------------------------------------------------------------------------------------------
    def initial_state(self, O: Any) -> PointState:
        """Undeformed state for orientation ``O`` (DAMASK quaternion (4,) or damask.Rotation): ``F_p^-1 = R``."""
        R = np.asarray(lattice.crystal_to_sample(O), float).reshape(3, 3)
        return PointState(Fp_inv=R.copy(), xi_sl=self.xi0_sl.copy(), gamma_sl=np.zeros(self.ns),
                          xi_tw=self.xi0_tw.copy(), gamma_tw=np.zeros(self.nt), s=np.zeros(6), Lp=np.zeros((3, 3)),
                          F=np.eye(3))

    def _split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ns = self.ns
        return y[:6], y[6:6 + ns], y[6 + ns:]

    def _kinetics(self, s: np.ndarray, xs: np.ndarray, xt: np.ndarray, old: PointState, dt: float
                  ) -> dict[str, Any]:
        """Shear rates (1/s) of the step and their derivatives with respect to S (Mandel) and xi.

        The twin rates contain the new twin fraction, ``F_tw,new = F_tw,old + dt sum_t gdot_t / s_t``; with
        ``r_t = gdot_0,tw (tau_t/xi_t)^n_tw`` (tau_t > 0) the implicit relation ``gdot_t = (1 - F_tw,new) r_t``
        has the closed form ``gdot_t = (1 - F_tw,old) r_t / D``, ``D = 1 + dt sum_k r_k / s_k``, so that the
        accumulated shears need no unknowns of their own.
        """
        tau_s = self.p_sl @ s
        pw, pw1 = _rate_power(tau_s, xs, self.n_sl)
        gd_s = self.g0_sl * np.sign(tau_s) * pw
        gs_ds = (self.g0_sl * self.n_sl * pw1)[:, None] * self.p_sl  # d gdot_sl / dS, (N_sl, 6)
        gs_dx = -self.n_sl * gd_s / xs  # d gdot_sl / d xi_sl (diagonal)
        tau_t = self.p_tw @ s
        pos = tau_t > 0.0
        pw_t, pw1_t = _rate_power(np.where(pos, tau_t, 0.0), xt, self.n_tw)
        r_t = np.where(pos, self.g0_tw * pw_t, 0.0)
        r_ds = np.where(pos, self.g0_tw * self.n_tw * pw1_t, 0.0)[:, None] * self.p_tw
        r_dx = -self.n_tw * r_t / xt
        F_old = float(np.sum(old.gamma_tw / self.gamma_char)) if self.nt else 0.0
        inv_s = 1.0 / self.gamma_char if self.nt else np.zeros(0)
        D = 1.0 + dt * float(np.sum(r_t * inv_s))
        gd_t = (1.0 - F_old) * r_t / D
        M = (1.0 - F_old) * (np.eye(self.nt) / D - dt * np.outer(r_t, inv_s) / D**2)  # d gdot_tw / d r
        dF_dr = (1.0 - F_old) * dt * inv_s / D**2  # d F_tw,new / d r
        gamma_sl = old.gamma_sl + dt * np.abs(gd_s)
        return {"tau_s": tau_s, "gd_s": gd_s, "gs_ds": gs_ds, "gs_dx": gs_dx, "tau_t": tau_t, "gd_t": gd_t,
                "gt_ds": M @ r_ds, "gt_dx": M * r_dx[None, :], "F_tw": 1.0 - (1.0 - F_old) / D,
                "F_ds": dF_dr @ r_ds, "F_dx": dF_dr * r_dx,
                "gamma_sl": gamma_sl, "gamma_tw": old.gamma_tw + dt * gd_t}

    def residual(self, y: np.ndarray, A: np.ndarray, dt: float, old: PointState, *,
                 jacobian: bool = True) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """Residual of the backward-Euler step and its Jacobian.

        Parameters
        ----------
        y : numpy.ndarray, shape (6 + N_sl + N_tw,)
            Unknowns: S (Mandel, lattice frame, Pa), xi_sl (Pa), xi_tw (Pa).  The accumulated shears follow
            explicitly: ``gamma_new = gamma_old + dt |gdot|`` (see :meth:`_kinetics` for the twins).
        A : numpy.ndarray, shape (3, 3)
            ``F_new F_p,old^-1``.
        dt : float
            Time step, s.
        old : PointState
            State at the start of the step.

        Returns
        -------
        R : numpy.ndarray, shape as y
            ``S - C:E_e`` and ``xi - xi_old - dt xidot`` (Pa).
        J : numpy.ndarray, shape (len(y), len(y)) or None
            dR/dy.
        aux : dict
            ``Lp`` (3, 3) 1/s, ``B = I - dt Lp``, ``Fe`` (3, 3), and the kinetics of :meth:`_kinetics`.
        """
        ns, nt = self.ns, self.nt
        s, xs, xt = self._split(y)
        k = self._kinetics(s, xs, xt, old, dt)
        gd_s, gd_t = k["gd_s"], k["gd_t"]
        Lp = np.einsum("a,aij->ij", gd_s, self.P_sl) + np.einsum("a,aij->ij", gd_t, self.P_tw)
        B = _EYE - dt * Lp
        Fe = A @ B
        E = 0.5 * (Fe.T @ Fe - _EYE)
        R_s = s - self.C @ mandel(E)
        F_tw = max(float(k["F_tw"]), 0.0)
        sq = math.sqrt(F_tw)
        xi_sat = self.xi_inf + self.f_sat * sq
        u = 1.0 - xs / xi_sat
        left = np.sign(u) * np.abs(u) ** self.a_sl
        hfac = self.h0_sl * (1.0 + self.c_1 * _pow(F_tw, self.c_2))
        abs_s = np.abs(gd_s)
        Hg = self.H_ss @ abs_s
        xdot_s = hfac * left * Hg + self.H_st @ gd_t
        G_sl = max(float(np.sum(k["gamma_sl"])), 0.0)
        f3 = self.h0_ts * _pow(G_sl, self.c_3)
        f4 = self.h0_tt * _pow(F_tw, self.c_4)
        Hts_g = self.H_ts @ abs_s
        Htt_g = self.H_tt @ gd_t
        xdot_t = f3 * Hts_g + f4 * Htt_g
        R = np.concatenate([R_s, xs - old.xi_sl - dt * xdot_s, xt - old.xi_tw - dt * xdot_t])
        aux = {"Lp": Lp, "B": B, "Fe": Fe, **k}
        if not jacobian:
            return R, None, aux

        sg = np.sign(gd_s)
        J = np.zeros((self.size, self.size))
        i_s, i_xs, i_xt = slice(0, 6), slice(6, 6 + ns), slice(6 + ns, self.size)
        abs_ds = sg[:, None] * k["gs_ds"]  # d|gdot_sl|/dS
        abs_dx = sg * k["gs_dx"]  # d|gdot_sl|/dxi_sl (diagonal)
        # stress: dE_m = -dt sum_a Q_a dgdot_a with Q_a = mandel(sym(Fe^T A P_a))
        K = Fe.T @ A
        CQs = self.C @ mandel(np.einsum("ij,ajk->aik", K, self.P_sl)).reshape(ns, 6).T  # (6, N_sl)
        CQt = self.C @ mandel(np.einsum("ij,ajk->aik", K, self.P_tw)).reshape(nt, 6).T  # (6, N_tw)
        J[i_s, i_s] = np.eye(6) + dt * (CQs @ k["gs_ds"] + CQt @ k["gt_ds"])
        J[i_s, i_xs] = dt * CQs * k["gs_dx"][None, :]
        J[i_s, i_xt] = dt * CQt @ k["gt_dx"]
        # slip resistance
        with np.errstate(divide="ignore"):
            dleft_du = np.where(u == 0.0, 0.0, self.a_sl * np.abs(u) ** (self.a_sl - 1.0))
        hl = hfac * left
        J[i_xs, i_s] = -dt * (hl[:, None] * (self.H_ss @ abs_ds) + self.H_st @ k["gt_ds"])
        J[i_xs, i_xs] = np.diag(1.0 + dt * hfac * dleft_du * Hg / xi_sat) - dt * hl[:, None] * self.H_ss * abs_dx
        J[i_xs, i_xt] = -dt * self.H_st @ k["gt_dx"]
        if nt:
            # dependence on F_tw,new (through xi_sat and the c_1 factor)
            dsq = 0.5 / sq if sq > 0.0 else 0.0
            du_dF = xs / xi_sat**2 * self.f_sat * dsq
            dhfac_dF = self.h0_sl * self.c_1 * _dpow(F_tw, self.c_2)
            dxs_dF = (dhfac_dF * left + hfac * dleft_du * du_dF) * Hg
            J[i_xs, i_s] -= dt * np.outer(dxs_dF, k["F_ds"])
            J[i_xs, i_xt] -= dt * np.outer(dxs_dF, k["F_dx"])
            # twin resistance
            df3 = self.h0_ts * _dpow(G_sl, self.c_3)  # d f3 / d G_sl, G_sl = sum gamma_sl,new
            G_ds = dt * abs_ds.sum(axis=0)
            G_dx = dt * abs_dx
            df4 = self.h0_tt * _dpow(F_tw, self.c_4)
            J[i_xt, i_s] = -dt * (f3[:, None] * (self.H_ts @ abs_ds) + np.outer(df3 * Hts_g, G_ds)
                                  + f4[:, None] * (self.H_tt @ k["gt_ds"]) + np.outer(df4 * Htt_g, k["F_ds"]))
            J[i_xt, i_xs] = -dt * (f3[:, None] * self.H_ts * abs_dx[None, :] + np.outer(df3 * Hts_g, G_dx))
            J[i_xt, i_xt] = np.eye(nt) - dt * (f4[:, None] * (self.H_tt @ k["gt_dx"])
                                               + np.outer(df4 * Htt_g, k["F_dx"]))
        return R, J, aux

    # ------------------------------------------------------------------------------------------------------------
    def _weights(self, A: np.ndarray, old: PointState) -> np.ndarray:
        """Residual weights (1/Pa): stress rows by the larger of the elastic trial and the old stress (>= 1 Pa),
        each resistance row by the larger of that and its old resistance."""
        s_trial = self.C @ mandel(0.5 * (A.T @ A - _EYE))
        sig = max(float(np.max(np.abs(s_trial))), float(np.max(np.abs(old.s))), 1.0)
        return 1.0 / np.concatenate([np.full(6, sig), np.maximum(np.concatenate([old.xi_sl, old.xi_tw]), sig)])

    def _guesses(self, A: np.ndarray, dt: float, old: PointState, prev: np.ndarray | None) -> list[np.ndarray]:
        """Starting points of the local Newton iteration, best first.

        Guesses other than ``prev`` are scaled down (never up) until no system would shear faster than ten times
        the overall deformation rate ``|F_new - F_old| / dt``: started far above that, the Newton iteration
        on ``|tau/xi|^n`` creeps down by about ``tau/n`` per iteration and the line search stalls.
        """
        state = np.concatenate([old.xi_sl, old.xi_tw])
        rate = float(np.linalg.norm(A @ np.linalg.inv(old.Fp_inv) - old.F)) / dt
        cap_sl = (np.maximum(10.0 * rate, 1e-30) / self.g0_sl) ** (1.0 / self.n_sl)
        cap_tw = (np.maximum(10.0 * rate, 1e-30) / self.g0_tw) ** (1.0 / self.n_tw)

        def capped(s: np.ndarray) -> np.ndarray:
            excess = max(float(np.max(np.abs(self.p_sl @ s) / old.xi_sl / cap_sl, initial=0.0)),
                         float(np.max((self.p_tw @ s) / old.xi_tw / cap_tw, initial=0.0)))
            return np.concatenate([s / max(excess, 1.0), state])

        guesses = [] if prev is None else [prev]
        if np.any(old.Lp):  # DAMASK's predictor: the previous step's L_p
            Fe = A @ (_EYE - dt * old.Lp)
            guesses.append(capped(self.C @ mandel(0.5 * (Fe.T @ Fe - _EYE))))
        guesses.append(capped(self.C @ mandel(0.5 * (A.T @ A - _EYE))))  # elastic trial
        guesses.append(capped(old.s))
        return guesses

    def solve_step(self, A: np.ndarray, dt: float, old: PointState, prev: np.ndarray | None = None, *,
                   tol: float = 1e-10, max_iter: int = 200) -> tuple[np.ndarray, dict[str, Any]]:
        """Solve the local backward-Euler step.

        Parameters
        ----------
        A : numpy.ndarray, shape (3, 3)
            ``F_new F_p,old^-1``.
        dt : float
            Time step, s.
        old : PointState
            State at the start of the step.
        prev : numpy.ndarray, optional
            A solution of a nearby problem (same step, slightly different F) to start from.
        tol : float
            Target for the weighted residual norm (see :meth:`_weights`: relative to the stress, resp. resistance).

        Returns
        -------
        y : numpy.ndarray
            The converged unknowns (see :meth:`residual`).
        aux : dict
            As :meth:`residual`, at the solution, plus ``iterations`` and ``residual`` (weighted norm).
        """
        w = self._weights(A, old)
        y, res, total = self._solve_from_guesses(A, dt, old, prev, w, tol, max_iter)
        if not res <= tol:
            y, res, it = self._solve_by_continuation(A, dt, old, w, tol, max_iter)
            total += it
        if not res <= tol:
            raise RuntimeError(f"local Newton did not converge: weighted residual {res:.3e} after {total} "
                               f"iterations (dt={dt} s); try substeps")
        _, _, aux = self.residual(y, A, dt, old, jacobian=False)
        aux.update(iterations=total, residual=res)
        return y, aux

    def _solve_from_guesses(self, A: np.ndarray, dt: float, old: PointState, prev: np.ndarray | None, w: np.ndarray,
                            tol: float, max_iter: int) -> tuple[np.ndarray, float, int]:
        best: tuple[float, np.ndarray] | None = None
        total = 0
        for y0 in self._guesses(A, dt, old, prev):
            y, res, it = self._newton(y0, A, dt, old, w, tol, max_iter)
            total += it
            if best is None or res < best[0]:
                best = (res, y)
            if res <= tol:
                break
        assert best is not None
        return best[1], best[0], total

    def _solve_by_continuation(self, A: np.ndarray, dt: float, old: PointState, w: np.ndarray, tol: float,
                               max_iter: int) -> tuple[np.ndarray, float, int]:
        """Fallback: reach the step's solution along ``A(lam) = A_0 + lam (A - A_0)``, ``dt(lam) = lam dt``.

        ``A_0 = F_old F_p,old^-1``; every stage is a backward-Euler step from ``old`` itself (not a substep), so the
        last stage, lam = 1, is exactly the step asked for; the stages only provide starting points.
        """
        A0 = old.F @ old.Fp_inv
        total, y, res = 0, np.zeros(self.size), math.inf
        for stages in (4, 16, 64):
            y_stage = None
            for k in range(1, stages + 1):
                lam = k / stages
                A_k = A0 + lam * (A - A0)
                y, res, it = self._solve_from_guesses(A_k, lam * dt, old, y_stage, w, tol, max_iter)
                total += it
                if not res <= tol:
                    break
                y_stage = y
            if res <= tol:
                break
        return y, res, total

    def _newton(self, y: np.ndarray, A: np.ndarray, dt: float, old: PointState, w: np.ndarray, tol: float,
                max_iter: int) -> tuple[np.ndarray, float, int]:
        """Damped Newton from ``y``; returns the best point, its weighted residual norm and the iterations."""
        xi = slice(6, 6 + self.ns + self.nt)
        R, J, _ = self.residual(y, A, dt, old)
        phi = _norm(w * R)
        polish = 0
        for it in range(1, max_iter + 1):
            if not np.isfinite(phi):
                return y, math.inf, it
            if phi <= tol:
                polish += 1
                if polish > 2:  # two more full steps towards round-off
                    return y, phi, it
            try:
                dy = -np.linalg.solve(J, R)
            except np.linalg.LinAlgError:
                return y, phi, it
            alpha, accepted = 1.0, False
            for _ in range(1 if polish else 40):
                y_new = y + alpha * dy
                if np.all(y_new[xi] > 0.0):
                    R_new, J_new, _ = self.residual(y_new, A, dt, old)
                    phi_new = _norm(w * R_new)
                    if np.isfinite(phi_new) and phi_new <= (1.0 - 1e-4 * alpha) * phi:
                        accepted = True
                        break
                alpha *= 0.5
            if not accepted:  # round-off level (when polishing) or stuck
                return y, phi, it
            y, R, J, phi = y_new, R_new, J_new, phi_new
        return y, phi, max_iter

    def stress(self, F: np.ndarray, old: PointState, dt: float, prev: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, PointState, dict[str, Any]]:
        """First Piola-Kirchhoff stress after a backward-Euler step to ``F`` from ``old``.

        Returns
        -------
        P : numpy.ndarray, shape (3, 3)
            Pa, sample frame.
        y : numpy.ndarray
            Local unknowns at the solution (for warm starts).
        new : PointState
            State after the step (stored ``F_p`` rescaled to det 1).
        aux : dict
            See :meth:`solve_step`.
        """
        y, aux = self.solve_step(F @ old.Fp_inv, dt, old, prev)
        s, xs, xt = self._split(y)
        gs, gt = aux["gamma_sl"], aux["gamma_tw"]
        Fp_inv = old.Fp_inv @ aux["B"]
        P = F @ Fp_inv @ unmandel(s) @ Fp_inv.T
        stored = Fp_inv / np.cbrt(np.linalg.det(Fp_inv))
        new = PointState(Fp_inv=stored, xi_sl=xs.copy(), gamma_sl=gs.copy(), xi_tw=xt.copy(), gamma_tw=gt.copy(),
                         s=s.copy(), Lp=aux["Lp"].copy(), F=F.copy())
        return P, y, new, aux


def _increments(t: float, N: int, r: float) -> np.ndarray:
    """DAMASK_grid's increment lengths (s) of a load step, shape (N,)."""
    if r == 1.0:
        return np.full(N, t / N)
    k = np.arange(1, N + 1)
    return t * (r ** (k - 1) - r**k) / (1.0 - r**N)


def _solve_bc(model: Model, F_guess: np.ndarray, free: np.ndarray, P_target: np.ndarray, old: PointState,
              dt: float, *, rtol: float = 1e-10, h: float = 1e-7, max_iter: int = 50
              ) -> tuple[np.ndarray, np.ndarray, PointState, dict[str, Any]]:
    """Find the free components of ``F`` (``free`` True) such that ``P[free] = P_target[free]``."""
    F = F_guess.copy()
    P, y, new, aux = model.stress(F, old, dt)
    if not free.any():
        return F, P, new, aux
    for it in range(max_iter):
        r = P[free] - P_target[free]
        scale = max(float(np.max(np.abs(P))), 1.0)
        if np.max(np.abs(r)) <= rtol * scale:
            aux["bc_iterations"] = it
            return F, P, new, aux
        J = np.empty((r.size, r.size))
        for j, (a, b) in enumerate(np.argwhere(free)):
            Fh = F.copy()
            Fh[a, b] += h
            Ph, _, _, _ = model.stress(Fh, old, dt, y)
            J[:, j] = (Ph[free] - P[free]) / h
        dF = -np.linalg.solve(J, r)
        alpha, trial = 1.0, None
        for _ in range(30):  # step halving until |P - P_target| decreases (or the step is 1e-3 of Newton's)
            F_new = F.copy()
            F_new[free] += alpha * dF
            try:
                trial = (F_new, *model.stress(F_new, old, dt, y))
            except RuntimeError:
                alpha *= 0.5
                continue
            if np.max(np.abs(trial[1][free] - P_target[free])) < np.max(np.abs(r)) or alpha < 1e-3:
                break
            alpha *= 0.5
        if trial is None:
            raise RuntimeError("mixed boundary condition: no local solution along the Newton direction; try substeps")
        F, P, y, new, aux = trial
    raise RuntimeError(f"mixed boundary condition not met after {max_iter} iterations: "
                       f"residual {np.max(np.abs(P[free] - P_target[free])):.3e} Pa")


def integrate(phase: Phase, O: Any, loadcase: Loadcase, *, substeps: int = 1, twins: bool = True) -> dict[str, Any]:
    """Integrate one material point (single crystal, homogeneous deformation) through a load case.

    Parameters
    ----------
    phase : micropipe.crystal.material.Phase
        Hooke + phenopowerlaw phase.
    O : numpy.ndarray, shape (4,), or damask.Rotation
        Orientation as a DAMASK unit quaternion (passive, sample -> crystal), as in material.yaml.
    loadcase : micropipe.crystal.loadcase.Loadcase
        Load steps with their mixed boundary conditions (``dot_F``/``F``/``L`` and ``P``/``dot_P``).
    substeps : int
        Equal backward-Euler steps per increment (1 = DAMASK's one step per increment).
    twins : bool
        Include twinning (if the phase has twin systems).

    Returns
    -------
    result : dict
        Per increment, row 0 the undeformed state (n = 1 + total increments):
        ``time`` (n,) s; ``F``, ``P``, ``sigma`` (n, 3, 3) sample frame (``sigma = P F^T / det F``, Pa);
        ``xi_sl``, ``gamma_sl`` (n, N_sl); ``xi_tw``, ``gamma_tw`` (n, N_tw) (N_tw = 0 without twins), Pa and -;
        ``dot_gamma_sl`` (n, N_sl), ``dot_gamma_tw`` (n, N_tw) shear rates (signed for slip) of the increment's
        last (sub)step, 1/s, so that ``gamma[k] = gamma[k-1] + dt |dot_gamma[k]|`` with one step per increment;
        ``Fp`` (n, 3, 3) stored plastic deformation (det 1; ``Fp[0] = O`` as matrix), ``Lp`` (n, 3, 3) lattice
        frame 1/s; ``P_bc_error`` (n,) largest ``|P - P_target|`` on stress-controlled components, Pa;
        ``iterations`` (n,) local Newton iterations of the increment's last step.
    """
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    model = Model(phase, twins=twins)
    state = model.initial_state(O)
    F = np.eye(3)
    P = np.zeros((3, 3))
    P_target = np.zeros((3, 3))
    rate_guess = np.zeros((3, 3))
    t = 0.0
    rows: dict[str, list[Any]] = {k: [] for k in ("time", "F", "P", "xi_sl", "gamma_sl", "xi_tw", "gamma_tw",
                                                  "dot_gamma_sl", "dot_gamma_tw", "Fp", "Lp", "P_bc_error",
                                                  "iterations")}
    rates = (np.zeros(model.ns), np.zeros(model.nt))

    def record(bc_err: float, iterations: int) -> None:
        for key, value in (("time", t), ("F", F), ("P", P), ("xi_sl", state.xi_sl), ("gamma_sl", state.gamma_sl),
                           ("xi_tw", state.xi_tw), ("gamma_tw", state.gamma_tw), ("dot_gamma_sl", rates[0]),
                           ("dot_gamma_tw", rates[1]), ("Fp", np.linalg.inv(state.Fp_inv)), ("Lp", state.Lp),
                           ("P_bc_error", bc_err), ("iterations", iterations)):
            rows[key].append(np.array(value, copy=True))

    record(0.0, 0)
    for step in loadcase.steps:
        prescribed = ~np.isnan(step.deformation)
        free = ~prescribed
        values = np.nan_to_num(step.deformation)
        stress = np.nan_to_num(step.stress)
        elapsed = 0.0
        # 'P': the prescribed value; 'dot_P': integrated from the stress the step starts with
        P_target = np.where(free, stress if step.stress_key == "P" else P, 0.0)
        for dt_inc in _increments(step.t, step.N, step.r):
            for _ in range(substeps):
                dt = dt_inc / substeps
                if step.deformation_key == "dot_F":
                    dot_F = values
                elif step.deformation_key == "F":
                    dot_F = (values - F) / (step.t - elapsed)
                else:  # 'L': DAMASK_grid's dot_F = L F_lastInc with the free components of L zeroed
                    dot_F = values @ F
                if step.stress_key == "dot_P":
                    P_target = P_target + dt * np.where(free, stress, 0.0)
                F_guess = F + dt * np.where(prescribed, dot_F, rate_guess)
                F_new, P, state_new, aux = _solve_bc(model, F_guess, free, P_target, state, dt)
                rate_guess = (F_new - F) / dt
                F, state = F_new, state_new
                rates = (aux["gd_s"], aux["gd_t"])
                elapsed += dt
                t += dt
            err = float(np.max(np.abs(P - P_target)[free], initial=0.0))
            record(err, int(aux["iterations"]))
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["sigma"] = np.einsum("nij,nkj->nik", out["P"], out["F"]) / np.linalg.det(out["F"])[:, None, None]
    return out


def read_curve(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a reference ``curve.csv`` as float arrays, by header name."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def compare_with_damask(case_dir: str | Path, *, substeps: int = 1, verbose: bool = True) -> dict[str, Any]:
    """Integrate a single-crystal reference case and compare sigma_zz with DAMASK_grid's ``curve.csv``.

    Parameters
    ----------
    case_dir : str or pathlib.Path
        Folder with ``material.yaml`` (one material entry), ``load.yaml`` and ``curve.csv``.
    substeps : int
        Backward-Euler steps per increment.
    verbose : bool
        Print a table per increment.

    Returns
    -------
    out : dict
        ``result`` (see :func:`integrate`), ``curve`` (the csv columns), ``rel`` (n,) relative deviation of
        sigma_zz (0 at the undeformed row), ``max_rel`` (float).
    """
    case_dir = Path(case_dir)
    mat = load_material(case_dir / "material.yaml")
    if len(mat.materials) != 1:
        raise ValueError(f"{case_dir}: {len(mat.materials)} material entries, expected a single crystal")
    phase = mat.phases[mat.phase_names()[0]]
    result = integrate(phase, mat.orientations()[0], load_loadcase(case_dir / "load.yaml"), substeps=substeps)
    curve = read_curve(case_dir / "curve.csv")
    ours, ref = result["sigma"][:, 2, 2], curve["sigma_zz_Pa"]
    if ours.shape != ref.shape:
        raise ValueError(f"{case_dir}: {ours.size} increments integrated, curve.csv has {ref.size}")
    rel = np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-300)
    rel[ref == 0.0] = np.abs(ours[ref == 0.0])
    if verbose:
        print(f"{'inc':>3} {'time/s':>7} {'sigma_zz ref/Pa':>17} {'sigma_zz/Pa':>17} {'rel. dev':>10} "
              f"{'P_xx DAMASK/Pa':>15}")
        for i in range(ref.size):
            print(f"{i:3d} {result['time'][i]:7.3f} {ref[i]:17.6f} {ours[i]:17.6f} {rel[i]:10.2e} "
                  f"{curve['P_xx_Pa'][i]:15.4e}")
        print(f"max relative deviation: {rel.max():.3e}")
    return {"result": result, "curve": curve, "rel": rel, "max_rel": float(rel.max())}


if __name__ == "__main__":
    default = Path("/work/shared/refs/damask/a_Cu_cube_8")
    compare_with_damask(sys.argv[1] if len(sys.argv) > 1 else default,
                        substeps=int(sys.argv[2]) if len(sys.argv) > 2 else 1)
