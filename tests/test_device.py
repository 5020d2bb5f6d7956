"""The device helpers: batched small linear solves (the same answer from every kernel) and glibc's malloc."""

import os
import subprocess
import sys

import pytest
import torch

from micropipe import device


@pytest.mark.parametrize("V", [8, 2 * device.BATCHED_SOLVE_MIN + 3], ids=["torch kernel", "numpy kernel"])
@pytest.mark.parametrize("r", [1, 7])
def test_batched_solve_equals_torch(V, r):
    """Both kernels give LAPACK's partial-pivoting LU solution; the numpy one on any thread count."""
    g = torch.Generator().manual_seed(V + r)
    A = torch.randn(V, 18, 18, generator=g, dtype=torch.float64) + 4.0 * torch.eye(18, dtype=torch.float64)
    B = torch.randn(V, 18, r, generator=g, dtype=torch.float64)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            X, ok = device.batched_solve(A, B)
            assert bool(ok.all())
            torch.testing.assert_close(A @ X, B, rtol=0, atol=1e-10)
            torch.testing.assert_close(X, torch.linalg.solve(A, B), rtol=1e-10, atol=1e-10)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("V", [8, 2 * device.BATCHED_SOLVE_MIN + 3], ids=["torch kernel", "numpy kernel"])
def test_batched_solve_flags_singular_and_nonfinite_systems(V):
    """An exactly singular or non-finite system is flagged, and the other systems of its batch are still solved."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(V, 6, 6, generator=g, dtype=torch.float64) + 4.0 * torch.eye(6, dtype=torch.float64)
    B = torch.randn(V, 6, 2, generator=g, dtype=torch.float64)
    A[3] = 0.0
    A[5, 2, 2] = torch.nan
    X, ok = device.batched_solve(A, B)
    assert not bool(ok[3]) and not bool(ok[5])
    good = torch.ones(V, dtype=torch.bool)
    good[[3, 5]] = False
    assert bool(ok[good].all())
    torch.testing.assert_close(A[good] @ X[good], B[good], rtol=0, atol=1e-10)


def test_keep_freed_memory_is_idempotent_and_can_be_turned_off():
    """On glibc it takes effect once (True on Linux); MICROPIPE_KEEP_FREED_MEMORY=0 leaves malloc alone."""
    first = device.keep_freed_memory()
    assert device.keep_freed_memory() is first
    device.release_memory()
    if sys.platform.startswith("linux"):
        assert first in (True, False)  # False only with the opt-out or a C library that is not glibc
    code = "from micropipe import device; print(device.keep_freed_memory())"
    env = {**os.environ, "MICROPIPE_KEEP_FREED_MEMORY": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _solve_in_child(queue) -> None:
    A = torch.eye(4, dtype=torch.float64).repeat(4 * device.BATCHED_SOLVE_MIN, 1, 1)
    X, ok = device.batched_solve(A, torch.ones(A.shape[0], 4, 1, dtype=torch.float64))
    queue.put(bool(ok.all()) and bool((X == 1.0).all()))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method")
def test_batched_solve_works_in_a_forked_child():
    """A forked worker (the parent's solver threads do not exist there) gets its own thread pool, not a hang."""
    import multiprocessing

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        device.batched_solve(torch.eye(4, dtype=torch.float64).repeat(1024, 1, 1),
                             torch.ones(1024, 4, 1, dtype=torch.float64))  # the parent's pool exists now
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_solve_in_child, args=(queue,))
        child.start()
        child.join(60)
        if child.is_alive():
            child.kill()
            pytest.fail("batched_solve hung in a forked child")
        assert queue.get(timeout=5)
    finally:
        torch.set_num_threads(threads)
