"""The private torch APIs that regularizers/torch_internals.py wraps are all still there.

A torch upgrade that removes or renames one fails here, naming the API and the torch version,
rather than somewhere inside a layer's forward pass.
"""

from __future__ import annotations

import torch

from regularizers import torch_internals


def test_every_private_torch_api_used_is_present():
    gone = torch_internals.missing()
    assert not gone, (f"torch {torch.__version__} lacks the private API(s) {', '.join(gone)} that "
                      "regularizers/torch_internals.py uses; see its docstring for what each is for and its fallback")


def test_the_wrappers_compute_what_they_stand_for():
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*shape, generator=generator) for shape in ((3, 4), (5, 4), (5,)))
    if torch_internals.onednn_available():
        packed = torch_internals.reorder_linear_weight(weight, 3)
        torch.testing.assert_close(torch_internals.linear_pointwise(x, packed, bias), x @ weight.t() + bias)
    lstm = torch.nn.LSTM(4, 2)
    inputs, h0, c0 = torch.randn(6, 3, 4), torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)
    output, last_hidden, last_cell = torch_internals.lstm_kernel(inputs, (h0, c0), list(lstm._flat_weights), True,
                                                                 False)
    expected, (expected_hidden, expected_cell) = lstm(inputs, (h0, c0))
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(last_cell, expected_cell)


def test_the_allocation_peak_counts_what_is_held_at_once():
    def step():
        first = torch.empty(2**18)  # 1 MiB
        second = torch.empty(2**19)  # 2 MiB, while the first is held
        del first, second
        torch.empty(2**19)  # 2 MiB again, after both were freed: not a new peak

    assert torch_internals.allocation_peak(step) == 3 * 2**20
