"""The native loops as dispatcher operators (torch.ops.regbench.*, csrc/ops.cpp and
regularizers/native_ops.py): every operator passes torch.library.opcheck, with float32 and float64
inputs, on the fast CPU path and where it falls back to the generic loops.

opcheck runs its schema test (no input mutated or aliased), its fake-tensor test (the fake
implementation's shapes, dtypes and strides are the kernel's) and its AOTAutograd test on inputs
that do not require gradients: the operators have no autograd formula (fused.py's
autograd.Functions call the backward operators), and its autograd-registration test on inputs that
do (the outputs must then not require gradients).
"""

from __future__ import annotations

import pytest
import torch

from regularizers import native, native_ops

T, B, H = 3, 2, 3
WITHOUT_AUTOGRAD = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
LSTM_MASKS = ("hidden_input", "candidate", "cell", "cell_update", "hidden_update")
GRU_MASKS = ("hidden_input", "candidate", "hidden_update")
RNN_MASKS = GRU_MASKS  # the tanh-RNN has the GRU's mask sites
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(scope="module")
def ops():
    loops = native.loops()
    if loops is None:
        pytest.skip("the native loops could not be built on this machine (no C++ compiler or ninja, or "
                    "REGBENCH_NATIVE=0), so there are no torch.ops.regbench operators to check")
    return loops


def _op(name):
    return getattr(torch.ops.regbench, name).default


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _masks(kind, dtype, names, seed=0):
    """None, per-step masks, or masks that broadcast over steps, rows or units."""
    generator = _generator(seed)
    if kind == "none":
        return [None] * len(names)
    shapes = {"per-step": [(T, B, H)] * len(names),
              "broadcast": [(1, B, H), (T, B, 1), (1, 1, 1), (T, 1, H), (1, B, 1)][:len(names)]}[kind]
    return [((torch.rand(shape, generator=generator) > 0.3).to(dtype) * (1 if "update" in name else 1.4))
            for name, shape in zip(names, shapes)]


def _sequence_inputs(gates, dtype, seed=0):
    generator = _generator(seed)
    make = lambda *shape: torch.randn(*shape, generator=generator, dtype=dtype)  # noqa: E731
    return make(T, B, gates * H), make(gates * H, H) * 0.5, make(gates * H), make(B, H), make(B, H)


def _strided(tensor):
    """The same values, not contiguous (batch-major storage): the fast backward passes then hand
    over to the generic loops."""
    return tensor.transpose(0, 1).contiguous().transpose(0, 1)


def _check(op, args, grad_args=None):
    torch.library.opcheck(op, args, test_utils=WITHOUT_AUTOGRAD)
    if grad_args is not None:
        torch.library.opcheck(op, grad_args, test_utils="test_autograd_registration")


def _requiring_grad(args):
    return tuple(a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)


CASES = [(masks, bias) for masks in ("none", "per-step", "broadcast") for bias in (True, False)]
CASE_IDS = [f"{masks}-{'bias' if bias else 'nobias'}" for masks, bias in CASES]


