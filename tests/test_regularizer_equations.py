"""Every regularizer against a hand-written computation of its paper's equations.

The hand computations below are step loops written from /work/shared/REFERENCE.md in the
papers' notation (d = 1 keeps / preserves, masks recovered from the layer's own draws by
spying on ``SequenceContext.bernoulli`` or ``torch.randn_like``); none of them calls the
recurrences of ``regularizers/`` (reference.py, fused.py). Each test runs both loops.
"""

from __future__ import annotations

import copy
import math
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
from regularizers import SequenceContext

sigmoid, tanh = torch.sigmoid, torch.tanh
KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
CLASSES = {"lstm": R.RegularizedLSTM, "gru": R.RegularizedGRU, "rnn": R.RegularizedRNN}
TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
BUILT_INS = ["none", "norm_stabilizer", "recurrent_batchnorm", "recurrent_dropout", "rnndrop", "stochastic_depth",
             "variational_dropout", "weight_noise", "zoneout"]


@pytest.fixture(params=[True, False], ids=["fused", "reference"])
def fused(request):
    return request.param


def make(regs, cell="lstm", input_size=3, hidden=5, num_layers=1, seed=0, fused=True, **kwargs):
    torch.manual_seed(seed)
    layer = CLASSES[cell](input_size, hidden, num_layers=num_layers, regularizers=regs, **kwargs)
    layer.use_fused = fused
    return layer


def plain_torch(layer):
    """torch's own module with the layer's weights."""
    module = TORCH[layer.cell_type](layer.input_size, layer.hidden_size, num_layers=layer.num_layers)
    module.load_state_dict({k: v for k, v in layer.state_dict().items() if not k.startswith("regularizers.")})
    return module


def weights(layer, l=0):
    return tuple(getattr(layer, f"{k}_l{l}").detach() for k in KINDS)


def rand(*shape, seed=1, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- the cells in the papers' notation ---------------------------------------------------------

def lstm_gates(x_t, h, w, x_mask=1.0, h_mask=1.0):
    """i, f, g, o of an LSTM step; PyTorch's gate order i, f, g, o."""
    W_ih, W_hh, b_ih, b_hh = w
    pre = (x_t * x_mask) @ W_ih.T + b_ih + (h * h_mask) @ W_hh.T + b_hh
    i, f, g, o = pre.chunk(4, dim=-1)
    return sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)


def gru_parts(x_t, h, w):
    """(1 - z), n, z of a GRU step: ĥ = (1 - z)⊙n + z⊙h."""
    W_ih, W_hh, b_ih, b_hh = w
    xr, xz, xn = (x_t @ W_ih.T + b_ih).chunk(3, dim=-1)
    hr, hz, hn = (h @ W_hh.T + b_hh).chunk(3, dim=-1)
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    return 1 - z, tanh(xn + r * hn), z


def rnn_candidate(x_t, h, w):
    W_ih, W_hh, b_ih, b_hh = w
    return tanh(x_t @ W_ih.T + b_ih + h @ W_hh.T + b_hh)


def candidate(cell, x_t, h, c, w):
    """The un-regularized new state: (ĥ, ĉ) (ĉ None for GRU/RNN)."""
    if cell == "lstm":
        i, f, g, o = lstm_gates(x_t, h, w)
        c_hat = f * c + i * g
        return o * tanh(c_hat), c_hat
    if cell == "gru":
        one_minus_z, n, z = gru_parts(x_t, h, w)
        return one_minus_z * n + z * h, None
    return rnn_candidate(x_t, h, w), None


def hand_zoneout_expectation(layer, x, h0, c0, z_c, z_h):
    """Eval zoneout: c_t = z_c c_{t-1} + (1-z_c) ĉ_t, h_t = z_h h_{t-1} + (1-z_h) ĥ_t, stacked layers."""
    finals_h, finals_c = [], []
    for l in range(layer.num_layers):
        w, h, c = weights(layer, l), h0[l], None if c0 is None else c0[l]
        outputs = []
        for t in range(x.size(0)):
            h_hat, c_hat = candidate(layer.cell_type, x[t], h, c, w)
            if c is not None:
                c = z_c * c + (1 - z_c) * c_hat
            h = z_h * h + (1 - z_h) * h_hat
            outputs.append(h)
        x = torch.stack(outputs)
        finals_h.append(h)
        finals_c.append(c)
    return x, torch.stack(finals_h), (torch.stack(finals_c) if c0 is not None else None)


@pytest.fixture
def draws(monkeypatch):
    """Every mask a regularizer draws through SequenceContext.bernoulli, with the arguments."""
    calls = []
    original = SequenceContext.bernoulli

    def spy(self, keep_probability, steps=None, units=None, scale=False):
        mask = original(self, keep_probability, steps=steps, units=units, scale=scale)
        calls.append(dict(keep=keep_probability, steps=steps, units=units, scale=scale, layer=self.layer,
                          mask=mask.detach().clone()))
        return mask

    monkeypatch.setattr(SequenceContext, "bernoulli", spy)
    return calls


def the_draw(calls, keep, **match):
    found = [c for c in calls if math.isclose(c["keep"], keep) and all(c[k] == v for k, v in match.items())]
    assert len(found) == 1, f"expected one mask drawn with keep probability {keep} {match}, got {calls}"
    return found[0]["mask"]


def forward(layer, x, state=None):
    output, final = layer(x, state)
    if layer.cell_type == "lstm":
        return output, final[0], final[1]
    return output, final, None


# =============================================================================================
# zoneout
# =============================================================================================

