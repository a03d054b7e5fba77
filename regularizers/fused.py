"""The fast recurrence: one hand-written autograd Function per cell type.

Same equations and mask sites as ``reference.py``, which is the definition this file is
tested against (outputs, gradients, and ``torch.autograd.gradcheck`` in float64).

Why it is fast:
- the forward loop runs without autograd, writing into preallocated buffers, with about ten
  tensor operations a step;
- the backward pass computes every factor that does not depend on the recurrent gradient
  (activation derivatives, mask products) for all steps at once, before its loop, so the loop
  itself is a handful of multiplications and one matrix product a step;
- the weight gradient is one large matrix product over all steps after the loop, as in cuDNN,
  instead of one small product a step;
- on the CPU, the small per-step products ``h_{t-1} W_hh^T`` and ``dgates W_hh`` go through
  oneDNN with the weight packed once per call into its blocked layout (``RecurrentProduct``);
  an ordinary ``mm`` re-packs the whole weight at every step, which at batch 32 costs half
  of the loop's time.

The Python LSTM loops also take LSTM's projection ``W_hr`` (torch's ``proj_size``); the compiled
ones don't, so a projected layer runs the Python loops.

Masks are constants here (no gradient: a mask that requires one is refused, and the layers
run such a mask through the reference loop instead); each is ``None`` or a tensor of shape
``(T or 1, B or 1, H or 1)``.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import torch

from . import fused_batchnorm, torch_internals
from .fused_common import (RecurrentProduct, activate_lstm_gates, at_step, lstm_gate_factors, masked, previous,
                           use_onednn)

# Kept under its old name for the tests, which skip the oneDNN cases without it.
_ONEDNN_LINEAR = torch_internals.onednn_available()


class _InputProjection(torch.autograd.Function):
    """``(x ⊙ mask) @ weight.T + bias`` for every step at once (``mask``: variational dropout's input
    mask, or None), through oneDNN where it is faster (float32 on the CPU).

    The same as ``F.linear(x * mask, ...)`` with two differences. It is faster here: ATen's float32
    matrix product is MKL's, which on this project's CPUs runs these shapes (a short inner
    dimension, or a long one for the weight gradient) at about half oneDNN's speed. And it keeps
    ``x`` and the mask for the backward pass, not their product, which it makes again there: the
    product is a copy of the whole sequence's input, which autograd would hold from the forward
    pass to the backward (``x`` is held anyway, by the caller or by the layer below). The gradient
    that arrives from the native loops is laid out transposed, ``(4H, T·B)`` in memory, which is
    exactly the left factor of the weight gradient, so that product needs no copy.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mask):
        ctx.save_for_backward(x, weight, mask)
        ctx.has_bias, ctx.onednn = bias is not None, use_onednn(x)
        inputs = masked(x, mask).reshape(-1, x.size(-1))
        if ctx.onednn:
            return torch_internals.linear_pointwise(inputs, weight, bias).view(*x.shape[:-1], -1)
        return torch.nn.functional.linear(inputs, weight, bias).view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx, grad):
        x, weight, mask = ctx.saved_tensors
        flat_grad = grad.reshape(-1, grad.size(-1))
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (flat_grad @ weight).view(x.shape)
            if mask is not None:
                grad_x.mul_(mask)
        if ctx.needs_input_grad[1]:
            grad_weight = _projection_weight_gradient(flat_grad, x, mask, ctx.onednn)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = flat_grad.sum(0)
        return grad_x, grad_weight, grad_bias, None


def _projection_weight_gradient(flat_grad: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None,
                                onednn: bool) -> torch.Tensor:
    """``flat_grad.T @ (x ⊙ mask)``, by the fastest product for the gradient's layout."""
    if onednn and flat_grad.t().is_contiguous():
        return _input_weight_gradient(flat_grad.t(), x, mask)
    flat_x = masked(x, mask).reshape(-1, x.size(-1))
    if onednn and flat_grad.is_contiguous():
        # A row-major gradient (the batch-normalized loop's): oneDNN takes it as the weight operand
        # in place, for the transposed product, at twice MKL's speed here.
        return torch_internals.linear_pointwise(flat_x.t().contiguous(), flat_grad.t(), None).t().contiguous()
    return flat_grad.t() @ flat_x


