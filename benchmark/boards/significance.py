"""The statistics of a leaderboard: intervals within a metric's range, Welch tests, Holm's correction.

A board compares each regularizer with the baseline (``none``) and with zoneout over fresh
seeds. A difference is called a win only when Welch's t-test (unequal variances: the
regularizers' seed-to-seed spreads differ) rejects equal means at 5 % after Holm's correction
over every comparison of the board, so that a board of nine rows does not find a "win" by
chance once in every two boards.

    interval([0.08, 0.09, 0.07], "error_rate")    # (low, high), clipped to [0, 1]
    welch([1.40, 1.41, 1.39], [1.45, 1.44, 1.46])  # (difference of means, two-sided p)
    holm([0.01, 0.04, 0.30])                       # adjusted p-values, in the same order
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

__all__ = ["ALPHA", "CONFIDENCE", "METRIC_RANGES", "finite", "interval", "welch", "holm"]

ALPHA = 0.05
CONFIDENCE = 0.95
# Where each metric's values (and so its mean) can lie: an interval is cut to this range.
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "error_rate": (0.0, 1.0),
    "bpc": (0.0, math.inf),
    "perplexity": (1.0, math.inf),
}


def finite(values: Iterable) -> np.ndarray:
    """The finite numbers among ``values`` (None, NaN and inf dropped)."""
    out = []
    for value in values:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out.append(number)
    return np.asarray(out, dtype=float)


def interval(values: Iterable, metric: str = "", confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean, ``mean ± t·s/√n``, cut to the metric's range.

    NaNs with fewer than two values. The mean of values in a range lies in that range, so cutting
    the interval there loses none of its coverage.
    """
    from scipy import stats

    data = finite(values)
    if data.size < 2:
        return math.nan, math.nan
    spread = float(stats.sem(data))
    if spread == 0:  # every seed gave the same value: a zero-width interval
        low = high = float(data.mean())
    else:
        low, high = stats.t.interval(confidence, data.size - 1, loc=data.mean(), scale=spread)
    floor, ceiling = METRIC_RANGES.get(metric, (-math.inf, math.inf))
    return max(float(low), floor), min(float(high), ceiling)


def welch(a: Iterable, b: Iterable) -> tuple[float, float]:
    """``mean(a) - mean(b)`` and the two-sided p-value of Welch's t-test (NaN below 2 values each).

    Two samples without any spread are equal (p = 1) or certainly different (p = 0).
    """
    from scipy import stats

    x, y = finite(a), finite(b)
    if x.size == 0 or y.size == 0:
        return math.nan, math.nan
    difference = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return difference, math.nan
    if x.std() == 0 and y.std() == 0:
        return difference, 1.0 if difference == 0 else 0.0
    return difference, float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``pvalues`` (NaNs are left out of the family and stay NaN).

    The k-th smallest of m p-values is multiplied by m - k + 1, and the adjusted values are made
    non-decreasing in that order and capped at 1: rejecting where the adjusted p < alpha keeps
    the chance of any false win in the family below alpha.
    """
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (len(indexed) - k) * p))
        adjusted[i] = running
    return adjusted
