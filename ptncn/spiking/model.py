"""SpikingPTNCN: one P-TNCN step per window of ``window_ms`` in a Brian2 network.

See docs/spiking.md for the design, its convergence to the rate twin
(``PTNCN(act=lif_rate_dt)``) and the shortcuts it takes.  In short, each window
of T ms has two halves of T/2:

* **Z half**: the free populations ``Z_l`` (LIF, one neuron per unit and batch
  row) are driven by the constant current ``I = gain * h_l + bias``, where
  ``h_l`` is the previous window's decoded corrected rates and input replayed
  through ``M, V, U`` (a synapse with delay T and a box-car current of width T
  is exactly this).  The signed error units ``e_l`` (l >= 1) are
  integrate-and-fire sigma-delta cells that receive the spikes of ``Z_{l+1}``
  through ``W_{l+1}`` and of ``Z_l`` with weight -1 and emit "pos"/"neg" events.
* **Y half**: the corrected populations ``Y_l`` run on ``gain*(h_l - beta d_l) + bias``
  with ``d`` from the decoded error units.

Spike counters (``cnt`` / ``npos``, ``nneg``) are decoded as rates
``count * tau_ref / (T/2)`` (the units of ``lif_rate``); the LRA updates are the
rate model's formulas applied to the decoded quantities (numpy, between halves).

Runtime targets (``numpy``, ``cython``): the whole run is one ``Network.run`` in a
worker thread; a network operation at every half-window boundary exchanges the
inputs and the predictions with :meth:`SpikingPTNCN.step` through two queues, so the
step-wise learner interface costs no per-step code generation.  ``cpp_standalone``:
the same network compiled once per shape and served half-window by half-window by
one process (:mod:`ptncn.spiking.standalone`); ``step`` runs the same boundary code
between the two halves, without a thread.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from typing import Sequence

import numpy as np

from .. import activations as acts
from ..errors import DivergenceError, ModelFileError
from ..learner import (FORMAT_NAME, Learner, ParamDict, check_step_input, pack_params,
                       read_model_file, unpack_params,
                       write_model_file)
from ..optim import Optimizer, make_optimizer, resolve_optimizer
from ..ptncn import (LayeredQuantities, PTNCNConfig, State, init_params, local_updates,
                     preactivations)
from ._brian import import_brian2
from .network import build_objects, network_layout

F32 = np.float32
FORMAT_VERSION = 1
TARGETS = ("numpy", "cython", "cpp_standalone")
_STOP = object()
_WAIT_S = 3600.0


class SpikingPTNCN(LayeredQuantities, Learner):
    """The spiking P-TNCN (Brian2), behind the same learner interface as :class:`~ptncn.PTNCN`.

    Example::

        model = SpikingPTNCN(x_dim=3, hidden=(32, 32), window_ms=100, target="cython")
        model.reset(batch=4)
        x_mu = model.step(x_t, m_t)        # one window of 100 ms
        twin = model.rate_twin()           # PTNCN(act=lif_rate_dt), same weights
    """

    def __init__(self, x_dim: int, hidden: int | Sequence[int] = 64, *, layers: int = 2,
                 out="sigmoid", beta: float = 0.1, alpha: float = 0.001, gamma: float = 1.0,
                 zeta: float = 1.0, clip: float = 1.0, wght_sd: float = 0.05,
                 err_wght_sd: float = 0.05, temporal_error_rule: bool = False,
                 window_ms: float = 50.0, tau_m: float = 10.0, tau_ref: float = 2.0,
                 gain: float = 2.0, bias: float = 2.0, dt_ms: float = 0.1,
                 err_theta: float = 0.5, target: str = "cython", record_spikes: bool = False,
                 record_membrane: Sequence[int] = (), seed: int = 1234, optimizer: str | Optimizer = "nesterov", lr: float = 0.075,
                 momentum: float = 0.95, weight_decay: float = 0.0, max_norm: float = 0.0,
                 optimizer_options: dict | None = None):
        import_brian2()          # fail early, with the install hint, when Brian2 is missing
        if isinstance(hidden, (int, np.integer)):
            hidden = (int(hidden),) * int(layers)
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if target == "cpp_standalone":
            from .standalone import compiler_missing
            why = compiler_missing()
            if why:
                raise RuntimeError(f"SpikingPTNCN: {why}; use target 'cython' or 'numpy'")
            if list(record_membrane):
                raise ValueError("SpikingPTNCN: record_membrane needs a runtime target "
                                 "('cython' or 'numpy'); the cpp_standalone server returns "
                                 "spike counts and spike events only")
        self.options = dict(hidden=list(int(h) for h in hidden), out=acts.name_of(out),
                            beta=float(beta), alpha=float(alpha), gamma=float(gamma),
                            zeta=float(zeta), clip=float(clip), wght_sd=float(wght_sd),
                            err_wght_sd=float(err_wght_sd),
                            temporal_error_rule=bool(temporal_error_rule),
                            window_ms=float(window_ms), tau_m=float(tau_m),
                            tau_ref=float(tau_ref), gain=float(gain), bias=float(bias),
                            dt_ms=float(dt_ms), err_theta=float(err_theta), target=target,
                            record_spikes=bool(record_spikes),
                            record_membrane=[int(u) for u in record_membrane], seed=int(seed))
        bad = [u for u in self.options["record_membrane"] if not 0 <= u < self.options["hidden"][0]]
        if bad:
            raise ValueError(f"record_membrane: units {bad} outside layer 1 "
                             f"(0..{self.options['hidden'][0] - 1})")
        opt = resolve_optimizer(optimizer, lr, momentum, weight_decay, max_norm,
                                optimizer_options)
        self._setup(int(x_dim), out, opt)

    # -- construction -----------------------------------------------------------------
    def _setup(self, x_dim: int, out, opt: Optimizer) -> None:
        o = self.options
        half = o["window_ms"] / 2.0
        nsteps = half / o["dt_ms"]
        if abs(nsteps - round(nsteps)) > 1e-6 or round(nsteps) < 1:
            raise ValueError(f"window_ms/2 = {half} must be a whole number of dt_ms = "
                             f"{o['dt_ms']} steps")
        if not half > o["tau_ref"]:
            raise ValueError(f"window_ms/2 = {half} must exceed tau_ref = {o['tau_ref']}")
        if not o["err_theta"] > 0:
            raise ValueError("err_theta must be > 0")
        self.phi = acts.make_lif_rate(o["tau_m"], o["tau_ref"], 1.0, 1.0, o["gain"], o["bias"],
                                      o["dt_ms"])
        self.config = PTNCNConfig(x_dim=x_dim, hidden=tuple(o["hidden"]), act=self.phi,
                                  out=out, beta=o["beta"], alpha=o["alpha"], gamma=o["gamma"],
                                  zeta=o["zeta"], clip=o["clip"], wght_sd=o["wght_sd"],
                                  err_wght_sd=o["err_wght_sd"], K=1,
                                  temporal_error_rule=o["temporal_error_rule"], seed=o["seed"])
        self.out_fn = acts.get_output(out)
        self.rng = np.random.default_rng(o["seed"])
        self.params = ParamDict(init_params(self.config, self.rng))
        self.optimizer = opt
        self.state: State | None = None
        self.quantities: dict[str, np.ndarray] = {}
        self.updates: dict[str, np.ndarray] = {}
        self.steps_taken = 0
        self.extra_meta: dict = {}
        self._net = None
        self._server = None
        self._net_batch = None
        self._worker = None
        self._windows_run = 0           # whole windows of simulated time so far
        self._events: list = []         # drained spike events (for write_events)
        self._events_lock = threading.Lock()

    @property
    def window_ms(self) -> float:
        return self.options["window_ms"]

    def rate_twin(self, dt: bool = True):
        """The rate P-TNCN with phi = lif_rate (dt-rounded if ``dt``) and these weights."""
        from ..ptncn import PTNCN
        o = self.options
        phi = acts.make_lif_rate(o["tau_m"], o["tau_ref"], 1.0, 1.0, o["gain"], o["bias"],
                                 o["dt_ms"] if dt else None)
        twin = PTNCN(self.config.x_dim, hidden=tuple(o["hidden"]), act=phi, out=o["out"],
                     beta=o["beta"], alpha=o["alpha"], gamma=o["gamma"], zeta=o["zeta"],
                     clip=o["clip"], wght_sd=o["wght_sd"], err_wght_sd=o["err_wght_sd"],
                     temporal_error_rule=o["temporal_error_rule"], seed=o["seed"],
                     optimizer="sgd", lr=0.0, engine="reference")
        twin.params.update(self.params)
        return twin

    # -- the Brian2 network -------------------------------------------------------------
    def _build(self, batch: int) -> None:
        """The window network for ``batch`` rows (:mod:`ptncn.spiking.network`): a Brian2
        ``Network`` run in a worker thread for the runtime targets, a compiled server
        process for ``cpp_standalone`` (:mod:`ptncn.spiking.standalone`)."""
        o, cfg = self.options, self.config
        lay = network_layout(batch, cfg.sizes)
        self._Z, self._Y, self._E = lay.Z, lay.Y, lay.E
        self._w_maps = lay.w_maps
        self._close_network()
        if o["target"] == "cpp_standalone":
            from .standalone import StandaloneServer, spec_of
            self._server = StandaloneServer(spec_of(batch, cfg.sizes, o))
            self._arr = {(g, var): np.zeros(lay.n_lif if g == "lif" else lay.n_err)
                         for g, var in (("lif", "v"), ("lif", "I"), ("lif", "cnt"),
                                        ("err", "v"), ("err", "npos"), ("err", "nneg"))}
            self._w_arr = np.zeros(lay.n_syn)
            self._w_arr[lay.own] = -o["tau_ref"]
            self._mons, self._vmon = [], None
            self._net_batch = batch
            return
        b2 = import_brian2()
        b2.prefs.codegen.target = o["target"]
        lifg, errg, syn = build_objects(b2, lay, o)
        objs = [lifg, errg]
        self._w_arr = np.zeros(0)
        if syn is not None:
            objs.append(syn)
            if not (np.array_equal(syn.i[:], lay.pre) and np.array_equal(syn.j[:], lay.post)):
                raise RuntimeError("Brian2 reordered the synapses; the weight map is wrong")
            self._w_arr = syn.variables["w"].get_value()
            self._w_arr[lay.own] = -o["tau_ref"]
        self._mons = []
        if o["record_spikes"]:
            for blk in [*self._Z, *self._Y, *self._E]:
                g = lifg if blk.group == "lif" else errg
                sub = g[blk.start:blk.start + blk.units]          # batch row 0
                mon = b2.SpikeMonitor(sub, variables=["v"] if blk.group == "err" else None,
                                      record=True, name=f"spk_{blk.name}")
                self._mons.append((blk.name, mon))
                objs.append(mon)
        self._vmon = None
        if o["record_membrane"]:
            # membrane potential of the chosen layer-1 units of batch row 0, every dt
            units = np.asarray(o["record_membrane"])
            z1, y1 = self._Z[0], self._Y[0]
            self._vmon = b2.StateMonitor(lifg, "v", record=np.concatenate(
                [z1.start + units, y1.start + units]), name="vmon")
            objs.append(self._vmon)
        op = b2.NetworkOperation(self._boundary, dt=(o["window_ms"] / 2) * b2.ms, when="start",
                                 name="window_boundary")
        objs.append(op)
        self._net = b2.Network(*objs)
        self._net_batch = batch
        self._arr = {}
        for gname, g in (("lif", lifg), ("err", errg)):
            for var in ("v", "I", "cnt", "npos", "nneg"):
                if var in g.variables:
                    self._arr[(gname, var)] = g.variables[var].get_value()

    def _a(self, blk, var):
        return self._arr[(blk.group, var)][blk.start:blk.start + blk.n]

    # -- the window logic (runs in the worker thread, inside Network.run) ---------------
    def _boundary(self):
        """Every half-window boundary.  Even: finish the previous step (decode Y, learn,
        hand the quantities over), then wait for step() to ask for the next window; odd:
        decode Z and the error units, hand x_mu over, wait for x and start the Y half.
        The two threads never run at once: one always waits on a queue."""
        k = self._k
        self._k += 1
        if k % 2 == 0:
            if k > 0:
                self._outbox.put(("done", self._finish_step()))
            msg = self._inbox.get()
            if msg is _STOP:
                self._net.stop()
                return
            self._start_z()
        else:
            self._end_z()
            self._outbox.put(("pred", self._q["x_mu"]))
            msg = self._inbox.get()
            if msg is _STOP:
                self._net.stop()
                for blk in self._Z:
                    self._a(blk, "I")[:] = 0.0
                return
            self._msg = msg
            self._start_y()

    def _check_finite(self, named):
        """Raise DivergenceError at the first non-finite array (before anything of this
        step is applied: parameters and carried state stay as they were)."""
        for name, a in named:
            if not np.all(np.isfinite(a)):
                raise DivergenceError(self.steps_taken, name,
                                      f"t={self.state.t} of the sequence")

    def _start_z(self):
        cfg, o, p = self.config, self.options, self.params
        for l, (idx, pre, post) in enumerate(self._w_maps, start=1):
            self._w_arr[idx] = p[f"W{l + 1}"][pre, post] * o["tau_ref"]   # e_l <- Z_{l+1}
        hs = preactivations(p, self.state, cfg)
        self._check_finite((f"h{l}", h) for l, h in enumerate(hs, start=1))
        self._hs = hs
        for l in range(cfg.L):
            gz, gy = self._Z[l], self._Y[l]
            self._a(gz, "I")[:] = (o["gain"] * hs[l] + o["bias"]).ravel()
            self._a(gz, "v")[:] = 0.0
            self._a(gz, "cnt")[:] = 0.0
            self._a(gy, "I")[:] = 0.0
        for e in self._E:
            self._a(e, "v")[:] = 0.0
            self._a(e, "npos")[:] = 0.0
            self._a(e, "nneg")[:] = 0.0

    def _end_z(self):
        cfg, o, p = self.config, self.options, self.params
        B, sizes = self._net_batch, cfg.sizes
        half = o["window_ms"] / 2
        scale = o["tau_ref"] / half
        q = {}
        for l in range(1, cfg.L + 1):
            c = self._a(self._Z[l - 1], "cnt").reshape(B, sizes[l])
            q[f"spikes_z{l}"] = c.astype(F32)
            q[f"z{l}"] = (c * scale).astype(F32)
            q[f"h{l}"] = self._hs[l - 1]
            self._a(self._Z[l - 1], "I")[:] = 0.0
        for l in range(1, cfg.L):
            e = self._E[l - 1]
            net_ev = (self._a(e, "npos") - self._a(e, "nneg")).reshape(B, sizes[l])
            q[f"spikes_e{l}"] = net_ev.astype(F32)
            q[f"e_raw{l}"] = (net_ev * (o["err_theta"] / half)).astype(F32)
            # the error units rest in the Y half (a residue |v| >= err_theta would
            # otherwise keep emitting events that no decoded quantity counts)
            self._a(e, "v")[:] = 0.0
            q[f"mu{l}"] = q[f"z{l + 1}"] @ p[f"W{l + 1}"]
        q["x_mu"] = self.out_fn(q["z1"] @ p["W1"], self.rng)
        self._check_finite([(f"mu{l}", q[f"mu{l}"]) for l in range(1, cfg.L)]
                           + [("x_mu", q["x_mu"])])
        self._q = q

    def _start_y(self):
        cfg, o, p = self.config, self.options, self.params
        x, m, _learn = self._msg
        q = self._q
        L = cfg.L
        q["x"] = x
        e = [(q["x_mu"] - x) * m] + [q.pop(f"e_raw{l}") * m for l in range(1, L)]
        q["e0"] = e[0]
        for l in range(1, L):
            q[f"e{l}"] = e[l]
        for l in range(1, L + 1):
            d = e[l - 1] @ p[f"E{l}"]
            if l < L:
                d -= F32(cfg.alpha) * e[l]
            self._check_finite([(f"d{l}", d)])
            q[f"d{l}"] = d
            g = self._Y[l - 1]
            self._a(g, "I")[:] = (o["gain"] * (self._hs[l - 1] - cfg.beta * d)
                                  + o["bias"]).ravel()
            self._a(g, "v")[:] = 0.0
            self._a(g, "cnt")[:] = 0.0

    def _finish_step(self):
        cfg, o = self.config, self.options
        B, sizes = self._net_batch, cfg.sizes
        x, m, learn = self._msg
        q = self._q
        scale = o["tau_ref"] / (o["window_ms"] / 2)
        for l in range(1, cfg.L + 1):
            c = self._a(self._Y[l - 1], "cnt").reshape(B, sizes[l])
            self._a(self._Y[l - 1], "I")[:] = 0.0
            q[f"spikes_y{l}"] = c.astype(F32)
            q[f"y{l}"] = (c * scale).astype(F32)
            q[f"eps{l}"] = (q[f"z{l}"] - q[f"y{l}"]) * m
        state = self.state
        updates = {}
        if learn and state.t > 0:
            updates = local_updates(self.params, state, q, cfg)
            inv_b = F32(1.0 / x.shape[0])
            for u in updates.values():
                u *= inv_b
            self._check_finite((f"d{k}", u) for k, u in updates.items())
            applied = {f"d{k}": u.copy() for k, u in updates.items()}
            self.optimizer.step(self.params, updates)
            updates = applied
        self._drain_monitors()
        self.state = State(x, [q[f"y{l}"] for l in range(1, cfg.L + 1)],
                           [q[f"eps{l}"] for l in range(1, cfg.L + 1)], state.t + 1)
        return q, updates

    def _drain_monitors(self):
        """Move what the monitors recorded since the last call into ``self._events`` and
        empty the monitors (so their memory stays bounded over a long training)."""
        batch = []
        if self._vmon is not None:
            mon = self._vmon
            if len(mon.t_):
                t = np.asarray(mon.t_[:]) * 1000.0
                v = np.asarray(mon.v[:, :], np.float32).T                 # (time, units)
                batch.append(("membrane", None, t, v))
                mon.resize(0)                         # also sets N = 0
        for name, mon in self._mons:
            i = np.asarray(mon.i[:])
            if len(i):
                t = np.asarray(mon.t_[:]) * 1000.0
                sign = np.sign(np.asarray(mon.v[:])).astype(np.int8) \
                    if name.startswith("E") else None
                batch.append((name, i.astype(np.int32), t, sign))
                mon.resize(0)
                mon.variables["N"].set_value(0)
        if batch:
            with self._events_lock:
                self._events.extend(batch)

    # -- the worker -------------------------------------------------------------------
    def _start_worker(self):
        B = self.state.batch
        if self._net is None or self._net_batch != B:
            self._build(B)
        self._inbox: queue.Queue = queue.Queue(maxsize=1)
        self._outbox: queue.Queue = queue.Queue()
        self._k = 0
        T_s = self.options["window_ms"] / 1000.0
        # restart on a window boundary (a stopped run ends one dt past a half boundary)
        self._windows_run = int(math.ceil(self._net.t_ / T_s - 1e-9))
        self._net.t_ = self._windows_run * T_s
        net = self._net

        def work():
            try:
                net.run(1e6 * self.options["window_ms"] * 1e-3 * import_brian2().second)
            except BaseException as exc:  # noqa: BLE001  (handed to the main thread)
                self._outbox.put(("error", exc))
            else:
                self._outbox.put(("ended", None))

        self._worker = threading.Thread(target=work, name="SpikingPTNCN-run", daemon=True)
        self._worker.start()

    def _get(self, want: str):
        try:
            kind, payload = self._outbox.get(timeout=_WAIT_S)
        except queue.Empty:
            raise RuntimeError("SpikingPTNCN: the Brian2 worker did not answer") from None
        if kind == "error":
            self._worker.join()
            self._worker = None
            raise payload
        if kind != want:
            raise RuntimeError(f"SpikingPTNCN: expected {want!r} from the worker, got {kind!r}")
        return payload

    def _stop_worker(self):
        w = self._worker
        if w is None:
            return
        self._worker = None
        self._inbox.put(_STOP)          # the worker always waits on the inbox between calls
        w.join(timeout=_WAIT_S)
        self._drain_outbox()

    def _drain_outbox(self):
        while True:
            try:
                kind, payload = self._outbox.get_nowait()
            except queue.Empty:
                return
            if kind == "error":
                raise payload

    def _close_network(self):
        self._stop_worker()
        if self._server is not None:
            self._server.close()
            self._server = None
        self._net = None
        self._net_batch = None

    def close(self):
        """Stop the worker thread and the standalone server (a later step restarts them)."""
        self._close_network()

    def __del__(self):
        try:
            self._close_network()
        except Exception:  # noqa: BLE001
            pass

    # -- learner interface --------------------------------------------------------------
    def reset(self, batch: int) -> None:
        if int(batch) != batch or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        self._stop_worker()
        self.state = State.zeros(int(batch), self.config.sizes)
        self.quantities = {}
        self.updates = {}

    def end_sequence(self, learn: bool = True) -> None:
        self._stop_worker()

    def _check_input(self, x, mask):
        x, m = check_step_input(x, mask, self.config.x_dim,
                                None if self.state is None else self.state.batch)
        if self.state is None:
            self.reset(x.shape[0])
        return x, m

    def step(self, x, mask=None, learn: bool = True) -> np.ndarray:
        """Simulate one window; learn (unless ``learn=False`` or first step); return x_mu."""
        x, m = self._check_input(x, mask)
        if self.options["target"] == "cpp_standalone":
            return self._step_standalone(x, m, bool(learn))
        if self._worker is None:
            self._start_worker()
        self._inbox.put("go")
        x_mu = self._get("pred")
        self._inbox.put((x, m, bool(learn)))
        q, upd = self._get("done")
        self.quantities = q
        self.updates = upd
        self.steps_taken += 1
        return x_mu

    def _step_standalone(self, x, m, learn):
        """One window on the compiled server: Z half, numpy, Y half, numpy (no thread)."""
        B = self.state.batch
        if self._server is None or self._net_batch != B:
            self._build(B)
        from .standalone import StandaloneError
        srv, a = self._server, self._arr
        try:
            T = self.options["window_ms"]
            self._start_z()
            cnt, npos, nneg = srv.run_half(a[("lif", "I")], self._w_arr)
            events = [(p, i, t + self._windows_run * T, sg) for p, i, t, sg in srv.events]
            a[("lif", "cnt")][:] = cnt
            a[("err", "npos")][:] = npos
            a[("err", "nneg")][:] = nneg
            self._end_z()
            x_mu = self._q["x_mu"]
            self._msg = (x, m, learn)
            self._start_y()
            a[("lif", "cnt")][:] = srv.run_half(a[("lif", "I")])[0]
            events += [(p, i, t + (self._windows_run + 0.5) * T, sg)
                       for p, i, t, sg in srv.events]
        except StandaloneError:
            self._server = None          # the step had no effect; the next one restarts it
            self._net_batch = None
            raise
        self.quantities, self.updates = self._finish_step()
        self._windows_run += 1
        if events:
            with self._events_lock:
                self._events.extend(events)
        self.steps_taken += 1
        return x_mu

    @property
    def recordable(self) -> tuple[str, ...]:
        L = self.config.L
        names = ["x", "x_mu", "e0"]
        for l in range(1, L + 1):
            names += [f"h{l}", f"z{l}", f"d{l}", f"y{l}", f"eps{l}", f"spikes_z{l}",
                      f"spikes_y{l}"]
            if l < L:
                names += [f"mu{l}", f"e{l}", f"spikes_e{l}"]
        names += list(self.params)
        names += [f"d{k}" for k in self.params]
        return tuple(names)

    _MEANINGS = {
        "x": ("input x_t (the target of the prediction x_mu)", "input units"),
        "x_mu": ("prediction of x_t made before seeing it, out(z1 @ W1)", "output units"),
        "e0": ("error units of the input layer, (x_mu - x) * m", "output units"),
        "spikes_z": ("spike count of Z{l} (free state) in the Z half-window", "spikes"),
        "spikes_y": ("spike count of Y{l} (corrected state) in the Y half-window", "spikes"),
        "spikes_e": ("signed event count (pos - neg) of error units e{l}", "events"),
        "z": ("decoded free rate of layer {l}, count * tau_ref / (T/2)", "rate * tau_ref"),
        "y": ("decoded corrected rate of layer {l}", "rate * tau_ref"),
        "e": ("decoded error units of layer {l}, (pos - neg) * err_theta / (T/2)",
              "rate * tau_ref"),
        "eps": ("temporal error of layer {l}, z{l} - y{l} (decoded)", "rate * tau_ref"),
        "h": ("input current of layer {l} (replayed previous window), before gain/bias",
              "a.u."),
        "d": ("perturbation of layer {l} from the decoded errors", "a.u."),
        "mu": ("top-down prediction of z{l} from the decoded z{l1}", "rate * tau_ref"),
    }

    # -- spike events into the run file ------------------------------------------------
    def create_event_datasets(self, h5file) -> None:
        """Called by the Recorder before SWMR starts: NWB-like ``units/<population>``."""
        if self.options["record_membrane"]:
            g = h5file.require_group("membrane")
            g.attrs["description"] = ("membrane potential v (threshold 1, reset 0) of the "
                                      "layer-1 units in unit_index, batch row 0, every dt")
            g.create_dataset("unit_index", data=np.asarray(self.options["record_membrane"],
                                                           "i4"))
            g.create_dataset("time", shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
            g["time"].attrs["unit"] = "ms"
            k = len(self.options["record_membrane"])
            for pop in ("Z1", "Y1"):
                g.create_dataset(pop, shape=(0, k), maxshape=(None, k), dtype="f4",
                                 chunks=(max(1, 16384 // k), k))
        if not self.options["record_spikes"]:
            return
        g = h5file.require_group("units")
        g.attrs["description"] = ("spike events of batch row 0 of every population: "
                                  "unit index and time (ms), appended as they happen")
        for l in range(1, self.config.L + 1):
            for pop in ("Z", "Y") + (("E",) if l < self.config.L else ()):
                pg = g.create_group(f"{pop}{l}")
                pg.attrs["n_units"] = self.config.sizes[l]
                pg.create_dataset("unit_index", shape=(0,), maxshape=(None,), dtype="i4",
                                  chunks=(4096,))
                pg.create_dataset("spike_times", shape=(0,), maxshape=(None,), dtype="f8",
                                  chunks=(4096,))
                pg["spike_times"].attrs["unit"] = "ms"
                if pop == "E":
                    pg.create_dataset("sign", shape=(0,), maxshape=(None,), dtype="i1",
                                      chunks=(4096,))
                    pg["sign"].attrs["meaning"] = "+1: pos event, -1: neg event"

    def write_events(self, h5file) -> None:
        """Called by the Recorder at every flush: append the drained spike events."""
        if not (self.options["record_spikes"] or self.options["record_membrane"]):
            return
        with self._events_lock:
            batch, self._events = self._events, []
        for name, ii, t, sign in batch:
            if name == "membrane":
                if "membrane" not in h5file:
                    continue
                g, k = h5file["membrane"], len(self.options["record_membrane"])
                n = g["time"].shape[0]
                for key, a in (("time", t), ("Z1", sign[:, :k]), ("Y1", sign[:, k:])):
                    g[key].resize((n + len(t),) + g[key].shape[1:])
                    g[key][n:] = a
                    g[key].flush()
                continue
            if "units" not in h5file:
                continue
            pg = h5file["units"][name]
            cols = [("unit_index", ii), ("spike_times", t)]
            if sign is not None:
                cols.append(("sign", sign))
            for key, a in cols:
                ds = pg[key]
                n = ds.shape[0]
                ds.resize((n + len(a),))
                ds[n:] = a
                ds.flush()

    # -- persistence ----------------------------------------------------------------------
    def save(self, path, include_state: bool = False, extra_meta: dict | None = None) -> None:
        path = os.fspath(path)
        opt_state = self.optimizer.state_dict()
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "class": "SpikingPTNCN",
                "x_dim": self.config.x_dim, "options": self.options,
                "optimizer": opt_state["hyperparams"], "optimizer_t": opt_state["t"],
                "steps_taken": self.steps_taken, "rng": self.rng.bit_generator.state}
        if extra_meta:
            meta["extra"] = extra_meta
        arrays = pack_params(self.params, self.optimizer)
        if include_state and self.state is not None:
            st = self.state
            meta["state_t"] = st.t
            arrays["state/x_prev"] = st.x_prev
            for l, (a, e) in enumerate(zip(st.s, st.eps_prev), start=1):
                arrays[f"state/s{l}"] = a
                arrays[f"state/eps_prev{l}"] = e
        write_model_file(path, meta, arrays)

    @classmethod
    def load(cls, path, **overrides) -> "SpikingPTNCN":
        path = os.fspath(path)
        meta, arrays = read_model_file(path, FORMAT_VERSION)
        if meta.get("class") != "SpikingPTNCN":
            raise ModelFileError(f"{path}: a {meta.get('class')} model, not SpikingPTNCN")
        opts = dict(meta["options"])
        opts.update(overrides)
        hp = dict(meta["optimizer"])
        opt = make_optimizer(hp.pop("name"), **hp)
        model = cls(meta["x_dim"], optimizer=opt, **opts)
        unpack_params(path, arrays, model.params, opt, meta["optimizer_t"])
        model.rng.bit_generator.state = meta["rng"]
        model.steps_taken = int(meta["steps_taken"])
        model.extra_meta = meta.get("extra", {})
        if "state_t" in meta:
            L = model.config.L
            model.state = State(np.array(arrays["state/x_prev"], F32),
                                [np.array(arrays[f"state/s{l}"], F32) for l in range(1, L + 1)],
                                [np.array(arrays[f"state/eps_prev{l}"], F32)
                                 for l in range(1, L + 1)], int(meta["state_t"]))
        return model
