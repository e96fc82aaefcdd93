"""SpikingPTNCN: one P-TNCN step per window of ``window_ms`` in a Brian2 network.

See docs/spiking.md for the design, its convergence to the rate twin
(``PTNCN(act=lif_rate_dt)``) and the shortcuts it takes.  In short, each window
of T ms has two halves of T/2 (:func:`window`):

* **Z half**: the free populations ``Z_l`` (LIF, one neuron per unit and batch
  row) are driven by the constant current ``I = gain * h_l + bias``, where
  ``h_l`` is the previous window's decoded corrected rates and input replayed
  through ``M, V, U`` (a synapse with delay T and a box-car current of width T
  is exactly this).  The signed error units ``e_l`` (l >= 1) are
  integrate-and-fire sigma-delta cells that receive the spikes of ``Z_{l+1}``
  through ``W_{l+1}`` and of ``Z_l`` with weight -1 and emit "pos"/"neg" events.
* **Y half**: the corrected populations ``Y_l`` run on ``gain*(h_l - beta d_l) + bias``
  with ``d`` from the decoded error units.

Spike counters are decoded as rates ``count * tau_ref / (T/2)`` (the units of
``lif_rate``); pre-activations, predictions, perturbations and the LRA updates are
P-TNCN's functions (:mod:`ptncn.ptncn`) applied to the decoded quantities.  How a
half-window runs is the backend's business (:mod:`ptncn.spiking.backends`: Brian2's
runtime targets or the compiled ``cpp_standalone`` server).
"""

from __future__ import annotations

import numpy as np

from .. import activations as acts
from ..learner import Updates, first_nonfinite
from ..ptncn import (MEANINGS as RATE_MEANINGS, LayeredLearner, State, predictions,
                     carry, init_params, layered_table, local_updates, perturbations,
                     preactivations)
from ._brian import import_brian2
from .backends import make_backend
from .config import SpikingConfig
from .events import create_event_datasets, write_events

F32 = np.float32

