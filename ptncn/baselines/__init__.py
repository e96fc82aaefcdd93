"""Baseline learners compared with P-TNCN.

Gradient-based, on one shared recurrent network (the vanilla cell of
:mod:`ptncn.baselines.rnn` or the LSTM of :mod:`ptncn.baselines.lstm`):

* :class:`ptncn.baselines.rtrl.RTRL`               exact online gradient (forward mode)
* :class:`ptncn.baselines.uoro.UORO`               unbiased rank-one online estimate
* :class:`ptncn.baselines.nobacktrack.NoBackTrack` rank-one estimate, per-unit normalisers
* :class:`ptncn.baselines.bptt.TBPTT` / :class:`ptncn.baselines.bptt.BPTT`
                                                    truncated / whole-sequence backprop
* :class:`ptncn.baselines.sab.SAB`                 sparse attentive backtracking

the stateless control :class:`ptncn.baselines.window.Window` (an MLP on the last w inputs)

and the echo-state network (:mod:`ptncn.baselines.esn`, its own module).

Submodules are imported on demand (``ptncn.learner.learner_class`` does it), so
importing this package costs nothing.  See docs/baselines.md.
"""
