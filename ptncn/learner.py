"""The one interface every learner implements (P-TNCN, its spiking twin, each baseline).

The simulation loop, the recorder, the metrics and the CLI only talk to this
interface, so they never special-case a model:

* ``reset(batch)``          start new sequences for ``batch`` rows (state to zero)
* ``step(x, mask, learn)``  advance one time step; returns the prediction made
                            *before* seeing ``x`` (e.g. P-TNCN's ``x_mu``)
* ``quantities``            the named per-step arrays of the last step
* ``recordable``            every name ``quantity()`` accepts
* ``quantity_shape(name, batch)``, ``describe(name)``  shapes and meanings, for recorders
* ``params``                dict of named parameter arrays (assignable)
* ``save(path)`` / ``load(path)``
* ``end_sequence(learn)``   called after the last step of every batch of sequences
                            (BPTT-style learners update here; others ignore it)

Model files are ``.npz`` archives with a JSON ``__meta__`` record naming the
format and the learner's class; :func:`write_model_file` / :func:`read_model_file`
do the atomic write and the checked read, and :func:`load_learner` opens any
learner's file by dispatching on the recorded class name (:data:`LEARNER_CLASSES`).
"""

from __future__ import annotations

import abc
import importlib
import json
import os
import tempfile
import zipfile
from typing import Mapping

import numpy as np

from .errors import FormatVersionError, ModelFileError

FORMAT_NAME = "ptncn-model"

#: class name recorded in a model file -> (module, class) that reads it
LEARNER_CLASSES = {
    "PTNCN": ("ptncn.ptncn", "PTNCN"),
    "RTRL": ("ptncn.baselines.rtrl", "RTRL"),
    "UORO": ("ptncn.baselines.uoro", "UORO"),
    "NoBackTrack": ("ptncn.baselines.nobacktrack", "NoBackTrack"),
    "TBPTT": ("ptncn.baselines.bptt", "TBPTT"),
    "BPTT": ("ptncn.baselines.bptt", "BPTT"),
    "ESN": ("ptncn.baselines.esn", "ESN"),
    "SpikingPTNCN": ("ptncn.spiking", "SpikingPTNCN"),
}


