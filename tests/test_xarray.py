"""Recording.to_xarray: shared coordinates, attributes, lazy reads, selection."""

import builtins

import numpy as np
import pytest

from ptncn import PTNCN, Recorder, Simulation, open_recording
from ptncn.data import CyclicSymbols

xr = pytest.importorskip("xarray", reason="to_xarray needs the optional xarray package")


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    """A small recording: traces at every step and every 5th / 10th, row and unit picks."""
    p = tmp_path_factory.mktemp("xr") / "run.h5"
    model = PTNCN(x_dim=8, hidden=(6, 5), seed=0)
    task = CyclicSymbols(batch_size=4, length=10, vocab=8, seed=0)
    rec = Recorder(p, buffer_steps=7)
    rec.add("z1", rows=[0, 2]).add("e1", rows=[0, 2]).add("eps1", every=10)
    rec.add("mu1", units=[1, 3]).add("z2").add("x").add("x_mu").add("e0")
    rec.add("W1", every=5, phase="before").add("dW1", every=5).add("norm_dW2").add("loss")
    Simulation(model, task, n_batches=3, recorder=rec, progress=False).run()
    return p


class CountingValues:
    """Stands in for a trace's values dataset and counts the reads."""

    def __init__(self, inner):
        self.inner, self.reads = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __getitem__(self, idx):
        self.reads += 1
        return self.inner[idx]


def test_shared_dimensions_and_coordinates(path):
    with open_recording(path) as r:
        ds = r.to_xarray()
        assert ds["z1"].dims == ("step", "row_e1", "unit_1")
        assert ds["e1"].dims == ds["z1"].dims                  # same rows: one coordinate
        assert ds["row_e1"].values.tolist() == [0, 2]
        assert ds["z2"].dims == ("step", "row", "unit_2")
        assert ds["row"].values.tolist() == [0, 1, 2, 3]
        assert ds["eps1"].dims == ("step_every10", "row", "unit_1")
        assert ds["mu1"].dims == ("step", "row", "unit_1_mu1")  # another unit pick of layer 1
        assert ds["mu1"]["unit_1_mu1"].values.tolist() == [1, 3]
        for name in ("x", "x_mu", "e0"):
            assert ds[name].dims == ("step", "row", "unit_x")
        assert ds.sizes["unit_x"] == 8 and ds.sizes["unit_1"] == 6 and ds.sizes["unit_2"] == 5
        assert ds["W1"].dims == ds["dW1"].dims == ("step_every5", "W1_row", "W1_col")
        assert ds["loss"].dims == ds["norm_dW2"].dims == ("step",)
        np.testing.assert_array_equal(ds["step"].values, r["z1"].step)
        np.testing.assert_array_equal(ds["step_every5"].values, r["W1"].step)
        assert ds["step_every10"].values.tolist() == [0, 10, 20]


def test_attributes(path):
    with open_recording(path) as r:
        ds = r.to_xarray()
        for name in r.names:
            a = ds[name].attrs
            assert a["long_name"] == r[name].attrs["meaning"]
            assert a["units"] == r[name].attrs["units"]
            assert a["every"] == r[name].attrs["every"] and a["phase"] == r[name].attrs["phase"]
        assert "layer 1" in ds["z1"].attrs["long_name"]
        assert ds["z1"].attrs["units"] == "activation" and ds["W1"].attrs["units"] == "weight"
        assert ds["step"].attrs["long_name"]
        assert ds["unit_1"].attrs["long_name"] == "unit of layer 1"
        assert ds.attrs["learner"] == "PTNCN" and ds.attrs["format"] == "ptncn-recording"


def test_building_reads_no_values_and_selection_reads_little(path):
    with open_recording(path) as r:
        counters = {name: CountingValues(t.values) for name, t in r.traces.items()}
        for name, c in counters.items():
            r.traces[name].values = c
        ds = r.to_xarray()
        assert all(c.reads == 0 for c in counters.values())
        assert not isinstance(ds["z1"].variable._data, np.ndarray)
        assert ds["z1"].sel(step=slice(3, 5)).shape == (3, 2, 6)  # shape needs no read
        assert counters["z1"].reads == 0
        part = ds["z1"].sel(step=4).values
        assert counters["z1"].reads == 1 and part.shape == (2, 6)
        assert sum(c.reads for n, c in counters.items() if n != "z1") == 0


def test_values_equal_direct_reads(path):
    with open_recording(path) as r:
        ds = r.to_xarray().load()
        for name in r.names:
            np.testing.assert_array_equal(ds[name].values, r[name][:])
        np.testing.assert_array_equal(ds["z1"].sel(step=7).values, r["z1"][7])
        np.testing.assert_array_equal(ds["eps1"].sel(step_every10=20, row=3).values,
                                      r["eps1"][2, 3])
        np.testing.assert_array_equal(ds["W1"].sel(step_every5=[5, 15]).values,
                                      r["W1"][[1, 3]])
        np.testing.assert_array_equal(ds["mu1"].sel(unit_1_mu1=3).values, r["mu1"][:, :, 1])
        loss9 = float(r["loss"][9])
    assert float(ds["loss"].sel(step=9)) == loss9          # loaded values outlive the file


def test_unit_and_row_picks_give_their_own_coordinates(tmp_path):
    model = PTNCN(x_dim=8, hidden=(6, 6), seed=1)
    task = CyclicSymbols(batch_size=3, length=5, vocab=8, seed=1)
    rec = Recorder(tmp_path / "r.h5").add("z1").add("z2").add("x", units=[2, 5])
    Simulation(model, task, n_batches=1, recorder=rec, progress=False).run()
    with open_recording(tmp_path / "r.h5") as r:
        ds = r.to_xarray()
    assert ds["z1"].dims == ("step", "row", "unit_1")      # equal widths, different layers
    assert ds["z2"].dims == ("step", "row", "unit_2")
    assert ds["x"].dims == ("step", "row", "unit_x") and ds["unit_x"].values.tolist() == [2, 5]


def test_without_xarray_the_error_names_the_install(path, monkeypatch):
    real = builtins.__import__

    def no_xarray(name, *args, **kwargs):
        if name == "xarray" or name.startswith("xarray."):
            raise ImportError("No module named 'xarray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xarray)
    with open_recording(path) as r:
        with pytest.raises(ImportError, match=r"pip install 'ptncn\[test\]'.*xarray"):
            r.to_xarray()
