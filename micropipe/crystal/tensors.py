"""Mandel and Voigt notation of symmetric second- and fourth-order tensors, and stiffness constructors.

Component order is Voigt's: 11, 22, 33, 23, 13, 12.  *Mandel* scales the shear components by
sqrt(2) (strain and stress alike), so the basis is orthonormal: ``eps : sigma = eps_M . sigma_M`` and a
stiffness matrix of a hyperelastic material is symmetric, with the eigenvalues of the tensor.  *Voigt*
stiffness is the matrix of tensor components, ``C_V[I, J] = C_ijkl``, which acts on engineering shear
strains (``2 eps_23``).  Stiffness functions return Mandel matrices unless their name says otherwise.
All functions broadcast over leading ``...`` axes and work on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
"""Tensor index pair (i, j) of each of the 6 notation components."""

MANDEL_WEIGHTS = np.array([1.0, 1.0, 1.0, math.sqrt(2.0), math.sqrt(2.0), math.sqrt(2.0)])
"""Factor from tensor component to Mandel component, shape (6,)."""

_TENSOR_FROM_6 = np.array([[0, 5, 4], [5, 1, 3], [4, 3, 2]])
"""Notation component of tensor entry (i, j), shape (3, 3)."""


def _weights(like: Any) -> Any:
    if isinstance(like, np.ndarray) or not hasattr(like, "new_tensor"):
        return MANDEL_WEIGHTS
    return like.new_tensor(MANDEL_WEIGHTS, dtype=like.real.dtype if like.is_complex() else like.dtype)


def mandel_from_voigt(C_V: Any) -> Any:
    """Mandel stiffness from Voigt stiffness, ``C_M[I, J] = w_I w_J C_V[I, J]``, shape (..., 6, 6)."""
    w = _weights(C_V)
    return C_V * w[:, None] * w[None, :]


def voigt_from_mandel(C_M: Any) -> Any:
    """Voigt stiffness (tensor components ``C_ijkl``) from Mandel stiffness, shape (..., 6, 6)."""
    w = _weights(C_M)
    return C_M / (w[:, None] * w[None, :])


def to_mandel(T: Any) -> Any:
    """Mandel vector of symmetric tensors: (..., 3, 3) -> (..., 6); the input is symmetrised first."""
    i, j = (np.array(a) for a in zip(*VOIGT_PAIRS, strict=True))
    return 0.5 * (T[..., i, j] + T[..., j, i]) * _weights(T)


def from_mandel(v: Any) -> Any:
    """Symmetric tensors from Mandel vectors: (..., 6) -> (..., 3, 3)."""
    t = v / _weights(v)
    return t[..., _TENSOR_FROM_6]


def isotropic_stiffness(*, E: Any = None, nu: Any = None, lam: Any = None, mu: Any = None) -> np.ndarray:
    """Isotropic Mandel stiffness from Young's modulus and Poisson's ratio, or from the Lamé constants.

    Parameters
    ----------
    E, nu : float or numpy.ndarray, shape (...)
        Young's modulus (any stress unit, e.g. Pa) and Poisson's ratio, -1 < nu < 0.5.
    lam, mu : float or numpy.ndarray, shape (...)
        Lamé's first parameter and the shear modulus, in the unit of the result.

    Returns
    -------
    C : numpy.ndarray, shape (..., 6, 6)
        ``3 K J + 2 mu K_dev`` in Mandel notation.
    """
    if (E is None) == (lam is None) or (E is None) != (nu is None) or (lam is None) != (mu is None):
        raise ValueError("give either E and nu, or lam and mu")
    if E is not None:
        lam, mu = lame(E, nu)
    lam, mu = np.asarray(lam, float), np.asarray(mu, float)
    C = np.zeros(np.broadcast_shapes(lam.shape, mu.shape) + (6, 6))
    C[..., :3, :3] = lam[..., None, None]
    C[..., range(6), range(6)] += 2.0 * mu[..., None]
    return C


def lame(E: Any, nu: Any) -> tuple[np.ndarray, np.ndarray]:
    """Lamé constants (lambda, mu) from Young's modulus E and Poisson's ratio nu (arrays broadcast)."""
    E, nu = np.asarray(E, float), np.asarray(nu, float)
    return E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu)), E / (2.0 * (1.0 + nu))


def bulk_shear(E: Any, nu: Any) -> tuple[np.ndarray, np.ndarray]:
    """Bulk and shear modulus (K, G) from Young's modulus E and Poisson's ratio nu."""
    E, nu = np.asarray(E, float), np.asarray(nu, float)
    return E / (3.0 * (1.0 - 2.0 * nu)), E / (2.0 * (1.0 + nu))


def cubic_stiffness(C_11: Any, C_12: Any, C_44: Any) -> np.ndarray:
    """Mandel stiffness (..., 6, 6) of a cubic crystal in its lattice frame from the Voigt constants."""
    C_11, C_12, C_44 = np.broadcast_arrays(*(np.asarray(c, float) for c in (C_11, C_12, C_44)))
    C = np.zeros(C_11.shape + (6, 6))
    C[..., :3, :3] = C_12[..., None, None]
    C[..., range(3), range(3)] = C_11[..., None]
    C[..., range(3, 6), range(3, 6)] = C_44[..., None]
    return mandel_from_voigt(C)


def hexagonal_stiffness(C_11: Any, C_12: Any, C_13: Any, C_33: Any, C_44: Any) -> np.ndarray:
    """Mandel stiffness (..., 6, 6) of a hexagonal crystal (c along z) from the Voigt constants.

    ``C_66 = (C_11 - C_12) / 2`` (transverse isotropy in the basal plane).
    """
    C_11, C_12, C_13, C_33, C_44 = np.broadcast_arrays(
        *(np.asarray(c, float) for c in (C_11, C_12, C_13, C_33, C_44)))
    C = np.zeros(C_11.shape + (6, 6))
    C[..., 0, 0] = C[..., 1, 1] = C_11
    C[..., 0, 1] = C[..., 1, 0] = C_12
    C[..., 0, 2] = C[..., 2, 0] = C[..., 1, 2] = C[..., 2, 1] = C_13
    C[..., 2, 2] = C_33
    C[..., 3, 3] = C[..., 4, 4] = C_44
    C[..., 5, 5] = 0.5 * (C_11 - C_12)
    return mandel_from_voigt(C)


def isotropic_part(C_M: Any) -> tuple[Any, Any]:
    """Bulk and shear modulus (K, G) of the isotropic projection of Mandel stiffness (..., 6, 6).

    ``3 K = J :: C`` and ``2 G = K_dev :: C / 5`` with the orthogonal projectors J and K_dev; exact for
    isotropic C, the Frobenius-nearest isotropic tensor otherwise.
    """
    three_K = C_M[..., :3, :3].sum((-2, -1)) / 3.0
    trace = C_M[..., range(6), range(6)].sum(-1)
    return three_K / 3.0, (trace - three_K) / 10.0


def rotate_stiffness(C_M: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Mandel stiffness rotated by rotation matrices R (..., 3, 3): ``C'_ijkl = R_ia R_jb R_kc R_ld C_abcd``."""
    Q = rotation_mandel(R)
    return np.einsum("...ia,...ab,...jb->...ij", Q, C_M, Q)


def rotation_mandel(R: np.ndarray) -> np.ndarray:
    """6x6 orthogonal Mandel matrix Q of rotations R (..., 3, 3), so that ``(R T R^T)_M = Q T_M``."""
    R = np.asarray(R, float)
    Q = np.empty(R.shape[:-2] + (6, 6))
    for J, (k, l) in enumerate(VOIGT_PAIRS):  # noqa: E741 - tensor index names
        E = np.zeros((3, 3))
        E[k, l] = E[l, k] = 1.0 if k == l else 1.0 / math.sqrt(2.0)  # Mandel basis tensor J
        Q[..., :, J] = to_mandel(np.einsum("...ia,ab,...jb->...ij", R, E, R))
    return Q
