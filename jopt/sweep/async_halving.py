"""ASHA -- asynchronous successive halving (Li et al., 2020) -- with slots that refill.

Rungs ``r_0 < r_1 < ... < r_K = max_steps`` (:func:`~jopt.sweep.halving.rung_budgets`). Every
trial trains in a slot of a compiled chunk; when it reaches a rung budget ``r_k`` (``k < K``) its
objective joins the rung's record and the trial is *promoted* (keeps training, in the same slot)
if it is among the best ``max(1, floor(n_k / eta))`` of the ``n_k`` objectives recorded at rung
``k`` so far, else it is *pruned*: its slot is re-initialised in place with the next
configuration the sampler proposes (its state built by the jitted ``init`` for that slot, its
hyperparameters written into the traced arrays) -- no recompile, the chunk stays full::

    on trial t reaching r_k, k < K:
        R_k <- R_k + [f_t]                         (objectives recorded at rung k, this one included)
        m   <- max(1, floor(|R_k| / eta))
        if f_t is among the m best of R_k: continue t          (promoted to rung k + 1)
        else: prune t; refill its slot with a new trial         (rung 0)

This is the early-stopping form of ASHA (as in Ray Tune's ``ASHAScheduler`` and Optuna's
``SuccessiveHalvingPruner``, whose rule for fewer than ``eta`` recorded trials -- promote only the
best so far -- it follows): a trial is decided when it reaches a rung, never paused and resumed
later. Trials reaching a rung at the same segment boundary are compared with each other. With a
``timeout`` the search runs until the time is spent (proposals never end unless ``trials`` is
given), so the whole budget is used; ``stats["utilization"]`` is the fraction of slot-steps that
trained a trial.

Results rank trials that reached a higher rung first (``TrialResult.rung``), then by objective.

Example (the best ``x`` is 0.3; 12 trials, 4 slots):
  >>> import jax.numpy as jnp
  >>> from jopt import sweep
  >>> task = sweep.Task(lambda hp, k: jnp.float32(0.0),
  ...                   lambda hp, w, k: (w + 1.0, {"loss": w}),
  ...                   lambda hp, w: (hp["x"] - 0.3) ** 2 + 1.0 / (1.0 + w))
  >>> space = sweep.Space(x=sweep.uniform(0.0, 1.0))
  >>> r = sweep.asha(task, space, 12, max_steps=9, min_steps=1, eta=3, parallel=4, devices=1,
  ...                progress=False)
  >>> r.stats["compiles"], r.stats["refills"], round(r.best_config["x"], 2), r.best.rung
  (3, 8, 0.27, 2)
  >>> [t.rung for t in r.trials], r.stats["trial_steps"], r.stats["slot_steps"]
  ([0, 2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], 22, 36)

Three programs (``init``, ``segment``, and ``update`` for the eight refills) serve all 12 trials;
the last segments run with empty slots, as no trials are left (utilization 22 / 36; with a
``timeout`` and no ``trials`` limit the chunk stays full).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jopt.sweep.engine import as_space, configs_of, search
from jopt.sweep.halving import _check_eta, rung_budgets
from jopt.sweep.history import History, encode_config
from jopt.sweep.options import check_int, check_option_names, validate_options
from jopt.sweep.results import SweepResult
from jopt.sweep.samplers import ListSampler, StreamSampler
from jopt.sweep.scheduler import PRUNE, TrialScheduler
from jopt.sweep.space import Space
from jopt.sweep.task import Task, check_task_object

__all__ = ["ASHA", "asha"]


class ASHA(TrialScheduler):
    """The ASHA trial scheduler over rung ``budgets`` (see the module docstring)."""

    def __init__(self, budgets: Sequence[int], eta: float = 3):
        self.budgets, self.eta = [int(b) for b in budgets], _check_eta(eta)

    def decide(self, history: History, trials: Sequence[int]) -> dict[int, str]:
        out = {}
        for t in trials:
            rec = history[t]
            rec.rung = sum(b <= rec.age for b in self.budgets) - 1 if rec.age >= self.budgets[0] else 0
            if rec.status != "running" or rec.age not in self.budgets[:-1]:
                continue
            # every trial that reached this budget, this one included (its record ends there or later)
            recorded = sorted(history.score(r.trial, rec.age) for r in history.values() if rec.age in r.step)
            m = max(1, math.floor(len(recorded) / self.eta + 1e-9))
            if history.score(t) > recorded[m - 1]:
                out[t] = PRUNE
        return out


ASHA_ARGS = ("trials", "max_steps", "min_steps", "budgets", "eta", "eval_every", "method", "parallel")


def asha(
    task: Task,
    space: Space | Mapping[str, Any],
    trials: int | Sequence[Mapping[str, Any]] | None = None,
    *,
    max_steps: int | None = None,
    min_steps: int | None = None,
    budgets: Sequence[int] | None = None,
    eta: float = 3,
    eval_every: int | None = None,
    method: str = "random",
    parallel: int | None = None,
    **options: Any,
) -> SweepResult:
    """Asynchronous successive halving with slot refill (see the module docstring).

    Args:
      task, space: as for :func:`jopt.sweep.run`.
      trials: number of configurations to draw with ``method``, an explicit list, or ``None``: draw
        without end (give a ``timeout``).
      max_steps, min_steps, budgets, eta, eval_every: the rung ladder, as for
        :func:`~jopt.sweep.halving.successive_halving`.
      method: ``"random"``, ``"sobol"`` or ``"halton"``.
      parallel: trials training at once (chunk size; default ``max_parallel`` or 64, at most
        ``trials``).
      **options: the shared options of :func:`jopt.sweep.options.make_options` (``timeout``,
        ``seed``, ``mode``, ``max_parallel``, ``memory_budget``, ``devices``, ``folds``,
        ``patience``, ``checkpoint_dir``, ``keep_states``, ``progress``, ``check_params``).

    Returns:
      A :class:`~jopt.sweep.results.SweepResult`; ``TrialResult.rung`` is the highest rung reached;
      ``stats`` adds ``budgets``, ``eta``, ``trial_steps``, ``slot_steps`` and ``utilization``.
    """
    t_start = time.perf_counter()
    check_option_names(options, where="asha", own=ASHA_ARGS, fixed=("steps", "eval_every"))
    eta = _check_eta(eta)
    ladder, e = rung_budgets(max_steps, min_steps=min_steps, eta=eta, eval_every=eval_every, budgets=budgets)
    opts = validate_options(options, where="asha", own=ASHA_ARGS, steps=ladder[-1], eval_every=e)
    check_task_object(task)
    space = as_space(space)
    if trials is None or isinstance(trials, (int, np.integer)):
        if trials is not None:
            trials = check_int("trials", trials)
        sampler = StreamSampler(space, method, opts.seed, trials)
        listed = None
    else:
        configs = configs_of(space, trials, method, opts.seed, 5)
        sampler, listed = ListSampler(configs), [encode_config(space, c) for c in configs]
    if parallel is None:
        parallel = min(opts.max_parallel // opts.members_per_trial if opts.max_parallel else 64,
                       sampler.total or 64)  # fmt: skip
    parallel = check_int("parallel", parallel)
    described = {"name": "asha", "budgets": ladder, "eta": eta, "method": method, "trials": trials
                 if listed is None else listed, "parallel": parallel}  # fmt: skip
    result = search(task, space, sampler, ASHA(ladder, eta), parallel=parallel, method=described,
                    steps=ladder[-1], eval_every=e, **options)  # fmt: skip
    result.stats.update(budgets=ladder, eta=eta, wall_seconds=time.perf_counter() - t_start)
    return result
