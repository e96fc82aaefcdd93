"""The spiking P-TNCN's events in a run file (HDF5), beside the Recorder's traces.

``units/<population>`` (NWB-like; ``Z1, Y1, E1, Z2, ...``): the spikes of batch row 0,
as ``unit_index`` and ``spike_times`` (ms), and for error units the event ``sign``.
``membrane``: the membrane potential of the chosen layer-1 units of ``Z1`` and ``Y1``
(batch row 0) every dt, with its ``time`` (ms).

An event, as the backends collect them, is ``(population, unit indices, times in ms,
signs or None)``, or ``("membrane", None, times in ms, potentials (time, 2 k))`` with
the k ``Z1`` columns before the k ``Y1`` columns.
"""

from __future__ import annotations

import numpy as np


def create_event_datasets(h5file, cfg) -> None:
    """Lay out the event datasets of a :class:`~ptncn.spiking.config.SpikingConfig`
    (called by the Recorder before SWMR starts)."""
    if cfg.record_membrane:
        _membrane_datasets(h5file, cfg.record_membrane)
    if cfg.record_spikes:
        _unit_datasets(h5file, cfg.sizes)


def _membrane_datasets(h5file, units) -> None:
    g = h5file.require_group("membrane")
    g.attrs["description"] = ("membrane potential v (threshold 1, reset 0) of the "
                              "layer-1 units in unit_index, batch row 0, every dt")
    g.create_dataset("unit_index", data=np.asarray(units, "i4"))
    g.create_dataset("time", shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
    g["time"].attrs["unit"] = "ms"
    k = len(units)
    for pop in ("Z1", "Y1"):
        g.create_dataset(pop, shape=(0, k), maxshape=(None, k), dtype="f4",
                         chunks=(max(1, 16384 // k), k))


def _unit_datasets(h5file, sizes) -> None:
    g = h5file.require_group("units")
    g.attrs["description"] = ("spike events of batch row 0 of every population: "
                              "unit index and time (ms), appended as they happen")
    L = len(sizes) - 1
    for l in range(1, L + 1):
        for pop in ("Z", "Y") + (("E",) if l < L else ()):
            pg = g.create_group(f"{pop}{l}")
            pg.attrs["n_units"] = sizes[l]
            pg.create_dataset("unit_index", shape=(0,), maxshape=(None,), dtype="i4",
                              chunks=(4096,))
            pg.create_dataset("spike_times", shape=(0,), maxshape=(None,), dtype="f8",
                              chunks=(4096,))
            pg["spike_times"].attrs["unit"] = "ms"
            if pop == "E":
                pg.create_dataset("sign", shape=(0,), maxshape=(None,), dtype="i1",
                                  chunks=(4096,))
                pg["sign"].attrs["meaning"] = "+1: pos event, -1: neg event"


def _append(ds, a) -> None:
    n = ds.shape[0]
    ds.resize((n + len(a),) + ds.shape[1:])
    ds[n:] = a
    ds.flush()


def write_events(h5file, events, cfg) -> None:
    """Append ``events`` to the datasets laid out by :func:`create_event_datasets`
    (called by the Recorder at every flush)."""
    k = len(cfg.record_membrane)
    for name, ii, t, values in events:
        if name == "membrane":
            if "membrane" in h5file:
                g = h5file["membrane"]
                for key, a in (("time", t), ("Z1", values[:, :k]), ("Y1", values[:, k:])):
                    _append(g[key], a)
        elif "units" in h5file:
            pg = h5file["units"][name]
            _append(pg["unit_index"], ii)
            _append(pg["spike_times"], t)
            if values is not None:
                _append(pg["sign"], values)