def _input_weight_gradient(grad_t: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``grad_t @ (x ⊙ mask)`` ((out, rows) by (rows, in), x of any shape with rows × in entries).
    oneDNN wants the right factor transposed, and where the input is as wide as the output (the
    tanh-RNN's layers above the first, a language model's embedding) that copy of the whole
    sequence's input was the backward pass's largest allocation, and ATen's product, which reads x
    as it lies, is as fast there (4.6 against 6.4 ms at char_ptb/cpu-v1's 256 by 3,200 by 256).
    Wider outputs (the LSTM's and GRU's gates) keep oneDNN, up to 1.5x faster; the masked input is
    then written transposed at once, not masked and then transposed (one sequence-sized copy less)."""
    rows, width = grad_t.size(1), x.size(-1)
    if grad_t.size(0) > width:
        x_t = x.new_empty((width, rows))
        torch.mul(x, 1.0 if mask is None else mask, out=x_t.t().view(x.shape))
        return torch_internals.linear_pointwise(grad_t, x_t, None)
    if mask is None or x.dim() != 3:
        return grad_t @ masked(x, mask).reshape(-1, width)
    # x ⊙ mask an eighth of the steps at a time, not as a copy of the whole sequence's input: the
    # tanh-RNN's peak memory at char_ptb/cpu-v1 with variational dropout went from 1.03x torch's to under.
    grad = grad_t.new_zeros((grad_t.size(0), width))
    steps, batch = x.shape[:2]
    chunk = -(-steps // 8)
    for first in range(0, steps, chunk):
        last = min(first + chunk, steps)
        part = x[first:last] * (mask[first:last] if mask.size(0) > 1 else mask)
        grad.addmm_(grad_t[:, first * batch:last * batch], part.reshape(-1, width))
    return grad


def project_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x * mask, weight, bias)`` (``mask`` None: ``F.linear(x, weight, bias)``), through
    oneDNN where it is faster, keeping no product of x and the mask (see ``_InputProjection``).
    A mask that needs a gradient (a learned one) is refused: multiply it in with autograd."""
    if mask is not None and torch.is_grad_enabled() and mask.requires_grad:
        raise ValueError("project_inputs gives the mask no gradient, and this one requires one; pass "
                         "F.linear(x * mask, weight, bias) instead")
    if x.dim() >= 2 and x.numel() > 0 and (mask is not None or use_onednn(x)):
        return _InputProjection.apply(x, weight, bias, mask)
    return torch.nn.functional.linear(masked(x, mask), weight, bias)


def _weight_grads(d_recurrent: torch.Tensor, h0: torch.Tensor, hidden: torch.Tensor,
                  hidden_input_mask: torch.Tensor | None, has_bias: bool):
    """Gradients of W_hh and b_hh from the gradients of the recurrent projection at every step."""
    recurrent_inputs = masked(previous(h0, hidden), hidden_input_mask)
    flat = d_recurrent.reshape(-1, d_recurrent.size(-1))
    grad_weight = flat.t() @ recurrent_inputs.reshape(-1, recurrent_inputs.size(-1))
    grad_bias = flat.sum(0) if has_bias else None
    return grad_weight, grad_bias


# -- the loops, in Python ---------------------------------------------------------------------
# ``csrc/`` (lstm_gru.cpp, rnn.cpp, generic_loops.cpp) implements the same functions with the same
# signatures and the same tensor operations, without Python's per-operation overhead (see
# ``native.py``). Each returns a list: the outputs, then what the backward pass needs.

def lstm_forward(xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn,
                 w_hr=None):
    """``w_hr`` (torch's ``proj_size``, Python loop only): ``ĥ = W_hr (o⊙tanh(ĉ))``."""
    steps, batch, gate_width = xp.shape
    H = gate_width // 4
    if b_hh is not None:
        xp = xp + b_hh
    gates = xp.new_empty(steps, batch, gate_width)  # activations i, f, g, o
    cells = xp.new_empty(steps, batch, H)
    tanh_cells = xp.new_empty(steps, batch, H)  # tanh(ĉ_t), reused by the backward pass
    hidden = xp.new_empty(steps, batch, H if w_hr is None else w_hr.size(0))
    recurrent_product = RecurrentProduct(w_hh, batch, onednn=onednn)
    projection = None if w_hr is None else RecurrentProduct(w_hr, batch, onednn=onednn)
    h, c = h0, c0
    for t in range(steps):
        g_t = torch.add(xp[t], recurrent_product(masked(h, at_step(m_hidden_input, t))), out=gates[t])
        i, f, g, o = activate_lstm_gates(g_t)
        update = i * g
        if m_candidate is not None:
            update.mul_(at_step(m_candidate, t))
        u_c = at_step(u_cell, t)
        cell_hat = torch.addcmul(update, f, c, out=None if u_c is not None else cells[t])
        if m_cell is not None:
            cell_hat.mul_(at_step(m_cell, t))
        torch.tanh(cell_hat, out=tanh_cells[t])
        if u_c is not None:
            torch.lerp(c, cell_hat, u_c.expand_as(c), out=cells[t])
        u_h = at_step(u_hidden, t)
        if projection is not None:
            hidden_hat = projection(o * tanh_cells[t])
            if u_h is None:
                hidden[t].copy_(hidden_hat)
            else:
                torch.lerp(h, hidden_hat, u_h.expand_as(h), out=hidden[t])
        elif u_h is None:
            torch.mul(o, tanh_cells[t], out=hidden[t])
        else:
            torch.lerp(h, o * tanh_cells[t], u_h.expand_as(h), out=hidden[t])
        h, c = hidden[t], cells[t]
    return [hidden, cells, gates, tanh_cells]


def lstm_backward(grad_hidden, grad_cells, w_hh, h0, c0, gates, cells, tanh_cells, hidden,
                  m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, has_bias, onednn, w_hr=None):
    """With ``w_hr`` (Python loop only) the result ends with the gradient of ``W_hr``."""
    steps, batch, gate_width = gates.shape
    H = gate_width // 4
    f = gates[:, :, H: 2 * H]
    if w_hr is not None:
        unprojection = RecurrentProduct(w_hr.t(), batch, onednn=onednn)  # dĥ W_hr: back to the H units
        d_projected = gates.new_empty(steps, batch, w_hr.size(0))  # dL/dĥ_t, for W_hr's gradient
    d_gates, cell_from_hidden = lstm_gate_factors(gates, c0, cells, tanh_cells, m_candidate)
    d_ifg, d_o = d_gates.view(steps, batch, 4, H)[:, :, :3], d_gates[:, :, 3 * H:]
    keep_cell = None if u_cell is None else 1 - u_cell
    keep_hidden = None if u_hidden is None else 1 - u_hidden
    backward_product = RecurrentProduct(w_hh.t(), batch, onednn=onednn)  # d_gates @ W_hh
    d_h = torch.zeros_like(h0)
    d_c = torch.zeros_like(c0)
    for t in range(steps - 1, -1, -1):
        if grad_hidden is not None:
            d_h = d_h + grad_hidden[t]
        if grad_cells is not None:
            d_c = d_c + grad_cells[t]
        u_h = at_step(u_hidden, t)
        d_hidden_hat = d_h if u_h is None else d_h * u_h
        if w_hr is not None:
            d_projected[t] = d_hidden_hat
            d_hidden_hat = unprojection(d_hidden_hat)  # the gradient of o⊙tanh(ĉ)
        u_c = at_step(u_cell, t)
        d_cell_hat = torch.addcmul(d_c if u_c is None else d_c * u_c, d_hidden_hat, cell_from_hidden[t])
        if m_cell is not None:
            d_cell_hat.mul_(at_step(m_cell, t))
        d_ifg[t].mul_(d_cell_hat.unsqueeze(1))
        d_o[t].mul_(d_hidden_hat)
        d_c_previous = d_cell_hat * f[t]
        if u_c is not None:
            d_c_previous.addcmul_(d_c, at_step(keep_cell, t))
        d_h_previous = backward_product(d_gates[t])
        if m_hidden_input is not None:
            d_h_previous.mul_(at_step(m_hidden_input, t))
        if u_h is not None:
            d_h_previous.addcmul_(d_h, at_step(keep_hidden, t))
        d_h, d_c = d_h_previous, d_c_previous

    grad_w, grad_b = _weight_grads(d_gates, h0, hidden, m_hidden_input, has_bias)
    if w_hr is None:
        return [d_gates, grad_w, grad_b, d_h, d_c]
    unprojected = gates[:, :, 3 * H:] * tanh_cells  # o⊙tanh(ĉ) of every step
    grad_w_hr = d_projected.reshape(-1, w_hr.size(0)).t() @ unprojected.reshape(-1, H)
    return [d_gates, grad_w, grad_b, d_h, d_c, grad_w_hr]


def gru_forward(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn):
    steps, batch, gate_width = xp.shape
    H = gate_width // 3
    activations = xp.new_empty(steps, batch, gate_width)  # r, z, n
    hidden_n = xp.new_empty(steps, batch, H)  # W_hn h + b_hn, which r multiplies
    hidden = xp.new_empty(steps, batch, H)
    recurrent_product = RecurrentProduct(w_hh, batch, b_hh, onednn=onednn)
    h = h0
    for t in range(steps):
        recurrent = recurrent_product(masked(h, at_step(m_hidden_input, t)))
        a_t = activations[t]
        torch.add(xp[t, :, : 2 * H], recurrent[:, : 2 * H], out=a_t[:, : 2 * H]).sigmoid_()
        hidden_n[t].copy_(recurrent[:, 2 * H:])
        r, z = a_t[:, :H], a_t[:, H: 2 * H]
        torch.addcmul(xp[t, :, 2 * H:], r, hidden_n[t], out=a_t[:, 2 * H:]).tanh_()
        n = masked(a_t[:, 2 * H:], at_step(m_candidate, t))
        u_h = at_step(u_hidden, t)
        if u_h is None:
            torch.lerp(n, h, z, out=hidden[t])  # (1 - z) n + z h
        else:
            torch.lerp(h, torch.lerp(n, h, z), u_h.expand_as(h), out=hidden[t])
        h = hidden[t]
    return [hidden, activations, hidden_n]


def gru_backward(grad_hidden, w_hh, h0, activations, hidden_n, hidden, m_hidden_input, m_candidate, u_hidden,
                 has_bias, onednn):
    steps, batch, gate_width = activations.shape
    H = gate_width // 3
    r, z, n = activations.view(steps, batch, 3, H).unbind(2)
    h_previous = previous(h0, hidden)

    # d(pre-activations of r, z, n) = dĥ * factor, for all steps at once.
    d_input = activations.new_empty(steps, batch, gate_width)
    d_r, d_z, d_n = d_input.view(steps, batch, 3, H).unbind(2)
    torch.mul(masked(1 - z, m_candidate), 1 - n * n, out=d_n)
    torch.mul(d_n, hidden_n * r * (1 - r), out=d_r)
    torch.mul(h_previous - masked(n, m_candidate), z * (1 - z), out=d_z)
    recurrent_n_factor = d_n * r  # ∂ĥ/∂(W_hn h + b_hn)
    keep_hidden = None if u_hidden is None else 1 - u_hidden

    d_recurrent = activations.new_empty(steps, batch, gate_width)
    backward_product = RecurrentProduct(w_hh.t(), batch, onednn=onednn)
    d_h = torch.zeros_like(h0)
    for t in range(steps - 1, -1, -1):
        d_h = d_h + grad_hidden[t]
        u_h = at_step(u_hidden, t)
        d_hidden_hat = d_h if u_h is None else d_h * u_h
        d_input[t].view(batch, 3, H).mul_(d_hidden_hat.unsqueeze(1))
        d_recurrent[t, :, : 2 * H].copy_(d_input[t, :, : 2 * H])
        torch.mul(d_hidden_hat, recurrent_n_factor[t], out=d_recurrent[t, :, 2 * H:])
        d_h_previous = backward_product(d_recurrent[t])
        if m_hidden_input is not None:
            d_h_previous.mul_(at_step(m_hidden_input, t))
        d_h_previous.addcmul_(d_hidden_hat, z[t])
        if u_h is not None:
            d_h_previous.addcmul_(d_h, at_step(keep_hidden, t))
        d_h = d_h_previous

    grad_w, grad_b = _weight_grads(d_recurrent, h0, hidden, m_hidden_input, has_bias)
    return [d_input, grad_w, grad_b, d_h]


def rnn_forward(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn):
    """a_t = tanh(xp_t + b + (h_{t-1}⊙m_hidden_input_t) W^T), h_t = u_t⊙(a_t⊙m_candidate_t) + (1-u_t)⊙h_{t-1}.

    Returns the hidden states alone: the backward pass recovers what it needs of a_t from them
    (``rnn_coefficients``), so no a_t is kept."""
    steps, batch, H = xp.shape
    if b_hh is not None:
        xp = xp + b_hh
    hidden = xp.new_empty(steps, batch, H)
    recurrent_product = RecurrentProduct(w_hh, batch, onednn=onednn)
    h = h0
    for t in range(steps):
        recurrent = recurrent_product(masked(h, at_step(m_hidden_input, t)))
        a_t = torch.add(xp[t], recurrent).tanh_()
        u_h = at_step(u_hidden, t)
        m = at_step(m_candidate, t)
        if u_h is None:
            torch.mul(a_t, m, out=hidden[t]) if m is not None else hidden[t].copy_(a_t)
        else:
            torch.lerp(h, masked(a_t, m), u_h.expand_as(h), out=hidden[t])
        h = hidden[t]
    return hidden


def rnn_coefficients(h0, hidden, m_candidate, u_hidden):
    """∂h_t/∂(pre-activation) = u⊙m⊙(1 - a_t²) of every step, with a_t recovered from the states.

    u⊙m⊙a_t = h_t - (1-u)⊙h_{t-1}, so a_t is known wherever u⊙m ≠ 0, which is the only place the
    coefficient is not 0 (a unit that kept its state, or a dropped candidate). Clamping the recovered
    a_t to tanh's range bounds the coefficient's error by about 2 ulp of h, whatever u⊙m is.
    """
    if m_candidate is None and u_hidden is None:
        return 1 - hidden * hidden
    if u_hidden is None:
        um, x = m_candidate, hidden
    else:
        um, x = masked(u_hidden, m_candidate), hidden - (1 - u_hidden) * previous(h0, hidden)
    a = torch.where(um != 0, x / um, torch.zeros_like(x)).clamp_(-1, 1)
    return um * (1 - a * a)


def rnn_backward(grad_hidden, w_hh, h0, hidden, m_hidden_input, m_candidate, u_hidden, has_bias, onednn):
    coefficient = rnn_coefficients(h0, hidden, m_candidate, u_hidden)
    d_pre = hidden.new_empty(hidden.shape)
    backward_product = RecurrentProduct(w_hh.t(), hidden.size(1), onednn=onednn)
    d_h = torch.zeros_like(h0)
    for t in range(hidden.size(0) - 1, -1, -1):
        d_h = d_h + grad_hidden[t]
        u_h = at_step(u_hidden, t)
        torch.mul(d_h, coefficient[t], out=d_pre[t])
        d_h_previous = backward_product(d_pre[t])
        if m_hidden_input is not None:
            d_h_previous.mul_(at_step(m_hidden_input, t))
        if u_h is not None:
            d_h_previous.addcmul_(d_h, 1 - u_h)
        d_h = d_h_previous
    grad_w, grad_b = _weight_grads(d_pre, h0, hidden, m_hidden_input, has_bias)
    return [d_pre, grad_w, grad_b, d_h]


class _PythonLoops:
    """The Python loops, under the names the compiled module gives them."""

    def __getattr__(self, name):
        if name.startswith("batchnorm_"):
            return getattr(fused_batchnorm, name)
        return getattr(sys.modules[__name__], name)


def _loops():
    """The compiled loops where they could be built, else the Python ones."""
    from . import native

    return native.loops() or _PythonLoops()


class _LSTMRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, w_hr, kept):
        masks = (m_hidden_input, m_candidate, m_cell, u_cell, u_hidden)
        # The compiled loops have no projection: a projected LSTM (w_hr) runs the Python loops.
        ctx.loops = _loops() if w_hr is None else _PythonLoops()
        ctx.onednn, ctx.has_bias, ctx.kept = use_onednn(xp), b_hh is not None, kept
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not as zeros to add
        projection = () if w_hr is None else (w_hr,)
        hidden, cells, gates, tanh_cells = ctx.loops.lstm_forward(xp, w_hh, b_hh, h0, c0, *masks, ctx.onednn,
                                                                  *projection, **kept)
        ctx.save_for_backward(w_hh, h0, c0, gates, cells, tanh_cells, hidden, *masks, *projection)
        ctx.projected = w_hr is not None
        return hidden, cells

    @staticmethod
    def backward(ctx, grad_hidden, grad_cells):
        saved = list(ctx.saved_tensors)
        projection = saved[-1:] if ctx.projected else []
        saved = saved[:len(saved) - len(projection)]
        grads = ctx.loops.lstm_backward(grad_hidden, grad_cells, *saved, ctx.has_bias, ctx.onednn, *projection,
                                        **ctx.kept)
        d_xp, d_w_hh, d_b_hh, d_h0, d_c0, *d_w_hr = grads
        return (d_xp, d_w_hh, d_b_hh, d_h0, d_c0, None, None, None, None, None, *(d_w_hr or [None]), None)


class _GRURecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, kept):
        masks = (m_hidden_input, m_candidate, u_hidden)
        ctx.loops, ctx.onednn, ctx.has_bias, ctx.kept = _loops(), use_onednn(xp), b_hh is not None, kept
        hidden, activations, hidden_n = ctx.loops.gru_forward(xp, w_hh, b_hh, h0, *masks, ctx.onednn, **kept)
        ctx.save_for_backward(w_hh, h0, activations, hidden_n, hidden, *masks)
        return hidden

    @staticmethod
    def backward(ctx, grad_hidden):
        grads = ctx.loops.gru_backward(grad_hidden, *ctx.saved_tensors, ctx.has_bias, ctx.onednn, **ctx.kept)
        return (*grads, None, None, None, None)


