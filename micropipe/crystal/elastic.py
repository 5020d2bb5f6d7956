"""Lattice stiffness of cubic and hexagonal crystals from DAMASK Hooke constants, and its rotation to the sample frame.

Notation follows :mod:`micropipe.crystal.tensors` (component order 11, 22, 33, 23, 13, 12): *Voigt* is the
matrix of tensor components ``C_ijkl`` (DAMASK's ``C_ij`` as written in material.yaml), *Mandel* scales the
shear rows and columns by sqrt(2).  Values in Pa.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from micropipe.crystal import check_lattice, tensors
from micropipe.crystal.lattice import crystal_to_sample

log = logging.getLogger(__name__)

Notation = Literal["voigt", "mandel"]


def stiffness(lattice: str, C_11: Any, C_12: Any, C_44: Any, C_13: Any = None, C_33: Any = None, *,
              notation: Notation = "voigt") -> np.ndarray:
    """Stiffness of a crystal in its lattice frame.

    Parameters
    ----------
    lattice : {'cF', 'cI', 'hP'}
        Bravais lattice; 'hP' needs ``C_13`` and ``C_33`` as well (c along z, ``C_66 = (C_11 - C_12)/2``).
    C_11, C_12, C_44, C_13, C_33 : float or numpy.ndarray, shape (...)
        Elastic constants in Pa (DAMASK's Hooke ``C_ij``).
    notation : {'voigt', 'mandel'}
        Matrix notation of the result.

    Returns
    -------
    C : numpy.ndarray, shape (..., 6, 6)
        Stiffness in Pa.
    """
    check_lattice(lattice)
    if lattice == "hP":
        if C_13 is None or C_33 is None:
            raise ValueError("stiffness: lattice 'hP' needs C_11, C_12, C_13, C_33 and C_44")
        C = tensors.hexagonal_stiffness(C_11, C_12, C_13, C_33, C_44)
    else:
        if C_13 is not None or C_33 is not None:
            raise ValueError(f"stiffness: cubic lattice {lattice!r} takes C_11, C_12 and C_44 only")
        C = tensors.cubic_stiffness(C_11, C_12, C_44)
    return _as(C, notation)


def rotate_to_sample(C: np.ndarray, O: Any, *, notation: Notation = "voigt") -> np.ndarray:
    """Lattice-frame stiffness rotated to the sample frame of orientations ``O``.

    Parameters
    ----------
    C : numpy.ndarray, shape (..., 6, 6)
        Stiffness in the lattice frame, Pa, in ``notation``.
    O : damask.Rotation or numpy.ndarray, shape (..., 4)
        DAMASK orientations (unit quaternions, passive sample -> crystal), broadcast against C.
    notation : {'voigt', 'mandel'}
        Notation of ``C`` and of the result.

    Returns
    -------
    C_sample : numpy.ndarray, shape (..., 6, 6)
        ``C'_ijkl = R_ia R_jb R_kc R_ld C_abcd`` with R the crystal -> sample rotation.
    """
    if notation not in ("voigt", "mandel"):
        raise ValueError(f"notation: {notation!r}, expected 'voigt' or 'mandel'")
    C_M = np.asarray(C, float) if notation == "mandel" else tensors.mandel_from_voigt(np.asarray(C, float))
    return _as(tensors.rotate_stiffness(C_M, crystal_to_sample(O)), notation)


def _as(C_M: np.ndarray, notation: str) -> np.ndarray:
    if notation == "mandel":
        return C_M
    if notation == "voigt":
        return tensors.voigt_from_mandel(C_M)
    raise ValueError(f"notation: {notation!r}, expected 'voigt' or 'mandel'")
