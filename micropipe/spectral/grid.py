"""Shared spectral core for periodic voxel grids: wave vectors, FFTs and the compatibility projection.

Pure torch: every function runs unchanged on CPU and CUDA and batches over leading axes.  Fields are
laid out *components first, space last*: a tensor field is (..., 3, 3, X, Y, Z), a Mandel field
(..., 6, X, Y, Z); their real FFTs (``rfft``) are (..., X, Y, Z//2 + 1), complex.

Discretization
--------------
Fourier (trigonometric) collocation as in Moulinec & Suquet (1998) and the Galerkin form of Zeman et al.
(2010) / Vondřejc et al. (2014): the operators depend on the wave vector only through its direction
``n = xi / |xi|``, with ``xi_i = k_i / L_i`` (``k_i`` integer, ``L_i`` the edge length).  On even grids
the Nyquist index ``k_i = -N_i / 2`` stands for both ``+N_i / 2`` and ``-N_i / 2``, so ``n n`` is ambiguous
at frequencies where a Nyquist component meets any other non-zero component (flipping the sign of one
component changes ``n_i n_j``; e.g. ``(N/2, N/2, 0)`` could be ``(1, 1)`` or ``(1, -1)``); there the operators
are set to zero (as DAMASK and Moulinec-Suquet do), which also keeps the discretization symmetric under the
grid's own rotations.  Frequencies with a single non-zero component at Nyquist, e.g. ``(0, 0, N/2)``, are
unambiguous (``n n`` is even in ``n``) and kept.  Keeping them makes laminates exact: fields that vary along
one axis only are resolved without any Nyquist truncation.  Every projection here is
real and even in ``n`` at every kept frequency, so it maps real fields to real fields and is an orthogonal
projector for the Frobenius (Mandel) inner product summed over voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from micropipe.device import DTYPE

SPATIAL = (-3, -2, -1)
_SQRT2 = math.sqrt(2.0)


FFT_CHUNK_BYTES = 16 * 2**20
"""On the CPU an FFT call transforms at most this many bytes of real data; larger batches are cut into chunks
along the leading axes.  Measured on 2 cores (torch 2.13): one call on 36 fields of 64^3 float64 (75 MB)
took 53 ms forward and 134 ms inverse, the same fields in chunks of 8 took 24 and 38 ms; past ~32 MB every
call's buffers are fresh pages from the kernel and the multi-dimensional passes leave the cache."""


