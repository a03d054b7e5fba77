"""Recurrent batch normalization (Cooijmans et al. 2016, arXiv:1603.09025). LSTM only.

    (i, f, o, g) = BN(W_h h_{t-1}; γ_h) + BN(W_x x_t; γ_x) + b
    c_t = f⊙c_{t-1} + i⊙g
    h_t = o⊙tanh(BN(c_t; γ_c, β_c))

The two gate normalizations have no shift (the bias ``b`` plays that part). Every time step
keeps its own statistics; in eval, steps beyond the longest training sequence reuse the last
trained step's statistics. γ starts at 0.1, as the paper recommends.

This regularizer changes the cell's equations. It brings its own fused loop
(``fused_batchnorm.py``, which normalizes the input projection too), which layers use; with
``layer.use_fused = False`` they run the step-by-step reference loop through ``normalize`` instead. Masks from other regularizers
(zoneout: the paper's best pMNIST model) apply in both.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .base import Regularizer, SequenceContext
from .fused import project_inputs
from .fused_batchnorm import BatchNormLSTMRecurrence, column_batch_norm, column_batch_norm_applies
from .hyperparameters import Hyperparameter
from .registry import register


@register("recurrent_batchnorm")
class RecurrentBatchNorm(Regularizer):
    paper = "Cooijmans et al. 2016, arXiv:1603.09025"
    cell_types = ("lstm",)
    hyperparameters = {
        "gamma_init": Hyperparameter(0.1, "initial scale γ of every normalization", low=0.0, low_open=True),
        "max_steps": Hyperparameter(1000, "time steps that keep their own statistics (longest training "
                                          "sequence)", low=1),
        "momentum": Hyperparameter(0.1, "momentum of the running statistics", low=0.0, high=1.0),
        "eps": Hyperparameter(1e-5, "added to the variance", low=0.0, low_open=True),
    }

    def bind(self, layer) -> None:
        # One set of scales and statistics per recurrence (layer and direction).
        layers, hidden, steps = layer.num_layers * layer.num_directions, layer.hidden_size, self.max_steps
        gates = 4 * hidden
        like = layer.weight_hh_l0
        factory = {"dtype": like.dtype, "device": like.device}
        self.gamma_input = nn.Parameter(torch.full((layers, gates), self.gamma_init, **factory))
        self.gamma_hidden = nn.Parameter(torch.full((layers, gates), self.gamma_init, **factory))
        self.gamma_cell = nn.Parameter(torch.full((layers, hidden), self.gamma_init, **factory))
        self.beta_cell = nn.Parameter(torch.zeros(layers, hidden, **factory))
        for site, width in (("input", gates), ("hidden", gates), ("cell", hidden)):
            self.register_buffer(f"running_mean_{site}", torch.zeros(layers, steps, width, **factory))
            self.register_buffer(f"running_var_{site}", torch.ones(layers, steps, width, **factory))
        self.register_buffer("steps_trained", torch.zeros(layers, dtype=torch.long, device=like.device))

    def _slot(self, layer: int, step: int) -> int:
        """Which step's statistics to use in eval: beyond the longest training length, the last one."""
        trained = int(self.steps_trained[layer])
        return min(step, max(trained, 1) - 1, self.max_steps - 1)

    def _slots(self, layer: int, steps: int, device) -> torch.Tensor:
        return torch.tensor([self._slot(layer, t) for t in range(steps)], device=device)

    def _update_running(self, name: str, layer: int, mean: torch.Tensor, var: torch.Tensor, batch: int) -> None:
        """Move steps 0..T-1's running statistics toward this batch's (unbiased variance, as BatchNorm)."""
        with torch.no_grad():
            steps = mean.size(0)
            getattr(self, f"running_mean_{name}")[layer, :steps].lerp_(mean, self.momentum)
            getattr(self, f"running_var_{name}")[layer, :steps].lerp_(var * (batch / max(batch - 1, 1)),
                                                                       self.momentum)

    def _normalize_sequence(self, value: torch.Tensor, ctx: SequenceContext) -> torch.Tensor:
        """γ_x ⊙ BN(W_x x_t) for all steps of a (steps, batch, gates) projection at once: statistics
        over the batch, separately for each step (the reference loop's; the fused one normalizes in
        the loop).

        As one batch norm over a (batch, steps × gates) view, whose columns are exactly the (step,
        gate) pairs (``fused_batchnorm.column_batch_norm`` in training on the CPU, ``F.batch_norm``
        elsewhere). In training it also moves the running statistics of steps 0..T-1 (unbiased
        variance, with ``momentum``).
        """
        steps, batch, width = value.shape
        flat = value.transpose(0, 1).reshape(batch, steps * width)
        gamma = self.gamma_input[ctx.index].repeat(steps)
        if ctx.training and column_batch_norm_applies(flat):
            normalized, mean, var = column_batch_norm(flat, gamma, None, self.eps)
            self._update_running("input", ctx.index, mean.view(steps, width), var.view(steps, width), batch)
            return normalized.view(batch, steps, width).transpose(0, 1)
        if ctx.training:
            mean = self.running_mean_input[ctx.index, :steps].view(-1)  # views: updated in place
            var = self.running_var_input[ctx.index, :steps].view(-1)
        else:
            slots = self._slots(ctx.index, steps, value.device)
            mean = self.running_mean_input[ctx.index][slots].reshape(-1)
            var = self.running_var_input[ctx.index][slots].reshape(-1)
        normalized = F.batch_norm(flat, mean, var, gamma, None, training=ctx.training, momentum=self.momentum,
                                  eps=self.eps)
        return normalized.view(batch, steps, width).transpose(0, 1)

    def _start_sequence(self, ctx: SequenceContext) -> None:
        """Checks a training sequence against the statistics kept, and records its length."""
        if ctx.training:
            if ctx.steps > self.max_steps:
                raise ValueError(f"recurrent_batchnorm: a training sequence of {ctx.steps} steps is longer "
                                 f"than max_steps={self.max_steps}; raise max_steps")
            if ctx.batch_size < 2:
                raise ValueError("recurrent_batchnorm: training needs a batch of at least 2 sequences")
            with torch.no_grad():
                self.steps_trained[ctx.index] = max(int(self.steps_trained[ctx.index]), ctx.steps)

    def normalize(self, site: str, value: torch.Tensor, step: int | None, ctx: SequenceContext) -> torch.Tensor:
        layer = ctx.index
        if site == "input_projection":
            self._start_sequence(ctx)
            return self._normalize_sequence(value, ctx)
        if site == "hidden_projection":
            name, weight, bias = "hidden", self.gamma_hidden[layer], None
        elif site == "cell":
            name, weight, bias = "cell", self.gamma_cell[layer], self.beta_cell[layer]
        else:
            return value
        slot = step if ctx.training else self._slot(layer, step)
        return F.batch_norm(value, getattr(self, f"running_mean_{name}")[layer, slot],
                            getattr(self, f"running_var_{name}")[layer, slot], weight, bias,
                            training=ctx.training, momentum=self.momentum, eps=self.eps)

    def fused_recurrence(self, x, weights, h0, c0, masks, ctx: SequenceContext):
        """The layer with per-step normalization of W_x x, W_h h and the cell, in one autograd
        Function. The input projection is computed batch-major, (batch, steps, gates), straight
        from the (small) input, as the loop reads it; the loop normalizes it (its statistics over
        the batch, per step), and its gradient comes back in the same layout."""
        self._start_sequence(ctx)
        projected = project_inputs(x.transpose(0, 1), weights["weight_ih"], None)  # (batch, steps, gates)
        b_ih, b_hh = weights["bias_ih"], weights["bias_hh"]
        bias = b_hh if b_ih is None else (b_ih if b_hh is None else b_ih + b_hh)  # both follow the normalizations
        layer = ctx.index
        running = None
        if not ctx.training:
            slots = self._slots(layer, ctx.steps, projected.device)
            running = tuple(getattr(self, f"running_{stat}_{name}")[layer, slots]
                            for name in ("hidden", "cell", "input") for stat in ("mean", "var"))
        hidden, cells, mean_h, var_h, mean_c, var_c, mean_x, var_x = BatchNormLSTMRecurrence.apply(
            projected.transpose(0, 1), weights["weight_hh"], bias, h0, c0, self.gamma_hidden[layer],
            self.gamma_cell[layer], self.beta_cell[layer], running, self.eps, masks.get("hidden_input"),
            masks.get("candidate"), masks.get("cell"), masks.get("cell_update"), masks.get("hidden_update"),
            self.gamma_input[layer])
        if ctx.training:
            self._update_running("input", layer, mean_x, var_x, ctx.batch_size)
            self._update_running("hidden", layer, mean_h, var_h, ctx.batch_size)
            self._update_running("cell", layer, mean_c, var_c, ctx.batch_size)
        return hidden, cells
