"""The rest of torch's recurrent API: bidirectional layers, PackedSequence, LSTM's proj_size,
torch state dicts and ``from_torch``, ``torch.compile``.

With no regularizer each is checked against torch's own module (outputs, final states and the
gradients of every parameter, of the input and of the initial state), on both loops; with
regularizers, the fused loop against the reference loop on the same masks, and packed input
against each sequence run alone at its own length.
"""

from __future__ import annotations

import copy
import itertools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

try:
    import regularizers as R
except ImportError:  # running pytest without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import regularizers as R
from regularizers import SequenceContext

TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
OURS = {"lstm": R.RegularizedLSTM, "gru": R.RegularizedGRU, "rnn": R.RegularizedRNN}
INPUT, HIDDEN, STEPS, BATCH = 3, 5, 6, 4
LENGTHS = [4, 6, 1, 3]  # unsorted, with a sequence of one step
TOL = dict(rtol=1e-5, atol=1e-5)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def initial_state(cell, recurrences, state_size, seed=1):
    g = generator(seed)
    h0 = torch.randn(recurrences, BATCH, state_size, generator=g)
    return (h0, torch.randn(recurrences, BATCH, HIDDEN, generator=g)) if cell == "lstm" else (h0,)


def data(x):
    return x.data if isinstance(x, PackedSequence) else x


def run(module, x, state, packed, seed=7):
    """Forward (packed or padded input), a loss on the output and every final state, backward."""
    x = x.detach().clone().requires_grad_(True)
    state = tuple(s.detach().clone().requires_grad_(True) for s in state)
    inputs = pack_padded_sequence(x, LENGTHS, enforce_sorted=False) if packed else x
    module.zero_grad()
    torch.manual_seed(seed)
    output, final = module(inputs, state if len(state) == 2 else state[0])
    assert isinstance(output, PackedSequence) == packed
    finals = list(final) if isinstance(final, tuple) else [final]
    out = data(output)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    loss = (out * weights).sum() + sum((f * f).sum() for f in finals) + R.penalty(module)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    grads["input"] = x.grad.clone()
    grads.update({f"state{k}": s.grad.clone() for k, s in enumerate(state)})
    if packed:
        assert torch.equal(output.batch_sizes, inputs.batch_sizes)
        assert torch.equal(output.sorted_indices, inputs.sorted_indices)
    return [out.detach()] + [f.detach() for f in finals], grads


def assert_same(a, b, **tol):
    tol = tol or TOL
    for s, t in zip(a[0], b[0], strict=True):
        torch.testing.assert_close(s, t, **tol)
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        torch.testing.assert_close(a[1][key], b[1][key], **tol, msg=lambda m: f"gradient of {key}: {m}")


CASES = ([(cell, bi, packed, 0) for cell in ("lstm", "gru", "rnn") for bi in (False, True) for packed in (False, True)]
         + [("lstm", bi, packed, 2) for bi in (False, True) for packed in (False, True)])


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("cell,bidirectional,packed,proj", CASES,
                         ids=[f"{c}-{'bi' if b else 'uni'}-{'packed' if p else 'padded'}{f'-proj{j}' if j else ''}"
                              for c, b, p, j in CASES])
def test_equals_torch(cell, bidirectional, packed, proj, fused):
    torch.manual_seed(0)
    extra = {"proj_size": proj} if proj else {}
    reference = TORCH[cell](INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional, **extra)
    ours = OURS[cell](INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional, **extra)
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    ours.use_fused = fused
    x = torch.randn(STEPS, BATCH, INPUT, generator=generator(2))
    state = initial_state(cell, 2 * (1 + bidirectional), proj or HIDDEN)
    for training in (True, False):
        reference.train(training)
        ours.train(training)
        assert_same(run(ours, x, state, packed), run(reference, x, state, packed))


# -- with regularizers -------------------------------------------------------------------------

