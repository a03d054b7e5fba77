"""The protocol between a regularizer and the regularized recurrent layers.

A regularizer is a small ``nn.Module`` that the layer consults once per layer and forward
pass, *before* the recurrent loop runs. It can answer in four ways, and implements only the
hooks it needs:

``masks(ctx)``
    Multiplicative masks, keyed by the site where the loop applies them (see ``MASK_SITES``).
    Each is a tensor broadcastable to ``(steps, batch, units)``: a leading dimension of 1
    means "the same at every step" (a per-sequence mask), a trailing 1 means "shared by all
    units". Masks from several regularizers on the same site are multiplied together, so
    composing regularizers needs no code. Because every mask is known before the loop, one
    fast loop serves every mask-based regularizer.
``transform_weights(weights, ctx)``
    Returns replacement weights for this forward pass (weight noise).
``penalty(outputs, ctx)``
    A scalar added to the training loss, computed from the layer's outputs (norm stabilizer).
    ``outputs.cells`` is filled only for regularizers whose ``needs_cells`` is true;
    ``outputs.lengths`` holds the sequences' lengths for packed input. The layer keeps the terms
    of every training forward until ``regularizers.penalty(model)`` takes them.
``normalize(site, value, step, ctx)``
    Changes the cell's equations themselves (recurrent batch normalization). A regularizer
    that overrides it makes the layer use the plain step-by-step loop, unless it also
    brings a fast loop of its own as a method ``fused_recurrence(x, weights, h0, c0, masks,
    ctx) -> (hidden, cells)`` that runs the whole layer from its input ``x`` (steps, batch,
    input) and its ``weights`` (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``), input
    projection included (recurrent batch normalization does).

The mask sites, in the LSTM's equations (GRU and tanh-RNN use the sites that exist for them):

====================  =====================================================================
``input``             ``x_t * m`` before the input projection (variational dropout)
``hidden_input``      ``h_{t-1} * m`` before the recurrent projection (variational dropout)
``candidate``         ``g * m``: ``ĉ = f⊙c + i⊙(g⊙m)``; GRU: ``n * m``; tanh-RNN: ``ĥ * m``
                      (recurrent dropout)
``cell``              ``ĉ * m``: ``c_t = m⊙(f⊙c + i⊙g)`` (rnnDrop; LSTM only)
``cell_update``       ``c_t = c_{t-1} + u⊙(ĉ - c_{t-1})``: u = 1 - keep (zoneout; LSTM only)
``hidden_update``     ``h_t = h_{t-1} + u⊙(ĥ - h_{t-1})`` (zoneout, stochastic depth)
====================  =====================================================================

Every mask is ``(steps or 1, batch or 1, units or 1)``: ``units`` is the layer's input width
for ``input``, the width of ``h`` (``ctx.state_size``: ``proj_size`` for a projected LSTM) for
``hidden_input`` and ``hidden_update``, and ``hidden_size`` elsewhere. It is cast to the layer's
dtype. A mask may depend on a parameter (a learned rate): the layer then runs the reference loop,
which differentiates it (the fused loops treat masks as constants).

Each direction of each layer is one recurrence: a bidirectional layer asks its regularizers
twice per layer, with ``ctx.direction`` 0 and 1, and per-recurrence state is indexed by
``ctx.index``. Packed input runs on the padded grid: masks are drawn for every
``(step, sequence)``, and the layer itself zeroes the update masks past each sequence's length.

Update masks hold the probability of *updating* (1 − zoneout probability), so that
composing two zoneout-like regularizers is again a product: a unit moves only if neither
holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from . import native
from .hyperparameters import Hyperparameter

MASK_SITES = ("input", "hidden_input", "candidate", "cell", "cell_update", "hidden_update")
CELL_TYPES = ("lstm", "gru", "rnn")
# Sites that exist only where there is a memory cell.
LSTM_ONLY_SITES = ("cell", "cell_update")


@dataclass(frozen=True)
class SequenceContext:
    """What a regularizer may know about the forward pass it is asked about."""

    cell_type: str  # "lstm" | "gru" | "rnn"
    layer: int  # index of the layer in the stack, 0 = closest to the input
    num_layers: int
    steps: int
    batch_size: int
    input_size: int  # of this layer (the previous layer's hidden size above layer 0)
    hidden_size: int
    training: bool
    device: torch.device
    dtype: torch.dtype
    direction: int = 0  # 0 forward in time, 1 the reverse direction of a bidirectional layer
    num_directions: int = 1
    state_size: int | None = None  # units of h: proj_size for a projected LSTM; None means hidden_size

    def __post_init__(self) -> None:
        if self.state_size is None:
            object.__setattr__(self, "state_size", self.hidden_size)

    @property
    def index(self) -> int:
        """This recurrence among the layer's ``num_layers * num_directions`` (torch's order of h_n):
        the index of a regularizer's per-recurrence parameters or buffers (see ``bind``)."""
        return self.layer * self.num_directions + self.direction

    def bernoulli(self, keep_probability: float, steps: int | None = None, units: int | None = None,
                  scale: bool = False) -> torch.Tensor:
        """A 0/1 mask of shape ``(steps, batch, units)`` that is 1 with ``keep_probability``.

        ``steps`` and ``units`` default to the full sizes (``hidden_size``: pass
        ``units=ctx.state_size`` for the ``hidden_input`` and ``hidden_update`` sites, which differ
        under LSTM's ``proj_size``); pass 1 to share a draw over time or units. With ``scale`` the
        kept entries are divided by ``keep_probability`` (inverted dropout, so that no rescaling is
        needed in eval).
        """
        shape = (self.steps if steps is None else steps, self.batch_size,
                 self.hidden_size if units is None else units)
        sampler = _parallel_sampler(self.device, self.dtype)
        if sampler is not None:
            # The compiled loops' parallel Philox sampler, keyed from torch's default generator
            # (so torch.manual_seed still fixes the masks): about 3x faster than the line below.
            kept = 1.0 / keep_probability if scale and keep_probability > 0 else 1.0
            return sampler(list(shape), float(keep_probability), kept, self.dtype)
        # P(U < p) = p for U ~ Uniform[0, 1); on the CPU this is ~6x faster than bernoulli_(p).
        mask = torch.rand(shape, device=self.device, dtype=self.dtype).lt_(keep_probability)
        if scale and keep_probability > 0:
            mask.div_(keep_probability)
        return mask

    def constant(self, value: float) -> torch.Tensor:
        """A mask that is the same number everywhere (the expectation used in eval)."""
        return torch.full((1, 1, 1), float(value), device=self.device, dtype=self.dtype)


