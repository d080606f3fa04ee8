"""A finished sweep as an Optuna study, and hyperparameter importance through Optuna.

:func:`to_optuna` writes a :class:`~jopt.sweep.results.SweepResult` into an Optuna study (in
memory, or any Optuna storage such as ``"sqlite:///sweep.db"``), so that the tools built on
Optuna -- ``optuna-dashboard sqlite:///sweep.db``, ``optuna.visualization``,
``optuna.importance`` -- show a jopt sweep like any other study. One Optuna trial per jopt
trial, in trial order:

- **params and distributions**: with ``space=`` the space's distributions
  (:func:`~jopt.sweep.optuna_adapter.to_distributions`: fixed values left out, choice values
  that are not primitives stored as labels), widened where a trial's value lies outside them
  (explicit configurations may go beyond the space): a range is extended to the value, a new
  choice label appended. Without a space (a :class:`~jopt.sweep.results.SweepResult` does not
  keep it) they are *inferred* from the values: numbers give an ``IntDistribution`` (all
  integers) or ``FloatDistribution`` over the observed range, log-scaled for the result's
  ``log_scale`` names; anything else a ``CategoricalDistribution`` of the labels seen. A
  hyperparameter with one value in every trial is then taken as fixed: left out of the params
  and kept in the study's user attribute ``jopt_fixed``. Pass the space for its true bounds.
- **intermediate values**: the objective at each evaluation, reported at the trial's step
  (``history["step"]``, ``history["objective"]``), non-finite values included.
- **state and values**: ``"completed"`` and ``"stopped"`` (early stopping, the trial's own
  end: its value is the best objective, as jopt ranks it) are ``COMPLETE`` with the jopt
  objective (``FAIL`` if it is not finite); ``"pruned"`` (ended by the trial scheduler or
  successive halving, also trials an interrupted sweep left unfinished) is ``PRUNED`` with its
  objective when finite, like a trial Optuna's pruners stop, so that Optuna's best trial is
  chosen among the trials that ran their whole budget; ``"diverged"`` is ``FAIL`` without
  value (Optuna's convention for a NaN objective). A multi-objective sweep (``result.directions``) gives a
  multi-objective study whose values are ``TrialResult.objectives`` (the intermediate values
  are objective 0's); in a constrained sweep (some trial with ``violation > 0``) every trial
  gets Optuna's constraint list ``[violation]`` (feasible when ``<= 0``), so that Optuna's best
  trials and the dashboard's feasibility agree with jopt's ranking.
- **user attributes**: ``jopt_trial`` (the jopt trial id), ``jopt_status``, ``steps_trained``,
  ``best_step``, ``final_objective``, ``best_objective``, ``rung`` (successive halving,
  Hyperband, ASHA), ``fold_objectives`` (cross-validation), ``objectives`` (multi-objective),
  ``violation`` (when not 0) and the last value of every ``eval/<metric>``; non-finite
  numbers as the strings ``"inf"``, ``"-inf"``, ``"nan"``. The study's user attributes:
  ``jopt_mode``, ``jopt_fixed``, ``jopt_inferred_distributions``.

The study's direction follows ``result.mode`` (its directions, ``result.directions``).
Writing into an existing study that already has trials is refused unless
``load_if_exists=True``; then the trials already in it (by ``jopt_trial``) are skipped, so
that exporting a partial result and later the finished one adds only the new trials.

:func:`importance` runs :func:`optuna.importance.get_param_importances` on an in-memory
export (fANOVA by default, seeded; PED-ANOVA when scikit-learn is missing). Optuna uses the
``COMPLETE`` trials only: after successive halving, the trials of the last rung.
:func:`plot_importance` draws it as a bar chart.

Example (a 1-D quadratic trained by gradient descent, then its Optuna study in memory):
  >>> import jax.numpy as jnp, optuna
  >>> from jopt import sweep
  >>> from jopt.sweep.export import importance, to_optuna
  >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
  >>> task = sweep.Task(
  ...     init=lambda hp, key: jnp.zeros(()),
  ...     step=lambda hp, x, key: (x - hp["lr"] * 2 * (x - 3.0), {"loss": (x - 3.0) ** 2}),
  ...     evaluate=lambda hp, x: (x - 3.0) ** 2 + 0.01 * hp["c"])
  >>> space = sweep.Space(lr=sweep.loguniform(1e-3, 0.9), c=sweep.uniform(0.0, 1.0), n=2)
  >>> r = sweep.run(task, space, 6, steps=4, eval_every=2, seed=0, devices=1, progress=False)
  >>> study = to_optuna(r, space=space)
  >>> study.direction.name, len(study.trials), study.trials[0].state.name
  ('MINIMIZE', 6, 'COMPLETE')
  >>> study.trials[0].distributions["lr"].log, sorted(study.trials[0].params)
  (True, ['c', 'lr'])
  >>> study.trials[0].intermediate_values == dict(zip(r.trials[0].history["step"],
  ...                                                  r.trials[0].history["objective"]))
  True
  >>> study.best_trial.user_attrs["jopt_trial"] == r.best.trial
  True
  >>> scores = importance(r, space=space)
  >>> sorted(scores), round(sum(scores.values()), 6), scores["lr"] > scores["c"]
  (['c', 'lr'], 1.0, True)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jopt.sweep.optuna_adapter import _label, to_distributions
from jopt.sweep.plots import finish_figure
from jopt.sweep.space import Space

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["importance", "plot_importance", "to_optuna"]

_STATES = {"completed": "COMPLETE", "stopped": "COMPLETE", "pruned": "PRUNED", "diverged": "FAIL"}
_DIRECTIONS = {"min": "minimize", "max": "maximize", "minimize": "minimize", "maximize": "maximize"}


def _optuna():
    try:
        import optuna
    except ImportError as err:  # pragma: no cover - exercised with optuna hidden
        raise ImportError("exporting a sweep to Optuna needs Optuna: pip install 'jopt[optuna]'") from err
    return optuna


# ----------------------------------------------------------------------------- values


def _attr(value: Any) -> Any:
    """A JSON- and dashboard-safe user attribute: finite floats, else ``"inf"``/``"-inf"``/``"nan"``."""
    if isinstance(value, (list, tuple)):
        return [_attr(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else str(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _integral(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _param(value: Any, dist: Any) -> Any:
    """The Optuna param of a jopt value under ``dist`` (labels for choices, plain ints and floats)."""
    dists = _optuna().distributions
    if isinstance(dist, dists.CategoricalDistribution):
        return _label(value)
    if isinstance(dist, dists.IntDistribution):
        return int(value)
    return float(value)


# ----------------------------------------------------------------------------- distributions


def _widen(dist: Any, values: list[Any]) -> Any:
    """``dist`` extended to contain every value (a trial may lie outside its space)."""
    dists = _optuna().distributions
    if not values:
        return dist
    if isinstance(dist, dists.CategoricalDistribution):
        labels = list(dist.choices)
        for v in map(_label, values):
            if not any(type(v) is type(c) and v == c for c in labels):
                labels.append(v)
        return dists.CategoricalDistribution(labels)
    if isinstance(dist, dists.IntDistribution):
        low, high = min(dist.low, *map(int, values)), max(dist.high, *map(int, values))
        return dists.IntDistribution(low, high, log=bool(dist.log) and low >= 1)
    finite = [float(v) for v in values if math.isfinite(float(v))]
    low, high = min(dist.low, *finite), max(dist.high, *finite)
    return dists.FloatDistribution(low, high, log=bool(dist.log) and low > 0)


def _infer(name: str, values: list[Any], log_scale: Sequence[str]) -> Any:
    """A distribution of the observed ``values`` (see the module docstring)."""
    dists = _optuna().distributions
    if values and all(_number(v) and math.isfinite(float(v)) for v in values):
        if all(_integral(v) for v in values):
            low, high = min(map(int, values)), max(map(int, values))
            return dists.IntDistribution(low, high, log=name in log_scale and low >= 1)
        low, high = min(map(float, values)), max(map(float, values))
        return dists.FloatDistribution(low, high, log=name in log_scale and low > 0)
    labels: list[Any] = []
    for v in map(_label, values):
        if not any(type(v) is type(c) and v == c for c in labels):
            labels.append(v)
    return dists.CategoricalDistribution(labels)


def _distributions(result: Any, space: Space | Mapping[str, Any] | None) -> tuple[dict, dict]:
    """``(distributions, fixed)``: the params' distributions and the values left out as fixed."""
    names: list[str] = []
    for t in result.trials:
        names += [n for n in t.hyperparams if n not in names]
    values = {n: [t.hyperparams[n] for t in result.trials if n in t.hyperparams] for n in names}
    if space is not None:
        space = space if isinstance(space, Space) else Space(space)
        dists = to_distributions(space)
        out = {n: _widen(d, values.get(n, [])) for n, d in dists.items()}
        fixed = {n: _attr(_label(values[n][0])) for n in names if n not in out and values[n]}
        return out, fixed
    out, fixed = {}, {}
    for n in names:
        if len({repr(_label(v)) for v in values[n]}) == 1:
            fixed[n] = _attr(_label(values[n][0]))
        else:
            out[n] = _infer(n, values[n], tuple(result.log_scale))
    return out, fixed


