"""Spectral (FFT) solvers on periodic voxel grids.

``grid``: wave vectors, FFT helpers and the compatibility projection / Green operator, batched, pure
torch (CPU and CUDA).  ``elastic``:
linear-elastic homogenization (effective stiffness) with a Galerkin conjugate-gradient solver.
"""
