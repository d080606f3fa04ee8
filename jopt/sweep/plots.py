"""Plots of a sweep (matplotlib): learning curves and objective against each hyperparameter.

Both functions return the matplotlib ``Figure``; with ``path`` they also save it
(the format follows the suffix). In a notebook the returned figure displays itself. Colours
follow the trial's status; legends list the statuses present.

Categorical hyperparameters (choices: strings, functions, booleans, or any dimension named in
``categorical`` / the result's ``categorical`` attribute) are drawn on categorical axes: one
tick per value, labelled with the value (a function by its name), points spread a little
sideways so that trials with the same value stay visible.

Example:
  >>> import matplotlib; matplotlib.use("Agg")
  >>> from jopt.sweep.results import SweepResult, TrialResult
  >>> t = TrialResult(0, {"lr": 0.1}, "completed", 0.5, 0.5, 0.5, 10, 10,
  ...                 {"step": [5, 10], "objective": [0.7, 0.5]})
  >>> fig = plot_learning_curves(SweepResult([t]))
  >>> fig = plot_objective_vs(SweepResult([t], log_scale=("lr",)))
  >>> u = TrialResult(1, {"lr": 0.2}, "diverged", float("inf"), float("nan"), 0.9, 5, 5,
  ...                 {"step": [5], "objective": [0.9]})
  >>> [t.get_text() for t in plot_learning_curves(SweepResult([t, u])).axes[0].get_legend().texts]
  ['best (trial 0)', 'completed', 'diverged']
  >>> a, b = (TrialResult(i, {"act": f}, "completed", v, v, v, 10, 10, {"step": [10], "objective": [v]})
  ...         for i, f, v in ((0, abs, 0.5), (1, round, 0.7)))
  >>> [t.get_text() for t in plot_objective_vs(SweepResult([a, b])).axes[0].get_xticklabels()]
  ['abs', 'round']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["category_label", "finish_figure", "plot_learning_curves", "plot_objective_vs"]

_COLORS = {"completed": "tab:blue", "stopped": "tab:orange", "diverged": "tab:red", "pruned": "tab:gray"}


def finish_figure(fig, path: str | Path | None, *, close: bool = False):
    """Save ``fig`` to ``path`` (if given; the format follows the suffix) and return it; with
    ``close`` it is also closed in pyplot (a returned figure still displays in a notebook, once)."""
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def _present(trials: Sequence[Any]) -> list[str]:
    """The statuses of ``trials`` in legend order (known ones first)."""
    seen = {t.status for t in trials}
    return [s for s in _COLORS if s in seen] + sorted(seen - set(_COLORS))


def _status_handles(ax, statuses: Sequence[str], marker: str | None = None) -> None:
    for status in statuses:
        color = _COLORS.get(status, "gray")
        if marker:
            ax.scatter([], [], color=color, marker=marker, s=18, label=status)
        else:
            ax.plot([], [], color=color, label=status)


def plot_learning_curves(
    result: Any, path: str | Path | None = None, *, metric: str = "objective", log_y=False
):
    """Evaluation ``metric`` against step for every trial; the best trial highlighted in black.

    Diverged trials are drawn up to their last finite value.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = result.best.trial
    drawn = []
    for t in result.trials:
        y = np.asarray(t.history.get(metric, []), dtype=float)
        if y.size == 0:
            continue
        drawn.append(t)
        y = np.where(np.isfinite(y), y, np.nan)
        if t.trial == best:
            continue
        ax.plot(t.history["step"][: y.size], y, color=_COLORS.get(t.status, "gray"), alpha=0.35, lw=1)
    b = result.best
    by = np.asarray(b.history.get(metric, []), dtype=float)
    if by.size:
        by = np.where(np.isfinite(by), by, np.nan)
        ax.plot(b.history["step"][: by.size], by, color="black", lw=2.5, label=f"best (trial {best})")
    _status_handles(ax, _present(drawn))
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(f"learning curves of {len(result.trials)} trials")
    if drawn:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return finish_figure(fig, path)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def category_label(value: Any) -> str:
    """The axis label of a categorical value: a function or class by its name, else ``str``.

    Example:
      >>> category_label(abs), category_label("adam"), category_label(True), category_label(16)
      ('abs', 'adam', 'True', '16')
    """
    name = getattr(value, "__name__", None)
    if callable(value) and isinstance(name, str):
        return name
    return str(value)


def _categories(values: Sequence[Any]) -> list[Any]:
    """Distinct values in axis order: numerically sorted numbers, else first appearance."""
    distinct: list[Any] = []
    for v in values:
        if not any(v is d or (type(v) is type(d) and _safe_eq(v, d)) for d in distinct):
            distinct.append(v)
    if all(_is_number(v) for v in distinct):
        distinct.sort(key=float)
    return distinct


def _safe_eq(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and other values without a truth value
        return False


def _index(categories: Sequence[Any], value: Any) -> int:
    for i, c in enumerate(categories):
        if value is c or (type(value) is type(c) and _safe_eq(value, c)):
            return i
    raise KeyError(value)


def plot_objective_vs(
    result: Any,
    path: str | Path | None = None,
    *,
    names: list[str] | None = None,
    categorical: Sequence[str] | None = None,
):
    """Objective against each (non-fixed) hyperparameter; log axes for log-uniform ones,
    categorical axes for categorical ones (see the module docstring; ``categorical`` adds names
    to the result's ``categorical`` attribute and to those whose values are not all numbers).

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
    forced = set(getattr(result, "categorical", ()) or ()) | set(categorical or ())
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    best = result.best.trial
    y = [t.objective for t in trials]
    colors = [_COLORS.get(t.status, "gray") for t in trials]
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(trials))
    for ax, name in zip(axes.flat, names, strict=False):
        values = [t.hyperparams[name] for t in trials]
        every = [t.hyperparams[name] for t in result.trials]
        if name in forced or not all(_is_number(v) for v in every):
            cats = _categories(every)
            x = [_index(cats, v) + j for v, j in zip(values, jitter)]
            ax.set_xticks(range(len(cats)), [category_label(c) for c in cats])
            ax.set_xlim(-0.5, len(cats) - 0.5)
        else:
            x = [float(v) for v in values]
            if name in result.log_scale:
                ax.set_xscale("log")
        ax.scatter(x, y, c=colors, s=18, alpha=0.8)
        bx = [x[i] for i, t in enumerate(trials) if t.trial == best]
        by = [y[i] for i, t in enumerate(trials) if t.trial == best]
        ax.scatter(bx, by, marker="*", s=160, color="black", zorder=3)
        ax.set_xlabel(name)
        ax.set_ylabel("objective")
    first = axes.flat[0]
    _status_handles(first, _present(trials), marker="o")
    first.scatter([], [], marker="*", s=80, color="black", label=f"best (trial {best})")
    first.legend(loc="best", fontsize=7)
    left_out = len(result.trials) - len(trials)
    if left_out:
        fig.suptitle(f"{left_out} trial(s) with a non-finite objective left out", fontsize=9)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    plt.close(fig)
    return finish_figure(fig, path)
