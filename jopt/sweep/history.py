"""The host-side record of a search: one :class:`History` of every trial, and the one ranking rule.

Samplers propose from it, trial schedulers decide from it, checkpoints save it and
:class:`~jopt.sweep.results.SweepResult` is built from it. A trial's record holds its
configuration, static group, status, and per evaluation (one per segment it ran): its age in
steps, the objective averaged over folds, each fold's objective and the fold-averaged training
(``train/<name>``) and evaluation (``eval/<name>``) metrics.

Statuses: ``"queued"`` (proposed, not yet in a chunk), ``"running"``, ``"paused"`` (kept for a
possible resume), and the final ``"completed"``, ``"stopped"`` (early stopping), ``"diverged"``
and ``"pruned"`` (ended early by the trial scheduler).

Ranking (:func:`rank_key`, used everywhere a best trial is chosen): diverged or non-finite last;
then the higher rung first (objectives measured at different budgets are not comparable); then
feasible before infeasible (``constraints``); then the objective (``mode``); then the lower
trial id. Trial schedulers compare evaluations with :meth:`History.score`, the same rule for one
evaluation.

Example:
  >>> h = History()
  >>> h.add(0, {"lr": 0.1}, ()).status
  'queued'
  >>> h.record(0, 10, [0.5, 0.7], {"loss": [1.0, 1.2]}, {"acc": [0.8, 0.6]}, [10, 10])
  >>> r = h[0]
  >>> r.objective, r.folds, r.metrics["train/loss"], r.metrics["eval/acc"]
  ([0.6], [[0.5], [0.7]], [1.1], [0.7])
  >>> sorted([(2.0, "completed"), (1.0, "diverged"), (3.0, "completed")],
  ...        key=lambda v: rank_key(v[0], v[1], "min"))
  [(2.0, 'completed'), (3.0, 'completed'), (1.0, 'diverged')]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jopt.sweep.results import TrialResult, rank_key, signed
from jopt.sweep.space import Choice, Fixed, Space

__all__ = [
    "FINAL",
    "INFEASIBLE",
    "History",
    "TrialRecord",
    "decode_config",
    "encode_config",
    "rank_key",
    "signed",
]

FINAL = frozenset({"completed", "stopped", "diverged", "pruned"})
INFEASIBLE = 1e300  # History.score of an infeasible evaluation: INFEASIBLE + its violation


# ----------------------------------------------------------------------------- configurations <-> JSON


def encode_config(space: Space, config: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready form of a configuration: choices by index, fixed values left out.

    Example:
      >>> from jopt import sweep
      >>> s = sweep.Space(f=sweep.choice([abs, round], static=True), lr=sweep.uniform(0.0, 1.0), n=3)
      >>> encode_config(s, {"f": round, "lr": 0.5, "n": 3})
      {'f': 1, 'lr': 0.5}
      >>> decode_config(s, {"f": 1, "lr": 0.5})["f"] is round
      True
    """
    out = {}
    for name, dim in space.items():
        if isinstance(dim, Fixed):
            continue
        value = config[name]
        if isinstance(dim, Choice):
            hits = [i for i, v in enumerate(dim.values) if v is value or v == value]
            out[name] = hits[0] if hits else None
        elif isinstance(value, (np.integer, int)) and not isinstance(value, bool):
            out[name] = int(value)
        else:
            out[name] = float(value)
    return out


