"""rnnDrop (Moon et al. 2015, ASRU): one dropout mask per sequence on the memory cell.

In training ``c_t = d⊙(f⊙c_{t-1} + i⊙g)`` with a 0/1 mask ``d ~ Bernoulli(1-p)`` fixed over the
sequence; in eval the expectation ``c_t = (1-p)⊙(f⊙c_{t-1} + i⊙g)``, under which the influence of
past states decays geometrically with the drop rate (Semeniuta et al. 2016). This is Moon et al.'s
own scheme, and train and eval describe the same network in expectation.

There is deliberately no "inverted" variant (kept units divided by ``1-p`` in training, no
noise in eval): with the mask fixed over time the division compounds at every step, so a kept
cell with a forget gate near 1 grows like ``(1-p)^-t`` (about 1e10 after 100 steps at p = 0.25)
while eval stays bounded: every seed of the earlier default diverged.
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
        if self.p == 0:
            return {}
        if not ctx.training:
            return {"cell": ctx.constant(1 - self.p)}  # the expectation of the 0/1 mask
        return {"cell": ctx.bernoulli(1 - self.p, steps=1)}
