"""Sweep results: per-trial records, the best trial, its state, and exports.

Example:
  >>> from jopt.sweep.results import SweepResult, TrialResult
  >>> t = TrialResult(0, {"lr": 0.1}, "completed", 0.5, 0.5, 0.5, 10, 10,
  ...                 {"step": [10], "objective": [0.5]})
  >>> r = SweepResult([t], mode="min")
  >>> r.best.hyperparams
  {'lr': 0.1}
  >>> list(r.to_dataframe().columns)[:4]
  ['trial', 'status', 'objective', 'final_objective']
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jopt.sweep import pareto

__all__ = ["SweepResult", "TrialResult", "rank_key", "signed"]


def signed(objective: float, mode: str) -> float:
    """Minimization key of an objective: ``objective`` (``"min"``) or ``-objective`` (``"max"``);
    ``+inf`` when it is not finite.

    Example:
      >>> signed(0.5, "max"), signed(float("nan"), "min")
      (-0.5, inf)
    """
    value = float(objective)
    if not math.isfinite(value):
        return math.inf
    return value if mode == "min" else -value


def rank_key(
    objective: float, status: str, mode: str, rung: int | None = None, trial: int = 0, violation: float = 0.0
) -> tuple:
    """The one ranking rule of jopt.sweep, as a sort key (smallest = best): diverged or non-finite
    objectives last; then the higher rung first (objectives measured after different budgets are
    not comparable); then feasible before infeasible (``violation``: the total amount by which
    the constraints are exceeded), infeasible ones by violation; then the objective oriented by
    ``mode``; then the lower trial id.

    Example:
      >>> sorted([(2.0, "completed", 0), (1.0, "diverged", 0), (3.0, "pruned", 1)],
      ...        key=lambda v: rank_key(v[0], v[1], "min", v[2]))
      [(3.0, 'pruned', 1), (2.0, 'completed', 0), (1.0, 'diverged', 0)]
    """
    key = math.inf if status == "diverged" else signed(objective, mode)
    return (key == math.inf, -(rung or 0), violation > 0, violation, key, trial)


@dataclass
class TrialResult:
    """One trial's outcome.

    Attributes:
      trial: trial index (order of the sampled configurations).
      hyperparams: the configuration.
      status: ``"completed"``, ``"diverged"`` (some fold had a non-finite loss, state or
        objective), ``"stopped"`` (early-stopped; every fold, in a cross-validated sweep) or
        ``"pruned"`` (halted at a lower rung by successive halving).
      objective: objective of the returned state -- the best objective with early stopping,
        else the final one; the worst value (``+inf`` minimizing, ``-inf`` maximizing) if diverged.
      final_objective: objective at the last evaluation (fold average).
      best_objective: best objective over the evaluations (fold average).
      best_step: training step of ``best_objective``.
      steps_trained: steps actually applied (largest over folds).
      history: ``{"step": [...], "objective": [...], "train/<metric>": [...], "eval/<metric>": [...]}``.
      fold_objectives: per-fold objectives in a cross-validated sweep, else ``None``.
      rung: in successive halving / Hyperband, the index of the highest rung (step budget) the
        trial reached, else ``None``. Trials that reached a higher rung rank first: objectives
        measured after different numbers of steps are not comparable.
      objectives: in a multi-objective search, every objective at the returned state (objective
        0 is ``objective``), else ``None``.
      violation: the total amount by which the constraints are exceeded at the returned state
        (0: feasible).
    """

    trial: int
    hyperparams: dict[str, Any]
    status: str
    objective: float
    final_objective: float
    best_objective: float
    best_step: int
    steps_trained: int
    history: dict[str, list[float]]
    fold_objectives: list[float] | None = None
    rung: int | None = None
    objectives: tuple[float, ...] | None = None
    violation: float = 0.0

    @property
    def feasible(self) -> bool:
        """Whether the constraints hold at the returned state (always, without constraints)."""
        return self.violation <= 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return repr(value)


@dataclass
class SweepResult:
    """All trials of a sweep; see :func:`jopt.sweep.run`.

    Attributes:
      trials: one :class:`TrialResult` per trial, in trial order.
      mode: ``"min"`` or ``"max"``.
      stats: engine statistics (wall and compile seconds, number of compiles, chunk sizes,
        devices, estimated bytes per trial).
      log_scale: names of log-uniform hyperparameters (log axes in plots).
      directions: a multi-objective sweep's directions (``TrialResult.objectives``,
        :meth:`pareto_front`, :meth:`hypervolume`), else ``None``.
      categorical: names of choice hyperparameters (categorical axes in plots).
    """

    trials: list[TrialResult]
    mode: str = "min"
    stats: dict[str, Any] = field(default_factory=dict)
    log_scale: tuple[str, ...] = ()
    states: dict[int, Any] = field(default_factory=dict, repr=False)
    params_fn: Any = field(default=None, repr=False)
    directions: tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        """The notebook display: ranked table and learning curves (:func:`jopt.sweep.display.html`)."""
        from jopt.sweep.display import html

        return html(self)

    # ------------------------------------------------------------------ several objectives
    def _objective_matrix(self, trials: Sequence[TrialResult]) -> np.ndarray:
        if self.directions is None:
            raise ValueError("pareto_front and hypervolume need a multi-objective sweep (directions=...)")
        return pareto.oriented([t.objectives for t in trials], self.directions).reshape(len(trials), -1)

    def _front_candidates(self) -> list[TrialResult]:
        return [
            t for t in self.trials
            if t.status != "diverged" and t.feasible and t.objectives is not None
            and all(math.isfinite(v) for v in t.objectives)
        ]  # fmt: skip

    def pareto_front(self) -> list[TrialResult]:
        """The feasible, finite trials no other one dominates (every objective at least as good,
        one better; ``directions`` orient them), sorted by objective 0."""
        cands = self._front_candidates()
        if not cands:
            return []
        mask = pareto.non_dominated(self._objective_matrix(cands))
        front = [t for t, keep in zip(cands, mask, strict=True) if keep]
        return sorted(front, key=lambda t: (signed(t.objectives[0], self.directions[0]), t.trial))

    def hypervolume(self, reference: Sequence[float]) -> float:
        """Hypervolume of the Pareto front up to ``reference`` (one value per objective, in the
        objectives' own orientation: worse than every point that should count)."""
        front = self.pareto_front()
        if np.size(reference) != len(self.directions):  # before orienting: a clear error, not a broadcast one
            raise ValueError(f"reference must have {len(self.directions)} values, got {list(reference)}")
        ref = pareto.oriented(np.asarray(reference, np.float64)[None], self.directions)[0]
        return pareto.hypervolume(self._objective_matrix(front), ref) if front else 0.0

    # ------------------------------------------------------------------ other tools
    def to_optuna(self, storage: Any = None, study_name: str | None = None, **kwargs: Any):
        """This sweep as an Optuna study (optuna-dashboard, ``optuna.importance``,
        ``optuna.visualization``); see :func:`jopt.sweep.export.to_optuna`."""
        from jopt.sweep.export import to_optuna

        return to_optuna(self, storage, study_name, **kwargs)

    def importance(self, **kwargs: Any) -> dict[str, float]:
        """Hyperparameter importances (fANOVA through Optuna); see :func:`jopt.sweep.export.importance`."""
        from jopt.sweep.export import importance

        return importance(self, **kwargs)

    def plot_importance(self, path: str | Path | None = None, **kwargs: Any):
        """Bar chart of :meth:`importance`; see :func:`jopt.sweep.export.plot_importance`."""
        from jopt.sweep.export import plot_importance

        return plot_importance(self, path, **kwargs)

    def plot_pareto(self, path: str | Path | None = None, *, objectives: tuple[int, int] = (0, 1)):
        """Two objectives of every trial, the Pareto front highlighted (:func:`pareto.plot_pareto`)."""
        return pareto.plot_pareto(self, path, objectives=objectives)

    # ------------------------------------------------------------------ ranking
    def ranked(self) -> list[TrialResult]:
        """Trials from best to worst (:func:`rank_key`: diverged last; with rungs, higher rungs first)."""
        return sorted(
            self.trials,
            key=lambda t: rank_key(t.objective, t.status, self.mode, t.rung, t.trial, t.violation),
        )

    @property
    def best(self) -> TrialResult:
        """The best trial."""
        if not self.trials:
            raise ValueError("the sweep has no trials")
        return self.ranked()[0]

    @property
    def best_config(self) -> dict[str, Any]:
        """Hyperparameters of the best trial."""
        return dict(self.best.hyperparams)

    def by_status(self, status: str) -> list[TrialResult]:
        """Trials with the given status."""
        return [t for t in self.trials if t.status == status]

    # ------------------------------------------------------------------ states
    def state(self, trial: int | None = None) -> Any:
        """Trained state of ``trial`` (default: the best trial); a list of per-fold states
        in a cross-validated sweep. Kept for the best trial (``keep_states="best"``) or for
        every trial (``keep_states="all"``)."""
        trial = self.best.trial if trial is None else trial
        if trial not in self.states:
            raise KeyError(f"no state kept for trial {trial}; run the sweep with keep_states='all'")
        return self.states[trial]

    def params(self, trial: int | None = None) -> Any:
        """Trained parameters of ``trial`` (default: the best), via the task's ``params`` function."""
        state = self.state(trial)
        fn = self.params_fn or (lambda s: s)
        return [fn(s) for s in state] if isinstance(state, list) else fn(state)

    # ------------------------------------------------------------------ exports
    def to_dataframe(self):
        """One row per trial: trial, status, objectives, steps, hyperparameters, last metrics."""
        import pandas as pd

        rows = []
        has_rungs = any(t.rung is not None for t in self.trials)
        for t in self.trials:
            row = {
                "trial": t.trial,
                "status": t.status,
                "objective": t.objective,
                "final_objective": t.final_objective,
                "best_objective": t.best_objective,
                "best_step": t.best_step,
                "steps_trained": t.steps_trained,
            }
            if has_rungs:
                row["rung"] = t.rung
            row.update(t.hyperparams)
            for name, values in t.history.items():
                if name.startswith("eval/") and values:
                    row[name] = values[-1]
            rows.append(row)
        return pd.DataFrame(rows)

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`to_dataframe` as CSV; returns the path."""
        path = Path(path)
        self.to_dataframe().to_csv(path, index=False)
        return path

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (histories included)."""
        trials = []
        for t in self.trials:
            d = asdict(t)
            d["hyperparams"] = {k: _jsonable(v) for k, v in t.hyperparams.items()}
            trials.append(d)
        stats = {k: _jsonable(v) if not isinstance(v, (list, dict)) else v for k, v in self.stats.items()}
        return {"mode": self.mode, "best_trial": self.best.trial, "stats": stats, "trials": trials}

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict` (non-finite numbers as ``Infinity``/``NaN``); written if ``path``."""
        text = json.dumps(self.to_dict(), indent=1, default=_jsonable)
        if path is not None:
            Path(path).write_text(text)
        return text

    def table(self, top: int | None = 10, columns: Sequence[str] | None = None) -> str:
        """A plain-text table of the ``top`` trials, best first."""
        df = self.to_dataframe()
        order = [t.trial for t in self.ranked()]
        df = df.set_index("trial").loc[order].reset_index()
        if columns is not None:
            df = df[list(columns)]
        if top is not None:
            df = df.head(top)
        with _pd_options():
            return df.to_string(index=False, float_format=lambda v: f"{v:.4g}")

    def summary(self) -> str:
        """Counts per status and the best trial."""
        statuses = ("completed", "stopped", "diverged") + (("pruned",) if self.by_status("pruned") else ())
        counts = {s: len(self.by_status(s)) for s in statuses}
        b = self.best
        return (
            f"{len(self.trials)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())}); "
            f"best trial {b.trial}: objective {b.objective:.4g} with {b.hyperparams}"
        )

    # ------------------------------------------------------------------ plots
    def plot_learning_curves(self, path: str | Path | None = None, **kwargs: Any):
        """Objective against step for every trial, best highlighted; see :mod:`jopt.sweep.plots`."""
        from jopt.sweep.plots import plot_learning_curves

        return plot_learning_curves(self, path, **kwargs)

    def plot_objective_vs(self, path: str | Path | None = None, **kwargs: Any):
        """Objective against each hyperparameter; see :mod:`jopt.sweep.plots`."""
        from jopt.sweep.plots import plot_objective_vs

        return plot_objective_vs(self, path, **kwargs)


class _pd_options:
    def __enter__(self):
        import pandas as pd

        self._ctx = pd.option_context("display.width", 200, "display.max_columns", 50)
        self._ctx.__enter__()

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
