"""Bouncing-digit video and bit-recall tasks: geometry, determinism, splits, baselines."""

import numpy as np
import pytest

from ptncn.data.bitrecall import BitRecall, bit_accuracy
from ptncn.data.bouncing import (BouncingDigits, constant_bce, copy_last_frame_bce, corners,
                                 frame_metrics, glyph_pool, mean_frame_bce, notmnist_split,
                                 reflect_step, render, shrink_glyphs, trajectory)
from ptncn.data.files import DataError, find


def need(name):
    try:
        return find(name)
    except DataError as e:
        pytest.skip(f"{name} not available (set PTNCN_DATA to the data directory): {e}")


@pytest.fixture
def mnist():
    need("mnist.npz")


@pytest.fixture
def notmnist():
    need("notmnist_small.npz")


# ------------------------------------------------------------ motion, no data

def test_reflect_step_hand_checked():
    p, v = reflect_step(np.array([0.95, 0.5]), np.array([0.1, -0.2]))
    assert p == pytest.approx([0.95, 0.3]) and v == pytest.approx([-0.1, -0.2])
    p, v = reflect_step(np.array([0.05]), np.array([-0.1]))
    assert p == pytest.approx([0.05]) and v == pytest.approx([0.1])
    p, v = reflect_step(np.array([0.5]), np.array([0.1]))
    assert p == pytest.approx([0.6]) and v == pytest.approx([0.1])


def test_trajectory_stays_in_unit_square_and_corners_in_canvas():
    rng = np.random.default_rng(3)
    start = rng.random((500, 2))
    ang = rng.random(500) * 2 * np.pi
    vel = 0.3 * np.stack([np.cos(ang), np.sin(ang)], -1)
    pos = trajectory(start, vel, 50)
    assert pos.min() >= 0 and pos.max() <= 1
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=-1)
    assert speed.max() <= 0.3 + 1e-12                     # reflection never speeds up
    c = corners(pos, 64)
    assert c.min() >= 0 and c.max() <= 36


def test_render_overlap_is_pixelwise_max():
    a = np.zeros((28, 28), np.uint8)
    b = np.zeros((28, 28), np.uint8)
    a[:, :14] = 200
    b[:, :] = 100
    b[0, 0] = 255
    glyphs = np.stack([a, b])[None]                       # (B=1, D=2, 28, 28)
    corner = np.array([[[[0, 0], [0, 4]]]])               # (T=1, B=1, D=2, 2)
    out = render(glyphs, corner, 32)[0, 0]
    assert out[0, 0] == 200 and out[0, 4] == 255          # a only; b's bright corner
    assert out[5, 10] == 200                              # overlap: max(200, 100)
    assert out[5, 20] == 100 and out[5, 31] == 100        # b only
    assert out[28:].max() == 0 and out[:, :4][:, 0].max() == 200
    with pytest.raises(ValueError):
        render(glyphs, corner + 5, 32)                    # past the edge


# --------------------------------------------------------- the task, with data

def test_glyphs_inside_canvas_every_frame(mnist):
    task = BouncingDigits("mnist", "train", batch_size=8, canvas=40, digits=3, frames=30,
                          speed=0.3)
    for i in range(3):
        c = corners(task.trajectories(i), 40)
        assert c.shape == (30, 8, 3, 2)
        assert c.min() >= 0 and c.max() <= 40 - 28
        # the rendered ink equals the ink of the glyphs pasted at those corners
        x = task.batch(i).x.reshape(30, 8, 40, 40)
        glyphs = task.pool[task.glyph_indices(i)]
        assert np.array_equal(x, render(glyphs, c, 40).astype(np.float32) / 255)


def test_batch_shape_mask_score_identity(mnist):
    task = BouncingDigits("mnist", "train", batch_size=4, canvas=32, digits=1, frames=6)
    x, mask, score = task.batch(0)
    assert x.shape == (6, 4, 1024) and x.dtype == np.float32 and task.x_dim == 1024
    assert task.kind == "binary"
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
    assert mask.shape == (6, 4, 1) and mask.min() == 1
    assert score[0].max() == 0 and score[1:].min() == 1
    ident = task.identity()
    assert ident["task"] == "bouncing_digits" and ident["canvas"] == 32 and ident["seed"] == 0
    assert task.n_batches == 1000
    import json
    json.dumps(ident)


