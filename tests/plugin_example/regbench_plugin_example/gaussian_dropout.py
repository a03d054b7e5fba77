"""Gaussian dropout (Srivastava et al. 2014) on the candidate update: g ⊙ m, m ~ N(1, p / (1 - p)).

Registered by its decorator when the entry point imports this module.
"""

import torch

from regularizers import Regularizer, probability, register


@register("gaussian_dropout")
class GaussianDropout(Regularizer):
    paper = "Srivastava et al. 2014 (Gaussian dropout), on the recurrent candidate"
    hyperparameters = {"p": probability(0.25, "the dropout rate whose variance the noise matches", allow_one=False)}

    def masks(self, ctx):
        if not ctx.training or self.p == 0:
            return {}
        shape = (ctx.steps, ctx.batch_size, ctx.hidden_size)
        std = (self.p / (1 - self.p)) ** 0.5
        return {"candidate": 1 + std * torch.randn(shape, device=ctx.device, dtype=ctx.dtype)}
