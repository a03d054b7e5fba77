"""Weight noise (Graves 2011, "Practical variational inference for neural networks").

Gaussian noise ``N(0, sigma^2)`` added to the weight matrices, drawn anew for every forward
pass in training; gradients are taken at the noisy weights (they flow to the clean ones
unchanged, since ``∂(W + ε)/∂W = 1``). Eval uses the clean weights.

The noise acts on the recurrent layer's own weights only (``W_ih``, ``W_hh`` and LSTM's
projection ``W_hr``; the biases with ``include_bias``), every layer and direction of the stack;
not on the model's embedding or decoder, which the layer does not own.
"""

import torch

from . import native
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
                noisy[kind] = add_noise(weight, self.sigma)
        return noisy


class _NoisyWeight(torch.autograd.Function):
    """``W + σε`` drawn by the native sampler in one pass; the gradient reaches W unchanged."""

    @staticmethod
    def forward(ctx, weight, sigma):
        return torch.ops.regbench.add_gaussian_noise(weight.detach(), sigma)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def add_noise(weight: torch.Tensor, sigma: float) -> torch.Tensor:
    """``weight + sigma · N(0, 1)``: on CPU float32/float64 by the native module's parallel Philox
    sampler (the draw is most of weight noise's cost, and torch.randn runs serially), seeded by
    torch's generator like the masks; elsewhere with ``torch.randn_like``."""
    native_cpu = weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.float64)
    if not native_cpu or native.loops() is None:  # loops() loads the library, which registers the operator
        return weight + sigma * torch.randn_like(weight)
    return _NoisyWeight.apply(weight, float(sigma))
