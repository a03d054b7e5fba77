"""The compiled loops (regularizers/csrc/) equal the Python loops they mirror.

The rest of the suite runs whichever of the two this machine has; this file runs both side by
side on the same inputs, on every code path (masks of every shape, biases, oneDNN products or
plain ones), so that the Python fallback stays exact where the compiled loops are built.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from regularizers import fused, fused_batchnorm, native

T, B, H = 6, 4, 5


@pytest.fixture(scope="module")
def compiled():
    module = native.loops()
    if module is None:
        pytest.skip("the native loops could not be built on this machine (no C++ compiler or ninja, "
                    "or REGBENCH_NATIVE=0); the Python loops are tested by the rest of the suite")
    return module


def _mask(shape, scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) > 0.3).float() * scale


def _mask_sets(steps, batch, units):
    return {
        "none": {},
        "per-step": {"hidden_input": _mask((steps, batch, units), 1.4, 1),
                     "candidate": _mask((steps, batch, units), 1.4, 2),
                     "cell": _mask((steps, batch, units), 1.4, 3), "cell_update": _mask((steps, batch, units), 1, 4),
                     "hidden_update": _mask((steps, batch, units), 1, 5)},
        "broadcast": {"hidden_input": _mask((1, batch, units), 1.4, 6), "candidate": _mask((steps, batch, 1), 1.4, 7),
                      "cell": _mask((1, batch, units), 1.4, 8), "cell_update": torch.full((1, 1, 1), 0.7),
                      "hidden_update": _mask((steps, batch, 1), 1, 9)},
    }


MASK_SETS = _mask_sets(T, B, H)
LSTM_MASKS = ("hidden_input", "candidate", "cell", "cell_update", "hidden_update")  # the LSTM loops' order
LSTM_ONLY = ("cell", "cell_update")


def _inputs(gates, seed=0):
    generator = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    return make(T, B, gates * H), make(gates * H, H) * 0.5, make(gates * H), make(B, H), make(B, H)


@contextlib.contextmanager
def _threads(count):
    """torch's thread count set to `count` for the block, restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _close(left, right, scaled=False):
    """Each pair equal to float32 rounding; `scaled`: an absolute tolerance that grows with the
    tensor's largest entry (a γ gradient summed over 300 rows reaches 100, and its small entries
    then differ by 2e-5 between two orders of summation, both as far from the float64 values)."""
    assert len(left) == len(right)
    for a, b in zip(left, right):
        if a is None or b is None:
            assert a is None and b is None
        else:
            scale = max(1.0, b.abs().max().item()) if scaled and b.numel() else 1.0
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mask_set", list(MASK_SETS))
def test_lstm_loops_agree(compiled, mask_set, bias, onednn):
    if onednn and not fused._ONEDNN_LINEAR:
        pytest.skip("torch was built without oneDNN")
    masks = MASK_SETS[mask_set]
    xp, w, b, h0, c0 = _inputs(4)
    order = [masks.get(k) for k in LSTM_MASKS]
    python_out = fused.lstm_forward(xp, w, b if bias else None, h0, c0, *order, onednn)
    native_out = compiled.lstm_forward(xp, w, b if bias else None, h0, c0, *order, onednn)
    _close(python_out, native_out)
    hidden, cells, gates, tanh_cells = python_out
    grad_h, grad_c = torch.randn_like(hidden), torch.randn_like(cells)
    saved = (w, h0, c0, gates, cells, tanh_cells, hidden, *order)
    _close(fused.lstm_backward(grad_h, grad_c, *saved, bias, onednn),
           compiled.lstm_backward(grad_h, grad_c, *saved, bias, onednn))
    _close(fused.lstm_backward(grad_h, None, *saved, bias, onednn),
           compiled.lstm_backward(grad_h, None, *saved, bias, onednn))


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mask_set", list(MASK_SETS))
def test_gru_loops_agree(compiled, mask_set, bias, onednn):
    if onednn and not fused._ONEDNN_LINEAR:
        pytest.skip("torch was built without oneDNN")
    masks = {k: v for k, v in MASK_SETS[mask_set].items() if k not in LSTM_ONLY}
    xp, w, b, h0, _ = _inputs(3)
    order = [masks.get(k) for k in ("hidden_input", "candidate", "hidden_update")]
    python_out = fused.gru_forward(xp, w, b if bias else None, h0, *order, onednn)
    native_out = compiled.gru_forward(xp, w, b if bias else None, h0, *order, onednn)
    _close(python_out, native_out)
    hidden, activations, hidden_n = python_out
    grad_h = torch.randn_like(hidden)
    saved = (w, h0, activations, hidden_n, hidden, *order)
    _close(fused.gru_backward(grad_h, *saved, bias, onednn), compiled.gru_backward(grad_h, *saved, bias, onednn))


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mask_set", list(MASK_SETS))
def test_rnn_loops_agree(compiled, mask_set, bias, onednn):
    if onednn and not fused._ONEDNN_LINEAR:
        pytest.skip("torch was built without oneDNN")
    masks = {k: v for k, v in MASK_SETS[mask_set].items() if k not in LSTM_ONLY}
    xp, w, b, h0, _ = _inputs(1)
    order = [masks.get(k) for k in ("hidden_input", "candidate", "hidden_update")]
    hidden = fused.rnn_forward(xp, w, b if bias else None, h0, *order, onednn)
    _close([hidden], [compiled.rnn_forward(xp, w, b if bias else None, h0, *order, onednn)])
    grad_h = torch.randn_like(hidden)
    saved = (w, h0, hidden, *order)
    _close(fused.rnn_backward(grad_h, *saved, bias, onednn), compiled.rnn_backward(grad_h, *saved, bias, onednn))


