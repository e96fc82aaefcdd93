"""NWB export (ptncn.export.to_nwb): schema validation, round trip, overwrite, missing extra."""

import datetime as dt
import json
import shutil
import sys

import numpy as np
import pytest

from ptncn import PTNCN
from ptncn.data.synthetic import CyclicSymbols
from ptncn.record import Recorder, RecordingError, open_recording
from ptncn.simulate import Simulation

NAMES = ["loss", "z1", "eps1", "norm_dW1", "W1", "W2"]


def make_run(path, n_batches=5):
    model = PTNCN(8, (16, 16), seed=0)
    task = CyclicSymbols(batch_size=8, length=20, vocab=8, seed=0)
    rec = Recorder(path).add("loss").add("z1", rows=[0, 1]).add("eps1").add("norm_dW1")
    rec.add("W1", every=10).add("W2", every=7, phase="before")
    Simulation(model, task, n_batches, recorder=rec,
               attrs={"config": {"hidden": [16, 16]}, "seed": 0}).run()
    return path


def nwb_errors(pynwb, path):
    """Schema errors of an NWB file, across pynwb's validate() API versions."""
    try:
        result = pynwb.validate(path=str(path))            # pynwb >= 3: a list of errors
    except TypeError:
        result = pynwb.validate(paths=[str(path)])         # pynwb 2.x: (errors, status)
    if isinstance(result, tuple):
        result = result[0]
    return list(result)


@pytest.fixture
def pynwb():
    return pytest.importorskip("pynwb", reason="NWB export needs the 'nwb' extra (pynwb)")


@pytest.mark.parametrize("small_blocks", [False, True])
def test_export_validates_and_round_trips(pynwb, tmp_path, monkeypatch, small_blocks):
    from ptncn import export
    if small_blocks:     # copy in many small blocks: exercises the bounded-memory path
        monkeypatch.setattr(export, "_CHUNK_BYTES", 1000)
        monkeypatch.setattr(export, "_BUFFER_BYTES", 5000)
    run = make_run(tmp_path / "run.h5")
    out = tmp_path / "run.nwb"
    assert export.to_nwb(run, out, step_seconds=0.01) == str(out)
    assert nwb_errors(pynwb, out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5", "run.nwb"]   # no temp left

    with open_recording(run) as rec, pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        attrs = rec.attrs
        assert nwb.session_start_time == dt.datetime.fromisoformat(attrs["start_time"])
        notes = json.loads(nwb.notes)
        assert notes["config"] == {"hidden": [16, 16]} and notes["seed"] == 0
        assert notes["data_identity"] == attrs["data_identity"]
        assert notes["versions"]["ptncn"] == attrs["versions"]["ptncn"]
        module = nwb.processing["ptncn"]
        assert sorted(module.data_interfaces) == sorted(NAMES)
        for name in NAMES:
            trace, ts = rec[name], module[name]
            assert ts.data.shape == trace.shape, name
            np.testing.assert_array_equal(ts.data[:], trace[:])          # NaNs included
            np.testing.assert_allclose(ts.timestamps[:], trace.step * 0.01, rtol=0, atol=1e-12)
            assert ts.unit == (trace.attrs["units"] or "a.u.")
            assert ts.description == trace.attrs["meaning"]
            c = json.loads(ts.comments)
            assert c["every"] == trace.attrs["every"] and c["phase"] == trace.attrs["phase"]
            assert c["rows"] == json.loads(trace.attrs["rows"])
            assert c["unit_index"] == json.loads(trace.attrs["unit_index"])
        assert module["z1"].data.shape == (100, 2, 16)       # 3-D traces keep their axes
        assert json.loads(module["z1"].comments)["rows"] == [0, 1]
        assert module["W1"].timestamps[:].tolist() == pytest.approx(
            [0.1 * k for k in range(10)])
        assert module["loss"].unit == "a.u." and np.isnan(module["loss"].data[0])


def test_identifier_stable_and_description(pynwb, tmp_path):
    from ptncn.export import to_nwb
    run = make_run(tmp_path / "run.h5", n_batches=1)
    copy = tmp_path / "copy.h5"
    shutil.copy(run, copy)
    a = to_nwb(run, tmp_path / "a.nwb")
    b = to_nwb(copy, tmp_path / "b.nwb", session_description="my run")
    with pynwb.NWBHDF5IO(a, "r") as ia, pynwb.NWBHDF5IO(b, "r") as ib:
        na, nb = ia.read(), ib.read()
        assert na.identifier == nb.identifier
        assert "PTNCN" in na.session_description and "loss" in na.session_description
        assert nb.session_description == "my run"
        np.testing.assert_array_equal(na.processing["ptncn"]["z1"].timestamps[:],
                                      np.arange(20.0))        # default: 1 s per step


def test_empty_traces_export(pynwb, tmp_path):
    from ptncn.export import to_nwb
    path = tmp_path / "empty.h5"
    rec = Recorder(path).add("loss").add("z1", rows=[0])
    rec.start(PTNCN(8, (6, 5), seed=0), batch=4, metrics=["loss"])
    rec.close()
    out = to_nwb(path, tmp_path / "empty.nwb")
    assert nwb_errors(pynwb, out) == []
    with pynwb.NWBHDF5IO(out, "r") as io:
        m = io.read().processing["ptncn"]
        assert m["loss"].data.shape == (0,) and m["z1"].data.shape == (0, 1, 6)


def test_refuses_to_overwrite(pynwb, tmp_path):
    from ptncn.export import to_nwb
    run = make_run(tmp_path / "run.h5", n_batches=1)
    out = tmp_path / "run.nwb"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        to_nwb(run, out)
    assert out.read_bytes() == b"precious"
    to_nwb(run, out, overwrite=True)
    assert nwb_errors(pynwb, out) == []
    with pytest.raises(ValueError, match="recording itself"):
        to_nwb(run, run, overwrite=True)


def test_bad_arguments_and_reader_errors_propagate(pynwb, tmp_path):
    from ptncn.export import to_nwb
    with pytest.raises(FileNotFoundError):
        to_nwb(tmp_path / "missing.h5", tmp_path / "x.nwb")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(RecordingError):
        to_nwb(bad, tmp_path / "x.nwb")
    with pytest.raises(ValueError, match="step_seconds"):
        to_nwb(bad, tmp_path / "x.nwb", step_seconds=0)
    assert not (tmp_path / "x.nwb").exists()


def test_missing_pynwb_gives_install_hint(tmp_path, monkeypatch):
    from ptncn.export import to_nwb
    monkeypatch.setitem(sys.modules, "pynwb", None)       # makes `import pynwb` fail
    with pytest.raises(ImportError, match=r"NWB export needs the 'nwb' extra: "
                                          r"pip install 'ptncn\[nwb\]'"):
        to_nwb(tmp_path / "run.h5", tmp_path / "run.nwb")
