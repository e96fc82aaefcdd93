"""Figures from a recording (the HDF5 run file written by :class:`ptncn.record.Recorder`).

Every function takes an open :class:`~ptncn.record.Recording` or a path to a
run file and returns a :class:`matplotlib.figure.Figure`.  The figures are
built on ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no
GUI backend is touched, nothing is registered in pyplot's figure list, and a
figure is freed as soon as it is no longer referenced (``savefig`` renders it
with the Agg canvas).

=============================  =====================================================
function                       needs the traces
=============================  =====================================================
:func:`learning_curve`         ``loss``
:func:`error_magnitudes`       any of ``e0, e1, ...`` / ``eps1, eps2, ...``
:func:`state_heatmap`          a per-step state, e.g. ``z1`` (rows x units)
:func:`param_norms`            any ``norm_<param>`` / ``norm_d<param>``
:func:`predicted_vs_actual_frames`  ``x`` and ``x_mu`` (square frames, or ``shape=``)
:func:`spike_raster`           any trace with a unit axis, e.g. ``spikes``
:func:`units_raster`           spike events in ``units/<population>`` groups
=============================  =====================================================

A function asked for a trace the file lacks raises ``KeyError`` naming it (and
listing the traces there are).  :func:`plot_run` writes every figure the file's
traces allow and skips the others.

Units and context come from the recording and the run folder: the loss is in
the task's unit (:func:`loss_units`: bits per symbol for one-hot tasks, nats per
frame for binary ones), the ``metrics.json`` the harness writes beside
``run.h5`` adds evaluations and final scores to the learning curve, sequence
starts (:func:`sequence_starts`) are marked on heatmaps and rasters, and the
update clip (:func:`update_clip_level`) on the update norms.  docs/figures.md
shows examples.

Large runs: traces are read in bounded chunks (error magnitudes) or in part
(heatmaps: the last sequences in full plus an overview of at most
``max_records`` records, evenly strided; rasters: the last sequences as dots plus
a binned count overview of the last ``max_records`` records), so a figure of a
long run needs little memory.
"""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from contextlib import contextmanager

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .record import Recording, open_recording

FIGSIZE = (8.0, 4.5)          # inches
DPI = 110                     # -> 880 x 495 pixel PNGs
_LN2 = math.log(2.0)
_READ_BUDGET = 1 << 25        # bytes per chunk when streaming a trace (32 MiB)

_ERROR_RE = re.compile(r"^(e|eps)(\d+)$")
_STATE_RE = re.compile(r"^(h|z|mu|y|d)(\d+)$")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
@contextmanager
def _opened(rec):
    """Yield an open Recording: ``rec`` itself, or ``rec`` (a path) opened and closed after."""
    if isinstance(rec, Recording):
        yield rec
    else:
        r = open_recording(rec)
        try:
            yield r
        finally:
            r.close()


def _new_figure(figsize=FIGSIZE) -> Figure:
    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def _need(r: Recording, name: str, what: str):
    """The trace ``name``, or KeyError saying which figure needed it."""
    if name not in r:
        raise KeyError(f"{what} needs the trace {name!r}, which {r.path} does not have "
                       f"(traces: {', '.join(r.names) or 'none'})")
    t = r[name]
    if len(t) == 0:
        raise ValueError(f"trace {name!r} in {r.path} has no records yet")
    return t


def _json_attr(t, key):
    v = t.attrs.get(key)
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode()
    return json.loads(v) if isinstance(v, str) else v


def _attr_str(t, key, default=""):
    v = t.attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _row_position(t, row: int, name: str) -> int:
    """Position on the trace's row axis of batch row ``row``."""
    if t.values.ndim < 3:
        raise ValueError(f"trace {name!r} has shape {t.shape}; expected (records, rows, units)")
    rows = _json_attr(t, "rows")
    if rows is None:
        if not 0 <= row < t.shape[1]:
            raise ValueError(f"trace {name!r} has batch rows 0..{t.shape[1] - 1}; no row {row}")
        return row
    if row not in rows:
        raise ValueError(f"trace {name!r} was recorded for batch rows {rows}; no row {row}")
    return rows.index(row)


def first_row(t) -> int:
    """The first batch row a trace holds (what :func:`plot_run` plots)."""
    rows = _json_attr(t, "rows")
    return rows[0] if rows else 0


def _unit_labels(t, n: int) -> np.ndarray:
    idx = _json_attr(t, "unit_index")
    return np.arange(n) if idx is None else np.asarray(idx)


def _wrap(text: str, width: int = 80) -> str:
    return "\n".join(textwrap.wrap(text, width)) if len(text) > width else text