def _parallel_sampler(device: torch.device, dtype: torch.dtype):
    """The native mask sampler for float32/float64 CPU masks, or None (GPU, other dtypes, no build)."""
    if torch.device(device).type != "cpu" or dtype not in (torch.float32, torch.float64):
        return None
    loops = native.loops()
    return None if loops is None else loops.bernoulli_mask


@dataclass(frozen=True)
class LayerOutputs:
    """One layer's outputs over the whole sequence, handed to ``Regularizer.penalty``."""

    hidden: torch.Tensor  # (steps, batch, hidden): h_1 .. h_T
    cells: torch.Tensor | None  # (steps, batch, hidden): c_1 .. c_T for LSTM when a regularizer needs_cells
    # For PackedSequence input, each sequence's length (batch,), on the CPU; past it the states
    # above hold the state at the length (frozen). None: every sequence has all the steps.
    lengths: torch.Tensor | None = None


class Regularizer(nn.Module):
    """Base class of every regularizer. Subclasses set the class attributes and override hooks.

    Hyperparameters are declared in ``hyperparameters`` and become attributes of the instance:
    ``Zoneout(z_cells=0.5).z_cells == 0.5``. Out-of-range values raise ``ValueError``.
    """

    name: ClassVar[str] = ""  # set by @register
    cell_types: ClassVar[tuple[str, ...]] = CELL_TYPES
    hyperparameters: ClassVar[dict[str, Hyperparameter]] = {}
    paper: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        super().__init__()
        label = self.name or type(self).__name__
        unknown = sorted(set(params) - set(self.hyperparameters))
        if unknown:
            valid = ", ".join(self.hyperparameters) or "none"
            raise ValueError(f"{label}: unknown hyperparameter(s) {', '.join(unknown)}; valid: {valid}")
        self.explicit = frozenset(params)  # the ones the user set, as opposed to defaults
        for key, spec in self.hyperparameters.items():
            value = params.get(key, spec.default)
            setattr(self, key, spec.validate(label, key, value))
        self.check()

    # -- hooks ------------------------------------------------------------------------------
    def check(self) -> None:
        """Validate combinations of hyperparameters (single values are checked already)."""

    def bind(self, layer: nn.Module) -> None:
        """Called once when attached to a layer: create per-layer parameters or buffers here.

        ``layer.cell_type``, ``layer.num_layers``, ``layer.num_directions``, ``layer.hidden_size``,
        ``layer.state_size`` (units of h) and ``layer.input_size`` are available; per-recurrence
        state is indexed by ``ctx.index`` (``num_layers * num_directions`` of them). The cell type
        was already checked.
        """

    def masks(self, ctx: SequenceContext) -> dict[str, torch.Tensor]:
        return {}

    def transform_weights(self, weights: dict[str, torch.Tensor], ctx: SequenceContext) -> dict[str, torch.Tensor]:
        return weights

    def penalty(self, outputs: LayerOutputs, ctx: SequenceContext) -> torch.Tensor | None:
        return None

    def normalize(self, site: str, value: torch.Tensor, step: int | None, ctx: SequenceContext) -> torch.Tensor:
        """Only for regularizers that change the cell's equations; see the module docstring."""
        return value

    @property
    def needs_cells(self) -> bool:
        """True if ``penalty`` reads ``outputs.cells``; otherwise the layer may skip returning them."""
        return False

    # -- derived ----------------------------------------------------------------------------
    @property
    def changes_cell(self) -> bool:
        return type(self).normalize is not Regularizer.normalize

    @property
    def params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.hyperparameters}

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this regularizer: ``"zoneout:z_cells=0.5,z_states=0.05"``."""
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_format(v)}" for k, v in self.params.items())

    @classmethod
    def search_space(cls, trial, cell_type: str | None = None) -> dict[str, Any]:
        """Optuna suggestions for the tunable hyperparameters (of ``cell_type``); the rest keep their defaults."""
        chosen = {}
        for key, spec in cls.hyperparameters.items():
            if spec.search is None or not spec.applies_to(cell_type):
                continue
            low, high = spec.search
            if spec.kind is int:
                chosen[key] = trial.suggest_int(key, int(low), int(high), log=spec.log)
            else:
                chosen[key] = trial.suggest_float(key, low, high, log=spec.log)
        return chosen

    def check_cell_type(self, cell_type: str) -> None:
        """Raise if this regularizer can't act on ``cell_type``, or was given a parameter that doesn't apply."""
        if cell_type not in self.cell_types:
            raise ValueError(f"regularizer {self.name!r} does not support {cell_type.upper()} layers; it supports: "
                             f"{', '.join(t.upper() for t in self.cell_types)}")
        for key, spec in self.hyperparameters.items():
            if not spec.applies_to(cell_type) and key in self.explicit and getattr(self, key) != spec.default:
                where = ", ".join(t.upper() for t in spec.cell_types)
                raise ValueError(f"{self.name}: {key} applies to {where} layers only; a {cell_type.upper()} layer "
                                 f"would ignore {key}={_format(getattr(self, key))}")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={_format(v)}" for k, v in self.params.items())


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)  # short, and exact when needed
    return str(value)
