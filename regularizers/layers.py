"""Drop-in regularized versions of ``torch.nn.LSTM``, ``torch.nn.GRU`` and ``torch.nn.RNN``.

Same constructor arguments (``bidirectional``, LSTM's ``proj_size``), parameter names and
layout (PyTorch's gate order), forward signature (``PackedSequence`` included) and return
values, so a torch state dict loads and, with no regularizer, the outputs equal torch's.
``regularizers=`` takes instances, registered names or spec strings; ``from_torch`` converts
an existing torch layer.

Each direction of each layer is one recurrence, run forward in time over its own input (the
reverse direction over the input reversed, per sequence for packed input) with its own masks.
Packed input runs on the padded (steps, batch) grid: past its length a sequence's update masks
are 0, so its state stays what it was at its length, and its output there is zero, as torch's.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import registry, torch_internals
from .base import LSTM_ONLY_SITES, MASK_SITES, LayerOutputs, Regularizer, SequenceContext
from .fused import compact_masks, fused_recurrence, project_inputs
from .fused_common import masked
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
                 device=None, dtype=None, proj_size: int = 0) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: {arg} must be a positive integer, got {value!r}")
        for arg, value in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: {arg} must be True or False, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"{name}: proj_size must be a non-negative integer, got {proj_size!r}")
        if proj_size and self.cell_type != "lstm":
            raise ValueError(f"{name}: proj_size is only supported for LSTM layers, as in torch")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size ({proj_size}) must be smaller than hidden_size ({hidden_size})")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} acts between layers and has no effect with num_layers=1; "
                          "for recurrent dropout use regularizers=['recurrent_dropout']", stacklevel=2)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        # The fused loop is used whenever possible; tests and benchmarks flip this to compare, and
        # REGBENCH_REFERENCE_LOOP=1 flips it for every layer (the step-by-step autograd loop).
        self.use_fused = not _reference_loop_requested()

        factory = {"device": device, "dtype": dtype}
        gates, state = self.gate_count * hidden_size, self.state_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else state * self.num_directions
            for direction in range(self.num_directions):
                # torch's names, shapes and order, so that its state dicts load
                shapes = {"weight_ih": (gates, layer_input), "weight_hh": (gates, state)}
                if bias:
                    shapes.update(bias_ih=(gates,), bias_hh=(gates,))
                if proj_size:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                for kind, shape in shapes.items():
                    self.register_parameter(_name(kind, layer, direction), nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

        self.regularizers = nn.ModuleList(self._resolve(regularizers))
        for regularizer in self.regularizers:
            regularizer.bind(self)
        # The penalty terms of every training forward since ``penalty(model)`` last took them.
        self.pending_penalty: torch.Tensor | None = None
        self._pending_forwards = 0

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def state_size(self) -> int:
        """Units of the hidden state h: ``proj_size`` for a projected LSTM, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    @classmethod
    def from_torch(cls, module: nn.RNNBase, regularizers: Iterable[RegularizerLike] | RegularizerLike | None = None):
        """A regularized layer with the configuration, device, dtype and (copied) weights of a torch layer:
        ``RegularizedLSTM.from_torch(nn.LSTM(64, 256), regularizers=["zoneout"])``."""
        expected = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cls.cell_type]
        if not isinstance(module, expected):
            raise TypeError(f"{cls.__name__}.from_torch takes a torch.nn.{expected.__name__}, got "
                            f"{type(module).__name__}")
        if getattr(module, "nonlinearity", "tanh") != "tanh":
            raise ValueError(f"{cls.__name__} supports nonlinearity='tanh' only, got {module.nonlinearity!r}")
        weight = module.weight_ih_l0
        kwargs = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                      dropout=module.dropout, bidirectional=module.bidirectional, regularizers=regularizers,
                      device=weight.device, dtype=weight.dtype)
        if module.proj_size:
            kwargs["proj_size"] = module.proj_size
        with warnings.catch_warnings():  # torch warned already about dropout with one layer
            warnings.simplefilter("ignore", UserWarning)
            layer = cls(module.input_size, module.hidden_size, **kwargs)
        layer.load_state_dict(module.state_dict(), strict=True)
        return layer.train(module.training)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        own = prefix + "regularizers."
        if not any(key.startswith(own) for key in state_dict):
            # A torch.nn.LSTM / GRU / RNN state dict: the regularizers' own parameters and buffers
            # (batch-norm scales, a static zoneout mask) keep their values, and strict loading passes.
            for key, value in self.regularizers.state_dict().items():
                state_dict[own + key] = value
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        if self.bidirectional:
            text += ", bidirectional=True"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        return text

    # -- forward ------------------------------------------------------------------------------
    # The layer runs eagerly under torch.compile (a graph break): its loops are hand-written
    # autograd Functions and compiled C++ that the compiler can't trace.
    @torch.compiler.disable
    def forward(self, input: torch.Tensor | PackedSequence, hx=None):
        packed = input if isinstance(input, PackedSequence) else None
        lengths = None
        if packed is not None:  # torch ignores batch_first for packed input, and so do we
            x, lengths = nn.utils.rnn.pad_packed_sequence(packed)  # (steps, batch, features), the caller's order
            unbatched = False
        else:
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
        valid = None
        if lengths is not None:
            changers = [r.name for r in self.regularizers if r.changes_cell]
            if changers:
                raise ValueError(f"{type(self).__name__}: {changers[0]} changes the cell's equations and does not "
                                 "take PackedSequence input (its batch statistics would count the padding); pad "
                                 "the batch to sequences of equal length instead")
            # 1 up to each sequence's length, 0 past it: the update mask that freezes the state there.
            steps = torch.arange(x.size(0)).unsqueeze(1)
            valid = (steps < lengths).to(device=x.device, dtype=x.dtype).unsqueeze(-1)

        final_hidden, final_cells, penalties = [], [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction  # torch's order of h_n
                inputs = x if direction == 0 else _reverse(x, lengths)
                hidden, last_cell, penalty = self._run_layer(layer, direction, inputs, h0[k],
                                                             None if c0 is None else c0[k], valid, lengths)
                final_hidden.append(hidden[-1])  # frozen past each length: the state at the length
                if last_cell is not None:
                    final_cells.append(last_cell)
                if penalty is not None:
                    penalties.append(penalty)
                if valid is not None:
                    hidden = hidden * valid  # torch's output is zero past each length
                outputs.append(hidden if direction == 0 else _reverse(hidden, lengths))
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        if penalties:
            self._add_penalty(torch.stack(penalties).sum())

        if packed is not None:
            output = _repack(x, lengths, packed)
        else:
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

    def __getstate__(self):
        # A copy (copy.deepcopy, pickle) starts with no untaken penalty: the terms belong to this
        # layer's graphs, and autograd can copy neither.
        state = super().__getstate__().copy()
        state.update(pending_penalty=None, _pending_forwards=0)
        return state

    def take_penalty(self) -> torch.Tensor | None:
        """The sum of the penalty terms since the last call (None if there are none), and forget them."""
        term, self.pending_penalty, self._pending_forwards = self.pending_penalty, None, 0
        return term

    def _initial_state(self, hx, x: torch.Tensor, unbatched: bool):
        recurrences = self.num_layers * self.num_directions
        shape = (recurrences, x.size(1), self.state_size)
        cell_shape = (recurrences, x.size(1), self.hidden_size)
        name = type(self).__name__
        if self.cell_type == "lstm":
            if hx is None:
                return x.new_zeros(shape), x.new_zeros(cell_shape)
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
        for state, expected in zip(states, (shape, cell_shape)):
            if tuple(state.shape) != expected:
                raise ValueError(f"{name}: expected hidden state of shape {expected}, got {tuple(state.shape)}")
        return states[0], (states[1] if len(states) == 2 else None)

    def _weights(self, layer: int, direction: int = 0) -> dict[str, torch.Tensor | None]:
        return {kind: getattr(self, _name(kind, layer, direction), None)
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}

    def _context(self, layer: int, x: torch.Tensor, direction: int = 0) -> SequenceContext:
        return SequenceContext(
            cell_type=self.cell_type, layer=layer, num_layers=self.num_layers, steps=x.size(0),
            batch_size=x.size(1), input_size=x.size(2), hidden_size=self.hidden_size,
            training=self.training, device=x.device, dtype=x.dtype, direction=direction,
            num_directions=self.num_directions, state_size=self.state_size)

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
                units = {"input": ctx.input_size, "hidden_input": ctx.state_size,
                         "hidden_update": ctx.state_size}.get(site, ctx.hidden_size)
                if (mask.dim() != 3 or mask.size(0) not in (1, ctx.steps) or mask.size(1) not in (1, ctx.batch_size)
                        or mask.size(2) not in (1, units)):
                    raise ValueError(f"regularizer {regularizer.name!r}: mask for {site!r} has shape "
                                     f"{tuple(mask.shape)}; expected ({ctx.steps} or 1, {ctx.batch_size} or 1, "
                                     f"{units} or 1), i.e. (steps, batch, units)")
                mask = mask.to(device=ctx.device, dtype=ctx.dtype)  # the loops compute in the layer's dtype
                combined[site] = mask if site not in combined else combined[site] * mask
        return combined

    def _needs_cells(self) -> bool:
        """Whether a regularizer reads every step's cell, which torch's kernels don't return."""
        return self.cell_type == "lstm" and any(r.needs_cells for r in self.regularizers)

    def _run_layer(self, layer: int, direction: int, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None,
                   valid: torch.Tensor | None, lengths: torch.Tensor | None):
        """One direction of one layer over the sequence (in its own time order): returns h_1..h_T, the
        last cell (LSTM) and the penalty. ``valid`` (steps, batch, 1) is 0 past each packed sequence's
        length, where it freezes the state through the update masks."""
        ctx = self._context(layer, x, direction)
        masks = self._masks(ctx)
        if valid is not None:
            for site in ("hidden_update", "cell_update") if self.cell_type == "lstm" else ("hidden_update",):
                masks[site] = valid if site not in masks else masks[site] * valid
        weights = self._weights(layer, direction)
        for regularizer in self.regularizers:
            weights = regularizer.transform_weights(weights, ctx)
        hidden, cells, last_cell = self._recurrence(x, weights, h0, c0, masks, ctx)

        penalty = None
        # A forward that autograd does not record (torch.no_grad) adds no penalty: nothing could learn from it.
        if self.regularizers and torch.is_grad_enabled():
            outputs = LayerOutputs(hidden=hidden, cells=cells, lengths=lengths)
            terms = [p for r in self.regularizers if (p := r.penalty(outputs, ctx)) is not None]
            penalty = torch.stack(terms).sum() if terms else None
        return hidden, last_cell, penalty

    def _recurrence(self, x, weights, h0, c0, masks, ctx):
        """Pick the loop: torch's kernel, the fused loop, a regularizer's own, or the reference."""
        changers = [r for r in self.regularizers if r.changes_cell]
        input_mask = masks.get("input")
        if not changers and self.use_fused and not set(masks) - {"input"} and not self._needs_cells():
            # Nothing acts inside the recurrence: torch's own fused kernel computes exactly it.
            return _torch_recurrence(self.cell_type, masked(x, input_mask), weights, h0, c0, self.training)
        # The fused loops give masks no gradient: a mask that needs one (a learned rate) takes the
        # autograd loop.
        w_hr = weights["weight_hr"]  # LSTM's projection (proj_size), or None
        fused = self.use_fused and not _needs_grad(m for site, m in masks.items() if site != "input")
        if not changers:
            if fused and self.cell_type == "rnn":
                # In place, before the input projection: the compiled loops' compact masks, which free
                # the float ones (this dict holds the only references to them). Only the tanh-RNN's:
                # its float masks set its peak memory above torch's, where the LSTM's and GRU's stay
                # under it (0.5-1.0x), and reading bytes cost the LSTM 3-12% of a step at the CPU tracks.
                compact_masks(masks)
            # One matrix product for the input projections of all steps, outside the loop. The fused
            # one takes the input mask (unless it is learned: autograd multiplies that one in) and
            # keeps no masked copy of x for the backward pass.
            if fused and not _needs_grad([input_mask] if input_mask is not None else []):
                xp = project_inputs(x, weights["weight_ih"], weights["bias_ih"], input_mask)
            else:
                project = project_inputs if fused else F.linear
                xp = project(masked(x, input_mask), weights["weight_ih"], weights["bias_ih"])
            args = (self.cell_type, xp, weights["weight_hh"], weights["bias_hh"], h0, c0, masks)
            loop = fused_recurrence if fused else reference_recurrence
            hidden, cells = loop(*args, w_hr=w_hr)
            return hidden, cells, None if cells is None else cells[-1]

        def normalize(site: str, value: torch.Tensor, step: int | None) -> torch.Tensor:
            for regularizer in changers:
                value = regularizer.normalize(site, value, step, ctx)
            return value

        x = masked(x, input_mask)
        own_loop = getattr(changers[0], "fused_recurrence", None) if len(changers) == 1 else None
        if fused and own_loop is not None and w_hr is None:
            # The regularizer's own loop runs the whole layer, input projection included, so that
            # it can lay the projection out in memory the way its normalization wants it. (It has
            # no projection of h: a projected LSTM takes the reference loop.)
            hidden, cells = own_loop(x, weights, h0, c0, masks, ctx)
            return hidden, cells, None if cells is None else cells[-1]
        xp = normalize("input_projection", F.linear(x, weights["weight_ih"], None), None)
        if weights["bias_ih"] is not None:
            xp = xp + weights["bias_ih"]
        hidden, cells = reference_recurrence(self.cell_type, xp, weights["weight_hh"], weights["bias_hh"],
                                             h0, c0, masks, normalize, w_hr=w_hr)
        return hidden, cells, None if cells is None else cells[-1]


def _name(kind: str, layer: int, direction: int) -> str:
    """torch's parameter name: ``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``."""
    return f"{kind}_l{layer}{'_reverse' if direction else ''}"


def _reverse(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``x`` (steps, batch, ...) reversed in time; with ``lengths``, each sequence's first
    ``lengths[b]`` steps only (the padding stays where it is). Its own inverse."""
    if lengths is None:
        return x.flip(0)
    steps = torch.arange(x.size(0)).unsqueeze(1)
    order = torch.where(steps < lengths, lengths - 1 - steps, steps).to(x.device)  # (steps, batch)
    return x.gather(0, order.view(*order.shape, *([1] * (x.dim() - 2))).expand_as(x))


def _repack(x: torch.Tensor, lengths: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """The padded output (steps, batch, features), in the caller's batch order, packed as ``like``."""
    if like.sorted_indices is not None:
        x, lengths = x.index_select(1, like.sorted_indices), lengths[like.sorted_indices.cpu()]
    inside = torch.arange(x.size(0)).unsqueeze(1) < lengths  # (steps, batch), time-major as packed data
    return PackedSequence(x[inside.to(x.device)], like.batch_sizes, like.sorted_indices, like.unsorted_indices)


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
    if weights.get("weight_hr") is not None:
        params.append(weights["weight_hr"])  # the kernel sees the projection from h_0's size
    state = h0.unsqueeze(0)
    if cell_type == "lstm":
        output, _, last_cell = torch_internals.lstm_kernel(x, (state, c0.unsqueeze(0)), params, has_bias, training)
        return output, None, last_cell[0]
    kernel = torch_internals.gru_kernel if cell_type == "gru" else torch_internals.rnn_tanh_kernel
    return kernel(x, state, params, has_bias, training)[0], None, None


class RegularizedLSTM(RegularizedRecurrent):
    """``torch.nn.LSTM`` with regularizers: ``RegularizedLSTM(64, 256, regularizers=["zoneout"])``.

    ``proj_size`` (a keyword here) is torch's: ``h_t = W_hr (o⊙tanh(ĉ_t))`` has ``proj_size`` units,
    on which the hidden-state masks act; with masks inside the recurrence it runs the fused loop's
    Python version (the compiled loops have no projection).
    """

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
                 regularizers=None, device=None, dtype=None, proj_size: int = 0) -> None:
        # The same positional order as torch.nn.RNN, where nonlinearity comes fourth.
        if nonlinearity != "tanh":
            raise ValueError(f"RegularizedRNN supports nonlinearity='tanh' only, got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         regularizers, device, dtype, proj_size)


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