def smoothing_window(n: int) -> int:
    """Window of the running mean for ``n`` points: about 1/20 of them, at least 1."""
    return max(1, int(n) // 20)


def smooth(values, window: int) -> np.ndarray:
    """Centred running mean over ``window`` points; same length.

    Point i averages points i - (window-1)//2 .. i + window//2; near either end
    the window is cut to the points there are, so the curve has no lag and no
    kink where a trailing window would fill up.
    """
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return v
    window = max(1, int(window))
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(v.size)
    lo = np.maximum(0, i - (window - 1) // 2)
    hi = np.minimum(v.size, i + window // 2 + 1)
    return (c[hi] - c[lo]) / (hi - lo)


def binned_median(steps, values, n_bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) reduced to at most ``n_bins`` contiguous bins: per bin the median
    step and the median of its finite values (NaN for a bin with none).  A median
    passes over sparse outliers (e.g. the first step of each sequence)."""
    s, v = np.asarray(steps), np.asarray(values, np.float64)
    if v.size == 0:
        return s.astype(np.float64), v
    k = max(1, math.ceil(v.size / max(1, int(n_bins))))
    edges = range(0, v.size, k)
    ms = np.array([np.median(s[a:a + k]) for a in edges], np.float64)
    mv = np.full(len(ms), np.nan)
    for j, a in enumerate(edges):
        chunk = v[a:a + k]
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size:
            mv[j] = np.median(chunk)
    return ms, mv


def _data_identity(r: Recording) -> dict:
    d = r.attrs.get("data_identity", {})
    return d if isinstance(d, dict) else {}


def run_metrics(rec) -> dict | None:
    """The ``metrics.json`` the harness writes beside the run file, or None (absent or
    unreadable)."""
    path = rec.path if isinstance(rec, Recording) else os.fspath(rec)
    mpath = os.path.join(os.path.dirname(os.path.abspath(path)), "metrics.json")
    try:
        with open(mpath, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


_ONEHOT_TASKS = {"ptb_char", "ptb_word", "cyclic_symbols"}
_BINARY_TASKS = {"bouncing_digits", "bit_recall"}


def task_kind(r: Recording, metrics: dict | None = None) -> str | None:
    """How the run's task is scored: "onehot" (categorical NLL per symbol), "binary"
    (BCE summed over the units of a frame) or None (unknown).

    Read from the recording's ``task_kind`` attribute (the task's own ``kind``), else
    the data identity's ``kind``, else the metric names of ``metrics`` (``bpc`` /
    ``bce_per_frame``), else the task's name, else the model's output activation
    (softmax / sigmoid) in the recorded config (recordings made before the attribute).
    """
    ident = _data_identity(r)
    for kind in (r.attrs.get("task_kind"), ident.get("kind")):
        if kind in ("onehot", "binary"):
            return kind
    final = (metrics or {}).get("final") or {}
    if "bpc" in final or "bce_per_frame" in final:
        return "onehot" if "bpc" in final else "binary"
    task = str(ident.get("task", ""))
    if task in _ONEHOT_TASKS or task in _BINARY_TASKS:
        return "onehot" if task in _ONEHOT_TASKS else "binary"
    model = r.config.get("model") if isinstance(r.config, dict) else None
    out = model.get("out") if isinstance(model, dict) else None
    return {"softmax": "onehot", "sigmoid": "binary"}.get(out)


def loss_units(r: Recording, metrics: dict | None = None) -> dict:
    """How the loss is shown: ``kind``, ``per`` (char / word / token / frame / step),
    ``scale`` (plotted value = nats x scale), ``unit`` (plotted unit), ``other``
    (the right-axis unit, or None) and ``label`` (the y-axis label)."""
    kind = task_kind(r, metrics)
    if kind == "onehot":
        per = {"ptb_char": "char", "ptb_word": "word"}.get(_data_identity(r).get("task"),
                                                           "token")
        return dict(kind=kind, per=per, scale=1 / _LN2, unit=f"bits/{per}",
                    other=f"nats/{per}", label=f"loss, cross-entropy (bits/{per})")
    if kind == "binary":
        n = _frame_units(r)
        over = f"summed over the {n} units of a frame" if n else "summed over a frame"
        return dict(kind=kind, per="frame", scale=1.0, unit="nats/frame", other=None,
                    label=f"loss, BCE (nats/frame,\n{over})")
    return dict(kind=None, per="step", scale=1.0, unit="nats/step", other=None,
                label="loss (nats/step, per scored prediction)")


def _frame_units(r: Recording) -> int | None:
    """Units of one input frame: from the x / x_mu / e0 traces or the config's x_dim."""
    for name in ("x", "x_mu", "e0"):
        if name in r and r[name].values.ndim >= 2:
            return int(r[name].shape[-1])
    xd = _data_identity(r).get("x_dim") or (r.config.get("x_dim")
                                             if isinstance(r.config, dict) else None)
    return int(xd) if isinstance(xd, (int, float)) else None


def _loss_unit(r: Recording) -> str:
    return loss_units(r, run_metrics(r))["per"]


def sequence_starts(r: Recording) -> np.ndarray | None:
    """Steps at which a sequence (batch) starts, when the recording shows them: the
    first step of each run of unscored steps (NaN loss) in a ``loss`` trace recorded
    every step, provided these runs start at a fixed spacing (sequences of one length;
    with varying lengths a run may begin in the padding of the previous batch).  None
    when that cannot be told."""
    if "loss" not in r or len(r["loss"]) < 2:
        return None
    t = r["loss"]
    if int(_attr_str(t, "every", "1") or 1) != 1:
        return None
    steps, loss = t.step, np.asarray(t[:], np.float64)
    if np.any(np.diff(steps) != 1):
        return None
    nan = ~np.isfinite(loss)
    starts = steps[nan & np.concatenate([[True], ~nan[:-1]])]
    gaps = np.diff(starts)
    if starts.size < 2 or np.any(gaps != gaps[0]) or starts[0] - steps[0] >= gaps[0]:
        return None
    return starts


def describe_error(name: str) -> str:
    """A short legend text for an error-unit trace (``e0``, ``e1``, ``eps1``, ...)."""
    m = _ERROR_RE.match(name)
    if not m:
        return name
    kind, l = m.group(1), int(m.group(2))
    if kind == "e" and l == 0:
        return f"{name} (input prediction error, x_mu − x)"
    if kind == "e":
        return f"{name} (layer-{l} prediction error, mu{l} − z{l})"
    return f"{name} (layer-{l} temporal error, z{l} − y{l})"


def _error_sort_key(name: str):
    m = _ERROR_RE.match(name)
    return (m.group(1) != "e", int(m.group(2)))


def _param_sort_key(p: str):
    """The order of docs/model.md: W1 E1 W2 E2 ... U1 ... M1 ... V1 ..., then others."""
    group = {"W": 0, "E": 0, "U": 1, "M": 2, "V": 3}.get(p[:1], 4)
    digits = re.sub(r"\D", "", p)
    return (group, int(digits) if digits else 0, "WE".find(p[:1]), p)


def _norm_traces(r: Recording) -> tuple[dict, dict]:
    """({param: trace name} of parameter norms, {param: trace name} of update norms)."""
    params, updates = {}, {}
    for name in r.names:
        if not name.startswith("norm_"):
            continue
        rest = name[5:]
        if rest.startswith("d") and len(rest) > 1 and (rest[1].isupper()
                                                       or f"norm_{rest[1:]}" in r):
            updates[rest[1:]] = name
        else:
            params[rest] = name
    return params, updates


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------
def learning_curve(rec, window: int | None = None, metrics: dict | None = None) -> Figure:
    """The per-step training ``loss``: raw (thin, light) and a centred running mean (thick),
    with the periodic evaluations and the final scores from ``metrics.json``.

    Units follow the task (:func:`loss_units`): one-hot tasks in bits per symbol
    (bits/char for PTB characters) with nats on the right axis, binary tasks (video
    frames, bit recall) in nats per frame, the BCE summed over the frame's units.
    Records whose loss is NaN (steps with no scored prediction) are dropped.  The
    running mean (:func:`smooth`) covers ``window`` scored steps (default
    :func:`smoothing_window`).  ``metrics`` defaults to the ``metrics.json`` beside the
    run file; with it, the evaluations on the selection split are markers, the
    trivial predictors' scores dotted lines, the test score of the final model a star
    and stated in the title.  For one-hot data with a known vocabulary the chance
    level is a dashed line.
    """
    with _opened(rec) as r:
        t = _need(r, "loss", "learning_curve")
        steps, loss = t.step, np.asarray(t[:], np.float64)
        ok = np.isfinite(loss)
        steps, loss = steps[ok], loss[ok]
        if loss.size == 0:
            raise ValueError(f"trace 'loss' in {r.path} has no finite values")
        m = run_metrics(r) if metrics is None else metrics
        u = loss_units(r, m)
        y = loss * u["scale"]
        w = window or smoothing_window(y.size)
        sm = smooth(y, w)
        fig = _new_figure()
        ax = fig.add_subplot()
        ax.plot(steps, y, lw=0.6, alpha=0.3, color="C0", label="training loss per step",
                gid="raw")
        ax.plot(steps, sm, lw=2.0, color="C1", gid="smoothed",
                label=f"centred mean over {w} scored steps (end: {sm[-1]:.3f} {u['unit']})")
        _draw_chance(ax, r, u)
        title = f"Learning curve ({u['unit']})"
        if m:
            title = _draw_metrics(ax, m, u, int(steps[-1]))
        ax.set_xlabel("step")
        ax.set_ylabel(u["label"])
        if u["other"]:
            sec = ax.secondary_yaxis("right", functions=(lambda v: v * _LN2,
                                                         lambda v: v / _LN2))
            sec.set_ylabel(f"loss ({u['other']})")
        _clip_outliers(ax, y)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncols=2, fontsize=8)
        return fig