def test_determinism(mnist):
    a = BouncingDigits("mnist", "train", batch_size=4, canvas=32, digits=2, frames=5)
    b = BouncingDigits("mnist", "train", batch_size=4, canvas=32, digits=2, frames=5)
    assert np.array_equal(a.batch(7).x, b.batch(7).x)
    assert np.array_equal(a.batch(7).x, a.batch(7).x)
    assert not np.array_equal(a.batch(7).x, a.batch(8).x)
    c = BouncingDigits("mnist", "train", batch_size=4, canvas=32, digits=2, frames=5, seed=1)
    assert not np.array_equal(a.batch(7).x, c.batch(7).x)
    t = BouncingDigits("mnist", "test", batch_size=4, canvas=32, digits=2, frames=5)
    assert not np.allclose(a.trajectories(7), t.trajectories(7))


def test_test_split_is_exactly_1000_sequences(mnist):
    t = BouncingDigits("mnist", "test", batch_size=16, canvas=32, digits=1, frames=3)
    assert t.n_batches == 63 and t.n_sequences == 1000
    x, mask, score = t.batch(62)                          # 62 * 16 = 992: 8 real rows
    assert mask[:, :8].min() == 1 and mask[:, 8:].max() == 0 and score[:, 8:].max() == 0
    assert x[:, 8:].max() == 0
    assert sum(t.batch(i).mask[0].sum() for i in range(t.n_batches)) == 1000


def test_binarize_gives_only_0_and_1(mnist):
    task = BouncingDigits("mnist", "test", batch_size=4, canvas=32, digits=2, frames=4,
                          binarize=True)
    x = task.batch(0).x
    assert set(np.unique(x)) == {0.0, 1.0}
    grey = BouncingDigits("mnist", "test", batch_size=4, canvas=32, digits=2, frames=4).batch(0).x
    assert np.array_equal(x, (grey > 0.5).astype(np.float32))


def test_mnist_pools_are_the_two_mnist_splits(mnist):
    import ptncn.data.bouncing as bd
    tr, te = glyph_pool("mnist", "train"), glyph_pool("mnist", "test")
    assert tr.shape == (60000, 28, 28) and te.shape == (10000, 28, 28)
    arrays = bd._load("mnist", None)
    assert tr is arrays["x_train"] and te is arrays["x_test"]
    assert BouncingDigits("mnist", "test", canvas=32).pool is te


def test_notmnist_split_disjoint_and_balanced(notmnist):
    with np.load(find("notmnist_small.npz")) as f:
        x, y = f["x"], f["y"]
    train, test = notmnist_split(x, y)
    assert len(set(train) & set(test)) == 0
    assert len(test) == 1000 and np.array_equal(np.bincount(y[test]), [100] * 10)
    assert len(train) + len(test) <= 10000 and len(train) > 8500
    counts = np.bincount(y[train], minlength=10)
    assert counts.min() > 700 and np.sort(counts)[1] > 890  # only "I" loses many duplicates
    test_bytes = {x[i].tobytes() for i in test}
    assert not any(x[i].tobytes() in test_bytes for i in train)   # disjoint in content too
    # the pools the tasks use are exactly those images
    assert np.array_equal(glyph_pool("notmnist", "test"), x[test])
    assert np.array_equal(glyph_pool("notmnist", "train"), x[train])
    assert np.array_equal(notmnist_split(x, y)[1], test)   # deterministic


def test_shrink_glyphs_block_mean_by_hand():
    g = np.zeros((1, 28, 28), np.uint8)
    g[0, 0, 0] = 255                       # one lit pixel in the first 2x2 block
    g[0, 2:4, 2:4] = 200                   # a full block
    g[0, 4, 4:6] = 101                     # half a block: mean 50.5 -> 50 (round half even)
    s = shrink_glyphs(g, 14)
    assert s.shape == (1, 14, 14) and s.dtype == np.uint8
    assert s[0, 0, 0] == 64 and s[0, 1, 1] == 200 and s[0, 2, 2] == 50
    assert s.sum() == 64 + 200 + 50
    assert shrink_glyphs(g, 28) is g
    with pytest.raises(ValueError, match="divide 28"):
        shrink_glyphs(g, 10)


