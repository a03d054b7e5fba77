"""regbench.regularizers: recurrent regularizers and the layers that apply them.

    from regularizers import RegularizedLSTM, penalty
    lstm = RegularizedLSTM(64, 256, regularizers=["zoneout:z_cells=0.5,z_states=0.05"])
    output, (h_n, c_n) = lstm(x)
    loss = task_loss + penalty(model)   # norm stabilizer and other penalty terms

Write your own: subclass ``Regularizer``, declare ``hyperparameters``, implement ``masks``
(or ``transform_weights`` / ``penalty`` / ``normalize``) and decorate with ``@register``.
The protocol is documented in ``regularizers/base.py``.
"""

from .base import CELL_TYPES, MASK_SITES, LayerOutputs, Regularizer, SequenceContext
from .hyperparameters import Hyperparameter, probability
from .layers import RegularizedGRU, RegularizedLSTM, RegularizedRecurrent, RegularizedRNN, penalty
from .registry import (ENTRY_POINT_GROUP, UnknownRegularizerError, available, build, get, parse_spec,
                       register, reload_plugins)

# Importing the built-in regularizers registers them.
from . import (none, norm_stabilizer, recurrent_batchnorm, recurrent_dropout, rnndrop,  # noqa: E402,F401
               stochastic_depth, variational_dropout, weight_noise, zoneout)

__all__ = [
    "CELL_TYPES", "ENTRY_POINT_GROUP", "MASK_SITES", "Hyperparameter", "LayerOutputs", "Regularizer",
    "RegularizedGRU", "RegularizedLSTM", "RegularizedRNN", "RegularizedRecurrent", "SequenceContext",
    "UnknownRegularizerError", "available", "build", "get", "parse_spec", "penalty", "probability",
    "register", "reload_plugins",
]