def _draw_chance(ax, r: Recording, u: dict) -> None:
    """The uniform predictor's loss, log(vocab), for one-hot data of known vocabulary."""
    ident = _data_identity(r)
    vocab = ident.get("vocab", ident.get("x_dim"))
    if u["kind"] == "onehot" and isinstance(vocab, (int, float)) and vocab > 1:
        level = math.log(vocab) * u["scale"]
        ax.axhline(level, color="0.4", ls="--", lw=1, gid="chance",
                   label=f"uniform over {int(vocab)} symbols: {level:.3f} {u['unit']}")


def _draw_metrics(ax, m: dict, u: dict, last_step: int) -> str:
    """Evaluation markers, trivial-predictor lines and the final test score from a
    metrics.json ``m``; returns the title stating the final scores."""
    split, k = m.get("split", "valid"), u["scale"]
    hist = [h for h in m.get("history") or [] if _finite(h.get("loss")) and "step" in h]
    if hist:
        ax.plot([h["step"] for h in hist], [h["loss"] * k for h in hist], "o", ms=6,
                color="C3", mec="k", mew=0.6, zorder=5, alpha=0.9, gid="evaluations",
                label=f"{split} evaluations ({hist[0].get('batches', '?')} batches each)")
    for j, (name, b) in enumerate(sorted((m.get("baselines") or {}).items())):
        if _finite(b.get("loss", b.get("bce_per_frame"))):
            v = b.get("loss", b.get("bce_per_frame")) * k
            ax.axhline(v, color=f"C{4 + j}", ls=":", lw=1.5, gid=f"baseline_{name}",
                       label=f"{name.replace('_', ' ')} predictor on {split}: {v:.3f}")
    return _draw_test(ax, m, u, last_step)


def _draw_test(ax, m: dict, u: dict, last_step: int) -> str:
    """The star of the final model's test score; returns the title line stating the
    final scores (valid, test, the task metric, the model selected on valid)."""
    split, k = m.get("split", "valid"), u["scale"]
    final = m.get("final") or {}
    test = (m.get("test") or {}).get("final") or {}
    parts = []
    if _finite(final.get("loss")):
        parts.append(f"{split} {final['loss'] * k:.3f}")
    if _finite(test.get("loss")):
        ax.plot([last_step], [test["loss"] * k], "*", ms=14, color="gold", mec="k",
                zorder=4, gid="test", label=f"test, final model: {test['loss'] * k:.3f}")
        parts.append(f"test {test['loss'] * k:.3f}")
    extra = _task_metric(test or final, u)
    if extra:
        parts.append(f"{extra} ({'test' if test else split})")
    line = f"final model: {', '.join(parts)}" if parts else ""
    best = (m.get("test") or {}).get("best") or {}
    if _finite(best.get("loss")) and (m.get("best") or {}).get("step") is not None:
        line += (f"; selected on {split} (step {m['best']['step']}): test "
                 f"{best['loss'] * k:.3f}")
    return f"Learning curve ({u['unit']})" + (f"\n{line}" if line else "")


def _task_metric(scores: dict, u: dict) -> str:
    """A task metric not in the plotted unit (bit accuracy, perplexity), or ''."""
    if _finite(scores.get("bit_accuracy")):
        return f"bit accuracy {scores['bit_accuracy']:.3f}"
    if u["kind"] == "onehot" and _finite(scores.get("ppl")):
        return f"perplexity {scores['ppl']:.2f}"
    return ""


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _clip_outliers(ax, y: np.ndarray) -> None:
    """Keep rare spikes of the raw loss from squashing the curve: the top of the y axis
    at most the raw 99.5th percentile plus a margin, never below any other line."""
    lo, hi = ax.get_ylim()
    others = [np.asarray(line.get_ydata(), np.float64) for line in ax.get_lines()
              if line.get_gid() != "raw"]
    others = np.concatenate(others) if others else np.empty(0)
    others = others[np.isfinite(others)]
    cap = max([float(np.percentile(y, 99.5)), *others.tolist()])
    cap += 0.05 * (cap - lo)
    if cap < hi:
        ax.set_ylim(lo, cap)


