r"""Optuna samplers and pruners driving the vectorized engine: ask, train in a chunk, report, tell.

Optuna is an optional dependency (``pip install jopt[optuna]``; CMA-ES also needs ``cmaes``);
this module imports it only when called.

:func:`optuna_search` runs an :class:`OptunaSampler` -- the study seen through both engine
protocols (:mod:`jopt.sweep.samplers`, :mod:`jopt.sweep.scheduler`) -- on the engine
(:func:`jopt.sweep.search`). Let :math:`N` be the requested number of trials and :math:`K` the
batch size (most trials training at once). The trials that *count* toward :math:`N` are the set
:math:`C`: complete, pruned, running, queued (``WAITING``, e.g. retries), or failed because
training diverged (a queued or running second copy of a retry, see 1., does not count).
Whenever a chunk has free slots (at the start, and each time a trial finishes, diverges or is
pruned):

1. fail the study's *stale* trials (heartbeat older than the storage's grace period: their
   process died) and queue their configurations again (at most ``MAX_RETRIES`` times; should
   two workers fail the same trial at once and both queue it -- a storage without row locks --
   only the first copy counts);
2. :math:`r = N - |C \setminus \text{WAITING}|`; nothing more is asked when :math:`r \le 0`.
   Then, if this worker has no trial in training but some of :math:`C` are other workers'
   ``RUNNING`` trials that will end -- asked by a worker that beats their heartbeat -- it
   *waits*: it polls every half second, repeating 1. and 2.,
   until they are finished (a live worker: the budget is met) or failed as stale (a dead
   worker: their queued retries make :math:`r > 0` and this worker asks them). So the study
   ends with exactly :math:`N` counted trials even when a worker dies, and a search returns
   only when none of its budget is still in other workers' hands. The wait ends at the
   ``timeout``, or on ``KeyboardInterrupt``. Without heartbeats (``heartbeat_interval=None``,
   a storage object without them, or the in-memory storage) a dead worker cannot be told from
   a slow one: other workers' running trials count as finished, nothing waits, and trials a
   killed process left ``RUNNING`` stay counted until ``reset_running=True``;
3. ask :math:`k = \min(\text{free}, K - \text{training}, r)` trials with fixed distributions
   (:func:`to_distributions`; queued trials come first). Several processes may ask at once, so
   an asked trial whose rank in :math:`C` ordered by trial number (numbers are assigned
   atomically by the storage) is :math:`\ge N` is cancelled (failed with
   ``user_attrs["jopt_status"] == "cancelled"``). A trial's rank never grows (new trials get
   larger numbers), so no more than :math:`N` trials are ever trained;
4. the asked configurations fill the free slots (their state built by the compiled ``init``,
   their values written into the traced arrays: no recompile), with trial id = Optuna trial
   number, so a trial's random keys depend only on ``(seed, trial number)``, not on which
   process or chunk trained it;
5. after every segment each trial's objective is reported (``trial.report(value, step)``) and,
   with a pruner, ``trial.should_prune()`` ends it (told ``PRUNED``; its slot takes the next
   trial); a finished trial is told its objective (early stopping: the best one). A diverged
   trial is told ``FAIL`` (Optuna's convention for a NaN objective; samplers then ignore it) or,
   with ``diverged_value=v``, ``COMPLETE`` with value ``v`` so that the sampler learns to avoid
   the region. A trial that another worker failed as stale while it trained here (this process
   stalled past the grace period) is pruned and not told: its retry is queued already.

Resuming: call again with the same storage and study name; trials already counted are not
redone. Trials left ``RUNNING`` by a killed process are failed once their heartbeat is stale
(storages given as a URL get ``heartbeat_interval`` and ``grace_period``), or at once with
``reset_running=True`` (when no other worker is running). A ``KeyboardInterrupt`` fails the
in-flight trials and queues their configurations for the next call.

Example (a 1-D quadratic trained by gradient descent; the best step sizes are near 0.5):
  >>> import jax.numpy as jnp, optuna
  >>> from jopt import sweep
  >>> from jopt.sweep.optuna_adapter import optuna_search
  >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
  >>> task = sweep.Task(
  ...     init=lambda hp, key: jnp.zeros(()),
  ...     step=lambda hp, x, key: (x - hp["lr"] * 2 * (x - 3.0), {"loss": (x - 3.0) ** 2}),
  ...     evaluate=lambda hp, x: (x - 3.0) ** 2)
  >>> space = sweep.Space(lr=sweep.loguniform(1e-3, 0.9))
  >>> r = optuna_search(task, space, 8, batch=4, steps=5, sampler="qmc", seed=0, progress=False)
  >>> r.stats["rounds"], [t.trial for t in r.trials], r.stats["compiles"]
  (2, [0, 1, 2, 3, 4, 5, 6, 7], 2)
  >>> 0.2 < r.best_config["lr"] < 0.8
  True

With ``storage="sqlite:///sweep.db", study_name="lr"``, several processes share the study and a
rerun resumes it; ``pruner=optuna.pruners.MedianPruner()`` prunes through the engine.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from jopt.sweep.engine import search
from jopt.sweep.options import check_int, validate_options
from jopt.sweep.optuna_study import (
    SAMPLERS,
    _abandon,
    _ask,
    _awaited,
    _beat,
    _check_direction,
    _check_settings,
    _counted,
    _fail_stale,
    _heartbeat,
    _heartbeat_storage,
    _keep_within_budget,
    _optuna,
    _reset_running,
    create_study,
)
from jopt.sweep.results import SweepResult, TrialResult
from jopt.sweep.samplers import Proposal, Sampler, sample
from jopt.sweep.scheduler import PRUNE, TrialScheduler
from jopt.sweep.space import Choice, Fixed, Integer, Space, Uniform
from jopt.sweep.task import Task, check_task

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = [
    "SAMPLERS",
    "OptunaSampler",
    "config_from_params",
    "create_study",
    "optuna_search",
    "to_distributions",
]


# ----------------------------------------------------------------------------- space <-> distributions


def _label(value: Any) -> Any:
    """An Optuna-storable label of a choice value (the value itself when it is a primitive)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return repr(value)


