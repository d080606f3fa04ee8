r"""Pareto fronts and hypervolumes of multi-objective sweeps (every objective minimized).

A point :math:`a` *dominates* :math:`b` when :math:`a_i \le b_i` for every objective and
:math:`a_j < b_j` for one. The Pareto front of a set is its non-dominated points. The
hypervolume of a set with respect to a reference point :math:`r` is the Lebesgue measure of
:math:`\bigcup_a \{x : a \le x \le r\}`, computed exactly by slicing along the last objective
(exact for any number of objectives; fine for the few hundred points of a sweep).

Maximized objectives are negated first (:func:`oriented`).

Example:
  >>> import numpy as np
  >>> pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
  >>> non_dominated(pts).tolist()
  [True, True, True, False]
  >>> float(hypervolume(pts, reference=[4.0, 4.0]))
  6.0
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["hypervolume", "non_dominated", "oriented", "plot_pareto"]


def oriented(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """``values`` (rows: points, columns: objectives) with maximized objectives negated."""
    sign = np.asarray([1.0 if d == "min" else -1.0 for d in directions])
    return np.asarray(values, np.float64) * sign


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates (minimization; equal points are all kept)."""
    pts = np.asarray(points, np.float64)
    le = np.all(pts[:, None, :] <= pts[None, :, :], axis=-1)  # le[i, j]: i <= j everywhere
    lt = np.any(pts[:, None, :] < pts[None, :, :], axis=-1)
    dominated = np.any(le & lt, axis=0)
    return ~dominated


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``points`` (minimization) up to ``reference``; points not below
    the reference in every objective contribute nothing."""
    ref = np.asarray(reference, np.float64)
    pts = np.asarray(points, np.float64).reshape(-1, ref.size)
    pts = pts[np.all(pts < ref, axis=1)]
    return float(_volume(pts, ref))


def _volume(pts: np.ndarray, ref: np.ndarray) -> float:
    if len(pts) == 0:
        return 0.0
    if ref.size == 1:
        return float(ref[0] - pts[:, 0].min())
    pts = pts[non_dominated(pts)]
    order = np.argsort(pts[:, -1])
    pts = pts[order]
    total = 0.0
    for i, p in enumerate(pts):  # slab between this point's last coordinate and the next one's
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        if upper > p[-1]:
            total += (upper - p[-1]) * _volume(pts[: i + 1, :-1], ref[:-1])
    return total


def plot_pareto(result: Any, path: str | Path | None = None, *, objectives: tuple[int, int] = (0, 1)):
    """Scatter of objectives ``objectives`` of every feasible, finite trial of a multi-objective
    :class:`~jopt.sweep.results.SweepResult`, the Pareto front (over all objectives) drawn as a
    step line; infeasible trials as crosses. Returns the figure (saved to ``path`` if given)."""
    import matplotlib.pyplot as plt

    from jopt.sweep.plots import finish_figure

    i, j = objectives
    fig, ax = plt.subplots(figsize=(5, 4))
    evaluated = [t for t in result.trials if t.objectives is not None and t.status != "diverged"]
    feasible = [t for t in evaluated if t.feasible]
    infeasible = [t for t in evaluated if not t.feasible]
    front = result.pareto_front()
    ax.scatter([t.objectives[i] for t in feasible], [t.objectives[j] for t in feasible], s=14,
               color="tab:blue", alpha=0.5, label="trials")  # fmt: skip
    if infeasible:
        ax.scatter([t.objectives[i] for t in infeasible], [t.objectives[j] for t in infeasible], s=14,
                   marker="x", color="tab:red", label="infeasible")  # fmt: skip
    if front:
        pts = sorted((t.objectives[i], t.objectives[j]) for t in front)
        ax.step(*zip(*pts, strict=True), where="post", color="black", lw=1.2)
        ax.scatter(*zip(*pts, strict=True), s=24, color="black", label="Pareto front")
    ax.set_xlabel(f"objective {i} ({result.directions[i]})")
    ax.set_ylabel(f"objective {j} ({result.directions[j]})")
    ax.legend(frameon=False)
    return finish_figure(fig, path)
