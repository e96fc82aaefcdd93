"""A run folder's lifecycle: one writer at a time, resume that changes only what it owns,
SIGINT and divergence that leave a resumable checkpoint, partial files cleaned up.

Real subprocesses (``python -m ptncn.cli``) where a signal, a second process or the
exit status itself is under test; the in-process CLI elsewhere (same code path, faster).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ptncn.cli import main
from ptncn.harness import train, validate
from ptncn.runlock import LOCK_NAME

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": ROOT}

TOML = """name = "tiny"
seed = 3
[task]
name = "cyclic"
batch_size = 4
length = 8
vocab = {vocab}
[model]
hidden = [8, 8]
[optimizer]
name = "sgd"
lr = {lr}
[train]
batches = {batches}
eval_every = {eval_every}
eval_batches = 2
final_eval_batches = 2
checkpoint_every = {ckpt}
[record]
traces = ["loss"]
"""


def _toml(tmp_path, name="tiny.toml", vocab=6, lr=0.2, batches=6, eval_every=0, ckpt=10):
    p = tmp_path / name
    p.write_text(TOML.format(vocab=vocab, lr=lr, batches=batches, eval_every=eval_every,
                             ckpt=ckpt))
    return p


def _cfg(lr=0.2, batches=6, eval_every=0, ckpt=10, budget=0):
    return validate({"name": "tiny", "seed": 3,
                     "task": {"name": "cyclic", "batch_size": 4, "length": 8, "vocab": 6},
                     "model": {"hidden": [8, 8]}, "optimizer": {"name": "sgd", "lr": lr},
                     "train": {"batches": batches, "eval_every": eval_every, "eval_batches": 2,
                               "final_eval_batches": 2, "checkpoint_every": ckpt,
                               "time_budget_s": budget},
                     "record": {"traces": ["loss"]}})


def _train(cfg, out):
    return train(cfg, out_dir=str(out), quiet=True, plots=False, log=lambda s: None)


def _cli(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "ptncn.cli", *map(str, argv)], env=ENV,
                          capture_output=True, text=True, timeout=120, **kw)


def _files(folder) -> dict:
    """Every file under ``folder`` (relative path -> bytes)."""
    out = {}
    for d, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


def _params(path) -> dict:
    from ptncn import load
    return load(path).params


def _one_error_line(err: str, numpy_warnings: bool = False) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if numpy_warnings:          # numpy's overflow warnings (file:line, then the code line)
        warned = [i for i, ln in enumerate(lines) if "RuntimeWarning" in ln]
        lines = [ln for i, ln in enumerate(lines) if i not in warned and i - 1 not in warned]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _fake_owner(folder, pid=None) -> None:
    """A lock held by a live process on this host (this test process)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_NAME), "w") as f:
        json.dump({"pid": pid or os.getpid(), "host": socket.gethostname(),
                   "command": "train", "started": "then"}, f)


# ---------------------------------------------------------------------------
# one writer per folder
# ---------------------------------------------------------------------------
def _wait_for(path, proc, seconds=60.0) -> None:
    t0 = time.monotonic()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < seconds, f"{path} never appeared"
        time.sleep(0.05)


