"""Element-wise kernels of the fast engine: Numba-compiled, or plain NumPy.

An optimizer step over a parameter ``p`` whose update direction is ``s * g``
(``g`` the formed product, ``s`` its clip factor over the batch size) touches
``p``, its slot and ``g`` several times in NumPy (one pass per operation, each
with its call overhead).  The Numba kernels do it in one pass with no
temporaries.

Two interchangeable backends (equal to 1e-6; tests/test_kernels.py runs both):

* ``numba``: needs the ``fast`` extra (``pip install 'ptncn[fast]'``), compiled
  on first use and cached next to the module;
* ``numpy``: always available, the reference.

``PTNCN_KERNELS=numba|numpy`` picks one; by default Numba when it imports.
"""

from __future__ import annotations

import os

import numpy as np

F32 = np.float32


class NumpyKernels:
    """The reference kernels (NumPy operations, several passes)."""

    name = "numpy"

    @staticmethod
    def sgd(p, g, s, lr):
        """``p -= lr * s * g``."""
        p -= F32(lr * s) * g

    @staticmethod
    def momentum(p, a, g, s, lr, mu):
        """``a = mu a + s g;  p -= lr a``."""
        a *= F32(mu)
        a += F32(s) * g
        p -= F32(lr) * a

    @staticmethod
    def nesterov(p, a, g, s, lr, mu):
        """``a = mu a + s g;  p -= lr (s g + mu a)`` (TensorFlow's form)."""
        sg = F32(s) * g
        a *= F32(mu)
        a += sg
        sg += F32(mu) * a
        sg *= F32(lr)
        p -= sg

    @staticmethod
    def sq_norm(g) -> float:
        """``sum(g ** 2)`` of a contiguous ``g`` (one BLAS dot product)."""
        return float(np.vdot(g, g))


def _numba_kernels():
    """Compile-on-demand Numba versions of :class:`NumpyKernels` (ImportError without
    numba)."""
    import numba

    jit = numba.njit(cache=True, nogil=True)

    @jit
    def sgd_c(p, g, s, lr):
        c = -lr * s
        for i in range(p.shape[0]):
            for j in range(p.shape[1]):
                p[i, j] += c * g[i, j]

    @jit
    def momentum_c(p, a, g, s, lr, mu):
        for i in range(p.shape[0]):
            for j in range(p.shape[1]):
                an = mu * a[i, j] + s * g[i, j]
                a[i, j] = an
                p[i, j] -= lr * an

    @jit
    def nesterov_c(p, a, g, s, lr, mu):
        for i in range(p.shape[0]):
            for j in range(p.shape[1]):
                sg = s * g[i, j]
                an = mu * a[i, j] + sg
                a[i, j] = an
                p[i, j] -= lr * (sg + mu * an)

    class NumbaKernels:
        name = "numba"
        @staticmethod
        def sgd(p, g, s, lr):
            sgd_c(p, g, F32(s), F32(lr))

        @staticmethod
        def momentum(p, a, g, s, lr, mu):
            momentum_c(p, a, g, F32(s), F32(lr), F32(mu))

        @staticmethod
        def nesterov(p, a, g, s, lr, mu):
            nesterov_c(p, a, g, F32(s), F32(lr), F32(mu))

        sq_norm = staticmethod(NumpyKernels.sq_norm)

    return NumbaKernels


_CACHE: dict = {}


def get_kernels(name: str | None = None):
    """The kernels named (``"numba"``, ``"numpy"``), else ``$PTNCN_KERNELS``, else
    Numba when it imports and NumPy otherwise.  Asking for Numba without it is an
    ImportError naming the ``fast`` extra."""
    name = name or os.environ.get("PTNCN_KERNELS") or None
    if name not in (None, "numba", "numpy"):
        raise ValueError(f"PTNCN_KERNELS: expected 'numba' or 'numpy', got {name!r}")
    if name == "numpy":
        return NumpyKernels
    if "numba" not in _CACHE:
        try:
            _CACHE["numba"] = _numba_kernels()
        except ImportError as exc:
            _CACHE["numba"] = exc
    found = _CACHE["numba"]
    if isinstance(found, ImportError):
        if name == "numba":
            raise ImportError("PTNCN_KERNELS=numba needs numba: pip install 'ptncn[fast]'"
                              ) from found
        return NumpyKernels
    return found
