"""A sweep on a real Dask cluster started from the command line, with a worker killed.

As a user would on two machines: ``dask scheduler`` and two ``dask worker``
processes (here on loopback), then ``ptncn sweep --scheduler tcp://...``.  One
worker is SIGKILLed while its run is past a checkpoint and not finished; the
scheduler hands the run to the other worker, which resumes it from the
checkpoint.  Its final parameters must equal an uninterrupted run's, bitwise.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ptncn.harness import train, validate
from ptncn.learner import load_learner
from ptncn.runlock import LOCK_NAME
from ptncn.sweep.results import read_csv

pytest.importorskip("distributed", reason="Dask workers need the 'sweep' extra")

BIN = pathlib.Path(sys.executable).parent
BASE = """name = "tiny"
[task]
name = "cyclic"
batch_size = 8
length = 20
vocab = 8
[model]
hidden = [48, 48]
[train]
batches = 80
checkpoint_every = 200
final_eval_batches = 4
"""
SPEC = """base = "base.toml"
[sweep]
seeds = 2
metric = "valid.bpc"
[sweep.grid]
"optimizer.lr" = [0.02, 0.05]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "dask"), *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.fixture
def cluster():
    if not (BIN / "dask").exists():
        pytest.skip("no `dask` command beside this Python")
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs = [start("scheduler", "--host", "127.0.0.1", "--port", str(port),
                   "--no-dashboard")]
    time.sleep(1.0)
    procs += [start("worker", addr, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                    "--host", "127.0.0.1") for _ in range(2)]
    yield addr, procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def mid_run(out: pathlib.Path, workers: list, deadline: float):
    """(run folder, pid) of a run that has a checkpoint and no metrics yet, whose lock
    is held by one of ``workers``."""
    pids = {p.pid for p in workers}
    while time.time() < deadline:
        for run in (out / "runs").glob("*"):
            lock = run / LOCK_NAME
            try:
                pid = json.loads(lock.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if pid in pids and (run / "run.ckpt.npz").exists() and \
                    not (run / "metrics.json").exists():
                return run, pid
        time.sleep(0.05)
    raise AssertionError("no run was caught between a checkpoint and its end")


@pytest.mark.timeout(300)
def test_a_killed_worker_s_run_is_resumed_elsewhere_and_ends_as_if_never_killed(
        tmp_path, cluster):
    addr, procs = cluster
    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "spec.toml").write_text(SPEC)
    out = tmp_path / "out"
    sweep = subprocess.Popen([str(BIN / "ptncn"), "sweep", str(tmp_path / "spec.toml"),
                              "--out", str(out), "--scheduler", addr, "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    run, pid = mid_run(out, procs[1:], time.time() + 120)
    os.kill(pid, signal.SIGKILL)
    next(p for p in procs if p.pid == pid).wait()
    stdout, stderr = sweep.communicate(timeout=240)
    assert sweep.returncode == 0, stderr

    rows = read_csv(out / "results.csv")
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    killed = next(r for r in rows if r["run_id"] == run.name)
    assert killed["attempts"] == 2

    cfg = validate(json.loads((run / "config.json").read_text()))
    train(cfg, out_dir=str(tmp_path / "whole"), quiet=True, plots=False, log=lambda m: None)
    a = load_learner(run / "final.npz").params
    b = load_learner(tmp_path / "whole" / "final.npz").params
    assert all(np.array_equal(a[k], b[k]) for k in b)


def test_a_scheduler_that_does_not_answer_is_one_error(tmp_path, capsys):
    from ptncn.cli import main

    (tmp_path / "base.toml").write_text(BASE)
    (tmp_path / "spec.toml").write_text(SPEC)
    t = time.time()
    code = main(["sweep", str(tmp_path / "spec.toml"), "--out", str(tmp_path / "out"),
                 "--scheduler", f"tcp://127.0.0.1:{free_port()}"])
    assert code == 2 and time.time() - t < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not answer within 10 s" in err[0]
    assert not (tmp_path / "out").exists()