def test_compact_mask_keeps_two_valued_masks_only(compiled):
    mask = _mask((T, B, H), 1.4, 1)
    flags, kept = compiled.compact_mask(mask)
    assert flags.dtype == torch.uint8 and flags.shape == mask.shape and kept == torch.tensor(1.4).item()
    assert torch.equal(flags.bool(), mask != 0)
    assert torch.equal(compiled.compact_mask(torch.zeros(T, B, H))[0], torch.zeros(T, B, H, dtype=torch.uint8))
    three_valued = mask.clone()
    three_valued[0, 0, mask[0, 0] != 0] = 2.0
    for not_two_valued in (three_valued, mask * torch.rand(T, B, H) + mask):
        assert compiled.compact_mask(not_two_valued)[0].numel() == 0
    assert compiled.compact_mask(mask.double())[1] == pytest.approx(1.4)


def _compacted(compiled, order):
    """The loops' masks with each per-step one in its compact form, and the loops' kept_values."""
    masks, kept = [], []
    for mask in order:
        flags, value = compiled.compact_mask(mask) if mask is not None and mask.size(0) > 1 else (None, 1.0)
        masks.append(mask if flags is None else flags)
        kept.append(value)
    assert any(m is not None and m.dtype == torch.uint8 for m in masks)
    return masks, kept


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_compact_masks_give_what_the_float_masks_give(compiled, cell, generic):
    """The loops read compact masks (uint8 flags and the value they stand for) as the float masks
    they stand for: the same results, bit for bit, forward and backward, in the fast rows and the
    generic loops."""
    suffix = "_generic" if generic else ""
    sites = LSTM_MASKS if cell == "lstm" else ("hidden_input", "candidate", "hidden_update")
    order = [MASK_SETS["per-step"][site] for site in sites]
    compact, kept = _compacted(compiled, order)
    forward, backward = getattr(compiled, cell + "_forward" + suffix), getattr(compiled, cell + "_backward" + suffix)
    xp, w, b, h0, c0 = _inputs({"lstm": 4, "gru": 3, "rnn": 1}[cell])
    states = (h0, c0) if cell == "lstm" else (h0,)
    outputs = forward(xp, w, b, *states, *order, False)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    compact_outputs = forward(xp, w, b, *states, *compact, False, kept_values=kept)
    compact_outputs = compact_outputs if isinstance(compact_outputs, (tuple, list)) else (compact_outputs,)
    for a, e in zip(compact_outputs, outputs):
        assert torch.equal(a, e)
    if cell == "lstm":
        hidden, cells, gates, tanh_cells = outputs
        head = (torch.randn_like(hidden), torch.randn_like(cells), w, h0, c0, gates, cells, tanh_cells, hidden)
    elif cell == "gru":
        hidden, activations, hidden_n = outputs
        head = (torch.randn_like(hidden), w, h0, activations, hidden_n, hidden)
    else:
        head = (torch.randn_like(outputs[0]), w, h0, outputs[0])
    grads = backward(*head, *order, True, False)
    compact_grads = backward(*head, *compact, True, False, kept_values=kept)
    for a, e in zip(compact_grads, grads):
        assert torch.equal(a, e)


