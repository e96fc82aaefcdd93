"""What the figures of ptncn.analysis show: units per task kind, evaluation markers and
final scores from metrics.json, per-trace error panels, full-resolution state detail
with sequence starts, the update clip, and dot rasters."""

import json
import math

import h5py
import numpy as np
import pytest

from ptncn import analysis
from ptncn.record import open_recording
from test_analysis import make_run, write_spike_file

LN2 = math.log(2)


def write_run(path, traces, identity=None, config=None, batch=4):
    """A recording laid out as in docs/recording.md: ``traces`` maps a name to
    (values, meaning); a 1-d array is a per-step metric."""
    with h5py.File(path, "w") as f:
        f.attrs.update(format="ptncn-recording", version=1, learner="Test", batch=batch,
                       start_time="2024-01-01T00:00:00+00:00",
                       versions=json.dumps({"ptncn": "0.1.0"}), seed=0,
                       config=json.dumps(config or {}),
                       data_identity=json.dumps(identity or {}))
        for name, (values, meaning) in traces.items():
            values = np.asarray(values, "f4")
            g = f.create_group(f"traces/{name}")
            g.create_dataset("values", data=values, maxshape=(None, *values.shape[1:]))
            g.create_dataset("step", data=np.arange(len(values), dtype="i8"), maxshape=(None,))
            axes = ["step"] if values.ndim == 1 else ["step", "row", "unit"]
            g["values"].attrs.update(meaning=meaning, units="", every=1, phase="after",
                                     kind="metric" if values.ndim == 1 else "quantity",
                                     axes=json.dumps(axes), rows="null", unit_index="null",
                                     full_shape=json.dumps(list(values.shape[1:])))
    return str(path)


def loss_with_starts(n_seq=30, length=20, seed=0):
    """A decaying loss, NaN at each sequence's first step."""
    rng = np.random.default_rng(seed)
    loss = 2.0 + np.exp(-np.arange(n_seq * length) / 200) + 0.1 * rng.standard_normal(
        n_seq * length)
    loss[::length] = np.nan
    return loss


METRICS = {"split": "valid",
           "final": {"loss": 1.5, "bpc": 1.5 / LN2, "ppl": math.exp(1.5), "batches": 2},
           "best": {"loss": 1.4, "step": 400},
           "history": [{"loss": 2.5, "step": 200, "batches": 2},
                       {"loss": 1.4, "step": 400, "batches": 2},
                       {"loss": 1.5, "step": 599, "batches": 2}],
           "baselines": {"unigram": {"loss": 3.0, "bpc": 3.0 / LN2}},
           "test": {"final": {"loss": 1.6, "bpc": 1.6 / LN2, "ppl": math.exp(1.6)},
                    "best": {"loss": 1.45}, "baselines": {"unigram": {"loss": 3.1}}}}


def lines_by_gid(fig, gid):
    return [l for ax in fig.axes for l in ax.get_lines() if l.get_gid() == gid]