def test_second_writer_refused_then_sigint_checkpoints_and_resumes_exactly(tmp_path):
    out = tmp_path / "run"
    toml = _toml(tmp_path, batches=100000, ckpt=20)
    a = subprocess.Popen([sys.executable, "-m", "ptncn.cli", "train", str(toml), "--out",
                          str(out), "--quiet", "--no-plots"], env=ENV, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(out / "run.ckpt.npz", a)
        config_before = (out / "config.json").read_bytes()
        # a second train and a resume into the live folder: one line naming the owner
        for argv in (["train", toml, "--out", out, "--set", "model.hidden=[5,5]", "--quiet"],
                     ["resume", out, "--quiet", "--no-plots"]):
            r = _cli(*argv)
            assert r.returncode == 2, r
            line = _one_error_line(r.stderr)
            assert f"pid {a.pid}" in line and "ptncn train" in line, line
        assert (out / "config.json").read_bytes() == config_before
        assert a.poll() is None
        a.send_signal(signal.SIGINT)
        stdout, stderr = a.communicate(timeout=60)
    finally:
        if a.poll() is None:
            a.kill()
    assert a.returncode == 130, (stdout, stderr)
    assert f"ptncn resume {out}" in stdout + stderr
    assert "Traceback" not in stderr
    assert not (out / LOCK_NAME).exists()
    from ptncn import load
    b, t = load(out / "run.ckpt.npz").extra_meta["position"]
    n = b + 2
    # the interrupted run, resumed to n batches, ends exactly where an uninterrupted one does
    r = _cli("resume", out, "--quiet", "--no-plots", "--set", f"train.batches={n}")
    assert r.returncode == 0, r.stderr
    _train(_cfg(batches=n, ckpt=20), tmp_path / "ref")
    got, ref = _params(out / "final.npz"), _params(tmp_path / "ref" / "final.npz")
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    from ptncn.record import open_recording
    with open_recording(out / "run.h5") as rec:
        assert json.loads(rec.file.attrs["config"])["train"]["batches"] == n


@pytest.mark.parametrize("command", ["train", "resume", "zero-shot"])
def test_every_writer_refuses_a_held_folder_and_writes_nothing(tmp_path, capsys, command):
    out = tmp_path / "run"
    _train(_cfg(budget=1e-9), out)
    before = _files(out)
    _fake_owner(out)
    zs = tmp_path / "zs.toml"
    zs.write_text(f'name = "zs"\n[zeroshot]\na = "{_toml(tmp_path)}"\nb = "{_toml(tmp_path)}"\n'
                  'seeds = [1]\nadapt = [0]\ntest_batches = 1\n')
    argv = {"train": ["train", str(_toml(tmp_path)), "--out", str(out), "--quiet", "--no-plots"],
            "resume": ["resume", str(out), "--quiet", "--no-plots"],
            "zero-shot": ["zero-shot", str(zs), "--out", str(out)]}[command]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"pid {os.getpid()}" in line and "in use" in line
    assert _files(out) == {**before, LOCK_NAME: (out / LOCK_NAME).read_bytes()}


def test_readers_ignore_the_lock_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    _train(_cfg(), out)
    _fake_owner(out)
    assert main(["summary", str(out / "run.h5")]) == 0
    assert main(["info", str(out / "final.npz")]) == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    _fake_owner(out, pid=int(dead))                 # a killed writer's lock
    _train(_cfg(batches=2), out)
    assert not (out / LOCK_NAME).exists()


def test_partial_temp_files_of_a_killed_run_are_removed_by_the_next_writer(tmp_path):
    out = tmp_path / "run"
    _train(_cfg(budget=1e-9), out)
    for junk in (".ptncn-x1y2z3.npz", "run.h5.resume-tmp"):
        (out / junk).write_bytes(b"partial")
    assert main(["resume", str(out), "--quiet", "--no-plots",
                 "--set", "train.time_budget_s=0"]) == 0
    assert not (out / ".ptncn-x1y2z3.npz").exists()
    assert not (out / "run.h5.resume-tmp").exists()


# ---------------------------------------------------------------------------
# resume changes nothing it does not own
# ---------------------------------------------------------------------------
@pytest.fixture
def stopped(tmp_path):
    """A run stopped by its time budget after its first batch (a checkpoint to resume)."""
    out = tmp_path / "run"
    _train(_cfg(budget=1e-9, eval_every=1), out)
    return out


@pytest.mark.parametrize("sets,names", [
    (["model.hidden=[4,4]"], ["model.hidden"]),
    (['record.traces=["nope"]'], ["record.traces"]),
    (["optimizer.lr=0.5", "train.time_budget_s=0", "seed=9"], ["optimizer.lr", "seed"]),
    (["train.batches='many'"], ["batches", "many"]),
    (["train.batches"], ["train.batches"]),
    (["train.eval_split='valid'"], ["train.eval_split"]),
])
def test_resume_refuses_bad_or_unhonoured_overrides_and_changes_nothing(stopped, capsys, sets,
                                                                         names):
    before = _files(stopped)
    argv = ["resume", str(stopped), "--quiet", "--no-plots"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert all(n in line for n in names), line
    assert _files(stopped) == before


def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    _train(_cfg(eval_every=2), out)
    before = _files(out)
    assert main(["resume", str(out), "--quiet", "--no-plots"]) == 0
    assert "finished" in capsys.readouterr().out
    assert _files(out) == before


def test_a_finished_run_extended_by_train_batches_equals_a_longer_run(tmp_path):
    out = tmp_path / "run"
    _train(_cfg(batches=3, eval_every=1), out)
    assert main(["resume", str(out), "--quiet", "--no-plots", "--set", "train.batches=5"]) == 0
    _train(_cfg(batches=5, eval_every=1), tmp_path / "ref")
    got, ref = _params(out / "final.npz"), _params(tmp_path / "ref" / "final.npz")
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    m = json.loads((out / "metrics.json").read_text())
    assert [h["batch"] for h in m["history"]] == [1, 2, 3, 4, 5]


def test_resume_keeps_run_attributes_history_and_a_better_best(tmp_path, capsys):
    out = tmp_path / "run"
    # lr 15 gets worse after the first batch: the first evaluation stays the best
    _train(_cfg(lr=15.0, budget=1e-9, eval_every=1), out)
    first = json.loads((out / "metrics.json").read_text())
    assert len(first["history"]) == 1
    best_before = (out / "best.npz").read_bytes()
    assert main(["resume", str(out), "--quiet", "--no-plots",
                 "--set", "train.time_budget_s=0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [h["batch"] for h in m["history"]] == [1, 2, 3, 4, 5, 6]
    assert m["history"][0] == first["history"][0]
    assert all(h["loss"] > first["history"][0]["loss"] for h in m["history"][1:])
    assert m["best"]["loss"] == first["history"][0]["loss"]
    assert (out / "best.npz").read_bytes() == best_before
    from ptncn.record import open_recording
    with open_recording(out / "run.h5") as rec:
        assert json.loads(rec.file.attrs["config"])["name"] == "tiny"
        assert int(rec.file.attrs["seed"]) == 3
    assert json.loads((out / "config.json").read_text())["train"]["time_budget_s"] == 0


# ---------------------------------------------------------------------------
# divergence; zero-shot families
# ---------------------------------------------------------------------------
def test_diverging_train_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    r = _cli("train", _toml(tmp_path), "--out", out, "--quiet", "--no-plots",
             "--set", "optimizer.lr=1e30")
    assert r.returncode == 3, r
    line = _one_error_line(r.stderr, numpy_warnings=True)
    assert "diverged" in line and "at step" in line and "run.ckpt.npz" in line, line
    from ptncn import load
    ckpt = load(out / "run.ckpt.npz")
    assert all(np.isfinite(v).all() for v in ckpt.params.values())
    assert ckpt.extra_meta["step"] >= 1
    assert not (out / LOCK_NAME).exists()


def test_zeroshot_families_of_different_inputs_are_refused_before_anything(tmp_path, capsys):
    a, b = _toml(tmp_path, "a.toml"), _toml(tmp_path, "b.toml", vocab=9)
    zs = tmp_path / "zs.toml"
    zs.write_text(f'name = "zs"\n[zeroshot]\na = "{a}"\nb = "{b}"\nseeds = [1]\nadapt = [0]\n')
    out = tmp_path / "out"
    assert main(["zero-shot", str(zs), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "x_dim 6" in line and "x_dim 9" in line
    assert not out.exists()


def test_a_lock_held_by_an_unreaped_dead_process_is_stale(tmp_path):
    from ptncn.runlock import lock_owner

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while time.time() < deadline:                    # exited, not yet reaped: a zombie
        with open(f"/proc/{child.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    _fake_owner(tmp_path, pid=child.pid)
    assert lock_owner(tmp_path) is None
    child.wait()
    _fake_owner(tmp_path)                            # a live owner still holds it
    assert lock_owner(tmp_path)["pid"] == os.getpid()