class _RNNRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, kept):
        masks = (m_hidden_input, m_candidate, u_hidden)
        ctx.loops, ctx.onednn, ctx.has_bias, ctx.kept = _loops(), use_onednn(xp), b_hh is not None, kept
        hidden = ctx.loops.rnn_forward(xp, w_hh, b_hh, h0, *masks, ctx.onednn, **kept)
        ctx.save_for_backward(w_hh, h0, hidden, *masks)
        return hidden

    @staticmethod
    def backward(ctx, grad_hidden):
        grads = ctx.loops.rnn_backward(grad_hidden, *ctx.saved_tensors, ctx.has_bias, ctx.onednn, **ctx.kept)
        return (*grads, None, None, None, None)


class CompactMask(NamedTuple):
    """A mask in the compact form the compiled loops read (``compact_masks``): uint8 ``flags`` that
    stand for ``kept`` where set and for 0 elsewhere."""
    flags: torch.Tensor
    kept: float


def compact_masks(masks: dict[str, torch.Tensor | CompactMask]) -> None:
    """In place: the per-step masks of ``masks`` whose entries are 0 or one value (every dropout and
    zoneout mask) become ``CompactMask``, a byte an entry, where the compiled loops run (CPU, float32
    or float64). The float masks are then freed, as no one else holds them: the loops keep a quarter
    of the float32 masks' memory from the forward pass to the backward. For the tanh-RNN, whose
    loops keep nothing else of a sequence's size but its hidden states, the float masks kept its
    peak memory above torch.nn.RNN's (up to 1.15x at word_ptb/medium, measured by ``regbench perf``).
    Only for ``fused_recurrence`` with the compiled loops; nothing changes without them, or while
    the layer is traced (whether a mask is two-valued is in its data)."""
    compact = getattr(_loops(), "compact_mask", None)  # the Python loops have none
    if compact is None or torch.compiler.is_compiling():
        return
    for site, mask in list(masks.items()):
        if (site != "input" and isinstance(mask, torch.Tensor) and mask.dim() == 3 and mask.size(0) > 1
                and mask.device.type == "cpu" and mask.dtype in (torch.float32, torch.float64)
                and not mask.requires_grad):
            flags, kept = compact(mask)
            if flags.numel() > 0:
                masks[site] = CompactMask(flags, kept)