MEANINGS = {
    **RATE_MEANINGS,
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
#: P-TNCN's quantities and the spike counts, in causal order
ORDER = (("x", "input"), ("h", "all"), ("spikes_z", "all"), ("z", "all"), ("spikes_e", "below"),
         ("mu", "below"), ("x_mu", "input"), ("e0", "input"), ("e", "below"), ("d", "all"),
         ("spikes_y", "all"), ("y", "all"), ("eps", "all"))


def window(backend, p, state: State, x, m, cfg: SpikingConfig, rate, out_fn, rng,
           check) -> dict:
    """One window (one P-TNCN step) on ``backend``: every per-step quantity, by name.

    ``rate`` is the rate twin's config (the equations' constants); ``check(q)``
    vets the quantities so far before each half-window runs.
    """
    L, scale = cfg.L, cfg.tau_ref / cfg.half_ms
    hs = preactivations(p, state, rate)
    q = {"x": x, **{f"h{l}": h for l, h in enumerate(hs, start=1)}}
    check(q)
    zc = backend.run_half("Z", [cfg.gain * h + cfg.bias for h in hs],
                          [p[f"W{l}"] for l in range(2, L + 1)])
    zs = _rates(q, "z", zc.spikes, scale)
    x_mu, mus = predictions(p, zs, out_fn, rng, L)
    e = [(x_mu - x) * m] + [el * m for el in _rates(q, "e", zc.events,
                                                   cfg.err_theta / cfg.half_ms)]
    d = perturbations(p, e, cfg.alpha, L)
    q.update({"x_mu": x_mu, "e0": e[0]})
    for l in range(1, L + 1):
        q[f"z{l}"], q[f"d{l}"] = zs[l - 1], d[l - 1]
        if l < L:
            q[f"mu{l}"], q[f"e{l}"] = mus[l - 1], e[l]
    check(q)
    yc = backend.run_half("Y", [cfg.gain * (h - cfg.beta * dl) + cfg.bias
                                for h, dl in zip(hs, d)])
    ys = _rates(q, "y", yc.spikes, scale)
    for l in range(1, L + 1):
        q[f"y{l}"] = ys[l - 1]
        q[f"eps{l}"] = (zs[l - 1] - ys[l - 1]) * m
    return q


def _rates(q: dict, base: str, counts, scale: float) -> list[np.ndarray]:
    """Decoded rates ``count * scale`` (float32) of layers 1..; the counts go into ``q``
    as ``spikes_<base><l>``."""
    rates = []
    for l, c in enumerate(counts, start=1):
        q[f"spikes_{base}{l}"] = c.astype(F32)
        rates.append((c * scale).astype(F32))
    return rates


class SpikingPTNCN(LayeredLearner):
    """The spiking P-TNCN (Brian2), behind the same learner interface as :class:`~ptncn.PTNCN`.

    Example::

        model = SpikingPTNCN(x_dim=3, hidden=(32, 32), window_ms=100, target="cython")
        model.reset(batch=4)
        x_mu = model.step(x_t, m_t)        # one window of 100 ms
        twin = model.rate_twin()           # PTNCN(act=lif_rate_dt), same weights

    ``hidden`` is a list of layer sizes, or one size repeated ``layers`` times; the
    other keywords are :class:`SpikingConfig`'s and the optimizer's (default the
    published Nesterov, lr 0.075, momentum 0.95).  ``backend`` runs the half-windows;
    :meth:`close` stops its worker thread or server.
    """

    name = "spiking_ptncn"
    Config = SpikingConfig
    docs = "docs/spiking.md"

    def _build(self):
        import_brian2()          # fail early, with the install hint, when Brian2 is missing
        self.rate = self.config.rate_config()
        self.out_fn = acts.get_output(self.config.out)
        self.backend = make_backend(self.config)
        return init_params(self.rate, self.rng)

    def quantity_table(self):
        return layered_table(self.config.sizes, MEANINGS, ORDER)

    def _step(self, params, state, x, m, learn):
        try:
            q = window(self.backend, params, state, x, m, self.config, self.rate,
                       self.out_fn, self.rng, self._check)
        except BaseException:
            self.backend.abort()
            raise
        updates = Updates()
        if learn and state.t > 0:
            updates = Updates(local_updates(params, state, q, self.rate))
            inv_b = F32(1.0 / x.shape[0])
            for u in updates.values():
                u *= inv_b
        return carry(state, x, q), q, updates

    def _check(self, q: dict) -> None:
        """DivergenceError at the first non-finite quantity (before it reaches a network)."""
        bad = first_nonfinite(q, [k for k in self._table if k in q])
        if bad is not None:
            raise self.diverged(bad)

    # -- the sequence and the backend ------------------------------------------------------
    def reset(self, batch: int) -> None:
        self.backend.end_run()
        super().reset(batch)

    def end_sequence(self, learn: bool = True) -> None:
        self.backend.end_run()

    def close(self) -> None:
        """Stop the backend's worker thread or server (a later step starts it again)."""
        self.backend.close()

    def rate_twin(self, dt: bool = True):
        """The rate P-TNCN with phi = lif_rate (dt-rounded if ``dt``) and these weights."""
        from ..ptncn import PTNCN
        rc = self.config.rate_config(dt)
        twin = PTNCN(rc.x_dim, **{k: getattr(rc, k) for k in rc.field_names() if k != "x_dim"},
                     optimizer="sgd", lr=0.0)
        twin.params.update(self.params)
        return twin

    # -- run files and model files ---------------------------------------------------------
    def create_event_datasets(self, h5file) -> None:
        """Called by the Recorder before SWMR starts (:mod:`ptncn.spiking.events`)."""
        create_event_datasets(h5file, self.config)

    def write_events(self, h5file) -> None:
        """Called by the Recorder at every flush: append the spike events so far."""
        write_events(h5file, self.backend.take_events(), self.config)

    @classmethod
    def config_from_file(cls, path, meta, overrides):
        return SpikingConfig.from_file(path, meta, overrides)
