r"""Optuna samplers driving the vectorized engine: ask K trials, train them as one chunk, tell.

Optuna is an optional dependency (``pip install jopt[optuna]``; CMA-ES also needs ``cmaes``);
this module imports it only when called.

Algorithm. Let :math:`N` be the requested number of trials and :math:`K` the batch size.
The trials that *count* toward :math:`N` are the set :math:`C`: complete, pruned, running,
queued (``WAITING``, e.g. retries), or failed because training diverged. Every round:

1. fail the study's *stale* trials (heartbeat older than the storage's grace period: their
   process died) and queue their configurations again (at most ``MAX_RETRIES`` times);
2. :math:`r = N - |C \setminus \text{WAITING}|`; stop when :math:`r \le 0`;
3. ask :math:`k = \min(K, r)` trials with fixed distributions (:func:`to_distributions`;
   queued trials come first). Several processes may ask at once, so an asked trial whose rank
   in :math:`C` ordered by trial number (numbers are assigned atomically by the storage) is
   :math:`\ge N` is cancelled (failed with ``user_attrs["jopt_status"] == "cancelled"``). A
   trial's rank never grows (new trials get larger numbers), so no more than :math:`N` trials
   are ever trained;
4. train the asked configurations with :func:`jopt.sweep.run` as one vectorized chunk, with
   ``trial_ids`` = Optuna trial numbers, so a trial's random keys depend only on
   ``(seed, trial number)``, not on which process or batch evaluated it. The chunk is padded to
   :math:`\min(K, N)` members with copies of a configuration (results discarded), so every
   round reuses the same compiled program;
5. report the objective at every segment boundary as intermediate values and tell the final
   objective (early stopping: the best one). A diverged trial is told ``FAIL`` (Optuna's
   convention for a NaN objective; samplers then ignore it) or, with ``diverged_value=v``,
   ``COMPLETE`` with value ``v`` so that the sampler learns to avoid the region.

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
  >>> r.stats["rounds"], [t.trial for t in r.trials]
  (2, [0, 1, 2, 3, 4, 5, 6, 7])
  >>> 0.2 < r.best_config["lr"] < 0.8
  True

With ``storage="sqlite:///sweep.db", study_name="lr"``, several processes share the study and a
rerun resumes it.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from jopt.sweep import engine
from jopt.sweep.optuna_study import (
    SAMPLERS,
    _abandon,
    _ask,
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
from jopt.sweep.samplers import sample
from jopt.sweep.space import Choice, Fixed, Integer, LogUniform, Space, Uniform
from jopt.sweep.task import Task, check_task

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["SAMPLERS", "config_from_params", "create_study", "optuna_search", "to_distributions"]

PAD_ID = 2**31  # trial ids of padding members (never an Optuna trial number in practice)


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
        if isinstance(dim, Fixed):
            continue
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


def _pad(configs: list[dict], space: Space, target: int) -> list[dict]:
    """Padding configurations so that chunk sizes repeat: the whole round up to ``target`` for a
    single static group, else each group up to a power of two (at most ``target``)."""
    groups: dict[tuple, list[dict]] = {}
    for c in configs:
        groups.setdefault(tuple(repr(c[n]) for n in space.static_names), []).append(c)
    pads = []
    for members in groups.values():
        want = target if len(groups) == 1 else min(target, 1 << (len(members) - 1).bit_length())
        pads += [members[0]] * max(0, want - len(members))
    return pads


# ----------------------------------------------------------------------------- tell


def _tell(study, trial, res: TrialResult, diverged_value: float | None, report: bool) -> None:
    optuna = _optuna()
    trial.set_user_attr("jopt_status", res.status)
    trial.set_user_attr("jopt_steps_trained", int(res.steps_trained))
    last = {k: v[-1] for k, v in res.history.items() if k.startswith("eval/") and v and math.isfinite(v[-1])}
    if last:
        trial.set_user_attr("jopt_eval", last)
    if report:
        for step, value in zip(res.history["step"], res.history["objective"], strict=True):
            if math.isfinite(value):
                trial.report(float(value), int(step))
    if res.status == "diverged":
        if diverged_value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, float(diverged_value))
    else:
        study.tell(trial, float(res.objective))


# ----------------------------------------------------------------------------- the search


def optuna_search(
    task: Task,
    space: Space | Mapping[str, Any],
    trials: int,
    *,
    steps: int,
    eval_every: int | None = None,
    batch: int | None = None,
    sampler: str | optuna.samplers.BaseSampler | None = None,
    study: optuna.Study | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    seed: int = 0,
    sampler_seed: int | None = None,
    mode: str = "min",
    diverged_value: float | None = None,
    max_parallel: int | None = None,
    memory_budget: int | str | None = None,
    devices: int | Sequence[Any] | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    folds: int | None = None,
    check_params: bool = True,
    keep_states: str = "best",
    report_intermediate: bool = True,
    heartbeat_interval: int | None = 10,
    grace_period: int | None = None,
    reset_running: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Search with an Optuna sampler, training ``batch`` asked trials at a time as one vectorized chunk.

    See the module docstring for the algorithm, the trial budget and the handling of diverged,
    interrupted and stale trials.

    Args:
      task, space, steps, eval_every, mode, devices, patience, min_delta, folds, check_params:
        as in :func:`jopt.sweep.run`.
      trials: number of trials the study should count when done (trials already in the study,
        e.g. from an interrupted run or another worker, included).
      batch: trials asked and trained together (default 8, or fewer to fit ``max_parallel``).
      sampler: ``"tpe"`` (default), ``"cmaes"``, ``"qmc"`` (scrambled Sobol), ``"random"`` (seeded
        with ``sampler_seed``), or an ``optuna.samplers.BaseSampler``. Not with ``study=``.
      study: an existing ``optuna.Study`` to extend (its own sampler is used).
      storage: an Optuna storage or URL (``"sqlite:///sweep.db"``) shared by workers and resumes;
        a URL gets heartbeats (``heartbeat_interval`` s, stale after ``grace_period`` s, default
        twice the interval). Needs ``study_name``.
      study_name: name of the study to create or load.
      seed: seeds every trial's keys (with its trial number); the same for all workers.
      sampler_seed: seeds a sampler given by name (default ``seed``); give each worker of a shared
        TPE or random study its own (QMC: the same for all).
      diverged_value: ``None`` tells diverged trials ``FAIL``; a number tells them ``COMPLETE``
        with that value.
      max_parallel: most members (trials x folds) in one chunk; ``batch * folds`` must fit.
      memory_budget: as in :func:`jopt.sweep.run`; a budget too small for a whole batch splits
        each round into several chunks.
      keep_states: ``"best"`` keeps the trained state of this call's best trial, ``"none"`` none.
      report_intermediate: report the objective at every segment boundary (``trial.report``).
      reset_running: first fail every RUNNING trial of the study and queue its configuration
        again (after a crash, when no other worker is running).
      progress: a progress bar over the study's trials.

    Returns:
      A :class:`~jopt.sweep.results.SweepResult` of the trials this call trained (``trial`` is the
      Optuna trial number; histories and the best state as in :func:`jopt.sweep.run`); for the
      whole study use the study (``optuna.load_study(study_name=..., storage=...)``).
      ``stats`` adds ``rounds``, ``evaluated``, ``cancelled``, ``requeued``, ``padded``,
      ``study_name``, ``study_trials`` (counted trials at the end) and ``sampler``.

    Raises:
      ValueError: bad arguments (before any compile or study change).
      ImportError: Optuna (or ``cmaes`` for CMA-ES) is not installed.
    """
    t_start = time.perf_counter()
    eval_every, batch = _check_args(
        trials, steps, eval_every, batch, mode, folds, keep_states, patience, min_delta, max_parallel,
        diverged_value,
    )  # fmt: skip
    space = space if isinstance(space, Space) else Space(space)
    dists = to_distributions(space)
    check_task(task, space, sample(space, "random", 1, seed=seed), num_folds=folds)
    if study is not None:
        if storage is not None or study_name is not None or sampler is not None:
            raise ValueError("pass either study= or storage=/study_name=/sampler=, not both")
        _check_direction(study, mode)
    else:
        study = create_study(
            sampler="tpe" if sampler is None else sampler,
            sampler_seed=seed if sampler_seed is None else sampler_seed,
            storage=storage, study_name=study_name, mode=mode, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )  # fmt: skip
    settings = {"steps": steps, "eval_every": eval_every, "seed": seed, "folds": folds, "patience": patience}
    _check_settings(study, dict(settings, params=sorted(dists)))
    run_kw = dict(
        steps=steps, eval_every=eval_every, seed=seed, mode=mode, max_parallel=max_parallel, devices=devices,
        memory_budget=memory_budget, patience=patience, min_delta=min_delta, folds=folds,
        check_params=check_params, progress=False,
    )  # fmt: skip

    host = f"{socket.gethostname()}:{os.getpid()}"
    stats: dict[str, Any] = dict.fromkeys(("rounds", "evaluated", "cancelled", "requeued", "padded"), 0)
    stats.update(compiles=0, compile_seconds=0.0, chunk_sizes=set(), devices=None)
    results: list[TrialResult] = []
    best: tuple[Any, Any] = (None, None)  # (TrialResult, state)
    if reset_running:
        stats["requeued"] += _reset_running(study)
    from tqdm.auto import tqdm

    bar = tqdm(total=trials, disable=not progress, desc="optuna", unit="trial")
    try:
        while True:
            _fail_stale(study)
            active = _counted(study)[1]
            bar.n = min(active, trials)
            bar.refresh()
            if active >= trials:
                break
            asked = _ask(study, dists, min(batch, trials - active), host)  # queued ones first
            asked, excess = _keep_within_budget(study, asked, trials)
            _abandon(study, excess, "cancelled", retry=False)
            stats["cancelled"] += len(excess)
            if not asked:
                continue
            r, real = _evaluate(study, task, space, asked, min(batch, trials), keep_states, run_kw, stats)
            for trial, res in zip(asked, real, strict=True):
                _tell(study, trial, res, diverged_value, report_intermediate)
            best = _better(best, r, real)
            results += real
            if best[0] is not None:
                bar.set_postfix(best=f"{best[0].objective:.4g}", refresh=False)
    finally:
        bar.close()
    stats.update(
        chunk_sizes=sorted(stats["chunk_sizes"]),
        wall_seconds=time.perf_counter() - t_start,
        study_name=study.study_name,
        study_trials=_counted(study)[1],
        sampler=type(study.sampler).__name__,
    )
    logs = tuple(n for n in space if isinstance(space[n], LogUniform))
    states = {best[0].trial: best[1]} if best[0] is not None and best[1] is not None else {}
    results.sort(key=lambda t: t.trial)
    return SweepResult(results, mode, stats, logs, states, task.params)


