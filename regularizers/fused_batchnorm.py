"""The fast recurrence of a batch-normalized LSTM (Cooijmans et al. 2016), as one autograd Function.

Equations (the input projection ``BN(W_x x_t; γ_x) + b`` is normalized before the loop,
for all steps at once, and arrives here as ``xp``)::

    â_t = W_h h_{t-1}                     (the recurrent projection)
    (i, f, g, o) = act(xp_t + γ_h ⊙ BN_t(â_t))
    ĉ_t = f⊙c_{t-1} + i⊙g                 (with the LSTM's masks, as in fused.py)
    h_t = o⊙tanh(γ_c ⊙ BN_t(ĉ_t) + β_c)

``BN_t`` normalizes over the batch with step t's own statistics: the batch's in training,
given running statistics in eval (then it is an affine map with no coupling across the
batch). The backward pass uses the standard batch-norm gradient
``dx = γ·rstd·(dy − mean(dy) − x̂·mean(dy·x̂))``; like ``fused.py`` it computes the weight
gradients with one matrix product over all steps, after the loop. Tested against the
reference loop and with ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import sys

import torch

from . import native
from .fused_common import RecurrentProduct, activate_lstm_gates, at_step, lstm_gate_factors, masked, previous, use_onednn


def _loops():
    """The compiled loops where they could be built, else this module's Python ones."""
    return native.loops() or sys.modules[__name__]


def _normalize(value: torch.Tensor, eps: float, mean=None, var=None):
    """x̂ and 1/σ, from the batch (training) or from given statistics (eval)."""
    if mean is None:
        var, mean = torch.var_mean(value, dim=0, correction=0)
    rstd = (var + eps).rsqrt()
    return (value - mean) * rstd, rstd, mean, var


def _normalize_backward(d_out: torch.Tensor, normalized: torch.Tensor, rstd: torch.Tensor,
                        gamma: torch.Tensor, batch_statistics: bool) -> torch.Tensor:
    """Gradient through ``γ ⊙ BN(x)`` with respect to ``x``."""
    if not batch_statistics:
        return d_out * (gamma * rstd)
    centered = d_out - d_out.mean(0)
    centered.sub_(normalized * (d_out * normalized).mean(0))
    return centered.mul_(gamma * rstd)


def batchnorm_lstm_forward(xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, running, eps,
                           m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn):
    """``running`` is None in training, or [mean_h, var_h, mean_c, var_c] per step in eval.

    Returns the hidden states, the cells, the batch statistics of every step (mean_h, var_h,
    mean_c, var_c; for the running averages), then what the backward pass needs.
    """
    steps, batch, gate_width = xp.shape
    H = gate_width // 4
    batch_statistics = running is None
    if b_hh is not None:
        xp = xp + b_hh
    gates = xp.new_empty(steps, batch, gate_width)
    normalized_hidden = xp.new_empty(steps, batch, gate_width)  # BN_t(W_h h_{t-1})
    normalized_cells = xp.new_empty(steps, batch, H)  # BN_t(ĉ_t)
    tanh_cells = xp.new_empty(steps, batch, H)
    cells = xp.new_empty(steps, batch, H)
    hidden = xp.new_empty(steps, batch, H)
    statistics = [xp.new_empty(steps, gate_width), xp.new_empty(steps, gate_width),
                  xp.new_empty(steps, H), xp.new_empty(steps, H)]  # mean/var of â and ĉ
    rstd_hidden = xp.new_empty(steps, gate_width)
    rstd_cells = xp.new_empty(steps, H)
    recurrent_product = RecurrentProduct(w_hh, batch, onednn=onednn)
    h, c = h0, c0
    for t in range(steps):
        projection = recurrent_product(masked(h, at_step(m_hidden_input, t)))
        given = (None, None) if batch_statistics else (running[0][t], running[1][t])
        x_hat, rstd, mean, var = _normalize(projection, eps, *given)
        normalized_hidden[t] = x_hat
        rstd_hidden[t], statistics[0][t], statistics[1][t] = rstd, mean, var
        g_t = torch.addcmul(xp[t], x_hat, gamma_hidden, out=gates[t])
        i, f, g, o = activate_lstm_gates(g_t)
        update = i * g
        if m_candidate is not None:
            update.mul_(at_step(m_candidate, t))
        cell_hat = torch.addcmul(update, f, c)
        if m_cell is not None:
            cell_hat.mul_(at_step(m_cell, t))
        given = (None, None) if batch_statistics else (running[2][t], running[3][t])
        c_hat_normalized, rstd, mean, var = _normalize(cell_hat, eps, *given)
        normalized_cells[t] = c_hat_normalized
        rstd_cells[t], statistics[2][t], statistics[3][t] = rstd, mean, var
        torch.addcmul(beta_cell, c_hat_normalized, gamma_cell, out=tanh_cells[t]).tanh_()
        u_c = at_step(u_cell, t)
        if u_c is None:
            cells[t] = cell_hat
        else:
            torch.lerp(c, cell_hat, u_c.expand_as(c), out=cells[t])
        u_h = at_step(u_hidden, t)
        if u_h is None:
            torch.mul(o, tanh_cells[t], out=hidden[t])
        else:
            torch.lerp(h, o * tanh_cells[t], u_h.expand_as(h), out=hidden[t])
        h, c = hidden[t], cells[t]
    return [hidden, cells, *statistics, gates, normalized_hidden, normalized_cells, rstd_hidden, rstd_cells,
            tanh_cells]