REGULARIZED = [
    ("lstm", ["zoneout:z_cells=0.4,z_states=0.2", "recurrent_dropout:p=0.3", "variational_dropout"]),
    ("lstm", ["rnndrop:p=0.3", "stochastic_depth:p=0.2", "norm_stabilizer:beta=2,on=cells"]),
    ("lstm", ["zoneout:z_states=0.3,static_mask=true", "weight_noise", "norm_stabilizer"]),
    ("gru", ["zoneout:z_states=0.3", "recurrent_dropout:p=0.3", "variational_dropout", "norm_stabilizer"]),
    ("rnn", ["stochastic_depth:p=0.3", "recurrent_dropout:p=0.3", "variational_dropout:p_input=0.2"]),
]
REGULARIZED_CASES = [(cell, regs, bi, packed, proj)
                     for (cell, regs), bi, packed, proj in itertools.product(REGULARIZED, (False, True), (False, True),
                                                                            (0, 2))
                     if not (proj and cell != "lstm")]


@pytest.fixture
def draws(monkeypatch):
    calls = []
    original = SequenceContext.bernoulli

    def spy(self, *args, **kwargs):
        mask = original(self, *args, **kwargs)
        calls.append((self.index, mask.detach().clone()))
        return mask

    monkeypatch.setattr(SequenceContext, "bernoulli", spy)
    return calls


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cell,regs,bidirectional,packed,proj", REGULARIZED_CASES,
                         ids=[f"{c}-{'+'.join(r)}-{'bi' if b else 'uni'}-{'packed' if p else 'padded'}"
                              f"{f'-proj{j}' if j else ''}" for c, r, b, p, j in REGULARIZED_CASES])
def test_fused_equals_reference_with_regularizers(cell, regs, bidirectional, packed, proj, training, draws):
    torch.manual_seed(0)
    extra = {"proj_size": proj} if proj else {}
    fused = OURS[cell](INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional, dropout=0.2, regularizers=regs,
                       **extra).train(training)
    reference = copy.deepcopy(fused)
    reference.use_fused = False
    x = torch.randn(STEPS, BATCH, INPUT, generator=generator(2))
    state = initial_state(cell, 2 * (1 + bidirectional), proj or HIDDEN)
    fused_result = run(fused, x, state, packed)
    fused_draws = list(draws)
    draws.clear()
    assert_same(fused_result, run(reference, x, state, packed), rtol=1e-4, atol=1e-5)
    assert len(fused_draws) == len(draws)
    for (i, a), (j, b) in zip(fused_draws, draws):
        assert i == j and torch.equal(a, b)
    if training and bidirectional and any(not r.startswith(("weight_noise", "norm")) and "static" not in r
                                          for r in regs):
        # each direction draws its own masks: as many draws for the reverse direction, and other values
        forward = [m for i, m in draws if i % 2 == 0]
        backward = [m for i, m in draws if i % 2 == 1]
        assert len(forward) == len(backward) > 0
        assert any(not torch.equal(a, b) for a, b in zip(forward, backward) if a.numel() > 4)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell,regs", [("lstm", ["zoneout:z_cells=0.4,z_states=0.2", "rnndrop:p=0.3"]),
                                       ("gru", ["zoneout:z_states=0.3", "stochastic_depth:p=0.2"])])
def test_packed_sequences_equal_each_sequence_run_alone(cell, regs, bidirectional):
    """In eval (zoneout's and rnnDrop's expectations) and with the norm stabilizer's penalty in
    training: a packed batch gives each sequence what it gives alone, at its own length."""
    torch.manual_seed(0)
    layer = OURS[cell](INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional,
                       regularizers=regs + ["norm_stabilizer:beta=3"])
    x = torch.randn(STEPS, BATCH, INPUT, generator=generator(2))
    state = initial_state(cell, 2 * (1 + bidirectional), HIDDEN)
    packed = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    for fused in (True, False):
        layer.use_fused = fused
        layer.eval()
        output, final = layer(packed, state if cell == "lstm" else state[0])
        padded, _ = nn.utils.rnn.pad_packed_sequence(output)
        finals = final if cell == "lstm" else (final,)
        for b, length in enumerate(LENGTHS):
            alone = tuple(s[:, b: b + 1] for s in state)
            out_b, final_b = layer(x[:length, b: b + 1], alone if cell == "lstm" else alone[0])
            torch.testing.assert_close(padded[:length, b: b + 1], out_b, **TOL)
            for f, g in zip(finals, final_b if cell == "lstm" else (final_b,)):
                torch.testing.assert_close(f[:, b: b + 1], g, **TOL)
    # the penalty: each sequence's average over its own steps, then the mean over the batch
    only_penalty = OURS[cell](INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional,
                              regularizers=["norm_stabilizer:beta=3"]).train()
    only_penalty(packed)
    packed_penalty = R.penalty(only_penalty)
    alone = []
    for b, length in enumerate(LENGTHS):
        only_penalty(x[:length, b: b + 1])
        alone.append(R.penalty(only_penalty))
    torch.testing.assert_close(packed_penalty, torch.stack(alone).mean())


