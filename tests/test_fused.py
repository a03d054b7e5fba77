"""The fused recurrence (regularizers/fused.py) against the reference loop (reference.py).

1. Through the layers: every cell type, every mask-based regularizer and a few combinations,
   train (same seed, so the same masks: checked) and eval: outputs, final states and gradients.
2. ``torch.autograd.gradcheck`` of ``fused_recurrence`` itself in float64, with every mask
   site set, masks of every broadcast shape, with and without bias, gradients flowing into the
   hidden sequence and (LSTM) the cell sequence.
"""

from __future__ import annotations

import copy
import itertools
import sys
from pathlib import Path

import pytest
import torch

try:
    import regularizers as R
except ImportError:  # running pytest without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import regularizers as R
import regularizers.layers as layers_module
from regularizers import SequenceContext
from regularizers.fused import fused_recurrence
from regularizers.reference import reference_recurrence

CLASSES = {"lstm": R.RegularizedLSTM, "gru": R.RegularizedGRU, "rnn": R.RegularizedRNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}

COMMON = [
    ["recurrent_dropout:p=0.4"],
    ["recurrent_dropout:p=0.4,per_sequence=true"],
    ["variational_dropout:p_input=0.3,p_hidden=0.4"],
    ["variational_dropout:p_input=0.3,p_hidden=0"],  # only the input mask: torch's kernel runs the loop
    ["stochastic_depth:p=0.3"],
    ["weight_noise:sigma=0.1,include_bias=true"],
    ["norm_stabilizer:beta=5"],
    ["zoneout:z_states=0.3,static_mask=true"],
]
LSTM_ONLY = [
    ["zoneout:z_cells=0.5,z_states=0.2"],
    ["zoneout:z_cells=0.3,z_states=0.3,shared_mask=true"],
    ["rnndrop:p=0.4"],
    ["rnndrop:p=0.4", "recurrent_dropout:p=0.2"],
    ["norm_stabilizer:beta=5,on=cells"],
    ["zoneout", "variational_dropout", "recurrent_dropout"],
    ["rnndrop", "zoneout:z_cells=0.3,z_states=0.1"],
    ["stochastic_depth:p=0.3", "zoneout:z_cells=0.2,z_states=0.2", "recurrent_dropout:p=0.1"],
    ["weight_noise", "recurrent_dropout", "norm_stabilizer"],
    ["recurrent_batchnorm"],
    ["recurrent_batchnorm", "zoneout:z_cells=0.15,z_states=0.15,shared_mask=true"],
    ["recurrent_batchnorm", "variational_dropout", "recurrent_dropout", "rnndrop", "norm_stabilizer:on=cells"],
]
NO_CELLS = [
    ["zoneout:z_states=0.3"],
    ["zoneout:z_states=0.2", "variational_dropout", "recurrent_dropout"],
    ["stochastic_depth:p=0.3", "zoneout:z_states=0.2", "norm_stabilizer"],
]
CASES = ([("lstm", regs) for regs in COMMON + LSTM_ONLY]
         + [(cell, regs) for cell in ("gru", "rnn") for regs in COMMON + NO_CELLS])


@pytest.fixture
def draws(monkeypatch):
    calls = []
    original = SequenceContext.bernoulli

    def spy(self, *args, **kwargs):
        mask = original(self, *args, **kwargs)
        calls.append(mask.detach().clone())
        return mask

    monkeypatch.setattr(SequenceContext, "bernoulli", spy)
    return calls