def test_zoneout_zero_equals_torch_lstm(fused):
    layer = make(["zoneout:z_cells=0,z_states=0"], fused=fused, num_layers=2)
    reference = plain_torch(layer)
    x, state = rand(6, 4, 3), (rand(2, 4, 5, seed=2), rand(2, 4, 5, seed=3))
    for training in (True, False):
        layer.train(training)
        out, (h, c) = layer(x, state)
        ref_out, (ref_h, ref_c) = reference(x, state)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(h, ref_h)
        torch.testing.assert_close(c, ref_c)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_zoneout_eval_is_the_expectation(fused, num_layers):
    layer = make(["zoneout:z_cells=0.5,z_states=0.05"], fused=fused, num_layers=num_layers).eval()
    x, h0, c0 = rand(7, 3, 3), rand(num_layers, 3, 5, seed=2), rand(num_layers, 3, 5, seed=3)
    out, h_n, c_n = forward(layer, x, (h0, c0))
    ref_out, ref_h, ref_c = hand_zoneout_expectation(layer, x, h0, c0, 0.5, 0.05)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h_n, ref_h)
    torch.testing.assert_close(c_n, ref_c)
    # and it is not the plain LSTM
    assert not torch.allclose(out, plain_torch(layer)(x, (h0, c0))[0], atol=1e-3)


def test_zoneout_probability_one_keeps_the_initial_state(fused):
    layer = make(["zoneout:z_cells=1,z_states=1"], fused=fused, num_layers=2).train()
    h0, c0 = rand(2, 4, 5, seed=2), rand(2, 4, 5, seed=3)
    out, h_n, c_n = forward(layer, rand(6, 4, 3), (h0, c0))
    assert torch.equal(out, h0[-1].expand(6, 4, 5))
    assert torch.equal(h_n, h0)
    assert torch.equal(c_n, c0)


@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
def test_zoneout_training_preserves_a_fraction_z(fused, shared):
    z_c, z_h = (0.3, 0.3) if shared else (0.3, 0.2)
    spec = f"zoneout:z_cells={z_c},z_states={z_h},shared_mask={str(shared).lower()}"
    layer = make([spec], fused=fused, hidden=16).train()
    B = 4000
    x, h0, c0 = rand(1, B, 3), rand(1, B, 16, seed=2), rand(1, B, 16, seed=3)
    with torch.no_grad():
        _, h1, c1 = forward(layer, x, (h0, c0))
        h_hat, c_hat = candidate("lstm", x[0], h0[0], c0[0], weights(layer))
    kept_h, kept_c = h1[0] == h0[0], c1[0] == c0[0]
    # every unit either kept its previous value or took the no-zoneout update (which uses ĉ)
    assert torch.all(kept_h | torch.isclose(h1[0], h_hat, atol=1e-6))
    assert torch.all(kept_c | torch.isclose(c1[0], c_hat, atol=1e-6))
    n = kept_h.numel()
    for kept, z in ((kept_h, z_h), (kept_c, z_c)):
        standard_error = math.sqrt(z * (1 - z) / n)
        assert abs(kept.float().mean().item() - z) < 5 * standard_error, (kept.float().mean(), z)
    both = (kept_h & kept_c).float().mean().item()
    if shared:  # one mask: cells and states preserved at the same positions
        assert torch.equal(kept_h, kept_c)
    else:  # independent masks
        assert abs(both - z_c * z_h) < 5 * math.sqrt(z_c * z_h * (1 - z_c * z_h) / n)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_zoneout_hidden_uses_the_candidate_cell_not_the_zoned_cell(fused, training):
    # z_cells = 1: the cell never moves (c_t = c_{t-1}); z_states = 0: h always updates.
    # h_t = o⊙tanh(ĉ_t) with ĉ_t = f⊙c_{t-1} + i⊙g, not o⊙tanh(c_t) = o⊙tanh(c_{t-1}).
    layer = make(["zoneout:z_cells=1,z_states=0"], fused=fused).train(training)
    x, h0, c0 = rand(1, 8, 3), rand(1, 8, 5, seed=2), rand(1, 8, 5, seed=3, scale=2)
    with torch.no_grad():
        _, h1, c1 = forward(layer, x, (h0, c0))
        i, f, g, o = lstm_gates(x[0], h0[0], weights(layer))
    c_hat = f * c0[0] + i * g
    torch.testing.assert_close(c1[0], c0[0])
    torch.testing.assert_close(h1[0], o * tanh(c_hat))
    assert (h1[0] - o * tanh(c0[0])).abs().max() > 0.05  # the two readings are distinguishable here


