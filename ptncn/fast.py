"""The fast P-TNCN engine: stacked weights, factorised clipping, fused BLAS updates.

Same equations as :mod:`ptncn.ptncn` (tested against it to 1e-6); three things
make it fast (see docs/performance.md):

1. **Stacked bottom-up/recurrent/top-down weights.**  Layer l's ``M_l, V_l, U_l``
   live in one contiguous block ``R_l = [M_l; V_l; U_l]``, so
   ``h_l = [s_{l-1} | s_l | s_{l+1}] @ R_l`` is a single GEMM, and the three
   parameter updates are a single GEMM too.  ``params["M1"]`` etc. are views.

2. **Clipping without forming the update.**  Every LRA update is a rank-B
   product ``A.T @ R`` (B = batch).  Its Frobenius norm is
   ``||A.T R||^2 = sum((A A.T) * (R R.T))`` — two B x B Gram matrices — so the
   clip factor is known before the update exists and is folded into ``A``.

3. **The optimizer fused into the GEMM.**  BLAS ``sgemm`` computes
   ``C = alpha A B + beta C`` in place, so for the momentum family the
   accumulator update ``a = mu a + G`` *is* the GEMM; the parameter update is
   one or two ``saxpy`` passes:

   * sgd:       ``p = p - lr G``                          (one sgemm, beta = 1)
   * momentum:  ``a = mu a + G;  p -= lr a``              (sgemm + saxpy)
   * nesterov:  ``p += lr mu a_old;  a = mu a + G;  p -= lr (1 + mu) a``
                (= TF's ``p -= lr (G + mu a_new)``; sgemm + 2 saxpy)

   The optimizers own these fused updates (``Optimizer.step_factored``); other
   optimizers, weight decay and max-norm materialise ``G`` into a reused buffer
   and take the ordinary update (:mod:`ptncn.optim`).  The BLAS calls go through
   :mod:`ptncn.blas` (NumPy's own OpenBLAS, one thread pool).

The engine owns the parameter storage (``params``: the paper's names, views into
the blocks) and has the reference engine's interface (``preactivations``,
``updates``, ``apply``; see :class:`ptncn.ptncn.ReferenceEngine`).  The applied
updates stay available by name (``W1`` ...) as factored products, formed only
when someone reads them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .blas import get_backend

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


class FactoredUpdates(Mapping):
    """One step's update directions by parameter name (``W1``...), formed on demand.

    Each is ``left.T @ right`` restricted to the parameter's rows: exactly the
    clipped, batch-divided direction the optimizer receives.  ``blocks`` lists
    ``(block, left, right)`` for :meth:`ptncn.optim.Optimizer.step_factored`;
    ``norms`` the pre-clipping norms (for the divergence check).
    """

    def __init__(self, blocks, factors: dict[str, tuple[np.ndarray, np.ndarray, int, int]],
                 norms: dict[str, float]):
        self.blocks = blocks
        self._f = factors
        self.norms = norms
        self.extra: dict = {}
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, key):
        if key not in self._cache:
            left, right, a, b = self._f[key]
            self._cache[key] = np.ascontiguousarray(left[:, a:b].T @ right)
        return self._cache[key]

    def norm(self, key) -> float:
        """Frobenius norm of ``self[key]`` without forming it (factorised, as for clipping)."""
        if key in self._cache:
            a = self._cache[key]
            return float(np.sqrt(np.vdot(a, a)))
        left, right, a, b = self._f[key]
        return float(np.sqrt(max(sq_norms(left, right, [(a, b)])[0], 0.0)))

    def first_nonfinite(self) -> str | None:
        """The factors are finite quantities times finite scales; only a norm (a sum of
        squares) can still overflow.  (The products themselves are formed inside the
        optimizer step, which undoes and reports one that is not finite.)"""
        return next((name for name, nrm in self.norms.items() if not np.isfinite(nrm)), None)

    def __iter__(self):
        return iter(self._f)

    def __len__(self):
        return len(self._f)


def sq_norms(left: np.ndarray, right: np.ndarray, spans) -> list[float]:
    """Squared Frobenius norms of ``left[:, a:b].T @ right`` for each (a, b) in ``spans``.

    ``||A.T R||^2 = sum((R R.T) * (A A.T)) = sum(((R R.T) @ A) * A)``: one B x B
    Gram matrix of ``right`` and one (B x B) @ (B x rows) product cover every
    column block of ``left`` at once, without forming any update.
    """
    t = (right @ right.T) @ left
    t *= left
    return [float(t[:, a:b].sum(dtype=np.float64)) for a, b in spans]


class _Factors:
    """Collects one step's ``(block, left, right)`` factors, folding each parameter's
    clip factor, a gain and 1/batch into the columns of ``left`` (scaled in place)."""

    def __init__(self, radius: float, inv_b: float):
        self.r, self.inv_b, self.clipping = radius, inv_b, radius > 0
        self.blocks: list = []
        self.table: dict = {}
        self.norms: dict[str, float] = {}
        self.scale: dict[str, float] = {}

    def add(self, blk, left, right, gain: float = 1.0, norms: dict | None = None) -> None:
        """The update of ``blk`` is ``gain * left.T @ right``, each part clipped; ``norms``:
        pre-clipping norms when already known (else computed by :func:`sq_norms`)."""
        if self.clipping and norms is None:
            sq = sq_norms(left, right, [(a, b) for _, a, b in blk.parts])
            norms = {name: abs(gain) * float(np.sqrt(max(v, 0.0))) if np.isfinite(v)
                     else float("nan") for (name, _, _), v in zip(blk.parts, sq)}
        for name, a, b in blk.parts:
            c = clip_scale(norms[name], self.r) if self.clipping else 1.0
            if self.clipping:
                self.norms[name] = norms[name]
            self.scale[name] = c
            left[:, a:b] *= F32(gain * c * self.inv_b)
            self.table[name] = (left, right, a, b)
        self.blocks.append((blk, left, right))


class FastEngine:
    """Owns the parameter storage (stacked) and performs P-TNCN's step pieces fast.

    Blocks (all updated by one rank-B product each):
    ``B_l = [M_l; V_l; U_l; W_{l+1}]`` (right factor eps_l; U only for l < L
    with zeta > 0, W_{l+1} only for l < L), ``W_1`` (right factor e_0) and
    ``E_l`` (right factor z_l, or eps_l - eps_prev_l with the temporal rule).
    """

    def __init__(self, cfg, init: dict[str, np.ndarray], blas: str | None = None):
        self.cfg = cfg
        self.blas = get_backend(blas)
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
    def updates(self, state, q, inputs, batch: int) -> FactoredUpdates:
        """Every block's clipped, batch-divided update as left/right factors, with the
        pre-clipping Frobenius norm of every update (none when clipping is off).
        Reuses (overwrites) ``inputs``, the layer inputs of :meth:`preactivations`."""
        cfg, L = self.cfg, self.cfg.L
        f = _Factors(cfg.clip, 1.0 / batch)
        err = [q["e0"]] + [q[f"eps{l}"] for l in range(1, L + 1)]   # err[l-1] drives W_l
        f.add(self.W1, q["z1"].copy(), q["e0"])                    # W_1 = clip(z_1.T @ e_0)
        for l in range(1, L + 1):            # the blocks [M; V; U; W_{l+1}], right factor eps_l
            blk, S = self.layer_blocks[l - 1], inputs[l - 1]
            if l < L:
                _, a, b = blk.parts[-1]
                S[:, a:b] = q[f"z{l + 1}"]
            f.add(blk, S, err[l])
        for l in range(1, L + 1):            # E_l = clip(gamma * clip(dW_l).T), or temporal
            blk, gamma = self.E[l - 1], cfg.gamma
            if cfg.temporal_error_rule:
                f.add(blk, q[f"e{l - 1}"].copy(), q[f"eps{l}"] - state.eps_prev[l - 1], -gamma)
            else:
                cW = f.scale[f"W{l}"]
                known = {blk.name: abs(gamma) * cW * f.norms[f"W{l}"]} if f.clipping else None
                f.add(blk, err[l - 1].copy(), q[f"z{l}"], gamma * cW, known)
        return FactoredUpdates(f.blocks, f.table, f.norms)

    # -- applying ---------------------------------------------------------------------
    def apply(self, optimizer, updates: FactoredUpdates) -> None:
        """One optimizer step on every block (fused into the GEMMs where it can be);
        one that would leave a value NaN/inf is undone and raises NonFiniteStepError."""
        optimizer.step_factored(updates.blocks, self.params, self.blas)