# ----------------------------------------------------------------------------- trials


def _user_attrs(t: Any) -> dict[str, Any]:
    attrs = {
        "jopt_trial": int(t.trial),
        "jopt_status": t.status,
        "steps_trained": int(t.steps_trained),
        "best_step": int(t.best_step),
        "final_objective": _attr(t.final_objective),
        "best_objective": _attr(t.best_objective),
    }
    if t.rung is not None:
        attrs["rung"] = int(t.rung)
    if getattr(t, "objectives", None) is not None:
        attrs["objectives"] = _attr(list(t.objectives))
    if getattr(t, "violation", 0.0):
        attrs["violation"] = _attr(t.violation)
    if t.fold_objectives is not None:
        attrs["fold_objectives"] = _attr(list(t.fold_objectives))
    for name, series in t.history.items():
        if name.startswith("eval/") and len(series):
            attrs[name] = _attr(series[-1])
    return attrs


def _values(t: Any, state: Any, multi: bool) -> tuple[Any, list[float] | None]:
    """``(state, values)``: the jopt objective(s) (objective 0 and the others when ``multi``)."""
    TrialState = _optuna().trial.TrialState
    objectives = getattr(t, "objectives", None) if multi else (t.objective,)
    values = None if objectives is None else [float(v) for v in objectives]
    if values is not None and not all(math.isfinite(v) for v in values):
        values = None
    if state == TrialState.FAIL:
        values = None
    elif state == TrialState.COMPLETE and values is None:  # not diverged, yet not finite
        state = TrialState.FAIL
    return state, values


