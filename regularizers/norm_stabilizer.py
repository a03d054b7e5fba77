"""Norm stabilizer (Krueger & Memisevic 2016, arXiv:1511.08400).

Adds to the loss ``beta * mean over the batch of sum_{t=2..T} (||h_t|| - ||h_{t-1}||)^2 / (T-1)``,
on the hidden states by default or on the cells (LSTM). It leaves the outputs unchanged; the
penalty is collected by ``regularizers.penalty(model)``, summed over layers.
"""

import torch

from .base import LayerOutputs, Regularizer, SequenceContext
from .hyperparameters import Hyperparameter
from .registry import register


@register("norm_stabilizer")
class NormStabilizer(Regularizer):
    paper = "Krueger & Memisevic 2016, arXiv:1511.08400"
    hyperparameters = {
        "beta": Hyperparameter(50.0, "weight of the penalty in the loss", low=0.0, search=(1.0, 500.0), log=True),
        "on": Hyperparameter("hidden", "which states to stabilize", choices=("hidden", "cells")),
    }

    def bind(self, layer) -> None:
        if self.on == "cells" and layer.cell_type != "lstm":
            raise ValueError(f"norm_stabilizer: on='cells' needs LSTM cells; a {layer.cell_type.upper()} has "
                             "none, use on='hidden'")

    @property
    def needs_cells(self) -> bool:
        return self.on == "cells" and self.training  # the penalty is computed in training only

    def penalty(self, outputs: LayerOutputs, ctx: SequenceContext) -> torch.Tensor | None:
        if not ctx.training or ctx.steps < 2:
            return None
        states = outputs.cells if self.on == "cells" else outputs.hidden
        norms = states.norm(dim=-1)  # (T, B)
        squared = (norms[1:] - norms[:-1]).pow(2)
        if outputs.lengths is None:
            return self.beta * squared.mean(0).mean()
        # Packed input: each sequence's average over its own T_b - 1 pairs (none past its length).
        pairs = torch.arange(1, ctx.steps).unsqueeze(1) < outputs.lengths  # (T-1, B)
        squared = squared * pairs.to(squared)
        return self.beta * (squared.sum(0) / (outputs.lengths - 1).clamp(min=1).to(squared)).mean()
