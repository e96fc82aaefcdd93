"""Saving and loading a model: exact round trip, clear errors for bad files."""

import json
import zipfile

import numpy as np
import pytest

from ptncn import PTNCN, FormatVersionError, ModelFileError, load

F32 = np.float32


def _train(model, steps, seed=0, batch=3):
    rng = np.random.default_rng(seed)
    X = model.config.x_dim
    for _ in range(steps):
        model.step(np.eye(X, dtype=F32)[rng.integers(0, X, batch)])


@pytest.mark.parametrize("opt", ["sgd", "nesterov", "adam", "rmsprop"])
def test_round_trip_is_exact_and_training_continues_identically(tmp_path, opt):
    a = PTNCN(6, (5, 4), act="stochastic_binary", optimizer=opt, lr=0.05, seed=9)
    _train(a, 4)
    path = tmp_path / "m.npz"
    a.save(path)
    b = load(path)
    assert b.config == a.config
    assert b.optimizer.hyperparams() == a.optimizer.hyperparams()
    assert b.optimizer.t == a.optimizer.t and b.steps_taken == a.steps_taken
    for k in a.params:
        assert b.params[k].dtype == np.float32
        np.testing.assert_array_equal(a.params[k], b.params[k])
    for slot, d in a.optimizer.slots.items():
        assert set(d) == set(b.optimizer.slots[slot])
        for k in d:
            np.testing.assert_array_equal(d[k], b.optimizer.slots[slot][k])
    # same future: same data, same stochastic draws, same updates
    a.reset(3)
    b.reset(3)
    _train(a, 5, seed=1)
    _train(b, 5, seed=1)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_three_layer_and_options_round_trip(tmp_path):
    a = PTNCN(4, (3, 3, 2), zeta=0.0, K=2, temporal_error_rule=True, clip=0.5, out="sigmoid",
              optimizer="momentum", momentum=0.5, weight_decay=1e-3, max_norm=2.0, seed=1)
    a.save(tmp_path / "m.npz")
    b = PTNCN.load(tmp_path / "m.npz")
    assert b.config == a.config and "U1" not in b.params
    assert b.optimizer.hyperparams() == a.optimizer.hyperparams()


def _rewrite_meta(src, dst, **changes):
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__meta__"]))
    meta.update(changes)
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)


def test_other_format_version_is_refused(tmp_path):
    PTNCN(4, 3, seed=0).save(tmp_path / "m.npz")
    _rewrite_meta(tmp_path / "m.npz", tmp_path / "v2.npz", version=99)
    with pytest.raises(FormatVersionError, match="version 99"):
        load(tmp_path / "v2.npz")


def test_foreign_file_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a ptncn model"):
        load(tmp_path / "other.npz")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupt_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "m.npz"
    PTNCN(4, (30, 30), seed=0).save(path)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = bytearray(b"not a zip file at all" * 10)
    else:   # flip bytes inside a stored parameter: the zip CRC catches it
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("param/V1.npy")
        start = info.header_offset + 30 + len(info.filename) + 200
        for i in range(start, start + 8):
            raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="corrupt"):
        load(path)


def test_failed_save_keeps_the_earlier_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    m = PTNCN(4, 3, seed=0)
    m.save(path)
    good = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_user_callable_needs_override_on_load(tmp_path):
    def clipped(h):
        return np.clip(h, -1, 1)
    m = PTNCN(4, 3, act=clipped, seed=0)
    m.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="act=function"):
        load(tmp_path / "m.npz")
    b = load(tmp_path / "m.npz", act=clipped)
    np.testing.assert_array_equal(b.params["V1"], m.params["V1"])
    assert b.config.act is clipped


def test_version_1_files_load_their_parameters(tmp_path):
    """A model file of format version 1 (no learner name, no engine, no persistent arrays)
    still loads; a version-1 checkpoint's sequence state is refused, not guessed."""
    a = PTNCN(6, (5, 4), seed=2)
    _train(a, 3)
    a.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__meta__"]))
    for key in ("learner", "extra_arrays"):
        meta.pop(key)
    meta["config"].pop("engine")
    meta["version"] = 1
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "v1.npz", **arrays)
    b = load(tmp_path / "v1.npz")
    assert b.config == a.config and b.steps_taken == a.steps_taken
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    meta["state_t"] = 3
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "v1ckpt.npz", **arrays)
    with pytest.raises(ModelFileError, match="version 1"):
        load(tmp_path / "v1ckpt.npz")