def batchnorm_lstm_backward(grad_hidden, grad_cells, w_hh, h0, c0, gamma_hidden, gamma_cell, gates,
                            normalized_hidden, normalized_cells, rstd_hidden, rstd_cells, tanh_cells, cells, hidden,
                            m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, has_bias, batch_statistics,
                            onednn):
    steps, batch, gate_width = gates.shape
    H = gate_width // 4
    f = gates[:, :, H: 2 * H]
    # As in fused.py; here tanh's input is γ_c BN(ĉ) + β_c.
    d_gates, normalized_from_hidden = lstm_gate_factors(gates, c0, cells, tanh_cells, m_candidate)
    d_ifg, d_o = d_gates.view(steps, batch, 4, H)[:, :, :3], d_gates[:, :, 3 * H:]
    keep_cell = None if u_cell is None else 1 - u_cell
    keep_hidden = None if u_hidden is None else 1 - u_hidden
    d_projection = gates.new_empty(steps, batch, gate_width)  # gradient of W_h h_{t-1}
    d_cell_output = gates.new_empty(steps, batch, H)  # gradient of γ_c BN(ĉ) + β_c
    backward_product = RecurrentProduct(w_hh.t(), batch, onednn=onednn)
    d_h = torch.zeros_like(h0)
    d_c = torch.zeros_like(c0)
    for t in range(steps - 1, -1, -1):
        if grad_hidden is not None:
            d_h = d_h + grad_hidden[t]
        if grad_cells is not None:
            d_c = d_c + grad_cells[t]
        u_h = at_step(u_hidden, t)
        d_hidden_hat = d_h if u_h is None else d_h * u_h
        torch.mul(d_hidden_hat, normalized_from_hidden[t], out=d_cell_output[t])
        d_cell_hat = _normalize_backward(d_cell_output[t], normalized_cells[t], rstd_cells[t], gamma_cell,
                                         batch_statistics)
        u_c = at_step(u_cell, t)
        d_cell_hat.add_(d_c if u_c is None else d_c * u_c)
        if m_cell is not None:
            d_cell_hat.mul_(at_step(m_cell, t))
        d_ifg[t].mul_(d_cell_hat.unsqueeze(1))
        d_o[t].mul_(d_hidden_hat)
        d_c_previous = d_cell_hat * f[t]
        if u_c is not None:
            d_c_previous.addcmul_(d_c, at_step(keep_cell, t))
        d_projection[t] = _normalize_backward(d_gates[t], normalized_hidden[t], rstd_hidden[t], gamma_hidden,
                                              batch_statistics)
        d_h_previous = backward_product(d_projection[t])
        if m_hidden_input is not None:
            d_h_previous.mul_(at_step(m_hidden_input, t))
        if u_h is not None:
            d_h_previous.addcmul_(d_h, at_step(keep_hidden, t))
        d_h, d_c = d_h_previous, d_c_previous

    recurrent_inputs = masked(previous(h0, hidden), m_hidden_input)
    grad_w = d_projection.reshape(-1, gate_width).t() @ recurrent_inputs.reshape(-1, H)
    grad_b = d_gates.sum((0, 1)) if has_bias else None
    grad_gamma_hidden = (d_gates * normalized_hidden).sum((0, 1))
    grad_gamma_cell = (d_cell_output * normalized_cells).sum((0, 1))
    grad_beta_cell = d_cell_output.sum((0, 1))
    return [d_gates, grad_w, grad_b, d_h, d_c, grad_gamma_hidden, grad_gamma_cell, grad_beta_cell]


class BatchNormLSTMRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, running, eps,
                m_hidden_input, m_candidate, m_cell, u_cell, u_hidden):
        """Returns the hidden states, the cells, and every step's batch statistics (no gradient)."""
        masks = (m_hidden_input, m_candidate, m_cell, u_cell, u_hidden)
        ctx.loops, ctx.onednn = _loops(), use_onednn(xp)
        ctx.has_bias, ctx.batch_statistics = b_hh is not None, running is None
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not as zeros to add
        outputs = ctx.loops.batchnorm_lstm_forward(xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell,
                                                   None if running is None else list(running), eps, *masks,
                                                   ctx.onednn)
        hidden, cells, statistics, saved = outputs[0], outputs[1], outputs[2:6], outputs[6:]
        gates, normalized_hidden, normalized_cells, rstd_hidden, rstd_cells, tanh_cells = saved
        ctx.save_for_backward(w_hh, h0, c0, gamma_hidden, gamma_cell, gates, normalized_hidden, normalized_cells,
                              rstd_hidden, rstd_cells, tanh_cells, cells, hidden, *masks)
        ctx.mark_non_differentiable(*statistics)
        return (hidden, cells, *statistics)

    @staticmethod
    def backward(ctx, grad_hidden, grad_cells, *unused_statistics_grads):
        grads = ctx.loops.batchnorm_lstm_backward(grad_hidden, grad_cells, *ctx.saved_tensors, ctx.has_bias,
                                                  ctx.batch_statistics, ctx.onednn)
        return (*grads, None, None, None, None, None, None, None)


class _ColumnBatchNorm(torch.autograd.Function):
    """``F.batch_norm`` of a (rows, columns) CPU matrix with batch statistics, by the native column
    passes (the compiled module's ``column_batchnorm``); returns ``(y, mean, biased var)``."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        y, mean, var, rstd = native.loops().column_batchnorm(x, gamma, beta, eps)
        ctx.save_for_backward(x, mean, rstd, gamma)
        ctx.has_beta = beta is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y, *unused_statistics_grads):
        x, mean, rstd, gamma = ctx.saved_tensors
        grad_x, grad_gamma, grad_beta = native.loops().column_batchnorm_backward(grad_y, x, mean, rstd, gamma)
        return grad_x, grad_gamma, grad_beta if ctx.has_beta else None, None


def column_batch_norm_applies(x: torch.Tensor) -> bool:
    """Whether ``column_batch_norm`` takes ``x``: CPU float32/float64, with the native module built."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and native.loops() is not None


def column_batch_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor | None, eps: float):
    """``γ ⊙ BN(x) + β`` over the rows of a 2-D CPU matrix with the batch's statistics, as
    ``F.batch_norm(x, training=True)``: ``(y, mean, biased var)``, the statistics for the caller's
    running averages. The native column passes take recurrent_batchnorm's wide (batch, steps × gates)
    matrices in 0.6-0.9x of the time of ATen's batch norm, whose channels-last kernels they go to."""
    return _ColumnBatchNorm.apply(x, gamma, beta, float(eps))