def test_zoneout_static_mask_is_the_same_at_every_step_and_forward(fused):
    layer = make(["zoneout:z_cells=0.5,z_states=0.5,static_mask=true"], fused=fused, hidden=64).train()
    h0, c0 = rand(1, 3, 64, seed=2), rand(1, 3, 64, seed=3)
    kept_h, kept_c = [], []
    with torch.no_grad():
        for seed in (10, 11):
            torch.manual_seed(seed)
            out, _, c_n = forward(layer, rand(4, 3, 3, seed=seed), (h0, c0))
            previous = torch.cat([h0, out[:-1]])
            kept_h.append(out == previous)  # (T, B, H)
            torch.manual_seed(seed)
            _, _, c1 = forward(layer, rand(1, 3, 3, seed=seed), (h0, c0))
            kept_c.append(c1[0] == c0[0])  # (B, H)
    unit = kept_h[0][0, 0]
    assert 0 < unit.sum() < 64
    for kept in kept_h:
        assert torch.equal(kept, unit.expand_as(kept)), "static mask differs across steps, samples or forwards"
    cell_unit = kept_c[0][0]
    assert 0 < cell_unit.sum() < 64
    for kept in kept_c:
        assert torch.equal(kept, cell_unit.expand_as(kept))
    # eval is still the expectation
    layer.eval()
    x = rand(4, 3, 3)
    torch.testing.assert_close(forward(layer, x, (h0, c0))[0], hand_zoneout_expectation(layer, x, h0, c0, 0.5, 0.5)[0])


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_zoneout_on_gru_and_rnn_zones_out_the_hidden_state(fused, cell):
    layer = make(["zoneout:z_states=0.3"], cell=cell, fused=fused, num_layers=2)
    x, h0 = rand(5, 3, 3), rand(2, 3, 5, seed=2)
    layer.eval()
    out, h_n, _ = forward(layer, x, h0)
    ref_out, ref_h, _ = hand_zoneout_expectation(layer, x, h0, None, None, 0.3)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h_n, ref_h)
    # training: z_states = 1 keeps h; z = 0.3 preserves about 30 % of the units, the rest update
    layer = make(["zoneout:z_states=1"], cell=cell, fused=fused).train()
    assert torch.equal(forward(layer, x, h0[:1])[0], h0[0].expand(5, 3, 5))
    layer = make(["zoneout:z_states=0.3"], cell=cell, fused=fused, hidden=16).train()
    x, h0 = rand(1, 3000, 3), rand(1, 3000, 16, seed=2)
    with torch.no_grad():
        h1 = forward(layer, x, h0)[0][0]
        h_hat = candidate(cell, x[0], h0[0], None, weights(layer))[0]
    kept = h1 == h0[0]
    assert torch.all(kept | torch.isclose(h1, h_hat, atol=1e-6))
    assert abs(kept.float().mean().item() - 0.3) < 5 * math.sqrt(0.21 / kept.numel())


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_zoneout_z_cells_on_a_layer_without_cells_is_an_error(cell):
    with pytest.raises(ValueError, match="z_cells applies to LSTM layers only"):
        make(["zoneout:z_cells=0.3,z_states=0.1"], cell=cell)
    make(["zoneout:z_states=0.1"], cell=cell)  # the default z_cells is fine
    make(["zoneout:z_cells=0.5,z_states=0.1"], cell=cell)  # and so is the spec string that spells it out


def test_zoneout_shared_mask_needs_equal_probabilities():
    with pytest.raises(ValueError, match="z_cells"):
        R.build("zoneout:z_cells=0.5,z_states=0.05,shared_mask=true")


# =============================================================================================
# recurrent dropout (Semeniuta et al.)
# =============================================================================================