def _frozen_trial(t: Any, dists: dict, where: str, multi: bool, constrained: bool) -> Any:
    """The Optuna ``FrozenTrial`` of one :class:`~jopt.sweep.results.TrialResult`."""
    optuna = _optuna()
    if t.status not in _STATES:
        raise ValueError(f"{where}.status must be one of {sorted(_STATES)}, got {t.status!r}")
    state, values = _values(t, optuna.trial.TrialState[_STATES[t.status]], multi)
    steps, objectives = t.history.get("step", []), t.history.get("objective", [])
    if len(steps) != len(objectives):
        raise ValueError(f"{where}.history: 'step' and 'objective' have different lengths")
    params = {n: _param(t.hyperparams[n], d) for n, d in dists.items() if n in t.hyperparams}
    system_attrs = {}
    if constrained:  # Optuna's constraint list (feasible when <= 0): the total violation
        system_attrs["constraints"] = [min(float(t.violation), sys.float_info.max)]
    return optuna.trial.create_trial(
        state=state,
        values=values,
        params=params,
        distributions={n: dists[n] for n in params},
        user_attrs=_user_attrs(t),
        system_attrs=system_attrs,
        intermediate_values={int(s): float(v) for s, v in zip(steps, objectives, strict=True)},
    )


# ----------------------------------------------------------------------------- public


