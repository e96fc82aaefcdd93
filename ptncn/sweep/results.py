"""A sweep's results: ``results.csv``, ``results.nc``, per-configuration summaries, the
ranked table and the report figures.

The inputs are the sweep's ``meta`` (``DIR/sweep.json``: ``grid``, ``random``, ``axes``,
``seeds``, ``metric``, ``direction`` ...) and its ``rows``, one dict per run::

    run_id, config_index, seed_index, seed, <each axis>, status ("done" | "failed"),
    attempts, seconds, steps, valid.<m> ..., test.<m> ..., error

A swept value that is a list (``model.hidden = [64, 64]``) is shown, stored and used as
a coordinate as its string ``"64,64"``.  Metrics of failed runs are NaN; a run with no
row yet is *missing*.

* :func:`write_csv` / :func:`read_csv`: one line per run (empty cell = NaN).
* :func:`to_dataset` / :func:`write_netcdf`: an :class:`xarray.Dataset` with a
  dimension per grid axis (or ``config`` when values are drawn at random) and ``seed``.
* :func:`summarize` / :func:`format_table`: mean and 95 % t-interval of every metric
  per configuration, ranked by the sweep's metric.
* :func:`report_figures` / :func:`sweep_report`: the metric against each swept value
  and the validation curves of the best configurations.
"""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
from dataclasses import dataclass, field

import numpy as np

from ..jsonio import replacing

FIXED_COLUMNS = ("run_id", "config_index", "seed_index", "seed")
RUN_COLUMNS = ("status", "attempts", "seconds", "steps")
STRING_COLUMNS = ("run_id", "status", "error")
STATUSES = ("done", "failed", "missing")
MAX_CURVE_CONFIGS = 4


# ---------------------------------------------------------------------------
# values and columns
# ---------------------------------------------------------------------------
def axis_value(v):
    """A swept value as used for display and coordinates: a list or tuple as its items
    joined by commas (``[64, 64]`` -> ``"64,64"``), numpy scalars as Python ones,
    anything else unchanged."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return ",".join(str(axis_value(x)) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_))


def _is_nan(v) -> bool:
    return _is_number(v) and math.isnan(float(v))


def metric_columns(rows) -> list[str]:
    """Every ``valid.*`` then every ``test.*`` column of any row, each group sorted."""
    names = {k for r in rows for k in r if k.startswith(("valid.", "test."))}
    return (sorted(n for n in names if n.startswith("valid."))
            + sorted(n for n in names if n.startswith("test.")))


def csv_columns(rows, meta) -> list[str]:
    """The columns of ``results.csv``, in order."""
    return [*FIXED_COLUMNS, *meta["axes"], *RUN_COLUMNS, *metric_columns(rows), "error"]


def counterpart_metric(metric: str) -> str:
    """``valid.bpc`` -> ``test.bpc`` (and back)."""
    split, _, name = metric.partition(".")
    return f"{'test' if split == 'valid' else 'valid'}.{name}"


def _random_keys(meta) -> dict:
    return ((meta.get("random") or {}).get("keys")) or {}


# ---------------------------------------------------------------------------
# results.csv
# ---------------------------------------------------------------------------
def _cell(v) -> str:
    """A CSV cell: NaN and None empty, floats in full precision, lists joined."""
    v = axis_value(v)
    if v is None or _is_nan(v):
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def write_csv(rows, meta, path) -> str:
    """Write ``rows`` to ``path`` (one line per run, columns :func:`csv_columns`),
    atomically: a temporary file in the same folder, then os.replace.  Columns a row
    lacks are empty; keys outside the columns are left out.  Returns the path."""
    cols = csv_columns(rows, meta)
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in cols])
    return os.fspath(path)


def _parse(text: str):
    """A CSV cell back to a value: empty -> NaN, True/False, int, float, else the text."""
    if text == "":
        return math.nan
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(path, meta=None) -> list[dict]:
    """The rows of a file written by :func:`write_csv`: numbers back to int / float,
    empty cells to NaN (``run_id``, ``status`` and ``error`` stay strings).  A list
    value comes back as its joined string (``"64,64"``); with ``meta``, every value of
    a text axis (:func:`axis_is_text`, e.g. ``[32]``) stays text (``"32"``)."""
    text = set(STRING_COLUMNS) | {a for a in (meta or {}).get("axes", ())
                                  if axis_is_text(meta, a)}
    with open(path, newline="") as f:
        return [{k: (v if k in text else _parse(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]


# ---------------------------------------------------------------------------
# the xarray dataset
# ---------------------------------------------------------------------------
def _coord_array(values) -> np.ndarray:
    """The coordinate of a list of swept values: numbers, booleans, or else strings."""
    vals = [axis_value(v) for v in values]
    if vals and all(_is_number(v) for v in vals):
        return np.asarray(vals)
    if vals and all(isinstance(v, (bool, np.bool_)) for v in vals):
        return np.asarray(vals, dtype=bool)
    return np.asarray([str(v) for v in vals], dtype=object)


def _key(v):
    """A hashable key under which a row's value meets its coordinate value."""
    v = axis_value(v)
    if isinstance(v, (bool, np.bool_)):
        return ("bool", bool(v))
    if _is_number(v):
        return ("num", float(v))
    return ("str", str(v))


