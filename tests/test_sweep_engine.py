"""The sweep engine: runs, rows, re-runs, failures, and the same rows on Dask workers."""

import json
import math

import numpy as np
import pytest

from ptncn.cli import main
from ptncn.harness import ConfigError
from ptncn.learner import load_learner
from ptncn.sweep import run_sweep
from ptncn.sweep.results import read_csv

BASE = """name = "tiny"
[task]
name = "cyclic"
batch_size = 4
length = 6
vocab = 5
[model]
hidden = [6, 6]
[train]
batches = 3
eval_every = 1
eval_batches = 2
final_eval_batches = 2
checkpoint_every = 5
"""

SPEC = """base = "base.toml"
[sweep]
seeds = 2
metric = "valid.bpc"
[sweep.grid]
"optimizer.lr" = [0.01, 0.1]
"""

METRICS = ("valid.bpc", "valid.loss", "test.bpc", "test.loss")


def write(tmp_path, spec: str = SPEC, base: str = BASE):
    (tmp_path / "base.toml").write_text(base)
    p = tmp_path / "spec.toml"
    p.write_text(spec)
    return p


def same_numbers(a: dict, b: dict, keys) -> bool:
    return all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in keys)


def test_serial_sweep_writes_runs_rows_and_skips_done_runs_on_a_rerun(tmp_path):
    spec, out = write(tmp_path), tmp_path / "out"
    res = run_sweep(spec, str(out), workers=0, progress=False)
    assert len(res.rows) == 4 and not res.failed
    assert [(r["config_index"], r["seed_index"]) for r in res.rows] == \
        [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in res.rows:
        run = out / "runs" / r["run_id"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert r["valid.bpc"] == metrics["best"]["bpc"]
        assert r["test.bpc"] == metrics["test"]["best"]["bpc"]
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["seed"] == r["seed"] and cfg["optimizer"]["lr"] == r["optimizer.lr"]
    assert len(read_csv(out / "results.csv")) == 4
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(out / "results.nc") as ds:
        assert ds["valid.bpc"].shape == (2, 2)
    again = run_sweep(spec, str(out), workers=0, progress=False)
    assert [r["attempts"] for r in again.rows] == [1, 1, 1, 1]      # nothing ran again
    assert all(same_numbers(a, b, METRICS) for a, b in zip(res.rows, again.rows))


def test_another_spec_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    run_sweep(write(tmp_path), str(out), workers=0, progress=False)
    other = write(tmp_path, SPEC.replace("0.01, 0.1", "0.01, 0.2"))
    with pytest.raises(ConfigError, match="holds a sweep of another spec"):
        run_sweep(other, str(out), workers=0, resume=True, progress=False)
    with pytest.raises(ConfigError, match="holds no sweep"):
        run_sweep(other, str(tmp_path / "empty"), workers=0, resume=True, progress=False)


def test_a_failing_run_is_a_row_with_its_error_and_the_sweep_goes_on(tmp_path, capsys):
    spec = write(tmp_path, SPEC.replace("0.01, 0.1", "0.01, 1e30").replace("seeds = 2",
                                                                             "seeds = 1"))
    code = main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "0",
                 "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 of 2 runs failed" in err and "DivergenceError" in err
    rows = read_csv(tmp_path / "out" / "results.csv")
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert "DivergenceError" in rows[1]["error"] and math.isnan(rows[1]["valid.bpc"])


def test_the_cli_refuses_a_bad_spec_before_any_run(tmp_path, capsys):
    spec = write(tmp_path, SPEC.replace('"optimizer.lr"', '"optimizer.learning_rate"'))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key optimizer.'learning_rate'; allowed:" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_local_cluster_gives_the_rows_of_a_serial_sweep(tmp_path):
    pytest.importorskip("distributed", reason="Dask workers need the 'sweep' extra")
    spec = write(tmp_path)
    serial = run_sweep(spec, str(tmp_path / "serial"), workers=0, progress=False)
    dask = run_sweep(spec, str(tmp_path / "dask"), workers=2, progress=False)
    assert [r["run_id"] for r in dask.rows] == [r["run_id"] for r in serial.rows]
    for a, b in zip(serial.rows, dask.rows):
        assert same_numbers(a, b, METRICS) and a["steps"] == b["steps"]
        pa = load_learner(tmp_path / "serial" / "runs" / a["run_id"] / "final.npz").params
        pb = load_learner(tmp_path / "dask" / "runs" / b["run_id"] / "final.npz").params
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_ctrl_c_ends_the_sweep_with_130_and_says_how_to_resume(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    spec = write(tmp_path, base=BASE.replace("batches = 3", "batches = 100000"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ptncn", "sweep", str(spec), "--out",
                             str(out), "--workers", "0", "--quiet"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("runs/*/run.ckpt.npz")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "resumes the others from their checkpoints" in err
    assert "Traceback" not in err


def test_a_retry_takes_over_the_lock_of_a_worker_the_scheduler_lost(tmp_path):
    """A worker that died on another machine leaves a lock this machine cannot check;
    a retry removes it when the scheduler no longer has that worker, and only then."""
    distributed = pytest.importorskip("distributed")
    import tomllib

    from ptncn.harness import validate
    from ptncn.runlock import LOCK_NAME
    from ptncn.sweep.engine import run_one

    cfg = validate(tomllib.loads(BASE))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        live = next(iter(client.nthreads()))
        for name, noted, status in (("gone", "tcp://10.9.9.9:1", "done"),
                                    ("alive", live, "failed")):
            run = tmp_path / name
            run.mkdir()
            (run / LOCK_NAME).write_text(json.dumps(
                {"pid": 4242, "host": "another-machine", "command": "train", "started": "x"}))
            (run / "worker.json").write_text(json.dumps(
                {"worker": noted, "process": ["another-machine", 4242]}))
            out = client.submit(run_one, str(run), cfg, None, 3, pure=False).result()
            assert out["status"] == status, out
            if status == "failed":
                assert "in use" in out["error"]