def test_every_operator_is_registered(ops):
    for name in native_ops.NAMES:
        # The loops have CPU (and CUDA) kernels; the mask sampler and its draws, which take no tensor,
        # one kernel for every device.
        key = "CompositeExplicitAutograd" if name in ("bernoulli_mask", "philox_draws", "parallel_threads") else "CPU"
        if name in ("add_gaussian_noise", "compact_mask", "column_batchnorm", "column_batchnorm_backward"):
            # CPU kernels only: weight noise draws with torch, and recurrent_batchnorm uses F.batch_norm, elsewhere
            assert not torch._C._dispatch_has_kernel_for_dispatch_key(f"regbench::{name}", "CUDA")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"regbench::{name}", key), name
        assert getattr(ops, name) is not None
    assert torch._C._dispatch_has_kernel_for_dispatch_key("regbench::lstm_forward", "CUDA")
    assert torch.Tag.nondeterministic_seeded in _op("bernoulli_mask").tags


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("mask_kind, bias", CASES, ids=CASE_IDS)
def test_lstm_operators(ops, mask_kind, bias, dtype, generic):
    suffix = "_generic" if generic else ""
    xp, w, b, h0, c0 = _sequence_inputs(4, dtype)
    masks = _masks(mask_kind, dtype, LSTM_MASKS)
    forward_args = (xp, w, b if bias else None, h0, c0, *masks, False)
    _check(_op("lstm_forward" + suffix), forward_args, _requiring_grad(forward_args))
    hidden, cells, gates, tanh_cells = _op("lstm_forward" + suffix)(*forward_args)
    generator = _generator(1)
    grad_h = torch.randn(T, B, H, generator=generator, dtype=dtype)
    grad_c = torch.randn(B, T, H, generator=generator, dtype=dtype).transpose(0, 1)  # read in place
    saved = (w, h0, c0, gates, cells, tanh_cells, hidden, *masks)
    for grads in ((grad_h, grad_c), (grad_h, None), (None, grad_c)):
        args = (*grads, *saved, bias, False)
        _check(_op("lstm_backward" + suffix), args, _requiring_grad(args) if grads[1] is None else None)
    # Saved tensors that are not contiguous: the fast operator runs the generic loops.
    strided = (w, h0, c0, _strided(gates), cells, tanh_cells, hidden, *masks)
    _check(_op("lstm_backward" + suffix), (grad_h, grad_c, *strided, bias, False))


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("mask_kind, bias", CASES, ids=CASE_IDS)
def test_gru_operators(ops, mask_kind, bias, dtype, generic):
    suffix = "_generic" if generic else ""
    xp, w, b, h0, _ = _sequence_inputs(3, dtype)
    masks = _masks(mask_kind, dtype, GRU_MASKS)
    forward_args = (xp, w, b if bias else None, h0, *masks, False)
    _check(_op("gru_forward" + suffix), forward_args, _requiring_grad(forward_args))
    hidden, activations, hidden_n = _op("gru_forward" + suffix)(*forward_args)
    grad_h = torch.randn(T, B, H, generator=_generator(1), dtype=dtype)
    args = (grad_h, w, h0, activations, hidden_n, hidden, *masks, bias, False)
    _check(_op("gru_backward" + suffix), args, _requiring_grad(args))
    expanded = torch.ones((), dtype=dtype).expand(T, B, H)  # as from output.sum()
    _check(_op("gru_backward" + suffix), (expanded, w, h0, _strided(activations), hidden_n, hidden, *masks, bias,
                                          False))


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("mask_kind, bias", CASES, ids=CASE_IDS)
def test_rnn_operators(ops, mask_kind, bias, dtype, generic):
    suffix = "_generic" if generic else ""
    xp, w, b, h0, _ = _sequence_inputs(1, dtype)
    masks = _masks(mask_kind, dtype, RNN_MASKS)
    forward_args = (xp, w, b if bias else None, h0, *masks, False)
    _check(_op("rnn_forward" + suffix), forward_args, _requiring_grad(forward_args))
    hidden = _op("rnn_forward" + suffix)(*forward_args)
    grad_h = torch.randn(T, B, H, generator=_generator(1), dtype=dtype)
    args = (grad_h, w, h0, hidden, *masks, bias, False)
    _check(_op("rnn_backward" + suffix), args, _requiring_grad(args))
    expanded = torch.ones((), dtype=dtype).expand(T, B, H)  # as from output.sum()
    _check(_op("rnn_backward" + suffix), (expanded, w, h0, _strided(hidden), *masks, bias, False))


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("training", [True, False], ids=["batch-statistics", "running-statistics"])
@pytest.mark.parametrize("mask_kind", ["none", "per-step", "broadcast"])
def test_batchnorm_lstm_operators(ops, mask_kind, training, dtype, generic):
    suffix = "_generic" if generic else ""
    xp, w, b, h0, c0 = _sequence_inputs(4, dtype)
    generator = _generator(2)
    gamma_h = torch.full((4 * H,), 0.1, dtype=dtype)
    gamma_c = torch.full((H,), 0.1, dtype=dtype)
    beta_c = torch.randn(H, generator=generator, dtype=dtype) * 0.1
    running = None if training else [torch.randn(T + 1, 4 * H, generator=generator, dtype=dtype),
                                     torch.rand(T + 1, 4 * H, generator=generator, dtype=dtype) + 0.5,
                                     torch.randn(T + 1, H, generator=generator, dtype=dtype),
                                     torch.rand(T + 1, H, generator=generator, dtype=dtype) + 0.5]
    masks = _masks(mask_kind, dtype, LSTM_MASKS)
    bias = mask_kind != "per-step"
    forward_args = (xp, w, b if bias else None, h0, c0, gamma_h, gamma_c, beta_c, running, 1e-5, *masks, False)
    _check(_op("batchnorm_lstm_forward" + suffix), forward_args, _requiring_grad(forward_args))
    outputs = _op("batchnorm_lstm_forward" + suffix)(*forward_args)
    hidden, cells, *_, gates, n_hidden, n_cells, rstd_hidden, rstd_cells, tanh_cells = outputs
    grad_h = torch.randn(T, B, H, generator=generator, dtype=dtype)
    grad_c = torch.randn(B, T, H, generator=generator, dtype=dtype).transpose(0, 1)
    saved = (w, h0, c0, gamma_h, gamma_c, gates, n_hidden, n_cells, rstd_hidden, rstd_cells, tanh_cells, cells,
             hidden, *masks)
    for grads in ((grad_h, grad_c), (grad_h, None)):
        args = (*grads, *saved, bias, training, False)
        _check(_op("batchnorm_lstm_backward" + suffix), args, _requiring_grad(args) if grads[1] is None else None)
    strided = (w, h0, c0, gamma_h, gamma_c, _strided(gates), *saved[6:])
    _check(_op("batchnorm_lstm_backward" + suffix), (grad_h, grad_c, *strided, bias, training, False))


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
@pytest.mark.parametrize("training", [True, False], ids=["batch-statistics", "running-statistics"])
def test_batchnorm_lstm_operators_normalizing_the_input(ops, training, generic):
    """With gamma_input the loop normalizes the (batch-major) input projection itself: three more
    statistics out of the forward pass, four more inputs and γ_x's gradient in the backward pass."""
    suffix = "_generic" if generic else ""
    dtype = torch.float64
    xp, w, b, h0, c0 = _sequence_inputs(4, dtype)
    xp = xp.transpose(0, 1).contiguous().transpose(0, 1)
    generator = _generator(3)
    gamma_h, gamma_c, gamma_x = (torch.full((n,), 0.1, dtype=dtype) for n in (4 * H, H, 4 * H))
    beta_c = torch.randn(H, generator=generator, dtype=dtype) * 0.1
    # eval: the means and (positive) variances of the recurrent projection, the cell and the input
    running = None if training else [torch.randn(T + 1, n, generator=generator, dtype=dtype).abs() + 0.5 * k
                                     for n in (4 * H, H, 4 * H) for k in (0, 1)]
    masks = _masks("per-step", dtype, LSTM_MASKS)
    forward_args = (xp, w, b, h0, c0, gamma_h, gamma_c, beta_c, running, 1e-5, *masks, False, gamma_x)
    _check(_op("batchnorm_lstm_forward" + suffix), forward_args, _requiring_grad(forward_args))
    outputs = _op("batchnorm_lstm_forward" + suffix)(*forward_args)
    hidden, cells, *_, mean_x, _, rstd_x, gates, n_hidden, n_cells, rstd_hidden, rstd_cells, tanh_cells = outputs
    assert mean_x.shape == rstd_x.shape == (T, 4 * H)
    grad_h = torch.randn(T, B, H, generator=generator, dtype=dtype)
    grad_c = torch.randn(T, B, H, generator=generator, dtype=dtype)
    saved = (w, h0, c0, gamma_h, gamma_c, gates, n_hidden, n_cells, rstd_hidden, rstd_cells, tanh_cells, cells,
             hidden, *masks)
    args = (grad_h, grad_c, *saved, True, training, False, xp, gamma_x, mean_x, rstd_x)
    _check(_op("batchnorm_lstm_backward" + suffix), args, _requiring_grad(args))
    assert _op("batchnorm_lstm_backward" + suffix)(*args)[8].shape == (4 * H,)