@pytest.mark.parametrize("per_sequence", [False, True], ids=["per_step", "per_sequence"])
@pytest.mark.parametrize("p", [0.5, 0.99])
def test_recurrent_dropout_lstm_equation(fused, draws, p, per_sequence):
    layer = make([f"recurrent_dropout:p={p},per_sequence={str(per_sequence).lower()}"], fused=fused).train()
    x, h0, c0 = rand(5, 4, 3), rand(1, 4, 5, seed=2), rand(1, 4, 5, seed=3)
    out, h_n, c_n = forward(layer, x, (h0, c0))
    mask = the_draw(draws, 1 - p)
    assert mask.shape == ((1 if per_sequence else 5), 4, 5)
    d = (mask != 0).float()
    torch.testing.assert_close(mask, d / (1 - p))  # inverted dropout scaling
    h, c = h0[0], c0[0]
    outputs = []
    for t in range(5):
        i, f, g, o = lstm_gates(x[t], h, weights(layer))
        d_t = d[t if not per_sequence else 0]
        c_previous = c
        c = f * c + i * (d_t * g) / (1 - p)
        h = o * tanh(c)
        outputs.append(h)
        # memory is never erased: a dropped unit still carries f⊙c_{t-1}
        dropped = d_t == 0
        torch.testing.assert_close(c[dropped], (f * c_previous)[dropped])
    torch.testing.assert_close(out, torch.stack(outputs), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c_n[0], c, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_recurrent_dropout_gru_rnn_equation(fused, draws, cell):
    p = 0.4
    layer = make([f"recurrent_dropout:p={p}"], cell=cell, fused=fused).train()
    x, h0 = rand(5, 4, 3), rand(1, 4, 5, seed=2)
    out = forward(layer, x, h0)[0]
    d = (the_draw(draws, 1 - p) != 0).float()
    h, outputs = h0[0], []
    for t in range(5):
        if cell == "gru":
            one_minus_z, n, z = gru_parts(x[t], h, weights(layer))
            h = one_minus_z * (d[t] * n) / (1 - p) + z * h
        else:
            h = d[t] * rnn_candidate(x[t], h, weights(layer)) / (1 - p)
        outputs.append(h)
    torch.testing.assert_close(out, torch.stack(outputs))


@pytest.mark.parametrize("cell,spec", [(c, s) for c in ("lstm", "gru", "rnn")
                                       for s in ("recurrent_dropout:p=0.5", "variational_dropout:p_input=0.5,p_hidden=0.5")])
def test_dropouts_add_no_noise_in_eval(fused, draws, cell, spec):
    layer = make([spec], cell=cell, fused=fused, num_layers=2).eval()
    x = rand(5, 4, 3)
    torch.testing.assert_close(layer(x)[0], plain_torch(layer)(x)[0])
    assert draws == []


# =============================================================================================
# variational dropout (Gal & Ghahramani)
# =============================================================================================

def test_variational_dropout_equation_and_masks_fixed_over_time(fused, draws):
    p_x, p_h = 0.3, 0.6
    layer = make([f"variational_dropout:p_input={p_x},p_hidden={p_h}"], fused=fused, input_size=4).train()
    x, h0, c0 = rand(6, 5, 4), rand(1, 5, 5, seed=2), rand(1, 5, 5, seed=3)
    torch.manual_seed(7)
    out, h_n, c_n = forward(layer, x, (h0, c0))
    m_x, m_h = the_draw(draws, 1 - p_x), the_draw(draws, 1 - p_h)
    assert m_x.shape == (1, 5, 4) and m_h.shape == (1, 5, 5)  # one mask per sequence
    torch.testing.assert_close(m_x, (m_x != 0).float() / (1 - p_x))
    torch.testing.assert_close(m_h, (m_h != 0).float() / (1 - p_h))
    h, c, outputs = h0[0], c0[0], []
    for t in range(6):
        i, f, g, o = lstm_gates(x[t], h, weights(layer), x_mask=m_x[0], h_mask=m_h[0])
        c = f * c + i * g
        h = o * tanh(c)
        outputs.append(h)
    torch.testing.assert_close(out, torch.stack(outputs))
    torch.testing.assert_close(c_n[0], c)

    # behaviour: an input unit dropped for a sequence has no effect at any step
    dropped = (m_x[0] == 0)
    assert dropped.any() and (~dropped).any()
    changed = x + 10.0 * dropped.float()  # change every dropped (sample, unit) at every step
    torch.manual_seed(7)
    assert torch.equal(layer(changed, (h0, c0))[0], out)
    kept_change = x + 10.0 * (~dropped).float()
    torch.manual_seed(7)
    assert not torch.allclose(layer(kept_change, (h0, c0))[0], out)


# =============================================================================================
# rnnDrop (Moon et al.)
# =============================================================================================

def test_rnndrop_equation(fused, draws):
    p = 0.5
    layer = make([f"rnndrop:p={p}"], fused=fused).train()
    x, h0, c0 = rand(6, 4, 3), rand(1, 4, 5, seed=2), rand(1, 4, 5, seed=3)
    out, _, c_n = forward(layer, x, (h0, c0))
    mask = the_draw(draws, 1 - p)
    assert mask.shape == (1, 4, 5)  # one mask for the whole sequence
    d = (mask[0] != 0).float()
    h, c, outputs = h0[0], c0[0], []
    for t in range(6):
        i, f, g, o = lstm_gates(x[t], h, weights(layer))
        c = d * (f * c + i * g)  # a 0/1 mask: Moon et al. scale in eval, not in training
        h = o * tanh(c)
        outputs.append(h)
    torch.testing.assert_close(out, torch.stack(outputs))
    torch.testing.assert_close(c_n[0], c)
    # the same units are dropped at every step: their h is 0 throughout
    assert torch.all(out[:, d == 0] == 0)
    assert torch.all(out[:, d == 1] != 0)


def test_rnndrop_default_does_not_compound_over_long_sequences(fused):
    """With a forget gate near 1 the default's kept cells grow at most linearly (|i g| <= 1 a
    step), never like (1-p)^-t (the inverted scaling reached ~1e12 here)."""
    p, steps = 0.25, 100
    layer = make([f"rnndrop:p={p}"], fused=fused, hidden=32)
    with torch.no_grad():
        layer.bias_hh_l0[32:64] = 20.0  # forget gate ~ 1
    x = rand(steps, 8, 3)
    train_c = layer.train()(x)[1][1].abs().max()
    assert 10 < train_c <= steps


def test_rnndrop_eval_is_the_expectation(fused, draws):
    """Moon et al.: c_t = (1 - p)(f c_{t-1} + i g) in eval, and no random draw."""
    p = 0.3
    layer = make([f"rnndrop:p={p}"], fused=fused).eval()
    x, h0, c0 = rand(6, 4, 3), rand(1, 4, 5, seed=2), rand(1, 4, 5, seed=3)
    out, _, c_n = forward(layer, x, (h0, c0))
    h, c, outputs = h0[0], c0[0], []
    for t in range(6):
        i, f, g, o = lstm_gates(x[t], h, weights(layer))
        c = (1 - p) * (f * c + i * g)
        h = o * tanh(c)
        outputs.append(h)
    torch.testing.assert_close(out, torch.stack(outputs))
    torch.testing.assert_close(c_n[0], c)
    assert draws == []


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_rnndrop_is_lstm_only(cell):
    with pytest.raises(ValueError, match="LSTM"):
        make(["rnndrop"], cell=cell)


# =============================================================================================
# stochastic depth
# =============================================================================================

def test_stochastic_depth_zones_out_whole_layers(fused):
    p = 0.4
    layer = make([f"stochastic_depth:p={p}"], fused=fused, hidden=6).train()
    B = 2000
    x, h0, c0 = rand(1, B, 3), rand(1, B, 6, seed=2), rand(1, B, 6, seed=3)
    with torch.no_grad():
        _, h1, c1 = forward(layer, x, (h0, c0))
    kept_h, kept_c = h1[0] == h0[0], c1[0] == c0[0]
    row_h = kept_h.all(1)
    assert torch.equal(row_h, kept_h.any(1)), "some units of a sample kept their state and others did not"
    assert torch.equal(kept_c.all(1), kept_c.any(1))
    assert torch.equal(row_h, kept_c.all(1)), "cells and states do not share the decision"
    assert abs(row_h.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / B)
    # over a sequence: for each (t, b), all units kept or none
    out = forward(layer, rand(8, 50, 3), (h0[:, :50], c0[:, :50]))[0].detach()
    kept = out == torch.cat([h0[:, :50], out[:-1]])
    assert torch.equal(kept.all(2), kept.any(2))
    assert kept.all(2).any() and (~kept.all(2)).any()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_stochastic_depth_eval_is_the_expectation(fused, cell):
    layer = make(["stochastic_depth:p=0.3"], cell=cell, fused=fused, num_layers=2).eval()
    x, h0 = rand(5, 3, 3), rand(2, 3, 5, seed=2)
    c0 = rand(2, 3, 5, seed=3) if cell == "lstm" else None
    out, h_n, c_n = forward(layer, x, (h0, c0) if cell == "lstm" else h0)
    ref_out, ref_h, ref_c = hand_zoneout_expectation(layer, x, h0, c0, 0.3, 0.3)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h_n, ref_h)
    if cell == "lstm":
        torch.testing.assert_close(c_n, ref_c)


