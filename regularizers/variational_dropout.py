"""Variational (Bayesian) dropout for RNNs (Gal & Ghahramani 2016, arXiv:1512.05287).

One dropout mask per sequence, the same at every step, on the input ``x_t`` and one on the
recurrent input ``h_{t-1}``, applied before the gate projections. Inverted scaling, so eval
uses no noise. Embedding and output dropout belong to the model (see ``benchmark``).

Two choices the paper leaves open: the masks are *tied*, one mask on ``x_t`` (and one on
``h_{t-1}``) feeding the projections of every gate at once, rather than a separate mask per
gate; and they act in every layer of a stack (and each direction), each drawing its own masks,
the input mask of a layer above the first acting on the output of the layer below.
"""

import torch

from .base import Regularizer, SequenceContext
from .hyperparameters import probability
from .registry import register


@register("variational_dropout")
class VariationalDropout(Regularizer):
    paper = "Gal & Ghahramani 2016, arXiv:1512.05287"
    hyperparameters = {
        "p_input": probability(0.25, "probability of dropping an input unit (one mask per sequence)",
                               search=(0.0, 0.7), allow_one=False),
        "p_hidden": probability(0.25, "probability of dropping a recurrent input unit (one mask per sequence)",
                                search=(0.0, 0.7), allow_one=False),
    }

    def masks(self, ctx: SequenceContext) -> dict[str, torch.Tensor]:
        if not ctx.training:
            return {}
        masks = {}
        if self.p_input > 0:
            masks["input"] = ctx.bernoulli(1 - self.p_input, steps=1, units=ctx.input_size, scale=True)
        if self.p_hidden > 0:
            masks["hidden_input"] = ctx.bernoulli(1 - self.p_hidden, steps=1, units=ctx.state_size, scale=True)
        return masks
