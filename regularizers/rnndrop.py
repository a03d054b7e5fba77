"""rnnDrop (Moon et al. 2015, ASRU): one dropout mask per sequence on the memory cell.

``c_t = d⊙(f⊙c_{t-1} + i⊙g)`` with ``d`` fixed over the sequence. Two scalings:

- ``inverted`` (default): kept units are divided by ``1-p`` in training and eval uses no
  noise. Because the mask is the same at every step, a kept cell is multiplied by ``1/(1-p)``
  at every step: over long sequences this compounds (most of our char-PTB tuning trials
  diverged), so prefer small p or
- ``test_time`` (Moon et al.'s own): ``d`` is 0/1 in training and eval uses the expectation
  ``c_t = (1-p)⊙(f⊙c_{t-1} + i⊙g)``, under which the influence of past states decays
  geometrically with the drop rate (Semeniuta et al. 2016).
"""

import torch

from .base import Regularizer, SequenceContext
from .hyperparameters import Hyperparameter, probability
from .registry import register


@register("rnndrop")
class RnnDrop(Regularizer):
    paper = "Moon et al. 2015, ASRU"
    cell_types = ("lstm",)
    hyperparameters = {
        "p": probability(0.25, "probability of dropping a cell unit for the whole sequence",
                         search=(0.0, 0.7), allow_one=False),
        "scaling": Hyperparameter("inverted", "where the 1-p correction goes: eval (test_time) or training "
                                               "(inverted)", choices=("test_time", "inverted")),
    }

    def masks(self, ctx: SequenceContext) -> dict[str, torch.Tensor]:
        if self.p == 0:
            return {}
        if not ctx.training:
            return {"cell": ctx.constant(1 - self.p)} if self.scaling == "test_time" else {}
        return {"cell": ctx.bernoulli(1 - self.p, steps=1, scale=self.scaling == "inverted")}
