"""The pieces that the fused loops share (``fused.py``, ``fused_batchnorm.py``).

A module of its own so that both import it and neither imports the other's internals: the
per-step masks, the packed recurrent product, and the LSTM's gate activations and the
step-independent factors of its backward pass. ``csrc/common.h`` holds their C++ twins.
"""

from __future__ import annotations

import torch

from . import torch_internals


def use_onednn(tensor: torch.Tensor) -> bool:
    """Whether products with this tensor go through oneDNN (float32 CPU tensors, where it is built)."""
    return torch_internals.onednn_available() and tensor.device.type == "cpu" and tensor.dtype == torch.float32


class RecurrentProduct:
    """``x @ weight.T (+ bias)`` for many small ``x`` against one weight, packed once where possible.

    The packed path is oneDNN's inner product on float32 CPU tensors; anything else (CUDA,
    float64 for gradcheck, builds without oneDNN) uses a plain matrix product.
    """

    def __init__(self, weight: torch.Tensor, batch: int, bias: torch.Tensor | None = None,
                 onednn: bool | None = None) -> None:
        self.weight, self.bias = weight, bias
        self.packed = None
        if use_onednn(weight) if onednn is None else onednn:
            self.packed = torch_internals.reorder_linear_weight(weight.detach().contiguous(), batch)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch_internals.linear_pointwise(x.contiguous(), self.packed, self.bias)
        if self.bias is None:
            return x @ self.weight.t()
        return torch.addmm(self.bias, x, self.weight.t())


def at_step(mask: torch.Tensor | None, step: int) -> torch.Tensor | None:
    """The mask of one step: a mask whose leading dimension is 1 is the same at every step."""
    if mask is None:
        return None
    return mask[step] if mask.size(0) > 1 else mask[0]


def previous(initial: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
    """``[x_0, x_1, .., x_{T-1}]`` from the initial state and the states ``x_1..x_T``."""
    return torch.cat([initial.unsqueeze(0), sequence[:-1]])


def masked(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return value if mask is None else value * mask


def activate_lstm_gates(pre_activations: torch.Tensor):
    """In place: sigmoid on i, f, o and tanh on g (PyTorch's gate order i, f, g, o); returns the four views."""
    H = pre_activations.size(-1) // 4
    pre_activations[..., : 2 * H].sigmoid_()
    pre_activations[..., 2 * H: 3 * H].tanh_()
    pre_activations[..., 3 * H:].sigmoid_()
    return pre_activations.split(H, dim=-1)


def lstm_gate_factors(gates, c0, cells, tanh_cells, m_candidate):
    """The parts of the LSTM's backward pass that do not depend on the recurrent gradient, for all steps.

    Written straight into the gate-gradient buffer, which the backward loop then scales in place:
    d(pre-activations of i, f, g) = dĉ * factor, d(pre-activation of o) = dĥ * factor.
    ``tanh_cells`` is whatever went through the tanh of ``h = o⊙tanh(.)``; the second result is
    ``∂ĥ/∂(that input)``.
    """
    steps, batch, gate_width = gates.shape
    H = gate_width // 4
    i, f, g, o = gates.view(steps, batch, 4, H).unbind(2)
    d_gates = gates.new_empty(steps, batch, gate_width)
    d_i, d_f, d_g, d_o = d_gates.view(steps, batch, 4, H).unbind(2)
    torch.mul(masked(g, m_candidate), i * (1 - i), out=d_i)  # ∂ĉ/∂i_pre
    torch.mul(previous(c0, cells), f * (1 - f), out=d_f)  # ∂ĉ/∂f_pre
    torch.mul(masked(i, m_candidate), 1 - g * g, out=d_g)  # ∂ĉ/∂g_pre
    torch.mul(tanh_cells, o * (1 - o), out=d_o)  # ∂ĥ/∂o_pre
    return d_gates, o * (1 - tanh_cells * tanh_cells)
