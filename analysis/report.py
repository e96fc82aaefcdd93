"""One-page report of a recorded run.

    python analysis/report.py RUN.h5 [--out DIR]

Writes into DIR (default: ``<RUN>_report`` beside the run file):

* every figure the run's traces allow, as PNGs (``ptncn.analysis.plot_run``);
* ``report.html``: the run's summary (``Recording.summary()``) in a <pre>, its
  config, seed and data, a short loss table, the figures that were skipped and
  why, and every PNG inline (embedded as data URIs, so the page is one
  self-contained file);
* ``report.png``: all panels tiled on one image (two columns), pixel for pixel.

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

from ptncn.analysis import DPI, FIGSIZE, figure_plan, plot_run
from ptncn.record import RecordingError, open_recording

HEADER_PX = 70


def loss_rows(rec) -> list[tuple[str, str]]:
    """(label, value) rows summarising the ``loss`` trace, or [] without one."""
    if "loss" not in rec or len(rec["loss"]) == 0:
        return []
    loss = np.asarray(rec["loss"][:], np.float64)
    loss = loss[np.isfinite(loss)]
    if loss.size == 0:
        return []
    k = max(1, loss.size // 10)
    first, last = loss[:k].mean(), loss[-k:].mean()
    fmt = "{:.4f} nats ({:.4f} bits)"
    return [("scored steps", str(loss.size)),
            (f"mean loss, first {k} scored steps", fmt.format(first, first / math.log(2))),
            (f"mean loss, last {k} scored steps", fmt.format(last, last / math.log(2)))]


def composite(pngs: list[str], out_path: str, header: str) -> str:
    """Tile the PNGs (two columns) under a one-line header into one PNG at the panels' scale."""
    imgs = [imread(p) for p in pngs]
    if imgs:
        cols = 1 if len(imgs) == 1 else 2
        rows = math.ceil(len(imgs) / cols)
        h = max(im.shape[0] for im in imgs)
        w = max(im.shape[1] for im in imgs)
        canvas = np.ones((rows * h, cols * w, 4), np.float32)
        for i, im in enumerate(imgs):
            if im.shape[2] == 3:
                im = np.concatenate([im, np.ones((*im.shape[:2], 1), im.dtype)], axis=2)
            r, c = divmod(i, cols)
            canvas[r * h:r * h + im.shape[0], c * w:c * w + im.shape[1]] = im
    else:
        w, h = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
        canvas = np.ones((h, w, 4), np.float32)
    H, W = canvas.shape[0] + HEADER_PX, canvas.shape[1]
    fig = Figure(figsize=(W / DPI, H / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, canvas.shape[0] / H))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    fig.text(0.5, 1 - HEADER_PX / 2 / H, header, ha="center", va="center", fontsize=13)
    if not imgs:
        fig.text(0.5, 0.45, "no trace in this run can be plotted", ha="center", fontsize=12)
    fig.savefig(out_path, dpi=DPI, format="png")
    fig.clear()
    return out_path


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
    finally:
        rec.close()
    grid = composite(pngs, os.path.join(out_dir, "report.png"), header)
    return [*pngs, page, grid]


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