def _directions(result: Any, directions: str | Sequence[str] | None) -> list[str]:
    """The study's directions: ``result.directions`` (multi-objective) or ``result.mode``."""
    modes = getattr(result, "directions", None)
    if modes is None:
        modes = (getattr(result, "mode", None),)
        if modes[0] not in ("min", "max"):
            raise ValueError(f"result.mode must be 'min' or 'max', got {modes[0]!r}")
    elif any(m not in ("min", "max") for m in modes):
        raise ValueError(f"result.directions must be 'min' / 'max' values, got {modes!r}")
    wanted = [_DIRECTIONS[m] for m in modes]
    if directions is None:
        return wanted
    given = [directions] if isinstance(directions, str) else directions
    if not isinstance(given, Sequence) or any(d not in _DIRECTIONS for d in given):
        raise ValueError(
            f"directions must be 'minimize'/'maximize' ('min'/'max') or a list of them, one per "
            f"objective, got {directions!r}"
        )
    if [_DIRECTIONS[d] for d in given] != wanted:
        raise ValueError(
            f"directions={directions!r} contradicts the sweep's {wanted} (its mode or directions)"
        )
    return wanted


def to_optuna(
    result: Any,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    *,
    space: Space | Mapping[str, Any] | None = None,
    directions: str | Sequence[str] | None = None,
    load_if_exists: bool = False,
) -> optuna.Study:
    """Write a sweep's trials into an Optuna study (see the module docstring for the mapping).

    Args:
      result: a :class:`~jopt.sweep.results.SweepResult` (finished, or partial).
      storage: an Optuna storage or its URL (``"sqlite:///sweep.db"``); default in memory.
      study_name: the study's name (default: Optuna's generated name).
      space: the sweep's :class:`~jopt.sweep.space.Space` for the distributions; without it
        they are inferred from the values.
      directions: the study's direction(s), ``"minimize"``/``"maximize"`` (or ``"min"``/``"max"``),
        or a list of them; default and only accepted value: those of ``result.mode`` (or
        ``result.directions``) -- a check, the study cannot be oriented otherwise.
      load_if_exists: add to an existing study that has trials, skipping the jopt trials it
        already holds (user attribute ``jopt_trial``).

    Returns:
      The ``optuna.Study``.

    Raises:
      ValueError: a bad argument, a study ``study_name`` with trials already (without
        ``load_if_exists``) or of the other direction.
    """
    optuna = _optuna()
    if not hasattr(result, "trials") or not isinstance(result.trials, Sequence):
        raise ValueError(f"result must be a jopt.sweep.SweepResult, got {type(result).__name__}")
    if study_name is not None and not isinstance(study_name, str):
        raise ValueError(f"study_name must be a str or None, got {type(study_name).__name__}")
    if not isinstance(load_if_exists, bool):
        raise ValueError(f"load_if_exists must be a bool, got {load_if_exists!r}")
    if space is not None and not isinstance(space, Mapping):
        raise ValueError(
            f"space must be a jopt.sweep.Space or a dict of dimensions, got {type(space).__name__}"
        )
    wanted = _directions(result, directions)
    dists, fixed = _distributions(result, space)
    constrained = any(getattr(t, "violation", 0.0) > 0 for t in result.trials)
    trials = [
        _frozen_trial(t, dists, f"result.trials[{i}]", len(wanted) > 1, constrained)
        for i, t in enumerate(result.trials)
    ]
    study = optuna.create_study(
        storage=storage, study_name=study_name, directions=wanted, load_if_exists=True
    )
    have = [d.name.lower() for d in study.directions]
    if have != wanted:
        raise ValueError(
            f"study {study.study_name!r} is to {' and '.join(have)}, the sweep to {' and '.join(wanted)}"
        )
    done = {t.user_attrs.get("jopt_trial") for t in study.get_trials(deepcopy=False)}
    if done and not load_if_exists:
        raise ValueError(
            f"study_name={study.study_name!r} already has {len(done)} trials; "
            "pass load_if_exists=True to add the missing ones, or another study_name"
        )
    study.set_user_attr("jopt_mode", result.mode)
    study.set_user_attr("jopt_fixed", fixed)
    study.set_user_attr("jopt_inferred_distributions", space is None)
    study.add_trials([t for t in trials if t.user_attrs["jopt_trial"] not in done])
    return study


