"""The fast recurrence of a batch-normalized LSTM (Cooijmans et al. 2016), as one autograd Function.

Equations (``xp`` is the input projection ``W_x x_t`` of every step; given ``γ_x``, this
Function normalizes it, ``BN_t(W_x x_t; γ_x) + b``, else ``xp`` arrives normalized)::

    â_t = W_h h_{t-1}                     (the recurrent projection)
    (i, f, g, o) = act(γ_x ⊙ BN_t(xp_t) + b + γ_h ⊙ BN_t(â_t))
    ĉ_t = f⊙c_{t-1} + i⊙g                 (with the LSTM's masks, as in fused.py)
    h_t = o⊙tanh(γ_c ⊙ BN_t(ĉ_t) + β_c)

``BN_t`` normalizes over the batch with step t's own statistics: the batch's in training,
given running statistics in eval (then it is an affine map with no coupling across the
batch). The backward pass uses the standard batch-norm gradient
``dx = γ·rstd·(dy − mean(dy) − x̂·mean(dy·x̂))``; like ``fused.py`` it computes the weight
gradients with one matrix product over all steps, after the loop. The input normalization is
in the Function so that the compiled fast loop can fuse it: it takes the statistics of every step
in one pass over the projection, normalizes it as it forms the gates (no normalized copy), and
its backward pass adds the input terms to the per-step column sums it takes anyway, writing
∂L/∂(W_x x) in place of ∂L/∂gates. These Python loops (and the compiled generic ones) normalize
before the loop and differentiate after it. Tested against the reference loop and with
``torch.autograd.gradcheck``.
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


def _normalize_input_projection(xp, gamma_input, running, eps):
    """``γ_x ⊙ BN_t(xp_t)`` of every step at once, with (mean, var, 1/σ), each (steps, gates)."""
    steps = xp.size(0)
    if running is None:
        var, mean = torch.var_mean(xp, dim=1, correction=0)
    else:
        mean, var = running[4][:steps], running[5][:steps]
    rstd = (var + eps).rsqrt()
    return (xp - mean.unsqueeze(1)) * (rstd * gamma_input).unsqueeze(1), mean, var, rstd


def _normalize_input_projection_backward(d_normalized, projection, mean, rstd, gamma_input, batch_statistics):
    """∂L/∂xp and ∂L/∂γ_x through ``_normalize_input_projection``."""
    x_hat = (projection - mean.unsqueeze(1)) * rstd.unsqueeze(1)
    grad_gamma = (d_normalized * x_hat).sum((0, 1))
    centered = d_normalized
    if batch_statistics:
        centered = d_normalized - d_normalized.mean(1, keepdim=True)
        centered = centered - x_hat * (d_normalized * x_hat).mean(1, keepdim=True)
    return centered * (gamma_input * rstd).unsqueeze(1), grad_gamma


def batchnorm_lstm_forward(xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, running, eps,
                           m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn, gamma_input=None):
    """``running`` is None in training, or [mean_h, var_h, mean_c, var_c] per step in eval (and
    mean_x, var_x after them, given ``gamma_input``: then ``xp`` is normalized here).

    Returns the hidden states, the cells, the batch statistics of every step (mean_h, var_h,
    mean_c, var_c, mean_x, var_x; for the running averages; the last two empty without
    ``gamma_input``), then what the backward pass needs.
    """
    steps, batch, gate_width = xp.shape
    H = gate_width // 4
    batch_statistics = running is None
    if gamma_input is not None:
        xp, mean_x, var_x, rstd_x = _normalize_input_projection(xp, gamma_input, running, eps)
    else:
        mean_x, var_x, rstd_x = xp.new_empty(0), xp.new_empty(0), xp.new_empty(0)
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
    return [hidden, cells, *statistics, mean_x, var_x, rstd_x, gates, normalized_hidden, normalized_cells,
            rstd_hidden, rstd_cells, tanh_cells]


def batchnorm_lstm_backward(grad_hidden, grad_cells, w_hh, h0, c0, gamma_hidden, gamma_cell, gates,
                            normalized_hidden, normalized_cells, rstd_hidden, rstd_cells, tanh_cells, cells, hidden,
                            m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, has_bias, batch_statistics,
                            onednn, projection=None, gamma_input=None, mean_input=None, rstd_input=None):
    """The gradients of the forward pass's inputs (xp, w_hh, b_hh, h0, c0, γ_h, γ_c, β_c, γ_x);
    given ``gamma_input``, the forward pass normalized ``projection`` with ``mean_input`` and
    ``rstd_input`` (else the last gradient is None)."""
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
    grad_xp, grad_gamma_input = d_gates, None
    if gamma_input is not None:
        grad_xp, grad_gamma_input = _normalize_input_projection_backward(d_gates, projection, mean_input, rstd_input,
                                                                         gamma_input, batch_statistics)
    return [grad_xp, grad_w, grad_b, d_h, d_c, grad_gamma_hidden, grad_gamma_cell, grad_beta_cell, grad_gamma_input]


class BatchNormLSTMRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, running, eps,
                m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, gamma_input=None):
        """Returns the hidden states, the cells, and every step's batch statistics (no gradient):
        mean and variance of the recurrent projection, of the cell, and (given ``gamma_input``, the
        input normalization's scale: ``xp`` is then the raw projection) of the input projection."""
        masks = (m_hidden_input, m_candidate, m_cell, u_cell, u_hidden)
        ctx.loops, ctx.onednn = _loops(), use_onednn(xp)
        ctx.has_bias, ctx.batch_statistics = b_hh is not None, running is None
        ctx.normalizes_input = gamma_input is not None
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not as zeros to add
        outputs = ctx.loops.batchnorm_lstm_forward(xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell,
                                                   None if running is None else list(running), eps, *masks,
                                                   ctx.onednn, gamma_input)
        hidden, cells, statistics, rstd_input, saved = outputs[0], outputs[1], outputs[2:8], outputs[8], outputs[9:]
        gates, normalized_hidden, normalized_cells, rstd_hidden, rstd_cells, tanh_cells = saved
        input_normalization = (xp, gamma_input, statistics[4], rstd_input) if ctx.normalizes_input else (None,) * 4
        ctx.save_for_backward(w_hh, h0, c0, gamma_hidden, gamma_cell, gates, normalized_hidden, normalized_cells,
                              rstd_hidden, rstd_cells, tanh_cells, cells, hidden, *masks, *input_normalization)
        ctx.mark_non_differentiable(*statistics)
        return (hidden, cells, *statistics)

    @staticmethod
    def backward(ctx, grad_hidden, grad_cells, *unused_statistics_grads):
        saved = ctx.saved_tensors
        grads = ctx.loops.batchnorm_lstm_backward(grad_hidden, grad_cells, *saved[:-4], ctx.has_bias,
                                                  ctx.batch_statistics, ctx.onednn, *saved[-4:])
        grad_gamma_input = grads[8] if ctx.normalizes_input else None
        return (*grads[:8], None, None, None, None, None, None, None, grad_gamma_input)


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