def _chunked(transform, src: torch.Tensor, tail: tuple[int, ...], dtype: torch.dtype, field_bytes: int,
             **kw) -> torch.Tensor:
    """``transform`` over the last three axes of ``src``, (..., *tail) out; on the CPU in calls of at most
    FFT_CHUNK_BYTES along the flattened leading axes (``field_bytes``: one real field's bytes)."""
    lead = src.shape[:-3]
    count = math.prod(lead)
    step = count if src.device.type != "cpu" else max(1, FFT_CHUNK_BYTES // field_bytes)
    if step >= count:
        return transform(src, dim=SPATIAL, **kw)
    out = torch.empty((count, *tail), dtype=dtype, device=src.device)
    flat = src.reshape(count, *src.shape[-3:])
    for i in range(0, count, step):
        transform(flat[i:i + step], dim=SPATIAL, out=out[i:i + step], **kw)
    return out.view(*lead, *tail)


def rfft(field: torch.Tensor) -> torch.Tensor:
    """Real FFT over the last three (spatial) axes: (..., X, Y, Z) -> complex (..., X, Y, Z//2 + 1)."""
    X, Y, Z = field.shape[-3:]
    return _chunked(torch.fft.rfftn, field, (X, Y, Z // 2 + 1), field.dtype.to_complex(),
                    X * Y * Z * field.element_size())


def irfft(field_hat: torch.Tensor, cells: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`rfft`: complex (..., X, Y, Z//2 + 1) -> real (..., X, Y, Z); ``cells`` = (X, Y, Z)."""
    cells = tuple(int(c) for c in cells)
    real = field_hat.real.dtype
    return _chunked(torch.fft.irfftn, field_hat, cells, real, math.prod(cells) * real.itemsize, s=cells)


def wave_vectors(cells: Sequence[int], size: Sequence[float] | None = None, *,
                 device: torch.device | str | None = None, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """Wave vectors of the rfft layout, ``xi_i = k_i / L_i``.

    Parameters
    ----------
    cells : sequence of 3 int
        Grid (X, Y, Z).
    size : sequence of 3 float, optional
        Edge lengths of the periodic box in any length unit; default ``cells`` (unit voxels).

    Returns
    -------
    xi : torch.Tensor, shape (3, X, Y, Z//2 + 1)
        Cycles per length unit; Nyquist components are negative (``-N/2``), as in ``torch.fft.fftfreq``.
    """
    cells = tuple(int(c) for c in cells)
    if len(cells) != 3 or min(cells) < 1:
        raise ValueError(f"invalid cells {cells}; expected 3 positive integers")
    size = cells if size is None else tuple(float(s) for s in size)
    if len(size) != 3 or min(size) <= 0:
        raise ValueError(f"invalid size {size}; expected 3 positive lengths")
    k = [torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype) for n in cells[:2]]
    k.append(torch.fft.rfftfreq(cells[2], d=1.0 / cells[2], device=device, dtype=dtype))
    if cells[2] % 2 == 0:
        k[2][-1] = -k[2][-1]  # rfftfreq gives +N/2; use the fftfreq sign so all axes agree
    return torch.stack(torch.meshgrid(*(k_i / L for k_i, L in zip(k, size, strict=True)), indexing="ij"))


def directions(cells: Sequence[int], size: Sequence[float] | None = None, *,
               device: torch.device | str | None = None, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """Unit wave directions ``n = xi / |xi|`` with the operators' zeros built in.

    Returns
    -------
    n : torch.Tensor, shape (3, X, Y, Z//2 + 1)
        Zero at ``xi = 0`` (the mean is prescribed, not projected) and at frequencies where a Nyquist component
        meets another non-zero one (see the module docstring).  Every operator here is quadratic in ``n``, so
        ``n = 0`` makes it vanish there.
    """
    cells = tuple(int(c) for c in cells)
    xi = wave_vectors(cells, size, device=device, dtype=dtype)
    k = wave_vectors(cells, (1.0, 1.0, 1.0), device=device, dtype=dtype)  # integers, to find Nyquist ones
    nyquist = _nyquist(cells, k)
    nonzero = k != 0
    mixed = nyquist.any(0) & (nonzero.sum(0) > 1)
    norm = torch.linalg.vector_norm(xi, dim=0)
    n = xi / torch.where(norm > 0, norm, torch.ones_like(norm))
    return torch.where(mixed, torch.zeros_like(n), n)


def _nyquist(cells: tuple[int, ...], k: torch.Tensor) -> torch.Tensor:
    """Per axis, where the integer wave numbers ``k`` (3, X, Y, Z') are the Nyquist index of an even axis."""
    return torch.stack([(k[i] == -(cells[i] // 2)) & (cells[i] % 2 == 0) & (cells[i] > 1) for i in range(3)])


def _nn(n: torch.Tensor) -> torch.Tensor:
    return n[:, None] * n[None, :]


def project_gradient(tau_hat: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Projection onto gradient (compatible, non-symmetric) fields: ``(G tau)_ij = (tau n)_i n_j``.

    The finite-strain projection of de Geus et al. (2017), the operator of a Galerkin solve for the
    deformation-gradient fluctuation.  ``tau_hat`` (..., 3, 3, X, Y, Z//2 + 1), complex; same shape out.
    """
    n2 = paired(n, tau_hat.real.dtype)
    return torch.view_as_complex(gradient_pairs(torch.view_as_real(tau_hat), n2))


def project_symmetric(tau_hat: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Projection onto compatible symmetric (small-strain) fields, tensor form.

    ``(P tau)_ij = n_i a_j + n_j a_i - (n . a) n_i n_j`` with ``a = tau n``: the Green operator of an
    isotropic reference medium with ``lambda_0 = 0, mu_0 = 1/2`` (unit stiffness on symmetric tensors).
    ``tau_hat`` (..., 3, 3, X, Y, Z//2 + 1), symmetric, complex; same shape out.
    """
    return green_isotropic(tau_hat, n, lam0=0.0, mu0=0.5)


def green_isotropic(tau_hat: torch.Tensor, n: torch.Tensor, lam0: float, mu0: float) -> torch.Tensor:
    """Green operator of an isotropic reference medium applied to a polarization field, tensor form.

    ``(Gamma0 tau)_ij = (n_i a_j + n_j a_i) / (2 mu0) - (lam0 + mu0) / (mu0 (lam0 + 2 mu0)) (n . a) n_i n_j``,
    ``a = tau n`` (Moulinec & Suquet 1998): the strain of the reference medium due to the eigenstress
    ``-tau``.  Units: 1 / (unit of lam0, mu0).

    Parameters
    ----------
    tau_hat : torch.Tensor, shape (..., 3, 3, X, Y, Z//2 + 1)
        Fourier coefficients of a symmetric polarization (stress unit), complex.
    n : torch.Tensor, shape (3, X, Y, Z//2 + 1)
        From :func:`directions`.
    """
    n = n.to(tau_hat.real.dtype)
    a = (tau_hat * n).sum(-4)  # tau n, (..., 3, X, Y, Z')
    q = (a * n).sum(-4)
    na = a[..., :, None, :, :, :] * n
    c = green_coefficient(lam0, mu0)
    return (na + na.transpose(-4, -5)) / (2.0 * mu0) - c * q[..., None, None, :, :, :] * _nn(n)


def project_symmetric_mandel(tau_hat: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """:func:`project_symmetric` on Mandel fields: (..., 6, X, Y, Z//2 + 1) -> same shape, complex.

    Written out per component: the elastic solvers apply it once per iteration and the tensor form
    would move 9 instead of 6 components through memory.
    """
    return green_isotropic_mandel(tau_hat, n, lam0=0.0, mu0=0.5)


def green_isotropic_mandel(tau_hat: torch.Tensor, n: torch.Tensor, lam0: float, mu0: float) -> torch.Tensor:
    """:func:`green_isotropic` on Mandel fields: (..., 6, X, Y, Z//2 + 1) -> same shape, complex.

    ``lam0 = 0, mu0 = 1/2`` is the projection :func:`project_symmetric_mandel`.  Units: 1 / (unit of lam0, mu0).
    """
    return green_from_traction(traction_mandel(tau_hat, n), n, lam0, mu0)


def traction_mandel(tau_hat: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``a = tau n`` of Mandel fields: (..., 6, X, Y, Z//2 + 1) -> (..., 3, X, Y, Z//2 + 1), complex.

    Every operator here depends on ``tau`` only through ``a``: ``P tau``, ``Gamma0 tau`` and the norms
    ``|P tau|^2 = 2 |a|^2 - |n . a|^2`` and ``tau* : Gamma0 tau = |a|^2 / mu0 - c |n . a|^2`` per frequency.
    """
    n2 = paired(n, tau_hat.real.dtype)
    return torch.view_as_complex(traction_pairs(torch.view_as_real(tau_hat), n2))


def green_from_traction(a: torch.Tensor, n: torch.Tensor, lam0: float, mu0: float) -> torch.Tensor:
    """``Gamma0 tau`` in Mandel form (..., 6, X, Y, Z//2 + 1) from ``a = tau n`` (:func:`traction_mandel`)."""
    n2 = paired(n, a.real.dtype)
    a = torch.view_as_real(a)
    return torch.view_as_complex(green_pairs(a, normal_pairs(a, n2), n2, lam0, mu0))


# The same operators on real views of the complex fields (torch.view_as_real: a trailing axis of 2 holding
# the real and imaginary parts), for solvers that apply them every iteration.  A complex-by-real product in
# torch first copies the real operand to complex, and a real operand broadcast along the pair axis defeats
# vectorization; with the directions stored once per pair (:func:`paired`) every product is a plain
# real one of equal shapes, about 2x faster on the CPU.

def paired(n: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Directions (3, X, Y, Z') laid out for real views: (3, X, Y, Z', 2), each value twice, contiguous."""
    return n.to(dtype or n.dtype)[..., None].expand(*n.shape, 2).contiguous()


def traction_pairs(t: torch.Tensor, n2: torch.Tensor) -> torch.Tensor:
    """:func:`traction_mandel` on real views: (..., 6, X, Y, Z', 2) -> (..., 3, X, Y, Z', 2)."""
    n1, n2_, n3 = n2.unbind(0)
    t = t.unbind(-5)
    s = 1.0 / _SQRT2
    a = t[0].new_empty((*t[0].shape[:-4], 3, *t[0].shape[-4:]))
    o = a.unbind(-5)
    torch.mul(t[0], n1, out=o[0]).addcmul_(t[5], n2_, value=s).addcmul_(t[4], n3, value=s)
    torch.mul(t[1], n2_, out=o[1]).addcmul_(t[5], n1, value=s).addcmul_(t[3], n3, value=s)
    torch.mul(t[2], n3, out=o[2]).addcmul_(t[4], n1, value=s).addcmul_(t[3], n2_, value=s)
    return a


def gradient_pairs(t: torch.Tensor, n2: torch.Tensor) -> torch.Tensor:
    """:func:`project_gradient` on real views: (..., 3, 3, X, Y, Z', 2) -> same shape, ``(t n)_i n_j``."""
    return normal_pairs(t, n2)[..., None, :, :, :, :] * n2


def divergence_vectors(cells: Sequence[int], size: Sequence[float] | None = None, *,
                       device: torch.device | str | None = None, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """The wave vectors DAMASK_grid measures equilibrium with: ``2 pi xi_i h`` per voxel edge.

    ``xi_i = k_i / L_i`` as in :func:`wave_vectors`, ``h`` the middle one of the three voxel edges
    ``L_i / N_i`` (DAMASK's default ``divergence_correction: 2``, which makes the measure independent of the
    grid's size and resolution), Nyquist components zero (its continuous first derivative).  Also zero where
    :func:`directions` is (a Nyquist component meeting another non-zero one): the projections here leave those
    frequencies out, so no iteration could reduce the divergence there.  Shape (3, X, Y, Z//2 + 1); see
    :func:`divergence_rms`.
    """
    cells = tuple(int(c) for c in cells)
    size = cells if size is None else tuple(float(s) for s in size)
    h = sorted(L / n for L, n in zip(size, cells, strict=True))[1]
    xi = wave_vectors(cells, size, device=device, dtype=dtype) * (2.0 * math.pi * h)
    xi = xi * ~_nyquist(cells, wave_vectors(cells, (1.0, 1.0, 1.0), device=device, dtype=dtype))
    resolved = (directions(cells, size, device=device, dtype=dtype) != 0).any(0)
    return xi * resolved


def divergence_rms(t: torch.Tensor, d2: torch.Tensor, cells: Sequence[int]) -> torch.Tensor:
    """DAMASK_grid's equilibrium measure: the RMS over voxels of ``|div P|`` with the derivative of
    :func:`divergence_vectors` (Pa for P in Pa), from the rfft of P on real views (..., 3, 3, X, Y, Z', 2) and
    those vectors paired (:func:`paired`); shape (...)."""
    a = normal_pairs(t, d2)  # (t d)_i
    w = rfft_weights(cells, device=t.device, dtype=t.dtype)
    N = math.prod(int(c) for c in cells)
    return (a.square().sum((-5, -1)) * w).sum((-3, -2, -1)).sqrt() / N


def normal_pairs(a: torch.Tensor, n2: torch.Tensor) -> torch.Tensor:
    """``n . a`` on real views: (..., 3, X, Y, Z', 2) -> (..., X, Y, Z', 2); for a tensor (..., 3, 3, X, Y, Z', 2)
    the contraction of its last index, ``(a n)_i``."""
    a1, a2, a3 = a.unbind(-5)
    n1, n2_, n3 = n2.unbind(0)
    return (a1 * n1).addcmul_(a2, n2_).addcmul_(a3, n3)


def green_pairs(a: torch.Tensor, q: torch.Tensor, n2: torch.Tensor, lam0: float, mu0: float) -> torch.Tensor:
    """:func:`green_from_traction` on real views, given ``q = n . a`` (:func:`normal_pairs`).

    ``Gamma0 tau = sym(n (x) g)`` with ``g = a / mu0 - c (n . a) n`` (c: :func:`green_coefficient`):
    a (..., 3, X, Y, Z', 2), q (..., X, Y, Z', 2) -> (..., 6, X, Y, Z', 2).
    """
    n1, n2_, n3 = n2.unbind(0)
    g = a / mu0
    cq = q * green_coefficient(lam0, mu0)
    g1, g2, g3 = g.unbind(-5)
    g1.addcmul_(cq, n1, value=-1.0)
    g2.addcmul_(cq, n2_, value=-1.0)
    g3.addcmul_(cq, n3, value=-1.0)
    s = 1.0 / _SQRT2
    out = a.new_empty((*a.shape[:-5], 6, *a.shape[-4:]))
    o = out.unbind(-5)
    torch.mul(g1, n1, out=o[0])
    torch.mul(g2, n2_, out=o[1])
    torch.mul(g3, n3, out=o[2])
    torch.mul(g2, n3, out=o[3]).addcmul_(g3, n2_).mul_(s)
    torch.mul(g1, n3, out=o[4]).addcmul_(g3, n1).mul_(s)
    torch.mul(g1, n2_, out=o[5]).addcmul_(g2, n1).mul_(s)
    return out


def green_coefficient(lam0: float, mu0: float) -> float:
    """``c = (lam0 + mu0) / (mu0 (lam0 + 2 mu0))`` of :func:`green_isotropic`."""
    return (lam0 + mu0) / (mu0 * (lam0 + 2.0 * mu0))


def rfft_weights(cells: Sequence[int], *, device: torch.device | str | None = None,
                 dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """Multiplicity of each rfft coefficient in the full spectrum, shape (Z//2 + 1,): 1 or 2.

    ``sum(w |f_hat|^2) / N`` is the sum of ``f^2`` over the N voxels (Parseval for the half spectrum).
    """
    Z = int(cells[2])
    w = torch.full((Z // 2 + 1,), 2.0, device=device, dtype=dtype)
    w[0] = 1.0
    if Z % 2 == 0:
        w[-1] = 1.0
    return w