# ---------------------------------------------------------------------------
# learning curve
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("identity,config,unit,other", [
    ({"task": "ptb_char", "x_dim": 49}, {}, "bits/char", "nats/char"),
    ({"task": "ptb_word"}, {}, "bits/word", "nats/word"),
    ({"task": "array", "kind": "onehot", "x_dim": 5}, {}, "bits/token", "nats/token"),
    ({"task": "bouncing_digits"}, {}, "nats/frame", None),
    ({"task": "bit_recall"}, {}, "nats/frame", None),
    ({"task": "array", "kind": "binary"}, {}, "nats/frame", None),
    ({"task": "mine"}, {"model": {"out": "sigmoid"}}, "nats/frame", None),
    ({"task": "mine"}, {"model": {"out": "softmax"}}, "bits/token", "nats/token"),
    ({"task": "mine"}, {}, "nats/step", None),
])
def test_learning_curve_units_follow_the_task_kind(tmp_path, identity, config, unit, other):
    loss = loss_with_starts()
    path = write_run(tmp_path / "run.h5", {"loss": (loss, "loss")}, identity, config)
    fig = analysis.learning_curve(path)
    ax = fig.axes[0]
    assert unit in ax.get_ylabel() and unit in ax.get_title()
    secondary = [a.get_ylabel() for a in ax.child_axes]
    if other:
        assert secondary and other in secondary[0]
        np.testing.assert_allclose(lines_by_gid(fig, "raw")[0].get_ydata(),
                                   loss[np.isfinite(loss)] / LN2, rtol=1e-6)
    else:
        assert not secondary
        np.testing.assert_allclose(lines_by_gid(fig, "raw")[0].get_ydata(),
                                   loss[np.isfinite(loss)], rtol=1e-6)
    if unit == "nats/frame" and identity["task"] == "bouncing_digits":
        assert "summed over" in ax.get_ylabel()
    # the one-hot chance level needs a vocabulary
    assert bool(lines_by_gid(fig, "chance")) == (unit == "bits/char" or "x_dim" in identity)


def test_task_kind_from_metrics_names(tmp_path):
    path = write_run(tmp_path / "run.h5", {"loss": (loss_with_starts(), "loss")},
                     {"task": "mine"})
    with open_recording(path) as r:
        assert analysis.task_kind(r) is None
        assert analysis.task_kind(r, {"final": {"bpc": 1.0}}) == "onehot"
        assert analysis.task_kind(r, {"final": {"bce_per_frame": 1.0}}) == "binary"


def test_learning_curve_draws_evaluations_and_final_scores(tmp_path):
    loss = loss_with_starts()
    path = write_run(tmp_path / "run.h5", {"loss": (loss, "loss")}, {"task": "ptb_char"})
    plain = analysis.learning_curve(path)                       # no metrics.json: works
    for gid in ("evaluations", "test", "baseline_unigram"):
        assert not lines_by_gid(plain, gid)
    with open(tmp_path / "metrics.json", "w") as f:
        json.dump(METRICS, f)
    fig = analysis.learning_curve(path)
    (ev,) = lines_by_gid(fig, "evaluations")
    np.testing.assert_array_equal(ev.get_xdata(), [200, 400, 599])
    np.testing.assert_allclose(ev.get_ydata(), np.array([2.5, 1.4, 1.5]) / LN2)  # same unit
    (star,) = lines_by_gid(fig, "test")
    np.testing.assert_allclose(star.get_ydata(), [1.6 / LN2])
    (base,) = lines_by_gid(fig, "baseline_unigram")
    np.testing.assert_allclose(base.get_ydata(), [3.0 / LN2] * 2)
    title = fig.axes[0].get_title()
    assert f"test {1.6 / LN2:.3f}" in title and "perplexity" in title
    assert "step 400" in title and f"{1.45 / LN2:.3f}" in title
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("valid evaluations" in t for t in legend)
    assert any("unigram" in t for t in legend)


def test_learning_curve_bit_accuracy_in_title(tmp_path):
    path = write_run(tmp_path / "run.h5", {"loss": (loss_with_starts(), "loss")},
                     {"task": "bit_recall"})
    m = {"split": "valid", "final": {"loss": 0.6, "bce_per_frame": 0.6},
         "test": {"final": {"loss": 0.62, "bce_per_frame": 0.62, "bit_accuracy": 0.875}}}
    fig = analysis.learning_curve(path, metrics=m)
    assert "bit accuracy 0.875" in fig.axes[0].get_title()
    assert "nats/frame" in fig.axes[0].get_ylabel()


