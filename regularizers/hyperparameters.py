"""Declared hyperparameters: defaults, valid ranges, Optuna search ranges.

A regularizer lists its hyperparameters once, as class data; validation, spec strings,
``regbench list`` and Optuna search spaces are all derived from that one declaration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter of a regularizer.

    ``low``/``high`` bound the valid values (``low_open``/``high_open`` exclude the bound);
    ``search`` is the (low, high) range an Optuna study explores, or None to keep the value fixed.
    ``cell_types`` limits it to some cells: elsewhere it is not searched, and setting it to
    anything but its default is an error.
    """

    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    search: tuple[float, float] | None = None
    log: bool = False
    cell_types: tuple[str, ...] | None = None  # the cells it applies to, where not all (zoneout's z_cells)

    @property
    def kind(self) -> type:
        return type(self.default)

    def applies_to(self, cell_type: str | None) -> bool:
        return cell_type is None or self.cell_types is None or cell_type in self.cell_types

    def describe_range(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.kind is bool:
            return "true or false"
        if self.low is None and self.high is None:
            return "any " + self.kind.__name__
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        if self.low is None:
            left = "("
        if self.high is None:
            right = ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{left}{low}, {high}{right}"

    def parse(self, name: str, text: str) -> Any:
        """Convert the text of a spec string (``"0.5"``, ``"true"``) to this parameter's type."""
        kind = self.kind
        try:
            if kind is bool:
                lowered = text.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return kind(text)
        except ValueError:
            raise ValueError(
                f"hyperparameter {name!r} expects {kind.__name__} {self.describe_range()}, got {text!r}"
            ) from None

    def validate(self, owner: str, name: str, value: Any) -> Any:
        """Return ``value`` coerced to the declared type, or raise ValueError naming the range."""
        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{owner}: {name} must be true or false, got {value!r}")
            return value
        if kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{owner}: {name} must be a number in {self.describe_range()}, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{owner}: {name}={value!r} is out of range; it must be a finite number in "
                                 f"{self.describe_range()}")
            if kind is int and float(value) != int(value):
                raise ValueError(f"{owner}: {name} must be an integer in {self.describe_range()}, got {value!r}")
            value = kind(value)
            too_low = self.low is not None and (value < self.low or (self.low_open and value == self.low))
            too_high = self.high is not None and (value > self.high or (self.high_open and value == self.high))
            if too_low or too_high:
                raise ValueError(f"{owner}: {name}={value!r} is out of range; it must be in {self.describe_range()}")
            return value
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{owner}: {name}={value!r} is not valid; it must be {self.describe_range()}")
        return value


def probability(default: float, help: str, *, search: tuple[float, float] | None = (0.0, 0.7),
                allow_one: bool = True, cell_types: tuple[str, ...] | None = None) -> Hyperparameter:
    """A probability in [0, 1] (or [0, 1) where 1 would divide by zero, as in inverted dropout)."""
    return Hyperparameter(default=float(default), help=help, low=0.0, high=1.0,
                          high_open=not allow_one, search=search, cell_types=cell_types)