# =============================================================================================
# weight noise
# =============================================================================================

@pytest.fixture
def noise_draws(monkeypatch):
    """The standard-normal draws ε of every noisy weight W + σε, in the order drawn (by the native
    sampler or torch.randn_like, whichever add_noise uses)."""
    from regularizers import weight_noise

    calls = []
    original = weight_noise.add_noise

    def spy(weight, sigma):
        noisy = original(weight, sigma)
        calls.append(((noisy - weight) / sigma).detach().clone())
        return noisy

    monkeypatch.setattr(weight_noise, "add_noise", spy)
    return calls


@pytest.mark.parametrize("include_bias", [False, True])
def test_weight_noise_equals_a_torch_lstm_with_the_noisy_weights(fused, noise_draws, include_bias):
    sigma = 0.2
    layer = make([f"weight_noise:sigma={sigma},include_bias={str(include_bias).lower()}"], fused=fused,
                 input_size=3, num_layers=2)
    x = rand(5, 4, 3)
    layer.eval()
    clean_reference = plain_torch(layer)
    torch.testing.assert_close(layer(x)[0], clean_reference(x)[0])  # eval: clean weights
    assert noise_draws == []

    layer.train()
    out, (h_n, c_n) = layer(x)
    noisy = plain_torch(layer)
    by_shape = {}
    for noise in noise_draws:
        by_shape.setdefault(tuple(noise.shape), []).append(noise)
    expected = 4 * 2 if include_bias else 2 * 2
    assert len(noise_draws) == expected, f"expected {expected} noise tensors, got {len(noise_draws)}"
    with torch.no_grad():  # assign the recorded noise to each parameter, in the order drawn per shape
        used = {k: 0 for k in by_shape}
        for layer_index in range(2):
            for kind in KINDS:
                if kind.startswith("bias") and not include_bias:
                    continue
                param = getattr(noisy, f"{kind}_l{layer_index}")
                key = tuple(param.shape)
                candidates = by_shape[key]
                # weight_hh of both layers and weight_ih of layer 1 share a shape: match by draw order
                param.add_(sigma * candidates[used[key]])
                used[key] += 1
    ref_out, (ref_h, ref_c) = noisy(x)
    torch.testing.assert_close(out, ref_out)
    assert not torch.allclose(out, clean_reference(x)[0], atol=1e-3)
    # gradients reach the clean weights, equal to the gradients at the noisy weights
    (out.sum() + c_n.pow(2).sum()).backward()
    (ref_out.sum() + ref_c.pow(2).sum()).backward()
    for name, param in noisy.named_parameters():
        torch.testing.assert_close(getattr(layer, name).grad, param.grad, msg=lambda m: f"{name}: {m}")
    # resampled at every forward
    assert not torch.allclose(layer(x)[0], out)


# =============================================================================================
# norm stabilizer
# =============================================================================================

def hand_norm_penalty(states, beta):
    """beta * mean_b( sum_{t=2..T} (||s_t|| - ||s_{t-1}||)^2 / (T-1) ), states (T, B, H)."""
    T, B, _ = states.shape
    per_sample = []
    for b in range(B):
        total = 0.0
        for t in range(1, T):
            total = total + (states[t, b].norm() - states[t - 1, b].norm()) ** 2
        per_sample.append(total / (T - 1))
    return beta * torch.stack(per_sample).mean()


def step_by_step_lstm(module, x, state=None):
    """Hidden states and cells of a one-layer torch LSTM, one step at a time."""
    hs, cs = [], []
    for t in range(x.size(0)):
        _, state = module(x[t: t + 1], state)
        hs.append(state[0][0])
        cs.append(state[1][0])
    return torch.stack(hs), torch.stack(cs)


class TwoLayers(nn.Module):
    def __init__(self, fused):
        super().__init__()
        self.lstm = make(["norm_stabilizer"], fused=fused, num_layers=2)
        self.gru = make(["norm_stabilizer:beta=3"], cell="gru", input_size=5, fused=fused)

    def forward(self, x):
        return self.gru(self.lstm(x)[0])[0]