@pytest.mark.parametrize("normalizes_input", [True, False], ids=["input-normalized-in-loop", "input-normalized"])
@pytest.mark.parametrize("training", [True, False], ids=["batch-statistics", "running-statistics"])
@pytest.mark.parametrize("mask_set", list(MASK_SETS))
def test_batchnorm_loops_agree(compiled, mask_set, training, normalizes_input):
    masks = MASK_SETS[mask_set]
    xp, w, b, h0, c0 = _inputs(4)
    gamma_h, gamma_c, beta_c = torch.full((4 * H,), 0.1), torch.full((H,), 0.1), torch.randn(H) * 0.1
    gamma_x = torch.rand(4 * H) * 0.5 + 0.1 if normalizes_input else None
    running = None if training else [torch.randn(T, 4 * H), torch.rand(T, 4 * H) + 0.5,
                                     torch.randn(T, H), torch.rand(T, H) + 0.5]
    if running is not None and normalizes_input:
        running += [torch.randn(T, 4 * H), torch.rand(T, 4 * H) + 0.5]
    order = [masks.get(k) for k in LSTM_MASKS]
    _check_batchnorm_loops(compiled, xp, w, b, h0, c0, gamma_h, gamma_c, beta_c, running, order, gamma_x)


def _check_batchnorm_loops(compiled, xp, w, b, h0, c0, gamma_h, gamma_c, beta_c, running, order, gamma_x=None):
    """The compiled batch-norm loop's forward and backward equal the Python loop's (given γ_x, with
    the input normalization that the fast loop fuses into its passes: the projection batch-major,
    as recurrent_batchnorm hands it over)."""
    if gamma_x is not None:
        xp = xp.transpose(0, 1).contiguous().transpose(0, 1)
    args = (xp, w, b, h0, c0, gamma_h, gamma_c, beta_c, running, 1e-5, *order, fused._ONEDNN_LINEAR, gamma_x)
    python_out = fused_batchnorm.batchnorm_lstm_forward(*args)
    _close(python_out, compiled.batchnorm_lstm_forward(*args), scaled=True)
    hidden, cells, *_, mean_x, _, rstd_x, gates, n_hidden, n_cells, rstd_hidden, rstd_cells, tanh_cells = python_out
    grad_h, grad_c = torch.randn_like(hidden), torch.randn_like(cells)
    saved = (w, h0, c0, gamma_h, gamma_c, gates, n_hidden, n_cells, rstd_hidden, rstd_cells, tanh_cells, cells,
             hidden, *order)
    input_normalization = (xp, gamma_x, mean_x, rstd_x) if gamma_x is not None else ()
    training = running is None
    python_grads = fused_batchnorm.batchnorm_lstm_backward(grad_h, grad_c, *saved, True, training,
                                                           fused._ONEDNN_LINEAR, *input_normalization)
    assert (python_grads[8] is None) == (gamma_x is None)
    _close(python_grads, compiled.batchnorm_lstm_backward(grad_h, grad_c, *saved, True, training, fused._ONEDNN_LINEAR,
                                                          *input_normalization), scaled=True)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mask_set", ["per-step", "broadcast"])
@pytest.mark.parametrize("batch", [300, 9, 6])
@pytest.mark.parametrize("training", [True, False], ids=["batch-statistics", "running-statistics"])
def test_batchnorm_loops_split_over_threads_agree(compiled, mask_set, threads, batch, training):
    """With 2 threads the compiled batch-norm loop runs on a team, each thread on its own block of
    rows (300: 150 each; 9: a ragged 5 and 4), meeting the other where the statistics need every row;
    6 rows are too few to split (its passes then share themselves out, as with 1 thread). 37 units
    fit no vector width, and 5 steps make 5 chunks of the weight gradient. Every case equals the
    Python loop, masks of every shape and running statistics included, with the input normalization
    in the loop and without (a thread that read a row or a partial sum before its writer had written
    it would not)."""
    steps, units = 5, 37
    generator = torch.Generator().manual_seed(11)
    make = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    masks = _mask_sets(steps, batch, units)[mask_set]
    order = [masks.get(k) for k in LSTM_MASKS]
    xp, w, b = make(steps, batch, 4 * units), make(4 * units, units) * 0.3, make(4 * units)
    h0, c0 = make(batch, units), make(batch, units)
    gamma_h, gamma_c, beta_c = torch.full((4 * units,), 0.1), torch.full((units,), 0.1), make(units) * 0.1
    running = None if training else [make(steps, 4 * units), torch.rand(steps, 4 * units, generator=generator) + 0.5,
                                     make(steps, units), torch.rand(steps, units, generator=generator) + 0.5,
                                     make(steps, 4 * units), torch.rand(steps, 4 * units, generator=generator) + 0.5]
    gamma_x = torch.rand(4 * units, generator=generator) * 0.5 + 0.1
    with _threads(threads):
        _check_batchnorm_loops(compiled, xp, w, b, h0, c0, gamma_h, gamma_c, beta_c, running, order, gamma_x)
        if running is not None:
            running = running[:4]
        _check_batchnorm_loops(compiled, xp, w, b, h0, c0, gamma_h, gamma_c, beta_c, running, order)


