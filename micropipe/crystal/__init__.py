"""Crystallography and DAMASK inputs for crystal plasticity: lattices, systems, stiffness, tensors, material.yaml,
load.yaml.

:data:`LATTICES`: the Bravais lattices micropipe knows (DAMASK's names). ``tensors``: Mandel/Voigt notation
and stiffness constructors. ``lattice``: slip/twin systems, Schmid tensors and interaction matrices of cF, cI
and hP in DAMASK's order (from :mod:`damask`, plus DAMASK's interaction-type tables). ``elastic``: Hooke
stiffness and its rotation to the sample frame.  ``material``: validated reading and writing of material.yaml
(``Hooke``, ``Phenopowerlaw``).  ``loadcase``: validated reading and writing of DAMASK_grid load.yaml.
``materials/``: Cu, Mg and Fe phase files with their sources (:func:`shipped_material`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

LATTICES = ("cF", "cI", "hP")
"""Bravais lattices of a phase, in DAMASK's names: face-centred cubic, body-centred cubic, hexagonal."""

MATERIALS = ("Cu", "Mg", "Fe")
"""Shipped phase files in ``micropipe/crystal/materials/``."""


def check_lattice(lattice: str, where: str = "lattice") -> str:
    """``lattice`` if it is one of :data:`LATTICES`; else a ``ValueError`` that names ``where`` and the valid ones."""
    if lattice not in LATTICES:
        raise ValueError(f"{where}: unknown lattice {lattice!r}, expected one of {', '.join(LATTICES)}")
    return lattice


def shipped_material(name: str) -> Path:
    """Path of a shipped phase file (``Cu``, ``Mg``, ``Fe``); read it with :func:`material.load_phase`."""
    if name not in MATERIALS:
        raise ValueError(f"material: unknown shipped material {name!r}, expected one of {', '.join(MATERIALS)}")
    return Path(str(resources.files("micropipe.crystal").joinpath("materials", f"{name}.yaml")))