def test_operators_with_onednn_products(ops):
    """The oneDNN products (float32 CPU, where torch has them) inside the operators."""
    from regularizers import fused_common

    dtype = torch.float32
    xp, w, b, h0, c0 = _sequence_inputs(4, dtype)
    if not fused_common.use_onednn(xp):
        pytest.skip("oneDNN products run on float32 CPU tensors where torch is built with oneDNN")
    forward_args = (xp, w, b, h0, c0, *_masks("per-step", dtype, LSTM_MASKS), True)
    _check(_op("lstm_forward"), forward_args)
    hidden, cells, gates, tanh_cells = _op("lstm_forward")(*forward_args)
    grad_h = torch.randn(T, B, H, generator=_generator(1), dtype=dtype)
    _check(_op("lstm_backward"), (grad_h, None, w, h0, c0, gates, cells, tanh_cells, hidden, *forward_args[5:10],
                                  True, True))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_bernoulli_mask_operator(ops, dtype):
    # Probabilities 1 and 0 draw the same mask every time, which the AOTAutograd test compares.
    for keep, kept in ((1.0, 1.25), (0.0, 1.0)):
        _check(_op("bernoulli_mask"), ([2, 3, 5], keep, kept, dtype))
    mask = ops.bernoulli_mask([4, 5], 0.5, 2.0, dtype)
    assert mask.shape == (4, 5) and mask.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_add_gaussian_noise_operator(ops, dtype):
    # sigma 0 adds nothing, the same every time, which the AOTAutograd test compares.
    _check(_op("add_gaussian_noise"), (torch.randn(3, 7, dtype=dtype), 0.0))
    weight = torch.randn(4, 5, dtype=dtype).t()  # not contiguous: read as a contiguous copy
    noisy = ops.add_gaussian_noise(weight, 0.1)
    assert noisy.shape == (5, 4) and noisy.dtype == dtype and not torch.equal(noisy, weight)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_column_batchnorm_operators(ops, dtype):
    generator = _generator(4)
    x = torch.randn(5, 1500, generator=generator, dtype=dtype)  # two column blocks, the second ragged
    gamma, beta = torch.rand(1500, generator=generator, dtype=dtype), torch.randn(1500, generator=generator, dtype=dtype)
    for shift in (beta, None):
        _check(_op("column_batchnorm"), (x, gamma, shift, 1e-5))
    y, mean, var, rstd = _op("column_batchnorm")(x, gamma, beta, 1e-5)
    grad_y = torch.randn(5, 1500, generator=generator, dtype=dtype)
    _check(_op("column_batchnorm_backward"), (grad_y, x, mean, rstd, gamma))
    _check(_op("column_batchnorm_backward"), (grad_y.t().contiguous().t(), x.t().contiguous().t(), mean, rstd, gamma))


