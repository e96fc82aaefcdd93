"""Export a ptncn recording (``run.h5``, see docs/recording.md) to an NWB file.

Needs the ``nwb`` extra (``pip install 'ptncn[nwb]'``)::

    from ptncn.export import to_nwb
    to_nwb("run.h5", "run.nwb", step_seconds=0.001)

Layout of the NWB file written by :func:`to_nwb`:

* Every trace becomes a ``pynwb.TimeSeries`` with the trace's name, in the
  processing module ``"ptncn"`` (``nwb.processing["ptncn"]["z1"]``).  The
  traces are the internal state of a simulated network, not data acquired
  from an experiment, so they go in a processing module rather than in
  ``acquisition``.
* ``data`` holds the recorded values exactly (float32), with the trace's own
  shape: time on axis 0, then batch rows, then units (``(records,)`` for
  scalars such as ``loss`` and norms, ``(records, rows)`` or
  ``(records, rows, units)`` otherwise).  NWB TimeSeries accept up to four
  axes, so nothing is flattened.  Data are copied in time blocks (bounded
  memory) and gzip-compressed.
* Time: the simulation is time-stepped, so NWB time in seconds is the step
  index times ``step_seconds`` (default 1.0: one "second" per step).
  ``timestamps`` are ``step * step_seconds`` for each record; traces recorded
  at the same steps share one timestamps dataset (NWB timestamp links).
* ``unit`` is the trace's ``units`` attribute ("a.u." when it has none),
  ``description`` its ``meaning``, and ``comments`` a JSON object with the
  trace's ``rows``, ``unit_index``, ``every``, ``phase``, ``axes``, ``kind``
  and ``full_shape`` (the recorded selection and the meaning of each axis),
  plus ``step_seconds``.
* ``session_start_time`` is the recording's ``start_time``; the identifier is
  a UUID5 of the start time and the run's attributes (config, seed, data
  identity, versions...), so exporting the same run twice, or from a copy of
  the run file, gives the same identifier.  ``NWBFile.notes`` holds the JSON of
  every root attribute of the recording (config, seed, versions, learner,
  batch, data_identity...).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from dataclasses import dataclass

import numpy as np

from .record import RecordingError, open_recording
from .runlock import describe

NWB_MISSING = "NWB export needs the 'nwb' extra: pip install 'ptncn[nwb]'"
MODULE_NAME = "ptncn"
_UUID_NAMESPACE = uuid.UUID("3f1c7f0e-2b6a-5d8e-9a51-7c0d4b1e6a90")   # ptncn NWB identifiers
_CHUNK_BYTES = 1 << 20           # HDF5 chunk size target for copied traces
_BUFFER_BYTES = 64 << 20         # records read from the run file at a time


def _import_pynwb():
    try:
        import pynwb
        from hdmf.backends.hdf5 import H5DataIO
        from hdmf.data_utils import GenericDataChunkIterator
    except ImportError as exc:
        raise ImportError(NWB_MISSING) from exc
    return pynwb, H5DataIO, GenericDataChunkIterator


def _jsonable(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _decoded(v):
    return v.decode() if isinstance(v, bytes) else v


def _attr_json(attrs: dict, key: str):
    v = _decoded(attrs.get(key))
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return _jsonable(v) if v is not None else None


def _start_time(attrs: dict, path: str) -> _dt.datetime:
    raw = _decoded(attrs.get("start_time"))
    if not isinstance(raw, str):
        raise RecordingError(f"{path}: recording has no start_time attribute")
    try:
        t = _dt.datetime.fromisoformat(raw)
    except ValueError:
        raise RecordingError(f"{path}: start_time {raw!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:          # the recorder writes UTC; be lenient with hand-made files
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t


def _block_iterator(base):
    """A GenericDataChunkIterator over an h5py dataset, in blocks along axis 0."""

    class _TraceBlocks(base):
        def __init__(self, ds):
            self._ds = ds
            n, rest = int(ds.shape[0]), tuple(int(s) for s in ds.shape[1:])
            row = max(1, ds.dtype.itemsize * int(np.prod(rest, dtype=np.int64)))
            ct = max(1, min(n, _CHUNK_BYTES // row))
            bt = min(n, ct * max(1, _BUFFER_BYTES // (ct * row)))
            super().__init__(chunk_shape=(ct, *rest), buffer_shape=(bt, *rest))

        def _get_data(self, selection):
            return self._ds[selection]

        def _get_maxshape(self):
            return tuple(self._ds.shape)

        def _get_dtype(self):
            return self._ds.dtype

    return _TraceBlocks


def _check_target(run_path: str, out_path: str, step_seconds: float, overwrite: bool) -> None:
    """Refuse a non-positive ``step_seconds`` and an ``out_path`` that may not be written."""
    if not np.isfinite(step_seconds) or step_seconds <= 0:
        raise ValueError(f"step_seconds must be a positive number, got {step_seconds!r}")
    if os.path.exists(out_path):
        if not overwrite:
            raise FileExistsError(f"{out_path} already exists; pass overwrite=True "
                                  "to replace it")
        if os.path.exists(run_path) and os.path.samefile(run_path, out_path):
            raise ValueError(f"out_path {out_path!r} is the recording itself")


def _nwb_file(pynwb, rec, run_path: str, step_seconds: float, session_description):
    """The NWBFile of a recording: start time, identifier, notes and description."""
    try:
        raw_attrs = {k: v for k, v in rec.file.attrs.items()}
    except (OSError, RuntimeError, KeyError) as exc:
        raise RecordingError(f"{run_path}: damaged recording: its attributes cannot be "
                             f"read ({exc})") from None
    attrs = {k: _attr_json(raw_attrs, k) for k in sorted(raw_attrs)}
    start = _start_time(raw_attrs, run_path)
    notes = json.dumps(attrs, sort_keys=True, default=_jsonable)
    identifier = str(uuid.uuid5(_UUID_NAMESPACE, notes))
    if session_description is None:
        versions = attrs.get("versions") if isinstance(attrs.get("versions"), dict) else {}
        session_description = (
            f"{attrs.get('learner', 'ptncn')} simulation recorded with ptncn "
            f"{versions.get('ptncn', '?')} ({len(rec.names)} traces: "
            f"{', '.join(rec.names)}); NWB time = step index x {step_seconds:g} s")
    return pynwb.NWBFile(session_description=session_description, identifier=identifier,
                         session_start_time=start, notes=notes,
                         source_script="ptncn.export.to_nwb",
                         source_script_file_name=os.path.basename(run_path))


def _add_traces(pynwb, module, rec, step_seconds: float, data_io, blocks) -> None:
    """One TimeSeries per trace in ``module``; traces recorded at the same steps share the
    timestamps of the first of them."""
    shared: list[tuple[np.ndarray, object]] = []       # (steps, TimeSeries owning them)
    for name in rec.names:
        trace = rec[name]
        ta = trace.attrs
        steps = np.asarray(trace.step, dtype=np.int64)
        comments = {k: _attr_json(ta, k) for k in
                    ("rows", "unit_index", "every", "phase", "axes", "kind", "full_shape")}
        comments["step_seconds"] = step_seconds
        unit = _attr_json(ta, "units") or "a.u."
        description = _attr_json(ta, "meaning") or "no description"
        if len(trace):
            data = data_io(blocks(trace.values), compression="gzip", compression_opts=4)
        else:
            data = np.empty(trace.shape, dtype=np.float32)
        owner = next((ts for s, ts in shared if s.shape == steps.shape
                      and np.array_equal(s, steps)), None)
        timestamps = steps.astype(np.float64) * step_seconds if owner is None else owner
        ts = pynwb.TimeSeries(name=name, data=data, unit=str(unit), timestamps=timestamps,
                              description=str(description),
                              comments=json.dumps(comments, default=_jsonable))
        if owner is None:
            shared.append((steps, ts))
        module.add(ts)


def _write_replacing(pynwb, nwb, out_path: str) -> None:
    """Write ``nwb`` under a temporary name next to ``out_path``, then rename it there."""
    head, tail = os.path.split(out_path)
    tmp = os.path.join(head, f".{tail}.{os.getpid()}.tmp.nwb")   # pynwb wants *.nwb
    try:
        with pynwb.NWBHDF5IO(tmp, "w") as io:
            io.write(nwb)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@dataclass
class Export:
    """What :func:`export_nwb` wrote: the path, the records and traces it took, the step
    of the latest record, and the live writer of the run (None when the run had ended)."""
    path: str
    records: int
    traces: int
    last_step: int | None
    writer: dict | None


def _refuse_live(rec, run_path: str, partial: bool) -> None:
    if rec.writer is not None and not partial:
        raise RecordingError(
            f"{run_path} is still being written by {describe(rec.writer)}: an export now "
            "would hold only the records flushed so far; wait for the run to end, or pass "
            "--partial (partial=True) to export those")


def _taken(rec) -> tuple[int, int | None]:
    """The records of all traces, and the step of the latest one (None: no records)."""
    lasts = [int(rec[n].step[-1]) for n in rec.names if len(rec[n])]
    return sum(len(rec[n]) for n in rec.names), max(lasts, default=None)


def to_nwb(run_path, out_path, *, session_description: str | None = None,
           step_seconds: float = 1.0, overwrite: bool = False, partial: bool = False) -> str:
    """:func:`export_nwb`, returning only the path written."""
    return export_nwb(run_path, out_path, session_description=session_description,
                      step_seconds=step_seconds, overwrite=overwrite, partial=partial).path


def export_nwb(run_path, out_path, *, session_description: str | None = None,
               step_seconds: float = 1.0, overwrite: bool = False,
               partial: bool = False) -> Export:
    """Write the recording at ``run_path`` as an NWB file at ``out_path``; return what
    was written (:class:`Export`).

    Each trace becomes a ``TimeSeries`` in the processing module ``"ptncn"``
    with the recorded values (time on axis 0, shape kept) and timestamps
    ``step * step_seconds`` (see the module docstring for the whole layout).
    ``session_description`` defaults to a one-line summary of the run.

    A run whose folder a live writer holds (:mod:`ptncn.runlock`) is refused with
    ``RecordingError`` unless ``partial``: then the records flushed so far are
    exported, and the returned :class:`Export` says how many.

    Raises ``ImportError`` when pynwb is not installed, ``FileExistsError`` when
    ``out_path`` exists and ``overwrite`` is false, and whatever
    :func:`ptncn.record.open_recording` raises for a missing or damaged run
    file (``FileNotFoundError``, ``RecordingError``), unchanged.  The NWB file
    is written under a temporary name and renamed at the end, so a failed
    export leaves no partial file (and leaves an overwritten file intact).
    """
    pynwb, H5DataIO, GenericDataChunkIterator = _import_pynwb()
    run_path, out_path = os.fspath(run_path), os.fspath(out_path)
    step_seconds = float(step_seconds)
    _check_target(run_path, out_path, step_seconds, overwrite)
    with open_recording(run_path) as rec:
        _refuse_live(rec, run_path, partial)
        nwb = _nwb_file(pynwb, rec, run_path, step_seconds, session_description)
        module = nwb.create_processing_module(
            name=MODULE_NAME,
            description="traces recorded by a ptncn simulation (ptncn.record.Recorder); "
                        f"time = step index x {step_seconds:g} s")
        _add_traces(pynwb, module, rec, step_seconds, H5DataIO,
                    _block_iterator(GenericDataChunkIterator))
        records, last = _taken(rec)
        _write_replacing(pynwb, nwb, out_path)
        return Export(out_path, records, len(rec.names), last, rec.writer)
