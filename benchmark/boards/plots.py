"""The figures of a board (matplotlib only): validation curves, and zoneout's z_cells x z_states map.

PNG metadata is fixed, so the same board gives the same file with the same matplotlib.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .load import first
from .render import fmt
from .tables import OK, Board

__all__ = ["plot_curves", "plot_zoneout_grid"]


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_PNG_METADATA = {"Software": None}


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="png", dpi=100, metadata=_PNG_METADATA)


def plot_curves(board: Board, path: Path) -> bool:
    finished = board.finished
    rows = finished[finished["val_curves"].map(any).astype(bool)].sort_values("regularizer")
    if rows.empty:
        return False
    plt = _matplotlib()
    with plt.rc_context({"svg.hashsalt": "regbench", "path.simplify": True}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        colors = plt.get_cmap("tab10")
        for index, row in enumerate(rows.itertuples(index=False)):
            curves = [c for c in row.val_curves if c]
            length = max(len(c) for c in curves)
            matrix = np.full((len(curves), length), np.nan)
            for i, curve in enumerate(curves):
                matrix[i, :len(curve)] = curve
            epochs = np.arange(1, length + 1)
            with np.errstate(all="ignore"):
                mean = np.nanmean(matrix, axis=0)
                low, high = np.nanmin(matrix, axis=0), np.nanmax(matrix, axis=0)
            color = colors(index % 10)
            ax.plot(epochs, mean, label=f"{row.regularizer} (n={len(curves)})", color=color, linewidth=1.5)
            if len(curves) > 1:
                ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
        metric = first(board.records["metric"]) or "metric"
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric}")
        ax.set_title(f"{board.key}: validation {metric} per epoch (mean, band = min..max over seeds)",
                     fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)
    return True


def plot_zoneout_grid(board: Board, path: Path) -> bool:
    recs = board.records
    zone = recs[(recs["regularizer"] == "zoneout") & (recs["status"] == OK)]
    points = []
    for values, valid in zip(zone["hyperparameters"], zone["best_val_metric"]):
        if "z_cells" in values and "z_states" in values and not math.isnan(valid):
            points.append((round(float(values["z_cells"]), 3), round(float(values["z_states"]), 3), float(valid)))
    cells = sorted({p[0] for p in points})
    states = sorted({p[1] for p in points})
    if len(cells) < 2 or len(states) < 2 or len({(c, s) for c, s, _ in points}) < 3:
        return False
    grid = np.full((len(states), len(cells)), np.nan)
    for i, zs in enumerate(states):
        for j, zc in enumerate(cells):
            hits = [v for c, s, v in points if c == zc and s == zs]
            if hits:
                grid[i, j] = float(np.mean(hits))
    plt = _matplotlib()
    metric = first(board.records["metric"]) or "metric"
    if np.isfinite(grid).mean() < 0.75:
        # Not a grid (e.g. a study's continuous proposals): the runs as points, coloured by the metric.
        fig, ax = plt.subplots(figsize=(6.5, 5))
        xs, ys, vs = zip(*sorted(points))
        image = ax.scatter(xs, ys, c=vs, cmap="viridis_r", s=60, edgecolors="black", linewidths=0.5)
        for x, y, v in sorted(points):
            ax.annotate(fmt(v, metric), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
        ax.set_xlabel("z_cells")
        ax.set_ylabel("z_states")
        ax.grid(True, alpha=0.3)
        fig.colorbar(image, ax=ax, label=f"validation {metric}")
        ax.set_title(f"{board.key}: zoneout runs by z_cells and z_states", fontsize=9)
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)
        return True
    fig, ax = plt.subplots(figsize=(6.5, 5))
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(cells)), [f"{c:g}" for c in cells], rotation=90 if len(cells) > 8 else 0, fontsize=7)
    ax.set_yticks(range(len(states)), [f"{s:g}" for s in states], fontsize=7)
    ax.set_xlabel("z_cells")
    ax.set_ylabel("z_states")
    if len(cells) * len(states) <= 64:
        for i in range(len(states)):
            for j in range(len(cells)):
                if not math.isnan(grid[i, j]):
                    ax.text(j, i, fmt(grid[i, j], metric), ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax, label=f"validation {metric} (mean over runs)")
    ax.set_title(f"{board.key}: zoneout z_cells x z_states (blank = not run)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True
