"""Layout of the figures and of the report page: no text overlaps other text or leaves
its figure, the report tiles leave no blank quarter and carry the final scores, and
the zero-shot legends sit clear of the curves."""

import json
import os
import sys
from itertools import combinations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread
from matplotlib.text import Text

from ptncn import analysis
from test_analysis import FULL, ROOT, make_run, write_spike_file

sys.path.insert(0, os.path.join(ROOT, "analysis"))
import report  # noqa: E402  (analysis/report.py)

METRICS = {"split": "valid",
           "final": {"loss": 1.5, "bpc": 2.16, "ppl": 4.48},
           "best": {"loss": 1.4, "bpc": 2.02, "ppl": 4.06, "step": 200},
           "history": [{"loss": 1.8, "step": 100, "batches": 2},
                       {"loss": 1.4, "step": 200, "batches": 2}],
           "baselines": {"unigram": {"loss": 2.0, "bpc": 2.885}},
           "test": {"final": {"loss": 1.6, "bpc": 2.31, "ppl": 4.95},
                    "best": {"loss": 1.45, "bpc": 2.09, "ppl": 4.26},
                    "baselines": {"unigram": {"loss": 2.05, "bpc": 2.96}}}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as the harness leaves it: run.h5 and metrics.json."""
    d = tmp_path_factory.mktemp("rundir")
    make_run(d / "run.h5", FULL)
    with open(d / "metrics.json", "w") as f:
        json.dump(METRICS, f)
    return d


def _undrawn_tick_labels(fig) -> set:
    """Tick labels outside their axis's view interval (matplotlib does not draw them)."""
    axes = list(fig.axes)
    axes += [c for ax in fig.axes for c in ax.child_axes]
    skip = set()
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * max(abs(lo), abs(hi), 1.0)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - tol <= tick.get_loc() <= hi + tol:
                    skip.update((id(tick.label1), id(tick.label2)))
    return skip


def text_boxes(fig):
    """(text, window extent) of every drawn, non-empty text of a figure."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    skip = _undrawn_tick_labels(fig)
    out = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and id(t) not in skip:
            out.append((t.get_text(), t.get_window_extent(renderer)))
    return out


def assert_texts_apart(fig, what):
    """No two texts overlap (by more than a pixel) and none leaves the figure."""
    boxes = text_boxes(fig)
    w, h = fig.bbox.width, fig.bbox.height
    for text, b in boxes:
        assert b.x0 >= -1 and b.y0 >= -1 and b.x1 <= w + 1 and b.y1 <= h + 1, (what, text)
    for (t1, b1), (t2, b2) in combinations(boxes, 2):
        ix = min(b1.x1, b2.x1) - max(b1.x0, b2.x0)
        iy = min(b1.y1, b2.y1) - max(b1.y0, b2.y0)
        assert ix <= 1 or iy <= 1, (what, t1, t2)


def test_no_text_overlaps_in_any_figure(run_dir, tmp_path):
    run = str(run_dir / "run.h5")
    spikes = write_spike_file(tmp_path / "s.h5",
                              np.random.default_rng(0).poisson(0.3, (400, 1, 20)) * 1.0)
    figs = {stem: func(run, **kw) for stem, func, kw in analysis.figure_plan(run)[0]}
    figs["spike_raster"] = analysis.spike_raster(spikes)
    with analysis.open_recording(run) as r:
        figs["scores_tile"] = report.scores_figure(r, 880, 495)
        figs["scores_wide"] = report.scores_figure(r, 1788)
    for what, fig in figs.items():
        assert_texts_apart(fig, what)


def test_report_page_has_scores_and_no_blank_quarter(run_dir, tmp_path):
    out = tmp_path / "rep"
    paths = report.build_report(str(run_dir / "run.h5"), str(out))
    names = [os.path.basename(p) for p in paths]
    assert "scores.png" in names and names[-1] == "report.png"
    page = (out / "report.html").read_text()
    assert "Final scores" in page and "unigram predictor, test" in page
    assert "final model, test" in page and "2.31" in page         # the test bpc
    # four figures fill two rows: the scores span the top; every quarter below is used
    img = imread(out / "report.png")
    body = img[report.HEADER_PX:]
    scores_h = imread(out / "scores.png").shape[0]
    grid = body[scores_h + report.GUTTER_PX:]
    h2, w2 = grid.shape[0] // 2, grid.shape[1] // 2
    for q in (grid[:h2, :w2], grid[:h2, w2:], grid[h2:, :w2], grid[h2:, w2:]):
        assert len(np.unique(q.reshape(-1, q.shape[2]), axis=0)) > 20
    # the gutter between the columns is white: tiles do not touch
    w = analysis.FIGSIZE[0] * analysis.DPI
    gutter = grid[:, int(w) + 2:int(w) + report.GUTTER_PX - 2]
    assert gutter.size and np.all(gutter[..., :3] > 0.99)


def test_report_with_an_odd_number_of_figures_tiles_the_scores(tmp_path):
    run = make_run(tmp_path / "run.h5", {"loss": {}, "e0": {}, "z1": {"rows": [0]}},
                   batches=4)
    out = tmp_path / "rep"
    paths = report.build_report(run, str(out))
    assert len([p for p in paths if p.endswith(".png")]) == 5    # 3 figures, scores, page
    img = imread(out / "report.png")[report.HEADER_PX:]
    h2, w2 = img.shape[0] // 2, img.shape[1] // 2
    for q in (img[:h2, :w2], img[:h2, w2:], img[h2:, :w2], img[h2:, w2:]):
        assert len(np.unique(q.reshape(-1, q.shape[2]), axis=0)) > 20
    with analysis.open_recording(run) as r:
        fig = report.scores_figure(r, 880, 495)
    assert "Training loss summary" in fig._suptitle.get_text()


def test_metrics_table_rows():
    header, rows = report.metrics_table(METRICS)
    assert header == ["model / data", "bits/char", "perplexity"]
    labels = [r[0] for r in rows]
    assert labels == ["final model, valid", "final model, test",
                      "selected on valid (step 200), valid", "selected on valid (step 200), test",
                      "unigram predictor, valid", "unigram predictor, test"]
    assert rows[1][1] == "2.31" and rows[4][2] == "–"
    assert report.metrics_table(None) == ([], [])


def test_zeroshot_legends_clear_of_the_curves(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from ptncn.zeroshot import load_zeroshot_config, run_zeroshot
    from test_zeroshot import _write_cfg

    kept = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    run_zeroshot(load_zeroshot_config(_write_cfg(tmp_path)), str(tmp_path / "out"),
                 log=lambda m: None)
    (fig,) = [f for f in kept if f is not None]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    legends = 0
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        legends += 1
        lb = leg.get_window_extent(canvas.get_renderer())
        assert lb.y1 <= ax.bbox.y0 + 1                        # below the plotting area
        assert lb.y0 >= -1                                   # and still on the figure
    assert legends >= 2
    assert_texts_apart(fig, "zeroshot")
