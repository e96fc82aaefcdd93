"""A literal, two-layer-only transcription of the P-TNCN equations.

Written independently of ptncn.ptncn's general L-layer code, with the spec's
variable names and no loops over layers, so that tests can check the library
against it line by line.  Plain SGD; float32 throughout, like the reference.
"""

import numpy as np

f32 = np.float32


def act(name, h):
    return {
        "tanh": np.tanh,
        "relu": lambda v: np.maximum(v, 0),
        "sign": np.sign,
        "step": lambda v: (v >= 0).astype(f32),
        "identity": lambda v: v,
    }[name](h).astype(f32)


def out(name, h):
    if name == "softmax":
        e = np.exp(h - h.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(f32)
    if name == "sigmoid":
        return (1.0 / (1.0 + np.exp(-h))).astype(f32)
    if name == "identity":
        return h
    raise KeyError(name)


def clip(g, r):
    # tf.clip_by_norm: g * r / max(||g||_F, r)
    if r <= 0:
        return g
    n = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    return (g * (r / max(n, r))).astype(f32)


class LiteralPTNCN:
    def __init__(self, P, act_name, out_name, beta, alpha, gamma, zeta, radius, lr,
                 temporal=False):
        self.P = {k: v.astype(f32).copy() for k, v in P.items()}
        self.act, self.out = act_name, out_name
        self.beta, self.alpha, self.gamma = f32(beta), f32(alpha), f32(gamma)
        self.zeta, self.r, self.lr, self.temporal = zeta, radius, f32(lr), temporal
        self.t = None

    def reset(self, B):
        X = self.P["W1"].shape[1]
        h1, h2 = self.P["V1"].shape[0], self.P["V2"].shape[0]
        self.x_prev = np.zeros((B, X), f32)
        self.s1 = np.zeros((B, h1), f32)
        self.s2 = np.zeros((B, h2), f32)
        self.eps1_prev = np.zeros((B, h1), f32)
        self.eps2_prev = np.zeros((B, h2), f32)
        self.t = 0

    def step(self, x, m):
        P, phi = self.P, (lambda h: act(self.act, h))
        x = x.astype(f32)
        m = m.astype(f32).reshape(-1, 1)
        if self.zeta > 0:
            h2 = self.s1 @ P["M2"] + self.s2 @ P["V2"]
        else:
            h2 = self.s2 @ P["V2"]
        z2 = phi(h2)
        mu1 = z2 @ P["W2"]
        if self.zeta > 0:
            h1 = self.x_prev @ P["M1"] + self.s2 @ P["U1"] + self.s1 @ P["V1"]
        else:
            h1 = self.x_prev @ P["M1"] + self.s1 @ P["V1"]
        z1 = phi(h1)
        x_mu = out(self.out, z1 @ P["W1"])
        e1 = (mu1 - z1) * m
        e0 = (x_mu - x) * m
        d2 = e1 @ P["E2"]
        d1 = e0 @ P["E1"] - self.alpha * e1
        y2 = phi(h2 - self.beta * d2)
        y1 = phi(h1 - self.beta * d1)
        eps2 = (z2 - y2) * m
        eps1 = (z1 - y1) * m
        q = dict(x_mu=x_mu, z1=z1, z2=z2, y1=y1, y2=y2, e0=e0, e1=e1, eps1=eps1, eps2=eps2,
                 h1=h1, h2=h2, d1=d1, d2=d2, mu1=mu1)
        if self.t > 0:
            r = self.r
            D = {}
            D["W1"] = clip(z1.T @ e0, r)
            if self.temporal:
                D["E1"] = clip(-self.gamma * (e0.T @ (eps1 - self.eps1_prev)), r)
            else:
                D["E1"] = clip(self.gamma * D["W1"].T, r)
            D["W2"] = clip(z2.T @ eps1, r)
            if self.temporal:
                D["E2"] = clip(-self.gamma * (e1.T @ (eps2 - self.eps2_prev)), r)
            else:
                D["E2"] = clip(self.gamma * D["W2"].T, r)
            if self.zeta > 0:
                D["U1"] = clip(self.s2.T @ eps1, r)
            D["M1"] = clip(self.x_prev.T @ eps1, r)
            D["M2"] = clip(self.s1.T @ eps2, r)
            D["V1"] = clip(self.s1.T @ eps1, r)
            D["V2"] = clip(self.s2.T @ eps2, r)
            B = x.shape[0]
            for k, d in D.items():
                P[k] = (P[k] - self.lr * (d / f32(B))).astype(f32)
        self.x_prev, self.s1, self.s2 = x, y1, y2
        self.eps1_prev, self.eps2_prev = eps1, eps2
        self.t += 1
        return q
