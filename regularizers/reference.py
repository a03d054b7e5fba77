"""The plain step-by-step recurrence, written as the equations read, with autograd.

This loop is the definition that the fused loop (``fused.py``) is tested against, and the
loop used whenever a regularizer changes the cell's equations (recurrent batch
normalization). Masks follow the sites of ``base.MASK_SITES``; ``None`` means no mask.

:func:`observe_cells` lets an experiment see every step's LSTM cell as this loop computes it
(the gradient-flow experiment reads ``∂L/∂c_t`` off it).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

import torch

__all__ = ["reference_recurrence", "observe_cells", "CellObserver", "Normalize"]

Normalize = Callable[[str, torch.Tensor, int], torch.Tensor]
CellObserver = Callable[[int, torch.Tensor], None]

# A context variable, not a global: an observer in one thread (or task) sees that one's loops only.
_CELL_OBSERVER: ContextVar[CellObserver | None] = ContextVar("cell_observer", default=None)


@contextmanager
def observe_cells(observer: CellObserver) -> Iterator[None]:
    """While active, every LSTM step of :func:`reference_recurrence` calls ``observer(t, c_t)``.

    ``c_t`` is the very tensor carried to step t+1 (after zoneout's update) and, where ``h_t`` is
    computed from it (no zoneout), used by ``h_t`` too; so ``c_t.retain_grad()`` or
    ``c_t.register_hook(...)`` in the observer gives the total derivative ``∂L/∂c_t``. The observer
    must not change the tensor. Only the reference loop calls it: a layer runs it when its
    ``use_fused`` is False (or with ``REGBENCH_REFERENCE_LOOP=1``). Observers do not nest.
    """
    if _CELL_OBSERVER.get() is not None:
        raise RuntimeError("observe_cells is already active; observe with one observer at a time")
    token = _CELL_OBSERVER.set(observer)
    try:
        yield
    finally:
        _CELL_OBSERVER.reset(token)


def _at(mask: torch.Tensor | None, step: int) -> torch.Tensor | None:
    """The mask for one step: masks with a leading dimension of 1 are the same at every step."""
    if mask is None:
        return None
    return mask[step] if mask.size(0) > 1 else mask[0]


def _apply(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return value if mask is None else value * mask


def _update(previous: torch.Tensor, new: torch.Tensor, update: torch.Tensor | None) -> torch.Tensor:
    """Zoneout's ``d⊙previous + (1-d)⊙new`` written with the update mask ``u = 1 - d``."""
    return new if update is None else previous + update * (new - previous)


def reference_recurrence(cell_type: str, xp: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None,
                         h0: torch.Tensor, c0: torch.Tensor | None, masks: dict[str, torch.Tensor | None],
                         normalize: Normalize | None = None,
                         w_hr: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run one layer over a sequence.

    ``xp`` is the projected input ``W_ih (x ⊙ m_input) + b_ih`` of shape (T, B, gates*H).
    Returns the hidden states ``h_1..h_T`` and, for LSTM, the cells ``c_1..c_T``. ``w_hr`` is
    LSTM's projection (torch's ``proj_size``): ``ĥ = W_hr (o⊙tanh(ĉ))``.
    """
    hidden, cell = h0, c0
    hiddens, cells = [], []
    observer = _CELL_OBSERVER.get()
    for t in range(xp.size(0)):
        recurrent = _apply(hidden, _at(masks.get("hidden_input"), t)) @ w_hh.t()
        if normalize is not None:
            recurrent = normalize("hidden_projection", recurrent, t)
        if b_hh is not None:
            recurrent = recurrent + b_hh
        candidate_mask = _at(masks.get("candidate"), t)
        hidden_update = _at(masks.get("hidden_update"), t)

        if cell_type == "lstm":
            i, f, g, o = (xp[t] + recurrent).chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            cell_hat = f * cell + i * _apply(g, candidate_mask)
            cell_hat = _apply(cell_hat, _at(masks.get("cell"), t))
            shown = cell_hat if normalize is None else normalize("cell", cell_hat, t)
            hidden_hat = o * torch.tanh(shown)  # h uses ĉ, not the zoned-out c_t (paper, eq. 5)
            if w_hr is not None:
                hidden_hat = hidden_hat @ w_hr.t()
            cell = _update(cell, cell_hat, _at(masks.get("cell_update"), t))
            if observer is not None:
                observer(t, cell)
            cells.append(cell)
        elif cell_type == "gru":
            x_r, x_z, x_n = xp[t].chunk(3, dim=1)
            h_r, h_z, h_n = recurrent.chunk(3, dim=1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = _apply(torch.tanh(x_n + r * h_n), candidate_mask)
            hidden_hat = (1 - z) * n + z * hidden
        elif cell_type == "rnn":
            hidden_hat = _apply(torch.tanh(xp[t] + recurrent), candidate_mask)
        else:
            raise ValueError(f"unknown cell type {cell_type!r}")
        hidden = _update(hidden, hidden_hat, hidden_update)
        hiddens.append(hidden)
    return torch.stack(hiddens), (torch.stack(cells) if cells else None)
