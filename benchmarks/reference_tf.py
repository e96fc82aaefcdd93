"""Time the published P-TNCN training step in TensorFlow 2 (eager), for side-by-side ratios.

    <python with tensorflow> benchmarks/reference_tf.py [--runs 7] [--steps 40]

Our own transcription, for timing only, of the per-step work in the authors'
public code (ContinualPTNCN, ``ptncn_2lyr.py``: ``forward`` then
``compute_updates``, each update clipped with ``tf.clip_by_norm`` and scaled by
1/batch, then ``tf.compat.v1.train.MomentumOptimizer(use_nesterov=True)
.apply_gradients``), op for op, eager, float32, the reference hyperparameters.
TensorFlow is not a dependency of ptncn: install it in a separate environment
(``pip install tensorflow-cpu``) to run this.
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf


class ReferenceStep:
    def __init__(self, h, X, sd=0.05, seed=1234):
        rnd = np.random.default_rng(seed)

        def var(shape):
            return tf.Variable((rnd.standard_normal(shape) * sd).astype(np.float32))
        self.W1, self.E1 = var((h, X)), var((X, h))
        self.W2, self.E2 = var((h, h)), var((h, h))
        self.U1, self.M1, self.M2 = var((h, h)), var((X, h)), var((h, h))
        self.V1, self.V2 = var((h, h)), var((h, h))
        self.params = [self.W1, self.E1, self.W2, self.E2, self.U1, self.M1, self.M2,
                       self.V1, self.V2]
        self.opt = tf.compat.v1.train.MomentumOptimizer(learning_rate=0.075, momentum=0.95,
                                                        use_nesterov=True)
        self.h, self.X = h, X

    def reset(self, B):
        self.x_tm1 = tf.zeros([B, self.X])
        self.s1 = tf.zeros([B, self.h])
        self.s2 = tf.zeros([B, self.h])

    def step(self, x, m, learn=True, beta=0.1, alpha=0.001, gamma=1.0, r=1.0):
        softmax = tf.nn.softmax
        z2 = tf.add(tf.matmul(self.s1, self.M2), tf.matmul(self.s2, self.V2))
        zf2 = tf.nn.tanh(z2)
        mu1 = tf.matmul(zf2, self.W2)
        z1 = tf.add(tf.add(tf.matmul(self.x_tm1, self.M1), tf.matmul(self.s2, self.U1)),
                    tf.matmul(self.s1, self.V1))
        zf1 = tf.nn.tanh(z1)
        x_mu = softmax(tf.matmul(zf1, self.W1))
        e1 = tf.subtract(mu1, zf1) * m
        ex = tf.subtract(x_mu, x) * m
        d2 = tf.matmul(e1, self.E2)
        d1 = tf.subtract(tf.matmul(ex, self.E1), e1 * alpha)
        y2 = tf.nn.tanh(tf.subtract(z2, d2 * beta))
        y1 = tf.nn.tanh(tf.subtract(z1, d1 * beta))
        e2v = tf.subtract(zf2, y2) * m
        e1v = tf.subtract(zf1, y1) * m
        if learn:
            dW1 = tf.clip_by_norm(tf.matmul(zf1, ex, transpose_a=True), r)
            dE1 = tf.clip_by_norm(tf.transpose(dW1) * gamma, r)
            dW2 = tf.clip_by_norm(tf.matmul(zf2, e1v, transpose_a=True), r)
            dE2 = tf.clip_by_norm(tf.transpose(dW2) * gamma, r)
            dU1 = tf.clip_by_norm(tf.matmul(self.s2, e1v, transpose_a=True), r)
            dM1 = tf.clip_by_norm(tf.matmul(self.x_tm1, e1v, transpose_a=True), r)
            dM2 = tf.clip_by_norm(tf.matmul(self.s1, e2v, transpose_a=True), r)
            dV1 = tf.clip_by_norm(tf.matmul(self.s1, e1v, transpose_a=True), r)
            dV2 = tf.clip_by_norm(tf.matmul(self.s2, e2v, transpose_a=True), r)
            n = 1.0 / x.shape[0]
            delta = [d * n for d in (dW1, dE1, dW2, dE2, dU1, dM1, dM2, dV1, dV2)]
            self.opt.apply_gradients(zip(delta, self.params))
        self.x_tm1, self.s1, self.s2 = x, y1, y2
        return x_mu


def bench(h, B, X, runs, steps):
    model = ReferenceStep(h, X)
    rng = np.random.default_rng(0)
    xs = [tf.constant(np.eye(X, dtype=np.float32)[rng.integers(0, X, B)]) for _ in range(steps)]
    m = tf.ones([B, 1])
    model.reset(B)
    for t in range(5):
        model.step(xs[t], m)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for t in range(steps):
            model.step(xs[t], m)
        _ = model.W1.numpy()          # wait for the last step
        rates.append(steps / (time.perf_counter() - t0))
    return {"hidden": h, "batch": B, "inputs": X, "steps_per_s": float(np.median(rates)),
            "steps_per_s_all": [round(r, 2) for r in rates]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--shapes", nargs="+", default=["1000,50,49", "250,50,49"])
    a = ap.parse_args()
    res = [bench(*map(int, s.split(",")), a.runs, a.steps) for s in a.shapes]
    for r in res:
        print(f"TF {tf.__version__} reference: h={r['hidden']} B={r['batch']} X={r['inputs']}: "
              f"{r['steps_per_s']:.1f} steps/s (median of {a.runs})")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
