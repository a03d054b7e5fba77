"""Weight noise (Graves 2011, "Practical variational inference for neural networks").

Gaussian noise ``N(0, sigma^2)`` added to the weight matrices, drawn anew for every forward
pass in training; gradients are taken at the noisy weights (they flow to the clean ones
unchanged, since ``∂(W + ε)/∂W = 1``). Eval uses the clean weights.

The noise acts on the recurrent layer's own weights only (``W_ih``, ``W_hh`` and LSTM's
projection ``W_hr``; the biases with ``include_bias``), every layer and direction of the stack;
not on the model's embedding or decoder, which the layer does not own.
"""

import torch

from .base import Regularizer, SequenceContext
from .hyperparameters import Hyperparameter
from .registry import register


@register("weight_noise")
class WeightNoise(Regularizer):
    paper = "Graves 2011"
    hyperparameters = {
        "sigma": Hyperparameter(0.075, "standard deviation of the Gaussian weight noise",
                                low=0.0, search=(0.005, 0.2), log=True),
        "include_bias": Hyperparameter(False, "also add noise to the biases"),
    }

    def transform_weights(self, weights: dict[str, torch.Tensor], ctx: SequenceContext) -> dict[str, torch.Tensor]:
        if not ctx.training or self.sigma == 0:
            return weights
        noisy = dict(weights)
        for kind, weight in weights.items():
            if weight is not None and (kind.startswith("weight") or self.include_bias):
                noisy[kind] = weight + self.sigma * torch.randn_like(weight)
        return noisy
