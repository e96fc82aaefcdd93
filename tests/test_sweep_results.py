"""The results side of a sweep: results.csv, the xarray dataset and its netCDF file,
per-configuration summaries, the ranked table and the report figures."""

import itertools
import json
import math
import os

import numpy as np
import pytest

from ptncn.sweep import results as R

GRID = {"optimizer.lr": [0.001, 0.01, 0.1], "model.hidden": [[64, 64], [32]]}


def grid_meta(seeds=2, metric="valid.bpc", direction="min"):
    return {"spec_hash": "f00d", "base": "models/ptb.toml", "grid": GRID, "random": None,
            "axes": list(GRID), "seeds": seeds, "metric": metric, "direction": direction,
            "n_configs": 6}


def random_meta(n=5, seeds=2):
    from types import SimpleNamespace

    from ptncn.sweep.spec import configurations
    keys = {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
            "model.act": {"choice": ["tanh", "relu"]}}
    rnd = {"n": n, "seed": 3, "keys": keys}
    return {"spec_hash": "beef", "base": "models/ptb.toml", "grid": {},
            "random": rnd, "axes": list(keys), "seeds": seeds,
            "metric": "valid.bpc", "direction": "min", "n_configs": n,
            "configs": configurations(SimpleNamespace(grid={}, random=rnd))}


def make_row(ci, si, values, bpc, status="done"):
    failed = status != "done"
    return {"run_id": f"r{ci}_{si}", "config_index": ci, "seed_index": si, "seed": 100 + si,
            **values, "status": status, "error": "Diverged: nan" if failed else "",
            "attempts": 3 if failed else 1, "seconds": 2.5, "steps": 0 if failed else 40,
            "valid.bpc": math.nan if failed else bpc,
            "valid.loss": math.nan if failed else bpc * 0.69,
            "test.bpc": math.nan if failed else bpc + 0.05}


def grid_rows(skip=()):
    """Rows of the GRID sweep: bpc = 2 - lr*10 + 0.1*seed (+0.2 for [32]); run
    (config 5, seed 1) failed; runs in ``skip`` missing."""
    rows = []
    for ci, (lr, hidden) in enumerate(itertools.product(*GRID.values())):
        for si in range(2):
            if (ci, si) in skip:
                continue
            status = "failed" if (ci, si) == (5, 1) else "done"
            bpc = 2 - lr * 10 + 0.1 * si + (0.2 if hidden == [32] else 0)
            rows.append(make_row(ci, si, {"optimizer.lr": lr, "model.hidden": hidden},
                                 bpc, status))
    return rows


def random_rows(n=5, skip=()):
    rng = np.random.default_rng(0)
    rows = []
    for ci in range(n):
        v = {"optimizer.lr": float(10 ** rng.uniform(-4, -1)),
             "model.act": ["tanh", "relu"][ci % 2]}
        rows += [make_row(ci, si, v, 1.5 + ci * 0.1 + 0.05 * si)
                 for si in range(2) if (ci, si) not in skip]
    return rows


def fake_histories(out, rows):
    """metrics.json with a short history for every done run."""
    for r in rows:
        if r["status"] != "done":
            continue
        d = os.path.join(out, "runs", r["run_id"])
        os.makedirs(d, exist_ok=True)
        hist = [{"step": 10 * k, "batch": k, "seconds": 0.1 * k, "loss": 1.0,
                 "bpc": r["valid.bpc"] + 1.0 / k} for k in range(1, 6)]
        with open(os.path.join(d, "metrics.json"), "w") as f:
            json.dump({"split": "valid", "history": hist}, f)


def same(a, b):
    return (a == b) or (isinstance(a, float) and isinstance(b, float)
                        and math.isnan(a) and math.isnan(b))


# ---------------------------------------------------------------------------
# results.csv
# ---------------------------------------------------------------------------
def test_csv_round_trip(tmp_path):
    meta, rows = grid_meta(), grid_rows()
    path = R.write_csv(rows, meta, tmp_path / "results.csv")
    header = open(path).readline().strip().split(",")
    assert header == ["run_id", "config_index", "seed_index", "seed", "optimizer.lr",
                      "model.hidden", "status", "attempts", "seconds", "steps",
                      "valid.bpc", "valid.loss", "test.bpc", "error"]
    back = R.read_csv(path, meta)
    assert len(back) == len(rows)
    for a, b in zip(rows, back):
        for k, v in a.items():
            want = R.axis_value(v)
            assert same(b[k], want), (k, b[k], want)
            assert type(b[k]) is type(want), (k, b[k], want)
    assert back[0]["model.hidden"] == "64,64" and back[1]["error"] == ""
    assert back[-1]["status"] == "failed" and math.isnan(back[-1]["valid.bpc"])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    plain = R.read_csv(path)                     # without meta, "32" reads as a number ...
    assert plain[2]["model.hidden"] == 32
    ds = R.to_dataset(plain, meta)               # ... and still lands on its coordinate
    assert (ds["status"].values != "missing").all()