def test_norm_stabilizer_penalty_equals_the_formula_summed_over_layers(fused):
    model = TwoLayers(fused).train()
    x = rand(6, 4, 3)
    out = model(x)
    lstm = model.lstm
    # each layer alone, with torch's modules
    first = nn.LSTM(3, 5)
    first.load_state_dict({k: v for k, v in lstm.state_dict().items() if k.endswith("l0")})
    second = nn.LSTM(5, 5)
    second.load_state_dict({k.replace("l1", "l0"): v for k, v in lstm.state_dict().items() if k.endswith("l1")})
    h1 = first(x)[0]
    h2 = second(h1)[0]
    h3 = plain_torch(model.gru)(h2)[0]
    torch.testing.assert_close(out, h3)  # outputs unchanged by the regularizer
    expected = hand_norm_penalty(h1, 50.0) + hand_norm_penalty(h2, 50.0) + hand_norm_penalty(h3, 3.0)
    got = R.penalty(model)
    assert got.dim() == 0
    torch.testing.assert_close(got, expected)
    # the penalty is differentiable and its gradient is the formula's
    got.backward()
    grads = torch.autograd.grad(hand_norm_penalty(h1, 50.0) + hand_norm_penalty(h2, 50.0) + hand_norm_penalty(h3, 3.0),
                                [first.weight_hh_l0, second.weight_ih_l0])
    torch.testing.assert_close(lstm.weight_hh_l0.grad, grads[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lstm.weight_ih_l1.grad, grads[1], rtol=1e-4, atol=1e-5)


def test_norm_stabilizer_on_cells(fused):
    layer = make(["norm_stabilizer:beta=7,on=cells"], fused=fused).train()
    x, state = rand(6, 4, 3), (rand(1, 4, 5, seed=2), rand(1, 4, 5, seed=3))
    out = layer(x, state)[0]
    hs, cs = step_by_step_lstm(plain_torch(layer), x, state)
    torch.testing.assert_close(out, hs)
    taken = R.penalty(layer)
    torch.testing.assert_close(taken, hand_norm_penalty(cs, 7.0))
    assert not torch.isclose(taken, hand_norm_penalty(hs, 7.0))
    with pytest.raises(ValueError, match="on='hidden'|LSTM"):
        make(["norm_stabilizer:on=cells"], cell="gru")


def test_norm_stabilizer_counts_every_training_forward_since_the_penalty_was_taken(fused):
    layer = make(["norm_stabilizer:beta=3"], fused=fused).train()
    x1, x2, x3 = rand(6, 4, 3, seed=1), rand(5, 4, 3, seed=2), rand(4, 4, 3, seed=3)
    h1, h2 = layer(x1)[0], layer(x2)[0]
    with torch.no_grad():
        layer(x3)  # not recorded by autograd: adds nothing, and takes nothing away
    taken = R.penalty(layer)
    expected = hand_norm_penalty(h1, 3.0) + hand_norm_penalty(h2, 3.0)
    torch.testing.assert_close(taken, expected)
    assert taken.requires_grad
    taken.backward(retain_graph=True)
    got = layer.weight_hh_l0.grad.clone()
    layer.zero_grad()
    expected.backward()
    torch.testing.assert_close(got, layer.weight_hh_l0.grad)
    assert R.penalty(layer).item() == 0.0  # taken: the next one starts again at zero


def test_untaken_penalties_warn_once_they_pile_up(monkeypatch):
    import regularizers.layers as layers_module

    monkeypatch.setattr(layers_module, "_PENDING_WARNING", 3)
    layer = make(["norm_stabilizer"]).train()
    layer(rand(4, 2, 3))
    layer(rand(4, 2, 3))
    with pytest.warns(RuntimeWarning, match="penalty"):
        layer(rand(4, 2, 3))
    R.penalty(layer)
    assert layer.pending_penalty is None


def test_a_layer_with_an_untaken_penalty_can_be_copied():
    layer = make(["norm_stabilizer"]).train()
    layer(rand(4, 2, 3))
    twin = copy.deepcopy(layer)  # autograd can't copy the pending term's graph; the copy has none
    assert twin.pending_penalty is None and layer.pending_penalty is not None
    assert R.penalty(twin).item() == 0.0 and R.penalty(layer).item() > 0


def test_penalty_is_a_zero_tensor_without_penalty_terms(fused):
    for regs in (None, ["zoneout"], ["norm_stabilizer"]):
        layer = make(regs, fused=fused)
        if regs == ["norm_stabilizer"]:
            layer.eval()  # no penalty in eval
        layer(rand(5, 2, 3))
        zero = R.penalty(layer)
        assert isinstance(zero, torch.Tensor) and zero.dim() == 0 and zero.item() == 0.0
    layer = make(["norm_stabilizer"], fused=fused).train()
    layer(rand(1, 2, 3))  # a single step has no pair of consecutive states
    assert R.penalty(layer).item() == 0.0
    assert R.penalty(nn.Linear(2, 2)).item() == 0.0


# =============================================================================================
# recurrent batch normalization (Cooijmans et al.)
# =============================================================================================

def hand_bn_lstm(layer, x, training, train_steps=None, z=None, updates=None):
    """The BN-LSTM of Cooijmans et al., one layer, zero initial state.

    training: batch statistics (biased variance), returned per step for each site;
    eval: the stored running statistics of step min(t, train_steps - 1).
    z: zoneout expectation (eval); updates: zoneout update masks (u_c, u_h) (training).
    """
    reg = [r for r in layer.regularizers if r.name == "recurrent_batchnorm"][0]
    W_ih, W_hh, b_ih, b_hh = weights(layer)
    eps = reg.eps
    gamma_x, gamma_h = reg.gamma_input[0], reg.gamma_hidden[0]
    gamma_c, beta_c = reg.gamma_cell[0], reg.beta_cell[0]
    T, B, _ = x.shape
    H = layer.hidden_size
    h = c = torch.zeros(B, H)
    outputs, stats = [], {"input": [], "hidden": [], "cell": []}

    def bn(site, value, t, gamma, beta=0.0):
        if training:
            mean, var = value.mean(0), value.var(0, unbiased=False)
            stats[site].append((mean.detach(), value.var(0, unbiased=True).detach()))
        else:
            slot = min(t, train_steps - 1)
            mean = getattr(reg, f"running_mean_{site}")[0, slot]
            var = getattr(reg, f"running_var_{site}")[0, slot]
        return (value - mean) / torch.sqrt(var + eps) * gamma + beta

    for t in range(T):
        pre = bn("hidden", h @ W_hh.T, t, gamma_h) + bn("input", x[t] @ W_ih.T, t, gamma_x) + b_ih + b_hh
        i, f, g, o = pre.chunk(4, dim=-1)
        i, f, g, o = sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
        c_hat = f * c + i * g
        h_hat = o * tanh(bn("cell", c_hat, t, gamma_c, beta_c))
        if z is not None:
            c, h = z * c + (1 - z) * c_hat, z * h + (1 - z) * h_hat
        elif updates is not None:
            u_c, u_h = updates[0][t], updates[1][t]
            c, h = (1 - u_c) * c + u_c * c_hat, (1 - u_h) * h + u_h * h_hat
        else:
            c, h = c_hat, h_hat
        outputs.append(h)
    return torch.stack(outputs), c, stats


def test_recurrent_batchnorm_gammas_start_at_0_1():
    layer = make(["recurrent_batchnorm"], num_layers=2)
    gammas = {n: p for n, p in layer.named_parameters() if "gamma" in n}
    assert len(gammas) >= 3
    for name, p in gammas.items():
        assert torch.all(p == 0.1), name
    assert torch.all(layer.regularizers[0].beta_cell == 0)
    layer = make(["recurrent_batchnorm:gamma_init=0.3"])
    assert all(torch.all(p == 0.3) for n, p in layer.named_parameters() if "gamma" in n)


def test_recurrent_batchnorm_training_uses_batch_statistics_per_step():
    layer = make(["recurrent_batchnorm"], hidden=4)
    layer.train()
    reg = layer.regularizers[0]
    m = reg.momentum
    x = rand(5, 8, 3) + torch.linspace(-2, 2, 5).view(5, 1, 1)  # each step its own mean
    out = layer(x)[0]
    ref_out, _, stats = hand_bn_lstm(layer, x, training=True)
    torch.testing.assert_close(out, ref_out)
    for site in ("input", "hidden", "cell"):
        running_mean, running_var = getattr(reg, f"running_mean_{site}")[0], getattr(reg, f"running_var_{site}")[0]
        for t, (mean, var) in enumerate(stats[site]):
            # from the initial (0, 1), one momentum step toward this step's batch statistics
            torch.testing.assert_close(running_mean[t], m * mean, msg=lambda s: f"{site} mean, step {t}: {s}")
            torch.testing.assert_close(running_var[t], (1 - m) + m * var, msg=lambda s: f"{site} var, step {t}: {s}")
        # steps never trained keep the initial statistics
        assert torch.all(running_mean[5:] == 0) and torch.all(running_var[5:] == 1)
    means = reg.running_mean_input[0, :5]
    assert all(not torch.allclose(means[t], means[t + 1]) for t in range(4)), "steps share statistics"


def test_recurrent_batchnorm_eval_uses_stored_statistics_and_reuses_the_last_step():
    layer = make(["recurrent_batchnorm"], hidden=4)
    layer.train()
    for seed in range(3):
        layer(rand(4, 8, 3, seed=seed) + 1.0)
    layer.eval()
    x = rand(7, 3, 3, seed=9)  # longer than the training sequences (4 steps)
    with torch.no_grad():
        out, (h_n, c_n) = layer(x)
        ref_out, ref_c, _ = hand_bn_lstm(layer, x, training=False, train_steps=4)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(c_n[0], ref_c)
    # eval is deterministic and per-sample (a batch of one gives the same outputs)
    torch.testing.assert_close(layer(x[:, :1])[0], out[:, :1])
    # and the statistics of steps 4.. (never trained) are not the ones used
    reg = layer.regularizers[0]
    assert torch.all(reg.running_mean_input[0, 4:] == 0)


def test_recurrent_batchnorm_with_zoneout(fused, draws):
    z = 0.15
    layer = make(["recurrent_batchnorm", f"zoneout:z_cells={z},z_states={z},shared_mask=true"], fused=fused,
                 hidden=4).train()
    x = rand(5, 6, 3)
    out, (h_n, c_n) = layer(x)
    (out.pow(2).sum() + c_n.sum()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # training with the drawn mask (one for cells and states), on a fresh layer whose running
    # statistics have not moved yet
    fresh = make(["recurrent_batchnorm", f"zoneout:z_cells={z},z_states={z},shared_mask=true"], fused=fused,
                 hidden=4).train()
    draws.clear()
    out = fresh(x)[0]
    update = the_draw(draws, 1 - z)
    torch.testing.assert_close(out, hand_bn_lstm(fresh, x, training=True, updates=(update, update))[0])
    # eval applies both: stored statistics and the zoneout expectation
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)[0], hand_bn_lstm(fresh, x, training=False, train_steps=5, z=z)[0])


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_recurrent_batchnorm_is_lstm_only(cell):
    with pytest.raises(ValueError, match="LSTM"):
        make(["recurrent_batchnorm"], cell=cell)