def test_projected_lstm_masks_act_on_the_projected_state():
    torch.manual_seed(0)
    layer = R.RegularizedLSTM(INPUT, HIDDEN, proj_size=2, regularizers=["zoneout:z_cells=1,z_states=1"]).train()
    h0, c0 = torch.randn(1, BATCH, 2), torch.randn(1, BATCH, HIDDEN)
    output, (h_n, c_n) = layer(torch.randn(STEPS, BATCH, INPUT), (h0, c0))
    assert output.shape == (STEPS, BATCH, 2)
    torch.testing.assert_close(h_n, h0)  # z = 1: every unit keeps its value
    torch.testing.assert_close(c_n, c0)
    static = R.RegularizedLSTM(INPUT, HIDDEN, proj_size=2, regularizers=["zoneout:static_mask=true"])
    assert static.regularizers[0].static_state_update.shape[-1] == 2
    assert static.regularizers[0].static_cell_update.shape[-1] == HIDDEN
    with pytest.raises(ValueError, match="shared_mask"):
        R.RegularizedLSTM(INPUT, HIDDEN, proj_size=2,
                          regularizers=["zoneout:z_cells=0.1,z_states=0.1,shared_mask=true"])


def test_a_projected_lstm_with_masks_runs_the_fused_loop(monkeypatch):
    import regularizers.layers as layers_module

    calls = []
    original = layers_module.fused_recurrence
    monkeypatch.setattr(layers_module, "fused_recurrence", lambda *a, **k: calls.append(k) or original(*a, **k))
    layer = R.RegularizedLSTM(INPUT, HIDDEN, num_layers=2, proj_size=2, regularizers=["zoneout"]).train()
    layer(torch.randn(STEPS, BATCH, INPUT))[0].sum().backward()
    assert len(calls) == 2 and all(k["w_hr"] is not None for k in calls)


def test_a_mask_of_the_wrong_width_is_refused():
    class WrongWidth(R.Regularizer):
        def masks(self, ctx):
            return {"hidden_update": torch.ones(1, 1, ctx.hidden_size)}  # the cell's width, not h's

    with pytest.raises(ValueError, match=r"mask for 'hidden_update' has shape \(1, 1, 5\); expected .*2 or 1"):
        R.RegularizedLSTM(INPUT, HIDDEN, proj_size=2, regularizers=[WrongWidth()])(torch.randn(STEPS, BATCH, INPUT))


def test_bad_projection_and_packed_batchnorm_are_refused():
    with pytest.raises(ValueError, match="proj_size is only supported for LSTM"):
        R.RegularizedGRU(INPUT, HIDDEN, proj_size=2)
    with pytest.raises(ValueError, match="smaller than hidden_size"):
        R.RegularizedLSTM(INPUT, HIDDEN, proj_size=HIDDEN)
    layer = R.RegularizedLSTM(INPUT, HIDDEN, regularizers=["recurrent_batchnorm"])
    packed = pack_padded_sequence(torch.randn(STEPS, BATCH, INPUT), LENGTHS, enforce_sorted=False)
    with pytest.raises(ValueError, match="recurrent_batchnorm .* PackedSequence"):
        layer(packed)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_bidirectional_batchnorm_has_its_own_statistics_per_direction(training):
    torch.manual_seed(0)
    fused = R.RegularizedLSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True,
                              regularizers=["recurrent_batchnorm", "zoneout:z_cells=0.2,z_states=0.2"])
    x = torch.randn(STEPS, BATCH, INPUT, generator=generator(2))
    with torch.no_grad():
        fused.train()(x)
    batchnorm = fused.regularizers[0]
    assert batchnorm.gamma_input.shape[0] == 4 and batchnorm.running_mean_cell.shape[0] == 4
    assert not torch.equal(batchnorm.running_mean_cell[0], batchnorm.running_mean_cell[1])
    fused.train(training)
    reference = copy.deepcopy(fused)
    reference.use_fused = False
    state = initial_state("lstm", 4, HIDDEN)
    assert_same(run(fused, x, state, False), run(reference, x, state, False), rtol=1e-4, atol=1e-5)
    for (name, a), (_, b) in zip(fused.named_buffers(), reference.named_buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"buffer {name}: {m}")