def _mean_abs_per_record(t) -> np.ndarray:
    """Per record, mean |value| over rows and units.

    Rows that are entirely zero (padding: error units are multiplied by the
    mask) or NaN (rows missing from a short batch) are left out; a record with
    no other row gives NaN (a gap in the plot).
    """
    n = len(t)
    per_record = max(4, 4 * int(np.prod(t.shape[1:], dtype=np.int64)))
    k = max(1, _READ_BUDGET // per_record)
    out = np.empty(n, np.float64)
    for a in range(0, n, k):
        v = np.abs(np.asarray(t[a:a + k], np.float64))
        v = v.reshape(v.shape[0], -1, v.shape[-1]) if v.ndim >= 2 else v.reshape(-1, 1, 1)
        live = np.isfinite(v).all(axis=2) & (v != 0).any(axis=2)       # (records, rows)
        sums = np.where(live[..., None], v, 0.0).sum(axis=(1, 2))
        cnt = live.sum(axis=1) * v.shape[2]
        out[a:a + k] = np.divide(sums, cnt, out=np.full_like(sums, np.nan), where=cnt > 0)
    return out


def error_magnitudes(rec, names=None, n_bins: int = 100) -> Figure:
    """Mean |error| per record, over batch rows and units, of every error-unit trace:
    one panel per trace, each with its own (log when useful) y axis.

    ``names`` defaults to every ``e<l>`` / ``eps<l>`` trace in the file.  Padded
    rows (all-zero error vectors) are excluded from the mean; a record whose
    rows are all zero (e.g. ``eps2`` at the first step of a sequence, where the
    state starts at 0) is a gap.  Each panel shows the per-record values (thin,
    light) and their median over ``n_bins`` contiguous bins (thick,
    :func:`binned_median`), which passes over the spikes at sequence starts.  A
    panel's y axis is logarithmic when its values are positive and span more than
    a decade.  e0 is in output units (probability for softmax / sigmoid outputs),
    the others in units of the layers' activity.
    """
    with _opened(rec) as r:
        if names is None:
            names = sorted((n for n in r.names if _ERROR_RE.match(n)), key=_error_sort_key)
            if not names:
                raise KeyError(f"error_magnitudes needs an error-unit trace (e0, e1, ..., eps1, "
                               f"...); {r.path} has none (traces: {', '.join(r.names) or 'none'})")
        series = []
        for name in names:
            t = _need(r, name, "error_magnitudes")
            series.append((name, t.step, _mean_abs_per_record(t)))
        cols = 1 if len(series) == 1 else 2
        rows = math.ceil(len(series) / cols)
        fig = _new_figure((FIGSIZE[0], max(FIGSIZE[1], 0.6 + 2.3 * rows)))
        axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
        for i, (ax, (name, s, v)) in enumerate(zip(axes, series)):
            _error_panel(ax, name, s, v, f"C{i}", n_bins)
        for ax in axes[len(series):]:
            ax.set_axis_off()
        spare = axes[len(series)] if len(axes) > len(series) else None
        for ax in axes[(rows - 1) * cols - (cols * rows - len(series)):]:
            ax.set_xlabel("step")
            ax.xaxis.set_tick_params(labelbottom=True)
        fig.supylabel("mean |error| per unit", fontsize=10)
        fig.suptitle("Error-unit magnitudes (mean over batch rows and units)", fontsize=11)
        if spare is not None:            # the legend fills the empty slot of the grid
            spare.legend(handles=_error_legend_handles(n_bins), loc="center", fontsize=9,
                         frameon=False)
        else:
            fig.legend(handles=_error_legend_handles(n_bins), loc="outside lower center",
                       ncols=2, fontsize=8)
        return fig


def _error_panel(ax, name: str, steps, v, color: str, n_bins: int) -> None:
    """One error trace: per-record values (light) and the binned median (thick)."""
    ax.plot(steps, v, lw=0.5, alpha=0.35, color=color, gid="raw")
    ms, mv = binned_median(steps, v, n_bins)
    ax.plot(ms, mv, lw=2.0, color=color, gid="median", label=describe_error(name))
    fin = v[np.isfinite(v)]
    if fin.size and (fin > 0).all() and fin.max() / fin.min() > 10:
        ax.set_yscale("log")
    ax.set_title(describe_error(name), fontsize=9)
    ax.set_ylabel("output units" if name == "e0" else "activity units", fontsize=8)
    ax.grid(alpha=0.3, which="both")


def _error_legend_handles(n_bins: int) -> list:
    """Legend entries saying what the light and the thick lines are."""
    from matplotlib.lines import Line2D
    return [Line2D([], [], lw=0.8, alpha=0.5, color="0.3", label="each record"),
            Line2D([], [], lw=2.0, color="0.3",
                   label=f"median over {n_bins} bins of consecutive records")]


def state_heatmap(rec, name: str = "z1", row: int = 0, max_records: int = 4000,
                  sequences: int = 3, detail_records: int = 300) -> Figure:
    """Heatmap of one batch row of a state trace: units (y) by step (x), with colorbar.

    The main panel shows the last records at full resolution, one column per
    record: the last ``sequences`` sequences when the recording tells where
    sequences start (:func:`sequence_starts`; their starts are marked by black
    lines), else the last ``detail_records`` records.  When the trace holds more
    than that, an overview panel above shows the whole run (at most
    ``max_records`` records, evenly strided) with the detail's span outlined.
    ``row`` is a batch row (as in ``Recorder.add(rows=...)``); it must be among the
    recorded rows.  A diverging colour map centred on 0 is used for signed data,
    viridis otherwise; both panels share it.
    """
    with _opened(rec) as r:
        t = _need(r, name, "state_heatmap")
        ri = _row_position(t, row, name)
        n, steps_all = len(t), t.step
        starts = sequence_starts(r)
        a = _detail_start(steps_all, starts, sequences, detail_records)
        v = np.asarray(t.values[a:, ri, :], np.float64)
        stride = max(1, math.ceil(n / max_records))
        over = np.asarray(t.values[::stride, ri, :], np.float64) if a > 0 else None
        units = _unit_labels(t, v.shape[1])
        kw = _heat_colours(v if over is None else np.concatenate([v, over]))
        fig = _new_figure((FIGSIZE[0], FIGSIZE[1] + (1.3 if over is not None else 0)))
        if over is None:
            ax = fig.add_subplot()
            axes = [ax]
        else:
            axes = fig.subplots(2, 1, height_ratios=(1, 2.2))
            ax = axes[1]
            _state_overview(axes[0], over, steps_all, stride, a, units, kw)
        im = _heat(ax, v, steps_all[a:], units, kw)
        marked = _mark_starts(ax, starts, steps_all[a], steps_all[-1])
        shown = f"last {n - a} records at full resolution" + (
            f" ({marked} sequence starts marked)" if marked else "")
        ax.set_title(shown, fontsize=9)
        ax.set_xlabel("step" + (f" (recorded every {_attr_str(t, 'every', '1')} steps)"
                                if _attr_str(t, "every", "1") not in ("1", "") else ""))
        contiguous = units.size <= 1 or bool((np.diff(units) == 1).all())
        ax.set_ylabel("unit" + ("" if contiguous else " (recorded subset)"))
        cb = fig.colorbar(im, ax=axes)
        cb.set_label(f"{name} ({_attr_str(t, 'units', 'a.u.') or 'a.u.'})")
        fig.suptitle(_wrap(f"{name}, batch row {row}: {_attr_str(t, 'meaning', name)}", 90),
                     fontsize=11)
        return fig


def _state_overview(ax, over, steps, stride: int, a: int, units, kw) -> None:
    """The whole run (every ``stride``-th record), the detail from record ``a`` boxed."""
    _heat(ax, over, steps[::stride], units, kw)
    xlim = ax.get_xlim()
    ax.axvspan(steps[a] - 0.5, steps[-1] + 0.5, fill=False, ec="k", lw=1.5, gid="detail_span")
    ax.set_xlim(*xlim)
    shown = f", 1 in {stride} shown" if stride > 1 else ""
    ax.set_title(f"overview: all {len(steps)} records{shown}; the box is the panel below",
                 fontsize=9)
    ax.set_ylabel("unit", fontsize=8)
    ax.set_xlabel("step", fontsize=8, labelpad=1)


def _detail_start(steps, starts, sequences: int, detail_records: int) -> int:
    """Index of the first record of the detail panel: the start of the last
    ``sequences`` sequences (at most 4 x ``detail_records`` records), else the last
    ``detail_records`` records."""
    n = len(steps)
    if starts is not None:
        inside = starts[starts >= steps[0]]
        if inside.size:
            s0 = inside[-min(sequences, inside.size)]
            a = int(np.searchsorted(steps, s0))
            if n - a <= 4 * detail_records:
                return a
    return max(0, n - detail_records)


def _heat_colours(v) -> dict:
    """imshow colour arguments: diverging around 0 for signed data, viridis otherwise."""
    finite = v[np.isfinite(v)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    if lo < 0 < hi:
        lim = max(-lo, hi)
        return dict(cmap="RdBu_r", vmin=-lim, vmax=lim)
    return dict(cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)


def _heat(ax, v, steps, units, kw):
    """Draw ``v`` (records x units) as a heatmap, one column per record."""
    every = (steps[1] - steps[0]) if len(steps) > 1 else 1
    x_edges = (steps[0] - every / 2, steps[-1] + every / 2)
    contiguous = units.size <= 1 or bool((np.diff(units) == 1).all())
    y_edges = (units[0] - 0.5, units[-1] + 0.5) if contiguous else (-0.5, units.size - 0.5)
    im = ax.imshow(v.T, aspect="auto", origin="lower", interpolation="nearest",
                   extent=(*x_edges, *y_edges), **kw)
    if not contiguous and units.size <= 32:
        ax.set_yticks(np.arange(units.size), [str(u) for u in units])
    return im


def _mark_starts(ax, starts, lo, hi) -> int:
    """Vertical lines at the sequence starts within [lo, hi]; returns how many."""
    if starts is None:
        return 0
    inside = starts[(starts > lo) & (starts <= hi)]
    for s in inside:
        ax.axvline(s - 0.5, color="k", lw=1.0, alpha=0.7, gid="sequence_start")
    return int(inside.size) + int(lo in set(starts.tolist()))


def param_norms(rec) -> Figure:
    """Frobenius norms of the parameters (left) and of the applied updates (right).

    Uses every ``norm_<param>`` trace (left panel) and ``norm_d<param>`` trace
    (right panel, log scale; records with no update, such as the first step of
    each sequence, are left out).  Colours match per parameter; one legend.  When
    the updates are clipped (:func:`update_clip_level`: the model's ``clip`` over
    the batch size), that level is a dashed line and the legend gives, per
    parameter, the share of updates at the clip (within 0.1%).  Lines are drawn
    thinner in turn, so that coinciding ones (all at the clip) stay visible.
    """
    with _opened(rec) as r:
        params, updates = _norm_traces(r)
        if not params and not updates:
            raise KeyError(f"param_norms needs norm_<param> or norm_d<param> traces; {r.path} "
                           f"has none (traces: {', '.join(r.names) or 'none'})")
        allp = sorted(set(params) | set(updates), key=_param_sort_key)
        color = {p: f"C{i % 10}" for i, p in enumerate(allp)}
        width = {p: max(0.8, 4.0 / (1 + i)) if len(allp) > 1 else 1.2
                 for i, p in enumerate(allp)}
        level = update_clip_level(r, updates)
        panels = [(d, title, ylabel) for d, title, ylabel in (
            (params, "parameter norms", "‖P‖_F (weight units)"),
            (updates, "applied update norms", "‖dP‖_F (weight units / step)")) if d]
        fig = _new_figure()
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        labels = {p: p for p in allp}
        handles = {}
        for ax, (d, title, ylabel) in zip(axes, panels):
            for p in sorted(d, key=_param_sort_key):
                t = _need(r, d[p], "param_norms")
                s, v = t.step, np.asarray(t[:], np.float64)
                if d is updates:
                    keep = np.isfinite(v) & (v > 0)
                    s, v = s[keep], v[keep]
                    labels[p] = _clip_label(p, v, level)
                (line,) = ax.plot(s, v, lw=width[p], color=color[p], label=p,
                                  alpha=0.6 if width[p] > 2 else 1.0)
                handles.setdefault(p, line)
            if d is updates:
                _draw_clip(ax, level)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.set_title(title, fontsize=11)
            ax.grid(alpha=0.3, which="both")
        fig.suptitle("Parameter and update norms (Frobenius)")
        extra = [ax.get_lines()[-1]] if level is not None else []
        fig.legend([handles[p] for p in allp] + extra,
                   [labels[p] for p in allp] + [line.get_label() for line in extra],
                   loc="outside lower center", ncols=2, fontsize=8)
        return fig


def _clip_label(p: str, v: np.ndarray, level) -> str:
    """Legend text of parameter ``p``: with a clip, the share of updates ``v`` at it."""
    if level is None or not v.size:
        return p
    at = float(np.mean(v >= level[0] * (1 - 1e-3)))
    return f"{p} (update at the clip in {100 * at:.1f}% of steps)"


def update_clip_level(r: Recording, updates: dict | None = None) -> tuple | None:
    """(clip / batch, clip, batch) when the recorded updates are clipped, else None.

    The update traces say so in their meaning ("clipped, divided by the batch
    size"); ``clip`` is the model's in the recorded config (the P-TNCN default when
    the config leaves it out; <= 0 means no clipping) and ``batch`` the recording's
    batch size.
    """
    if updates is None:
        updates = _norm_traces(r)[1]
    if not any("clipped" in _attr_str(r[n], "meaning") for n in updates.values()):
        return None
    model = r.config.get("model") if isinstance(r.config, dict) else None
    clip = model.get("clip") if isinstance(model, dict) else None
    if clip is None:
        from .ptncn import LRAOptions
        clip = LRAOptions.__dataclass_fields__["clip"].default
    try:
        clip, batch = float(clip), int(r.attrs.get("batch"))
    except (TypeError, ValueError):
        return None
    if clip <= 0 or batch <= 0:
        return None
    return clip / batch, clip, batch


def _draw_clip(ax, level) -> None:
    """The clip level on the update panel (log scale when it has data)."""
    if any(len(line.get_xdata()) for line in ax.get_lines()):
        ax.set_yscale("log")
    if level is not None:
        ax.axhline(level[0], color="k", ls=(0, (4, 3)), lw=1.0, zorder=5, gid="clip",
                   label=f"clip / batch = {level[1]:g} / {level[2]} = {level[0]:.3g}")


def _square_side(size: int) -> int | None:
    """The side of a square frame of ``size`` values (None if ``size`` is not a square)."""
    side = math.isqrt(size)
    return side if side * side == size else None


def _frame_shape(size: int, shape) -> tuple[int, int]:
    if shape is None:
        side = _square_side(size)
        if side is None:
            raise ValueError(f"a frame has {size} values, not a perfect square; pass "
                             f"shape=(height, width)")
        return side, side
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or shape[0] * shape[1] != size:
        raise ValueError(f"shape {shape} does not hold a frame of {size} values")
    return shape


def predicted_vs_actual_frames(rec, row: int = 0, n: int = 8, shape=None,
                               skip_blank: bool = True) -> Figure:
    """A 2 x n grid: actual frames ``x`` (top) and the predictions ``x_mu`` (bottom).

    The prediction at step t was made before seeing ``x`` at step t, so each
    column compares a frame with its prediction.  The last ``n`` steps at which
    both traces hold a finite frame for batch row ``row`` are shown; with
    ``skip_blank`` (default) steps whose actual frame is entirely zero (the
    padding of a sequence shorter than the batch) are passed over.  A flat
    frame is reshaped to ``shape`` (height, width); with ``shape=None`` it must
    have a perfect-square size (ValueError otherwise).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    with _opened(rec) as r:
        tx = _need(r, "x", "predicted_vs_actual_frames")
        tm = _need(r, "x_mu", "predicted_vs_actual_frames")
        if tx.shape[-1] != tm.shape[-1]:
            raise ValueError(f"x has {tx.shape[-1]} units but x_mu has {tm.shape[-1]}")
        hw = _frame_shape(tx.shape[-1], shape)
        xs, ms, steps = _last_frames(tx, tm, row, n, skip_blank)
        return _frames_figure(xs, ms, steps, hw, n, row)


def _last_frames(tx, tm, row: int, n: int, skip_blank: bool) -> tuple:
    """(x frames, x_mu frames, steps) of the last ``n`` steps at which the traces ``tx`` (x)
    and ``tm`` (x_mu) both hold a finite frame for batch row ``row``."""
    rx, rm = _row_position(tx, row, "x"), _row_position(tm, row, "x_mu")
    common, ix, im_ = np.intersect1d(tx.step, tm.step, return_indices=True)
    if common.size == 0:
        raise ValueError("x and x_mu share no recorded step")
    # read a bounded tail, then keep the last n steps with finite frames
    tail = min(common.size, max(4 * n, 64))
    ix, im_, common = ix[-tail:], im_[-tail:], common[-tail:]
    xs = np.asarray(tx.values[ix[0]:ix[-1] + 1, rx, :], np.float64)[ix - ix[0]]
    ms = np.asarray(tm.values[im_[0]:im_[-1] + 1, rm, :], np.float64)[im_ - im_[0]]
    ok = np.isfinite(xs).all(axis=1) & np.isfinite(ms).all(axis=1)
    if skip_blank:
        ok &= (xs != 0).any(axis=1)
    sel = np.flatnonzero(ok)[-n:]
    if sel.size == 0:
        raise ValueError(f"no step with finite x and x_mu for batch row {row}")
    return xs[sel], ms[sel], common[sel]


def _frames_figure(xs, ms, steps, hw, n: int, row: int) -> Figure:
    """The grid of :func:`predicted_vs_actual_frames`: ``n`` columns, the last ones empty
    when fewer frames are given."""
    lo, hi = min(xs.min(), ms.min()), max(xs.max(), ms.max())
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="compressed")
    k = steps.size
    axes = fig.subplots(2, n, squeeze=False)
    im = None
    for j in range(n):
        for i, (data, label) in enumerate(((xs, "actual\nx"), (ms, "predicted\nx_mu"))):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= k:
                ax.set_axis_off()
                continue
            im = ax.imshow(data[j].reshape(hw), cmap="gray", vmin=lo, vmax=hi,
                           interpolation="nearest")
            if i == 0:
                ax.set_title(f"step {steps[j]}", fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=10)
        if j == 0:
            axes[1, 0].set_xlabel(f"{hw[1]}×{hw[0]} px")
    cb = fig.colorbar(im, ax=axes, shrink=0.8)
    cb.set_label("pixel value / probability")
    fig.suptitle(f"Actual vs predicted frames, batch row {row} (last {k} recorded steps)")
    return fig


def spike_raster(rec, name: str = "spikes", row: int = 0, window: int = 100,
                 max_records: int = 20000, sequences: int = 3) -> Figure:
    """Raster of one batch row of a trace: a dot at (step, unit) for every nonzero value.

    Meant for spike trains (0/1), spike counts per step or signed event counts;
    works on any trace with a unit axis (for continuous values nearly every entry
    is an event).  The raster covers the last ``sequences`` sequences when the
    recording tells where they start (marked by lines), else the last ``window``
    records; counts other
    than 1 colour the dots (with a colorbar; signed counts on a diverging map).
    When the trace holds more records, an overview panel above shows the counts
    of the last ``max_records`` records summed in time bins (a heatmap, titled as
    an overview), with the raster's span outlined.
    """
    with _opened(rec) as r:
        t = _need(r, name, "spike_raster")
        n = len(t)
        a = max(0, n - max_records)
        v = _row_values(t, name, row, a)
        steps = t.step[a:]
        units = _unit_labels(t, v.shape[1])
        starts = sequence_starts(r)
        d = _detail_start(steps, starts, sequences, window)
        long_run = d > 0
        fig = _new_figure((FIGSIZE[0], FIGSIZE[1] + (1.5 if long_run else 0)))
        if long_run:
            ax_o, ax = fig.subplots(2, 1, height_ratios=(1, 2))
            _count_overview(fig, ax_o, v, steps, units, name, steps[d])
        else:
            ax = fig.add_subplot()
        rate = _dot_raster(fig, ax, v[d:], steps[d:], units, name)
        marked = _mark_starts(ax, starts, steps[d], steps[-1])
        ax.set_xlabel("step" + ("; lines: sequence starts" if marked else ""))
        ax.set_ylabel("unit")
        ax.set_title(f"raster of the last {len(steps) - d} records: a dot per unit and step "
                     f"with an event ({100 * rate:.1f}% of entries)", fontsize=9)
        fig.suptitle(f"{name}, batch row {row} ({n} records in all)", fontsize=11)
        return fig


def _row_values(t, name: str, row: int, a: int) -> np.ndarray:
    """Records ``a:`` of a trace as (records, units), for batch row ``row``."""
    if t.values.ndim == 3:
        return np.asarray(t.values[a:, _row_position(t, row, name), :], np.float64)
    if t.values.ndim == 2:
        return np.asarray(t.values[a:, :], np.float64)
    raise ValueError(f"trace {name!r} has shape {t.shape}; a raster needs a unit axis")


def _dot_raster(fig, ax, v, steps, units, name: str) -> float:
    """Dots at the nonzero entries of ``v`` (records x units); returns their share."""
    rs, cs = np.nonzero(np.isfinite(v) & (v != 0))
    counts = v[rs, cs]
    size = max(3.0, min(30.0, 6000.0 / max(v.shape[0] * v.shape[1], 1) ** 0.75))
    if counts.size and np.any(counts != 1):
        signed = bool(np.any(counts < 0))
        lim = float(np.abs(counts).max())
        kw = (dict(cmap="RdBu_r", vmin=-lim, vmax=lim) if signed
              else dict(cmap="viridis", vmin=min(1.0, counts.min()), vmax=lim))
        sc = ax.scatter(steps[rs], units[cs], c=counts, s=size, marker="o",
                        linewidths=0, gid="dots", **kw)
        cb = fig.colorbar(sc, ax=ax)
        cb.set_label(f"{name} per step ({'signed count' if signed else 'count'})")
        if np.allclose(counts, np.round(counts)):
            cb.locator = MaxNLocator(integer=True)
            cb.update_ticks()
    else:
        ax.scatter(steps[rs], units[cs], s=size, marker="o", color="k", linewidths=0,
                   gid="dots")
    ax.set_xlim(steps[0] - 0.5, steps[-1] + 0.5)
    ax.set_ylim(units.min() - 0.5, units.max() + 0.5)
    return counts.size / max(v.size, 1)


def _count_overview(fig, ax, v, steps, units, name: str, detail_from) -> None:
    """Heatmap of |v| summed in at most 400 time bins, the raster's span outlined."""
    n = v.shape[0]
    k = max(1, math.ceil(n / 400))
    idx = np.arange(n % k, n, k) if n % k == 0 else np.r_[0, np.arange(n % k, n, k)]
    binned = np.add.reduceat(np.nan_to_num(np.abs(v)), idx, axis=0)   # oldest bin shorter
    every = (steps[1] - steps[0]) if n > 1 else 1
    im = ax.imshow(binned.T, aspect="auto", origin="lower", interpolation="nearest",
                   cmap="Greys", extent=(steps[0] - every / 2, steps[-1] + every / 2,
                                         units.min() - 0.5, units.max() + 0.5))
    xlim = ax.get_xlim()
    ax.axvspan(detail_from - 0.5, steps[-1] + 0.5, fill=False, ec="tab:red", lw=1.5,
               gid="detail_span")
    ax.set_xlim(*xlim)
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(f"|{name}| per bin", fontsize=8)
    ax.set_ylabel("unit", fontsize=8)
    ax.set_xlabel("step", fontsize=8, labelpad=1)
    per = f"summed over bins of {k} records" if k > 1 else "per record"
    ax.set_title(f"overview (count heatmap, not a raster): {name} {per}, last "
                 f"{v.shape[0]} records; red box: the raster below", fontsize=8)


def units_raster(rec, span_ms: float | None = None, max_events: int = 200_000) -> Figure:
    """Raster of the spike events in the run file's ``units/<population>`` groups
    (written by learners with ``write_events``, e.g. the spiking P-TNCN): one panel per
    population, a dot per spike at (time in ms, unit index); error-unit events are
    coloured by sign when a ``sign`` column exists.  The last ``span_ms`` of simulated
    time (common to all panels; default: 6 step windows of the model's ``window_ms``,
    else 1000 ms) is drawn, at most ``max_events`` events per population; the step
    windows' boundaries are thin grey lines."""
    with _opened(rec) as r:
        if "units" not in r.file or not len(r.file["units"]):
            raise KeyError(f"units_raster needs a 'units' group of spike events, which "
                           f"{r.path} does not have")
        model = r.config.get("model") if isinstance(r.config, dict) else None
        win = model.get("window_ms") if isinstance(model, dict) else None
        win = float(win) if isinstance(win, (int, float)) and win > 0 else None
        span_ms = span_ms or (6 * win if win else 1000.0)
        pops = sorted(r.file["units"])
        fig = _new_figure((8.0, max(3.5, 0.9 + 1.9 * len(pops))))
        axes = fig.subplots(len(pops), 1, sharex=True, squeeze=False)[:, 0]
        t_end = max((float(r.file["units"][p]["spike_times"][-1]) for p in pops
                     if r.file["units"][p]["spike_times"].shape[0]), default=0.0)
        for ax, name in zip(axes, pops):
            _population_raster(ax, r.file["units"][name], name, t_end - span_ms, max_events)
            if win:
                for b in np.arange(math.ceil((t_end - span_ms) / win) * win, t_end, win):
                    ax.axvline(b, color="0.6", lw=0.6, zorder=0, gid="window")
        axes[-1].set_xlabel("simulated time (ms)" + (f"; grey lines: {win:g} ms step windows"
                                                     if win else ""))
        fig.suptitle(f"Spike rasters (batch row 0): a dot per spike, last {span_ms:g} ms")
        return fig


def _population_raster(ax, g, name: str, t_from: float, max_events: int) -> None:
    """One population's events after ``t_from`` (at most ``max_events``) as dots."""
    times = g["spike_times"][:]
    a = max(int(np.searchsorted(times, t_from)), len(times) - max_events)
    t, u = times[a:], g["unit_index"][a:]
    size = max(1.0, min(8.0, 4000.0 / max(1, t.size)))
    if "sign" in g:
        sg = g["sign"][a:]
        ax.scatter(t[sg > 0], u[sg > 0], s=size, marker="o", lw=0, color="tab:red", label="pos")
        ax.scatter(t[sg < 0], u[sg < 0], s=size, marker="o", lw=0, color="tab:blue",
                   label="neg")
        if t.size:
            ax.legend(fontsize=7, loc="upper right")
    else:
        ax.scatter(t, u, s=size, marker="o", lw=0, color="k")
    ax.set_ylabel(f"{name}\nunit", fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))


# ---------------------------------------------------------------------------
# every figure of a run
# ---------------------------------------------------------------------------
def figure_plan(rec) -> tuple[list, list]:
    """What :func:`plot_run` would draw for a recording.

    Returns (planned, skipped): ``planned`` is a list of
    ``(file stem, function, kwargs)``, ``skipped`` a list of
    ``(figure, reason)``.
    """
    with _opened(rec) as r:
        planned, skipped = [], []
        for plan in (_plan_learning_curve, _plan_error_magnitudes, _plan_state_heatmaps,
                     _plan_param_norms, _plan_frames, _plan_spike_rasters):
            p, s = plan(r)
            planned += p
            skipped += s
        return planned, skipped


# Each _plan_<figure>(r) returns (planned, skipped) for one kind of figure, as figure_plan.
def _usable(r: Recording, name: str) -> bool:
    return name in r and len(r[name]) > 0


def _plan_learning_curve(r: Recording) -> tuple[list, list]:
    if _usable(r, "loss"):
        return [("learning_curve", learning_curve, {})], []
    return [], [("learning_curve", "no 'loss' trace (or it is empty)")]


def _plan_error_magnitudes(r: Recording) -> tuple[list, list]:
    errs = [n for n in r.names if _ERROR_RE.match(n) and _usable(r, n)]
    if errs:
        return [("error_magnitudes", error_magnitudes,
                 {"names": sorted(errs, key=_error_sort_key)})], []
    return [], [("error_magnitudes", "no error-unit trace (e0, e1, eps1, ...)")]


def _plan_per_trace(r: Recording, figure: str, func, names: list, reason: str):
    """One ``figure`` of the first recorded row of each trace in ``names`` (or ``reason``
    for skipping it, when there is none)."""
    planned = [(f"{figure}_{n}", func, {"name": n, "row": first_row(r[n])}) for n in names]
    return planned, ([] if names else [(figure, reason)])


def _plan_state_heatmaps(r: Recording) -> tuple[list, list]:
    states = sorted((n for n in r.names if _STATE_RE.match(n) and _usable(r, n)
                     and r[n].values.ndim == 3),
                    key=lambda n: (int(_STATE_RE.match(n).group(2)), n))
    return _plan_per_trace(r, "state_heatmap", state_heatmap, states,
                           "no layer-state trace (z1, y1, h1, ...)")


def _plan_param_norms(r: Recording) -> tuple[list, list]:
    params, updates = _norm_traces(r)
    if any(_usable(r, t) for t in [*params.values(), *updates.values()]):
        return [("param_norms", param_norms, {})], []
    return [], [("param_norms", "no norm_<param> / norm_d<param> trace")]


def _plan_frames(r: Recording) -> tuple[list, list]:
    if not (_usable(r, "x") and _usable(r, "x_mu")):
        return [], [("frames", "needs both 'x' and 'x_mu' traces")]
    tx, tm = r["x"], r["x_mu"]
    rows_x = _json_attr(tx, "rows")
    rows_m = _json_attr(tm, "rows")
    common = [i for i in (rows_x if rows_x is not None else range(tx.shape[1]))
              if rows_m is None or i in rows_m]
    if _square_side(tx.shape[-1]) is None:
        return [], [("frames", f"x has {tx.shape[-1]} units, not a square frame")]
    if not common:
        return [], [("frames", "x and x_mu share no batch row")]
    return [("frames", predicted_vs_actual_frames, {"row": common[0]})], []


def _plan_spike_rasters(r: Recording) -> tuple[list, list]:
    spikes = [n for n in r.names if n.startswith("spikes") and _usable(r, n)
              and r[n].values.ndim >= 2]
    return _plan_per_trace(r, "spike_raster", spike_raster, spikes, "no 'spikes*' trace")


def save_figure(fig: Figure, path) -> str:
    """Write ``fig`` as a PNG at :data:`DPI` and release its artists; returns the path."""
    path = os.fspath(path)
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()
    return path


def plot_run(path, out_dir) -> list[str]:
    """Write every figure the run file's traces allow as PNGs into ``out_dir``.

    ``out_dir`` is created if missing.  Figures whose traces are absent (see
    :func:`figure_plan`) are skipped.  A missing file raises FileNotFoundError,
    a corrupt or foreign one ``RecordingError`` (from the reader).  Returns the
    paths written, in a fixed order.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    with _opened(path) as r:
        planned, _ = figure_plan(r)
        for stem, func, kw in planned:
            fig = func(r, **kw)
            written.append(save_figure(fig, os.path.join(out_dir, f"{stem}.png")))
            del fig
        if "units" in r.file and len(r.file["units"]):      # spike events (spiking P-TNCN)
            fig = units_raster(r)
            written.append(save_figure(fig, os.path.join(out_dir, "units_raster.png")))
            del fig
    return written
