"""Plots of a sweep (matplotlib): learning curves and objective against each hyperparameter.

Both functions return the matplotlib ``Figure``; with ``path`` they also save it
(the format follows the suffix). In a notebook the returned figure displays itself.

Example:
  >>> import matplotlib; matplotlib.use("Agg")
  >>> from jopt.sweep.results import SweepResult, TrialResult
  >>> t = TrialResult(0, {"lr": 0.1}, "completed", 0.5, 0.5, 0.5, 10, 10,
  ...                 {"step": [5, 10], "objective": [0.7, 0.5]})
  >>> fig = plot_learning_curves(SweepResult([t]))
  >>> fig = plot_objective_vs(SweepResult([t], log_scale=("lr",)))
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_learning_curves", "plot_objective_vs"]

_COLORS = {"completed": "tab:blue", "stopped": "tab:orange", "diverged": "tab:red", "pruned": "tab:gray"}


def _finish(fig, path: str | Path | None):
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_learning_curves(
    result: Any, path: str | Path | None = None, *, metric: str = "objective", log_y=False
):
    """Evaluation ``metric`` against step for every trial; the best trial highlighted in black.

    Diverged trials are drawn up to their last finite value.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = result.best.trial
    for t in result.trials:
        y = np.asarray(t.history.get(metric, []), dtype=float)
        if y.size == 0:
            continue
        y = np.where(np.isfinite(y), y, np.nan)
        if t.trial == best:
            continue
        ax.plot(t.history["step"], y, color=_COLORS.get(t.status, "gray"), alpha=0.35, lw=1)
    b = result.best
    ax.plot(b.history["step"], b.history.get(metric, []), color="black", lw=2.5, label=f"best (trial {best})")
    for status, color in _COLORS.items():
        if status != "pruned" or result.by_status("pruned"):
            ax.plot([], [], color=color, label=status)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(f"learning curves of {len(result.trials)} trials")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return _finish(fig, path)


def plot_objective_vs(result: Any, path: str | Path | None = None, *, names: list[str] | None = None):
    """Objective against each (non-fixed) hyperparameter; log axes for log-uniform ones.

    Diverged trials are left out (their objective is infinite).
    """
    import matplotlib.pyplot as plt

    trials = [t for t in result.trials if math.isfinite(t.objective)]
    if names is None:
        names = [
            n
            for n in result.trials[0].hyperparams
            if len({repr(t.hyperparams[n]) for t in result.trials}) > 1
        ]
    names = names or list(result.trials[0].hyperparams)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    best = result.best.trial
    y = [t.objective for t in trials]
    for ax, name in zip(axes.flat, names, strict=False):
        values = [t.hyperparams[name] for t in trials]
        numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values)
        x = values if numeric else [str(v) for v in values]
        colors = [_COLORS.get(t.status, "gray") for t in trials]
        ax.scatter(x, y, c=colors, s=18, alpha=0.8)
        bx = [x[i] for i, t in enumerate(trials) if t.trial == best]
        by = [y[i] for i, t in enumerate(trials) if t.trial == best]
        ax.scatter(bx, by, marker="*", s=160, color="black", zorder=3)
        if name in result.log_scale:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("objective")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    plt.close(fig)
    return _finish(fig, path)