def to_distributions(space: Space | Mapping[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions of a search space's free dimensions (fixed values are left out).

    ``uniform -> FloatDistribution``, ``loguniform -> FloatDistribution(log=True)``,
    ``integer -> IntDistribution`` (``log`` kept), ``choice -> CategoricalDistribution``
    whose choices are the values (``None``, bools, numbers, strings) or, for other values,
    labels: ``module.qualname`` of functions and classes, else ``repr``.

    Raises:
      ValueError: two choice values with the same label, or a dimension type Optuna cannot express.

    Example:
      >>> from jopt import sweep
      >>> d = to_distributions(sweep.Space(lr=sweep.loguniform(1e-4, 1e-1), n=sweep.integer(1, 4), bs=32))
      >>> d["lr"].log, d["n"].high, "bs" in d
      (True, 4, False)
    """
    dist = _optuna().distributions
    space = space if isinstance(space, Space) else Space(space)
    out = {}
    for name, dim in space.items():
        if isinstance(dim, Fixed):
            continue
        if isinstance(dim, Uniform):  # LogUniform included
            out[name] = dist.FloatDistribution(float(dim.low), float(dim.high), log=bool(dim.log))
        elif isinstance(dim, Integer):
            out[name] = dist.IntDistribution(int(dim.low), int(dim.high), log=bool(dim.log))
        elif isinstance(dim, Choice):
            labels = tuple(_label(v) for v in dim.values)
            if len(set(map(repr, labels))) != len(labels):
                raise ValueError(f"{name}: choice values {list(dim.values)!r} have equal labels {labels!r}")
            out[name] = dist.CategoricalDistribution(labels)
        else:
            raise ValueError(f"{name}: dimension {type(dim).__name__} has no Optuna distribution")
    return out


def config_from_params(space: Space, params: Mapping[str, Any]) -> dict[str, Any]:
    """The jopt configuration of an Optuna trial's ``params`` (labels mapped back, fixed values filled).

    Example:
      >>> from jopt import sweep
      >>> space = sweep.Space(opt=sweep.choice(["adam", "sgd"], static=True), n=sweep.integer(1, 3), bs=8)
      >>> config_from_params(space, {"opt": "sgd", "n": 2})
      {'opt': 'sgd', 'n': 2, 'bs': 8}
    """
    config = {}
    for name, dim in space.items():
        if isinstance(dim, Fixed) or (name not in params and space.condition_of(name) is not None):
            continue  # another branch's name: validate_config gives it its placeholder
        value = params[name]
        if isinstance(dim, Choice):
            labels = [_label(v) for v in dim.values]
            hits = [i for i, lab in enumerate(labels) if type(lab) is type(value) and lab == value]
            if not hits:
                raise ValueError(f"{name}: {value!r} is not one of the choices {labels!r}")
            value = dim.values[hits[0]]
        elif isinstance(dim, Integer):
            value = int(value)
        else:
            value = float(value)
        config[name] = value
    return space.validate_config(config)


def conditional_suggest(space: Space, dists: Mapping[str, Any]) -> Callable[[Any], None]:
    """Define-by-run suggestions for a conditional space: each branch choice, then only the
    chosen branches' names (and the unconditional ones), so Optuna's samplers see the
    conditional structure (TPE models each name over the trials where it is active)."""

    kinds = _optuna().distributions

    def suggest(trial: Any) -> None:
        chosen = {c: trial.suggest_categorical(c, dists[c].choices) for c in space.conditions}
        for name in space.active_names(chosen):  # active_names reads only the branch choices
            d = dists.get(name)
            if d is None or name in chosen:
                continue
            if isinstance(d, kinds.FloatDistribution):
                trial.suggest_float(name, d.low, d.high, log=d.log)
            elif isinstance(d, kinds.IntDistribution):
                trial.suggest_int(name, d.low, d.high, log=d.log)
            else:
                trial.suggest_categorical(name, d.choices)

    return suggest


# ----------------------------------------------------------------------------- tell


def _tell(study, trial, res: TrialResult, diverged_value: float | None, constrained: bool = False) -> None:
    optuna = _optuna()
    trial.set_user_attr("jopt_status", res.status)
    trial.set_user_attr("jopt_steps_trained", int(res.steps_trained))
    last = {k: v[-1] for k, v in res.history.items() if k.startswith("eval/") and v and math.isfinite(v[-1])}
    if last:
        trial.set_user_attr("jopt_eval", last)
    if constrained:
        trial.set_user_attr("jopt_constraint", [float(res.violation)])  # read by constraint_values
        if hasattr(trial, "set_constraint"):  # Optuna >= 5
            trial.set_constraint("jopt_violation", float(res.violation))
    if res.status == "diverged":
        if diverged_value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, [float(diverged_value)] * len(study.directions))
    elif res.status == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    elif res.objectives is not None:  # a multi-objective study: every objective
        study.tell(trial, [float(v) for v in res.objectives])
    else:
        study.tell(trial, float(res.objective))


# ----------------------------------------------------------------------------- sampler and pruner


class OptunaSampler(Sampler, TrialScheduler):
    """An Optuna study as both protocols: ``propose`` asks it for trials (at most ``batch``
    training at once, the study's budget of ``trials`` counted across workers; when the budget
    is reached only by other workers' running trials, it waits for them -- until ``deadline``, a
    :func:`time.perf_counter` value, if given), ``decide`` reports each segment's objective as an
    intermediate value and prunes when the study's pruner says so (``prune``), ``tell`` tells the
    final value."""

    def __init__(self, study, space: Space, trials: int, batch: int, *, diverged_value: float | None,
                 report: bool, prune: bool, patience: int | None, deadline: float | None = None,
                 constrained: bool = False):  # fmt: skip
        self.study, self.space, self.trials, self.batch = study, space, trials, batch
        self.dists = to_distributions(space)
        self._suggest = conditional_suggest(space, self.dists) if space.conditions else None
        self.diverged_value, self.report, self.prune, self.patience = diverged_value, report, prune, patience
        self.deadline, self.constrained = deadline, constrained
        self.host = f"{socket.gethostname()}:{os.getpid()}"
        self.in_flight: dict[int, Any] = {}
        self.lost: set[int] = set()  # in training here, but failed by another worker (stale)
        self.stats = dict.fromkeys(("rounds", "cancelled", "requeued", "waits", "lost"), 0)

    def propose(self, history, k: int) -> list[Proposal]:
        k = min(k, self.batch - len(self.in_flight))
        while k > 0:
            _fail_stale(self.study)
            trials = self.study.get_trials(deepcopy=False)
            active = _counted(self.study, trials)[1]
            if active >= self.trials:
                if self.in_flight or not self._wait(trials):
                    return []
                continue
            n = min(k, self.trials - active)
            asked = _ask(self.study, self.dists, n, self.host, self._suggest)  # queued first
            asked, excess = _keep_within_budget(self.study, asked, self.trials)
            _abandon(self.study, excess, "cancelled", retry=False)
            self.stats["cancelled"] += len(excess)
            if asked:
                self.stats["rounds"] += 1
                self.in_flight.update({t.number: t for t in asked})
                return [Proposal(config_from_params(self.space, t.params), t.number) for t in asked]
        return []

    def _wait(self, trials) -> bool:
        """Sleep one poll (half a second) if other workers' running trials make up the budget
        and will end; False (do not wait) otherwise."""
        if not _awaited(self.study, trials, list(self.in_flight)):
            return False
        pause = 0.5
        if self.deadline is not None:
            pause = min(pause, self.deadline - time.perf_counter())
            if pause <= 0:
                return False
        time.sleep(pause)
        self.stats["waits"] += 1
        return True

    def decide(self, history, trials) -> dict[int, str]:
        out = {}
        finished = _optuna().exceptions.UpdateFinishedTrialError
        for t in trials:
            rec, trial = history[t], self.in_flight[t]
            if self.report and math.isfinite(rec.last):
                try:
                    trial.report(float(rec.last), int(rec.age))
                    if self.prune and rec.status == "running" and trial.should_prune():
                        out[t] = PRUNE
                except finished:  # another worker took it for dead: its retry is queued
                    self.lost.add(t)
                    out[t] = PRUNE
        return out

    def tell(self, history, trial: int) -> None:
        t = self.in_flight.pop(trial, None)
        if t is None:
            return
        if trial not in self.lost:
            try:
                _tell(
                    self.study, t, history.result(trial, self.patience), self.diverged_value, self.constrained
                )
                return
            except _optuna().exceptions.UpdateFinishedTrialError:
                pass
        self.lost.discard(trial)
        self.stats["lost"] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"in_flight": sorted(self.in_flight), "stats": self.stats}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Re-attach to the trials in training at the checkpoint that are still RUNNING."""
        optuna = _optuna()
        self.stats.update(state["stats"])
        storage, study_id = self.study._storage, self.study._study_id
        for number in state["in_flight"]:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
            if storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING:
                self.in_flight[int(number)] = optuna.trial.Trial(self.study, trial_id)
        _beat(_heartbeat_storage(self.study), [t._trial_id for t in self.in_flight.values()])

    def abandoned(self, history) -> list[int]:
        return [t for t in history if not history[t].finished and t not in self.in_flight]


# ----------------------------------------------------------------------------- the search


def _check_single_process() -> None:
    """Workers of a shared study are independent processes, not one ``jax.distributed`` job."""
    import jax

    if jax.process_count() > 1:
        raise ValueError(
            f"optuna_search in a job of {jax.process_count()} JAX processes: Optuna workers are "
            "independent -- start one process per host or GPU WITHOUT jax.distributed.initialize(), "
            "all with the same storage= and study_name= (or use sweep.run / sweep.search, which run "
            "one sweep over every process of a jax.distributed job)"
        )


def optuna_search(
    task: Task,
    space: Space | Mapping[str, Any],
    trials: int,
    *,
    steps: int,
    batch: int | None = None,
    sampler: str | optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    prune: bool | None = None,
    study: optuna.Study | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    sampler_seed: int | None = None,
    diverged_value: float | None = None,
    report_intermediate: bool = True,
    heartbeat_interval: int | None = 10,
    grace_period: int | None = None,
    reset_running: bool = False,
    **options: Any,
) -> SweepResult:
    """Search with an Optuna sampler (and pruner) driving the vectorized engine.

    See the module docstring for the algorithm, the trial budget and the handling of diverged,
    interrupted and stale trials.

    Args:
      task, space, steps: as in :func:`jopt.sweep.run`.
      trials: number of trials the study should count when done (trials already in the study,
        e.g. from an interrupted run or another worker, included). With heartbeats, the call
        returns once no other worker's running trial is part of them (it waits for them to
        finish, or to go stale and be retried here).
      batch: most trials training at once (default 8); a slot that frees up is refilled with a
        newly asked trial.
      sampler: ``"tpe"`` (default), ``"nsga2"`` (NSGA-II: with ``directions=``, a multi-objective
        study told every objective; TPE handles several objectives too), ``"cmaes"``, ``"qmc"``
        (scrambled Sobol), ``"random"`` (seeded
        with ``sampler_seed``), or an ``optuna.samplers.BaseSampler``. Not with ``study=``.
      pruner: an ``optuna.pruners.BasePruner`` (e.g. ``MedianPruner``, ``SuccessiveHalvingPruner``,
        ``HyperbandPruner``): a trial it prunes after a segment ends, and its slot takes the next
        trial. Not with ``study=``.
      prune: whether to ask the study's pruner after every segment (default: when ``pruner`` is
        given; ``prune=True`` with ``study=`` uses that study's own pruner).
      study: an existing ``optuna.Study`` to extend (its own sampler, and pruner if ``prune``).
      storage: an Optuna storage or URL (``"sqlite:///sweep.db"``) shared by workers and resumes;
        a URL gets heartbeats (``heartbeat_interval`` s, stale after ``grace_period`` s, default
        twice the interval). Needs ``study_name``.
      study_name: name of the study to create or load.
      sampler_seed: seeds a sampler given by name (default ``seed``); give each worker of a shared
        TPE or random study its own (QMC: the same for all).
      diverged_value: ``None`` tells diverged trials ``FAIL``; a number tells them ``COMPLETE``
        with that value.
      report_intermediate: report the objective after every segment (``trial.report``; needed by
        pruners).
      reset_running: first fail every RUNNING trial of the study and queue its configuration
        again (after a crash, when no other worker is running).
      **options: the shared options of :func:`jopt.sweep.options.make_options` (``eval_every``,
        ``seed`` -- every trial's keys come from it and its trial number, the same for all
        workers --, ``mode``, ``folds``, ``patience``, ``memory_budget``, ``checkpoint_dir``, ...).

    Returns:
      A :class:`~jopt.sweep.results.SweepResult` of the trials this call trained (``trial`` is the
      Optuna trial number); for the whole study use the study. ``stats`` adds ``rounds`` (asks
      that got trials), ``evaluated``, ``cancelled``, ``requeued``, ``waits`` (polls while
      other workers' trials made up the budget), ``lost`` (trials another worker failed as
      stale while they trained here), ``study_name``, ``study_trials`` (counted trials at the
      end) and ``sampler``.

    With ``checkpoint_dir`` (and a persistent ``storage``), an interrupted call leaves its
    trials RUNNING and a rerun continues them from the checkpoint (those another worker has
    failed meanwhile are dropped); without it, they are failed (and, on ``KeyboardInterrupt``,
    queued again).

    Raises:
      ValueError: bad arguments (before any compile or study change).
      ImportError: Optuna (or ``cmaes`` for CMA-ES) is not installed.
    """
    t_start = time.perf_counter()
    opts = validate_options(options, steps=steps)
    trials = check_int("trials", trials)
    batch = 8 if batch is None else check_int("batch", batch)
    if diverged_value is not None and not math.isfinite(diverged_value):
        raise ValueError(f"diverged_value must be None or a finite number, got {diverged_value!r}")
    prune = pruner is not None if prune is None else bool(prune)
    if prune and not report_intermediate:
        raise ValueError("a pruner needs the intermediate values: report_intermediate must be True")
    _check_single_process()
    objectives = opts.directions or opts.mode
    if opts.directions is not None:
        if prune:
            raise ValueError("Optuna prunes single-objective studies only: no pruner with directions=")
        report_intermediate = False  # Optuna records no intermediate values of multi-objective trials
    space = space if isinstance(space, Space) else Space(space)
    dists = to_distributions(space)
    check_task(task, space, sample(space, "random", 1, seed=opts.seed), num_folds=opts.folds)
    if study is not None:
        if storage is not None or study_name is not None or sampler is not None or pruner is not None:
            raise ValueError("pass either study= or storage=/study_name=/sampler=/pruner=, not both")
        _check_direction(study, objectives)
    else:
        study = create_study(
            sampler="tpe" if sampler is None else sampler,
            sampler_seed=opts.seed if sampler_seed is None else sampler_seed, pruner=pruner,
            storage=storage, study_name=study_name, mode=objectives, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period, constrained=opts.constraints is not None,
        )  # fmt: skip
    settings = {"steps": steps, "eval_every": opts.eval_every, "seed": opts.seed, "folds": opts.folds,
                "patience": opts.patience}  # fmt: skip
    _check_settings(study, dict(settings, params=sorted(dists)))
    deadline = None if opts.timeout is None else t_start + opts.timeout
    smp = OptunaSampler(study, space, trials, batch, diverged_value=diverged_value,
                        report=report_intermediate, prune=prune, patience=opts.patience,
                        deadline=deadline, constrained=opts.constraints is not None)  # fmt: skip
    if reset_running:
        smp.stats["requeued"] += _reset_running(study)
    method = {"name": "optuna", "study": study.study_name, "trials": trials, "batch": batch}
    storage_hb = _heartbeat_storage(study)
    try:
        with _heartbeat(storage_hb, lambda: [t._trial_id for t in list(smp.in_flight.values())]):
            result = search(task, space, smp, smp, parallel=batch, method=method, steps=steps, **options)
    except (KeyboardInterrupt, SystemExit):
        if opts.checkpoint_dir is None:  # else they continue from the checkpoint
            smp.stats["requeued"] += _abandon(study, list(smp.in_flight.values()), "interrupted", retry=True)
        raise
    except Exception:
        if opts.checkpoint_dir is None:
            _abandon(study, list(smp.in_flight.values()), "error", retry=False)
        raise
    result.stats.update(
        smp.stats, evaluated=len(result.trials), wall_seconds=time.perf_counter() - t_start,
        study_name=study.study_name, study_trials=_counted(study)[1], sampler=type(study.sampler).__name__,
    )  # fmt: skip
    return result