def test_disabled_native_falls_back_to_python(monkeypatch):
    monkeypatch.setenv("REGBENCH_NATIVE", "0")
    assert native.loops() is None
    assert isinstance(fused._loops(), fused._PythonLoops)
    assert fused._loops().batchnorm_lstm_forward is fused_batchnorm.batchnorm_lstm_forward


def test_a_stale_build_lock_is_removed(tmp_path):
    """A process killed while compiling leaves torch's lock file; later processes must not wait on it forever."""
    import os
    import time

    lock = tmp_path / "lock"
    lock.write_text("")
    native._remove_stale_lock(tmp_path)
    assert lock.exists(), "a fresh lock belongs to a build in progress"
    old = time.time() - native._STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="stale build lock"):
        native._remove_stale_lock(tmp_path)
    assert not lock.exists()


def test_the_build_folder_is_named_after_what_is_built(tmp_path, monkeypatch):
    """Checkouts and environments with another source, other flags or another torch build elsewhere
    (they used to share one folder and rebuild each other's build); the same ones share it."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = native.build_directory()
    assert folder.parent == tmp_path and folder.name.startswith("regbench_fused_loops_")
    assert native.build_directory() == folder
    monkeypatch.setattr(native, "_CFLAGS", [*native._CFLAGS, "-DOTHER"])
    flags = native.build_directory()
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    version = native.build_directory()
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    source = tmp_path / "other.cpp"
    source.write_text("// another source\n")
    monkeypatch.setattr(native, "_SOURCES", [*native._SOURCES[:-1], source])
    edited = native.build_directory()
    assert len({folder, flags, version, edited}) == 4


def test_every_build_prints_a_notice_and_compiles_a_copy_in_its_folder(tmp_path, monkeypatch, capsys):
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    calls = []

    def fake_load(name, sources, build_directory, **kwargs):
        calls.append((name, sources, build_directory))
        (Path(build_directory) / f"{name}.so").write_text("")
        return "module"

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    assert native._build() == "module"
    assert "compiling the native recurrent loops" in capsys.readouterr().err
    name, sources, folder = calls[0]
    assert Path(folder) == native.build_directory() and name == Path(folder).name
    assert sources == [str(Path(folder) / source.name) for source in native._SOURCES if source.suffix == ".cpp"]
    for source in native._SOURCES:  # headers too, next to the sources that include them
        assert (Path(folder) / source.name).read_bytes() == source.read_bytes()
    assert native._build() == "module" and capsys.readouterr().err == ""  # built: loading only
    for library in Path(folder).glob("*.so"):
        library.unlink()
    native._build()
    assert "compiling the native recurrent loops" in capsys.readouterr().err  # a rebuild says so too


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_set", list(MASK_SETS))
def test_fast_path_equals_generic_path_with_strided_gradients(compiled, mask_set, dtype):
    """The vectorized CPU path against the compiled loops' ATen path, with gradients that are
    expanded (stride 0, as from ``output.sum()``) or transposed, read in place by the fast path."""
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    masks = {k: (v.to(dtype) if v is not None else None) for k, v in MASK_SETS[mask_set].items()}
    xp, w, b, h0, c0 = (t.to(dtype) for t in _inputs(4))
    order = [masks.get(k) for k in LSTM_MASKS]
    fast_out = compiled.lstm_forward(xp, w, b, h0, c0, *order, False)
    generic_out = compiled.lstm_forward_generic(xp, w, b, h0, c0, *order, False)
    for a, e in zip(fast_out, generic_out):
        torch.testing.assert_close(a, e, **tolerance)
    hidden, cells, gates, tanh_cells = generic_out
    expanded = torch.ones((), dtype=dtype).expand(T, B, H)
    transposed = torch.randn(B, T, H, dtype=dtype).transpose(0, 1)
    saved = (w, h0, c0, gates, cells, tanh_cells, hidden, *order)
    for grad_h, grad_c in ((expanded, transposed), (transposed, None)):
        for a, e in zip(compiled.lstm_backward(grad_h, grad_c, *saved, True, False),
                        compiled.lstm_backward_generic(grad_h, grad_c, *saved, True, False)):
            torch.testing.assert_close(a, e, **tolerance)

    gru_masks = [masks.get(k) for k in ("hidden_input", "candidate", "hidden_update")]
    xp3, w3, b3, h03, _ = (t.to(dtype) for t in _inputs(3))
    fast_out = compiled.gru_forward(xp3, w3, b3, h03, *gru_masks, False)
    generic_out = compiled.gru_forward_generic(xp3, w3, b3, h03, *gru_masks, False)
    for a, e in zip(fast_out, generic_out):
        torch.testing.assert_close(a, e, **tolerance)
    hidden, activations, hidden_n = generic_out
    saved = (w3, h03, activations, hidden_n, hidden, *gru_masks)
    for a, e in zip(compiled.gru_backward(expanded, *saved, True, False),
                    compiled.gru_backward_generic(expanded, *saved, True, False)):
        torch.testing.assert_close(a, e, **tolerance)

    xp1, w1, b1, h01, _ = (t.to(dtype) for t in _inputs(1))
    hidden = compiled.rnn_forward_generic(xp1, w1, b1, h01, *gru_masks, False)
    torch.testing.assert_close(compiled.rnn_forward(xp1, w1, b1, h01, *gru_masks, False), hidden, **tolerance)
    saved = (w1, h01, hidden, *gru_masks)
    for grad_h in (expanded, transposed):
        for a, e in zip(compiled.rnn_backward(grad_h, *saved, True, False),
                        compiled.rnn_backward_generic(grad_h, *saved, True, False)):
            torch.testing.assert_close(a, e, **tolerance)


@pytest.mark.parametrize("steps, batch, hidden", [(3, 8, 2), (3, 12, 5), (2, 19, 8), (2, 14, 600)],
                         ids=["whole-blocks", "ragged-rows-and-gates", "ragged-rows", "rows-split-over-tasks"])
def test_fast_path_transposes_gate_gradients_of_every_shape(compiled, steps, batch, hidden):
    """The backward pass writes each step's gate gradients transposed, in 8 × 8 register blocks with
    scalar edges, from inside each task of rows; every block shape must land in the right place."""
    generator = torch.Generator().manual_seed(3)
    make = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    mask = (torch.rand(steps, batch, hidden, generator=generator) > 0.2).float()
    for gates, forward, backward in ((4, "lstm_forward", "lstm_backward"), (3, "gru_forward", "gru_backward"),
                                     (1, "rnn_forward", "rnn_backward")):
        xp, w, b, h0 = make(steps, batch, gates * hidden), make(gates * hidden, hidden) * 0.3, make(gates * hidden), \
            make(batch, hidden)
        grad = make(steps, batch, hidden)
        if gates == 4:
            c0 = make(batch, hidden)
            masks = [mask, None, None, mask, None]
            hidden_seq, cells, gate_values, tanh_cells = getattr(compiled, forward + "_generic")(xp, w, b, h0, c0, *masks, False)
            saved = (w, h0, c0, gate_values, cells, tanh_cells, hidden_seq, *masks)
            args = (grad, None, *saved, True, False)
        elif gates == 1:
            masks = [mask, None, None]
            hidden_seq = getattr(compiled, forward + "_generic")(xp, w, b, h0, *masks, False)
            args = (grad, w, h0, hidden_seq, *masks, True, False)
        else:
            masks = [mask, None, None]
            hidden_seq, activations, hidden_n = getattr(compiled, forward + "_generic")(xp, w, b, h0, *masks, False)
            args = (grad, w, h0, activations, hidden_n, hidden_seq, *masks, True, False)
        for fast, generic in zip(getattr(compiled, backward)(*args), getattr(compiled, backward + "_generic")(*args)):
            torch.testing.assert_close(fast, generic, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("batch", [13, 32, 5])
def test_rows_split_over_threads_give_the_same_loops(compiled, batch, onednn):
    """With several threads each one runs the whole time loop on its own block of batch rows (a row's
    recurrence needs no other row); a ragged split, and one too small to split, give the same
    outputs and gradients as the generic path."""
    if onednn and not fused._ONEDNN_LINEAR:
        pytest.skip("torch was built without oneDNN")
    generator = torch.Generator().manual_seed(11)
    make = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    steps, hidden = 6, 16
    mask = (torch.rand(steps, batch, hidden, generator=generator) > 0.2).float() * 1.25
    update = (torch.rand(steps, batch, hidden, generator=generator) > 0.5).float()
    with _threads(2):
        for gates in (4, 3, 1):
            xp, w, b, h0, c0 = make(steps, batch, gates * hidden), make(gates * hidden, hidden) * 0.3, \
                make(gates * hidden), make(batch, hidden), make(batch, hidden)
            grad = make(steps, batch, hidden)
            if gates == 1:  # the tanh-RNN
                masks = [mask, mask, update]
                fast = [compiled.rnn_forward(xp, w, b, h0, *masks, onednn)]
                generic = [compiled.rnn_forward_generic(xp, w, b, h0, *masks, onednn)]
                args = (grad, w, h0, generic[0], *masks, True, onednn)
                backward = "rnn_backward"
            elif gates == 4:
                masks = [mask, mask, None, update, update]
                fast = compiled.lstm_forward(xp, w, b, h0, c0, *masks, onednn)
                generic = compiled.lstm_forward_generic(xp, w, b, h0, c0, *masks, onednn)
                hidden_seq, cells, gate_values, tanh_cells = generic
                args = (grad, None, w, h0, c0, gate_values, cells, tanh_cells, hidden_seq, *masks, True, onednn)
                backward = "lstm_backward"
            else:
                masks = [mask, mask, update]
                fast = compiled.gru_forward(xp, w, b, h0, *masks, onednn)
                generic = compiled.gru_forward_generic(xp, w, b, h0, *masks, onednn)
                hidden_seq, activations, hidden_n = generic
                args = (grad, w, h0, activations, hidden_n, hidden_seq, *masks, True, onednn)
                backward = "gru_backward"
            for a, e in zip(fast, generic):
                torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
            for a, e in zip(getattr(compiled, backward)(*args), getattr(compiled, backward + "_generic")(*args)):
                torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch, hidden", [(1, 3), (7, 9), (13, 33), (6, 40)])
def test_the_panel_product_equals_a_plain_matrix_product(compiled, batch, hidden):
    """float32 CPU products of the loops (onednn=True) run the packed panel kernel: 6-row blocks with
    ragged rows left over, 32-column panels with ragged columns, the GRU's bias folded in; against
    the same loops on at::mm (onednn=False)."""
    if not fused._ONEDNN_LINEAR:
        pytest.skip("torch was built without oneDNN")
    generator = torch.Generator().manual_seed(5)
    make = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    steps = 4
    for gates, forward, backward in ((4, "lstm_forward", "lstm_backward"), (3, "gru_forward", "gru_backward")):
        xp, w, b, h0 = make(steps, batch, gates * hidden), make(gates * hidden, hidden) * 0.3, \
            make(gates * hidden), make(batch, hidden)
        state = (h0, make(batch, hidden)) if gates == 4 else (h0,)
        masks = [None] * (5 if gates == 4 else 3)
        panel = getattr(compiled, forward)(xp, w, b, *state, *masks, True)
        plain = getattr(compiled, forward)(xp, w, b, *state, *masks, False)
        for a, e in zip(panel, plain):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
        grad = make(steps, batch, hidden)
        if gates == 4:
            hidden_seq, cells, gate_values, tanh_cells = plain
            args = (grad, None, w, h0, state[1], gate_values, cells, tanh_cells, hidden_seq, *masks, True)
        else:
            hidden_seq, activations, hidden_n = plain
            args = (grad, w, h0, activations, hidden_n, hidden_seq, *masks, True)
        for a, e in zip(getattr(compiled, backward)(*args, True), getattr(compiled, backward)(*args, False)):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


def test_gaussian_noise_is_standard_normal_seeded_and_independent_of_threads(compiled):
    """add_gaussian_noise(W, σ) = W + σε with ε ~ N(0, 1) from Box-Muller on Philox draws: its moments,
    a Kolmogorov-Smirnov test against the normal CDF, pairs uncorrelated, seeded by torch's generator,
    the same with 1 and 2 threads (blocks of independent subsequences), the weight added exactly."""
    from scipy import stats

    weight = torch.linspace(-1, 1, 300_001)
    torch.manual_seed(3)
    noisy = compiled.add_gaussian_noise(weight, 0.5)
    z = ((noisy - weight) / 0.5).double()
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert abs(stats.skew(z.numpy())) < 0.02 and abs(stats.kurtosis(z.numpy())) < 0.05
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert abs(torch.corrcoef(torch.stack([z[0:-1:2], z[1::2]]))[0, 1].item()) < 0.01  # the two of a pair
    assert z.abs().max().item() < 5.8  # 24-bit uniforms: |z| ≤ sqrt(48 ln 2)
    for count in (1, 2):
        with _threads(count):
            torch.manual_seed(3)
            assert torch.equal(compiled.add_gaussian_noise(weight, 0.5), noisy)
    assert not torch.equal(compiled.add_gaussian_noise(weight, 0.5), noisy)  # a new key every call
    exact = compiled.add_gaussian_noise(weight.double(), 0.0)
    assert torch.equal(exact, weight.double())


def test_gaussian_noise_of_the_dispatched_loop_is_the_portable_loops(compiled):
    """The AVX2 sampler (where this CPU has it) pairs the same draws into the same Box-Muller values
    as the loop that runs everywhere: equal up to rounding, at every position of a block and past
    it (sizes that end inside a group of 32 draws, and blocks split over threads)."""
    for size in (1, 31, 33, 16_384 + 45, 100_003):
        weight = torch.randn(size)
        torch.manual_seed(11)
        dispatched = compiled.add_gaussian_noise(weight, 0.3)
        torch.manual_seed(11)
        portable = compiled.add_gaussian_noise(weight, 0.3, True)
        torch.testing.assert_close(dispatched, portable, rtol=0, atol=1e-5)
        assert not torch.equal(dispatched, weight)


def _philox4x32_10(counter, key):
    """Philox4x32-10 (Salmon et al., SC 2011) written from its definition, as the reference."""
    mask = 0xFFFFFFFF
    c, k = list(counter), list(key)
    for _ in range(10):
        product_a, product_b = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(product_b >> 32) ^ c[1] ^ k[0], product_b & mask, (product_a >> 32) ^ c[3] ^ k[1], product_a & mask]
        k = [(k[0] + 0x9E3779B9) & mask, (k[1] + 0xBB67AE85) & mask]
    return c


@pytest.mark.parametrize("portable", [False, True], ids=["dispatched", "portable"])
def test_philox_draws_follow_the_published_generator(compiled, portable):
    """Both the loop that runs everywhere and the one this CPU dispatches to (AVX2 where it has it)."""
    # Known-answer test of Random123 for counter 0, key 0.
    assert compiled.philox_draws(0, 0, 4, portable).tolist() == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    key, block = 0x0123456789ABCDEF, 7
    draws = compiled.philox_draws(key, block, 70, portable).tolist()  # 17 whole counters and a partial one
    expected = []
    for group in range(18):
        expected += _philox4x32_10([group, 0, block, 0], [key & 0xFFFFFFFF, key >> 32])
    assert draws == expected[:70]


def test_the_dispatched_philox_draws_are_the_portable_ones(compiled):
    for key, block in [(0, 0), (0xFEDCBA9876543210, 3), (12345, 0xFFFFFFFF00000001)]:
        assert torch.equal(compiled.philox_draws(key, block, 16384), compiled.philox_draws(key, block, 16384, True))


def test_bernoulli_mask_has_the_asked_probability_and_values(compiled):
    for keep, kept in ((0.3, 1 / 0.3), (0.95, 1.0)):
        mask = compiled.bernoulli_mask([50, 40, 100], keep, kept, torch.float32)
        assert mask.shape == (50, 40, 100) and mask.dtype == torch.float32
        values = mask.unique().tolist()
        assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(kept)
        share = (mask > 0).double().mean().item()
        sigma = (keep * (1 - keep) / mask.numel()) ** 0.5
        assert abs(share - keep) < 6 * sigma, (share, keep)
    assert compiled.bernoulli_mask([1000], 1.0, 1.0, torch.float64).eq(1).all()
    assert compiled.bernoulli_mask([1000], 0.0, 1.0, torch.float64).eq(0).all()
    with pytest.raises(RuntimeError, match="keep_probability"):
        compiled.bernoulli_mask([3], 1.5, 1.0, torch.float32)


def test_bernoulli_mask_is_seeded_by_torch_and_independent_of_threads(compiled):
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(5)
        torch.set_num_threads(1)
        first = compiled.bernoulli_mask([3, 32, 1000], 0.5, 1.0, torch.float32)  # several Philox blocks
        again = compiled.bernoulli_mask([3, 32, 1000], 0.5, 1.0, torch.float32)
        torch.manual_seed(5)
        torch.set_num_threads(2)
        replay = compiled.bernoulli_mask([3, 32, 1000], 0.5, 1.0, torch.float32)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, replay)
    assert not torch.equal(first, again)
    # Blocks are independent streams: no block repeats another.
    blocks = first.flatten()[: 5 * 16384].view(5, 16384)
    assert all(not torch.equal(blocks[i], blocks[j]) for i in range(5) for j in range(i + 1, 5))


@pytest.mark.parametrize("count", [5, 70, 16384 + 37])
@pytest.mark.parametrize("keep", [0.0, 0.3, 1.0])
def test_float32_masks_threshold_the_same_draws_as_float64_ones(compiled, keep, count):
    """float32 masks are thresholded in the sampler's registers (AVX2 where the CPU has it), float64
    ones from the stored draws: from one seed the two agree element for element, a last partial group
    of draws included, and a mask is the start of a longer one drawn with the same key."""
    torch.manual_seed(11)
    single = compiled.bernoulli_mask([count], keep, 2.0, torch.float32)
    torch.manual_seed(11)
    double = compiled.bernoulli_mask([count], keep, 2.0, torch.float64)
    torch.manual_seed(11)
    longer = compiled.bernoulli_mask([count + 100], keep, 2.0, torch.float32)
    assert torch.equal(single.double(), double) and torch.equal(longer[:count], single)
    assert set(single.unique().tolist()) <= {0.0, 2.0}


def test_fast_path_reads_a_batch_major_input_projection_in_place(compiled):
    """recurrent_batchnorm hands its loop a (steps, batch, gates) view of batch-major memory."""
    xp, w, b, h0, c0 = _inputs(4, seed=4)
    batch_major = xp.transpose(0, 1).contiguous().transpose(0, 1)
    assert not batch_major.is_contiguous()
    masks = [MASK_SETS["per-step"].get(k) for k in LSTM_MASKS]
    for strided, plain in zip(compiled.lstm_forward(batch_major, w, b, h0, c0, *masks, False),
                              compiled.lstm_forward(xp, w, b, h0, c0, *masks, False)):
        assert torch.equal(strided, plain)
    gamma_h, gamma_c, beta_c = torch.full((4 * H,), 0.3), torch.full((H,), 0.2), torch.zeros(H)
    for strided, plain in zip(
            compiled.batchnorm_lstm_forward(batch_major, w, b, h0, c0, gamma_h, gamma_c, beta_c, None, 1e-5, *masks, False),
            compiled.batchnorm_lstm_forward(xp, w, b, h0, c0, gamma_h, gamma_c, beta_c, None, 1e-5, *masks, False)):
        assert torch.equal(strided, plain)
    xp3, w3, b3, h03, _ = _inputs(3, seed=5)
    gru_masks = [MASK_SETS["per-step"].get(k) for k in ("hidden_input", "candidate", "hidden_update")]
    for strided, plain in zip(compiled.gru_forward(xp3.transpose(0, 1).contiguous().transpose(0, 1), w3, b3, h03,
                                                   *gru_masks, False),
                              compiled.gru_forward(xp3, w3, b3, h03, *gru_masks, False)):
        assert torch.equal(strided, plain)
    xp1, w1, b1, h01, _ = _inputs(1, seed=6)
    assert torch.equal(compiled.rnn_forward(xp1.transpose(0, 1).contiguous().transpose(0, 1), w1, b1, h01, *gru_masks,
                                            False),
                       compiled.rnn_forward(xp1, w1, b1, h01, *gru_masks, False))


@pytest.mark.skipif(not torch.backends.openmp.is_available(), reason="torch runs its threads without OpenMP")
def test_the_loops_parallel_for_runs_on_the_threads_torch_is_given(compiled):
    """The build has OpenMP: ATen's at::parallel_for is inline, and compiled without -fopenmp every
    parallel_for in the loops ran on one thread, whatever torch.set_num_threads said."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert compiled.parallel_threads(16) == 2
        torch.set_num_threads(1)
        assert compiled.parallel_threads(16) == 1
    finally:
        torch.set_num_threads(threads)
