"""rnnDrop (Moon et al. 2015, ASRU): one dropout mask per sequence on the memory cell.

``c_t = d⊙(f⊙c_{t-1} + i⊙g)`` with ``d`` fixed over the sequence. Inverted scaling (kept
units divided by 1-p in training), so eval uses no noise and no rescaling.
"""

import torch

from .base import Regularizer, SequenceContext
from .hyperparameters import probability
from .registry import register


@register("rnndrop")
class RnnDrop(Regularizer):
    paper = "Moon et al. 2015, ASRU"
    cell_types = ("lstm",)
    hyperparameters = {
        "p": probability(0.25, "probability of dropping a cell unit for the whole sequence",
                         search=(0.0, 0.7), allow_one=False),
    }

    def masks(self, ctx: SequenceContext) -> dict[str, torch.Tensor]:
        if not ctx.training or self.p == 0:
            return {}
        return {"cell": ctx.bernoulli(1 - self.p, steps=1, scale=True)}