# ---------------------------------------------------------------------------
# error magnitudes
# ---------------------------------------------------------------------------
def test_error_magnitudes_one_log_panel_per_trace(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    e0 = 0.1 + 0.01 * rng.random((n, 2, 6))
    eps1 = 1e-4 * (1 + rng.random((n, 2, 6)))
    eps1[::20] = 1.0                                     # spikes at sequence starts
    path = write_run(tmp_path / "run.h5", {"e0": (e0, "e0"), "eps1": (eps1, "eps1")})
    fig = analysis.error_magnitudes(path)
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(panels) == 2                              # no series hidden behind another
    assert panels[0].get_yscale() == "linear" and panels[1].get_yscale() == "log"
    med = [l for l in panels[1].get_lines() if l.get_gid() == "median"][0]
    np.testing.assert_allclose(np.nanmedian(med.get_ydata()), 1.5e-4, rtol=0.1)
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("median" in t for t in legend) and any("each record" in t for t in legend)


# ---------------------------------------------------------------------------
# state heatmap
# ---------------------------------------------------------------------------
def test_sequence_starts_need_a_fixed_spacing(tmp_path):
    fixed = write_run(tmp_path / "a.h5", {"loss": (loss_with_starts(), "loss")})
    with open_recording(fixed) as r:
        np.testing.assert_array_equal(analysis.sequence_starts(r), np.arange(0, 600, 20))
    loss = loss_with_starts()
    loss[37:40] = np.nan                                 # padding at a batch's end
    varying = write_run(tmp_path / "b.h5", {"loss": (loss, "loss")})
    with open_recording(varying) as r:
        assert analysis.sequence_starts(r) is None


def test_state_heatmap_last_sequences_at_full_resolution(tmp_path):
    z1 = np.random.default_rng(5).uniform(-1, 1, (600, 2, 16))
    path = write_run(tmp_path / "z.h5", {"loss": (loss_with_starts(), "loss"),
                                         "z1": (z1, "state")})
    steps = np.arange(600)
    fig = analysis.state_heatmap(path, "z1", row=1)
    images = [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]
    assert len(images) == 2                              # overview + detail
    overview, detail = images
    assert overview.get_images()[0].get_array().shape[1] == len(steps)
    shown = detail.get_images()[0].get_array()
    assert shown.shape == (16, 60)                       # 3 x 20 records, 16 units
    np.testing.assert_allclose(shown, z1[-60:, 1].T, rtol=1e-6)      # every record, row 1
    assert [p.get_gid() for p in overview.patches] == ["detail_span"]
    marks = [l.get_xdata()[0] for l in detail.get_lines() if l.get_gid() == "sequence_start"]
    assert marks == [559.5, 579.5]
    assert "full resolution" in detail.get_title() and "every" not in detail.get_xlabel()


def test_state_heatmap_short_trace_single_panel(tmp_path):
    path = make_run(tmp_path / "short.h5", {"loss": {}, "z1": {"rows": [0]}}, batches=2)
    fig = analysis.state_heatmap(path, "z1")
    images = [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]
    assert len(images) == 1 and images[0].get_images()[0].get_array().shape[1] == 40


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "run.h5",
                    {"loss": {}, "z1": {"rows": [0, 1]}, "norm_W1": {}, "norm_dW1": {},
                     "norm_dV1": {}})


# ---------------------------------------------------------------------------
# update norms
# ---------------------------------------------------------------------------
def test_param_norms_marks_the_clip_and_how_often_it_binds(run_file):
    with open_recording(run_file) as r:
        level = analysis.update_clip_level(r)
        dW = r["norm_dW1"][:].astype(float)
    assert level == (1.0 / 8, 1.0, 8)                    # P-TNCN default clip, batch 8
    dW = dW[np.isfinite(dW) & (dW > 0)]
    share = np.mean(dW >= 0.125 * (1 - 1e-3))
    fig = analysis.param_norms(run_file)
    (clip,) = lines_by_gid(fig, "clip")
    np.testing.assert_allclose(clip.get_ydata(), [0.125, 0.125])
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert f"W1 (update at the clip in {100 * share:.1f}% of steps)" in legend
    assert any(t.startswith("clip / batch = 1 / 8") for t in legend)
    # coinciding update lines stay visible: the first is drawn wider
    upd = fig.axes[1].get_lines()
    assert upd[0].get_linewidth() > upd[1].get_linewidth()