def axis_is_text(meta, axis: str) -> bool:
    """True when the spec's values of ``axis`` (grid values or choices) are not all
    numbers: its values are then compared and stored as text (``[32]`` -> ``"32"``)."""
    known = (meta.get("grid") or {}).get(axis)
    if known is None:
        known = _random_keys(meta).get(axis, {}).get("choice", [])
    return any(not _is_number(axis_value(v)) and not isinstance(v, (bool, np.bool_))
               for v in known)


def axis_key(meta, axis: str, v):
    """The key of ``v`` on ``axis``: its text on a text axis (so that ``[32]``, ``"32"``
    and the 32 a CSV reader makes of it meet), else :func:`_key`."""
    return ("str", str(axis_value(v))) if axis_is_text(meta, axis) else _key(v)


def planned_configs(meta) -> list[dict] | None:
    """Each configuration's swept values in config_index order (``meta["configs"]``,
    stored by the engine); None when the meta has none."""
    configs = meta.get("configs")
    return list(configs) if configs is not None else None


def _grid_layout(meta, n_seeds: int):
    """Dims, coords and the row -> index function of a grid-only sweep."""
    axes = list(meta["axes"])
    coords = {a: _coord_array(meta["grid"][a]) for a in axes}
    lookup = {a: {axis_key(meta, a, v): i for i, v in enumerate(meta["grid"][a])}
              for a in axes}

    def index(r):
        pos = [lookup[a].get(axis_key(meta, a, r.get(a))) for a in axes]
        return None if None in pos else (*pos, int(r["seed_index"]))
    return [*axes, "seed"], [len(coords[a]) for a in axes] + [n_seeds], coords, index


def _config_layout(rows, meta, n_seeds: int):
    """Dims, coords and the row -> index function of a sweep with random draws: the
    dimension ``config`` with each axis as a coordinate along it."""
    n = max([int(meta.get("n_configs") or 0)] + [int(r["config_index"]) + 1 for r in rows])
    values = [dict() for _ in range(n)]
    for i, c in enumerate((planned_configs(meta) or [])[:n]):
        values[i].update(c)
    for r in rows:
        values[int(r["config_index"])].update({a: r[a] for a in meta["axes"] if a in r})
    coords = {"config": np.arange(n)}
    for a in meta["axes"]:                # unknown values: NaN, or "" on a text axis
        col = [values[i].get(a, math.nan) for i in range(n)]
        known = [v for v in col if not _is_nan(v)]
        if known and all(_is_number(v) for v in known):
            coords[a] = (("config",), np.asarray(col, dtype=None if len(known) == n
                                                 else float))
        else:
            coords[a] = (("config",), _coord_array(["" if _is_nan(v) else v for v in col]))

    def index(r):
        return int(r["config_index"]), int(r["seed_index"])
    return ["config", "seed"], [n, n_seeds], coords, index


def _seed_values(rows, n_seeds: int) -> np.ndarray:
    """The seed number of each seed index (the same for every configuration); -1 where
    no run of that index has a row."""
    out = np.full(n_seeds, -1, dtype=np.int64)
    for r in rows:
        if out[int(r["seed_index"])] < 0:
            out[int(r["seed_index"])] = int(r["seed"])
    return out


