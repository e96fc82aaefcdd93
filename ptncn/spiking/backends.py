"""How a half-window of the spiking P-TNCN runs: the backend protocol.

:meth:`Backend.run_half` runs T/2 from rest with the currents of the driven LIF
populations (``"Z"``: free, ``"Y"``: corrected; one (batch, n_l) array per layer)
and, for the Z half, the error units' weights ``W_2..W_L``; it returns the driven
populations' spike counts and the error units' signed event counts.  The targets
differ only in how a half-window runs: :mod:`~ptncn.spiking.runtime` (``numpy``,
``cython``: a Brian2 ``Network`` in a worker thread) and
:mod:`~ptncn.spiking.standalone` (``cpp_standalone``: a compiled server).  Both place
currents, weights and counts by :func:`~ptncn.spiking.network.network_layout` and
build their network for the batch of the currents they get.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .network import Layout, network_layout


@dataclass
class HalfCounts:
    """What a half-window returns (float64 counts, one (batch, n_l) array per layer)."""

    #: spikes of the driven population of layers 1..L
    spikes: list[np.ndarray]
    #: pos - neg events of the error units e_1..e_{L-1} (they count in the Z half)
    events: list[np.ndarray]


class Backend:
    """One way to run half-windows; subclasses write ``_open``, ``_run`` and the
    life-cycle calls ``end_run``, ``abort`` and ``close``.

    ``events`` collects the recorded spike events (see :mod:`ptncn.spiking.events`)
    until :meth:`take_events`.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.layout: Layout | None = None
        self.batch: int | None = None
        self.events: list = []

    def run_half(self, half: str, currents, W=None) -> HalfCounts:
        """Run T/2 from rest with the driven population's ``currents``; ``W``
        (``[W_2, ..., W_L]``) sets the error units' synapses first."""
        batch = currents[0].shape[0]
        if self.layout is None or self.batch != batch:
            self.close()
            self.layout, self.batch = network_layout(batch, self.cfg.sizes), batch
            self._open()
        lay = self.layout
        pops = lay.Z if half == "Z" else lay.Y
        I = np.zeros(lay.n_lif)
        for blk, c in zip(pops, currents):
            I[blk.start:blk.stop] = c.ravel()
        cnt, npos, nneg = self._run(half, I, None if W is None else self.synapse_weights(W))
        return HalfCounts(
            [cnt[b.start:b.stop].reshape(batch, b.units) for b in pops],
            [(npos[e.start:e.stop] - nneg[e.start:e.stop]).reshape(batch, e.units)
             for e in lay.E])

    def synapse_weights(self, W) -> np.ndarray:
        """Every synapse's weight: ``W_{l+1} * tau_ref`` for Z_{l+1} -> e_l and
        ``-tau_ref`` for Z_l -> e_l (a spike counts tau_ref of rate)."""
        lay, tau_ref = self.layout, self.cfg.tau_ref
        w = np.zeros(lay.n_syn)
        w[lay.own] = -tau_ref
        for (idx, pre, post), Wl in zip(lay.w_maps, W):
            w[idx] = Wl[pre, post] * tau_ref
        return w

    def take_events(self) -> list:
        """The spike events collected since the last call."""
        events, self.events = self.events, []
        return events

    # -- what a target writes ----------------------------------------------------------
    def _open(self) -> None:
        """Build the network for ``self.layout`` (``self.batch`` rows)."""
        raise NotImplementedError

    def _run(self, half: str, I: np.ndarray, w: np.ndarray | None):
        """Run one half-window with every LIF current ``I`` (and synaptic weights ``w``);
        return the LIF spike counts and the error units' pos and neg event counts."""
        raise NotImplementedError

    def end_run(self) -> None:
        """The sequences ended (a window boundary)."""

    def abort(self) -> None:
        """A window was left unfinished: the next half-window starts a new window."""

    def close(self) -> None:
        """Release the network (the next half-window builds it again)."""
        self.layout = self.batch = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def make_backend(cfg) -> Backend:
    """The backend of ``cfg.target`` (raises when the target cannot run here)."""
    if cfg.target == "cpp_standalone":
        from .standalone import StandaloneBackend, compiler_missing
        why = compiler_missing()
        if why:
            raise RuntimeError(f"SpikingPTNCN: {why}; use target 'cython' or 'numpy'")
        return StandaloneBackend(cfg)
    from .runtime import RuntimeBackend
    return RuntimeBackend(cfg)