def fused_recurrence(cell_type: str, xp: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None,
                     h0: torch.Tensor, c0: torch.Tensor | None, masks: dict[str, torch.Tensor | CompactMask | None],
                     normalize=None, w_hr: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Drop-in for ``reference.reference_recurrence`` without ``normalize``. ``masks`` may hold
    ``CompactMask`` (``compact_masks``) where the compiled loops run, not with ``w_hr``."""
    if normalize is not None:
        raise ValueError("the fused recurrence does not support normalize hooks; use reference_recurrence")
    if w_hr is not None and cell_type != "lstm":
        raise ValueError("only an LSTM has a projection w_hr")
    if torch.is_grad_enabled() and any(isinstance(m, torch.Tensor) and m.requires_grad for m in masks.values()):
        raise ValueError("the fused recurrence gives masks no gradient, and a mask here requires one; use "
                         "reference_recurrence (the layers do so by themselves)")
    if cell_type not in _MASK_ORDER:
        raise ValueError(f"unknown cell type {cell_type!r}")
    ordered = [masks.get(site) for site in _MASK_ORDER[cell_type]]
    tensors = [m.flags if isinstance(m, CompactMask) else m for m in ordered]
    kept = {}  # the loops' keyword argument: the value each mask stands for (1 but for compact ones)
    if any(isinstance(m, CompactMask) for m in ordered):
        if w_hr is not None:
            raise ValueError("a projected LSTM (w_hr) runs the Python loops, which take no compact masks")
        kept = {"kept_values": [m.kept if isinstance(m, CompactMask) else 1.0 for m in ordered]}
    if cell_type == "lstm":
        return _LSTMRecurrence.apply(xp, w_hh, b_hh, h0, c0, *tensors, w_hr, kept)
    recurrence = _GRURecurrence if cell_type == "gru" else _RNNRecurrence
    return recurrence.apply(xp, w_hh, b_hh, h0, *tensors, kept), None


# The loops' mask arguments, in their order.
_MASK_ORDER = {"lstm": ("hidden_input", "candidate", "cell", "cell_update", "hidden_update"),
               "gru": ("hidden_input", "candidate", "hidden_update"),
               "rnn": ("hidden_input", "candidate", "hidden_update")}
