"""The fast P-TNCN engine: stacked weights, formed updates, one-pass optimizer kernels.

Same equations as :mod:`ptncn.ptncn` (tested against it to 1e-6); what makes it
fast (see docs/performance.md):

1. **Stacked bottom-up/recurrent/top-down weights.**  Layer l's ``M_l, V_l, U_l``
   and ``W_{l+1}`` live in one contiguous block ``B_l = [M_l; V_l; U_l; W_{l+1}]``,
   so ``h_l = [s_{l-1} | s_l | s_{l+1}] @ B_l`` is a single GEMM, and the four
   updates that share the right factor ``eps_l`` are a single GEMM too.
   ``params["M1"]`` etc. are views.

2. **Each block's update formed once, into a buffer kept between steps.**  The
   clip norms are dot products of its row ranges (one BLAS call each), and
   ``E_l``'s update is ``W_l``'s transposed (copied, not multiplied again).

3. **One pass per parameter for the optimizer.**  ``a = mu a + s g;
   p -= lr (s g + mu a)`` (Nesterov; ``s`` the clip factor over the batch size)
   reads ``p, a, g`` once and writes ``p, a`` once in a Numba kernel
   (:mod:`ptncn.kernels`; NumPy passes without the ``fast`` extra).  Optimizers
   without a kernel (Adam, RMSprop, weight decay, max-norm) take their ordinary
   update.

The engine owns the parameter storage (``params``: the paper's names, views into
the blocks) and has the reference engine's interface (``preactivations``,
``updates``, ``apply``; see :class:`ptncn.ptncn.ReferenceEngine`).  The applied
updates stay available by name (``W1`` ...), scaled when someone reads them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .blas import get_backend
from .kernels import get_kernels

F32 = np.float32


def clip_scale(norm: float, radius: float) -> float:
    """The factor tf.clip_by_norm applies: radius / max(norm, radius) (1 when off)."""
    if radius <= 0 or not norm > radius:
        return 1.0
    return radius / norm


class Block:
    """One contiguous parameter block updated by a single rank-B product.

    ``parts`` lists (name, row_start, row_end) of the named parameters it holds.
    """

    __slots__ = ("name", "array", "parts")

    def __init__(self, name, array, parts):
        self.name, self.array, self.parts = name, array, parts


class DenseUpdates(Mapping):
    """One step's update directions by parameter name (``W1``...): each is
    ``scale * g`` with ``g`` the formed product (a view of the engine's buffer), the
    clipped, batch-divided direction the optimizer receives.

    ``blocks`` lists ``(block, parts)`` for :meth:`ptncn.optim.Optimizer.step_dense`,
    each part ``(name, row_start, row_end, g, scale, bound)`` with ``bound`` bounding
    the entries of ``scale * g``; ``norms`` the pre-clipping norms (for the
    divergence check; none when clipping is off).
    """

    def __init__(self, radius: float, inv_b: float, kernels):
        self.r, self.inv_b, self.clipping, self.kernels = radius, inv_b, radius > 0, kernels
        self.blocks: list = []
        self.table: dict[str, tuple[np.ndarray, float]] = {}
        self.norms: dict[str, float] = {}
        self.scale: dict[str, float] = {}       # clip factors
        self.extra: dict = {}
        self._cache: dict[str, np.ndarray] = {}

    def add(self, blk, g: np.ndarray, bound: float, gain: float = 1.0,
            norms: dict | None = None) -> None:
        """The update of ``blk`` is ``gain * g``, each part clipped; ``bound`` bounds
        the entries of ``g`` (used without clipping: with it, each part's norm bounds
        them); ``norms``: pre-clipping norms when already known."""
        if self.clipping and norms is None:
            norms = {name: abs(gain) * _root(self.kernels.sq_norm(g[a:b]))
                     for name, a, b in blk.parts}
        parts = []
        for name, a, b in blk.parts:
            c = clip_scale(norms[name], self.r) if self.clipping else 1.0
            s = gain * c * self.inv_b
            if self.clipping:
                self.norms[name] = norms[name]
            self.scale[name] = c
            self.table[name] = (g[a:b], s)
            applied = c * self.inv_b * norms[name] if self.clipping else abs(s) * bound
            parts.append((name, a, b, g[a:b], s, applied))
        self.blocks.append((blk, parts))

    def __getitem__(self, key):
        if key not in self._cache:
            g, s = self.table[key]
            self._cache[key] = g * F32(s)
        return self._cache[key]

    def norm(self, key) -> float:
        """Frobenius norm of ``self[key]`` (without forming it)."""
        g, s = self.table[key]
        return abs(s) * _root(self.kernels.sq_norm(g))

    def first_nonfinite(self) -> str | None:
        """With clipping, a non-finite update shows in its norm (a sum of squares);
        without, the optimizer step finds and undoes it."""
        return next((name for name, nrm in self.norms.items() if not np.isfinite(nrm)), None)

    def __iter__(self):
        return iter(self.table)

    def __len__(self):
        return len(self.table)


def _root(sq: float) -> float:
    """The norm from a sum of squares (NaN stays NaN, inf stays inf)."""
    return float(np.sqrt(sq)) if sq >= 0 else float(sq)


def entry_bound(left: np.ndarray, right: np.ndarray) -> float:
    """A bound on the entries of ``left.T @ right``: ``||left||_F ||right||_F``."""
    return float(np.sqrt(np.vdot(left, left)) * np.sqrt(np.vdot(right, right)))


class FastEngine:
    """Owns the parameter storage (stacked) and performs P-TNCN's step pieces fast.

    Blocks (all updated by one rank-B product each):
    ``B_l = [M_l; V_l; U_l; W_{l+1}]`` (right factor eps_l; U only for l < L
    with zeta > 0, W_{l+1} only for l < L), ``W_1`` (right factor e_0) and
    ``E_l`` (right factor z_l, or eps_l - eps_prev_l with the temporal rule).
    """

    def __init__(self, cfg, init: dict[str, np.ndarray], blas: str | None = None,
                 kernels: str | None = None):
        self.cfg = cfg
        self.blas = get_backend(blas)
        self.kernels = get_kernels(kernels)
        n, L, on = cfg.sizes, cfg.L, cfg.zeta > 0
        self.blocks: list[Block] = []
        self.layer_blocks: list[Block] = []
        self.n_in: list[int] = []          # rows of B_l multiplied by the layer input
        self.params: dict[str, np.ndarray] = {}

        def make(name, parts, cols):
            arr = np.empty((sum(r for _, r in parts), cols), F32)
            spans, r0 = [], 0
            for pname, r in parts:
                spans.append((pname, r0, r0 + r))
                self.params[pname] = arr[r0:r0 + r]
                r0 += r
            blk = Block(name, arr, spans)
            self.blocks.append(blk)
            return blk

        for l in range(1, L + 1):
            parts = [(f"M{l}", n[l - 1]), (f"V{l}", n[l])]
            if on and l < L:
                parts.append((f"U{l}", n[l + 1]))
            self.n_in.append(sum(r for _, r in parts))
            if l < L:
                parts.append((f"W{l + 1}", n[l + 1]))
            self.layer_blocks.append(make(f"B{l}", parts, n[l]))
        self.W1 = make("W1", [("W1", n[1])], n[0])
        self.E = [make(f"E{l}", [(f"E{l}", n[l - 1])], n[l]) for l in range(1, L + 1)]
        for name, v in init.items():
            np.copyto(self.params[name], v)
        self._g = {blk.name: np.empty_like(blk.array) for blk in self.blocks}   # formed updates
        # where each W_l lives (block, rows), and the blocks E_l's transposes come from
        self._w_home = {1: (self.W1, 0, n[1])}
        for l in range(1, L):
            self._w_home[l + 1] = (self.layer_blocks[l - 1], *self.layer_blocks[l - 1].parts[-1][1:])
        self._copies: dict[str, list[int]] = {}
        for l, (blk, _, _) in self._w_home.items():
            self._copies.setdefault(blk.name, []).append(l)

    # -- forward ---------------------------------------------------------------
    def layer_input(self, state, l: int) -> np.ndarray:
        """A (B, rows of B_l) buffer holding [s_{l-1} | s_l | s_{l+1}] in its first
        ``n_in`` columns (what B_l's M, V, U rows multiply); the rest (W_{l+1}'s
        rows) is filled with z_{l+1} once it exists."""
        s = [state.x_prev, *state.s]
        blk = self.layer_blocks[l - 1]
        buf = np.empty((state.x_prev.shape[0], blk.array.shape[0]), F32)
        src = {"M": s[l - 1], "V": s[l], "U": s[l + 1] if l < self.cfg.L else None}
        for name, a, b in blk.parts:
            if name[0] in src:
                buf[:, a:b] = src[name[0]]
        return buf

    def preactivations(self, state) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """h_1..h_L by one GEMM per layer; also returns the layer inputs (reused by updates)."""
        L, on = self.cfg.L, self.cfg.zeta > 0
        hs, inputs = [], []
        for l in range(1, L + 1):
            S = self.layer_input(state, l)
            inputs.append(S)
            B, k = self.layer_blocks[l - 1].array, self.n_in[l - 1]
            if l == L and not on:       # zeta == 0: the top layer uses V_L only
                hs.append(state.s[l - 1] @ B[self.cfg.sizes[l - 1]:k])
            else:
                hs.append(S[:, :k] @ B[:k])
        return hs, inputs

    # -- updates -----------------------------------------------------------------
    def updates(self, state, q, inputs, batch: int) -> DenseUpdates:
        """Every block's clipped, batch-divided update, formed, with the pre-clipping
        Frobenius norm of every update (none when clipping is off).  Reuses
        (overwrites) ``inputs``, the layer inputs of :meth:`preactivations`."""
        cfg, L = self.cfg, self.cfg.L
        u = DenseUpdates(cfg.clip_radius(batch), 1.0 / batch, self.kernels)
        err = [q["e0"]] + [q[f"eps{l}"] for l in range(1, L + 1)]   # err[l-1] drives W_l
        jobs = [(self.W1, q["z1"], q["e0"])]                        # W_1 = clip(z_1.T @ e_0)
        for l in range(1, L + 1):            # the blocks [M; V; U; W_{l+1}], right factor eps_l
            blk, S = self.layer_blocks[l - 1], inputs[l - 1]
            if l < L:
                _, a, b = blk.parts[-1]
                S[:, a:b] = q[f"z{l + 1}"]
            jobs.append((blk, S, err[l]))
        if cfg.temporal_error_rule:          # E_l = clip(-gamma * e_{l-1}.T @ (eps_l - eps_prev))
            jobs += [(self.E[l - 1], q[f"e{l - 1}"], q[f"eps{l}"] - state.eps_prev[l - 1])
                     for l in range(1, L + 1)]
        for blk, left, right in jobs:
            self._product(blk, left, right)
            gain = -cfg.gamma if blk.name[0] == "E" else 1.0
            bound = 0.0 if u.clipping else entry_bound(left, right)
            u.add(blk, self._g[blk.name], bound, gain)
            if not cfg.temporal_error_rule:
                for l in self._copies.get(blk.name, ()):
                    self._add_transposed(u, l, bound)
        return u

    def _product(self, blk, left: np.ndarray, right: np.ndarray) -> None:
        """``left.T @ right`` into ``blk``'s update buffer (one GEMM)."""
        self.blas.gemm(1.0, left, True, right, False, 0.0, self._g[blk.name])

    def _add_transposed(self, u: DenseUpdates, l: int, bound: float) -> None:
        """``E_l``'s update: ``gamma`` times ``W_l``'s clipped one, transposed (copied,
        not multiplied again), clipped again."""
        src, a, b = self._w_home[l]
        np.copyto(self._g[f"E{l}"], self._g[src.name][a:b].T)
        blk, gamma, cW = self.E[l - 1], self.cfg.gamma, u.scale[f"W{l}"]
        known = {blk.name: abs(gamma) * cW * u.norms[f"W{l}"]} if u.clipping else None
        u.add(blk, self._g[blk.name], bound, gamma * cW, known)

    # -- applying ---------------------------------------------------------------------
    def apply(self, optimizer, updates: DenseUpdates) -> None:
        """One optimizer step on every block (one kernel pass per parameter where the
        optimizer has one); one that would leave a value NaN/inf is undone and raises
        NonFiniteStepError."""
        optimizer.step_dense(updates.blocks, self.params, self.kernels)
