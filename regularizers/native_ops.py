"""The native loops' operators, ``torch.ops.regbench.*``: their fake implementations, and the
namespace that ``native.loops()`` returns.

``csrc/ops.cpp`` defines the operators (``TORCH_LIBRARY(regbench, ...)``) and their CPU and CUDA
kernels; loading the compiled library (``native.loops()``) registers them. This module gives each
one a fake implementation (``torch.library.register_fake``): the shapes, dtypes and strides of what
the kernel returns, so that the operators run under FakeTensorMode, ``torch.compile`` and
``torch.export``. The fast backward passes return the input gradient as a view of a buffer written
step-major (the gate gradients are transposed as they are written), and only where the
arguments fit the vectorized CPU rows; the fakes follow the same rule (``_fits``, the C++
``fast::fits``) to give the same strides.

No operator has an autograd formula: the autograd.Functions of ``fused.py`` and
``fused_batchnorm.py`` call the forward and backward operators themselves, with what only they
know (which outputs are used, the gradients that arrive as None, a projected LSTM's Python loops).
A gradient that does not exist (the bias's, without a bias) is an empty tensor in the operators'
outputs (not an undefined tensor: every output is a tensor for the fakes and AOTAutograd);
``Operators``, what ``native.loops()`` returns, gives None in its place, as the Python loops do.
"""

from __future__ import annotations

import torch

NAMESPACE = "regbench"

# The operators, in the order of csrc/ops.cpp.
LOOPS = ("lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward", "rnn_backward",
         "batchnorm_lstm_forward", "batchnorm_lstm_backward")
NAMES = ("bernoulli_mask", "philox_draws", "parallel_threads", "add_gaussian_noise", "compact_mask", "column_batchnorm",
         "column_batchnorm_backward", *LOOPS, *(f"{name}_generic" for name in LOOPS))

_registered = False


# Where each backward operator takes has_bias (its bias gradient is the third output).
_HAS_BIAS_ARGUMENT = {"lstm_backward": 14, "gru_backward": 9, "rnn_backward": 7, "batchnorm_lstm_backward": 20}
# Where batchnorm_lstm_backward takes gamma_input (without it, the last gradient does not exist).
_GAMMA_INPUT_ARGUMENT = 24


class Operators:
    """``torch.ops.regbench``'s operators under the names of the Python loops in ``fused.py``, with
    their signatures: the attribute ``lstm_forward`` is ``torch.ops.regbench.lstm_forward.default``,
    called as is; the backward passes give None for the bias gradient without a bias."""

    def __init__(self):
        for name in NAMES:
            if name == "philox_draws":  # the method below
                continue
            op = getattr(getattr(torch.ops, NAMESPACE), name).default
            index = _HAS_BIAS_ARGUMENT.get(name.removesuffix("_generic"))
            setattr(self, name, op if index is None else _missing_gradients_as_none(op, index))

    def philox_draws(self, key: int, block: int, count: int, portable: bool = False) -> torch.Tensor:
        """The first ``count`` 32-bit draws (as int64) of Philox4x32-10 with this 64-bit key and
        subsequence (``portable``: by the loop that runs where the CPU has no AVX2); the schema's ints
        are signed, so unsigned keys and blocks pass as their bits."""
        return torch.ops.regbench.philox_draws.default(_signed64(key), _signed64(block), count, portable)


def _missing_gradients_as_none(op, has_bias_index: int):
    """The backward operator with None for the gradients that do not exist: the bias's without a
    bias, and (the batch-normalized LSTM's ninth) γ_x's where the loop did not normalize the input."""
    def backward(*args, **kwargs):
        grads = op(*args, **kwargs)
        has_bias = kwargs["has_bias"] if "has_bias" in kwargs else args[has_bias_index]
        if not has_bias:
            grads = (*grads[:2], None, *grads[3:])
        if len(grads) == 9:
            gamma_input = kwargs.get("gamma_input", args[_GAMMA_INPUT_ARGUMENT] if len(args) > _GAMMA_INPUT_ARGUMENT
                                     else None)
            if gamma_input is None:
                grads = (*grads[:8], None)
        return grads

    backward.__name__ = backward.__qualname__ = str(op.__name__)
    backward.op = op
    return backward


def _signed64(value: int) -> int:
    value = int(value)
    if not 0 <= value < 1 << 64 and not -(1 << 63) <= value < 0:
        raise ValueError(f"{value} does not fit in 64 bits")
    return value - (1 << 64) if value >= 1 << 63 else value


def operators() -> Operators:
    """The operators, with their fake implementations registered (once). The compiled library
    must be loaded already (``native.loops()`` does both)."""
    register_fakes()
    return Operators()


# -- which kernel runs: the vectorized CPU rows, or the generic ATen loops ----------------------------

