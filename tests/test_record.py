"""Recording: layout, bounded buffers, SIGKILL safety, errors, reader."""

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from ptncn import PTNCN
from ptncn.data.synthetic import CyclicSymbols
from ptncn.record import Recorder, RecordingError, open_recording
from ptncn.simulate import Simulation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make(seed=0):
    return PTNCN(8, (6, 5), seed=seed), CyclicSymbols(batch_size=4, length=10, vocab=8, seed=seed)


def test_layout_attributes_and_values(tmp_path):
    model, task = make()
    path = tmp_path / "run.h5"
    rec = Recorder(path, buffer_steps=5)
    rec.add("z1", rows=[0, 2]).add("eps2", units=slice(0, 3)).add("W2", every=4, phase="before")
    rec.add("norm_dV1").add("loss").add("x_mu", rows=1)
    seen = {}

    def grab(sim):
        seen[sim.step - 1] = (model.quantity("z1")[[0, 2]].copy(),
                              model.quantity("eps2")[:, :3].copy())
    sim = Simulation(model, task, 2, recorder=rec, attrs={"config": {"hidden": [6, 5]}, "seed": 0})
    sim.on_step = grab
    sim.run()
    with h5py.File(path, "r") as f:        # plain h5py can read it
        assert f.attrs["format"] == "ptncn-recording"
        assert json.loads(f.attrs["config"]) == {"hidden": [6, 5]}
        assert "numpy" in json.loads(f.attrs["versions"])
        assert json.loads(f.attrs["data_identity"])["task"] == "cyclic_symbols"
        ds = f["traces/z1/values"]
        assert ds.maxshape[0] is None and ds.chunks is not None and ds.compression == "lzf"
        assert ds.attrs["phase"] == "after" and "layer 1" in ds.attrs["meaning"]
        assert f["traces/z1/step"][:].tolist() == list(range(20))
    r = open_recording(path)
    assert r.config == {"hidden": [6, 5]}
    assert r["z1"].shape == (20, 2, 6) and r["eps2"].shape == (20, 4, 3)
    assert r["x_mu"].shape == (20, 1, 8)
    for s, (z1, eps2) in seen.items():
        np.testing.assert_array_equal(r["z1"][s], z1)
        np.testing.assert_array_equal(r["eps2"][s], eps2)
    assert r["W2"].step.tolist() == [0, 4, 8, 12, 16]
    steps, vals = r["loss"].at_steps(1, 10)
    assert steps.tolist() == list(range(1, 10)) and np.isfinite(vals).all()
    assert np.isnan(r["loss"][0])                 # no prediction is scored at t = 0
    assert "z1" in r.summary() and "steps 0..19" in r.summary()
    r.close()


def test_phase_before_records_params_used_by_the_step(tmp_path):
    model, task = make()
    rec = Recorder(tmp_path / "r.h5").add("V1", phase="before")
    rec2 = Recorder(tmp_path / "r2.h5").add("V1", phase="after")
    Simulation(model, task, 1, recorder=rec).run()
    model2, _ = make()
    Simulation(model2, task, 1, recorder=rec2).run()
    with open_recording(tmp_path / "r.h5") as a, open_recording(tmp_path / "r2.h5") as b:
        np.testing.assert_array_equal(a["V1"][1:], b["V1"][:-1])   # before(t+1) == after(t)
        assert not np.array_equal(a["V1"][5], b["V1"][5])


def test_unknown_variable_lists_recordable_names(tmp_path):
    model, task = make()
    rec = Recorder(tmp_path / "r.h5").add("z9")
    with pytest.raises(ValueError, match=r"unknown variable 'z9'.*eps1"):
        rec.start(model, batch=4)
    assert not (tmp_path / "r.h5").exists()


def test_every_name_and_its_meaning_come_from_the_learner(tmp_path):
    pytest.importorskip("reservoirpy")
    from ptncn.baselines.esn import ESN
    esn = ESN(8, hidden=12, readout="rls", seed=0)
    task = CyclicSymbols(batch_size=4, length=10, vocab=8, seed=0)
    rec = Recorder(tmp_path / "r.h5").add("norm_dWout").add("norm_r").add("dWout").add("loss")
    norms = []
    sim = Simulation(esn, task, 1, recorder=rec)
    sim.on_step = lambda sim: norms.append(float(np.linalg.norm(esn.quantity("dWout"))))
    sim.run()
    with open_recording(tmp_path / "r.h5") as r:
        np.testing.assert_allclose(r["norm_dWout"][:], norms, rtol=1e-6)
        assert r["norm_dWout"].attrs["meaning"] == esn.describe("norm_dWout")[0]
        kinds = {n: r[n].attrs["kind"] for n in ("norm_dWout", "norm_r", "dWout", "loss")}
        assert kinds == {"norm_dWout": "norm", "norm_r": "norm", "dWout": "quantity",
                         "loss": "metric"}
        assert r["dWout"].shape[1:] == esn.quantity_shape("dWout", 4)