def _evaluator(evaluator: Any) -> Any:
    importance_mod = _optuna().importance
    if evaluator is not None:
        if not isinstance(evaluator, importance_mod.BaseImportanceEvaluator):
            raise ValueError(
                "evaluator must be an optuna.importance.BaseImportanceEvaluator, "
                f"got {type(evaluator).__name__}"
            )
        return evaluator
    try:
        import sklearn  # noqa: F401  (fANOVA's random forest)
    except ImportError:  # pragma: no cover - scikit-learn is installed with the examples
        return importance_mod.PedAnovaImportanceEvaluator()
    return importance_mod.FanovaImportanceEvaluator(seed=0)


def importance(
    result: Any,
    *,
    space: Space | Mapping[str, Any] | None = None,
    evaluator: Any = None,
    objective: int = 0,
) -> dict[str, float]:
    """Hyperparameter importances of a sweep, most important first, summing to 1.

    :func:`optuna.importance.get_param_importances` on an in-memory :func:`to_optuna` export
    of ``result`` (``space`` as there), over its ``COMPLETE`` trials (completed or early
    stopped). ``evaluator``: an ``optuna.importance`` evaluator; default fANOVA with seed 0
    (PED-ANOVA without scikit-learn). ``objective``: which one, in a multi-objective sweep.

    Raises:
      ValueError: a bad argument, fewer than two completed trials, or no hyperparameter that varies.
    """
    optuna = _optuna()
    chosen = _evaluator(evaluator)
    study = to_optuna(result, space=space)
    count = len(study.directions)
    if isinstance(objective, bool) or not isinstance(objective, int) or not 0 <= objective < count:
        raise ValueError(
            f"objective must be an int in [0, {count - 1}] (the sweep's objectives), got {objective!r}"
        )
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        raise ValueError(
            f"importance needs at least two completed or stopped trials, result has {len(complete)}"
        )
    if not complete[0].distributions:
        raise ValueError("importance needs a hyperparameter that varies; the sweep's are all fixed")
    target = (lambda t: t.values[objective]) if count > 1 else None
    scores = optuna.importance.get_param_importances(study, evaluator=chosen, target=target)
    return {name: float(v) for name, v in scores.items()}


def plot_importance(
    result: Any,
    path: str | Path | None = None,
    *,
    space: Space | Mapping[str, Any] | None = None,
    evaluator: Any = None,
    objective: int = 0,
):
    """A horizontal bar chart of :func:`importance` (matplotlib ``Figure``; saved if ``path``)."""
    import matplotlib.pyplot as plt

    scores = importance(result, space=space, evaluator=evaluator, objective=objective)
    names = list(scores)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    ax.barh(names, [scores[n] for n in names], color="tab:blue")
    for y, n in enumerate(names):
        ax.text(scores[n], y, f" {scores[n]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1e-9, max(scores.values())) * 1.15)
    ax.set_xlabel("importance (normalized to sum 1)")
    ax.set_title(f"hyperparameter importance ({len(result.trials)} trials)")
    fig.tight_layout()
    return finish_figure(fig, path, close=True)