# -- state dicts, from_torch -------------------------------------------------------------------

@pytest.mark.parametrize("regs", [["recurrent_batchnorm"], ["zoneout:static_mask=true"],
                                  ["recurrent_batchnorm", "zoneout:static_mask=true,z_cells=0.1"]])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_a_torch_state_dict_loads_strictly_into_a_layer_whose_regularizers_own_state(regs, bidirectional):
    torch.manual_seed(0)
    reference = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional)
    ours = R.RegularizedLSTM(INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional, regularizers=regs)
    own = {k: v.clone() for k, v in ours.state_dict().items() if k.startswith("regularizers.")}
    assert own
    ours.load_state_dict(reference.state_dict(), strict=True)
    for name, p in reference.named_parameters():
        assert torch.equal(getattr(ours, name), p)
    for k, v in ours.state_dict().items():  # the regularizers kept their own state
        if k.startswith("regularizers."):
            assert torch.equal(v, own[k]), k
    # a regbench state dict is loaded strictly as before: its regularizers' state must be complete
    saved = ours.state_dict()
    copy_ = R.RegularizedLSTM(INPUT, HIDDEN, num_layers=2, bidirectional=bidirectional, regularizers=regs)
    copy_.load_state_dict(saved, strict=True)
    assert all(torch.equal(v, saved[k]) for k, v in copy_.state_dict().items())
    incomplete = {k: v for k, v in saved.items() if k != next(iter(own))}
    with pytest.raises(RuntimeError, match="Missing key"):
        copy_.load_state_dict(incomplete, strict=True)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_from_torch_copies_configuration_and_weights(cell):
    torch.manual_seed(0)
    extra = {"proj_size": 2} if cell == "lstm" else {}
    reference = TORCH[cell](INPUT, HIDDEN, num_layers=2, bias=False, batch_first=True, dropout=0.1,
                            bidirectional=True, dtype=torch.float64, **extra).eval()
    ours = OURS[cell].from_torch(reference, regularizers=["zoneout:z_states=0.2"])
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"):
        assert getattr(ours, attr) == getattr(reference, attr), attr
    assert ours.proj_size == extra.get("proj_size", 0) and not ours.training
    assert [r.name for r in ours.regularizers] == ["zoneout"]
    for name, p in reference.named_parameters():
        q = getattr(ours, name)
        assert q.dtype == torch.float64 and torch.equal(q, p) and q.data_ptr() != p.data_ptr()
    plain = OURS[cell].from_torch(reference)
    x = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64)
    torch.testing.assert_close(plain(x)[0], reference(x)[0])
    with pytest.raises(TypeError, match="from_torch takes a torch.nn"):
        OURS[cell].from_torch(nn.Linear(2, 2))
    if cell == "rnn":
        with pytest.raises(ValueError, match="tanh"):
            R.RegularizedRNN.from_torch(nn.RNN(2, 3, nonlinearity="relu"))


# -- torch.compile -----------------------------------------------------------------------------

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(INPUT, 4)
        self.rnn = R.RegularizedLSTM(4, HIDDEN, bidirectional=True,
                                     regularizers=["zoneout:z_cells=0.3,z_states=0.2", "norm_stabilizer"])
        self.head = nn.Linear(2 * HIDDEN, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.rnn(self.embed(x))[0]))


def test_torch_compile_runs_and_gives_the_same_results():
    torch.manual_seed(0)
    model = Model().train()
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, backend="eager")  # dynamo's tracing and graph break, without a C++ build
    x = torch.randn(STEPS, BATCH, INPUT)
    results = []
    for module, owner in ((model, model), (compiled, twin)):
        torch.manual_seed(3)
        out = module(x)
        (out.pow(2).mean() + R.penalty(owner)).backward()
        results.append((out.detach(), {n: p.grad for n, p in owner.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for name in results[0][1]:
        torch.testing.assert_close(results[0][1][name], results[1][1][name], msg=name)
