"""benchmarks/peers.py and benchmarks/jax_step.py: the plain JAX step learns exactly
as ptncn does (x_mu and every parameter to 1e-5 after each step, clipping on and
off), and the benchmark's pieces that need no JAX.

The JAX step runs in its own environment: ``$PTNCN_JAX_PYTHON`` or .venv-jax/bin/python
(``python3 -m venv .venv-jax && .venv-jax/bin/pip install "jax[cpu]" numpy``); without
one the equality tests are skipped.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import peers  # noqa: E402

JAX_PYTHON = peers.find_jax_python()
needs_jax = pytest.mark.skipif(
    JAX_PYTHON is None,
    reason="no JAX interpreter: set PTNCN_JAX_PYTHON, or make .venv-jax with "
           "'python3 -m venv .venv-jax && .venv-jax/bin/pip install \"jax[cpu]\" numpy'")


@needs_jax
@pytest.mark.parametrize("clip", [0.05, 0.0])
def test_jax_step_matches_ptncn(clip, tmp_path):
    res = peers.equality_check(JAX_PYTHON, clip, str(tmp_path))
    steps = res["steps"]
    assert len(steps) == peers.CHECK["steps"]
    assert res["max_diff"] <= peers.TOLERANCE, peers.format_check(res)
    clipped = [r["clipped"] for r in steps[1:]]
    if clip > 0:
        assert min(clipped) > 0          # the radius is small enough to clip every step
    else:
        assert clipped == [0] * len(clipped)


@needs_jax
def test_equality_check_sees_a_different_step(tmp_path):
    # the JAX step without clipping, against ptncn with it: the check must notice
    res = peers.equality_check(JAX_PYTHON, 0.05, str(tmp_path), jax_clip=0.0)
    assert res["steps"][0]["x_mu"] <= peers.TOLERANCE      # nothing learned yet
    assert res["max_diff"] > peers.TOLERANCE


def test_find_jax_python(tmp_path, monkeypatch):
    exe = tmp_path / "python"
    exe.write_text("")
    assert peers.find_jax_python(str(exe)) == str(exe)
    monkeypatch.setenv("PTNCN_JAX_PYTHON", str(exe))
    assert peers.find_jax_python() == str(exe)
    monkeypatch.setenv("PTNCN_JAX_PYTHON", str(tmp_path / "missing"))
    assert peers.find_jax_python() is None


def test_worker_env_sets_only_openblas_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    env = peers.worker_env(2)
    assert env["OPENBLAS_NUM_THREADS"] == "2" and "OMP_NUM_THREADS" not in env
    assert not set(peers.THREAD_VARS) & set(peers.worker_env(None))


def test_ptncn_worker_is_pinned_and_timed():
    res = peers.time_ptncn(16, runs=1, steps=3, threads=1, mode="1")
    assert res["cores"] == peers.first_cores(1)
    assert res["steps_per_s"] > 0 and res["cores_busy"] <= 1.2


def _row(case, h, threads, p, j):
    return {"case": case, "hidden": h, "threads": threads,
            "ptncn": {"steps_per_s": p}, "jax": {"steps_per_s": j}}


def test_table_ratios():
    rows = [_row("quiet", 64, 1, 100.0, 50.0), _row("quiet", 64, 2, 150.0, 90.0),
            _row("contention", 64, "auto/2", 25.0, 10.0)]
    lines = peers.format_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[1].split()[-1] == "2.00"                      # ptncn / JAX
    assert lines[3].split()[-3:] == ["2.50", "0.25", "0.20"]   # ratio, ptncn and JAX cont/q1


def test_steps_default_by_size():
    assert peers.steps_for(1000, None) == 30
    assert peers.steps_for(250, None) == 100
    assert peers.steps_for(1000, 7) == 7