def _fill(rows, positions, shape, name, fill, dtype):
    a = np.full(shape, fill, dtype=dtype)
    for r, p in zip(rows, positions):
        v = r.get(name, fill)
        a[p] = fill if v is None or (dtype is not float and _is_nan(v)) else v
    return a


def _dataset_attrs(meta) -> dict:
    """The sweep's description as netCDF-safe attributes (tables as JSON text)."""
    attrs = {k: meta[k] for k in ("metric", "direction", "spec_hash", "base", "seeds",
                                  "n_configs") if meta.get(k) is not None}
    for k in ("axes", "grid", "random"):
        attrs[k] = json.dumps(meta.get(k))
    attrs["status_values"] = "done: finished; failed: ran out of attempts; missing: no row"
    return attrs


def to_dataset(rows, meta):
    """The sweep as an :class:`xarray.Dataset`.

    Grid-only sweeps: one dimension per grid axis (coordinates the grid's values, lists
    as joined strings) and ``seed`` (the seed index; coordinate ``seed_value`` holds the
    seed numbers).  With random draws: dimensions ``("config", "seed")`` and each axis
    a coordinate along ``config``.  Variables: every metric, ``seconds`` and ``steps``
    (float, NaN where there is no row), ``attempts`` (0 where none), ``status``
    (``"done"``, ``"failed"`` or ``"missing"``), ``run_id`` and ``error`` (strings,
    empty where missing).  Dimension and variable names keep their dots
    (``model.beta``, ``valid.bpc``); netCDF-4 allows them.
    """
    import xarray as xr

    n_seeds = max([int(meta.get("seeds") or 0)] + [int(r["seed_index"]) + 1 for r in rows])
    if _random_keys(meta):
        dims, shape, coords, index = _config_layout(rows, meta, n_seeds)
    else:
        dims, shape, coords, index = _grid_layout(meta, n_seeds)
    placed = [(r, index(r)) for r in rows]
    placed = [(r, p) for r, p in placed if p is not None]
    rs, ps = [r for r, _ in placed], [p for _, p in placed]
    coords = {**coords, "seed": np.arange(n_seeds),
              "seed_value": (("seed",), _seed_values(rs, n_seeds))}
    data = {m: (dims, _fill(rs, ps, shape, m, np.nan, float))
            for m in [*metric_columns(rows), "seconds", "steps"]}
    data["attempts"] = (dims, _fill(rs, ps, shape, "attempts", 0, np.int64))
    for name, fill in (("status", "missing"), ("run_id", ""), ("error", "")):
        data[name] = (dims, _fill(rs, ps, shape, name, fill, object).astype(str))
    return xr.Dataset(data, coords=coords, attrs=_dataset_attrs(meta))


