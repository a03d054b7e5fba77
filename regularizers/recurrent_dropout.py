"""Recurrent dropout without memory loss (Semeniuta et al. 2016, arXiv:1603.05118).

Dropout on the candidate update only, so the memory is never erased::

    LSTM:      c_t = f⊙c_{t-1} + i⊙(d⊙g)
    GRU:       h_t = (1-z)⊙(d⊙n) + z⊙h_{t-1}
    tanh-RNN:  h_t = d⊙tanh(W x_t + U h_{t-1} + b)     (no separate memory to protect)

On the tanh-RNN the candidate *is* the new state, so the dropped units of ``h_t`` are zero (the
next step sees them as zero); composed with zoneout, ``h_t = h_{t-1} + u⊙(d⊙ĥ_t - h_{t-1})``.

Inverted dropout: kept units are scaled by 1/(1-p) in training, so eval uses no noise.
"""

import torch

from .base import Regularizer, SequenceContext
from .hyperparameters import Hyperparameter, probability
from .registry import register


@register("recurrent_dropout")
class RecurrentDropout(Regularizer):
    paper = "Semeniuta et al. 2016, arXiv:1603.05118"
    hyperparameters = {
        "p": probability(0.25, "probability of dropping a unit of the candidate update",
                         search=(0.0, 0.7), allow_one=False),
        "per_sequence": Hyperparameter(False, "one mask per sequence instead of one per step"),
    }

    def masks(self, ctx: SequenceContext) -> dict[str, torch.Tensor]:
        if not ctx.training or self.p == 0:
            return {}
        return {"candidate": ctx.bernoulli(1 - self.p, steps=1 if self.per_sequence else None, scale=True)}