def test_recurrent_batchnorm_follows_the_layer_dtype():
    layer = R.RegularizedLSTM(3, 4, dtype=torch.float64, regularizers=["recurrent_batchnorm"])
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    assert all(b.dtype == torch.float64 for n, b in layer.named_buffers() if "running" in n)
    for fused in (True, False):
        layer.use_fused = fused
        out = layer.train()(torch.randn(5, 2, 3, dtype=torch.float64))[0]
        assert out.dtype == torch.float64
        assert layer.eval()(torch.randn(5, 2, 3, dtype=torch.float64))[0].dtype == torch.float64


def test_static_zoneout_mask_follows_the_layer_dtype():
    layer = R.RegularizedLSTM(3, 4, dtype=torch.float64, regularizers=["zoneout:static_mask=true"])
    assert layer(torch.randn(5, 2, 3, dtype=torch.float64))[0].dtype == torch.float64


def test_recurrent_batchnorm_after_double_works():
    layer = R.RegularizedLSTM(3, 4, regularizers=["recurrent_batchnorm"]).double()
    assert layer(torch.randn(5, 2, 3, dtype=torch.float64))[0].dtype == torch.float64


# =============================================================================================
# seeds and composition
# =============================================================================================

STOCHASTIC = {"recurrent_dropout", "rnndrop", "stochastic_depth", "variational_dropout", "weight_noise", "zoneout"}


