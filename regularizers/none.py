"""The unregularized baseline: registered so that benchmarks can name it like the others."""

from .base import Regularizer
from .registry import register


@register("none")
class NoRegularizer(Regularizer):
    """Does nothing; a layer drops it. ``regularizers=["none"]`` equals ``torch.nn.LSTM``."""

    paper = "baseline"
