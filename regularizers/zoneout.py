"""Zoneout (Krueger et al. 2016, arXiv:1606.01305).

Each unit keeps its previous value with probability z instead of taking its new value,
separately for cells (``z_cells``) and hidden states (``z_states``)::

    ĉ_t = f⊙c_{t-1} + i⊙g
    c_t = d^c⊙c_{t-1} + (1-d^c)⊙ĉ_t
    h_t = d^h⊙h_{t-1} + (1-d^h)⊙(o⊙tanh(ĉ_t))        d ~ Bernoulli(z), 1 = keep

``h`` uses ``ĉ_t``, not the zoned-out ``c_t``. GRU and tanh-RNN have no cell: their hidden
state is zoned out with ``z_states``. In eval the masks are replaced by their expectation.
"""

import torch

from .base import Regularizer, SequenceContext
from .hyperparameters import Hyperparameter, probability
from .registry import register


@register("zoneout")
class Zoneout(Regularizer):
    paper = "Krueger et al. 2016, arXiv:1606.01305"
    hyperparameters = {
        "z_cells": probability(0.5, "probability that a cell unit keeps its previous value (LSTM only)",
                               search=(0.0, 0.7), cell_types=("lstm",)),
        "z_states": probability(0.05, "probability that a hidden unit keeps its previous value",
                                search=(0.0, 0.5)),
        "shared_mask": Hyperparameter(False, "one mask for cells and states (the paper's pMNIST setting); "
                                             "needs z_cells == z_states"),
        "static_mask": Hyperparameter(False, "sample the mask once per unit for all of training "
                                             "(the paper's ablation)"),
    }

    def check(self) -> None:
        if self.shared_mask and self.z_cells != self.z_states:
            raise ValueError(f"zoneout: shared_mask=true uses one mask for cells and states, so z_cells "
                             f"({self.z_cells:g}) and z_states ({self.z_states:g}) must be equal")

    def bind(self, layer) -> None:
        if self.shared_mask and layer.state_size != layer.hidden_size:
            raise ValueError(f"zoneout: shared_mask=true needs cells and states of one size; with proj_size="
                             f"{layer.state_size} the states have {layer.state_size} units, the cells "
                             f"{layer.hidden_size}")
        if self.static_mask:
            # One keep/update decision per unit and recurrence (layer and direction), drawn now and
            # kept for all of training.
            recurrences, device = layer.num_layers * layer.num_directions, layer.weight_hh_l0.device
            cells = torch.rand(recurrences, 1, 1, layer.hidden_size, device=device)
            states = cells if self.shared_mask else torch.rand(recurrences, 1, 1, layer.state_size, device=device)
            self.register_buffer("static_cell_update", (cells >= self.z_cells).float())
            self.register_buffer("static_state_update", (states >= self.z_states).float())

    def masks(self, ctx: SequenceContext) -> dict[str, torch.Tensor]:
        lstm = ctx.cell_type == "lstm"
        if not ctx.training:  # the expectation: c_t = z c_{t-1} + (1 - z) ĉ_t
            masks = {"hidden_update": ctx.constant(1 - self.z_states)}
            if lstm:
                masks["cell_update"] = ctx.constant(1 - self.z_cells)
            return masks
        if self.static_mask:
            masks = {"hidden_update": self.static_state_update[ctx.index].to(ctx.dtype)}
            if lstm:
                masks["cell_update"] = self.static_cell_update[ctx.index].to(ctx.dtype)
            return masks
        hidden_update = ctx.bernoulli(1 - self.z_states, units=ctx.state_size)
        masks = {"hidden_update": hidden_update}
        if lstm:
            masks["cell_update"] = hidden_update if self.shared_mask else ctx.bernoulli(1 - self.z_cells)
        return masks