@pytest.mark.parametrize("name,cell", [(n, c) for n in BUILT_INS for c in ("lstm", "gru", "rnn")
                                       if c in R.get(n).cell_types])
def test_same_seed_same_outputs(fused, name, cell):
    spec = "stochastic_depth:p=0.3" if name == "stochastic_depth" else name
    layer = make([spec], cell=cell, fused=fused, num_layers=2, dropout=0.0).train()
    x = rand(6, 4, 3)
    results = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        results.append(layer(x)[0].detach())
    assert torch.equal(results[0], results[1])
    if name in STOCHASTIC:
        assert not torch.allclose(results[0], results[2])
    elif name != "recurrent_batchnorm":  # running statistics move, outputs use batch statistics
        assert torch.equal(results[0], results[2])


def test_two_update_masks_multiply(fused, draws):
    # zoneout and stochastic depth both act on the update masks: a unit moves only if neither holds it
    layer = make(["zoneout:z_cells=0.6,z_states=0.3", "stochastic_depth:p=0.5"], fused=fused).train()
    x, h0, c0 = rand(6, 4, 3), rand(1, 4, 5, seed=2), rand(1, 4, 5, seed=3)
    out, _, c_n = forward(layer, x, (h0, c0))
    d_h = the_draw(draws, 0.7)  # zoneout, states (1 = update)
    d_c = the_draw(draws, 0.4)  # zoneout, cells
    d_layer = the_draw(draws, 0.5, units=1)  # stochastic depth, whole layer
    h, c, outputs = h0[0], c0[0], []
    for t in range(6):
        i, f, g, o = lstm_gates(x[t], h, weights(layer))
        c_hat = f * c + i * g
        keep_c = 1 - d_c[t] * d_layer[t]  # preserved if zoneout or stochastic depth holds it
        keep_h = 1 - d_h[t] * d_layer[t]
        c = keep_c * c + (1 - keep_c) * c_hat
        h = keep_h * h + (1 - keep_h) * (o * tanh(c_hat))
        outputs.append(h)
    torch.testing.assert_close(out, torch.stack(outputs))
    torch.testing.assert_close(c_n[0], c)


def test_two_candidate_masks_multiply(fused, draws):
    layer = make(["recurrent_dropout:p=0.5", "recurrent_dropout:p=0.2"], fused=fused).train()
    x = rand(6, 4, 3)
    out = layer(x)[0]
    m1, m2 = the_draw(draws, 0.5), the_draw(draws, 0.8)
    h = c = torch.zeros(4, 5)
    outputs = []
    for t in range(6):
        i, f, g, o = lstm_gates(x[t], h, weights(layer))
        c = f * c + i * (m1[t] * m2[t] * g)
        h = o * tanh(c)
        outputs.append(h)
    torch.testing.assert_close(out, torch.stack(outputs))


@pytest.mark.parametrize("name", BUILT_INS)
def test_unbatched_and_batch_first_inputs_see_the_same_regularizer(fused, name):
    spec = "stochastic_depth:p=0.3" if name == "stochastic_depth" else name
    layer = make([spec], fused=fused, num_layers=2).train()
    if name == "recurrent_batchnorm":  # training needs a batch of two: compare in eval, after a training step
        layer(rand(6, 4, 3))
        layer.eval()
    x = rand(6, 1, 3)
    torch.manual_seed(4)
    batched, (h_b, c_b) = layer(x)
    penalty_batched = R.penalty(layer)
    torch.manual_seed(4)
    unbatched, (h_u, c_u) = layer(x[:, 0])
    torch.testing.assert_close(unbatched, batched[:, 0])
    torch.testing.assert_close(h_u, h_b[:, 0])
    torch.testing.assert_close(c_u, c_b[:, 0])
    torch.testing.assert_close(R.penalty(layer), penalty_batched)
    if name == "recurrent_batchnorm":
        return  # needs a batch of two in training
    layer_bf = make([spec], fused=fused, num_layers=2, batch_first=True).train()
    layer_bf.load_state_dict(layer.state_dict())
    x = rand(6, 4, 3)
    torch.manual_seed(5)
    time_first = layer(x)[0]
    torch.manual_seed(5)
    torch.testing.assert_close(layer_bf(x.transpose(0, 1))[0], time_first.transpose(0, 1))


def test_recurrent_batchnorm_limits(fused):
    layer = make(["recurrent_batchnorm:max_steps=4"], fused=fused, hidden=4).train()
    with pytest.raises(ValueError, match="max_steps"):
        layer(rand(5, 3, 3))
    with pytest.raises(ValueError, match="batch of at least 2"):
        layer(rand(4, 1, 3))
    layer(rand(4, 3, 3) + 1)
    layer.eval()
    x = rand(9, 2, 3)  # longer than max_steps: the last step's statistics serve the rest
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], hand_bn_lstm(layer, x, training=False, train_steps=4)[0])
