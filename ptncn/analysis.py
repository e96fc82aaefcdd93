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
=============================  =====================================================

A function asked for a trace the file lacks raises ``KeyError`` naming it (and
listing the traces there are).  :func:`plot_run` writes every figure the file's
traces allow and skips the others.

Large runs: traces are read in bounded chunks (error magnitudes) or thinned
(heatmaps: at most ``max_records`` records, evenly strided; rasters: the last
``max_records`` records), so a figure of a long run needs little memory.
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
    """Trailing running mean over ``window`` points (shorter at the start); same length."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return v
    window = max(1, int(window))
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(1, v.size + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def _data_identity(r: Recording) -> dict:
    d = r.attrs.get("data_identity", {})
    return d if isinstance(d, dict) else {}


def _loss_unit(r: Recording) -> str:
    return "frame" if _data_identity(r).get("kind") == "binary" else "token"


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
def learning_curve(rec, window: int | None = None) -> Figure:
    """The per-step ``loss``: raw (thin, light) and a trailing running mean (thick).

    Plotted in nats per token (nats per frame for binary data, where the loss is
    the BCE summed over pixels) on the left axis; the right axis gives the same
    values in bits.  Records whose loss is NaN (the first step of a sequence,
    which is not scored) are dropped.  The running mean covers ``window`` scored
    steps (default :func:`smoothing_window`: 1/20 of them); it has one point per
    scored step.  For one-hot data with a known vocabulary the chance level
    ln(vocab) is drawn as a dashed line.
    """
    with _opened(rec) as r:
        t = _need(r, "loss", "learning_curve")
        steps, loss = t.step, np.asarray(t[:], np.float64)
        ok = np.isfinite(loss)
        steps, loss = steps[ok], loss[ok]
        if loss.size == 0:
            raise ValueError(f"trace 'loss' in {r.path} has no finite values")
        w = window or smoothing_window(loss.size)
        sm = smooth(loss, w)
        unit = _loss_unit(r)
        vocab = _data_identity(r).get("vocab")
        fig = _new_figure()
        ax = fig.add_subplot()
        ax.plot(steps, loss, lw=0.6, alpha=0.35, color="C0", label="loss per step",
                gid="raw")
        ax.plot(steps, sm, lw=2.0, color="C1", gid="smoothed",
                label=f"running mean over {w} scored steps "
                      f"(last: {sm[-1]:.3f} nats = {sm[-1] / _LN2:.3f} bits)")
        if unit == "token" and isinstance(vocab, (int, float)) and vocab > 1:
            ax.axhline(math.log(vocab), color="0.4", ls="--", lw=1, gid="chance",
                       label=f"chance, ln({int(vocab)}) = {math.log(vocab):.3f} nats")
        ax.set_xlabel("step")
        ax.set_ylabel(f"loss (nats/{unit})")
        sec = ax.secondary_yaxis("right", functions=(lambda v: v / _LN2, lambda v: v * _LN2))
        sec.set_ylabel(f"loss (bits/{unit})")
        ax.set_title("Learning curve: training loss of each step's prediction")
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncols=2, fontsize=9)
        return fig


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


def error_magnitudes(rec, names=None) -> Figure:
    """Mean |error| per record, over batch rows and units, of every error-unit trace.

    ``names`` defaults to every ``e<l>`` / ``eps<l>`` trace in the file.  Padded
    rows (all-zero error vectors) are excluded from the mean; a record whose
    rows are all zero (e.g. ``eps2`` at the first step of a sequence, where the
    state starts at 0) is a gap in its line.  The y axis is
    logarithmic when all values are positive and span more than a decade.
    e0 is in output units (probability for softmax outputs), the others in
    units of the layers' activity.
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
        fig = _new_figure()
        ax = fig.add_subplot()
        for i, (name, s, v) in enumerate(series):
            ax.plot(s, v, lw=1.0, color=f"C{i}", label=describe_error(name))
        allv = np.concatenate([v for _, _, v in series])
        allv = allv[np.isfinite(allv)]
        if allv.size and (allv > 0).all() and allv.max() / allv.min() > 10:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("mean |error| per unit\n(e0: output units; others: activity units)")
        ax.set_title("Error-unit magnitudes (mean over batch rows and units)")
        ax.grid(alpha=0.3, which="both")
        fig.legend(loc="outside lower center", ncols=2, fontsize=9)
        return fig