def _check_args(
    trials, steps, eval_every, batch, mode, folds, keep_states, patience, min_delta, max_parallel, diverged
) -> tuple[int, int]:
    """Validate the arguments (before any compile or study change); ``(eval_every, batch)``."""
    eval_every = engine._check_args(steps, eval_every, mode, folds, keep_states, patience, min_delta)
    if keep_states == "all":
        raise ValueError("keep_states must be 'best' or 'none' (states of all trials are not kept)")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive int, got {trials!r}")
    members = folds or 1
    if batch is None:
        batch = 8 if max_parallel is None else max(1, min(8, max_parallel // members))
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if max_parallel is not None and batch * members > max_parallel:
        raise ValueError(
            f"batch={batch} trials x {members} fold(s) exceed the chunk limit max_parallel={max_parallel}; "
            f"need batch <= {max_parallel // members}"
        )
    if diverged is not None and not math.isfinite(diverged):
        raise ValueError(f"diverged_value must be None or a finite number, got {diverged!r}")
    return eval_every, batch


def _evaluate(study, task, space, asked, target, keep_states, run_kw, stats) -> tuple[SweepResult, list]:
    """Train the asked trials as one chunk (padded to ``target`` members); fail them on an error."""
    configs = [config_from_params(space, t.params) for t in asked]
    pads = _pad(configs, space, target)
    ids = [t.number for t in asked] + [PAD_ID + j for j in range(len(pads))]
    keep = "all" if pads and keep_states == "best" else keep_states  # a pad could be the best
    try:
        with _heartbeat(_heartbeat_storage(study), [t._trial_id for t in asked]):
            r = engine.run(task, space, configs + pads, trial_ids=ids, keep_states=keep, **run_kw)
    except (KeyboardInterrupt, SystemExit):
        stats["requeued"] += _abandon(study, asked, "interrupted", retry=True)
        raise
    except Exception:
        _abandon(study, asked, "error", retry=False)
        raise
    real = [t for t in r.trials if t.trial < PAD_ID]
    stats["rounds"] += 1
    stats["evaluated"] += len(real)
    stats["padded"] += len(pads)
    stats["compiles"] += r.stats["compiles"]
    stats["compile_seconds"] += r.stats["compile_seconds"]
    stats["chunk_sizes"] |= set(r.stats["chunk_sizes"].values())
    stats["devices"] = r.stats["devices"]
    return r, real


def _better(best: tuple, r: SweepResult, real: list[TrialResult]) -> tuple:
    """The better of the kept best (trial, state) and this round's best real trial."""
    if not real:
        return best
    probe = SweepResult(real + ([best[0]] if best[0] is not None else []), r.mode)
    top = probe.ranked()[0]
    if best[0] is not None and top is best[0]:
        return best
    return top, r.states.get(top.trial)