def test_bad_selections_and_options():
    with pytest.raises(ValueError, match="phase"):
        Recorder("x.h5").add("z1", phase="during")
    with pytest.raises(ValueError, match="every"):
        Recorder("x.h5").add("z1", every=0)
    with pytest.raises(ValueError, match="declared twice"):
        Recorder("x.h5").add("z1").add("z1")
    model, _ = make()
    with pytest.raises(ValueError, match="rows"):
        Recorder("never.h5").add("z1", rows=[7]).start(model, batch=4)


def test_unwritable_path_is_a_clear_error(tmp_path):
    model, _ = make()
    with pytest.raises(RecordingError, match="cannot create recording"):
        Recorder(tmp_path / "no" / "such" / "dir" / "r.h5").add("z1").start(model, batch=4)


def test_write_failure_stops_the_run_and_keeps_flushed_records(tmp_path, monkeypatch):
    model, task = make()
    path = tmp_path / "r.h5"
    rec = Recorder(path, buffer_steps=4, flush_seconds=1e9).add("z1")
    sim = Simulation(model, task, 3, recorder=rec)

    def disk_full(sim):
        if sim.step == 10:     # after two flushes (8 records), the disk "fills up"
            import h5py as h
            monkeypatch.setattr(h.Dataset, "resize",
                                lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    sim.on_step = disk_full
    with pytest.raises(RecordingError, match="No space left.*intact"):
        sim.run()
    monkeypatch.undo()
    with open_recording(path) as r:
        assert r["z1"].step.tolist() == list(range(8))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_bad_files_give_one_clear_error(tmp_path, damage):
    model, task = make()
    path = tmp_path / "r.h5"
    Simulation(model, task, 1, recorder=Recorder(path).add("z1")).run()
    if damage == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 3])
        match = "not a readable HDF5 file"
    elif damage == "garbage":
        path.write_bytes(b"hello" * 100)
        match = "not a readable HDF5 file"
    else:
        with h5py.File(path, "w") as f:
            f["x"] = np.zeros(3)
        match = "not a ptncn recording"
    with pytest.raises(RecordingError, match=match):
        open_recording(path)
    with pytest.raises(FileNotFoundError):
        open_recording(tmp_path / "missing.h5")


def test_trace_lookup_error_names_traces(tmp_path):
    model, task = make()
    Simulation(model, task, 1, recorder=Recorder(tmp_path / "r.h5").add("z1")).run()
    with open_recording(tmp_path / "r.h5") as r:
        with pytest.raises(KeyError, match="traces: z1"):
            r["z2"]


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from ptncn import PTNCN
    from ptncn.data.synthetic import CyclicSymbols
    from ptncn.record import Recorder
    from ptncn.simulate import Simulation
    model = PTNCN(8, (6, 5), seed=0)
    task = CyclicSymbols(batch_size=4, length=10, vocab=8, seed=0)
    rec = Recorder({path!r}, buffer_steps=8, flush_seconds=1e9).add("z1").add("eps1").add("loss")
    sim = Simulation(model, task, 10, recorder=rec, checkpoint_every={ckpt},
                     checkpoint_path={ckpt_path!r})
    def die(sim):
        if sim.step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
    sim.on_step = die
    sim.run()
