"""The Brian2 objects of one SpikingPTNCN window, shared by every codegen target.

One ``NeuronGroup`` ("lif") holds every LIF population (``Z_1, Y_1, Z_2, Y_2, ...``,
each a block of ``batch * n_l`` neurons, batch-row-major), one ("err") holds every
error-unit layer, and one ``Synapses`` object ("err_syn") carries ``Z_{l+1} -> e_l``
through ``W_{l+1}`` and ``Z_l -> e_l`` with weight ``-tau_ref``.  Brian2's runtime
targets pay a fixed cost per object and time step, so fewer objects run faster.

The layout (which neuron is which unit) is plain numpy, computed by
:func:`network_layout` without Brian2, so the standalone server and the runtime
network agree on every index; :func:`network_spec` names the constants a network
is built from (the standalone build cache is keyed by it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LIF_EQS = "dv/dt = (I - v) / tau_m : 1 (unless refractory)\nI : 1\ncnt : 1"
ERR_EQS = "v : 1\nnpos : 1\nnneg : 1"
ERR_RESET = "npos += int(v > 0); nneg += int(v < 0); v -= sign(v) * theta_e"
#: the constants of a window network besides its shape (batch, sizes)
SPEC_KEYS = ("window_ms", "dt_ms", "tau_m", "tau_ref", "err_theta")


@dataclass(frozen=True)
class Block:
    """A population: ``n`` neurons from ``start`` of the group ``group`` ("lif"/"err"),
    batch-row-major with ``units`` neurons per row."""

    name: str
    group: str
    start: int
    n: int
    units: int

    @property
    def stop(self) -> int:
        return self.start + self.n


@dataclass
class Layout:
    """Indices of every population and synapse of a window network."""

    Z: list[Block]
    Y: list[Block]
    E: list[Block]
    n_lif: int
    n_err: int
    pre: np.ndarray          # synapse k: from lif neuron pre[k] ...
    post: np.ndarray         # ... to err neuron post[k]
    # per layer l >= 1: (synapse indices of Z_{l+1} -> e_l, row in W_{l+1}, column)
    w_maps: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    own: np.ndarray          # synapses Z_l -> e_l (weight -tau_ref)

    @property
    def n_syn(self) -> int:
        return len(self.pre)


def network_layout(batch: int, sizes) -> Layout:
    """The neuron and synapse indices for ``batch`` rows and layer sizes ``sizes``
    (``sizes[0]`` is the input, ``sizes[1:]`` the latent layers)."""
    L = len(sizes) - 1
    Z, Y, E = [], [], []
    off = 0
    for l in range(1, L + 1):
        n = batch * sizes[l]
        Z.append(Block(f"Z{l}", "lif", off, n, sizes[l]))
        Y.append(Block(f"Y{l}", "lif", off + n, n, sizes[l]))
        off += 2 * n
    n_lif = off
    off = 0
    for l in range(1, L):
        n = batch * sizes[l]
        E.append(Block(f"E{l}", "err", off, n, sizes[l]))
        off += n
    n_err = max(off, 1)
    pres, posts, w_maps, owns = [], [], [], []
    k = 0
    for l in range(1, L):
        n, nu = sizes[l], sizes[l + 1]
        zu, zl, e = Z[l], Z[l - 1], E[l - 1]
        bb, ii, jj = np.meshgrid(np.arange(batch), np.arange(nu), np.arange(n), indexing="ij")
        pres.append(zu.start + (bb * nu + ii).ravel())
        posts.append(e.start + (bb * n + jj).ravel())
        w_maps.append((np.arange(k, k + bb.size), ii.ravel(), jj.ravel()))
        k += bb.size
        r = np.arange(batch * n)
        pres.append(zl.start + r)
        posts.append(e.start + r)
        owns.append(np.arange(k, k + r.size))
        k += r.size
    cat = (lambda xs: np.concatenate(xs).astype(np.int64)) if pres else \
        (lambda xs: np.zeros(0, np.int64))
    return Layout(Z, Y, E, n_lif, n_err, cat(pres), cat(posts), w_maps, cat(owns))


def network_spec(batch: int, cfg) -> dict:
    """What a window network for ``batch`` rows of a SpikingConfig ``cfg`` is built from
    (JSON-able): shape, window, LIF and error-unit constants, spike recording."""
    spec = {"batch": int(batch), "sizes": [int(s) for s in cfg.sizes]}
    for k in SPEC_KEYS:
        spec[k] = float(getattr(cfg, k))
    if cfg.record_spikes:
        spec["record_spikes"] = True
    return spec


def build_objects(b2, layout: Layout, options: dict):
    """The Brian2 groups (lif, err, err_syn or None) for ``layout`` and a
    :func:`network_spec` ``options``; the synapses are created in the order of
    ``layout.pre/post``, so synapse k is entry k."""
    ms = b2.ms
    dt = options["dt_ms"] * ms
    ns = {"tau_m": options["tau_m"] * ms, "theta_e": options["err_theta"]}
    lifg = b2.NeuronGroup(layout.n_lif, LIF_EQS, threshold="v > 1", reset="v = 0; cnt += 1",
                          refractory=options["tau_ref"] * ms, method="exact", dt=dt,
                          namespace=ns, name="lif")
    errg = b2.NeuronGroup(layout.n_err, ERR_EQS, threshold="abs(v) >= theta_e",
                          reset=ERR_RESET, dt=dt, namespace=ns, name="err")
    syn = None
    if layout.n_syn:
        syn = b2.Synapses(lifg, errg, "w : 1", on_pre="v_post += w", dt=dt, namespace=ns,
                          name="err_syn")
        syn.connect(i=layout.pre, j=layout.post)
    return lifg, errg, syn


def spike_monitors(b2, layout: Layout, lifg, errg) -> list:
    """A SpikeMonitor ``spk_<population>`` of batch row 0 of every population (error
    units also record ``v``, whose sign is the event's), as (population, monitor)."""
    mons = []
    for blk in [*layout.Z, *layout.Y, *layout.E]:
        g = lifg if blk.group == "lif" else errg
        mon = b2.SpikeMonitor(g[blk.start:blk.start + blk.units],
                              variables=["v"] if blk.group == "err" else None,
                              record=True, name=f"spk_{blk.name}")
        mons.append((blk.name, mon))
    return mons