@pytest.fixture
def fused_calls(monkeypatch):
    calls = []
    original = layers_module.fused_recurrence

    def spy(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(layers_module, "fused_recurrence", spy)
    return calls


def run(layer, x, state, seed):
    x = x.clone().requires_grad_(True)
    state = tuple(s.clone().requires_grad_(True) for s in state)
    layer.zero_grad()
    torch.manual_seed(seed)
    output, final = layer(x, state if layer.cell_type == "lstm" else state[0])
    finals = list(final) if layer.cell_type == "lstm" else [final]
    upstream = torch.randn(output.shape, generator=torch.Generator().manual_seed(3))
    taken = R.penalty(layer)
    loss = (output * upstream).sum() + sum(f.pow(2).sum() for f in finals) + taken
    loss.backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    grads["input"] = x.grad
    for k, s in enumerate(state):
        grads[f"state{k}"] = s.grad
    return [output.detach()] + [f.detach() for f in finals] + [taken.detach()], grads


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cell,regs", CASES, ids=[f"{c}-{'+'.join(r)}" for c, r in CASES])
def test_fused_equals_reference_through_the_layer(cell, regs, training, draws, fused_calls):
    torch.manual_seed(0)
    fused = CLASSES[cell](3, 6, num_layers=2, dropout=0.25, regularizers=regs)
    x = torch.randn(7, 5, 3)
    state = (torch.randn(2, 5, 6), torch.randn(2, 5, 6)) if cell == "lstm" else (torch.randn(2, 5, 6),)
    with torch.no_grad():  # one training step first, so that running statistics exist for eval
        fused.train()(x)
    fused.train(training)
    reference = copy.deepcopy(fused)
    fused.use_fused, reference.use_fused = True, False
    draws.clear()
    fused_calls.clear()

    fused_values, fused_grads = run(fused, x, state, seed=11)
    fused_draws = list(draws)
    used_fused = len(fused_calls)
    draws.clear()
    reference_values, reference_grads = run(reference, x, state, seed=11)
    assert len(fused_calls) == used_fused, "the reference layer used the fused loop"
    # the fused layer ran its fast paths: the fused loop when a mask acts inside the recurrence
    # (torch's own kernel or a regularizer's own loop otherwise)
    mask_based = ("zoneout", "recurrent_dropout", "variational_dropout", "rnndrop", "stochastic_depth")
    per_forward = any(r.startswith(mask_based) and "static_mask" not in r for r in regs)
    inside_recurrence = any(r.startswith(mask_based) and "p_hidden=0" not in r for r in regs)
    if training and inside_recurrence and "recurrent_batchnorm" not in regs:
        assert used_fused == 2, "the fused loop was not used"
    if not training and not any(r.startswith(("zoneout", "stochastic_depth", "recurrent_batchnorm", "rnndrop"))
                                or "on=cells" in r for r in regs):
        assert used_fused == 0, "no mask acts in eval: torch's kernel should have run"

    # the same seed drew the same masks in both
    assert len(fused_draws) == len(draws)
    if training and per_forward:
        assert len(draws) > 0
    for a, b in zip(fused_draws, draws):
        assert torch.equal(a, b)
    for a, b in zip(fused_values, reference_values):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert fused_grads.keys() == reference_grads.keys()
    for name in fused_grads:
        # float32 rounding scales with the tensor's largest entries: a γ gradient whose entries reach 7
        # differs by up to 4e-5 in its small ones (the same layer in float64 agrees to 4e-15)
        scale = max(1.0, reference_grads[name].abs().max().item())
        torch.testing.assert_close(fused_grads[name], reference_grads[name], rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m: f"gradient of {name}: {m}")
    # buffers (running statistics of recurrent batch normalization) moved the same way
    for (name, a), (_, b) in zip(fused.named_buffers(), reference.named_buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"buffer {name}: {m}")


# -- fused_recurrence alone, in float64 ----------------------------------------------------------

MASK_SHAPES = {"TBH": lambda T, B, H: (T, B, H), "1BH": lambda T, B, H: (1, B, H),
               "TB1": lambda T, B, H: (T, B, 1), "111": lambda T, B, H: (1, 1, 1)}
SITES = {"lstm": ("hidden_input", "candidate", "cell", "cell_update", "hidden_update"),
         "gru": ("hidden_input", "candidate", "hidden_update"),
         "rnn": ("hidden_input", "candidate", "hidden_update")}
T, B, H = 4, 3, 3


def make_masks(cell, shape_name, kind, seed=0):
    """Every site of the cell, with ``kind`` "binary" (0/1) or "scaled" (0 or 1/keep for dropout sites,
    values in (0, 1.5) for update masks, like an expectation or a Gaussian mask)."""
    g = torch.Generator().manual_seed(seed)
    shape = MASK_SHAPES[shape_name](T, B, H)
    masks = {}
    for site in SITES[cell]:
        if kind == "scaled" and site.endswith("update"):
            mask = 0.1 + 1.4 * torch.rand(shape, generator=g, dtype=torch.float64)
        else:
            mask = torch.bernoulli(torch.full(shape, 0.6, dtype=torch.float64), generator=g)
            if mask.numel() == 1:
                mask.fill_(1.0)  # a single 0 would switch the whole site off
            else:
                mask.view(-1)[0], mask.view(-1)[1] = 0.0, 1.0  # both values occur
            if kind == "scaled":
                mask = mask / 0.6
        masks[site] = mask
    return masks


def inputs(cell, bias, seed=1):
    g = torch.Generator().manual_seed(seed)
    gates = GATES[cell] * H

    def r(*shape):
        return (0.5 * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_(True)

    return [r(T, B, gates), r(gates, H), r(gates) if bias else None, r(B, H), r(B, H) if cell == "lstm" else None]


@pytest.fixture(params=["python", "native"])
def loops(request, monkeypatch):
    """Run the fused Functions on the Python loops, or on the compiled twin where it is built."""
    import regularizers.fused as fused_module
    import regularizers.fused_batchnorm as batchnorm_module

    if request.param == "python":
        chosen = lambda: fused_module._PythonLoops()  # noqa: E731
    else:
        from regularizers import native

        if native.loops() is None:
            pytest.skip("the native loops are not built here (no compiler, or REGBENCH_NATIVE=0)")
        chosen = native.loops
    for module in (fused_module, batchnorm_module):
        if hasattr(module, "_loops"):
            monkeypatch.setattr(module, "_loops", chosen)
    return request.param


GRADCHECK_CASES = list(itertools.product(["lstm", "gru", "rnn"], MASK_SHAPES, ["binary", "scaled"], [True, False]))


@pytest.mark.parametrize("cell,shape,kind,bias", GRADCHECK_CASES,
                         ids=[f"{c}-{s}-{k}-{'bias' if b else 'nobias'}" for c, s, k, b in GRADCHECK_CASES])
def test_fused_gradcheck_and_equals_reference(cell, shape, kind, bias, loops):
    masks = make_masks(cell, shape, kind)
    xp, w_hh, b_hh, h0, c0 = inputs(cell, bias)
    differentiable = [t for t in (xp, w_hh, b_hh, h0, c0) if t is not None]

    def call(loop):
        def f(*tensors):
            it = iter(tensors)
            args = [next(it) if t is not None else None for t in (xp, w_hh, b_hh, h0, c0)]
            hidden, cells = loop(cell, *args, masks)
            return (hidden, cells) if cells is not None else hidden
        return f

    # gradients into the hidden sequence and, for LSTM, the cell sequence too
    assert torch.autograd.gradcheck(call(fused_recurrence), differentiable, eps=1e-6, atol=1e-7, rtol=1e-5)

    fused_out = call(fused_recurrence)(*differentiable)
    reference_out = call(reference_recurrence)(*differentiable)
    fused_out = fused_out if isinstance(fused_out, tuple) else (fused_out,)
    reference_out = reference_out if isinstance(reference_out, tuple) else (reference_out,)
    upstream = [torch.randn_like(o) for o in fused_out]
    for a, b in zip(fused_out, reference_out):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    fused_grads = torch.autograd.grad(fused_out, differentiable, upstream)
    reference_grads = torch.autograd.grad(reference_out, differentiable, upstream)
    for a, b in zip(fused_grads, reference_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_fused_gradcheck_without_masks_and_only_cells_used(cell, loops):
    xp, w_hh, b_hh, h0, c0 = inputs(cell, True)
    differentiable = [t for t in (xp, w_hh, b_hh, h0, c0) if t is not None]
    assert torch.autograd.gradcheck(lambda *a: fused_recurrence(cell, *a, *([None] if cell != "lstm" else []), {})[0],
                                    differentiable)
    if cell == "lstm":  # only the cell sequence reaches the loss (grad of hidden is None)
        masks = make_masks("lstm", "TBH", "scaled")
        assert torch.autograd.gradcheck(lambda *a: fused_recurrence("lstm", *a, masks)[1], differentiable)


def test_fused_rejects_normalize_hooks():
    xp, w_hh, b_hh, h0, c0 = inputs("lstm", True)
    with pytest.raises(ValueError, match="normalize"):
        fused_recurrence("lstm", xp, w_hh, b_hh, h0, c0, {}, normalize=lambda s, v, t: v)


# -- recurrent batch normalization's own fused loop ---------------------------------------------

@pytest.mark.parametrize("training", [True, False], ids=["batch_statistics", "running_statistics"])
@pytest.mark.parametrize("shape", ["TBH", "111"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("normalizes_input", [True, False], ids=["input-normalized-in-loop", "input-normalized"])
def test_batchnorm_recurrence_gradcheck(training, shape, bias, normalizes_input, loops):
    """Every input's gradient, γ_x's too where the Function normalizes the input projection itself
    (the compiled fast loop fuses that normalization into its passes, the others do it around the loop)."""
    from regularizers.fused_batchnorm import BatchNormLSTMRecurrence

    masks = make_masks("lstm", shape, "scaled")
    xp, w_hh, b_hh, h0, c0 = inputs("lstm", bias)
    g = torch.Generator().manual_seed(5)

    def r(*s, low=0.0):
        return (low + 0.5 * torch.rand(*s, generator=g, dtype=torch.float64)).requires_grad_(True)

    gamma_hidden, gamma_cell, beta_cell = r(4 * H, low=0.1), r(H, low=0.1), r(H, low=-0.25)
    gamma_input = r(4 * H, low=0.1) if normalizes_input else None
    running = None if training else (r(T, 4 * H).detach(), r(T, 4 * H, low=0.5).detach(),
                                     r(T, H).detach(), r(T, H, low=0.5).detach())
    if running is not None and normalizes_input:
        running = (*running, r(T, 4 * H).detach(), r(T, 4 * H, low=0.5).detach())
    order = (xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, gamma_input)
    differentiable = [t for t in order if t is not None]

    def f(*tensors):
        it = iter(tensors)
        args = [next(it) if t is not None else None for t in order]
        hidden, cells, *_ = BatchNormLSTMRecurrence.apply(
            *args[:8], running, 1e-5, masks["hidden_input"], masks["candidate"], masks["cell"], masks["cell_update"],
            masks["hidden_update"], args[8])
        return hidden, cells

    assert torch.autograd.gradcheck(f, differentiable, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_batchnorm_layer_uses_its_own_fused_loop(monkeypatch):
    from regularizers.recurrent_batchnorm import RecurrentBatchNorm

    calls = []
    original = RecurrentBatchNorm.fused_recurrence

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RecurrentBatchNorm, "fused_recurrence", spy)
    layer = R.RegularizedLSTM(3, 4, regularizers=["recurrent_batchnorm"])
    layer(torch.randn(5, 2, 3))
    assert calls == [1]
    layer.use_fused = False
    layer(torch.randn(5, 2, 3))
    assert calls == [1]


def test_reference_loop_switch_runs_the_step_by_step_loop(monkeypatch):
    """REGBENCH_REFERENCE_LOOP=1 makes new layers run reference_recurrence, with the same result."""
    import regularizers.layers as layers_module

    calls = []
    original = layers_module.reference_recurrence
    monkeypatch.setattr(layers_module, "reference_recurrence", lambda *a, **k: calls.append(1) or original(*a, **k))
    torch.manual_seed(0)
    fast = R.RegularizedLSTM(3, 4, regularizers=["zoneout"]).double()
    monkeypatch.setenv("REGBENCH_REFERENCE_LOOP", "1")
    reference = R.RegularizedLSTM(3, 4, regularizers=["zoneout"]).double()
    reference.load_state_dict(fast.state_dict())
    assert fast.use_fused and not reference.use_fused
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    fast.eval(), reference.eval()
    torch.testing.assert_close(reference(x)[0], fast(x)[0], rtol=1e-10, atol=1e-12)
    assert calls == [1]


# -- masks that need a gradient, masks of another dtype ------------------------------------------

class LearnedZoneout(R.Regularizer):
    """Zoneout in expectation with a learned rate, on every update site, in training and eval: the
    update masks are a function of a parameter, so they need a gradient (the fused loops give none)."""

    def bind(self, layer):
        self.logit = torch.nn.Parameter(torch.tensor(0.4))
        self.noise = torch.nn.Parameter(torch.tensor(0.2))

    def masks(self, ctx):
        update = torch.sigmoid(self.logit).reshape(1, 1, 1)
        g = torch.Generator().manual_seed(ctx.layer)
        scaled = 1 + self.noise * torch.randn(ctx.steps, ctx.batch_size, ctx.hidden_size, generator=g)
        masks = {"hidden_update": update, "candidate": scaled, "hidden_input": scaled.flip(0)}
        if ctx.cell_type == "lstm":
            masks["cell_update"] = update
            masks["cell"] = scaled[:1]
        return masks


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_mask_with_a_learned_parameter_trains_on_the_default_path(cell, fused_calls):
    torch.manual_seed(0)
    fused = CLASSES[cell](3, 4, num_layers=2, regularizers=[LearnedZoneout()])
    reference = copy.deepcopy(fused)
    reference.use_fused = False
    x, state = torch.randn(6, 2, 3), (torch.randn(2, 2, 4), torch.randn(2, 2, 4))
    grads = []
    for layer in (fused, reference):
        output, final = layer(x, state if cell == "lstm" else state[0])
        (output.pow(2).sum() + sum(f.sum() for f in (final if cell == "lstm" else [final]))).backward()
        grads.append({n: p.grad for n, p in layer.named_parameters()})
    learned = ("regularizers.0.logit", "regularizers.0.noise")
    for name in learned:
        assert grads[0][name] is not None and grads[0][name].abs() > 0, f"{name} got no gradient"
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)
    fused_calls.clear()
    with torch.no_grad():  # no gradient wanted: the fused loop runs again
        fused(x)
    assert len(fused_calls) == 2


def test_fused_recurrence_refuses_a_mask_that_needs_a_gradient():
    xp, w_hh, b_hh, h0, c0 = inputs("lstm", True)
    mask = torch.full((1, 1, 1), 0.5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="gives masks no gradient"):
        fused_recurrence("lstm", xp, w_hh, b_hh, h0, c0, {"hidden_update": mask})


class HalfPrecisionZoneout(R.Regularizer):
    def masks(self, ctx):
        masks = {"hidden_update": torch.full((ctx.steps, ctx.batch_size, ctx.hidden_size), 0.5, dtype=torch.float64),
                 "input": torch.full((1, 1, ctx.input_size), 0.75, dtype=torch.float16)}
        if ctx.cell_type == "lstm":
            masks["cell_update"] = torch.full((1, 1, 1), 0.25, dtype=torch.bfloat16)
        return masks


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_masks_of_another_dtype_are_cast_to_the_layers(cell):
    torch.manual_seed(0)
    layer = CLASSES[cell](3, 4, regularizers=[HalfPrecisionZoneout()])
    reference = copy.deepcopy(layer)
    reference.use_fused = False
    x = torch.randn(5, 2, 3)
    output, _ = layer(x)
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, reference(x)[0])


# -- a projected LSTM (proj_size) --------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", list(MASK_SHAPES))
def test_projected_lstm_gradcheck_and_equals_reference(shape, bias):
    P = 2  # units of h; the cell keeps H
    masks = make_masks("lstm", shape, "scaled")
    g = torch.Generator().manual_seed(4)
    for site in ("hidden_input", "hidden_update"):  # the masks on h have P units
        mask = masks[site]
        if mask.size(-1) == H:
            masks[site] = mask[..., :P].contiguous()
    xp, _, b_hh, _, c0 = inputs("lstm", bias)

    def r(*size):
        return (0.5 * torch.randn(*size, generator=g, dtype=torch.float64)).requires_grad_(True)

    w_hh, h0, w_hr = r(4 * H, P), r(B, P), r(P, H)
    differentiable = [t for t in (xp, w_hh, b_hh, h0, c0, w_hr) if t is not None]

    def call(loop):
        def f(*tensors):
            it = iter(tensors)
            xp_, w_hh_, b_hh_, h0_, c0_, w_hr_ = [next(it) if t is not None else None
                                                  for t in (xp, w_hh, b_hh, h0, c0, w_hr)]
            return loop("lstm", xp_, w_hh_, b_hh_, h0_, c0_, masks, w_hr=w_hr_)
        return f

    assert torch.autograd.gradcheck(call(fused_recurrence), differentiable, eps=1e-6, atol=1e-7, rtol=1e-5)
    fused_out, reference_out = call(fused_recurrence)(*differentiable), call(reference_recurrence)(*differentiable)
    assert fused_out[0].shape == (T, B, P) and fused_out[1].shape == (T, B, H)
    upstream = [torch.randn_like(o) for o in fused_out]
    for a, b in zip(fused_out, reference_out):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(fused_out, differentiable, upstream),
                    torch.autograd.grad(reference_out, differentiable, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# -- a whole layer, in float64 ------------------------------------------------------------------

def test_regularized_rnn_with_zoneout_gradcheck(loops, fused_calls):
    """The tanh-RNN layer end to end with zoneout (the update mask, the site the fused loop mixes
    old and new states at): gradcheck of the outputs and final states against the input, the
    initial state and every parameter of both layers."""
    torch.manual_seed(0)
    layer = R.RegularizedRNN(3, 4, num_layers=2, regularizers=["zoneout:z_states=0.3"]).double().train()
    names = [name for name, _ in layer.named_parameters()]
    parameters = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)

    def f(x, h0, *parameters):
        torch.manual_seed(1)  # the same zoneout masks at every evaluation
        return torch.func.functional_call(layer, dict(zip(names, parameters)), (x, h0))

    assert torch.autograd.gradcheck(f, (x, h0, *parameters), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert fused_calls and set(fused_calls) == {"rnn"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("with_beta", [True, False], ids=["beta", "no-beta"])
def test_column_batch_norm_equals_torch_batch_norm(dtype, with_beta):
    """recurrent_batchnorm's input normalization on the CPU (native column passes): the output, the
    statistics and every gradient of F.batch_norm in training, and gradcheck in float64."""
    from regularizers import native
    from regularizers.fused_batchnorm import column_batch_norm, column_batch_norm_applies

    if native.loops() is None:
        pytest.skip("the native loops are not built here (no compiler, or REGBENCH_NATIVE=0)")
    g = torch.Generator().manual_seed(5)
    x = (3 + 2 * torch.randn(6, 2100, generator=g, dtype=dtype)).requires_grad_()  # 3 column blocks, one ragged
    gamma = torch.rand(2100, generator=g, dtype=dtype).requires_grad_()
    beta = torch.randn(2100, generator=g, dtype=dtype).requires_grad_() if with_beta else None
    assert column_batch_norm_applies(x)
    y, mean, var = column_batch_norm(x, gamma, beta, 1e-5)
    running_mean, running_var = torch.zeros(2100, dtype=dtype), torch.zeros(2100, dtype=dtype)
    expected = torch.nn.functional.batch_norm(x, running_mean, running_var, gamma, beta, training=True, momentum=1.0,
                                              eps=1e-5)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(y, expected, **tolerance)
    torch.testing.assert_close(mean, running_mean, **tolerance)  # momentum 1: the batch's own statistics
    torch.testing.assert_close(var * 6 / 5, running_var, **tolerance)  # running_var is the unbiased one
    upstream = torch.randn(6, 2100, generator=g, dtype=dtype)
    inputs = [t for t in (x, gamma, beta) if t is not None]
    for a, b in zip(torch.autograd.grad(y, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(a, b, **tolerance)
    if dtype == torch.float64:
        small = [t[:, :40].detach().clone().requires_grad_() if t.dim() == 2 else t[:40].detach().clone().requires_grad_()
                 for t in inputs]
        assert torch.autograd.gradcheck(lambda *a: column_batch_norm(a[0], a[1], a[2] if with_beta else None, 1e-5)[0],
                                        small)


def _recurrence_node(output):
    """The fused recurrence's autograd node behind a layer's output."""
    seen, todo = set(), [output.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "Recurrence" in type(node).__name__:
            return node
        todo.extend(next_node for next_node, _ in node.next_functions)
    raise AssertionError("no fused recurrence behind this output")


@pytest.mark.parametrize("cell", ["rnn"])
def test_the_compiled_loops_keep_per_step_masks_compact(cell):
    """With the compiled loops, a tanh-RNN's training step keeps zoneout's per-step masks as one byte
    an entry (csrc/masks.cpp), and gives the gradients of the float masks (the reference loop's)."""
    from regularizers import native

    if native.loops() is None:
        pytest.skip("the native loops are not built here (no compiler, or REGBENCH_NATIVE=0)")
    torch.manual_seed(0)
    spec = "zoneout:z_states=0.3" + (",z_cells=0.3" if cell == "lstm" else "")
    layer = CLASSES[cell](5, 7, num_layers=2, regularizers=[spec])
    x = torch.randn(9, 4, 5)
    torch.manual_seed(1)
    output, _ = layer(x)
    saved = [t for t in _recurrence_node(output).saved_tensors if t is not None]
    assert any(t.dtype == torch.uint8 for t in saved)
    assert not any(t.is_floating_point() and t.shape == (9, 4, 7) and set(t.unique().tolist()) <= {0.0, 1.0}
                   for t in saved)  # no float mask
    output.sum().backward()
    fused_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    layer.use_fused = False  # the reference loop, on the same masks (the same seed draws them)
    torch.manual_seed(1)
    reference_output, _ = layer(x)
    reference_output.sum().backward()
    torch.testing.assert_close(output, reference_output)
    for fused_grad, p in zip(fused_grads, layer.parameters()):
        torch.testing.assert_close(fused_grad, p.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [3, 40], ids=["narrow-output", "wide-output"])
def test_project_inputs_with_a_mask_is_linear_of_the_masked_input(width, dtype):
    """project_inputs(x, W, b, mask) keeps x and the mask, not their product, and gives what
    autograd gives for F.linear(x * mask, W, b): every branch of its weight gradient (oneDNN with
    a transposed masked copy where the output is wider than the input, ATen's product a chunk of
    steps at a time where it is not; float64 without oneDNN)."""
    from regularizers.fused import project_inputs

    torch.manual_seed(0)
    x = torch.randn(17, 3, 10, dtype=dtype, requires_grad=True)
    weight = torch.randn(width, 10, dtype=dtype, requires_grad=True)
    bias = torch.randn(width, dtype=dtype, requires_grad=True)
    for mask in ((torch.rand(1, 3, 10, dtype=dtype) > 0.4) * 1.7, (torch.rand(17, 3, 10, dtype=dtype) > 0.4) * 1.7):
        grad = torch.randn(17, 3, width, dtype=dtype)
        results = []
        for fn in (lambda: project_inputs(x, weight, bias, mask), lambda: torch.nn.functional.linear(x * mask, weight, bias)):
            out = fn()
            results.append((out, *torch.autograd.grad(out, (x, weight, bias), grad)))
        for got, expected in zip(*results):
            torch.testing.assert_close(got, expected)
        kept = {t.data_ptr() for t in project_inputs(x, weight, bias, mask).grad_fn.saved_tensors}
        assert kept == {x.data_ptr(), weight.data_ptr(), mask.data_ptr()}  # no product of x and the mask
