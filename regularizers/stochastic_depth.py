"""Stochastic depth through time (Huang et al. 2016, adapted to time in the zoneout paper).

Zoneout of the whole layer at once: one Bernoulli draw per example and step, shared by all
units and by the cell and the hidden state. In eval, the expectation, as zoneout.
"""

import torch

from .base import Regularizer, SequenceContext
from .hyperparameters import probability
from .registry import register


@register("stochastic_depth")
class StochasticDepth(Regularizer):
    paper = "Huang et al. 2016; zoneout paper, sec. 4"
    hyperparameters = {
        "p": probability(0.05, "probability that a whole layer keeps its previous state at a step",
                         search=(0.0, 0.5)),
    }

    def masks(self, ctx: SequenceContext) -> dict[str, torch.Tensor]:
        update = ctx.bernoulli(1 - self.p, units=1) if ctx.training else ctx.constant(1 - self.p)
        masks = {"hidden_update": update}
        if ctx.cell_type == "lstm":
            masks["cell_update"] = update
        return masks