def write_netcdf(ds, path) -> str:
    """Write ``ds`` as netCDF-4 (engine ``h5netcdf``) atomically: a temporary file in
    the same folder, then os.replace.  ``xarray.open_dataset(path)`` reads it back.
    Returns the path."""
    with replacing(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return os.fspath(path)


# ---------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------
@dataclass
class Stat:
    """Mean over the seeds with a finite value, the 95 % t-interval's half-width (NaN
    for fewer than two values) and the number of values."""
    mean: float
    half: float
    n: int


@dataclass
class Summary:
    """One configuration of a sweep: its swept values, its runs' outcome and the
    :class:`Stat` of every metric over its done runs."""
    config_index: int
    values: dict
    n_done: int
    n_failed: int
    n_missing: int
    stats: dict = field(default_factory=dict)

    def stat(self, metric: str) -> Stat:
        """The metric's Stat (all NaN, n 0, when no run reported it)."""
        return self.stats.get(metric, Stat(math.nan, math.nan, 0))


def mean_interval(values) -> Stat:
    """Mean and 95 % t-interval half-width ``t(0.975, n-1) * sd / sqrt(n)`` (sd with
    ``n - 1``) of the finite ``values``; half is NaN for n < 2, mean NaN for n = 0."""
    from scipy.stats import t

    v = np.asarray([x for x in values if _is_number(x) and math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    if n < 2:
        return Stat(float(v[0]), math.nan, 1)
    half = float(t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return Stat(float(v.mean()), half, n)


def _summary(ci: int, runs: list, meta, metrics: list) -> Summary:
    done = [r for r in runs if r.get("status") == "done"]
    n_failed = sum(r.get("status") == "failed" for r in runs)
    values = {a: axis_value(runs[0].get(a, math.nan)) for a in meta["axes"]}
    stats = {m: mean_interval([r.get(m, math.nan) for r in done]) for m in metrics}
    n_missing = max(0, int(meta.get("seeds") or 0) - len(runs))
    return Summary(ci, values, len(done), n_failed, n_missing, stats)


def sort_key(stat: Stat, direction: str):
    """Sorting key of a Stat: best first in ``direction`` ("min" or "max"), NaN last."""
    if math.isnan(stat.mean):
        return (1, 0.0)
    return (0, stat.mean if direction == "min" else -stat.mean)


def summarize(rows, meta) -> list[Summary]:
    """One :class:`Summary` per configuration with a row, sorted by ``meta["metric"]``
    in ``meta["direction"]`` (NaN last, then by config_index); the first is the best."""
    by_config: dict = {}
    for r in rows:
        by_config.setdefault(int(r["config_index"]), []).append(r)
    metrics = metric_columns(rows)
    out = [_summary(ci, runs, meta, metrics) for ci, runs in sorted(by_config.items())]
    metric, direction = meta["metric"], meta.get("direction", "min")
    return sorted(out, key=lambda s: (sort_key(s.stat(metric), direction), s.config_index))


def best(summaries) -> Summary | None:
    """The best configuration (the first of :func:`summarize`) if it has a value."""
    return summaries[0] if summaries and summaries[0].n_done else None


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------
def format_number(x, digits: int = 4) -> str:
    """``x`` with ``digits`` significant digits; "-" for NaN and None."""
    if x is None or _is_nan(x):
        return "-"
    if _is_number(x):
        return f"{float(x):.{digits}g}" if isinstance(x, (float, np.floating)) else str(x)
    return str(x)


def format_stat(stat: Stat) -> str:
    """``"mean ± half (n)"``, both to the half-width's second significant digit;
    ``"mean (n)"`` when there is no interval; "-" when there are no values."""
    if stat.n == 0:
        return "-"
    if not math.isfinite(stat.half) or not math.isfinite(stat.mean):
        return f"{format_number(stat.mean)} ({stat.n})"
    if stat.half == 0:
        return f"{format_number(stat.mean)} ± 0 ({stat.n})"
    dec = min(max(1 - math.floor(math.log10(stat.half)), 0), 12)
    return f"{stat.mean:.{dec}f} ± {stat.half:.{dec}f} ({stat.n})"


def _table_rows(summaries, meta) -> tuple[list, list]:
    metric = meta["metric"]
    test = counterpart_metric(metric)
    show_test = any(test in s.stats for s in summaries)
    header = ["rank", *meta["axes"], f"{metric} (n)"] + ([test] if show_test else [])
    header += ["failed", "missing"]
    lead = best(summaries)
    body = []
    for rank, s in enumerate(summaries, 1):
        mark = "*" if s is lead else " "
        cells = [f"{mark}{rank}", *(format_number(s.values.get(a)) for a in meta["axes"]),
                 format_stat(s.stat(metric))]
        cells += [format_stat(s.stat(test))] if show_test else []
        body.append(cells + [str(s.n_failed), str(s.n_missing)])
    return header, body


def format_table(summaries, meta) -> str:
    """A plain-text ranked table: rank (the best marked ``*``), the swept values, the
    metric as ``mean ± half (n)``, its test (or validation) counterpart when reported,
    and the failed and missing run counts; columns aligned, numbers right-aligned."""
    header, body = _table_rows(summaries, meta)
    if not body:
        return "(no runs yet)"
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    left = {0}
    lines = []
    for row in [header, *body]:
        cells = [c.ljust(w) if i in left else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------
class FigureSkipped(Exception):
    """A report figure that cannot be made; the message says why."""


def _figure(width_extra: float = 0.0):
    from matplotlib.figure import Figure

    from ..analysis import DPI, FIGSIZE
    return Figure(figsize=(FIGSIZE[0] + width_extra, FIGSIZE[1]), dpi=DPI,
                  layout="constrained")


def _better(meta) -> str:
    return "lower is better" if meta.get("direction", "min") == "min" else "higher is better"


def _values_text(values: dict, skip=()) -> str:
    return ", ".join(f"{a} = {format_number(v)}" for a, v in values.items() if a not in skip)


def _axis_positions(axis: str, values: list, meta):
    """x positions of ``values`` on ``axis``: the numbers themselves, or category
    indices (in the spec's order) with their tick labels; and whether x is logarithmic."""
    if all(_is_number(v) and math.isfinite(v) for v in values):
        dist = _random_keys(meta).get(axis, {})
        pos = [v for v in values if v > 0]
        log = "log_uniform" in dist or (not dist and len(pos) == len(values) and pos
                                        and max(pos) / min(pos) >= 10)
        return np.asarray(values, dtype=float), None, bool(log)
    known = (meta.get("grid") or {}).get(axis) or _random_keys(meta).get(axis, {}).get(
        "choice") or []
    labels = list(dict.fromkeys([str(axis_value(v)) for v in known]
                                + [str(v) for v in values]))
    return np.asarray([labels.index(str(v)) for v in values], dtype=float), labels, False


def _style_axis_x(ax, axis: str, labels, log: bool) -> None:
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    elif log:
        ax.set_xscale("log")
    ax.set_xlabel(axis)
    ax.grid(True, alpha=0.3)


def _seed_points(ax, rows, xpos: dict, metric: str) -> None:
    """Every done run's value as a small grey dot at its configuration's x
    (``xpos``: config_index -> x)."""
    done = [r for r in rows if r.get("status") == "done" and int(r["config_index"]) in xpos
            and _is_number(r.get(metric)) and math.isfinite(r[metric])]
    if done:
        ax.plot([xpos[int(r["config_index"])] for r in done], [r[metric] for r in done],
                "o", ms=3, color="0.55", alpha=0.7, label="single runs", zorder=1)


def _spread(x: np.ndarray, width: float = 0.5) -> np.ndarray:
    """Category positions ``x`` with the points of one category spread evenly over
    ``width`` around it (in their order), so that they do not hide each other."""
    out = x.astype(float).copy()
    for c in np.unique(x):
        idx = np.flatnonzero(x == c)
        if len(idx) > 1:
            out[idx] += np.linspace(-width / 2, width / 2, len(idx))
    return out


def _mark_empty(ax, labels, x) -> None:
    """Note "no value" under each category without any point."""
    for i in sorted(set(range(len(labels))) - set(np.round(x).astype(int).tolist())):
        ax.annotate("no value", (i, 0), xycoords=("data", "axes fraction"),
                    xytext=(0, 4), textcoords="offset points", ha="center",
                    fontsize=8, color="0.4")


def _grid_slice(summaries, meta, axis: str, lead: Summary) -> list:
    """The configurations that share the best one's values on every other axis, in the
    grid's order along ``axis``."""
    others = [a for a in meta["axes"] if a != axis]
    same = [s for s in summaries
            if all(axis_key(meta, a, s.values[a]) == axis_key(meta, a, lead.values[a])
                   for a in others)]
    order = {axis_key(meta, axis, v): i for i, v in enumerate(meta["grid"][axis])}
    return sorted(same, key=lambda s: order.get(axis_key(meta, axis, s.values[axis]),
                                                len(order)))


def _grid_axis_panel(ax, summaries, rows, meta, axis: str, lead: Summary) -> str:
    metric = meta["metric"]
    line = [s for s in _grid_slice(summaries, meta, axis, lead) if s.stat(metric).n]
    x, labels, log = _axis_positions(axis, [s.values[axis] for s in line], meta)
    m = np.asarray([s.stat(metric).mean for s in line])
    h = np.asarray([s.stat(metric).half for s in line])        # NaN: a single run
    _seed_points(ax, rows, {s.config_index: xi for s, xi in zip(line, x)}, metric)
    if labels is None:                   # numbers: a line with its band (gaps at n < 2)
        ax.fill_between(x, m - h, m + h, color="C0", alpha=0.2, lw=0, label="95% interval")
        ax.errorbar(x, m, yerr=np.nan_to_num(h), fmt="o-", color="C0", capsize=3, lw=1.5,
                    elinewidth=0.8, label="mean over seeds", zorder=2)
    else:                                # categories: no line between them
        _mark_empty(ax, labels, x)
        ax.errorbar(x, m, yerr=np.nan_to_num(h), fmt="o", color="C0", capsize=4,
                    label="mean over seeds, 95% interval", zorder=2)
    ax.plot([x[line.index(lead)]], [lead.stat(metric).mean], "*", ms=14, color="C3",
            label="best", zorder=3)
    _style_axis_x(ax, axis, labels, log)
    others = _values_text(lead.values, skip=(axis,))
    return f"other axes at the best: {others}" if others else ""


def _random_axis_panel(ax, summaries, rows, meta, axis: str, lead: Summary) -> str:
    metric = meta["metric"]
    pts = [s for s in summaries if s.stat(metric).n and not _is_nan(s.values.get(axis))]
    x, labels, log = _axis_positions(axis, [s.values[axis] for s in pts], meta)
    m = np.asarray([s.stat(metric).mean for s in pts])
    h = np.nan_to_num(np.asarray([s.stat(metric).half for s in pts]))
    if labels is not None:
        _mark_empty(ax, labels, x)
        x = _spread(x)
    _seed_points(ax, rows, {s.config_index: xi for s, xi in zip(pts, x)}, metric)
    ax.errorbar(x, m, yerr=h, fmt="o", color="C0", ecolor="C0", elinewidth=1, capsize=3,
                label="configuration: mean, 95% interval", zorder=2)
    ax.plot([x[pts.index(lead)]], [lead.stat(metric).mean], "*", ms=14, color="C3",
            label="best", zorder=3)
    _style_axis_x(ax, axis, labels, log)
    return "every configuration (other values vary)"


def axis_figure(summaries, rows, meta, axis: str):
    """The metric against ``axis``: for a grid, the mean over seeds with its 95 %
    interval band along the axis with the other axes at the best configuration's
    values; with random draws, every configuration's mean with error bars (log x for
    ``log_uniform`` keys).  Single runs are grey dots, the best a red star.  Raises
    :class:`FigureSkipped` when no configuration has a value."""
    lead = best(summaries)
    if lead is None or lead.stat(meta["metric"]).n == 0:
        raise FigureSkipped(f"no configuration has a value of {meta['metric']}")
    fig = _figure()
    ax = fig.add_subplot()
    panel = _random_axis_panel if _random_keys(meta) else _grid_axis_panel
    note = panel(ax, summaries, rows, meta, axis, lead)
    ax.set_ylabel(meta["metric"])
    ax.set_title(f"{meta['metric']} against {axis} ({_better(meta)})"
                 + (f"\n{note}" if note else ""), fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig


def _history(out_dir, run_id: str) -> tuple[list, str]:
    """A run's periodic evaluations (metrics.json ``history``) and their split."""
    try:
        with open(os.path.join(out_dir, "runs", str(run_id), "metrics.json")) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return [], ""
    return list(m.get("history") or []), str(m.get("split") or "validation")


def _curve(hist: list, key: str):
    pts = [(h["step"], h[key]) for h in hist
           if h.get("step") is not None and h.get(key) is not None]
    return np.asarray(pts, dtype=float).reshape(-1, 2)


def curves_figure(out_dir, summaries, rows, meta, top: int = MAX_CURVE_CONFIGS):
    """The evaluation history (the metric against the step) of the best ``top``
    configurations: a line per seed, a colour per configuration, the legend outside
    the axes.  Raises :class:`FigureSkipped` when no such run has a history with it."""
    key = meta["metric"].split(".", 1)[1]
    chosen = [s for s in summaries if s.n_done][:top]
    fig = _figure(width_extra=2.5)
    ax = fig.add_subplot()
    drawn, split = 0, ""
    for rank, s in enumerate(chosen):
        runs = [r for r in rows if int(r["config_index"]) == s.config_index
                and r.get("status") == "done"]
        label = "\n".join(textwrap.wrap(f"#{rank + 1} {_values_text(s.values)}", 48)
                          + [format_stat(s.stat(meta["metric"]))])
        for r in sorted(runs, key=lambda r: r["seed_index"]):
            hist, split = _history(out_dir, r["run_id"])
            c = _curve(hist, key)
            if len(c):
                ax.plot(c[:, 0], c[:, 1], "-", color=f"C{rank}", lw=1.2, alpha=0.8,
                        marker="." if len(c) < 30 else None, label=label)
                label, drawn = None, drawn + 1
    if not drawn:
        raise FigureSkipped(f"no run of the best configurations has a history of {key!r}")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{split or 'validation'} {key}")
    ax.set_title(f"{split or 'validation'} {key} during training, best {len(chosen)} "
                 f"configurations (a line per seed; {_better(meta)})", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8, title="rank, values, mean ± 95%")
    return fig


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def report_figures(out_dir, rows, meta, fig_dir, skipped: list | None = None) -> list[str]:
    """Write the report's PNGs into ``fig_dir`` (created if missing):
    ``metric_vs_<axis>.png`` per swept axis (:func:`axis_figure`) and
    ``curves_best.png`` (:func:`curves_figure`, histories read from
    ``out_dir/runs/<run_id>/metrics.json``).  A figure that cannot be made is left out
    and ``(file name, reason)`` appended to ``skipped``.  Returns the paths written."""
    from ..analysis import save_figure

    os.makedirs(fig_dir, exist_ok=True)
    summaries = summarize(rows, meta)
    plan = [(f"metric_vs_{_file_stem(a)}.png",
             lambda a=a: axis_figure(summaries, rows, meta, a)) for a in meta["axes"]]
    plan.append(("curves_best.png", lambda: curves_figure(out_dir, summaries, rows, meta)))
    written = []
    for name, make in plan:
        try:
            fig = make()
        except FigureSkipped as exc:
            if skipped is not None:
                skipped.append((name, str(exc)))
            continue
        written.append(save_figure(fig, os.path.join(fig_dir, name)))
    return written


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------
def run_counts(rows, meta) -> dict:
    """Runs planned (configurations x seeds), done, failed and missing."""
    total = int(meta.get("n_configs") or 0) * int(meta.get("seeds") or 0)
    done = sum(r.get("status") == "done" for r in rows)
    failed = sum(r.get("status") == "failed" for r in rows)
    total = max(total, len(rows))
    return {"total": total, "done": done, "failed": failed,
            "missing": total - done - failed}


def report_header(rows, meta) -> str:
    """The report's first lines: the spec, the run counts, the metric and direction."""
    c = run_counts(rows, meta)
    spec = meta.get("spec") or meta.get("base") or "?"
    lines = [f"sweep {spec} (spec {str(meta.get('spec_hash', '?'))[:12]}, base "
             f"{meta.get('base', '?')}): {c['total']} runs: {c['done']} done, "
             f"{c['failed']} failed, {c['missing']} missing",
             f"metric {meta['metric']} ({meta.get('direction', 'min')}: {_better(meta)}); "
             f"mean ± 95% t-interval half-width (n done runs) over "
             f"{meta.get('seeds', '?')} seeds per configuration"]
    return "\n".join(lines)


def read_meta(out_dir) -> dict:
    """A sweep folder's ``sweep.json``; a folder without one is a FileNotFoundError
    saying so."""
    try:
        with open(os.path.join(out_dir, "sweep.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{out_dir}: not a sweep folder (no sweep.json)") from None


def sweep_report(out_dir) -> tuple[str, list[str]]:
    """The report of the sweep in ``out_dir``: reads ``sweep.json`` and ``results.csv``
    (no runs yet when it is absent), writes the figures into ``out_dir/figures/`` and
    returns ``(text, figure paths)``; the text is :func:`report_header`, the ranked
    :func:`format_table`, the best configuration and the figures left out, with why."""
    meta = read_meta(out_dir)
    path = os.path.join(out_dir, "results.csv")
    rows = read_csv(path, meta) if os.path.exists(path) else []
    summaries = summarize(rows, meta)
    parts = [report_header(rows, meta), "", format_table(summaries, meta)]
    lead = best(summaries)
    if lead is not None:
        parts += ["", f"best (*): configuration {lead.config_index}: "
                      f"{_values_text(lead.values) or '(no swept values)'}"]
    skipped: list = []
    paths = report_figures(out_dir, rows, meta, os.path.join(out_dir, "figures"), skipped)
    parts += [f"figure {name} left out: {why}" for name, why in skipped]
    return "\n".join(parts), paths