def test_csv_metric_columns_are_the_union(tmp_path):
    meta, rows = grid_meta(), grid_rows()[:2]
    rows[1]["valid.bit_accuracy"] = 0.5
    back = R.read_csv(R.write_csv(rows, meta, tmp_path / "r.csv"))
    assert math.isnan(back[0]["valid.bit_accuracy"]) and back[1]["valid.bit_accuracy"] == 0.5


# ---------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------
def test_grid_dataset_dims_coords_and_missing(tmp_path):
    ds = R.to_dataset(grid_rows(skip={(2, 0)}), grid_meta())
    assert ds["valid.bpc"].dims == ("optimizer.lr", "model.hidden", "seed")
    assert list(ds["optimizer.lr"].values) == [0.001, 0.01, 0.1]
    assert list(ds["model.hidden"].values) == ["64,64", "32"]
    assert list(ds["seed"].values) == [0, 1] and list(ds["seed_value"].values) == [100, 101]
    cell = dict(seed=0, **{"optimizer.lr": 0.01, "model.hidden": "64,64"})
    assert math.isnan(float(ds["valid.bpc"].sel(cell))) and ds["status"].sel(cell) == "missing"
    cell = dict(seed=1, **{"optimizer.lr": 0.1, "model.hidden": "32"})
    assert ds["status"].sel(cell) == "failed" and math.isnan(float(ds["test.bpc"].sel(cell)))
    cell = dict(seed=1, **{"optimizer.lr": 0.1, "model.hidden": "64,64"})
    assert float(ds["valid.bpc"].sel(cell)) == pytest.approx(1.1)
    assert ds["run_id"].sel(cell) == "r4_1" and int(ds["steps"].sel(cell)) == 40
    assert ds.attrs["metric"] == "valid.bpc" and ds.attrs["direction"] == "min"
    assert ds.attrs["spec_hash"] == "f00d" and ds.attrs["base"] == "models/ptb.toml"


def test_random_dataset_config_dim(tmp_path):
    meta = random_meta(n=5)
    rows = random_rows(n=5, skip={(4, 0), (4, 1), (1, 1)})
    ds = R.to_dataset(rows, meta)
    assert ds["valid.bpc"].dims == ("config", "seed") and ds.sizes["config"] == 5
    assert ds["optimizer.lr"].dims == ("config",) and ds["model.act"].dims == ("config",)
    assert ds["model.act"].values[0] == "tanh" and ds["model.act"].values[1] == "relu"
    assert ds["optimizer.lr"].values[2] == pytest.approx(rows[4]["optimizer.lr"])
    assert math.isnan(float(ds["valid.bpc"][1, 1])) and ds["status"].values[1, 1] == "missing"
    assert (ds["status"].values[4] == "missing").all()
    drawn = meta["configs"][4]                         # config 4 has no row: the plan's values
    assert ds["optimizer.lr"].values[4] == pytest.approx(drawn["optimizer.lr"])
    assert ds["model.act"].values[4] == drawn["model.act"]
    assert float(ds["valid.bpc"][3, 1]) == pytest.approx(1.85)


def test_netcdf_round_trip(tmp_path):
    import xarray as xr

    ds = R.to_dataset(grid_rows(skip={(0, 1)}), grid_meta())
    path = R.write_netcdf(ds, tmp_path / "results.nc")
    with xr.open_dataset(path) as back:
        back = back.load()
    assert back["valid.bpc"].dims == ("optimizer.lr", "model.hidden", "seed")
    xr.testing.assert_identical(back, ds)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    ds2 = R.to_dataset(random_rows(skip={(0, 0)}), random_meta())
    with xr.open_dataset(R.write_netcdf(ds2, tmp_path / "random.nc")) as back2:
        xr.testing.assert_identical(back2.load(), ds2)


# ---------------------------------------------------------------------------
# summaries and the table
# ---------------------------------------------------------------------------
def test_t_interval_by_hand():
    s = R.mean_interval([1.0, 2.0, 3.0, math.nan])
    assert s.n == 3 and s.mean == pytest.approx(2.0)
    assert s.half == pytest.approx(4.302652729911275 / math.sqrt(3))      # t(0.975, 2) * 1
    assert s.half == pytest.approx(2.4841, abs=1e-4)
    one = R.mean_interval([5.0])
    assert one.mean == 5.0 and math.isnan(one.half) and one.n == 1
    assert R.mean_interval([]).n == 0


def test_summaries_per_configuration():
    sums = R.summarize(grid_rows(), grid_meta())
    assert len(sums) == 6
    by_ci = {s.config_index: s for s in sums}
    failed = by_ci[5]
    assert (failed.n_done, failed.n_failed, failed.n_missing) == (1, 1, 0)
    assert failed.stat("valid.bpc").n == 1 and math.isnan(failed.stat("valid.bpc").half)
    s0 = by_ci[0]
    assert s0.values == {"optimizer.lr": 0.001, "model.hidden": "64,64"}
    assert s0.stat("test.bpc").mean == pytest.approx(2 - 0.01 + 0.05 + 0.05)
    t1 = 12.706204736174705                                     # t(0.975, 1)
    assert s0.stat("valid.loss").half == pytest.approx(t1 * 0.1 / math.sqrt(2) * 0.69
                                                       / math.sqrt(2))


