"""Multiplicative Gaussian noise on the recurrent input h_{t-1}, resampled at every step.

Not decorated: the entry point names the class, and regbench registers it under the entry
point's name, ``hidden_noise``.
"""

import torch

from regularizers import Hyperparameter, Regularizer


class HiddenNoise(Regularizer):
    paper = "example plugin"
    hyperparameters = {
        "sigma": Hyperparameter(0.1, "standard deviation of the noise factor 1 + sigma * N(0, 1)", low=0.0,
                                search=(0.01, 0.5), log=True),
    }

    def masks(self, ctx):
        if not ctx.training or self.sigma == 0:
            return {}
        shape = (ctx.steps, ctx.batch_size, ctx.hidden_size)
        return {"hidden_input": 1 + self.sigma * torch.randn(shape, device=ctx.device, dtype=ctx.dtype)}
