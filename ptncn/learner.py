"""The learner contract: one interface that P-TNCN, its spiking twin and every baseline
implement, and the base class that implements everything around their equations.

A learner is written as four small pieces (see docs/architecture.md)::

    class MyLearner(Learner):
        name = "my"                            # the registry key ([model] learner = "my")
        Config = MyConfig                      # a LearnerConfig dataclass, x_dim and seed first
        State = MyState                        # dataclass of what a sequence carries
        def _build(self) -> dict               # parameter arrays (from self.config, self.rng)
        def quantity_table(self) -> dict       # name -> Quantity(shape(batch), meaning, unit)
        def init_state(self, batch) -> State   # the state at the start of a sequence
        def _step(self, params, state, x, m, learn) -> (state, quantities, updates)

``_step`` is pure: it reads ``params``, ``state`` and the input (and may draw from
``self.rng`` and read ``self.config`` / ``self.extra``) and returns the next state, the
step's named quantities and an :class:`Updates` (parameter name -> descent direction);
it assigns nothing on the learner.  :meth:`Learner.step` does the rest, identically for
every learner: validate the input -> ``_step`` -> check every quantity and update for
NaN/inf (``DivergenceError``; nothing of the step is applied and the RNG is rewound) ->
apply the updates with the optimizer (``_apply``) -> store state, quantities, updates.

From the quantity table the base class derives the recordable names (the table, the
parameters, ``d<param>`` for the updated parameters and ``norm_<name>`` for each of
those), their shapes and meanings; the Recorder only asks for them.  One save/load
template writes config, parameters, optimizer slots, RNG, the persistent arrays
``extra`` and (for checkpoints) the carried state, encoded generically from the state
dataclass.  :data:`REGISTRY` names every learner; :func:`load_learner` opens any
learner's model file.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import json
import math
import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any, Callable, ClassVar

import numpy as np

from .errors import (DivergenceError, FormatVersionError, ModelFileError, NonFiniteStepError,
                     ResourceLimitError)
from .optim import Optimizer, make_optimizer, resolve_optimizer
from .resources import check_memory

FORMAT_NAME = "ptncn-model"
FORMAT_VERSION = 2
#: versions :meth:`Learner.load` reads (version 1: parameters and optimizer only)
READABLE_VERSIONS = (1, 2)

#: ``[model] learner = name`` -> "module:Class" (imported on first use) or the class
REGISTRY: dict[str, str | type] = {
    "ptncn": "ptncn.ptncn:PTNCN",
    "rtrl": "ptncn.baselines.rtrl:RTRL",
    "uoro": "ptncn.baselines.uoro:UORO",
    "nobacktrack": "ptncn.baselines.nobacktrack:NoBackTrack",
    "tbptt": "ptncn.baselines.bptt:TBPTT",
    "bptt": "ptncn.baselines.bptt:BPTT",
    "sab": "ptncn.baselines.sab:SAB",
    "esn": "ptncn.baselines.esn:ESN",
    "window": "ptncn.baselines.window:Window",
    "spiking_ptncn": "ptncn.spiking.model:SpikingPTNCN",
    "learned_neuron": "ptncn.learned_neuron:LearnedNeuron",
}


def register(name: str, cls: type | str) -> None:
    """Make a learner available as ``[model] learner = name`` (``cls``: the class or
    "module:Class").  Registering gives it the harness, the CLI, recording, save/load
    by :func:`load_learner` and the contract tests."""
    REGISTRY[name] = cls


def _class_name(spec) -> str:
    return spec.__name__ if isinstance(spec, type) else spec.rsplit(":", 1)[1]


def learner_class(name: str):
    """The learner class registered under ``name`` (a registry key, or the class name
    recorded in a model file), imported lazily."""
    spec = REGISTRY.get(name) or next(
        (s for s in REGISTRY.values() if _class_name(s) == name), None)
    if spec is None:
        raise ModelFileError(f"unknown learner {name!r}; known: {', '.join(REGISTRY)}")
    if isinstance(spec, type):
        return spec
    mod, cls = spec.split(":")
    return getattr(importlib.import_module(mod), cls)


def load_learner(path, **kw):
    """Load any learner's model file (P-TNCN, a baseline, the spiking model)."""
    meta, _ = read_model_file(path)
    return learner_class(meta.get("learner") or meta.get("class", "PTNCN")).load(path, **kw)