def write_model_file(path, meta: dict, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``meta`` (JSON, must hold "format", "version", "class") and ``arrays`` to
    ``path`` (.npz), via a temporary file renamed over the target: an error never
    leaves a half-written file or destroys an earlier save."""
    path = os.fspath(path)
    out = {"__meta__": np.array(json.dumps(meta))}
    out.update(arrays)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ptncn-", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **out)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_model_file(path, version: int | None = None) -> tuple[dict, dict]:
    """Read a file written by :func:`write_model_file`; returns ``(meta, arrays)``.

    Raises :class:`ModelFileError` for a foreign, truncated or corrupt file and
    :class:`FormatVersionError` when ``version`` is given and differs.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "__meta__" not in f.files:
                raise ModelFileError(f"{path}: not a ptncn model file (no __meta__ record)")
            meta = json.loads(str(f["__meta__"]))
            if meta.get("format") != FORMAT_NAME:
                raise ModelFileError(f"{path}: not a ptncn model file "
                                     f"(format {meta.get('format')!r})")
            if version is not None and meta.get("version") != version:
                raise FormatVersionError(
                    f"{path}: model file format version {meta.get('version')!r}, but this "
                    f"ptncn reads version {version}")
            arrays = {k: f[k] for k in f.files if k != "__meta__"}
    except (ModelFileError, FormatVersionError, FileNotFoundError):
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError,
            json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated model file ({exc})") from None
    return meta, arrays


def check_step_input(x, mask, x_dim: int, current_batch: int | None, dtype=np.float32):
    """Validate one step's input for any learner; returns ``(x, m)`` as contiguous
    ``dtype`` arrays, ``x`` (B, x_dim) and ``m`` (B, 1) of 0/1 (default: all ones).

    Raises one ``ValueError`` naming the problem: dtype, shape, NaN/inf, a mask
    that is not 0/1, or a batch size different from ``current_batch`` (the rows of
    the sequences in progress; ``None`` when none are).
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise ValueError(f"x has dtype {x.dtype}; expected real numbers (float or int)")
    if x.ndim != 2 or x.shape[1] != x_dim:
        raise ValueError(f"x has shape {x.shape}; expected (batch, {x_dim})")
    x = np.ascontiguousarray(x, dtype=dtype)
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    B = x.shape[0]
    if mask is None:
        m = np.ones((B, 1), dtype)
    else:
        m = np.asarray(mask)
        if m.dtype.kind not in "fiub":
            raise ValueError(f"mask has dtype {m.dtype}; expected 0/1 numbers or booleans")
        if m.shape not in ((B,), (B, 1)):
            raise ValueError(f"mask has shape {m.shape}; expected ({B}, 1) or ({B},)")
        m = m.reshape(B, 1).astype(dtype)
        if not ((m == 0.0) | (m == 1.0)).all():
            raise ValueError("mask must contain only 0 and 1 (NaN and other values refused)")
    if current_batch is not None and current_batch != B:
        raise ValueError(f"x has batch {B} but the current sequences have batch "
                         f"{current_batch}; call reset({B}) to start new sequences")
    return x, m


def pack_params(params: Mapping[str, np.ndarray], optimizer) -> dict[str, np.ndarray]:
    """Model-file arrays of the parameters (``param/<name>``) and of the optimizer's
    slots (``opt/<slot>/<name>``)."""
    arrays = {f"param/{k}": v for k, v in params.items()}
    for slot, d in optimizer.state_dict()["slots"].items():
        for k, v in d.items():
            arrays[f"opt/{slot}/{k}"] = v
    return arrays


def unpack_params(path, arrays: Mapping[str, np.ndarray], params, optimizer, t: int) -> None:
    """Inverse of :func:`pack_params`: fill ``params`` and ``optimizer`` (step count ``t``)
    from a model file's arrays; a missing parameter is a :class:`ModelFileError`."""
    for k in params:
        key = f"param/{k}"
        if key not in arrays:
            raise ModelFileError(f"{os.fspath(path)}: parameter {k!r} missing")
        params[k] = arrays[key]
    slots: dict[str, dict] = {}
    for key, v in arrays.items():
        if key.startswith("opt/"):
            _, slot, name = key.split("/", 2)
            slots.setdefault(slot, {})[name] = v
    optimizer.load_state_dict({"t": t, "slots": slots})


def learner_class(class_name: str):
    """The learner class registered under ``class_name`` (imported lazily)."""
    if class_name not in LEARNER_CLASSES:
        raise ModelFileError(f"unknown learner class {class_name!r}; known: "
                             f"{', '.join(LEARNER_CLASSES)}")
    mod, cls = LEARNER_CLASSES[class_name]
    return getattr(importlib.import_module(mod), cls)


def load_learner(path, **kw):
    """Load any learner's model file (P-TNCN, a baseline, the spiking model)."""
    meta, _ = read_model_file(path)
    return learner_class(meta.get("class", "PTNCN")).load(path, **kw)


class ParamDict(dict):
    """A dict of named float32 parameter arrays with fixed names and shapes.

    Assigning ``params["W1"] = a`` checks the name, the shape and finiteness and
    copies ``a`` (cast to float32) into the parameter's storage, so a model
    never aliases a caller's array.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        super().__init__()
        for k, v in arrays.items():
            dict.__setitem__(self, k, v)

    def __setitem__(self, key, value):
        if key not in self:
            raise KeyError(f"unknown parameter {key!r}; parameters: {', '.join(self)}")
        target = dict.__getitem__(self, key)
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"parameter {key!r}: dtype {arr.dtype} is not a real number type")
        if arr.shape != target.shape:
            raise ValueError(f"parameter {key!r}: shape {arr.shape} != expected {target.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"parameter {key!r}: contains NaN or inf")
        np.copyto(target, arr, casting="unsafe")

    def update(self, other=(), **kw):  # route through __setitem__'s checks
        for k, v in dict(other, **kw).items():
            self[k] = v

    def __delitem__(self, key):
        raise TypeError("parameters cannot be deleted")

    def copy(self) -> dict:
        """A plain dict of copies of every parameter."""
        return {k: v.copy() for k, v in self.items()}


class Learner(abc.ABC):
    """Abstract base of every learner."""

    params: ParamDict

    @abc.abstractmethod
    def reset(self, batch: int) -> None:
        """Start new sequences: zero the carried state for ``batch`` rows."""

    @abc.abstractmethod
    def step(self, x, mask=None, learn: bool = True) -> np.ndarray:
        """Advance one time step and return the prediction of ``x``."""

    @property
    @abc.abstractmethod
    def recordable(self) -> tuple[str, ...]:
        """All names accepted by :meth:`quantity`."""

    def quantity(self, name: str) -> np.ndarray:
        """The named array of the last step: a per-step quantity (``self.quantities``),
        a parameter, or ``d<param>``, the last applied update (``self.updates``; zeros
        when the last step made none)."""
        q = getattr(self, "quantities", None) or {}
        if name in q:
            return q[name]
        if name in self.params:
            return self.params[name]
        if name in self.recordable and name.startswith("d") and name[1:] in self.params:
            updates = getattr(self, "updates", None) or {}
            if name in updates:
                return updates[name]
            return np.zeros_like(self.params[name[1:]])
        if name in self.recordable:
            raise KeyError(f"{name!r} has no value yet: take a step first")
        raise KeyError(f"unknown quantity {name!r}; recordable: {', '.join(self.recordable)}")

    @abc.abstractmethod
    def quantity_shape(self, name: str, batch: int) -> tuple[int, ...]:
        """Shape of ``quantity(name)`` for a batch of ``batch`` rows (known before stepping)."""

    def quantity_norm(self, name: str) -> float:
        """Frobenius norm of ``quantity(name)`` (learners may compute it without forming it)."""
        a = self.quantity(name)
        return float(np.sqrt(np.vdot(a, a)))

    def describe(self, name: str) -> tuple[str, str]:
        """(meaning, units) of a recordable name, written into recordings."""
        return (name, "a.u.")

    def end_sequence(self, learn: bool = True) -> None:
        """Called after the last step of each batch of sequences (no-op by default;
        whole-sequence learners such as BPTT apply their update here)."""

    @abc.abstractmethod
    def save(self, path) -> None:
        """Write the learner (config, params, optimizer state) to ``path``."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path):
        """Read a learner written by :meth:`save`."""
