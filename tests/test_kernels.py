"""The optimizer kernels: Numba and NumPy backends equal to 1e-6, and each equal to
the optimizer's own update written out."""

import numpy as np
import pytest

from ptncn import kernels as K
from ptncn.kernels import NumpyKernels, get_kernels

F32 = np.float32


def numba_kernels():
    try:
        return get_kernels("numba")
    except ImportError as exc:
        pytest.skip(f"numba is not installed (the 'fast' extra): {exc}")


def arrays(shape, seed=0):
    r = np.random.default_rng(seed)
    return [r.standard_normal(shape).astype(F32) for _ in range(3)]


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (250, 49), (64, 300)])
def test_numpy_kernels_are_the_written_out_updates(shape):
    p0, a0, g = arrays(shape)
    s, lr, mu = 0.02, 0.075, 0.95
    p, a = p0.copy(), a0.copy()
    NumpyKernels.nesterov(p, a, g, s, lr, mu)
    a_want = mu * a0.astype(np.float64) + s * g
    np.testing.assert_allclose(a, a_want, atol=1e-6)
    np.testing.assert_allclose(p, p0 - lr * (s * g + mu * a_want), atol=1e-6)
    p, a = p0.copy(), a0.copy()
    NumpyKernels.momentum(p, a, g, s, lr, mu)
    np.testing.assert_allclose(p, p0 - lr * a_want, atol=1e-6)
    p = p0.copy()
    NumpyKernels.sgd(p, g, s, lr)
    np.testing.assert_allclose(p, p0 - lr * s * g.astype(np.float64), atol=1e-6)
    assert NumpyKernels.sq_norm(g) == pytest.approx(float(np.sum(g.astype(np.float64) ** 2)),
                                                    rel=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (250, 49), (64, 300)])
@pytest.mark.parametrize("name", ["nesterov", "momentum", "sgd"])
def test_numba_kernels_equal_numpy(shape, name):
    nb = numba_kernels()
    p0, a0, g = arrays(shape, seed=3)
    outs = []
    for k in (NumpyKernels, nb):
        p, a = p0.copy(), a0.copy()
        if name == "sgd":
            k.sgd(p, g, 0.5, 0.1)
        else:
            getattr(k, name)(p, a, g, 0.5, 0.1, 0.9)
        outs.append((p, a))
    np.testing.assert_allclose(outs[0][0], outs[1][0], atol=1e-6)
    np.testing.assert_allclose(outs[0][1], outs[1][1], atol=1e-6)


def test_kernels_update_row_ranges_of_a_stacked_block_only():
    nb = numba_kernels()
    p, a, g = arrays((10, 4))
    before = p.copy()
    nb.nesterov(p[3:6], a[3:6], g[3:6], 1.0, 0.1, 0.9)
    assert (p[:3] == before[:3]).all() and (p[6:] == before[6:]).all()
    assert not (p[3:6] == before[3:6]).all()


def test_choice_by_environment(monkeypatch):
    monkeypatch.setenv("PTNCN_KERNELS", "numpy")
    assert get_kernels() is NumpyKernels
    monkeypatch.setenv("PTNCN_KERNELS", "fortran")
    with pytest.raises(ValueError, match="PTNCN_KERNELS: expected 'numba' or 'numpy', got 'fortran'"):
        get_kernels()


def test_asking_for_numba_without_it_names_the_extra(monkeypatch):
    monkeypatch.setitem(K._CACHE, "numba", ImportError("No module named 'numba'"))
    with pytest.raises(ImportError, match=r"pip install 'ptncn\[fast\]'"):
        get_kernels("numba")
    assert get_kernels() is NumpyKernels        # the default falls back quietly
