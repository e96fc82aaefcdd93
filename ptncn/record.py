"""Streaming HDF5 recording of any named quantity of a learner, and its lazy reader.

Write side::

    rec = Recorder("run.h5", buffer_steps=256, flush_seconds=1.0)
    rec.add("z1", rows=[0, 1], every=1)          # a per-step quantity, two batch rows
    rec.add("W1", every=100, phase="before")     # a parameter, as used by that step
    rec.add("norm_dW2")                          # Frobenius norm of the applied update
    rec.add("loss")                              # a metric the simulation loop supplies
    rec.start(model, batch=50, metrics=["loss"], attrs={"config": {...}, "seed": 0})
    for step ...:
        rec.before_step(step, model)             # "before" traces (parameters)
        model.step(x, m)
        rec.after_step(step, model, {"loss": 2.3})
    rec.close()

Read side: :func:`open_recording` (lazy; slicing reads only what is asked).
The file layout is documented in docs/recording.md.

Memory is bounded: each trace buffers at most ``buffer_steps`` records; all
buffers are written and the file flushed when one fills or when
``flush_seconds`` of wall time have passed.  The file is written in HDF5 SWMR
mode, so another process can read a live run, and a run killed with SIGKILL
leaves a file holding every record up to the last flush.  Every chunk carries a
fletcher32 checksum, so a damaged chunk is an error naming the trace and its
records, never wrong values; a flush that would not fit on the disk is refused
before anything is written, so the file closes cleanly with the records before it.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import functools
import json
import os
import platform
import re
import resource
import time
from dataclasses import dataclass

import h5py
import numpy as np

from .runlock import describe, lock_owner

FORMAT_NAME = "ptncn-recording"
FORMAT_VERSION = 1
PHASES = ("before", "after")
#: metadata read attempts of a SWMR reader while a live writer holds the run folder: HDF5
#: sleeps 1 ns, 2 ns, 4 ns... between attempts, so 30 attempts wait about one second
LIVE_READ_ATTEMPTS = 30
#: bytes kept free beyond the records of a flush (new index blocks, headers, the close)
SPACE_MARGIN = 64 << 10
#: the handles of files whose close failed after a write error: HDF5 crashes when they
#: are freed, so they are kept (the error was already raised once)
_UNCLOSABLE: list = []


class RecordingError(ValueError):
    """A recording cannot be written or read (bad path, disk full, corrupt file...)."""


def _versions() -> dict:
    import scipy

    from . import __version__
    return {"ptncn": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
            "python": platform.python_version()}


def _index_list(sel, n: int, what: str, name: str):
    """Normalise a rows=/units= selection to a sorted list of ints (None: all)."""
    if sel is None:
        return None
    if isinstance(sel, slice):
        return list(range(n))[sel]
    if isinstance(sel, (int, np.integer)):
        sel = [int(sel)]
    out = [int(i) for i in sel]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"trace {name!r}: {what} {bad} out of range 0..{n - 1}")
    return out


@dataclass
class TraceSpec:
    name: str
    rows: object = None
    units: object = None
    every: int = 1
    phase: str = "after"


class _Trace:
    """One trace being written: selection, buffer, datasets."""

    def __init__(self, spec: TraceSpec, full_shape: tuple, kind: str, meaning: str, unit: str,
                 buffer_steps: int):
        self.spec, self.kind = spec, kind
        self.meaning, self.unit = meaning, unit
        if kind == "metric" or len(full_shape) == 0:
            self.rows = self.units = None
            shape: tuple = ()
        else:
            self.rows = _index_list(spec.rows, full_shape[0], "rows", spec.name)
            self.units = (_index_list(spec.units, full_shape[1], "units", spec.name)
                          if len(full_shape) > 1 else None)
            r = len(self.rows) if self.rows is not None else full_shape[0]
            shape = (r,) + ((len(self.units) if self.units is not None else full_shape[1],)
                            if len(full_shape) > 1 else ())
        self.full_shape, self.shape = tuple(full_shape), shape
        self.buf = np.empty((buffer_steps, *shape), np.float32)
        self.steps = np.empty(buffer_steps, np.int64)
        self.n = 0
        self.values_ds = self.step_ds = None

    def select(self, a) -> np.ndarray:
        a = np.asarray(a)
        if self.kind == "metric" or a.ndim == 0:
            return a
        if self.rows is not None:
            if a.shape[0] < self.full_shape[0]:      # a short last batch: pad with NaN
                pad = np.full((self.full_shape[0], *a.shape[1:]), np.nan, np.float32)
                pad[:a.shape[0]] = a
                a = pad
            a = a[self.rows]
        if self.units is not None:
            a = a[:, self.units]
        return a


class Recorder:
    """Declare traces, then stream them to one HDF5 file per run (see module doc)."""

    def __init__(self, path, *, buffer_steps: int = 256, flush_seconds: float = 1.0,
                 compression: str | None = "lzf", checksum: bool = True):
        if buffer_steps < 1:
            raise ValueError(f"buffer_steps must be >= 1, got {buffer_steps}")
        if compression not in (None, "lzf", "gzip"):
            raise ValueError(f"compression must be 'lzf', 'gzip' or None, got {compression!r}")
        self.path = os.fspath(path)
        self.buffer_steps = int(buffer_steps)
        self.flush_seconds = float(flush_seconds)
        self.compression = compression
        self.checksum = bool(checksum)
        self.specs: list[TraceSpec] = []
        self.traces: dict[str, _Trace] = {}
        self.file: h5py.File | None = None
        self._last_flush = time.monotonic()
        self._broken: Exception | None = None
        self._seen_step = -1            # every record of a step <= this one is buffered
        self._safe_step = -1            # ... and of a step <= this one is on disk
        # the learner whose event data (the spiking P-TNCN's spikes) is appended at flushes
        self._event_learner = None

    # -- declaration ---------------------------------------------------------------
    def add(self, name: str, rows=None, units=None, every: int = 1, phase: str = "after"):
        """Record ``name`` every ``every`` steps, for the given batch ``rows`` and ``units``.

        ``phase`` matters for parameters only: "before" records the values this
        step's forward pass used, "after" (default) the values after its update.
        Per-step quantities and metrics are the same in both phases.
        """
        if self.file is not None:
            raise RuntimeError("add() must come before start(): the file layout is fixed then")
        if int(every) != every or every < 1:
            raise ValueError(f"trace {name!r}: every must be an integer >= 1, got {every!r}")
        if phase not in PHASES:
            raise ValueError(f"trace {name!r}: phase must be one of {PHASES}, got {phase!r}")
        if any(s.name == name for s in self.specs):
            raise ValueError(f"trace {name!r} declared twice")
        self.specs.append(TraceSpec(name, rows, units, int(every), phase))
        return self

    # -- file lifecycle ------------------------------------------------------------------
    def start(self, learner, batch: int | None = None, metrics=(), attrs: dict | None = None,
              resume_from: "Recording | None" = None, resume_step: int | None = None) -> None:
        """Check every declared name, create the file and its datasets, enter SWMR mode.

        ``batch``: the rows of the sequences to be recorded (default: the learner's
        current ones; needed only by traces with one row per sequence).
        ``resume_from``/``resume_step``: copy the records of an earlier file with
        step < resume_step first (used by checkpoint resume).
        """
        metrics = list(metrics)
        known = [*learner.recordable, *metrics]
        for spec in self.specs:
            if spec.name not in known:
                raise ValueError(f"cannot record unknown variable {spec.name!r}; "
                                 f"recordable: {', '.join(known)}")
        batch = self._batch(learner, batch, metrics)
        for spec in self.specs:
            self.traces[spec.name] = self._trace(spec, learner, batch, metrics)
        tmp = None
        target = self.path
        if resume_from is not None and os.path.abspath(resume_from.path) == \
                os.path.abspath(self.path):
            tmp = self.path + ".resume-tmp"
            target = tmp
        try:
            f = h5py.File(target, "w", libver="latest")
        except (OSError, ValueError) as exc:
            raise RecordingError(f"cannot create recording {self.path!r}: {exc}") from None
        try:
            self._write_header(f, learner, batch, attrs)
            g = f.create_group("traces")
            for name, tr in self.traces.items():
                self._create_datasets(g.create_group(name), tr)
                if resume_from is not None and name in resume_from.traces:
                    _copy_before(resume_from.traces[name], tr, resume_step)
            learner.create_event_datasets(f)
            self._event_learner = learner
            f.swmr_mode = True
            f.flush()
        except BaseException as exc:
            self._abandon(f, tmp, exc)
            raise
        if tmp is not None:
            resume_from.close()
            os.replace(tmp, self.path)
        self.file = f
        self._last_flush = time.monotonic()
        if resume_from is not None:
            self._note_copied(resume_step)

    def _note_copied(self, resume_step: int | None) -> None:
        """The records copied from an earlier file are on disk: steps < ``resume_step``."""
        copied = [int(tr.step_ds[-1]) for tr in self.traces.values() if len(tr.step_ds)]
        last = resume_step - 1 if resume_step is not None else max(copied, default=-1)
        self._safe_step = self._seen_step = last if copied else -1

    def _abandon(self, f, tmp: str | None, exc: BaseException) -> None:
        """Close a file whose creation failed (kept open if HDF5 cannot close it), remove
        the temporary file of a resume, and name an HDF5 error (a full disk...)."""
        try:
            f.close()
        except (OSError, RuntimeError, ValueError):
            _UNCLOSABLE.append(f)
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, (OSError, RuntimeError)):
            raise RecordingError(f"cannot create recording {self.path!r}: "
                                 f"{_first_line(exc)}") from None

    def _batch(self, learner, batch: int | None, metrics) -> int:
        """``batch``, else the learner's; 1 when no declared trace has a row per sequence."""
        batch = learner.batch if batch is None else batch
        if batch is not None:
            return int(batch)
        per_row = [s.name for s in self.specs if s.name not in metrics
                   and learner.quantity_shape(s.name, 1) != learner.quantity_shape(s.name, 2)]
        if per_row:
            raise ValueError(f"traces {per_row} have one row per sequence: pass start(learner, "
                             "batch=...) or reset the learner first")
        return 1

    @staticmethod
    def _write_header(f, learner, batch: int, attrs: dict | None) -> None:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["version"] = FORMAT_VERSION
        f.attrs["start_time"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
        f.attrs["versions"] = json.dumps(_versions())
        f.attrs["learner"] = type(learner).__name__
        f.attrs["batch"] = int(batch)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v if isinstance(v, (str, int, float, np.number)) else json.dumps(v)

    def _create_datasets(self, tg, tr: _Trace) -> None:
        """A trace's resizable ``values`` and ``step`` datasets, with its attributes."""
        row_bytes = max(4, 4 * int(np.prod(tr.shape, dtype=np.int64)))
        # ~64 KiB chunks: a flush rewrites at most one partly filled chunk per trace
        chunk_t = max(1, min(self.buffer_steps, (1 << 16) // row_bytes))
        tr.values_ds = tg.create_dataset(
            "values", shape=(0, *tr.shape), maxshape=(None, *tr.shape), dtype="f4",
            chunks=(chunk_t, *tr.shape), compression=self.compression,
            shuffle=self.compression is not None, fletcher32=self.checksum)
        tr.step_ds = tg.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8",
                                       chunks=(max(chunk_t, 256),), fletcher32=self.checksum)
        a = tr.values_ds.attrs
        a["meaning"] = tr.meaning
        a["units"] = tr.unit
        a["kind"] = tr.kind
        a["every"] = tr.spec.every
        a["phase"] = tr.spec.phase
        a["axes"] = json.dumps(["step"] + (["row", "unit"][:len(tr.shape)]))
        a["rows"] = json.dumps(tr.rows)
        a["unit_index"] = json.dumps(tr.units)
        a["full_shape"] = json.dumps(list(tr.full_shape))

    def _trace(self, spec: TraceSpec, learner, batch: int, metrics) -> _Trace:
        """The trace of a declared name: a metric of the loop, or what the learner says
        of its shape and meaning (a 0-d value of the learner is labelled a norm)."""
        if spec.name in metrics:
            meaning = f"metric {spec.name!r} supplied by the simulation loop"
            return _Trace(spec, (), "metric", meaning, "", self.buffer_steps)
        shape = tuple(learner.quantity_shape(spec.name, batch))
        meaning, unit = learner.describe(spec.name)
        return _Trace(spec, shape, "quantity" if shape else "norm", meaning, unit,
                      self.buffer_steps)

    def _guard(self):
        if self._broken is not None:
            raise RecordingError(f"recording {self.path!r} stopped after an earlier error: "
                                 f"{self._broken}")
        if self.file is None:
            raise RuntimeError("call start() before recording")

    # -- recording ---------------------------------------------------------------------
    def _value(self, tr: _Trace, learner, metrics):
        name = tr.spec.name
        if tr.kind == "metric":
            if metrics is None or name not in metrics:
                return None
            return np.float32(metrics[name])
        try:
            return tr.select(learner.quantity(name))
        except KeyError:          # not produced yet (e.g. before the first step)
            return None

    def _record(self, step: int, learner, phase: str, metrics=None) -> None:
        self._guard()
        self._seen_step = step if phase == "after" else step - 1
        for tr in self.traces.values():
            if tr.spec.phase != phase or step % tr.spec.every:
                continue
            v = self._value(tr, learner, metrics)
            if v is None:
                continue
            tr.buf[tr.n] = v
            tr.steps[tr.n] = step
            tr.n += 1
        if any(tr.n == self.buffer_steps for tr in self.traces.values()) or \
                time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def before_step(self, step: int, learner) -> None:
        """Record the "before" traces (call just before ``learner.step``)."""
        if any(tr.spec.phase == "before" for tr in self.traces.values()):
            self._record(step, learner, "before")

    def after_step(self, step: int, learner, metrics: dict | None = None) -> None:
        """Record the "after" traces and the metrics (call just after ``learner.step``)."""
        self._record(step, learner, "after", metrics)

    def flush(self) -> None:
        """Write every buffered record and flush the file (readers see them after this).

        Refuses (``RecordingError``) before writing anything when the file system, or
        the process's file-size limit, has no room for the buffered records: the file
        then closes cleanly with every earlier record.
        """
        self._guard()
        self._check_space()
        try:
            for tr in self.traces.values():
                if tr.n == 0:
                    continue
                old = tr.values_ds.shape[0]
                tr.values_ds.resize((old + tr.n, *tr.shape))
                tr.values_ds[old:old + tr.n] = tr.buf[:tr.n]
                tr.step_ds.resize((old + tr.n,))
                tr.step_ds[old:old + tr.n] = tr.steps[:tr.n]
                tr.n = 0
                # H5Dflush per dataset: makes the new extent and data visible to SWMR
                # readers and durable against a killed process, and is far cheaper
                # than a whole-file H5Fflush
                tr.values_ds.flush()
                tr.step_ds.flush()
            if self._event_learner is not None:
                self._event_learner.write_events(self.file)
        except (OSError, RuntimeError, ValueError) as exc:
            self._broken = exc
            raise RecordingError(f"writing recording {self.path!r} failed "
                                 f"({_first_line(exc)}); {self._on_disk()}") from None
        self._safe_step = self._seen_step
        self._last_flush = time.monotonic()

    def _on_disk(self) -> str:
        if self._safe_step < 0:
            return "no record is on disk yet"
        return f"records up to step {self._safe_step} are safely on disk and intact"

    def _flush_bytes(self) -> int:
        """An upper bound of the bytes the next flush adds to the file: every chunk the
        buffered records touch, uncompressed, the step chunks, index growth, a margin."""
        need = SPACE_MARGIN
        for tr in self.traces.values():
            if tr.n:
                ct, sct = tr.values_ds.chunks[0], tr.step_ds.chunks[0]
                row = 4 * int(np.prod(tr.shape, dtype=np.int64))
                chunks = tr.n // ct + 2
                need += chunks * (ct * row + 4) + (tr.n // sct + 2) * (sct * 8 + 4)
                need += 4096 + 64 * (tr.values_ds.shape[0] // ct + chunks)
        return need

    def _check_space(self) -> None:
        """Refuse a flush the disk (or RLIMIT_FSIZE) has no room for, before writing."""
        if not any(tr.n for tr in self.traces.values()):
            return
        need = self._flush_bytes()
        st = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        room, where = st.f_bavail * st.f_frsize, "the file system has"
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and limit - self.file.id.get_filesize() < room:
            room, where = limit - self.file.id.get_filesize(), "the file-size limit leaves"
        if need > room:
            self._broken = OSError(f"no space: {where} {room} bytes, need {need}")
            raise RecordingError(f"recording {self.path!r} stopped, the disk is full: {where} "
                                 f"{max(room, 0)} bytes free for it, the buffered records "
                                 f"need up to {need}; {self._on_disk()}")

    def close(self) -> None:
        """Flush and close (idempotent).  After a write error it raises nothing more: that
        error was raised already."""
        if self.file is None:
            return
        try:
            if self._broken is None:
                self.flush()
        finally:
            f, self.file = self.file, None
            self._close_file(f)

    def _close_file(self, f) -> None:
        try:
            f.close()
        except (OSError, RuntimeError, ValueError) as exc:
            _UNCLOSABLE.append((f, self.traces))     # freeing these handles crashes HDF5
            if self._broken is None:
                self._broken = exc
                raise RecordingError(f"closing recording {self.path!r} failed "
                                     f"({_first_line(exc)}); {self._on_disk()}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _first_line(exc: BaseException) -> str:
    """An HDF5 message in one line: its head and the system's error message, if any."""
    text = str(exc)
    if not text:
        return type(exc).__name__
    head = text.splitlines()[0]
    found = re.search(r"error message = '([^']*)'", text)
    if found is None:
        return head
    return f"{head.split(' (')[0]}: {found.group(1)}"


def _copy_before(old: "Trace", tr: _Trace, resume_step: int | None) -> None:
    """Copy the records of an earlier file's trace with step < ``resume_step`` (all when
    None) into the new trace's datasets."""
    keep = int(np.searchsorted(old.step[:], resume_step)) if resume_step is not None \
        else len(old)
    if keep:
        tr.values_ds.resize((keep, *tr.shape))
        tr.values_ds[:keep] = old.values[:keep]
        tr.step_ds.resize((keep,))
        tr.step_ds[:keep] = old.step[:keep]


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
def _axis0(idx, n: int) -> tuple[int, int]:
    """The records (lo, hi) a selection reads along axis 0 (all when unsure)."""
    first = idx[0] if isinstance(idx, tuple) and idx else idx
    if isinstance(first, slice):
        lo, hi, step = first.indices(n)
        return (lo, hi) if step > 0 else (0, n)
    if isinstance(first, (int, np.integer)):
        i = int(first) % n if n else 0
        return i, i + 1
    sel = np.asarray(first) if isinstance(first, (list, np.ndarray)) else None
    if sel is not None and sel.dtype.kind in "iu" and sel.size:
        return int(sel.min()) % n, int(sel.max()) % n + 1
    return 0, n


class CheckedDataset:
    """A recorded h5py dataset whose read errors (a chunk failing its checksum, a damaged
    index) raise one :class:`RecordingError` naming the trace and the records."""

    def __init__(self, ds: h5py.Dataset, trace: str, path: str, what: str = "records"):
        self.dataset, self.trace, self.path, self.what = ds, trace, path, what

    shape = property(lambda self: self.dataset.shape)
    ndim = property(lambda self: self.dataset.ndim)
    dtype = property(lambda self: self.dataset.dtype)
    attrs = property(lambda self: self.dataset.attrs)
    chunks = property(lambda self: self.dataset.chunks)
    fletcher32 = property(lambda self: self.dataset.fletcher32)
    compression = property(lambda self: self.dataset.compression)
    maxshape = property(lambda self: self.dataset.maxshape)

    def __len__(self):
        return self.dataset.shape[0]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[()], dtype=dtype)

    def refresh(self):
        self.dataset.refresh()

    def __getitem__(self, idx):
        try:
            return self.dataset[idx]
        except (OSError, RuntimeError) as exc:
            raise RecordingError(self._damage(idx, exc)) from None

    def _damage(self, idx, exc) -> str:
        """Name the first damaged chunk of the selection (read chunk by chunk)."""
        n = self.dataset.shape[0]
        lo, hi = _axis0(idx, n) if self.dataset.ndim else (0, n)
        ct = (self.dataset.chunks or (max(n, 1),))[0]
        for a in range(lo - lo % ct, hi, ct):
            try:
                self.dataset[a:min(a + ct, n)]
            except (OSError, RuntimeError) as chunk_exc:
                lo, hi, exc = a, min(a + ct, n), chunk_exc
                break
        return (f"{self.path}: trace {self.trace!r}: {self.what} {lo}..{hi - 1} are damaged "
                f"and cannot be read ({_first_line(exc)})")


class Trace:
    """One recorded trace, read lazily: ``trace[a:b]`` reads only those records."""

    def __init__(self, name: str, group: h5py.Group, path: str = ""):
        self.name = name
        self.values = CheckedDataset(group["values"], name, path)
        self._step = CheckedDataset(group["step"], name, path, "step indices of records")
        self.attrs = dict(self.values.attrs)

    @property
    def step(self) -> np.ndarray:
        """The step index of every record (int64; read in full, it is small)."""
        return self._step[:]

    def __len__(self):
        return self.values.shape[0]

    @property
    def shape(self):
        return self.values.shape

    def __getitem__(self, idx):
        return self.values[idx]

    def at_steps(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) for lo <= step < hi."""
        s = self.step
        a, b = np.searchsorted(s, lo), np.searchsorted(s, hi)
        return s[a:b], self.values[a:b]

    def refresh(self):
        self.values.refresh()
        self._step.refresh()

    def __repr__(self):
        return f"<Trace {self.name} {self.shape} every={self.attrs.get('every')}>"


class Recording:
    """A ptncn recording opened read-only (safe while the run is still writing it).

    With no live writer holding the run's folder (:mod:`ptncn.runlock`) the file is
    opened plainly, or, when its writer was killed, as a SWMR reader that reads each
    piece of metadata once; with a live writer, as a SWMR reader that retries a piece
    of metadata that fails its checksum for about a second.  Damage is therefore one
    :class:`RecordingError`, never a hang.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no recording at {self.path!r}")
        self.writer = lock_owner(os.path.dirname(os.path.abspath(self.path)))
        self.file = self._open()
        try:
            self._check_header(self.file.attrs)
            self.traces = {name: Trace(name, g, self.path)
                           for name, g in self.file["traces"].items()}
        except RecordingError:
            self.file.close()
            raise
        except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
            self.file.close()
            raise RecordingError(f"{self.path}: damaged recording, its metadata cannot be "
                                 f"read ({_first_line(exc)}){self._live_hint()}") from None

    def _check_header(self, a) -> None:
        fmt = a.get("format")
        if (fmt.decode() if isinstance(fmt, bytes) else fmt) != FORMAT_NAME:
            raise RecordingError(f"{self.path}: an HDF5 file, but not a ptncn recording "
                                 f"(format attribute {fmt!r})")
        if "version" not in a:
            raise RecordingError(f"{self.path}: a ptncn recording with no version attribute; "
                                 f"this ptncn reads version {FORMAT_VERSION}")
        v = a["version"]
        v = v.decode() if isinstance(v, bytes) else v
        if not isinstance(v, (int, np.integer)) or int(v) != FORMAT_VERSION:
            shown = int(v) if isinstance(v, (int, np.integer)) else repr(v)
            raise RecordingError(f"{self.path}: recording format version {shown}, "
                                 f"this ptncn reads version {FORMAT_VERSION}")

    def _live_hint(self) -> str:
        if self.writer is None:
            return ""
        return f"; it is being written by {describe(self.writer)}: if it is not damaged, retry"

    def _open(self) -> h5py.File:
        if self.writer is not None:
            return self._open_swmr(LIVE_READ_ATTEMPTS)
        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            # its writer was killed (or writes without a lock): SWMR, but no retries
            if "already open for write" not in str(exc):
                raise RecordingError(f"{self.path}: not a readable HDF5 file — truncated or "
                                     f"corrupt? ({_first_line(exc)})") from None
        return self._open_swmr(1)

    def _open_swmr(self, attempts: int) -> h5py.File:
        try:
            return _swmr_file(self.path, attempts)
        except OSError as exc:
            if _SWMR_FLAG_CLASH not in str(exc):
                raise RecordingError(f"{self.path}: not a readable HDF5 file — truncated or "
                                     f"corrupt? ({_first_line(exc)}){self._live_hint()}") from None
        # HDF5 opens a file once per process, and a second open must ask for the same SWMR
        # flag: this process already has it open without SWMR (a plain h5py.File(path, "r")).
        # That open succeeded, so no SWMR writer was writing it then: read through it.
        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            raise RecordingError(
                f"{self.path}: this process already has the file open with other HDF5 "
                "access flags (HDF5 allows one set of flags per file and process); close "
                "that h5py.File, or open it with h5py.File(path, 'r', swmr=True), then retry "
                f"({_first_line(exc)})") from None

    @property
    def attrs(self) -> dict:
        try:
            items = list(self.file.attrs.items())
        except (OSError, RuntimeError, KeyError) as exc:
            raise RecordingError(f"{self.path}: damaged recording: its attributes cannot be "
                                 f"read ({_first_line(exc)})") from None
        out = {}
        for k, v in items:
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "{[":
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
            out[k] = v
        return out

    @property
    def config(self) -> dict:
        return self.attrs.get("config", {})

    @property
    def names(self) -> list[str]:
        return list(self.traces)

    def __getitem__(self, name: str) -> Trace:
        if name not in self.traces:
            raise KeyError(f"no trace {name!r} in {self.path}; traces: {', '.join(self.traces)}")
        return self.traces[name]

    def __contains__(self, name):
        return name in self.traces

    def refresh(self) -> None:
        """See records a live run has flushed since opening."""
        for t in self.traces.values():
            t.refresh()

    def summary(self) -> str:
        a = self.attrs
        lines = [f"{self.path}: {a.get('learner', '?')} recording, started {a.get('start_time')}",
                 f"  seed {a.get('seed')}, batch {a.get('batch')}, "
                 f"ptncn {a.get('versions', {}).get('ptncn', '?')}"]
        for name, t in self.traces.items():
            s = t.step
            span = f"steps {s[0]}..{s[-1]}" if len(s) else "empty"
            lines.append(f"  {name:<12} {str(t.shape):<20} {span:<22} every {t.attrs['every']}"
                         f"  {t.attrs.get('meaning', '')}")
        return "\n".join(lines)

    def to_xarray(self):
        """The recording as an ``xarray.Dataset`` (needs xarray), read lazily.

        Building the Dataset reads only the step indices and attributes; trace values
        are read when asked for (``.values``, ``.load()``, a plot...), and only the
        records a selection needs (``.chunk()`` makes dask arrays where dask is installed).
        Read them while the recording is open (``.load()`` first to keep them after).

        Dimension names, chosen so that traces sampled alike share coordinates:

        * ``step`` — the step index of each record, for the step set most traces
          share; traces recorded at other steps get ``step_every<n>`` (their ``every``),
          or ``step_<trace>`` when that name is taken by yet another step set.
        * ``row`` — the recorded batch rows (values: the row indices) of per-row
          quantities, for the row selection most traces share; another row selection
          is ``row_<trace>``, named after its first trace in name order.
        * units of per-row quantities, named by the layer they belong to:
          ``unit_<l>`` for a name ending in layer number l (z1, mu1, e1, spikes_z1...),
          ``unit_x`` for the input/prediction space (layer 0: x, x_mu, e0, and any
          quantity in input or output units), ``unit_<trace>`` otherwise (the reservoir
          ``r`` of an echo-state network: ``unit_r``).  Values: the recorded unit
          indices; another unit selection of the same layer is ``<dim>_<trace>``.
        * parameters and their updates (unit "weight" or "weight / step"):
          ``<param>_row`` and ``<param>_col``, shared by ``W1`` and ``dW1``.

        Norms and metrics have the step dimension only.  Every variable has ``units``
        and ``long_name`` (the recorded unit and meaning) besides the trace's own
        attributes; the Dataset carries the file's attributes.
        """
        xr = _import_xarray()
        plans = {name: _dim_requests(name, t) for name, t in self.traces.items()}
        names = _assign_dims([r for p in plans.values() for r in p], set(self.traces))
        coords, data = {}, {}
        for name, t in self.traces.items():
            dims = []
            for req in plans[name]:
                dim = names[req.key]
                dims.append(dim)
                coords.setdefault(dim, xr.Variable(dim, req.values, attrs=req.attrs))
            data[name] = xr.Variable(dims, _lazy_values(t), attrs=_variable_attrs(t))
        return xr.Dataset(data, coords=coords, attrs=_plain_attrs(self.attrs))

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# xarray view (Recording.to_xarray)
# ---------------------------------------------------------------------------
#: recorded units of parameters and of their updates (their axes are not batch rows)
_WEIGHT_UNITS = ("weight", "weight / step")
#: recorded units of quantities that live in the input (= prediction) space
_INPUT_UNITS = ("input units", "output units")


def _import_xarray():
    try:
        import xarray
    except ImportError:
        raise ImportError("to_xarray() needs xarray: pip install 'ptncn[test]' "
                          "(or pip install xarray)") from None
    return xarray


@dataclass
class _DimRequest:
    """A dimension one trace asks for: a preferred name, a fallback when another
    coordinate set holds that name, the coordinate values and their attributes."""
    trace: str
    axis: int
    preferred: str
    fallback: tuple
    values: np.ndarray
    attrs: dict

    @property
    def key(self):
        return (self.trace, self.axis)


def _json_attr(attrs: dict, key: str):
    v = attrs.get(key)
    v = v.decode() if isinstance(v, bytes) else v
    return json.loads(v) if isinstance(v, str) else v


def _unit_dim(name: str, unit: str) -> tuple[str, str]:
    """(dim name, long name) of the unit axis of a per-row quantity."""
    m = re.search(r"(\d+)$", name)
    if (m and int(m.group(1)) == 0) or (not m and unit in _INPUT_UNITS):
        return "unit_x", "unit of the input (and prediction) space"
    if m:
        return f"unit_{int(m.group(1))}", f"unit of layer {int(m.group(1))}"
    return f"unit_{name}", f"unit of {name}"


def _dim_requests(name: str, t: "Trace") -> list[_DimRequest]:
    """The dimensions of trace ``name`` (see :meth:`Recording.to_xarray`)."""
    a, shape = t.attrs, t.shape
    every = int(a.get("every", 1))
    out = [_DimRequest(name, 0, "step", (f"step_every{every}", f"step_{name}"), t.step,
                       {"long_name": "step index of the record", "units": "step"})]
    full = _json_attr(a, "full_shape") or list(shape[1:])
    picks = [_json_attr(a, "rows"), _json_attr(a, "unit_index")]
    unit = str(a.get("units", ""))
    for axis in range(1, len(shape)):
        pick = picks[axis - 1]
        values = np.asarray(pick if pick is not None else range(full[axis - 1]), np.int64)
        if unit in _WEIGHT_UNITS:
            base = name[1:] if unit == "weight / step" else name
            dim = f"{base}_{('row', 'col')[axis - 1]}"
            long = f"{('row', 'column')[axis - 1]} index of {base}"
        elif axis == 1:
            dim, long = "row", "batch row (sequence) index"
        else:
            dim, long = _unit_dim(name, unit)
        out.append(_DimRequest(name, axis, dim, (f"{dim}_{name}",), values,
                               {"long_name": long, "units": "index"}))
    return out


def _assign_dims(requests: list[_DimRequest], reserved: set) -> dict:
    """(trace, axis) -> dimension name: per preferred name, the coordinate set most
    traces ask for gets it (ties: the first trace), the others their fallbacks."""
    groups: dict = {}
    for r in requests:
        sets = groups.setdefault(r.preferred, {})
        sets.setdefault((r.values.size, r.values.tobytes()), []).append(r)
    taken, out = set(reserved), {}
    for preferred, sets in groups.items():
        ranked = sorted(sets.values(), key=len, reverse=True)   # stable: ties keep order
        for i, members in enumerate(ranked):
            options = ((preferred,) if i == 0 else ()) + members[0].fallback
            dim = next((d for d in options if d not in taken), None)
            if dim is None:
                dim = f"{options[-1]}_{len(taken)}"
            taken.add(dim)
            out.update({r.key: dim for r in members})
    return out


def _plain_attrs(attrs: dict) -> dict:
    """Attributes netCDF and xarray accept: numbers and strings (others as JSON)."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v if isinstance(v, (str, int, float)) else json.dumps(v)
    return out


def _variable_attrs(t: "Trace") -> dict:
    a = _plain_attrs(t.attrs)
    return {"long_name": a.get("meaning", t.name), "units": a.get("units", ""), **a}


def _lazy_values(t: "Trace"):
    """Trace ``t`` as an array xarray indexes without reading it."""
    from xarray.core import indexing
    return indexing.LazilyIndexedArray(_trace_array_class()(t))


@functools.lru_cache(maxsize=None)
def _trace_array_class():
    """An ``xarray.backends.BackendArray`` reading a :class:`Trace` on demand (a class
    made on first use: xarray is optional)."""
    from xarray.backends import BackendArray
    from xarray.core import indexing

    class TraceArray(BackendArray):
        def __init__(self, trace: Trace):
            self.trace = trace
            self.shape = tuple(trace.shape)
            self.dtype = np.dtype(trace.values.dtype)

        def __getitem__(self, key):
            return indexing.explicit_indexing_adapter(
                key, self.shape, indexing.IndexingSupport.BASIC, self._read)

        def _read(self, key: tuple):
            return np.asarray(self.trace[key])

    return TraceArray


#: HDF5's message when a file already open in this process is opened again with(out) the
#: SWMR read flag
_SWMR_FLAG_CLASH = "SWMR read access flag not the same"


@functools.lru_cache(maxsize=None)
def _hdf5_library():
    """The HDF5 library h5py runs on, through ctypes (None where it cannot be found)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/libhdf5" in line}
        names = ("libhdf5.", "libhdf5-", "libhdf5_serial.")      # not libhdf5_hl
        lib = ctypes.CDLL(next(p for p in sorted(paths)
                               if os.path.basename(p).startswith(names)))
        lib.H5Pset_metadata_read_attempts.argtypes = [ctypes.c_int64, ctypes.c_uint]
        return lib
    except (OSError, StopIteration, AttributeError):
        return None


def _swmr_file(path: str, attempts: int) -> h5py.File:
    """``path`` opened as a SWMR reader that reads metadata at most ``attempts`` times
    (HDF5's default, 100 attempts with doubling sleeps, amounts to a hang)."""
    lib = _hdf5_library()
    if lib is None:                   # no bound can be set here: HDF5's own retries
        return h5py.File(path, "r", swmr=True)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
    if lib.H5Pset_metadata_read_attempts(fapl.id, attempts) < 0:
        return h5py.File(path, "r", swmr=True)
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ,
                        fapl=fapl)
    return h5py.File(fid)


def open_recording(path) -> Recording:
    """Open a recording for reading (lazy; works on a run that is still writing)."""
    return Recording(path)