def _mask_fits(mask, steps, batch, H, dtype, compact: bool) -> bool:
    if mask is None:
        return True
    dtypes = (dtype, torch.uint8) if compact else (dtype,)
    return (mask.device.type == "cpu" and mask.dtype in dtypes and mask.dim() == 3 and mask.size(0) in (1, steps)
            and mask.size(1) in (1, batch) and mask.size(2) in (1, H))


def _fits(reference, tensors, masks, steps, batch, H, compact_masks: bool = False) -> bool:
    """The C++ ``fast::fits``: CPU float32 or float64 tensors of the reference's dtype, masks of
    shape (1 or steps, 1 or batch, 1 or H), of that dtype or (a backward pass's, ``compact_masks``)
    compact ones (uint8)."""
    dtype = reference.dtype
    if reference.device.type != "cpu" or dtype not in (torch.float32, torch.float64):
        return False
    if any(t is not None and (t.device.type != "cpu" or t.dtype != dtype) for t in tensors):
        return False
    return all(_mask_fits(m, steps, batch, H, dtype, compact_masks) for m in masks)


def _gate_gradients(reference, steps, batch, width, fast: bool, batch_major: bool = False):
    """The gradient of the gates, (steps, batch, width), as the kernel lays it out: contiguous from
    the generic loops; from the fast ones a view of (width, steps, batch) (LSTM, GRU, tanh-RNN) or
    of (batch, steps, width) (the batch-normalized LSTM)."""
    if not fast:
        return reference.new_empty((steps, batch, width))
    if batch_major:
        return reference.new_empty((batch, steps, width)).transpose(0, 1)
    return reference.new_empty((width, steps, batch)).permute(1, 2, 0)


def _bias_gradient(reference, width, has_bias):
    return reference.new_empty((width,) if has_bias else (0,))


# -- the fakes ----------------------------------------------------------------------------------------

def _lstm_forward_fake(xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn,
                       kept_values=()):
    steps, batch, width = xp.shape
    H = width // 4
    return (xp.new_empty((steps, batch, H)), xp.new_empty((steps, batch, H)), xp.new_empty((steps, batch, width)),
            xp.new_empty((steps, batch, H)))


def _lstm_backward(generic: bool):
    def fake(grad_hidden, grad_cells, w_hh, h0, c0, gates, cells, tanh_cells, hidden, m_hidden_input, m_candidate,
             m_cell, u_cell, u_hidden, has_bias, onednn, kept_values=()):
        steps, batch, width = gates.shape
        H = width // 4
        masks = (m_hidden_input, m_candidate, m_cell, u_cell, u_hidden)
        fast = (not generic and _fits(gates, (grad_hidden, grad_cells, w_hh, h0, c0, cells, tanh_cells, hidden), masks,
                                      steps, batch, H, compact_masks=True)
                and all(t.is_contiguous() for t in (gates, cells, tanh_cells, hidden)))
        return (_gate_gradients(gates, steps, batch, width, fast), gates.new_empty((width, H)),
                _bias_gradient(gates, width, has_bias), gates.new_empty((batch, H)), gates.new_empty((batch, H)))
    return fake


def _gru_forward_fake(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn, kept_values=()):
    steps, batch, width = xp.shape
    H = width // 3
    return xp.new_empty((steps, batch, H)), xp.new_empty((steps, batch, width)), xp.new_empty((steps, batch, H))


def _gru_backward(generic: bool):
    def fake(grad_hidden, w_hh, h0, activations, hidden_n, hidden, m_hidden_input, m_candidate, u_hidden, has_bias,
             onednn, kept_values=()):
        steps, batch, width = activations.shape
        H = width // 3
        fast = (not generic and _fits(activations, (grad_hidden, w_hh, h0, hidden_n, hidden),
                                      (m_hidden_input, m_candidate, u_hidden), steps, batch, H, compact_masks=True)
                and all(t.is_contiguous() for t in (activations, hidden_n, hidden)))
        return (_gate_gradients(activations, steps, batch, width, fast), activations.new_empty((width, H)),
                _bias_gradient(activations, width, has_bias), activations.new_empty((batch, H)))
    return fake


def _rnn_forward_fake(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn, kept_values=()):
    return xp.new_empty(xp.shape)  # hidden; the backward pass recovers a_t from it


def _rnn_backward(generic: bool):
    def fake(grad_hidden, w_hh, h0, hidden, m_hidden_input, m_candidate, u_hidden, has_bias, onednn, kept_values=()):
        steps, batch, H = hidden.shape
        fast = (not generic and _fits(hidden, (grad_hidden, w_hh, h0), (m_hidden_input, m_candidate, u_hidden),
                                      steps, batch, H, compact_masks=True)
                and hidden.is_contiguous())
        return (_gate_gradients(hidden, steps, batch, H, fast), hidden.new_empty((H, H)),
                _bias_gradient(hidden, H, has_bias), hidden.new_empty((batch, H)))
    return fake