""")


def test_sigkill_leaves_every_flushed_step_readable(tmp_path):
    path = str(tmp_path / "killed.h5")
    code = KILL_SCRIPT.format(root=ROOT, path=path, ckpt=0, ckpt_path=None, kill_at=30)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    # the deterministic re-run, uninterrupted
    model, task = make()
    ref = str(tmp_path / "ref.h5")
    Simulation(model, task, 10, recorder=Recorder(ref).add("z1").add("eps1").add("loss")).run()
    with open_recording(path) as r, open_recording(ref) as full:
        assert r["z1"].step.tolist() == list(range(24))       # three flushes of 8 records
        for name in ("z1", "eps1", "loss"):
            np.testing.assert_array_equal(r[name][:], full[name][:24])


def test_sigkill_then_resume_gives_bitwise_identical_params_and_traces(tmp_path):
    path, ckpt = str(tmp_path / "run.h5"), str(tmp_path / "run.ckpt.npz")
    code = KILL_SCRIPT.format(root=ROOT, path=path, ckpt=7, ckpt_path=ckpt, kill_at=33)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    _, task = make()
    rec = Recorder(path, buffer_steps=8).add("z1").add("eps1").add("loss")
    sim = Simulation.resume(ckpt, task, recorder=rec)
    assert sim.step == 28 and sim.position == (2, 8)
    sim.run()
    model, task = make()
    ref = str(tmp_path / "ref.h5")
    Simulation(model, task, 10, recorder=Recorder(ref).add("z1").add("eps1").add("loss")).run()
    for k in model.params:
        np.testing.assert_array_equal(sim.learner.params[k], model.params[k])
    with open_recording(path) as r, open_recording(ref) as full:
        assert r["z1"].step.tolist() == list(range(100))
        for name in ("z1", "eps1", "loss"):
            np.testing.assert_array_equal(r[name][:], full[name][:])


@pytest.mark.parametrize("locked", [False, True])
def test_live_reader_sees_flushed_records(tmp_path, locked):
    """A reader of a live run sees what the writer has flushed; when the writer holds the
    run folder's lock the reader knows it and reads with SWMR, and after it not."""
    import contextlib

    from ptncn.runlock import RunLock
    model, task = make()
    path = tmp_path / "live.h5"
    rec = Recorder(path, buffer_steps=4, flush_seconds=1e9).add("z1")
    sim = Simulation(model, task, 2, recorder=rec)
    counts = []

    def peek(sim):
        if sim.step in (5, 13):
            with open_recording(path) as r:
                if locked:
                    assert r.writer is not None and r.file.swmr_mode
                counts.append(len(r["z1"]))
    sim.on_step = peek
    with RunLock(str(tmp_path), "train") if locked else contextlib.nullcontext():
        sim.run()
    if locked:
        with open_recording(path) as r:
            assert r.writer is None and not r.file.swmr_mode
    assert counts == [4, 12]


def test_memory_is_bounded_by_the_buffer(tmp_path):
    model, _ = make()
    rec = Recorder(tmp_path / "r.h5", buffer_steps=16).add("z1").add("W2")
    rec.start(model, batch=4)
    assert rec.traces["z1"].buf.shape == (16, 4, 6)
    assert rec.traces["W2"].buf.shape == (16, 5, 6)
    rec.close()


def test_to_xarray_when_installed(tmp_path):
    xr = pytest.importorskip("xarray", reason="to_xarray needs the optional xarray package")
    model, task = make()
    Simulation(model, task, 1, recorder=Recorder(tmp_path / "r.h5").add("z1").add("loss")).run()
    with open_recording(tmp_path / "r.h5") as r:
        ds = r.to_xarray()
        assert isinstance(ds, xr.Dataset) and ds["z1"].shape == r["z1"].shape


def test_progress_bar_shows_steps_and_loss(tmp_path, capsys):
    model, task = make()
    Simulation(model, task, 2, progress=True).run()
    err = capsys.readouterr().err
    assert "step" in err and "loss=" in err and "tok_s=" in err
    Simulation(model, task, 1, progress=False).run()
    assert capsys.readouterr().err == ""


def test_start_without_batch_needs_it_only_for_per_row_traces(tmp_path):
    m = PTNCN(4, (3, 3), seed=0)
    rec = Recorder(tmp_path / "a.h5").add("norm_dW1").add("W1")
    rec.start(m)                                   # no per-row trace: no batch needed
    rec.close()
    with pytest.raises(ValueError, match="one row per sequence"):
        Recorder(tmp_path / "b.h5").add("z1").start(m)
    m.reset(2)
    rec = Recorder(tmp_path / "c.h5").add("z1")
    rec.start(m)                                   # the learner's current batch
    assert rec.traces["z1"].shape == (2, 3)
    rec.close()


@pytest.mark.parametrize("held", [False, True])
def test_open_recording_after_a_plain_h5py_open_in_the_same_process(tmp_path, held):
    """HDF5 opens a file once per process; a second open must use the same SWMR flag.
    A reader that opened the file plainly (h5py.File(path, "r")) must not make
    open_recording report a healthy file as corrupt, also while the folder's lock is held
    (a run still evaluating after its recording was closed)."""
    from ptncn.runlock import RunLock
    model, task = make()
    path = tmp_path / "run.h5"
    Simulation(model, task, 1, recorder=Recorder(path).add("z1").add("loss")).run()
    with open_recording(path) as r:
        want = r["z1"][:]
    lock = RunLock(tmp_path, "train") if held else None
    if lock is not None:
        lock.__enter__()
    try:
        with h5py.File(path, "r") as plain:
            with open_recording(path) as r:
                np.testing.assert_array_equal(r["z1"][:], want)
                assert r.names == ["loss", "z1"]
            assert "traces" in plain                  # the plain handle still works
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
