"""Every BLAS backend of the fast engine computes the same numbers as plain NumPy."""

import numpy as np
import pytest

from ptncn import PTNCN
from ptncn.blas import NumpyBackend, available_backends, get_backend

F32 = np.float32
BACKENDS = available_backends()


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (-0.3, 1.0), (0.7, 0.95)])
def test_gemm_matches_float64(name, trans_a, trans_b, alpha, beta):
    rng = np.random.default_rng(0)
    m, n, k = 13, 9, 7
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(F32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(F32)
    c = rng.standard_normal((m, n)).astype(F32)
    want = alpha * ((a.T if trans_a else a).astype(np.float64)
                    @ (b.T if trans_b else b).astype(np.float64)) + beta * c.astype(np.float64)
    get_backend(name).gemm(alpha, a, trans_a, b, trans_b, beta, c)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_gemm_with_strided_operand(name):
    rng = np.random.default_rng(1)
    big = rng.standard_normal((6, 20)).astype(F32)
    a = big[:, 3:11]                      # a column slice: row stride 20, not contiguous
    b = rng.standard_normal((6, 5)).astype(F32)
    c = np.zeros((8, 5), F32)
    be = get_backend(name)
    be.gemm(2.0, a, True, b, False, 0.0, c)
    np.testing.assert_allclose(c, 2.0 * a.T @ b, rtol=1e-5, atol=1e-6)


def test_numpy_backend_is_always_available():
    assert "numpy" in BACKENDS and isinstance(get_backend("numpy"), NumpyBackend)
    with pytest.raises(ValueError, match="unknown BLAS backend"):
        get_backend("mkl-please")


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "numpy"])
def test_training_with_each_backend_equals_numpy_backend(name, monkeypatch):
    rng = np.random.default_rng(0)
    xs = np.eye(8, dtype=F32)[rng.integers(0, 8, (10, 4))]
    runs = {}
    for be in ("numpy", name):
        monkeypatch.setenv("PTNCN_BLAS", be)
        m = PTNCN(8, (12, 10), seed=3, wght_sd=0.3, clip=0.2)
        assert m.engine.blas.name == be
        for x in xs:
            m.step(x)
        runs[be] = m
    for k in runs["numpy"].params:
        np.testing.assert_allclose(runs[name].params[k], runs["numpy"].params[k], atol=1e-6)