def _batchnorm_lstm_forward_fake(xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, running, eps,
                                 m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn, gamma_input=None):
    steps, batch, width = xp.shape
    H = width // 4
    sequence = lambda size: xp.new_empty((steps, batch, size))  # noqa: E731
    statistic = lambda size: xp.new_empty((steps, size))  # noqa: E731
    input_statistic = lambda: statistic(width) if gamma_input is not None else xp.new_empty((0,))  # noqa: E731
    # hidden, cells, mean_h, var_h, mean_c, var_c, mean_x, var_x, 1/σ_x, gates, x̂_h, x̂_c, 1/σ_h, 1/σ_c, tanh(c)
    return (sequence(H), sequence(H), statistic(width), statistic(width), statistic(H), statistic(H), input_statistic(),
            input_statistic(), input_statistic(), sequence(width), sequence(width), sequence(H), statistic(width),
            statistic(H), sequence(H))


def _batchnorm_lstm_backward(generic: bool):
    def fake(grad_hidden, grad_cells, w_hh, h0, c0, gamma_hidden, gamma_cell, gates, normalized_hidden,
             normalized_cells, rstd_hidden, rstd_cells, tanh_cells, cells, hidden, m_hidden_input, m_candidate, m_cell,
             u_cell, u_hidden, has_bias, batch_statistics, onednn, projection=None, gamma_input=None, mean_input=None,
             rstd_input=None):
        steps, batch, width = gates.shape
        H = width // 4
        saved = (gates, normalized_hidden, normalized_cells, rstd_hidden, rstd_cells, tanh_cells, cells, hidden)
        fast = (not generic and all(t.is_contiguous() for t in saved)
                and _fits(gates, (grad_hidden, grad_cells, w_hh, h0, c0, gamma_hidden, gamma_cell, *saved[1:],
                                  projection, gamma_input, mean_input, rstd_input),
                          (m_hidden_input, m_candidate, m_cell, u_cell, u_hidden), steps, batch, H))
        return (_gate_gradients(gates, steps, batch, width, fast, batch_major=True), gates.new_empty((width, H)),
                _bias_gradient(gates, width, has_bias), gates.new_empty((batch, H)), gates.new_empty((batch, H)),
                gates.new_empty((width,)), gates.new_empty((H,)), gates.new_empty((H,)),
                gates.new_empty((width,) if gamma_input is not None else (0,)))
    return fake


def _bernoulli_mask_fake(sizes, keep_probability, kept_value, dtype):
    return torch.empty(sizes, dtype=dtype, device="cpu")


def _compact_mask_fake(mask):
    # Whether a mask is two-valued is in its data, which a fake tensor has not: fused.py compacts no
    # mask while it is traced.
    raise torch._subclasses.fake_tensor.DynamicOutputShapeException(torch.ops.regbench.compact_mask.default)


def _add_gaussian_noise_fake(weight, sigma, portable=False):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


def _column_batchnorm_fake(x, gamma, beta, eps):
    statistic = lambda: x.new_empty((x.size(1),))  # noqa: E731
    return torch.empty_like(x, memory_format=torch.contiguous_format), statistic(), statistic(), statistic()


def _column_batchnorm_backward_fake(grad_y, x, mean, rstd, gamma):
    return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((x.size(1),)),
            x.new_empty((x.size(1),)))


def _philox_draws_fake(key, block, count, portable=False):
    return torch.empty((count,), dtype=torch.int64, device="cpu")


def _fakes():
    fakes = {"bernoulli_mask": _bernoulli_mask_fake, "philox_draws": _philox_draws_fake,
             "add_gaussian_noise": _add_gaussian_noise_fake, "compact_mask": _compact_mask_fake,
             "column_batchnorm": _column_batchnorm_fake,
             "column_batchnorm_backward": _column_batchnorm_backward_fake}
    for generic, suffix in ((False, ""), (True, "_generic")):
        fakes[f"lstm_forward{suffix}"] = _lstm_forward_fake
        fakes[f"lstm_backward{suffix}"] = _lstm_backward(generic)
        fakes[f"gru_forward{suffix}"] = _gru_forward_fake
        fakes[f"gru_backward{suffix}"] = _gru_backward(generic)
        fakes[f"rnn_forward{suffix}"] = _rnn_forward_fake
        fakes[f"rnn_backward{suffix}"] = _rnn_backward(generic)
        fakes[f"batchnorm_lstm_forward{suffix}"] = _batchnorm_lstm_forward_fake
        fakes[f"batchnorm_lstm_backward{suffix}"] = _batchnorm_lstm_backward(generic)
    return fakes


def register_fakes() -> None:
    """Registers every operator's fake implementation, once per process."""
    global _registered
    if _registered:
        return
    for name, fake in _fakes().items():
        torch.library.register_fake(f"{NAMESPACE}::{name}", fake)
    _registered = True
