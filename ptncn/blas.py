"""In-place BLAS for the fast engine: ``C = alpha op(A) op(B) + beta C``.

NumPy's ``@`` cannot accumulate into its output, and calling SciPy's BLAS from
the same loop as NumPy's makes two OpenBLAS thread pools fight over the cores
(each spins while the other works: the step runs several times slower).  So the
accumulating calls go, in order of preference, to

1. ``openblas``: the OpenBLAS that NumPy itself links (found next to NumPy,
   called through ctypes) — one thread pool for every GEMM of a step;
2. ``scipy``: ``scipy.linalg.blas`` (correct, but a second thread pool);
3. ``numpy``: plain NumPy with a temporary (always available; the reference).

``PTNCN_BLAS=openblas|scipy|numpy`` forces one.  All three compute the same
numbers (tests/test_blas.py checks them against each other).
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _ld(a: np.ndarray) -> int:
    """Leading dimension of a row-major 2-D float32 array (row stride in elements)."""
    return a.strides[0] // a.itemsize


def _rowmajor_ok(a: np.ndarray) -> bool:
    return (a.dtype == np.float32 and a.ndim == 2 and a.strides[1] == a.itemsize
            and a.strides[0] >= a.shape[1] * a.itemsize)


class NumpyBackend:
    name = "numpy"

    def gemm(self, alpha, a, trans_a, b, trans_b, beta, c):
        oa = a.T if trans_a else a
        ob = b.T if trans_b else b
        if beta == 0.0:
            np.matmul(oa, ob, out=c)
            if alpha != 1.0:
                c *= np.float32(alpha)
            return
        t = oa @ ob
        if alpha != 1.0:
            t *= np.float32(alpha)
        if beta != 1.0:
            c *= np.float32(beta)
        c += t


class ScipyBackend:
    name = "scipy"

    def __init__(self):
        from scipy.linalg import blas
        self.blas = blas

    def gemm(self, alpha, a, trans_a, b, trans_b, beta, c):
        # row-major C = op(A) op(B)  <=>  column-major C.T = op(B).T op(A).T
        if not (c.flags.c_contiguous and a.flags.c_contiguous and b.flags.c_contiguous):
            return NumpyBackend().gemm(alpha, a, trans_a, b, trans_b, beta, c)
        self.blas.sgemm(alpha, b.T, a.T, trans_a=int(bool(trans_b)), trans_b=int(bool(trans_a)),
                        beta=beta, c=c.T, overwrite_c=1)


class OpenBLASBackend:
    """NumPy's own OpenBLAS through ctypes (same library, same thread pool)."""

    name = "openblas"

    def __init__(self, lib, sgemm, int_t):
        self.lib, self._sgemm, self.int_t = lib, sgemm, int_t
        I, F, P, E = int_t, ctypes.c_float, ctypes.c_void_p, ctypes.c_int
        sgemm.argtypes = [E, E, E, I, I, I, F, P, I, P, I, F, P, I]
        sgemm.restype = None

    def gemm(self, alpha, a, trans_a, b, trans_b, beta, c):
        if not (_rowmajor_ok(a) and _rowmajor_ok(b) and c.dtype == np.float32
                and c.flags.c_contiguous):
            return NumpyBackend().gemm(alpha, a, trans_a, b, trans_b, beta, c)
        m, n = c.shape
        k = a.shape[0] if trans_a else a.shape[1]
        if (b.shape[1] if trans_b else b.shape[0]) != k or \
                (a.shape[1] if trans_a else a.shape[0]) != m or \
                (b.shape[0] if trans_b else b.shape[1]) != n:
            raise ValueError(f"gemm shapes do not match: {a.shape}, {b.shape} -> {c.shape}")
        self._sgemm(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS,
                    _TRANS if trans_b else _NO_TRANS, m, n, k, alpha,
                    a.ctypes.data, _ld(a), b.ctypes.data, _ld(b), beta,
                    c.ctypes.data, _ld(c))


def _numpy_openblas():
    """Find the OpenBLAS shipped inside NumPy's wheel, or None."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    paths = sorted(glob.glob(os.path.join(root, "numpy.libs", "*openblas*")) +
                   glob.glob(os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*")))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, int_t in (("scipy_", "64_", ctypes.c_int64),
                                      ("", "64_", ctypes.c_int64),
                                      ("scipy_", "", ctypes.c_int), ("", "", ctypes.c_int)):
            try:
                sgemm = getattr(lib, f"{prefix}cblas_sgemm{suffix}")
            except AttributeError:
                continue
            return OpenBLASBackend(lib, sgemm, int_t)
    return None


_BACKENDS: dict[str, object] = {}


def get_backend(name: str | None = None):
    """The BLAS backend to use: ``name``, else $PTNCN_BLAS, else the best available."""
    name = name or os.environ.get("PTNCN_BLAS") or "auto"
    if name in _BACKENDS:
        return _BACKENDS[name]
    if name == "numpy":
        be = NumpyBackend()
    elif name == "scipy":
        be = ScipyBackend()
    elif name == "openblas":
        be = _numpy_openblas()
        if be is None:
            raise RuntimeError("PTNCN_BLAS=openblas, but NumPy's OpenBLAS was not found")
    elif name == "auto":
        be = _numpy_openblas() or NumpyBackend()
    else:
        raise ValueError(f"unknown BLAS backend {name!r}; use openblas, scipy or numpy")
    _BACKENDS[name] = be
    return be


def available_backends() -> list[str]:
    names = ["numpy", "scipy"]
    if _numpy_openblas() is not None:
        names.insert(0, "openblas")
    return names