def decode_config(space: Space, data: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`encode_config`."""
    out = {}
    for name, dim in space.items():
        if isinstance(dim, Fixed):
            out[name] = dim.value
        elif isinstance(dim, Choice):
            out[name] = dim.values[int(data[name])]
        else:
            out[name] = data[name]
    return out


# ----------------------------------------------------------------------------- records


@dataclass
class TrialRecord:
    """Everything recorded about one trial (see the module docstring).

    Attributes:
      trial: the trial id (seeds its keys).
      config: its configuration (PBT: the values in effect now).
      group: its static group (a tuple of the static values' ``repr``).
      status: see the module docstring.
      step: the trial's age in steps at each evaluation.
      objective: the fold-averaged objective at each evaluation.
      folds: per fold, its objective at each evaluation.
      metrics: ``"train/<name>"`` and ``"eval/<name>"`` fold averages at each evaluation.
      steps_trained: training steps applied (the most over folds).
      rung: the highest rung reached (successive halving, ASHA), else ``None``.
      info: method-specific JSON-ready extras.
    """

    trial: int
    config: dict[str, Any]
    group: tuple
    status: str = "queued"
    step: list[int] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    folds: list[list[float]] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    steps_trained: int = 0
    rung: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def age(self) -> int:
        """Steps of the trial's clock (the last evaluation's step, 0 before the first)."""
        return self.step[-1] if self.step else 0

    @property
    def last(self) -> float:
        """The latest fold-averaged objective (NaN before the first evaluation)."""
        return self.objective[-1] if self.objective else math.nan

    def at(self, step: int) -> float:
        """The objective at age ``step`` (NaN if it was not evaluated then)."""
        return self.objective[self.step.index(step)] if step in self.step else math.nan

    @property
    def finished(self) -> bool:
        return self.status in FINAL


class History(Mapping[int, TrialRecord]):
    """Every trial of a search by id, in order of proposal; ``mode`` orients the objective."""

    def __init__(
        self, mode: str = "min", constraints: Callable[[Mapping[str, float]], Any] | None = None
    ) -> None:
        self.mode, self.constraints = mode, constraints
        self._trials: dict[int, TrialRecord] = {}

    def signed(self, value: float) -> float:
        """Minimization key of an objective value under this history's ``mode`` (see :func:`signed`)."""
        return signed(value, self.mode)

    def __getitem__(self, trial: int) -> TrialRecord:
        return self._trials[trial]

    def __iter__(self) -> Iterator[int]:
        return iter(self._trials)

    def __len__(self) -> int:
        return len(self._trials)

    def add(self, trial: int, config: Mapping[str, Any], group: tuple) -> TrialRecord:
        """A new queued trial; ``ValueError`` if the id is taken."""
        if trial in self._trials:
            raise ValueError(f"trial id {trial} was already proposed")
        rec = TrialRecord(int(trial), dict(config), group)
        self._trials[int(trial)] = rec
        return rec

    def remove(self, trial: int) -> None:
        """Forget a trial entirely."""
        del self._trials[trial]

    def with_status(self, *statuses: str) -> list[int]:
        """Ids of the trials with one of ``statuses``."""
        return [t for t, r in self._trials.items() if r.status in statuses]

    def finished(self) -> list[int]:
        """Ids of the trials with a final status."""
        return [t for t, r in self._trials.items() if r.finished]

    def record(
        self,
        trial: int,
        age: int,
        objectives: Sequence[float],
        train: Mapping[str, Sequence[float]],
        evals: Mapping[str, Sequence[float]],
        steps: Sequence[int],
    ) -> None:
        """Append one evaluation of ``trial`` (one value per fold in each sequence)."""
        rec = self._trials[trial]
        rec.step.append(int(age))
        values = [float(v) for v in objectives]
        if not rec.folds:
            rec.folds = [[] for _ in values]
        for series, v in zip(rec.folds, values, strict=True):
            series.append(v)
        rec.objective.append(float(np.mean(values)))
        for prefix, source in (("train/", train), ("eval/", evals)):
            for name, vals in source.items():
                with np.errstate(all="ignore"):
                    value = float(np.mean(np.asarray(vals, np.float64)))
                rec.metrics.setdefault(prefix + name, []).append(value)
        rec.steps_trained = int(max(steps))

    def truncate(self, trial: int) -> None:
        """Forget the evaluations of ``trial`` (it starts again from scratch)."""
        rec = self._trials[trial]
        rec.step, rec.objective, rec.folds, rec.metrics, rec.steps_trained = [], [], [], {}, 0

    # ------------------------------------------------------------------ constraints, scores
    def violation(self, trial: int, index: int = -1) -> float:
        """Total amount by which the constraints are exceeded at evaluation ``index`` of ``trial``
        (0 when feasible, or without constraints)."""
        rec = self._trials[trial]
        if self.constraints is None or not rec.objective:
            return 0.0
        metrics = {"objective": rec.objective[index], **{k: v[index] for k, v in rec.metrics.items()}}
        try:
            values = np.atleast_1d(np.asarray(self.constraints(metrics), np.float64))
        except Exception as err:
            raise ValueError(
                f"constraints failed on the metrics {sorted(metrics)} of trial {trial}: {err}"
            ) from err
        if values.ndim != 1:
            raise ValueError(f"constraints must return a number or a 1-D sequence of numbers, got {values!r}")
        return float(np.sum(np.where(np.isnan(values), np.inf, np.maximum(values, 0.0))))

    def score(self, trial: int, age: int | None = None) -> float:
        """What every trial scheduler compares (smaller is better): the signed objective of
        ``trial`` at ``age`` (default: its latest evaluation); an infeasible evaluation scores
        after every feasible one (``INFEASIBLE`` plus its violation); ``+inf`` when not finite
        or not evaluated at that age."""
        rec = self._trials[trial]
        if not rec.objective or (age is not None and age not in rec.step):
            return math.inf
        i = -1 if age is None else rec.step.index(age)
        key = signed(rec.objective[i], self.mode)
        violation = self.violation(trial, i)
        return key if violation <= 0 or key == math.inf else INFEASIBLE + violation

    # ------------------------------------------------------------------ results
    def result(self, trial: int, patience: int | None = None) -> TrialResult:
        """The :class:`TrialResult` of one trial: objective = the best evaluation with early
        stopping, else the last; the worst value if diverged."""
        rec, mode = self._trials[trial], self.mode
        obj = np.asarray(rec.objective, np.float64)
        status = rec.status if rec.finished else "pruned"
        keys = np.asarray([signed(v, mode) for v in obj]) if obj.size else np.zeros(0)
        i = int(np.argmin(keys)) if obj.size else 0
        best = float(obj[i]) if obj.size else math.nan
        final = float(obj[-1]) if obj.size else math.nan
        worst = math.inf if mode == "min" else -math.inf
        objective = worst if status == "diverged" else (best if patience is not None else final)
        history: dict[str, list[float]] = {"step": list(rec.step), "objective": [float(v) for v in obj]}
        history.update({k: list(v) for k, v in rec.metrics.items()})
        fold_objs = [s[-1] for s in rec.folds] if len(rec.folds) > 1 else None
        best_step = rec.step[i] if rec.step else 0
        at = i if patience is not None else -1  # the evaluation of the returned state
        names = sorted((k for k in rec.metrics if k.startswith("eval/objective_")), key=lambda k: int(k[15:]))
        objectives = tuple(float(rec.metrics[k][at]) for k in names) if names and obj.size else None
        return TrialResult(
            rec.trial, dict(rec.config), status, objective, final, best, best_step, rec.steps_trained,
            history, fold_objs, rec.rung, objectives, self.violation(trial, at) if obj.size else 0.0,
        )  # fmt: skip

    def results(self, patience: int | None = None) -> list[TrialResult]:
        """Results of every trial that was evaluated, by trial id."""
        ids = sorted(t for t, r in self._trials.items() if r.step)
        return [self.result(t, patience) for t in ids]

    def rank(self, trial: int, patience: int | None = None) -> tuple:
        """:func:`rank_key` of a trial's result (smaller is better)."""
        r = self.result(trial, patience)
        return rank_key(r.objective, r.status, self.mode, r.rung, r.trial, r.violation)

    # ------------------------------------------------------------------ JSON
    def to_json(self, space: Space) -> list[dict[str, Any]]:
        """A JSON-ready list of the records (configurations encoded with :func:`encode_config`)."""
        out = []
        for rec in self._trials.values():
            d = {k: getattr(rec, k) for k in ("trial", "status", "step", "objective", "folds", "metrics")}
            d.update(config=encode_config(space, rec.config), group=list(rec.group))
            d.update(steps_trained=rec.steps_trained, rung=rec.rung, info=rec.info)
            out.append(d)
        return out

    @classmethod
    def from_json(
        cls, space: Space, data: Sequence[Mapping[str, Any]], mode: str = "min", constraints: Any = None
    ) -> History:
        h = cls(mode, constraints)
        for d in data:
            rec = h.add(d["trial"], decode_config(space, d["config"]), tuple(d["group"]))
            rec.status, rec.step, rec.objective = d["status"], list(d["step"]), list(d["objective"])
            rec.folds, rec.metrics = (
                [list(s) for s in d["folds"]],
                {k: list(v) for k, v in d["metrics"].items()},
            )
            rec.steps_trained, rec.rung, rec.info = d["steps_trained"], d["rung"], dict(d["info"])
        return h
