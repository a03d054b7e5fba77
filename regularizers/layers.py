"""Drop-in regularized versions of ``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``.

Same constructor arguments, parameter names and layout (PyTorch's gate order), forward
signature and return values, so a torch state dict loads and, with no regularizer, the
outputs equal torch's. ``regularizers=`` takes instances, registered names or spec strings.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from .base import LSTM_ONLY_SITES, MASK_SITES, LayerOutputs, Regularizer, SequenceContext
from .fused import fused_recurrence, project_inputs
from .reference import reference_recurrence

RegularizerLike = Regularizer | str
# Training forwards with untaken penalty terms after which a layer warns (their graphs are kept).
_PENDING_WARNING = 100


class RegularizedRecurrent(nn.Module):
    """Shared machinery of the three layers; use ``RegularizedLSTM``, ``RegularizedGRU`` or ``RegularizedRNN``."""

    cell_type: ClassVar[str]
    gate_count: ClassVar[int]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 regularizers: Iterable[RegularizerLike] | RegularizerLike | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: {arg} must be a positive integer, got {value!r}")
        for arg, value in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: {arg} must be True or False, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        if bidirectional:
            raise ValueError(f"{name}: bidirectional layers are not supported (a regularized recurrence runs "
                             "forward in time); use two layers and flip the input yourself")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} acts between layers and has no effect with num_layers=1; "
                          "for recurrent dropout use regularizers=['recurrent_dropout']", stacklevel=2)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = False
        # The fused loop is used whenever possible; tests and benchmarks flip this to compare, and
        # REGBENCH_REFERENCE_LOOP=1 flips it for every layer (the step-by-step autograd loop).
        self.use_fused = not _reference_loop_requested()

        factory = {"device": device, "dtype": dtype}
        gates = self.gate_count * hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(gates, layer_input, **factory)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(gates, hidden_size, **factory)))
            if bias:
                self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(gates, **factory)))
                self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(gates, **factory)))
        self.reset_parameters()

        self.regularizers = nn.ModuleList(self._resolve(regularizers))
        for regularizer in self.regularizers:
            regularizer.bind(self)
        # The penalty terms of every training forward since ``penalty(model)`` last took them.
        self.pending_penalty: torch.Tensor | None = None
        self._pending_forwards = 0

    # -- construction -------------------------------------------------------------------------
    def _resolve(self, regularizers) -> list[Regularizer]:
        if regularizers is None:
            return []
        if isinstance(regularizers, (str, Regularizer)):
            regularizers = [regularizers]
        resolved = []
        for item in regularizers:
            if not isinstance(item, (str, Regularizer)):
                raise TypeError(f"regularizers= takes Regularizer instances, names or spec strings, got {item!r}")
            regularizer = registry.build(item)
            regularizer.check_cell_type(self.cell_type)
            if regularizer.name != "none":
                resolved.append(regularizer)
        return resolved

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters(recurse=False):
            nn.init.uniform_(weight, -bound, bound)

    def flatten_parameters(self) -> None:
        """Present for drop-in compatibility with ``torch.nn.LSTM``; nothing to do here."""

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout:g}"
        return text

    # -- forward ------------------------------------------------------------------------------
    def forward(self, input: torch.Tensor, hx=None):
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError(f"{type(self).__name__} does not take PackedSequence input; pad the batch instead")
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected input of 2 (unbatched) or 3 dimensions, "
                             f"got shape {tuple(input.shape)}")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        if x.size(-1) != self.input_size:
            raise ValueError(f"{type(self).__name__}: input has {x.size(-1)} features, expected "
                             f"input_size={self.input_size}")
        if x.size(0) == 0:
            raise ValueError(f"{type(self).__name__}: the input sequence has no time steps; a recurrent layer "
                             "needs at least one")
        if x.dtype != self.weight_ih_l0.dtype:
            raise TypeError(f"{type(self).__name__}: input has dtype {x.dtype} but the layer's parameters are "
                            f"{self.weight_ih_l0.dtype}; convert one to the other (input.to(...) or layer.to(...))")
        h0, c0 = self._initial_state(hx, x, unbatched)

        final_hidden, final_cells, penalties = [], [], []
        for layer in range(self.num_layers):
            hidden, last_cell, penalty = self._run_layer(layer, x, h0[layer], None if c0 is None else c0[layer])
            final_hidden.append(hidden[-1])
            if last_cell is not None:
                final_cells.append(last_cell)
            if penalty is not None:
                penalties.append(penalty)
            x = hidden
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        if penalties:
            self._add_penalty(torch.stack(penalties).sum())

        output = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        h_n = torch.stack(final_hidden)
        c_n = torch.stack(final_cells) if final_cells else None
        if unbatched:
            h_n = h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        return output, ((h_n, c_n) if self.cell_type == "lstm" else h_n)

    def _add_penalty(self, term: torch.Tensor) -> None:
        """Keep this forward's penalty until ``penalty(model)`` takes it, so that none is lost."""
        self.pending_penalty = term if self.pending_penalty is None else self.pending_penalty + term
        self._pending_forwards += 1
        if self._pending_forwards == _PENDING_WARNING:
            warnings.warn(f"{type(self).__name__}: {_PENDING_WARNING} training forwards have added penalty terms "
                          "that regularizers.penalty(model) has not taken; each keeps its autograd graph until "
                          "it is taken (add penalty(model) to the loss, or run these forwards in eval mode)",
                          RuntimeWarning, stacklevel=3)

    def take_penalty(self) -> torch.Tensor | None:
        """The sum of the penalty terms since the last call (None if there are none), and forget them."""
        term, self.pending_penalty, self._pending_forwards = self.pending_penalty, None, 0
        return term

    def _initial_state(self, hx, x: torch.Tensor, unbatched: bool):
        shape = (self.num_layers, x.size(1), self.hidden_size)
        name = type(self).__name__
        if self.cell_type == "lstm":
            if hx is None:
                zeros = x.new_zeros(shape)
                return zeros, zeros
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise ValueError(f"{name}: hx must be a tuple (h_0, c_0)")
            if not all(isinstance(s, torch.Tensor) for s in hx):
                raise ValueError(f"{name}: hx must be a tuple (h_0, c_0) of tensors")
            states = [s.unsqueeze(1) if unbatched else s for s in hx]
        else:
            if hx is None:
                return x.new_zeros(shape), None
            if not isinstance(hx, torch.Tensor):
                raise ValueError(f"{name}: hx must be one tensor h_0, got a {type(hx).__name__}; only an LSTM "
                                 "takes a pair (h_0, c_0)")
            states = [hx.unsqueeze(1) if unbatched else hx]
        for state in states:
            if state.dtype != x.dtype:
                raise TypeError(f"{name}: the initial state has dtype {state.dtype} but the input is {x.dtype}; "
                                "give both the same dtype")
            if tuple(state.shape) != shape:
                raise ValueError(f"{name}: expected hidden state of shape {shape}, got {tuple(state.shape)}")
        return states[0], (states[1] if len(states) == 2 else None)

    def _weights(self, layer: int) -> dict[str, torch.Tensor | None]:
        return {kind: getattr(self, f"{kind}_l{layer}", None)
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}

    def _context(self, layer: int, x: torch.Tensor) -> SequenceContext:
        return SequenceContext(
            cell_type=self.cell_type, layer=layer, num_layers=self.num_layers, steps=x.size(0),
            batch_size=x.size(1), input_size=x.size(2), hidden_size=self.hidden_size,
            training=self.training, device=x.device, dtype=x.dtype)

    def _masks(self, ctx: SequenceContext) -> dict[str, torch.Tensor]:
        """Ask every regularizer for its masks and multiply those that meet on the same site."""
        combined: dict[str, torch.Tensor] = {}
        for regularizer in self.regularizers:
            for site, mask in regularizer.masks(ctx).items():
                if site not in MASK_SITES:
                    raise ValueError(f"regularizer {regularizer.name!r} returned a mask for unknown site "
                                     f"{site!r}; valid sites: {', '.join(MASK_SITES)}")
                if site in LSTM_ONLY_SITES and ctx.cell_type != "lstm":
                    raise ValueError(f"regularizer {regularizer.name!r} returned a {site!r} mask, which only "
                                     "LSTM layers have")
                if mask.dim() != 3 or mask.size(0) not in (1, ctx.steps):
                    raise ValueError(f"regularizer {regularizer.name!r}: mask for {site!r} has shape "
                                     f"{tuple(mask.shape)}; expected (steps or 1, batch or 1, units or 1)")
                mask = mask.to(device=ctx.device, dtype=ctx.dtype)  # the loops compute in the layer's dtype
                combined[site] = mask if site not in combined else combined[site] * mask
        return combined

    def _needs_cells(self) -> bool:
        """Whether a regularizer reads every step's cell, which torch's kernels don't return."""
        return self.cell_type == "lstm" and any(r.needs_cells for r in self.regularizers)

    def _run_layer(self, layer: int, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None):
        """One layer over the sequence: returns h_1..h_T, the last cell (LSTM) and the penalty."""
        ctx = self._context(layer, x)
        masks = self._masks(ctx)
        weights = self._weights(layer)
        for regularizer in self.regularizers:
            weights = regularizer.transform_weights(weights, ctx)
        if "input" in masks:
            x = x * masks["input"]
        hidden, cells, last_cell = self._recurrence(x, weights, h0, c0, masks, ctx)

        penalty = None
        # A forward that autograd does not record (torch.no_grad) adds no penalty: nothing could learn from it.
        if self.regularizers and torch.is_grad_enabled():
            outputs = LayerOutputs(hidden=hidden, cells=cells)
            terms = [p for r in self.regularizers if (p := r.penalty(outputs, ctx)) is not None]
            penalty = torch.stack(terms).sum() if terms else None
        return hidden, last_cell, penalty

    def _recurrence(self, x, weights, h0, c0, masks, ctx):
        """Pick the loop: torch's kernel, the fused loop, a regularizer's own, or the reference."""
        changers = [r for r in self.regularizers if r.changes_cell]
        if not changers and self.use_fused and not set(masks) - {"input"} and not self._needs_cells():
            # Nothing acts inside the recurrence: torch's own fused kernel computes exactly it.
            return _torch_recurrence(self.cell_type, x, weights, h0, c0, self.training)
        # The fused loops give masks no gradient: a mask that needs one (a learned rate) takes the
        # autograd loop. The input mask is applied outside the loops, by autograd, in every case.
        fused = self.use_fused and not _needs_grad(m for site, m in masks.items() if site != "input")
        if not changers:
            # One matrix product for the input projections of all steps, outside the loop.
            project = project_inputs if fused else F.linear
            xp = project(x, weights["weight_ih"], weights["bias_ih"])
            loop = fused_recurrence if fused else reference_recurrence
            hidden, cells = loop(self.cell_type, xp, weights["weight_hh"], weights["bias_hh"], h0, c0, masks)
            return hidden, cells, None if cells is None else cells[-1]

        def normalize(site: str, value: torch.Tensor, step: int | None) -> torch.Tensor:
            for regularizer in changers:
                value = regularizer.normalize(site, value, step, ctx)
            return value

        own_loop = getattr(changers[0], "fused_recurrence", None) if len(changers) == 1 else None
        if fused and own_loop is not None:
            # The regularizer's own loop runs the whole layer, input projection included, so that
            # it can lay the projection out in memory the way its normalization wants it.
            hidden, cells = own_loop(x, weights, h0, c0, masks, ctx)
            return hidden, cells, None if cells is None else cells[-1]
        xp = normalize("input_projection", F.linear(x, weights["weight_ih"], None), None)
        if weights["bias_ih"] is not None:
            xp = xp + weights["bias_ih"]
        hidden, cells = reference_recurrence(self.cell_type, xp, weights["weight_hh"], weights["bias_hh"],
                                             h0, c0, masks, normalize)
        return hidden, cells, None if cells is None else cells[-1]


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _reference_loop_requested() -> bool:
    return os.environ.get("REGBENCH_REFERENCE_LOOP", "0").strip().lower() not in ("", "0", "false", "no", "off")