def test_param_norms_no_clip_line_without_clipping(tmp_path):
    n = np.linspace(1, 2, 50)
    unclipped = write_run(tmp_path / "a.h5", {"norm_W1": (n, "W1"), "norm_dW1": (n / 10, "dW1")},
                          config={"model": {"clip": 1.0}})
    assert not lines_by_gid(analysis.param_norms(unclipped), "clip")
    off = write_run(tmp_path / "b.h5", {"norm_W1": (n, "W1"),
                                        "norm_dW1": (n / 10, "update (clipped, divided by "
                                                             "the batch size)")},
                    config={"model": {"clip": 0.0}})
    assert not lines_by_gid(analysis.param_norms(off), "clip")
    on = write_run(tmp_path / "c.h5", {"norm_W1": (n, "W1"),
                                       "norm_dW1": (np.full(50, 0.5), "update (clipped, "
                                                                      "divided by the batch size)")},
                   config={"model": {"clip": 2.0}}, batch=4)
    fig = analysis.param_norms(on)
    np.testing.assert_allclose(lines_by_gid(fig, "clip")[0].get_ydata(), [0.5, 0.5])
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "W1 (update at the clip in 100.0% of steps)" in legend


# ---------------------------------------------------------------------------
# spike rasters
# ---------------------------------------------------------------------------
def _dots(fig):
    return [c for ax in fig.axes for c in ax.collections if c.get_gid() == "dots"]


def test_spike_raster_short_window_is_dots(tmp_path):
    rng = np.random.default_rng(2)
    spikes = (rng.random((60, 1, 10)) < 0.2).astype("f4")
    fig = analysis.spike_raster(write_spike_file(tmp_path / "s.h5", spikes))
    (dots,) = _dots(fig)
    assert not [ax for ax in fig.axes if ax.get_images()]          # no heatmap
    assert len(dots.get_offsets()) == int(spikes.sum())
    marker = dots.get_paths()[0].vertices
    assert np.ptp(marker[:, 0]) > 0 and np.ptp(marker[:, 1]) > 0   # a dot, not a tick


def test_spike_raster_long_window_overview_plus_raster(tmp_path):
    rng = np.random.default_rng(3)
    spikes = rng.poisson(0.3, (1000, 1, 12)).astype("f4")
    fig = analysis.spike_raster(write_spike_file(tmp_path / "s.h5", spikes), window=100)
    (dots,) = _dots(fig)
    assert len(dots.get_offsets()) == int((spikes[-100:] > 0).sum())
    np.testing.assert_array_equal(np.unique(dots.get_offsets()[:, 0]),
                                  np.unique(np.nonzero(spikes[-100:, 0])[0] + 900))
    heat = [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]
    assert len(heat) == 1 and "overview" in heat[0].get_title()
    assert "count heatmap" in heat[0].get_title()
    binned = heat[0].get_images()[0].get_array()
    assert binned.sum() == pytest.approx(spikes.sum())


def test_units_raster_is_a_dot_per_event(tmp_path):
    path = write_spike_file(tmp_path / "u.h5", np.zeros((5, 1, 3)))
    t = np.sort(np.random.default_rng(4).uniform(0, 400, 300))
    with h5py.File(path, "a") as f:
        f.attrs["config"] = json.dumps({"model": {"window_ms": 40.0}})
        g = f.create_group("units/Z1")
        g["spike_times"], g["unit_index"] = t, np.arange(300) % 7
    fig = analysis.units_raster(path)
    n = sum(len(c.get_offsets()) for ax in fig.axes for c in ax.collections)
    assert n == int((t >= t[-1] - 240).sum())              # 6 windows of 40 ms
    windows = [l for ax in fig.axes for l in ax.get_lines() if l.get_gid() == "window"]
    assert windows and all(x % 40 == 0 for l in windows for x in l.get_xdata())
