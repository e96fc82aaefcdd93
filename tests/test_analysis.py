"""Figures from recordings (ptncn.analysis) and the one-page report (analysis/report.py)."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from matplotlib.image import imread

from ptncn import PTNCN, analysis
from ptncn.data.synthetic import CyclicSymbols
from ptncn.record import Recorder, RecordingError, open_recording
from ptncn.simulate import Simulation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
import report  # noqa: E402  (analysis/report.py)
W_PX, H_PX = round(analysis.FIGSIZE[0] * analysis.DPI), round(analysis.FIGSIZE[1] * analysis.DPI)


def make_run(path, traces, vocab=8, batches=20, hidden=(16, 16)):
    """Record ``traces`` ({name: kwargs for Recorder.add}) over a short CyclicSymbols run."""
    model = PTNCN(vocab, hidden, seed=0)
    task = CyclicSymbols(batch_size=8, length=20, vocab=vocab, seed=0)
    rec = Recorder(path)
    for name, kw in traces.items():
        rec.add(name, **kw)
    Simulation(model, task, batches, recorder=rec,
               attrs={"config": {"x_dim": vocab, "hidden": list(hidden)}, "seed": 0}).run()
    return str(path)


FULL = {"loss": {}, "e0": {}, "eps1": {}, "eps2": {}, "e1": {}, "z1": {"rows": [0, 1]},
        "norm_W1": {}, "norm_dW1": {}, "norm_V2": {}}


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "run.h5", FULL)


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory):
    """vocab 16: each one-hot x is a 4x4 'frame'; x and x_mu for rows 0 and 1."""
    return make_run(tmp_path_factory.mktemp("frames") / "run16.h5",
                    {"loss": {}, "x": {"rows": [0, 1]}, "x_mu": {"rows": [0, 1]}}, vocab=16,
                    batches=5)


def write_spike_file(path, values, name="spikes"):
    """A recording laid out as in docs/recording.md holding one hand-made trace."""
    with h5py.File(path, "w") as f:
        f.attrs.update(format="ptncn-recording", version=1, learner="Test", batch=values.shape[1],
                       start_time="2024-01-01T00:00:00+00:00",
                       versions=json.dumps({"ptncn": "0.1.0"}), seed=0,
                       config=json.dumps({}))
        g = f.create_group(f"traces/{name}")
        v = g.create_dataset("values", data=values.astype("f4"), maxshape=(None, *values.shape[1:]))
        g.create_dataset("step", data=np.arange(len(values), dtype="i8"), maxshape=(None,))
        v.attrs.update(meaning="spikes", units="spikes", kind="quantity", every=1, phase="after",
                       axes=json.dumps(["step", "row", "unit"]), rows="null", unit_index="null",
                       full_shape=json.dumps(list(values.shape[1:])))
    return str(path)


def assert_real_image(path):
    img = imread(path)
    assert img.shape[1] == W_PX and img.shape[0] >= H_PX and img.shape[2] in (3, 4), \
        (path, img.shape)
    flat = img.reshape(-1, img.shape[2])
    assert len(np.unique(flat, axis=0)) > 20, f"{path} is (nearly) blank"
    return img


def texts_of(fig):
    """Title and axis labels of a figure: (figure/axes titles, xlabels, ylabels)."""
    titles = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    titles += [ax.get_title() for ax in fig.axes]
    xl = [ax.get_xlabel() for ax in fig.axes]
    yl = [ax.get_ylabel() for ax in fig.axes]
    return titles, xl, yl


# ---------------------------------------------------------------------------
def test_plot_run_writes_readable_pngs(run_file, tmp_path):
    out = tmp_path / "figs" / "nested"                     # created if missing
    paths = analysis.plot_run(run_file, out)
    names = [os.path.basename(p) for p in paths]
    assert names == ["learning_curve.png", "error_magnitudes.png", "state_heatmap_z1.png",
                     "param_norms.png"]
    for p in paths:
        assert os.path.dirname(p) == str(out)
        assert_real_image(p)


def test_plot_run_leaves_no_open_figures(run_file, tmp_path):
    import matplotlib.pyplot as plt
    before = plt.get_fignums()
    for i in range(2):
        analysis.plot_run(run_file, tmp_path / str(i))
    assert plt.get_fignums() == before


def test_every_figure_has_title_labels_and_legend(run_file, frames_file, tmp_path):
    spikes = write_spike_file(tmp_path / "spk.h5",
                              (np.random.default_rng(0).random((50, 2, 10)) < 0.2) * 1.0)
    figs = {"learning_curve": analysis.learning_curve(run_file),
            "error_magnitudes": analysis.error_magnitudes(run_file),
            "state_heatmap": analysis.state_heatmap(run_file, "z1", row=1),
            "param_norms": analysis.param_norms(run_file),
            "frames": analysis.predicted_vs_actual_frames(frames_file, row=1, n=5),
            "spike_raster": analysis.spike_raster(spikes)}
    for what, fig in figs.items():
        titles, xl, yl = texts_of(fig)
        assert any(titles), what
        plot_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        if what == "error_magnitudes":    # panels share x: step on the bottom row only
            assert all(ax.get_ylabel() for ax in plot_axes)
            assert sum(ax.get_xlabel() == "step" for ax in plot_axes) == 2
        elif what != "frames":      # frames: labels sit on the first column only
            for ax in plot_axes:
                assert ax.get_xlabel() and ax.get_ylabel(), (what, ax)
        else:
            assert any(xl) and sum(bool(y) for y in yl) >= 2
        lines = [l for ax in plot_axes for l in ax.get_lines() if not l.get_label().startswith("_")]
        if len(lines) > 1:
            assert fig.legends or any(ax.get_legend() for ax in plot_axes), what
    # one panel per error trace, each with its own line, named with what it is
    panels = [ax for ax in figs["error_magnitudes"].axes if ax.get_lines()]
    labels = [l.get_label() for ax in panels for l in ax.get_lines() if l.get_gid() == "median"]
    assert [lab.split()[0] for lab in labels] == ["e0", "e1", "eps1", "eps2"]
    assert [ax.get_title().split()[0] for ax in panels] == ["e0", "e1", "eps1", "eps2"]
    assert "input prediction error" in labels[0]
    # units are stated: CyclicSymbols is one-hot, so bits per token, nats on the right
    ax = figs["learning_curve"].axes[0]
    assert "bits/token" in ax.get_ylabel()
    assert any("nats/token" in a.get_ylabel() for a in ax.child_axes)   # secondary axis


def test_learning_curve_smoothed_length_and_values(run_file):
    with open_recording(run_file) as r:
        loss = r["loss"][:].astype(np.float64)
        steps = r["loss"].step
    ok = np.isfinite(loss)
    assert (~ok).any() and ok.sum() > 100                 # NaN at each sequence's first step
    fig = analysis.learning_curve(run_file)
    lines = {l.get_gid(): l for l in fig.axes[0].get_lines()}
    raw, sm = lines["raw"], lines["smoothed"]
    assert len(sm.get_xdata()) == len(raw.get_xdata()) == ok.sum()
    np.testing.assert_array_equal(sm.get_xdata(), steps[ok])
    w = analysis.smoothing_window(ok.sum())
    bits = loss[ok] / np.log(2)                            # one-hot task: plotted in bits
    np.testing.assert_allclose(raw.get_ydata(), bits)
    expected = analysis.smooth(bits, w)
    np.testing.assert_allclose(sm.get_ydata(), expected)
    h = (w - 1) // 2
    np.testing.assert_allclose(expected[h], bits[:w].mean())           # centred window
    np.testing.assert_allclose(expected[-1], bits[-(h + 1):].mean())
    # an explicit window
    fig5 = analysis.learning_curve(run_file, window=5)
    sm5 = [l for l in fig5.axes[0].get_lines() if l.get_gid() == "smoothed"][0]
    np.testing.assert_allclose(sm5.get_ydata()[-1], bits[-3:].mean())
    np.testing.assert_allclose(sm5.get_ydata()[10], bits[8:13].mean())


def test_smooth_helper():
    np.testing.assert_allclose(analysis.smooth([1, 2, 3, 4], 2), [1.5, 2.5, 3.5, 4])
    np.testing.assert_allclose(analysis.smooth([1, 2, 3, 4, 5], 3), [1.5, 2, 3, 4, 4.5])
    np.testing.assert_allclose(analysis.smooth([1, 2, 3], 1), [1, 2, 3])
    assert analysis.smooth([], 3).size == 0


def test_smooth_has_no_lag_and_no_kink():
    """A centred mean follows a ramp exactly away from the ends (a trailing mean lags
    by half a window and bends where the window fills)."""
    ramp = np.arange(200.0)
    sm = analysis.smooth(ramp, 21)
    np.testing.assert_allclose(sm[10:-10], ramp[10:-10])
    np.testing.assert_allclose(analysis.smooth(np.full(50, 3.0), 7), 3.0)
    slope = np.diff(sm)
    assert np.all(slope > 0) and np.all(slope <= 1 + 1e-12)   # monotone, never steeper


def test_binned_median_passes_over_sparse_spikes():
    steps = np.arange(400)
    v = np.full(400, 1e-3)
    v[::20] = 1.0                                            # a spike at each sequence start
    ms, mv = analysis.binned_median(steps, v, n_bins=40)
    assert ms.size == 40 and np.all(np.diff(ms) > 0)
    np.testing.assert_allclose(mv, 1e-3)


def test_missing_traces_skipped_by_plot_run_but_keyerror_from_functions(tmp_path):
    path = make_run(tmp_path / "few.h5", {"z1": {"rows": 0}}, batches=2)
    paths = analysis.plot_run(path, tmp_path / "out")
    assert [os.path.basename(p) for p in paths] == ["state_heatmap_z1.png"]
    planned, skipped = analysis.figure_plan(path)
    assert {name for name, _ in skipped} >= {"learning_curve", "error_magnitudes", "param_norms",
                                             "frames", "spike_raster"}
    for func, needed in ((analysis.learning_curve, "loss"),
                         (analysis.error_magnitudes, "e0"),
                         (analysis.param_norms, "norm_"),
                         (analysis.predicted_vs_actual_frames, "'x'"),
                         (analysis.spike_raster, "spikes")):
        with pytest.raises(KeyError, match=needed):
            func(path)
    with pytest.raises(KeyError, match="z2"):
        analysis.state_heatmap(path, name="z2")
    with pytest.raises(ValueError, match="rows"):
        analysis.state_heatmap(path, name="z1", row=3)    # row 3 was not recorded


def test_frames_grid_and_shape_errors(frames_file, run_file, tmp_path):
    fig = analysis.predicted_vs_actual_frames(frames_file, row=0, n=6)
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(images) == 12
    assert all(ax.get_images()[0].get_array().shape == (4, 4) for ax in images)
    # the top row shows x, the bottom x_mu, at the same steps
    with open_recording(frames_file) as r:
        x = r["x"][:, 0, :]
    shown = images[0].get_images()[0].get_array().ravel()
    assert any(np.array_equal(shown, row) for row in x)
    # explicit shape
    fig = analysis.predicted_vs_actual_frames(frames_file, n=3, shape=(2, 8))
    assert [ax for ax in fig.axes if ax.get_images()][0].get_images()[0].get_array().shape == (2, 8)
    with pytest.raises(ValueError, match="shape"):
        analysis.predicted_vs_actual_frames(frames_file, shape=(3, 5))
    # vocab 8: not a perfect square and no shape
    eight = make_run(tmp_path / "x8.h5", {"x": {"rows": [0]}, "x_mu": {"rows": [0]}}, batches=2)
    with pytest.raises(ValueError, match="perfect square"):
        analysis.predicted_vs_actual_frames(eight)
    fig = analysis.predicted_vs_actual_frames(eight, shape=(2, 4), n=4)
    assert len([ax for ax in fig.axes if ax.get_images()]) == 8
    # plot_run skips the non-square case instead of failing
    paths = analysis.plot_run(eight, tmp_path / "out8")
    assert not any("frames" in p for p in paths)
    paths = analysis.plot_run(frames_file, tmp_path / "out16")
    assert [os.path.basename(p) for p in paths] == ["learning_curve.png", "frames.png"]
    for p in paths:
        assert_real_image(p)


def test_spike_raster_and_plot_run_on_spiking_file(tmp_path):
    rng = np.random.default_rng(1)
    spikes = (rng.random((80, 2, 12)) < 0.1).astype("f4")
    path = write_spike_file(tmp_path / "spk.h5", spikes)
    fig = analysis.spike_raster(path)
    pts = fig.axes[0].collections[0].get_offsets()
    assert len(pts) == int(spikes[:, 0].sum())              # one mark per spike of row 0
    paths = analysis.plot_run(path, tmp_path / "out")
    assert [os.path.basename(p) for p in paths] == ["spike_raster_spikes.png"]
    assert_real_image(paths[0])
    counts = write_spike_file(tmp_path / "cnt.h5", rng.poisson(0.3, (40, 1, 6)) * 1.0,
                              name="spikes_n")
    fig = analysis.spike_raster(counts, name="spikes_n")
    assert len(fig.axes) == 2                               # counts get a colorbar


def test_spike_raster_works_on_any_trace(run_file):
    fig = analysis.spike_raster(run_file, name="z1", row=1)
    dots = [c for ax in fig.axes for c in ax.collections if c.get_gid() == "dots"]
    assert len(dots) == 1 and len(dots[0].get_offsets()) > 0


def test_accepts_open_recording_and_keeps_it_open(run_file):
    with open_recording(run_file) as r:
        analysis.learning_curve(r)
        analysis.state_heatmap(r, "z1")
        assert len(r["loss"]) > 0                           # still open


def test_bad_files_propagate_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        analysis.plot_run(tmp_path / "absent.h5", tmp_path / "out")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(RecordingError):
        analysis.plot_run(bad, tmp_path / "out")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(RecordingError):
        analysis.learning_curve(foreign)


def test_report_script(run_file, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "analysis", "report.py"), run_file,
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.split()
    assert str(out / "report.html") in printed and str(out / "report.png") in printed
    assert str(out / "learning_curve.png") in printed
    page = (out / "report.html").read_text()
    assert "<pre>" in page and page.count("<img") == 4
    assert "data:image/png;base64," in page and "run.h5" in page
    assert "hidden" in page                                 # the config
    img = imread(out / "report.png")
    assert img.shape[0] > 2 * H_PX and img.shape[1] == 2 * W_PX + report.GUTTER_PX
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 20


def test_report_script_bad_file(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "analysis", "report.py"),
                           str(tmp_path / "none.h5")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "none.h5" in proc.stderr and "Traceback" not in proc.stderr
