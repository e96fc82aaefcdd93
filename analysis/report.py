"""One-page report of a recorded run.

    python analysis/report.py RUN.h5 [--out DIR]

Writes into DIR (default: ``<RUN>_report`` beside the run file):

* every figure the run's traces allow, as PNGs (``ptncn.analysis.plot_run``);
* ``report.html``: the run's summary (``Recording.summary()``) in a <pre>, the
  final-scores table, its config, seed and data, a short loss table, the figures that were skipped and
  why, and every PNG inline (embedded as data URIs, so the page is one
  self-contained file);
* ``scores.png``: the final scores of ``metrics.json`` beside the run file (final
  model and the model selected on the selection split, on it and on test; the
  trivial predictors), or the training-loss summary when there is none;
* ``report.png``: the scores and all figures tiled on one image (two columns,
  with gutters; the scores span both columns when the figures fill their rows),
  pixel for pixel.

Prints the paths written, one per line.  A missing, corrupt or foreign run file
is reported in one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import json
import math
import os
import sys

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imread

from ptncn.analysis import DPI, FIGSIZE, figure_plan, loss_units, plot_run, run_metrics
from ptncn.record import RecordingError, open_recording

HEADER_PX = 70
GUTTER_PX = 28                     # white space between tiles (keeps their labels apart)
#: metric columns of the metrics table, in order, with their headings
METRIC_COLUMNS = (("bpc", "bits/char"), ("ppl", "perplexity"), ("bce_per_frame", "BCE nats/frame"),
                  ("mse_per_frame", "squared error/frame"), ("bit_accuracy", "bit accuracy"))


def loss_rows(rec) -> list[tuple[str, str]]:
    """(label, value) rows summarising the ``loss`` trace, or [] without one; values in
    the task's unit (:func:`ptncn.analysis.loss_units`), with nats for one-hot tasks."""
    if "loss" not in rec or len(rec["loss"]) == 0:
        return []
    loss = np.asarray(rec["loss"][:], np.float64)
    loss = loss[np.isfinite(loss)]
    if loss.size == 0:
        return []
    u = loss_units(rec, run_metrics(rec))
    k = max(1, loss.size // 10)
    first, last = loss[:k].mean(), loss[-k:].mean()

    def fmt(v):
        text = f"{v * u['scale']:.4f} {u['unit']}"
        return text + (f" ({v:.4f} {u['other']})" if u["other"] else "")
    return [("scored steps", str(loss.size)),
            (f"mean training loss, first {k} scored steps", fmt(first)),
            (f"mean training loss, last {k} scored steps", fmt(last))]


def metrics_table(m: dict | None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the final scores in a metrics.json ``m``: the final model and
    the model selected on the selection split, on that split and on test, then the
    trivial predictors on both.  ([], []) without metrics."""
    if not m:
        return [], []
    split = m.get("split", "valid")
    test = m.get("test") or {}
    step = (m.get("best") or {}).get("step")
    sel = f"selected on {split}" + (f" (step {step})" if step is not None else "")
    entries = [(f"final model, {split}", m.get("final")),
               ("final model, test", test.get("final")),
               (f"{sel}, {split}", m.get("best")),
               (f"{sel}, test", test.get("best"))]
    for name, b in sorted((m.get("baselines") or {}).items()):
        entries.append((f"{name.replace('_', ' ')} predictor, {split}", b))
    for name, b in sorted((test.get("baselines") or {}).items()):
        entries.append((f"{name.replace('_', ' ')} predictor, test", b))
    entries = [(k, v) for k, v in entries if isinstance(v, dict)]
    cols = [(key, head) for key, head in METRIC_COLUMNS
            if any(_num(v.get(key)) is not None for _, v in entries)]
    if not cols:
        cols = [("loss", "loss (nats)")]
    rows = [[label] + [_cell(v.get(key)) for key, _ in cols] for label, v in entries]
    return ["model / data"] + [head for _, head in cols], rows


def _num(v):
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _cell(v) -> str:
    x = _num(v)
    return "–" if x is None else f"{x:.4g}" if abs(x) < 1e4 else f"{x:.0f}"


def metrics_panel(rec, out_path: str, width_px: int, height_px: int = 0) -> str:
    """Write :func:`scores_figure` as a PNG; returns its path."""
    fig = scores_figure(rec, width_px, height_px)
    fig.savefig(out_path, dpi=DPI, format="png")
    fig.clear()
    return out_path


def scores_figure(rec, width_px: int, height_px: int = 0) -> Figure:
    """A figure ``width_px`` wide (at least ``height_px`` tall): the final-scores table of
    the run's metrics.json, or, without one, the training-loss summary of the
    recording."""
    header, rows = metrics_table(run_metrics(rec))
    title = "Final scores (metrics.json)"
    if not rows:
        header, rows = ["training loss (recording)", "value"], [list(r) for r in loss_rows(rec)]
        title = "Training loss summary (no metrics.json beside the run)"
        if not rows:
            header, rows = ["", ""], [["no metrics.json and no loss trace", ""]]
    body = 0.25 * (len(rows) + 1)                      # inches of table
    h_in = max(0.75 + body, height_px / DPI)
    fig = Figure(figsize=(width_px / DPI, h_in), dpi=DPI)
    bottom = (h_in - body - 0.4) / 2                    # the table and its title centred
    ax = fig.add_axes((0.01, bottom / h_in, 0.98, body / h_in))
    ax.set_axis_off()
    table = ax.table(cellText=rows, colLabels=header, cellLoc="right", colLoc="center",
                     loc="upper center")
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.auto_set_column_width(list(range(len(header))))
    table.scale(1.0, 1.3)
    for (i, j), cell in table.get_celld().items():
        if j == 0:
            cell.set_text_props(ha="left")
        if i == 0:
            cell.set_text_props(weight="bold")
    fig.suptitle(title, fontsize=11, y=(bottom + body + 0.4) / h_in, va="top")
    return fig


def composite(pngs: list[str], out_path: str, header: str, wide: str | None = None) -> str:
    """Tile the PNGs (two columns, ``GUTTER_PX`` apart) under a one-line header into one
    PNG at the panels' scale.  ``wide`` (a PNG as wide as two columns) goes on top,
    spanning both; each row is as tall as its tallest tile."""
    imgs = [_rgba(imread(p)) for p in pngs]
    cols = 1 if len(imgs) <= 1 else 2
    w = max((im.shape[1] for im in imgs), default=int(FIGSIZE[0] * DPI))
    grid = [imgs[i:i + cols] for i in range(0, len(imgs), cols)]
    strips = [_rgba(imread(wide))] if wide else []
    strips += [_row_strip(row, w, cols) for row in grid]
    if not strips:
        strips = [np.ones((int(FIGSIZE[1] * DPI), w, 4), np.float32)]
    W = max(s.shape[1] for s in strips)
    canvas = np.ones((sum(s.shape[0] for s in strips) + GUTTER_PX * (len(strips) - 1), W, 4),
                     np.float32)
    y = 0
    for strip in strips:
        x = (W - strip.shape[1]) // 2
        canvas[y:y + strip.shape[0], x:x + strip.shape[1]] = strip
        y += strip.shape[0] + GUTTER_PX
    _save_canvas(canvas, out_path, header, empty=not imgs and not wide)
    return out_path


def _rgba(im: np.ndarray) -> np.ndarray:
    im = np.asarray(im, np.float32)
    if im.shape[2] == 3:
        im = np.concatenate([im, np.ones((*im.shape[:2], 1), im.dtype)], axis=2)
    return im


def _row_strip(row: list, w: int, cols: int) -> np.ndarray:
    """One row of tiles, ``GUTTER_PX`` apart, tops aligned."""
    h = max(im.shape[0] for im in row)
    strip = np.ones((h, cols * w + GUTTER_PX * (cols - 1), 4), np.float32)
    for c, im in enumerate(row):
        x = c * (w + GUTTER_PX)
        strip[:im.shape[0], x:x + im.shape[1]] = im
    return strip


def _save_canvas(canvas: np.ndarray, out_path: str, header: str, empty: bool) -> None:
    H, W = canvas.shape[0] + HEADER_PX, canvas.shape[1]
    fig = Figure(figsize=(W / DPI, H / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, canvas.shape[0] / H))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    fig.text(0.5, 1 - HEADER_PX / 2 / H, header, ha="center", va="center", fontsize=13)
    if empty:
        fig.text(0.5, 0.45, "no trace in this run can be plotted", ha="center", fontsize=12)
    fig.savefig(out_path, dpi=DPI, format="png")
    fig.clear()


def _plain(o):
    """JSON fallback for numpy scalars and arrays read from HDF5 attributes."""
    if isinstance(o, (np.generic, np.ndarray)):
        return o.tolist()
    return str(o)


def _pre(obj) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, indent=2, sort_keys=True,
                                                       default=_plain)
    return f"<pre>{html.escape(text)}</pre>"


def write_html(rec, pngs: list[str], skipped: list, out_path: str, title: str) -> str:
    a = rec.attrs
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "pre{background:#f4f4f4;padding:.8em;overflow-x:auto;font-size:12px}"
        "img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}"
        "td,th{padding:.2em .8em;text-align:left}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Report written {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}"
        f" from <code>{html.escape(os.path.abspath(rec.path))}</code>.</p>",
        "<h2>Summary</h2>", _pre(rec.summary()),
    ]
    header, mrows = metrics_table(run_metrics(rec))
    if mrows:
        parts.append("<h2>Final scores</h2><p>From <code>metrics.json</code> beside the run "
                     "file; lower is better except bit accuracy.</p><table>"
                     + "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row)
                               + "</tr>" for row in mrows) + "</table>")
    rows = loss_rows(rec)
    if rows:
        parts.append("<h2>Loss</h2><table>" + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
            + "</table>")
    parts += ["<h2>Config</h2>", _pre(rec.config or "(no config recorded)"),
              "<h2>Seed and data</h2>",
              _pre({"seed": a.get("seed"), "batch": a.get("batch"), "learner": a.get("learner"),
                    "data_identity": a.get("data_identity"), "versions": a.get("versions")})]
    parts.append("<h2>Figures</h2>")
    for p in pngs:
        with open(p, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        name = os.path.basename(p)
        parts.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(name)}</figcaption></figure>")
    if not pngs:
        parts.append("<p>No trace in this run can be plotted.</p>")
    if skipped:
        parts.append("<h3>Not drawn</h3><ul>" + "".join(
            f"<li>{html.escape(n)}: {html.escape(why)}</li>" for n, why in skipped) + "</ul>")
    parts.append("</body></html>")
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return out_path


def _when(iso) -> str:
    """An ISO 8601 time as 'YYYY-MM-DD HH:MM UTC' (unchanged if it does not parse)."""
    try:
        t = _dt.datetime.fromisoformat(str(iso)).astimezone(_dt.timezone.utc)
    except ValueError:
        return str(iso)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def build_report(run: str, out_dir: str | None = None) -> list[str]:
    """Write the figures, report.html and report.png; return every path written."""
    if out_dir is None:
        stem = os.path.splitext(os.path.basename(run))[0]
        out_dir = os.path.join(os.path.dirname(os.path.abspath(run)), f"{stem}_report")
    rec = open_recording(run)          # FileNotFoundError / RecordingError propagate
    try:
        pngs = plot_run(rec.path, out_dir)
        _, skipped = figure_plan(rec)
        a = rec.attrs
        title = f"Run report: {os.path.basename(run)}"
        header = (f"{os.path.basename(run)} — {a.get('learner', '?')}, seed {a.get('seed')}, "
                  f"batch {a.get('batch')}, started {_when(a.get('start_time'))}")
        page = write_html(rec, pngs, skipped, os.path.join(out_dir, "report.html"), title)
        scores = _scores_panel(rec, pngs, os.path.join(out_dir, "scores.png"))
    finally:
        rec.close()
    tiles = pngs if scores["wide"] else [scores["path"], *pngs]
    grid = composite(tiles, os.path.join(out_dir, "report.png"), header,
                     wide=scores["path"] if scores["wide"] else None)
    return [*pngs, scores["path"], page, grid]


def _scores_panel(rec, pngs: list[str], out_path: str) -> dict:
    """The scores table as a PNG: a full-width strip over the tiles when they fill
    their rows (an even number), else one more tile, so that no tile is left blank."""
    w, h = int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI)
    wide = len(pngs) % 2 == 0 and len(pngs) > 0
    if wide:
        w = 2 * max(imread(p).shape[1] for p in pngs) + GUTTER_PX
    return {"path": metrics_panel(rec, out_path, w, 0 if wide else h), "wide": wide}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="One-page report (HTML + PNG) of a recorded run.")
    ap.add_argument("run", help="the run file (HDF5 recording)")
    ap.add_argument("--out", default=None,
                    help="output folder (default: <run>_report beside the run file)")
    args = ap.parse_args(argv)
    try:
        paths = build_report(args.run, args.out)
    except (FileNotFoundError, RecordingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