def test_sorting_min_max_and_nan_last():
    rows = grid_rows()
    for r in rows:                           # configuration 2 has no value at all
        if r["config_index"] == 2:
            r["status"], r["valid.bpc"] = "failed", math.nan
    low = R.summarize(rows, grid_meta(direction="min"))
    assert [s.config_index for s in low] == [4, 5, 0, 3, 1, 2]
    high = R.summarize(rows, grid_meta(direction="max"))
    assert [s.config_index for s in high] == [1, 3, 0, 5, 4, 2]
    means = [s.stat("valid.bpc").mean for s in high[:-1]]
    assert means == sorted(means, reverse=True) and math.isnan(high[-1].stat("valid.bpc").mean)
    assert R.best(low).config_index == 4 and R.best(high).config_index == 1


def test_table_marks_the_best_and_aligns():
    meta = grid_meta()
    text = R.format_table(R.summarize(grid_rows(skip={(0, 0)}), meta), meta)
    lines = text.splitlines()
    assert "valid.bpc" in lines[0] and "test.bpc" in lines[0] and "failed" in lines[0]
    starred = [ln for ln in lines if ln.startswith("*")]
    assert len(starred) == 1 and starred[0].startswith("*1")
    assert "0.1" in starred[0] and "64,64" in starred[0]
    assert "1.05 ± 0.64 (2)" in starred[0]                      # t(.975,1)*0.0707 = 0.635
    assert len({len(ln) for ln in lines[:2]}) == 1              # header over its rule
    col = lines[0].index("failed") + len("failed")
    assert all(ln[col - 1] in "0123456789" for ln in lines[2:])     # right-aligned counts
    c0 = [ln for ln in lines if "0.001" in ln and "64,64" in ln]    # one seed missing
    assert len(c0) == 1 and c0[0].split()[-2:] == ["0", "1"] and "2.09 (1)" in c0[0]
    c5 = [ln for ln in lines if "0.1 " in ln and " 32 " in ln]      # one seed failed
    assert len(c5) == 1 and c5[0].split()[-2:] == ["1", "0"] and "1.2 (1)" in c5[0]


# ---------------------------------------------------------------------------
# figures and the report
# ---------------------------------------------------------------------------
def test_figures_for_a_grid_sweep(tmp_path):
    meta, rows = grid_meta(), grid_rows(skip={(1, 1)})
    fake_histories(tmp_path, rows)
    skipped = []
    paths = R.report_figures(tmp_path, rows, meta, tmp_path / "figures", skipped)
    names = [os.path.basename(p) for p in paths]
    assert names == ["metric_vs_optimizer.lr.png", "metric_vs_model.hidden.png",
                     "curves_best.png"] and skipped == []
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_figures_for_a_random_sweep_and_a_missing_history(tmp_path):
    meta, rows = random_meta(), random_rows()
    skipped = []
    paths = R.report_figures(tmp_path, rows, meta, tmp_path / "figures", skipped)
    assert [os.path.basename(p) for p in paths] == ["metric_vs_optimizer.lr.png",
                                                    "metric_vs_model.act.png"]
    assert skipped and skipped[0][0] == "curves_best.png" and "history" in skipped[0][1]


def test_axis_figure_log_x_for_log_uniform():
    meta, rows = random_meta(), random_rows()
    fig = R.axis_figure(R.summarize(rows, meta), rows, meta, "optimizer.lr")
    assert fig.axes[0].get_xscale() == "log"
    fig = R.axis_figure(R.summarize(rows, meta), rows, meta, "model.act")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["tanh", "relu"]


def test_no_values_skips_figures(tmp_path):
    meta = grid_meta()
    rows = [dict(r, status="failed", **{"valid.bpc": math.nan}) for r in grid_rows()]
    skipped = []
    assert R.report_figures(tmp_path, rows, meta, tmp_path / "f", skipped) == []
    assert len(skipped) == 3


def test_sweep_report(tmp_path):
    meta, rows = grid_meta(), grid_rows(skip={(3, 0)})
    fake_histories(tmp_path, rows)
    with open(tmp_path / "sweep.json", "w") as f:
        json.dump(meta, f)
    R.write_csv(rows, meta, tmp_path / "results.csv")
    text, paths = R.sweep_report(str(tmp_path))
    assert "12 runs: 10 done, 1 failed, 1 missing" in text.splitlines()[0]
    assert "valid.bpc (min" in text.splitlines()[1]
    assert "best (*): configuration 4" in text
    assert len(paths) == 3 and all(p.startswith(str(tmp_path / "figures")) for p in paths)
