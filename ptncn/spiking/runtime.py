"""The runtime targets (``numpy``, ``cython``) of the spiking P-TNCN.

Brian2 pays a fixed preparation cost per ``Network.run`` call (hundreds of ms), far
more than a half-window takes, so the network is not run once per half-window.
Instead one ``Network.run`` covers a whole batch of sequences, in a worker thread,
and a network operation at every half-window boundary hands the counts of the half
just run to :meth:`RuntimeBackend.run_half` and waits for the next request (the
currents, the weights) or for the end of the run.  The two threads never run at
once: one always waits on a queue.  So code generation happens once per run and a
half-window costs only its simulation.
"""

from __future__ import annotations

import math
import queue
import threading

import numpy as np

from ._brian import import_brian2
from .backends import Backend
from .network import build_objects, network_spec, spike_monitors

_STOP = object()
_WAIT_S = 3600.0


class RuntimeBackend(Backend):
    """Half-windows on a Brian2 runtime target; ``net`` is the network, ``monitors``
    the spike monitors (population, SpikeMonitor) of ``record_spikes``."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.net = None
        self.monitors: list = []
        self._vmon = None
        self._worker = None

    # -- the network -------------------------------------------------------------------
    def _open(self) -> None:
        b2 = import_brian2()
        b2.prefs.codegen.target = self.cfg.target
        lay = self.layout
        lifg, errg, syn = build_objects(b2, lay, network_spec(self.batch, self.cfg))
        objs = [lifg, errg]
        self._w = np.zeros(0)
        if syn is not None:
            objs.append(syn)
            if not (np.array_equal(syn.i[:], lay.pre) and np.array_equal(syn.j[:], lay.post)):
                raise RuntimeError("Brian2 reordered the synapses; the weight map is wrong")
            self._w = syn.variables["w"].get_value()
        self.monitors = spike_monitors(b2, lay, lifg, errg) if self.cfg.record_spikes else []
        objs += [mon for _, mon in self.monitors] + self._membrane_monitor(b2, lifg)
        objs.append(b2.NetworkOperation(self._boundary, dt=self.cfg.half_ms * b2.ms,
                                        when="start", name="window_boundary"))
        self.net = b2.Network(*objs)
        self._arr = {(gname, var): g.variables[var].get_value()
                     for gname, g in (("lif", lifg), ("err", errg))
                     for var in ("v", "I", "cnt", "npos", "nneg") if var in g.variables}

    def _membrane_monitor(self, b2, lifg) -> list:
        """The membrane potential of the chosen layer-1 units of batch row 0, every dt."""
        self._vmon = None
        if self.cfg.record_membrane:
            units = np.asarray(self.cfg.record_membrane)
            z1, y1 = self.layout.Z[0], self.layout.Y[0]
            self._vmon = b2.StateMonitor(lifg, "v", record=np.concatenate(
                [z1.start + units, y1.start + units]), name="vmon")
            return [self._vmon]
        return []

    # -- in the worker thread, inside Network.run ---------------------------------------
    def _boundary(self) -> None:
        """Every half-window boundary: hand over the counts of the half just run, then
        wait for the next request and load it (or stop the run)."""
        if self._running:
            a = self._arr
            self._outbox.put(("counts", (a["lif", "cnt"].copy(), a["err", "npos"].copy(),
                                         a["err", "nneg"].copy())))
        msg = self._inbox.get()
        self._running = msg is not _STOP
        if not self._running:
            self._arr["lif", "I"][:] = 0.0
            self.net.stop()
            return
        self._load(*msg)

    def _load(self, half: str, I: np.ndarray, w) -> None:
        """Currents (and weights) of the next half; its population and the error
        units start from rest."""
        a, lay = self._arr, self.layout
        a["lif", "I"][:] = I
        if w is not None:
            self._w[:] = w
        for blk in (lay.Z if half == "Z" else lay.Y):
            a["lif", "v"][blk.start:blk.stop] = 0.0
            a["lif", "cnt"][blk.start:blk.stop] = 0.0
        a["err", "v"][:] = 0.0
        if half == "Z":
            a["err", "npos"][:] = 0.0
            a["err", "nneg"][:] = 0.0

    # -- in the calling thread -----------------------------------------------------------
    def _run(self, half, I, w):
        if self._worker is None:
            self._start_worker()
        self._inbox.put((half, I, w))
        try:
            kind, payload = self._outbox.get(timeout=_WAIT_S)
        except queue.Empty:
            raise RuntimeError("SpikingPTNCN: the Brian2 worker did not answer") from None
        if kind == "error":
            self._worker.join()
            self._worker = None
            raise payload
        if kind != "counts":
            raise RuntimeError(f"SpikingPTNCN: expected counts from the worker, got {kind!r}")
        self._drain_monitors()
        return payload

    def _start_worker(self) -> None:
        self._inbox: queue.Queue = queue.Queue(maxsize=1)
        self._outbox: queue.Queue = queue.Queue()
        self._running = False
        T_s = self.cfg.window_ms / 1000.0
        # restart on a window boundary (a stopped run ends one dt past a half boundary)
        self.net.t_ = int(math.ceil(self.net.t_ / T_s - 1e-9)) * T_s
        net, outbox = self.net, self._outbox
        duration = 1e6 * self.cfg.window_ms * 1e-3 * import_brian2().second

        def work():
            try:
                net.run(duration)
            except BaseException as exc:  # noqa: BLE001  (handed to the calling thread)
                outbox.put(("error", exc))
            else:
                outbox.put(("ended", None))

        self._worker = threading.Thread(target=work, name="SpikingPTNCN-run", daemon=True)
        self._worker.start()

    def _drain_monitors(self) -> None:
        """Move what the monitors recorded into ``events`` and empty the monitors (so
        their memory stays bounded over a long training)."""
        if self._vmon is not None and len(self._vmon.t_):
            mon = self._vmon
            t = np.asarray(mon.t_[:]) * 1000.0
            v = np.asarray(mon.v[:, :], np.float32).T                 # (time, units)
            self.events.append(("membrane", None, t, v))
            mon.resize(0)                         # also sets N = 0
        for name, mon in self.monitors:
            i = np.asarray(mon.i[:])
            if len(i):
                t = np.asarray(mon.t_[:]) * 1000.0
                sign = np.sign(np.asarray(mon.v[:])).astype(np.int8) \
                    if name.startswith("E") else None
                self.events.append((name, i.astype(np.int32), t, sign))
                mon.resize(0)
                mon.variables["N"].set_value(0)

    # -- life cycle ----------------------------------------------------------------------
    def end_run(self) -> None:
        """Stop the run (the worker waits at a boundary); the next half restarts it."""
        w, self._worker = self._worker, None
        if w is None:
            return
        self._inbox.put(_STOP)
        w.join(timeout=_WAIT_S)
        while True:
            try:
                kind, payload = self._outbox.get_nowait()
            except queue.Empty:
                return
            if kind == "error":
                raise payload

    abort = end_run

    def close(self) -> None:
        self.end_run()
        self.net = None
        self.monitors, self._vmon = [], None
        super().close()