def state_heatmap(rec, name: str = "z1", row: int = 0, max_records: int = 4000) -> Figure:
    """Heatmap of one batch row of a state trace: units (y) by step (x), with colorbar.

    ``row`` is a batch row (as in ``Recorder.add(rows=...)``); it must be among
    the recorded rows.  At most ``max_records`` records are read, evenly strided.
    A diverging colour map centred on 0 is used for signed data, viridis otherwise.
    """
    with _opened(rec) as r:
        t = _need(r, name, "state_heatmap")
        ri = _row_position(t, row, name)
        n = len(t)
        stride = max(1, math.ceil(n / max_records))
        v = np.asarray(t.values[::stride, ri, :], np.float64)       # (records, units)
        steps = t.step[::stride]
        units = _unit_labels(t, v.shape[1])
        meaning = _attr_str(t, "meaning", name)
        unit = _attr_str(t, "units", "a.u.") or "a.u."
        fig = _new_figure()
        ax = fig.add_subplot()
        finite = v[np.isfinite(v)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        if lo < 0 < hi:
            lim = max(-lo, hi)
            kw = dict(cmap="RdBu_r", vmin=-lim, vmax=lim)
        else:
            kw = dict(cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)
        every = (steps[1] - steps[0]) if len(steps) > 1 else 1
        x_edges = (steps[0] - every / 2, steps[-1] + every / 2)
        contiguous = units.size <= 1 or bool((np.diff(units) == 1).all())
        if contiguous:
            extent = (*x_edges, units[0] - 0.5, units[-1] + 0.5)
        else:
            extent = (*x_edges, -0.5, units.size - 0.5)
        im = ax.imshow(v.T, aspect="auto", origin="lower", interpolation="nearest",
                       extent=extent, **kw)
        if not contiguous and units.size <= 32:
            ax.set_yticks(np.arange(units.size), [str(u) for u in units])
        cb = fig.colorbar(im, ax=ax)
        cb.set_label(f"{name} ({unit})")
        ax.set_xlabel("step" + (f" (every {stride * int(_attr_str(t, 'every', '1'))}th)"
                                if stride > 1 else ""))
        ax.set_ylabel("unit" + ("" if contiguous else " (recorded subset)"))
        ax.set_title(_wrap(f"{name}, batch row {row}: {meaning}", 90), fontsize=11)
        return fig


def param_norms(rec) -> Figure:
    """Frobenius norms of the parameters (left) and of the applied updates (right).

    Uses every ``norm_<param>`` trace (left panel) and ``norm_d<param>`` trace
    (right panel, log scale; records with no update, such as the first step of
    each sequence, are left out).  Colours match per parameter; one legend.
    """
    with _opened(rec) as r:
        params, updates = _norm_traces(r)
        if not params and not updates:
            raise KeyError(f"param_norms needs norm_<param> or norm_d<param> traces; {r.path} "
                           f"has none (traces: {', '.join(r.names) or 'none'})")
        allp = sorted(set(params) | set(updates), key=_param_sort_key)
        color = {p: f"C{i % 10}" for i, p in enumerate(allp)}
        panels = [(d, title, ylabel) for d, title, ylabel in (
            (params, "parameter norms", "‖P‖_F (weight units)"),
            (updates, "applied update norms", "‖dP‖_F (weight units / step)")) if d]
        fig = _new_figure()
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        handles = {}
        for ax, (d, title, ylabel) in zip(axes, panels):
            for p in sorted(d, key=_param_sort_key):
                t = _need(r, d[p], "param_norms")
                s, v = t.step, np.asarray(t[:], np.float64)
                if d is updates:
                    keep = np.isfinite(v) & (v > 0)
                    s, v = s[keep], v[keep]
                (line,) = ax.plot(s, v, lw=1.0, color=color[p], label=p)
                handles.setdefault(p, line)
            if d is updates and any(len(line.get_xdata()) for line in ax.get_lines()):
                ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.set_title(title, fontsize=11)
            ax.grid(alpha=0.3, which="both")
        fig.suptitle("Parameter and update norms (Frobenius)")
        if len(handles) > 1:
            fig.legend([handles[p] for p in allp], allp, loc="outside right center",
                       title="parameter", fontsize=9)
        return fig


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


def spike_raster(rec, name: str = "spikes", row: int = 0, max_records: int = 2000) -> Figure:
    """Raster of one batch row of a trace: a mark at (step, unit) for every nonzero value.

    Meant for spike trains (0/1) or spike counts; works on any trace with a
    unit axis (for continuous values nearly every entry is an event).  Counts
    larger than 1 are coloured by count, with a colorbar.  The last
    ``max_records`` records are shown.
    """
    with _opened(rec) as r:
        t = _need(r, name, "spike_raster")
        n = len(t)
        a = max(0, n - max_records)
        if t.values.ndim == 3:
            ri = _row_position(t, row, name)
            v = np.asarray(t.values[a:, ri, :], np.float64)
        elif t.values.ndim == 2:
            v = np.asarray(t.values[a:, :], np.float64)
        else:
            raise ValueError(f"trace {name!r} has shape {t.shape}; a raster needs a unit axis")
        steps = t.step[a:]
        units = _unit_labels(t, v.shape[1])
        rs, cs = np.nonzero(np.isfinite(v) & (v != 0))
        counts = v[rs, cs]
        fig = _new_figure()
        ax = fig.add_subplot()
        size = max(2.0, min(40.0, 2000.0 / max(v.shape[1], 1)))
        if counts.size and np.any(np.abs(counts) != 1):
            sc = ax.scatter(steps[rs], units[cs], c=counts, s=size, marker="|", cmap="viridis",
                            linewidths=1.0)
            cb = fig.colorbar(sc, ax=ax)
            cb.set_label(f"{name} (count / value)")
            if np.allclose(counts, np.round(counts)):
                cb.locator = MaxNLocator(integer=True)
                cb.update_ticks()
        else:
            ax.scatter(steps[rs], units[cs], s=size, marker="|", color="k", linewidths=1.0)
        ax.set_xlim(steps[0] - 0.5, steps[-1] + 0.5)
        ax.set_ylim(units.min() - 0.5, units.max() + 0.5)
        ax.set_xlabel("step")
        ax.set_ylabel("unit")
        shown = f"last {len(steps)} of {n} records" if a else f"{n} records"
        rate = counts.size / max(v.size, 1)
        ax.set_title(f"Raster of {name}, batch row {row} ({shown}; "
                     f"{100 * rate:.1f}% of entries nonzero)", fontsize=11)
        return fig


def units_raster(rec, span_ms: float = 1000.0, max_events: int = 200_000) -> Figure:
    """Raster of the spike events in the run file's ``units/<population>`` groups
    (written by learners with ``write_events``, e.g. the spiking P-TNCN): one panel per
    population, spike time (ms) against unit index; error-unit events are coloured by
    sign when a ``sign`` column exists.  The last ``span_ms`` of simulated time (common to
    all panels) is drawn, at most ``max_events`` events per population."""
    with _opened(rec) as r:
        if "units" not in r.file or not len(r.file["units"]):
            raise KeyError(f"units_raster needs a 'units' group of spike events, which "
                           f"{r.path} does not have")
        pops = sorted(r.file["units"])
        fig = _new_figure((8.0, max(3.0, 1.3 * len(pops))))
        axes = fig.subplots(len(pops), 1, sharex=True, squeeze=False)[:, 0]
        t_end = max((float(r.file["units"][p]["spike_times"][-1]) for p in pops
                     if r.file["units"][p]["spike_times"].shape[0]), default=0.0)
        for ax, name in zip(axes, pops):
            g = r.file["units"][name]
            times = g["spike_times"][:]
            a = int(np.searchsorted(times, t_end - span_ms))
            a = max(a, len(times) - max_events)
            n = len(times) - a
            t = times[a:]
            u = g["unit_index"][a:]
            if "sign" in g:
                sg = g["sign"][a:]
                ax.scatter(t[sg > 0], u[sg > 0], s=3, marker="|", color="tab:red", label="pos")
                ax.scatter(t[sg < 0], u[sg < 0], s=3, marker="|", color="tab:blue", label="neg")
                if n:
                    ax.legend(fontsize=7, loc="upper right")
            else:
                ax.scatter(t, u, s=3, marker="|", color="k")
            ax.set_ylabel(f"{name}\nunit", fontsize=8)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1].set_xlabel("time (ms)")
        fig.suptitle(f"Spike rasters (batch row 0), last {span_ms:g} ms")
        return fig


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
