"""Every private torch API that regularizers/ uses, in one place, each with its fallback.

Private APIs can change or vanish in any torch release; kept here, an upgrade that removes one
breaks one module (and ``tests/test_torch_internals.py``, which names the API and the torch
version), not the layers. ``REQUIRED`` lists them for that test.

- ``torch._VF.lstm`` / ``gru`` / ``rnn_tanh``: torch's fused recurrent kernels (oneDNN on the
  CPU, cuDNN on a GPU) called with the layer's own weights, without building an ``nn.LSTM`` (whose
  parameters would be a second copy). The layers take this path only when no regularizer changes
  the recurrence; the fallback is the fused loops of ``fused.py`` (same equations, slower).
- ``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise``: oneDNN's inner product
  with the weight packed once into its blocked layout; ``mm`` re-packs the weight at every step,
  which at batch 32 costs half of a recurrent step. Fallback (``onednn_available()`` false): plain
  ``mm``/``addmm``, same results, slower. The compiled loops look the same two ops up by name in the
  dispatcher (``csrc/common.h``) and are only asked to when ``onednn_available()``.
- ``profile(...).profiler.kineto_results.events()`` and their ``nbytes()``: the profiler's
  allocation and free events in time order, from which ``allocation_peak`` takes the most bytes
  held at once (``regbench perf``'s CPU memory; the public summaries give each operator's own
  total, not the peak). No fallback: ``regbench perf --no-memory`` times without it.
"""

from __future__ import annotations

import torch

# (where, name): checked by tests/test_torch_internals.py against the installed torch.
REQUIRED = (
    ("torch._VF", "lstm"),
    ("torch._VF", "gru"),
    ("torch._VF", "rnn_tanh"),
    ("torch.ops.mkldnn", "_reorder_linear_weight"),
    ("torch.ops.mkldnn", "_linear_pointwise"),
)


def _find(where: str, name: str):
    namespace = torch._VF if where == "torch._VF" else torch.ops.mkldnn
    return getattr(namespace, name)


def missing() -> list[str]:
    """The private APIs of ``REQUIRED`` that this torch lacks (``where.name``)."""
    gone = []
    for where, name in REQUIRED:
        try:
            _find(where, name)
        except (AttributeError, RuntimeError):
            gone.append(f"{where}.{name}")
    return gone


def _onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") \
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


_ONEDNN = _onednn_available()


def onednn_available() -> bool:
    """Whether oneDNN's packed inner product is there (torch built with oneDNN, ops present)."""
    return _ONEDNN


def reorder_linear_weight(weight: torch.Tensor, batch: int) -> torch.Tensor:
    """``weight`` packed for oneDNN's inner product with ``batch`` rows (only if ``onednn_available()``)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, batch)


def linear_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T (+ bias)`` through oneDNN; ``weight`` plain or packed (only if ``onednn_available()``)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def lstm_kernel(x, state, params, has_bias, training):
    """torch's fused one-layer LSTM: (output, last hidden, last cell); ``state`` is (h0, c0), each (1, B, H)."""
    return torch._VF.lstm(x, state, params, has_bias, 1, 0.0, training, False, False)


def gru_kernel(x, state, params, has_bias, training):
    """torch's fused one-layer GRU: (output, last hidden)."""
    return torch._VF.gru(x, state, params, has_bias, 1, 0.0, training, False, False)


def rnn_tanh_kernel(x, state, params, has_bias, training):
    """torch's fused one-layer tanh RNN: (output, last hidden)."""
    return torch._VF.rnn_tanh(x, state, params, has_bias, 1, 0.0, training, False, False)


def allocation_peak(step) -> int:
    """The most bytes of CPU tensor memory held at once while ``step()`` runs, beyond what was held
    before it: every allocation and free through torch's allocator, counted in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recording:
        step()
    events = [event for event in recording.profiler.kineto_results.events() if event.name() == "[memory]"]
    held = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        held += event.nbytes()  # negative for a free
        peak = max(peak, held)
    return peak