# ---------------------------------------------------------------------------
# model files
# ---------------------------------------------------------------------------
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


def read_model_file(path, versions=None) -> tuple[dict, dict]:
    """Read a file written by :func:`write_model_file`; returns ``(meta, arrays)``.

    Raises :class:`ModelFileError` for a foreign, truncated or corrupt file and
    :class:`FormatVersionError` when ``versions`` is given and the file's is not in it.
    """
    path = os.fspath(path)
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a ptncn model file (not an .npz archive: "
                             "corrupt, truncated or another format)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "__meta__" not in f.files:
                raise ModelFileError(f"{path}: not a ptncn model file (no __meta__ record)")
            _check_headers(path, f.zip)
            meta = json.loads(str(f["__meta__"]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
                raise ModelFileError(f"{path}: not a ptncn model file (format "
                                     f"{meta.get('format') if isinstance(meta, dict) else meta!r})")
            if versions is not None and meta.get("version") not in versions:
                raise FormatVersionError(
                    f"{path}: model file format version {meta.get('version')!r}, but this "
                    f"ptncn reads version(s) {', '.join(map(str, versions))}")
            arrays = {k: f[k] for k in f.files if k != "__meta__"}
    except (ModelFileError, FormatVersionError, FileNotFoundError, ResourceLimitError):
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError,
            json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated model file ({exc})") from None
    return meta, arrays


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def _check_headers(path: str, archive: zipfile.ZipFile) -> None:
    """Read every array's .npy header before any data: an array of Python objects, or a
    shape larger than the bytes its member holds (a tampered or truncated file), is a
    :class:`ModelFileError`; arrays that would not fit in memory are refused
    (:class:`~ptncn.errors.ResourceLimitError`) before anything is allocated."""
    total = 0
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        with archive.open(info) as member:
            read = _NPY_HEADERS.get(np.lib.format.read_magic(member))
            if read is None:
                raise ModelFileError(f"{path}: {name}: unsupported .npy format version")
            shape, _, dtype = read(member)
            header = member.tell()
        if dtype.hasobject:
            raise ModelFileError(f"{path}: not a ptncn model file ({name} holds Python "
                                 "objects, which ptncn never loads)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size - header:
            raise ModelFileError(f"{path}: {name} claims shape {shape} {dtype} ({nbytes:,} "
                                 f"bytes) but holds {info.file_size - header:,} bytes "
                                 "(truncated or tampered model file)")
        total += nbytes
    check_memory(f"loading {path}", {"arrays": total})


def pack_params(params: Mapping[str, np.ndarray], optimizer) -> dict[str, np.ndarray]:
    """Model-file arrays of the parameters (``param/<name>``) and of the optimizer's
    slots (``opt/<slot>/<name>``)."""
    arrays = {f"param/{k}": v for k, v in params.items()}
    if optimizer is not None:
        for slot, d in optimizer.state_dict()["slots"].items():
            for k, v in d.items():
                arrays[f"opt/{slot}/{k}"] = v
    return arrays


def unpack_params(path, arrays: Mapping[str, np.ndarray], params, optimizer, t: int) -> None:
    """Inverse of :func:`pack_params`: fill ``params`` and ``optimizer`` (step count ``t``)
    from a model file's arrays.  A missing, misshapen or non-finite parameter and a bad
    optimizer slot (see :func:`read_slots`) are a :class:`ModelFileError`.  Optimizer
    slots keep the parameters' dtype."""
    path = os.fspath(path)
    for k in params:
        key = f"param/{k}"
        if key not in arrays:
            raise ModelFileError(f"{path}: parameter {k!r} missing")
        try:
            params[k] = arrays[key]
        except ValueError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
    if optimizer is None:
        return
    slots = read_slots(path, arrays, params, optimizer)
    optimizer.load_state_dict({"t": t, "slots": slots})
    for s, d in slots.items():
        optimizer.slots[s].update(d)


def read_slots(path: str, arrays: Mapping[str, np.ndarray], params, optimizer) -> dict:
    """The optimizer slots among a model file's arrays (``opt/<slot>/<param>``), each
    checked to be a slot of ``optimizer`` for a parameter in ``params``, with its shape,
    finite in its dtype (and >= 0 where the optimizer needs it)."""
    slots: dict[str, dict] = {}
    for key, v in arrays.items():
        if not key.startswith("opt/"):
            continue
        _, slot, name = (key.split("/", 2) + ["", ""])[:3]
        where = f"{path}: optimizer slot {slot!r} of parameter {name!r}"
        if slot not in optimizer.slot_names:
            known = ", ".join(optimizer.slot_names) or "none"
            raise ModelFileError(f"{where}: not a slot of {optimizer.name} (its slots: {known})")
        if name not in params:
            raise ModelFileError(f"{where}: no such parameter (parameters: "
                                 f"{', '.join(params)})")
        if v.dtype.kind not in "fiu" or v.shape != params[name].shape:
            raise ModelFileError(f"{where}: shape {v.shape} and dtype {v.dtype}, expected "
                                 f"shape {params[name].shape} of real numbers")
        v = np.array(v, dtype=params[name].dtype)
        if not np.isfinite(v).all():
            raise ModelFileError(f"{where}: contains NaN or inf")
        if slot in optimizer.nonnegative_slots and (v < 0).any():
            raise ModelFileError(f"{where}: contains negative values (must be >= 0)")
        slots.setdefault(slot, {})[name] = v
    return slots


# ---------------------------------------------------------------------------
# carried state <-> file, generically
# ---------------------------------------------------------------------------
def encode_tree(obj, prefix: str, arrays: dict) -> Any:
    """A JSON description of ``obj`` (arrays, dataclasses, lists, dicts, scalars, None);
    every array goes into ``arrays`` under a key starting with ``prefix``."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"@array": prefix}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"@type": type(obj).__name__,
                "fields": {f.name: encode_tree(getattr(obj, f.name), f"{prefix}/{f.name}",
                                               arrays)
                           for f in dataclasses.fields(obj)}}
    if isinstance(obj, (list, tuple)):
        return {"@list": [encode_tree(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, dict):
        return {"@dict": {str(k): encode_tree(v, f"{prefix}/{k}", arrays)
                          for k, v in obj.items()}}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"@value": obj}
    raise TypeError(f"cannot store a {type(obj).__name__} in a model file ({prefix})")


def decode_tree(tree, arrays: Mapping[str, np.ndarray], types: Mapping[str, type]):
    """Inverse of :func:`encode_tree`; dataclasses are looked up by name in ``types``."""
    if "@array" in tree:
        return np.array(arrays[tree["@array"]])
    if "@type" in tree:
        cls = types.get(tree["@type"])
        if cls is None:
            raise ModelFileError(f"state type {tree['@type']!r} is not one of this "
                                 f"learner's ({', '.join(types)})")
        return cls(**{k: decode_tree(v, arrays, types) for k, v in tree["fields"].items()})
    if "@list" in tree:
        return [decode_tree(v, arrays, types) for v in tree["@list"]]
    if "@dict" in tree:
        return {k: decode_tree(v, arrays, types) for k, v in tree["@dict"].items()}
    return tree["@value"]


def check_extra(path, built: Mapping, loaded: Mapping) -> Mapping:
    """``loaded`` (a model file's persistent arrays), checked to hold every array the
    learner ``built``, with its shape: a file saved with other options is refused
    instead of continuing from fresh statistics."""
    for k, v in built.items():
        if k not in loaded:
            raise ModelFileError(f"{path}: persistent array {k!r} missing "
                                 "(saved with other options?)")
        if np.shape(loaded[k]) != np.shape(v):
            raise ModelFileError(f"{path}: persistent array {k!r} has shape "
                                 f"{np.shape(loaded[k])}, expected {np.shape(v)}")
    return loaded


# ---------------------------------------------------------------------------
# step input
# ---------------------------------------------------------------------------
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


def first_nonfinite(arrays: Mapping[str, np.ndarray], names=None) -> str | None:
    """The first name (in ``names`` order, default all) whose array holds NaN or inf."""
    for name in (arrays if names is None else names):
        a = np.asarray(arrays[name])
        # the sum is a cheap screen; confirm element-wise (a sum can overflow)
        if not np.isfinite(a.sum()) and not np.isfinite(a).all():
            return name
    return None


# ---------------------------------------------------------------------------
# the pieces a learner declares
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Quantity:
    """A recordable per-step quantity: ``shape(batch)``, its meaning and its unit."""

    shape: Callable[[int], tuple[int, ...]]
    meaning: str
    unit: str = "a.u."


def rows(n: int) -> Callable[[int], tuple[int, ...]]:
    """The shape function of a (batch, n) quantity."""
    return lambda batch: (batch, n)


class Updates(dict):
    """One step's update directions, parameter name -> array (what the optimizer gets).

    ``extra`` holds new values of the learner's persistent arrays (``Learner.extra``),
    committed together with the update.  An empty ``Updates`` means no update.
    """

    def __init__(self, *args, extra: Mapping | None = None, **kw):
        super().__init__(*args, **kw)
        self.extra = dict(extra or {})

    def norm(self, name: str) -> float:
        a = self[name]
        return float(np.sqrt(np.vdot(a, a)))

    def first_nonfinite(self) -> str | None:
        """Name of the first update (or extra array) holding NaN or inf."""
        return first_nonfinite(self) or first_nonfinite(self.extra)

    def scratch(self) -> dict[str, np.ndarray]:
        """Copies the optimizer may overwrite (``Optimizer.step`` uses grads as scratch)."""
        return {k: v.copy() for k, v in self.items()}


def check_positive_ints(cfg, *names) -> None:
    """Each named field of ``cfg`` must be an integer >= 1 (stored as int)."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
        setattr(cfg, name, int(v))


def int_list(name: str, values) -> tuple[int, ...]:
    """``values`` (a list or tuple) as a tuple of ints; a non-integer (2.5, "3", True) is
    refused, naming ``name``."""
    out = tuple(values) if isinstance(values, (list, tuple)) else None
    if out is None or any(isinstance(v, (bool, np.bool_)) or not isinstance(
            v, (int, np.integer)) for v in out):
        raise ValueError(f"{name} must be a list of integers, got {values!r}")
    return tuple(int(v) for v in out)


def check_finite_numbers(cfg, *names) -> None:
    """Each named field of ``cfg`` must be a finite real number (stored as float)."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not np.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
        setattr(cfg, name, float(v))


class LearnerConfig:
    """Mixin of every learner's config dataclass: dict round trip with checked keys.
    ``label`` names the learner in error messages."""

    label: ClassVar[str] = ""
    #: old key -> current key: still accepted (with a FutureWarning), e.g. configs and
    #: model files written before a rename
    renamed: ClassVar[dict] = {}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def upgrade(cls, d: Mapping) -> dict:
        """``d`` with renamed keys under their current names (a FutureWarning for each);
        giving both the old and the new name is an error."""
        d = dict(d)
        for old, new in cls.renamed.items():
            if old in d:
                if new in d:
                    raise ValueError(f"{cls.label or cls.__name__}: {old!r} is the old name "
                                     f"of {new!r}; give only {new!r}")
                warnings.warn(f"{cls.label or cls.__name__}: {old!r} is now called {new!r}; "
                              f"the old name still works but will be removed", FutureWarning,
                              stacklevel=3)
                d[new] = d.pop(old)
        return d

    @classmethod
    def from_dict(cls, d: Mapping):
        d = cls.upgrade(d)
        known = cls.field_names()
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.label or cls.__name__} config key(s) {unknown}; "
                             f"known: {sorted(known)}")
        return cls(**d)


class ParamDict(dict):
    """A dict of named float parameter arrays with fixed names and shapes.

    Assigning ``params["W1"] = a`` checks the name, the shape and finiteness and
    copies ``a`` (cast to the parameter's dtype) into the parameter's storage, so a
    model never aliases a caller's array.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], on_change=None):
        super().__init__()
        for k, v in arrays.items():
            dict.__setitem__(self, k, v)
        self.on_change = on_change      # called after an assignment (e.g. optimizer bounds)

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
        if self.on_change is not None:
            self.on_change()

    def update(self, other=(), **kw):  # route through __setitem__'s checks
        for k, v in dict(other, **kw).items():
            self[k] = v

    def __delitem__(self, key):
        raise TypeError("parameters cannot be deleted")

    def copy(self) -> dict:
        """A plain dict of copies of every parameter."""
        return {k: v.copy() for k, v in self.items()}


# ---------------------------------------------------------------------------
# the base class
# ---------------------------------------------------------------------------
class Learner(abc.ABC):
    """Base of every learner: the interface callers use, written once.

    Attributes every learner has: ``config`` (its :class:`LearnerConfig` dataclass),
    ``params`` (:class:`ParamDict`), ``optimizer`` (an :class:`~ptncn.optim.Optimizer`,
    or None for learners that fit without one), ``state`` (the carried state of the
    current sequences, None before the first ``reset``), ``quantities`` (the last
    step's named arrays), ``updates`` (the last step's :class:`Updates`), ``extra``
    (persistent learning arrays other than parameters and optimizer slots),
    ``steps_taken`` (training steps: ``learn=False`` steps are not counted), ``rng``
    (numpy Generator), ``extra_meta`` (caller's JSON stored
    with a save, e.g. a checkpoint's position in the data).
    """

    #: registry key (``[model] learner = ...``)
    name: ClassVar[str] = ""
    #: the config dataclass (subclass of LearnerConfig; fields x_dim and seed)
    Config: ClassVar[type]
    #: the carried-state dataclass (with ``t``, the steps taken in the current sequences);
    #: ``state_types`` lists other dataclasses inside it
    State: ClassVar[type]
    state_types: ClassVar[tuple[type, ...]] = ()
    #: optimizer used when the constructor gets none: {"optimizer", "lr", "momentum"};
    #: None: the learner has no gradient optimizer (arguments accepted and ignored)
    default_optimizer: ClassVar[dict | None] = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}
    #: the config key that switches off an error-correction phase (P-TNCN's beta), or None
    correction_key: ClassVar[str | None] = None
    #: where the parameters are documented (for ``describe``)
    docs: ClassVar[str] = "docs/architecture.md"
    #: the meaning of ``d<param>`` (``describe``)
    update_meaning: ClassVar[str] = "update direction handed to the optimizer at this step"

    def __init__(self, x_dim: int, *, optimizer=None, lr: float | None = None,
                 momentum: float | None = None, weight_decay: float = 0.0,
                 max_norm: float = 0.0, optimizer_options: dict | None = None, **options):
        config = self.Config.from_dict({"x_dim": x_dim, **options})
        self._init(config, self.make_optimizer(optimizer, lr, momentum, weight_decay,
                                               max_norm, optimizer_options))

    @classmethod
    def make_optimizer(cls, optimizer=None, lr=None, momentum=None, weight_decay=0.0,
                       max_norm=0.0, options=None) -> Optimizer | None:
        d = cls.default_optimizer
        if d is None:
            return None
        return resolve_optimizer(d["optimizer"] if optimizer is None else optimizer,
                                 d["lr"] if lr is None else lr,
                                 d.get("momentum", 0.9) if momentum is None else momentum,
                                 weight_decay, max_norm, options)

    def _init(self, config, optimizer) -> None:
        self.config = config
        self.optimizer = optimizer
        self.rng = np.random.default_rng(config.seed)
        self.extra: dict[str, np.ndarray] = {}
        self._checked_batch: int | None = None
        n = sum(math.prod(s) for s in self.param_shapes().values())
        check_memory(f"a {type(self).__name__} of {n:,} parameters", self.memory_bytes(0))
        self.params = ParamDict(self._build(), on_change=self._params_assigned)
        self.state = None
        self.batch: int | None = None
        self.quantities: dict[str, np.ndarray] = {}
        self.updates: Mapping[str, np.ndarray] = Updates()
        self.steps_taken = 0
        self.extra_meta: dict = {}
        self._table = self.quantity_table()

    def _params_assigned(self) -> None:
        """A parameter was assigned from outside: the optimizer measures it again."""
        if self.optimizer is not None:
            self.optimizer.forget_bounds()

    # -- memory, estimated before allocating ------------------------------------------
    def param_shapes(self) -> Mapping[str, tuple[int, ...]]:
        """Names and shapes of the parameters :meth:`_build` makes, from ``self.config``
        alone (nothing allocated): what the memory check counts before building.  Every
        learner declares them; the default (none) leaves the parameters uncounted."""
        return {}

    def memory_bytes(self, batch: int = 0) -> dict[str, int]:
        """Estimated bytes of the parameters, the optimizer's slots, one step's updates
        and, for ``batch`` rows, the carried state and one step's quantities (each
        counted as the quantity table's arrays)."""
        item = self.dtype.itemsize
        n = item * sum(math.prod(s) for s in self.param_shapes().values())
        slots = 0 if self.optimizer is None else len(self.optimizer.slot_names)
        state = 2 * item * sum(math.prod(q.shape(batch)) for q in self._table.values()) \
            if batch else 0
        return {"params": n, "optimizer": slots * n, "updates": n, "state": state}

    def check_memory(self, batch: int) -> None:
        """Refuse (:class:`~ptncn.errors.ResourceLimitError`) a ``batch`` whose state would
        not fit in the memory available (checked once per batch size)."""
        if batch != self._checked_batch:
            check_memory(f"{type(self).__name__} state for batch {batch}",
                         {"state": self.memory_bytes(batch)["state"]})
            self._checked_batch = batch

    # -- what a learner writes ---------------------------------------------------------
    @abc.abstractmethod
    def _build(self) -> Mapping[str, np.ndarray]:
        """Set up from ``self.config`` (and ``self.rng``); return the parameter arrays
        (their storage: ``params[name]`` are these arrays).  May fill ``self.extra``."""

    @abc.abstractmethod
    def quantity_table(self) -> dict[str, Quantity]:
        """The per-step quantities, in causal order (divergence is named by the first)."""

    @abc.abstractmethod
    def init_state(self, batch: int):
        """The carried state at the start of ``batch`` new sequences."""

    @abc.abstractmethod
    def _step(self, params, state, x: np.ndarray, m: np.ndarray, learn: bool):
        """One time step, pure: returns ``(next state, quantities, Updates)``."""

    def _apply(self, updates: Updates) -> None:
        """Apply one step's updates to the parameters (default: one optimizer step)."""
        self.optimizer.step(self.params, updates.scratch())

    def end_sequence(self, learn: bool = True) -> None:
        """Called after the last step of each batch of sequences (no-op by default;
        whole-sequence learners such as BPTT apply their update here)."""

    def create_event_datasets(self, h5file) -> None:
        """Lay out event data (e.g. spike times) in a new recording; none by default."""

    def write_events(self, h5file) -> None:
        """Append the event data gathered since the last call (at every flush of a
        recording); none by default."""

    @property
    def trained_params(self) -> tuple[str, ...]:
        """Parameters that learning changes (each has a recordable ``d<name>``)."""
        return tuple(self.params)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def prediction(self) -> str:
        """The quantity ``step`` returns."""
        return "x_mu"

    # -- stepping ----------------------------------------------------------------------
    def reset(self, batch: int) -> None:
        """Start ``batch`` new sequences (the carried state from :meth:`init_state`)."""
        if isinstance(batch, bool) or int(batch) != batch or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        self.check_memory(int(batch))
        self.state = self.init_state(int(batch))
        self.batch = int(batch)
        self.quantities = {}
        self.updates = Updates()

    def step(self, x, mask=None, learn: bool = True) -> np.ndarray:
        """Advance one time step; learn unless ``learn=False``; return the prediction of
        ``x`` made before seeing it.  Bad input: ``ValueError``; NaN/inf anywhere in the
        step, the optimizer's update included: ``DivergenceError`` with parameters,
        optimizer slots, state and RNG as before the step."""
        x, m = check_step_input(x, mask, self.config.x_dim, self.batch, self.dtype)
        if self.state is None:
            self.reset(x.shape[0])
        rng_state = self.rng.bit_generator.state
        try:
            # overflow is reported as a DivergenceError naming where it shows, not as warnings
            with np.errstate(over="ignore", invalid="ignore"):
                state, q, updates = self._step(self.params, self.state, x, m, bool(learn))
            bad = first_nonfinite(q, [k for k in self._table if k in q and q[k] is not x])
            if bad is None and updates:
                bad = updates.first_nonfinite()
                bad = None if bad is None else f"d{bad}"
            if bad is not None:
                raise self.diverged(bad)
            self.commit(updates)
        except DivergenceError:
            self.rng.bit_generator.state = rng_state
            raise
        self.state, self.quantities = state, q
        self.steps_taken += bool(learn)
        return q[self.prediction]

    def commit(self, updates: Updates) -> None:
        """Apply ``updates`` (already checked) and keep them as the last step's.  An
        optimizer step that would leave a parameter or slot NaN/inf is undone by the
        optimizer and raised as the DivergenceError naming that parameter."""
        if updates:
            try:
                self._apply(updates)
            except NonFiniteStepError as exc:
                slot = "" if exc.slot is None else f", its optimizer slot {exc.slot!r}"
                raise self.diverged(exc.name, f"by the optimizer step{slot}, at "
                                    f"t={self.state.t} of the sequence") from None
        self.extra.update(updates.extra)
        self.updates = updates

    def diverged(self, what: str, where: str | None = None) -> DivergenceError:
        """The DivergenceError of the current step (``what``: the first non-finite name)."""
        return DivergenceError(self.steps_taken, what, where or f"t={self.state.t} of the sequence")

    # -- recordable names --------------------------------------------------------------
    @property
    def recordable(self) -> tuple[str, ...]:
        """Every name :meth:`quantity` accepts: the quantity table, the parameters, the
        updates ``d<param>`` and the Frobenius norm ``norm_<name>`` of each of those."""
        base = [*self._table, *self.params, *(f"d{k}" for k in self.trained_params)]
        return (*base, *(f"norm_{n}" for n in base))

    def _kind(self, name: str) -> str:
        if name in self._table:
            return "quantity"
        if name in self.params:
            return "param"
        if name.startswith("d") and name[1:] in self.trained_params:
            return "update"
        if name.startswith("norm_") and self._kind(name[5:]) != "unknown":
            return "norm"
        return "unknown"

    def _unknown(self, name: str) -> KeyError:
        return KeyError(f"unknown quantity {name!r}; recordable: {', '.join(self.recordable)}")

    def quantity(self, name: str) -> np.ndarray:
        """The named array of the last step: a per-step quantity, a parameter, ``d<param>``
        (the last applied update; zeros when the last step made none) or ``norm_<name>``."""
        kind = self._kind(name)
        if kind == "quantity":
            if name not in self.quantities:
                raise KeyError(f"{name!r} has no value yet: take a step first")
            return self.quantities[name]
        if kind == "param":
            return self.params[name]
        if kind == "update":
            u = self.updates.get(name[1:])
            return np.zeros_like(self.params[name[1:]]) if u is None else u
        if kind == "norm":
            return np.float32(self.quantity_norm(name[5:]))
        raise self._unknown(name)

    def quantity_norm(self, name: str) -> float:
        """Frobenius norm of ``quantity(name)`` (updates may compute it without forming it)."""
        if self._kind(name) == "update" and name[1:] in self.updates:
            return self.updates.norm(name[1:])
        a = self.quantity(name)
        return float(np.sqrt(np.vdot(a, a)))

    def quantity_shape(self, name: str, batch: int) -> tuple[int, ...]:
        """Shape of ``quantity(name)`` for ``batch`` rows (known before stepping)."""
        kind = self._kind(name)
        if kind == "quantity":
            return tuple(self._table[name].shape(batch))
        if kind == "param":
            return self.params[name].shape
        if kind == "update":
            return self.params[name[1:]].shape
        if kind == "norm":
            return ()
        raise self._unknown(name)

    def param_meaning(self, name: str) -> str:
        return f"parameter {name} (see {self.docs})"

    def describe(self, name: str) -> tuple[str, str]:
        """(meaning, unit) of a recordable name, written into recordings."""
        kind = self._kind(name)
        if kind == "quantity":
            q = self._table[name]
            return (q.meaning, q.unit)
        if kind == "param":
            return (self.param_meaning(name), "weight")
        if kind == "update":
            return (f"{self.update_meaning} for {name[1:]} (zero without an update)",
                    "weight / step")
        if kind == "norm":
            inner, unit = self.describe(name[5:])
            return (f"Frobenius norm of {name[5:]}: {inner}", unit)
        raise self._unknown(name)

    # -- persistence -------------------------------------------------------------------
    def config_dict(self) -> dict:
        """The config as JSON-able data (what the model file stores)."""
        return self.config.to_dict()

    def save(self, path, include_state: bool = False, extra_meta: dict | None = None) -> None:
        """Write config, params, optimizer state, RNG and ``extra`` arrays to ``path`` (.npz).

        ``include_state`` also stores the current sequences' carried state (a checkpoint
        taken mid-sequence resumes bitwise); ``extra_meta`` is stored as JSON and comes
        back as ``model.extra_meta``.  Written beside the target and renamed over it, so
        an error never leaves a half-written file or destroys an earlier save.
        """
        opt = None if self.optimizer is None else self.optimizer.state_dict()
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "class": type(self).__name__,
                "learner": self.name, "config": self.config_dict(),
                "optimizer": None if opt is None else opt["hyperparams"],
                "optimizer_t": 0 if opt is None else opt["t"],
                "steps_taken": self.steps_taken, "rng": self.rng.bit_generator.state}
        if extra_meta:
            meta["extra"] = extra_meta
        arrays = pack_params(self.params, self.optimizer)
        meta["extra_arrays"] = encode_tree(self.extra, "extra", arrays)
        if include_state and self.state is not None:
            meta["batch"] = self.batch
            meta["state"] = encode_tree(self.state, "state", arrays)
        write_model_file(path, meta, arrays)

    @classmethod
    def config_from_file(cls, path, meta: dict, overrides: dict):
        """The config of a model file with ``overrides`` applied (hook for older layouts)."""
        return cls.Config.from_dict({**meta["config"], **overrides})

    @classmethod
    def load(cls, path, **overrides):
        """Read a learner written by :meth:`save`; ``overrides`` change config entries."""
        path = os.fspath(path)
        meta, arrays = read_model_file(path, READABLE_VERSIONS)
        if meta.get("class") != cls.__name__:
            raise ModelFileError(f"{path}: holds a {meta.get('class')!r} model, not a "
                                 f"{cls.__name__!r}; use ptncn.learner.load_learner")
        if meta.get("version") == 1 and "state_t" in meta:
            raise ModelFileError(f"{path}: a checkpoint of an older ptncn (format version 1); "
                                 "its parameters load with ptncn.load, its sequence state "
                                 "cannot be resumed")
        config = cls.config_from_file(path, meta, overrides)
        hp = meta.get("optimizer")
        opt = None
        if hp is not None and cls.default_optimizer is not None:
            hp = dict(hp)
            opt = make_optimizer(hp.pop("name"), **hp)
        model = cls.__new__(cls)
        model._init(config, opt)
        unpack_params(path, arrays, model.params, opt, meta.get("optimizer_t", 0))
        model.rng.bit_generator.state = meta["rng"]
        model.steps_taken = int(meta["steps_taken"])
        model.extra_meta = meta.get("extra", {})
        types = {t.__name__: t for t in (cls.State, *cls.state_types)}
        try:
            if "extra_arrays" in meta:
                model.extra.update(check_extra(path, model.extra, decode_tree(
                    meta["extra_arrays"], arrays, types)))
            if "state" in meta:
                model.state = decode_tree(meta["state"], arrays, types)
                model.batch = int(meta["batch"])
        except (KeyError, TypeError) as exc:
            raise ModelFileError(f"{path}: carried state damaged ({exc!r})") from None
        return model