def test_philox_draws_operator(ops):
    _check(_op("philox_draws"), (0x0123456789ABCDEF, 7, 70))
    # An unsigned 64-bit key passes as its bits: the namespace takes it as is.
    key = 0xFEDCBA9876543210
    assert ops.philox_draws(key, 1, 8).tolist() == _op("philox_draws")(key - (1 << 64), 1, 8).tolist()


def test_backward_operators_give_none_for_a_missing_bias_gradient(ops):
    xp, w, b, h0, _ = _sequence_inputs(3, torch.float64)
    hidden, activations, hidden_n = ops.gru_forward(xp, w, None, h0, None, None, None, False)
    saved = (w, h0, activations, hidden_n, hidden, None, None, None)
    grad_h = torch.ones_like(hidden)
    raw = _op("gru_backward")(grad_h, *saved, False, False)
    assert raw[2].shape == (0,) and raw[2].dtype == torch.float64  # the operator: an empty tensor
    wrapped = ops.gru_backward(grad_h, *saved, False, False)
    assert wrapped[2] is None
    for a, e in zip(wrapped[:2] + wrapped[3:], raw[:2] + raw[3:]):
        torch.testing.assert_close(a, e)
    assert ops.gru_backward(grad_h, *saved, True, False)[2].shape == (3 * H,)


def test_operators_run_under_fake_tensors(ops):
    """The fakes give what the kernels give (opcheck compares them too) and trace with torch.compile's
    fake tensors, here directly: shapes and the fast backward's strides."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    xp, w, b, h0, c0 = _sequence_inputs(4, torch.float32)
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (xp, w, b, h0, c0)]
        hidden, cells, gates, tanh_cells = _op("lstm_forward")(*fake, None, None, None, None, None, False)
        assert hidden.shape == (T, B, H) and gates.shape == (T, B, 4 * H)
        grads = _op("lstm_backward")(hidden, None, fake[1], fake[3], fake[4], gates, cells, tanh_cells, hidden,
                                     None, None, None, None, None, True, False)
    real = _op("lstm_forward")(xp, w, b, h0, c0, None, None, None, None, None, False)
    real_grads = _op("lstm_backward")(real[0], None, w, h0, c0, real[2], real[1], real[3], real[0],
                                      None, None, None, None, None, True, False)
    for f, r in zip(grads, real_grads):
        assert f.shape == r.shape and f.stride() == r.stride() and f.dtype == r.dtype