def _torch_recurrence(cell_type: str, x: torch.Tensor, weights: dict, h0: torch.Tensor, c0: torch.Tensor | None,
                      training: bool) -> tuple[torch.Tensor, None, torch.Tensor | None]:
    """One layer through torch's fused kernel (oneDNN on the CPU, cuDNN on a GPU).

    Returns the hidden states, no cell sequence (the kernel keeps it), and the last cell.
    """
    has_bias = weights["bias_ih"] is not None
    params = [weights["weight_ih"], weights["weight_hh"]] + ([weights["bias_ih"], weights["bias_hh"]] if has_bias else [])
    state = h0.unsqueeze(0)
    args = (params, has_bias, 1, 0.0, training, False, False)
    if cell_type == "lstm":
        output, _, last_cell = torch._VF.lstm(x, (state, c0.unsqueeze(0)), *args)
        return output, None, last_cell[0]
    kernel = torch._VF.gru if cell_type == "gru" else torch._VF.rnn_tanh
    return kernel(x, state, *args)[0], None, None


class RegularizedLSTM(RegularizedRecurrent):
    """``torch.nn.LSTM`` with regularizers: ``RegularizedLSTM(64, 256, regularizers=["zoneout"])``."""

    cell_type = "lstm"
    gate_count = 4


class RegularizedGRU(RegularizedRecurrent):
    """``torch.nn.GRU`` with regularizers."""

    cell_type = "gru"
    gate_count = 3


class RegularizedRNN(RegularizedRecurrent):
    """``torch.nn.RNN`` (tanh) with regularizers."""

    cell_type = "rnn"
    gate_count = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 regularizers=None, device=None, dtype=None) -> None:
        # The same positional order as torch.nn.RNN, where nonlinearity comes fourth.
        if nonlinearity != "tanh":
            raise ValueError(f"RegularizedRNN supports nonlinearity='tanh' only, got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         regularizers, device, dtype)


def penalty(module: nn.Module) -> torch.Tensor:
    """Takes the penalty terms of every regularized layer inside ``module``: their sum over every
    training forward (with autograd recording) since the last call, which then starts again at zero.

    Zero when there are none. The training loop adds it to the loss once per optimizer step.
    """
    taken = [m.take_penalty() for m in module.modules() if isinstance(m, RegularizedRecurrent)]
    terms = [term for term in taken if term is not None]
    if terms:
        return torch.stack(terms).sum()
    reference = next(module.parameters(), None)
    return torch.zeros((), device=None if reference is None else reference.device)
