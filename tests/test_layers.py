"""RegularizedLSTM / GRU / RNN without a regularizer are torch.nn.LSTM / GRU / RNN.

Every comparison is against torch's own module (cuDNN-free CPU kernels) after loading its
state dict strictly into ours: outputs, final states and the gradients of every parameter,
of the input and of the initial state, in train and eval, for both recurrence loops.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

try:
    import regularizers as R
except ImportError:  # running pytest without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import regularizers as R

TOL = dict(rtol=1e-5, atol=1e-5)
LAYERS = {"lstm": (nn.LSTM, R.RegularizedLSTM), "gru": (nn.GRU, R.RegularizedGRU), "rnn": (nn.RNN, R.RegularizedRNN)}
INPUT, HIDDEN, STEPS, BATCH = 3, 5, 4, 2


def make_pair(cell, num_layers=1, bias=True, batch_first=False, regularizers=None, seed=0):
    torch_cls, our_cls = LAYERS[cell]
    torch.manual_seed(seed)
    reference = torch_cls(INPUT, HIDDEN, num_layers=num_layers, bias=bias, batch_first=batch_first)
    ours = our_cls(INPUT, HIDDEN, num_layers=num_layers, bias=bias, batch_first=batch_first,
                   regularizers=regularizers)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def initial_state(cell, num_layers, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (num_layers, HIDDEN) if batch is None else (num_layers, batch, HIDDEN)
    h0 = torch.randn(shape, generator=g)
    if cell == "lstm":
        return h0, torch.randn(shape, generator=g)
    return h0


def _leaves(state):
    return list(state) if isinstance(state, tuple) else [state]


def run(module, x, state):
    """Forward, a loss touching the output and every final state, backward. Returns the tensors and grads."""
    x = x.detach().clone().requires_grad_(True)
    if state is not None:
        state = tuple(s.detach().clone().requires_grad_(True) for s in _leaves(state))
        state_arg = state if len(state) == 2 else state[0]
    else:
        state_arg = None
    module.zero_grad()
    output, final = module(x, state_arg)
    weights = torch.linspace(-1, 1, output.numel()).reshape(output.shape)
    loss = (output * weights).sum() + sum((s * s).sum() for s in _leaves(final))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    grads["input"] = x.grad.clone()
    if state is not None:
        for k, s in enumerate(state):
            grads[f"state{k}"] = s.grad.clone()
    return output.detach(), [s.detach() for s in _leaves(final)], grads


def assert_same(a, b):
    out_a, final_a, grads_a = a
    out_b, final_b, grads_b = b
    torch.testing.assert_close(out_a, out_b, **TOL)
    assert len(final_a) == len(final_b)
    for s, t in zip(final_a, final_b):
        torch.testing.assert_close(s, t, **TOL)
    assert grads_a.keys() == grads_b.keys()
    for key in grads_a:
        torch.testing.assert_close(grads_a[key], grads_b[key], **TOL, msg=lambda m: f"gradient of {key}: {m}")


CASES = list(itertools.product(["lstm", "gru", "rnn"], [1, 2], [False, True], [True, False], [False, True]))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("cell,num_layers,batch_first,bias,with_state", CASES,
                         ids=[f"{c}-L{n}-{'bf' if b else 'tf'}-{'bias' if bi else 'nobias'}-{'hx' if s else 'nohx'}"
                              for c, n, b, bi, s in CASES])
def test_equals_torch(cell, num_layers, batch_first, bias, with_state, fused):
    reference, ours = make_pair(cell, num_layers, bias, batch_first)
    ours.use_fused = fused
    x = torch.randn((BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT), generator=torch.Generator().manual_seed(2))
    state = initial_state(cell, num_layers, BATCH) if with_state else None
    for training in (True, False):
        reference.train(training)
        ours.train(training)
        assert_same(run(ours, x, state), run(reference, x, state))


@pytest.mark.parametrize("regularizers", [["none"], "none", []], ids=["list", "string", "empty"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_none_regularizer_equals_torch(cell, regularizers, fused):
    reference, ours = make_pair(cell, num_layers=2, regularizers=regularizers)
    assert len(ours.regularizers) == 0
    ours.use_fused = fused
    x = torch.randn(STEPS, BATCH, INPUT)
    state = initial_state(cell, 2, BATCH)
    for training in (True, False):
        reference.train(training)
        ours.train(training)
        assert_same(run(ours, x, state), run(reference, x, state))
        assert float(R.penalty(ours)) == 0.0


@pytest.mark.parametrize("with_state", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_unbatched_input_equals_torch(cell, with_state, fused):
    reference, ours = make_pair(cell, num_layers=2)
    ours.use_fused = fused
    x = torch.randn(STEPS, INPUT)
    state = initial_state(cell, 2, None) if with_state else None
    a, b = run(ours, x, state), run(reference, x, state)
    assert a[0].shape == (STEPS, HIDDEN)
    assert all(s.shape == (2, HIDDEN) for s in a[1])
    assert_same(a, b)


def test_dropout_between_layers_inactive_in_eval():
    reference, ours = make_pair("lstm", num_layers=2)
    ours.dropout = 0.5
    ours.eval()
    x = torch.randn(STEPS, BATCH, INPUT)
    assert_same(run(ours, x, None), run(reference, x, None))
    ours.train()
    torch.manual_seed(0)
    out_train = ours(x)[0]
    assert not torch.allclose(out_train, reference(x)[0], atol=1e-3), "dropout=0.5 between layers had no effect"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_names_and_shapes_equal_torch(cell, bias):
    torch_cls, our_cls = LAYERS[cell]
    reference = torch_cls(7, 11, num_layers=3, bias=bias)
    ours = our_cls(7, 11, num_layers=3, bias=bias)
    ref_shapes = [(n, tuple(p.shape)) for n, p in reference.named_parameters()]
    our_shapes = [(n, tuple(p.shape)) for n, p in ours.named_parameters()]
    assert our_shapes == ref_shapes
    assert list(ours.state_dict()) == list(reference.state_dict())
    # The default initialisation is torch's: U(-1/sqrt(H), 1/sqrt(H)).
    bound = 1 / 11 ** 0.5
    for p in ours.parameters():
        assert p.abs().max() <= bound and p.abs().max() > 0.5 * bound
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional"):
        assert getattr(ours, attr) == getattr(reference, attr), attr


def test_a_torch_lstm_state_dict_with_regularizers_loads_and_eval_equals_torch():
    # Mask-only regularizers add no parameters: the torch state dict still loads strictly, and in
    # eval (no noise) variational dropout and recurrent dropout equal the plain LSTM (rnnDrop's eval
    # is its mask's expectation, so it is not the plain LSTM).
    reference, ours = make_pair("lstm", regularizers=["variational_dropout", "recurrent_dropout"])
    reference.eval()
    ours.eval()
    x = torch.randn(STEPS, BATCH, INPUT)
    assert_same(run(ours, x, None), run(reference, x, None))


# -- bad arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(input_size=0, hidden_size=4), "input_size"),
    (dict(input_size=3, hidden_size=-1), "hidden_size"),
    (dict(input_size=3, hidden_size=4.0), "hidden_size"),
    (dict(input_size=3, hidden_size=True), "hidden_size"),
    (dict(input_size=3, hidden_size=4, num_layers=0), "num_layers"),
    (dict(input_size=3, hidden_size=4, dropout=1.5), "dropout"),
    (dict(input_size=3, hidden_size=4, dropout=-0.1), "dropout"),
    (dict(input_size=3, hidden_size=4, bidirectional=1), "bidirectional"),
    (dict(input_size=3, hidden_size=4, proj_size=-1), "proj_size"),
    (dict(input_size=3, hidden_size=4, regularizers=["zonout"]), "zoneout"),
])
@pytest.mark.parametrize("cls", [R.RegularizedLSTM, R.RegularizedGRU, R.RegularizedRNN])
def test_bad_constructor_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_regularizers_must_be_names_or_instances():
    with pytest.raises(TypeError, match="regularizers"):
        R.RegularizedLSTM(3, 4, regularizers=[0.5])


def test_rnn_nonlinearity_must_be_tanh():
    with pytest.raises(ValueError, match="tanh"):
        R.RegularizedRNN(3, 4, nonlinearity="relu")


def test_rnn_takes_torch_positional_arguments_and_validates_flags():
    # torch.nn.RNN(input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, ...)
    ours = R.RegularizedRNN(3, 4, 2, "tanh", False, True)
    reference = nn.RNN(3, 4, 2, "tanh", False, True)
    assert (ours.bias, ours.batch_first) == (reference.bias, reference.batch_first) == (False, True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    for cls in (R.RegularizedLSTM, R.RegularizedGRU, R.RegularizedRNN):
        with pytest.raises(ValueError, match="bias"):
            cls(3, 4, bias="yes")
        with pytest.raises(ValueError, match="batch_first"):
            cls(3, 4, batch_first=1)


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="dropout"):
        R.RegularizedLSTM(3, 4, dropout=0.3)


@pytest.mark.parametrize("cls", [R.RegularizedLSTM, R.RegularizedGRU, R.RegularizedRNN])
def test_bad_inputs(cls):
    layer = cls(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="input_size=3"):
        layer(torch.randn(5, 2, 7))
    with pytest.raises(ValueError, match="2 .*or 3 dimensions"):
        layer(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match="input_size=3"):
        layer(torch.randn(5, 7))  # unbatched
    bad = torch.zeros(1, 2, 4)  # one layer's state for a two-layer stack
    with pytest.raises(ValueError, match="hidden state"):
        layer(torch.randn(5, 2, 3), (bad, bad) if cls is R.RegularizedLSTM else bad)


def test_lstm_hx_must_be_a_pair():
    layer = R.RegularizedLSTM(3, 4)
    with pytest.raises(ValueError, match=r"\(h_0, c_0\)"):
        layer(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))


@pytest.mark.parametrize("cls", [R.RegularizedLSTM, R.RegularizedGRU, R.RegularizedRNN])
def test_inputs_torch_refuses_are_refused_in_one_sentence(cls):
    layer = cls(3, 4)
    with pytest.raises(ValueError, match="no time steps"):
        layer(torch.randn(0, 2, 3))
    with pytest.raises(TypeError, match="dtype torch.float64 .* torch.float32"):
        layer(torch.randn(5, 2, 3, dtype=torch.float64))
    state = torch.zeros(1, 2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="initial state has dtype torch.float64"):
        layer(torch.randn(5, 2, 3), (state, state) if cls is R.RegularizedLSTM else state)


@pytest.mark.parametrize("cls", [R.RegularizedGRU, R.RegularizedRNN])
def test_a_tuple_state_for_a_layer_without_cells_is_refused(cls):
    state = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="hx must be one tensor h_0, got a tuple; only an LSTM"):
        cls(3, 4)(torch.randn(5, 2, 3), (state, state))