def test_small_glyphs_on_a_16x16_canvas(mnist):
    task = BouncingDigits("mnist", "train", batch_size=4, canvas=16, digits=1, frames=8,
                          speed=0.2, glyph=14)
    assert task.x_dim == 256 and task.pool.shape[1:] == (14, 14)
    assert task.identity()["glyph"] == 14
    assert "glyph" not in BouncingDigits("mnist", canvas=32, digits=1).identity()
    pos = task.trajectories(0)
    c = corners(pos, 16, 14)
    assert c.min() >= 0 and c.max() <= 2 and len(np.unique(c[..., 0])) > 1   # it moves
    x = task.batch(0).x.reshape(8, 4, 16, 16)
    glyphs = task.pool[task.glyph_indices(0)]
    assert np.array_equal(x, render(glyphs, c, 16).astype(np.float32) / 255)
    with pytest.raises(ValueError, match="glyph size"):
        BouncingDigits("mnist", canvas=16, glyph=12)
    with pytest.raises(ValueError, match="at least the glyph size"):
        BouncingDigits("mnist", canvas=12, glyph=14)


def test_bad_options():
    with pytest.raises(ValueError):
        BouncingDigits("mnist", canvas=20)
    with pytest.raises(ValueError):
        BouncingDigits("mnist", speed=1.5)
    with pytest.raises(ValueError):
        glyph_pool("fashion", "train")
    with pytest.raises(ValueError):
        glyph_pool("mnist", "valid")


# ------------------------------------------------------------------ baselines

def test_frame_metrics_by_hand():
    x = np.array([[[1.0, 0.0]], [[1.0, 0.0]]], np.float32)        # (T=2, B=1, P=2)
    pred = np.full_like(x, 0.5)
    score = np.array([[[0.0]], [[1.0]]], np.float32)
    bce, se, n = frame_metrics(pred, x, score)
    assert n == 1 and bce == pytest.approx(2 * np.log(2)) and se == pytest.approx(0.5)
    bce, _, _ = frame_metrics(x, x, score)                          # clipped at 1e-7
    assert 0 < bce < 1e-5


def test_trivial_predictors(mnist):
    kw = dict(batch_size=16, canvas=32, digits=1, frames=10)
    test = BouncingDigits("mnist", "test", n_batches=4, **kw)
    train = BouncingDigits("mnist", "train", **kw)
    copy = copy_last_frame_bce(test)
    mean = mean_frame_bce(test, train, train_batches=8)
    half = constant_bce(test, 0.5)
    for r in (copy, mean, half):
        assert np.isfinite(r["bce"]) and r["bce"] > 0 and np.isfinite(r["mse"]) and r["mse"] > 0
        assert r["frames"] == 4 * 16 * 9
    assert mean["bce"] < half["bce"]
    assert half["bce"] == pytest.approx(1024 * np.log(2))


# ----------------------------------------------------------------- bit recall

def test_bitrecall_layout_and_scoring():
    task = BitRecall(n_bits=5, batch_size=7, seed=2)
    x, mask, score = task.batch(3)
    n = 5
    assert x.shape == (2 * n + 1, 7, 3) and task.x_dim == 3 and task.kind == "binary"
    assert mask.min() == 1
    assert np.array_equal(score[..., 0].sum(0), np.full(7, n))       # n scored steps each
    assert score[:n + 1].max() == 0 and score[n + 1:].min() == 1     # all in the recall phase
    assert np.array_equal(x[n + 1:, :, 0], x[:n, :, 0])              # recalled = read
    assert np.array_equal(x[:n, :, 0].T, task.bits(3))
    assert (x[:n, :, 1] == 1).all() and (x[:n, :, 2] == 0).all()
    assert (x[n] == [0, 1, 1]).all() and (x[n + 1:, :, 1:] == [0, 1]).all()
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert np.array_equal(task.batch(3).x, BitRecall(n_bits=5, batch_size=7, seed=2).batch(3).x)
    assert not np.array_equal(task.batch(3).x, task.batch(4).x)
    assert task.identity()["n_bits"] == 5


def test_bit_accuracy():
    task = BitRecall(n_bits=8, batch_size=64)
    x, _, score = task.batch(0)
    assert bit_accuracy(x, x, score) == 1.0
    assert bit_accuracy(1 - x, x, score) == 0.0
    flags_wrong = x.copy()
    flags_wrong[..., 1:] = 1 - flags_wrong[..., 1:]
    assert bit_accuracy(flags_wrong, x, score) == 1.0                # flags do not count
    accs = [bit_accuracy(np.full_like(x, 0.5), *task.batch(i)[::2]) for i in range(20)]
    assert abs(np.mean(accs) - 0.5) < 0.03                           # 0.5 reads as 0
