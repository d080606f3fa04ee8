"""``jopt.sweep.search`` -- any sampler with any trial scheduler on the one execution path -- and
``jopt.sweep.run``, the grid / random / quasi-random front-end.

Every search method is a thin front-end over :func:`search`: a sampler (the ask/tell protocol of
:mod:`jopt.sweep.samplers`) and a trial scheduler (the protocol of :mod:`jopt.sweep.scheduler`);
:mod:`jopt.sweep.executor` runs them with the shared options of :mod:`jopt.sweep.options`.

Example (six configurations, two at a time, with the median stopping rule: once two trials have
completed, a trial whose best objective is worse than their median is pruned and its slot
refilled with the next configuration):
  >>> import jax.numpy as jnp
  >>> from jopt import sweep
  >>> task = sweep.Task(lambda hp, k: jnp.float32(1.0),
  ...                   lambda hp, w, k: (w * (1 - hp["lr"]), {"loss": w}),
  ...                   lambda hp, w: w * w)
  >>> space = sweep.Space(lr=sweep.uniform(0.0, 0.9))
  >>> configs = [{"lr": v} for v in (0.9, 0.7, 0.5, 0.8, 0.1, 0.0)]
  >>> r = sweep.run(task, space, configs, steps=8, eval_every=2, devices=1, max_parallel=2,
  ...               scheduler=sweep.MedianStopping(min_trials=2), progress=False)
  >>> [(t.status, t.steps_trained) for t in r.trials]
  [('completed', 8), ('completed', 8), ('pruned', 2), ('completed', 8), ('pruned', 2), ('pruned', 2)]
  >>> r.best_config, r.stats["compiles"], r.stats["refills"]
  ({'lr': 0.9}, 3, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jopt.sweep.executor import Executor
from jopt.sweep.history import encode_config
from jopt.sweep.options import check_int, validate_options
from jopt.sweep.results import SweepResult
from jopt.sweep.samplers import ListSampler, Sampler, sample
from jopt.sweep.scheduler import TrialScheduler
from jopt.sweep.space import SearchSpaceError, Space
from jopt.sweep.task import Task, check_task_object

__all__ = ["as_space", "check_protocol", "configs_of", "run", "search"]

SAMPLER_METHODS = ("propose", "tell", "group_size", "state_dict", "load_state_dict", "abandoned")
SCHEDULER_METHODS = ("decide", "review", "chunk_trials", "state_dict", "load_state_dict")
RUN_ARGS = ("trials", "steps", "method", "grid_points", "trial_ids", "scheduler")
SEARCH_ARGS = ("sampler", "scheduler", "parallel", "method", "single_chunk")


def as_space(space: Any) -> Space:
    """``space`` as a :class:`Space` (a mapping of dimensions is converted), else ``ValueError``.

    Example:
      >>> from jopt import sweep
      >>> as_space({"lr": sweep.uniform(0.0, 1.0)}).traced_names
      ('lr',)
    """
    if isinstance(space, Space):
        return space
    if not isinstance(space, Mapping):
        raise ValueError(f"space must be a sweep.Space or a dict of dimensions, got {space!r}")
    return Space(space)


def check_protocol(name: str, obj: Any, base: type, methods: Sequence[str]) -> None:
    """``ValueError`` unless ``obj`` is a ``base`` instance or has every one of ``methods``.

    Example:
      >>> from jopt.sweep.scheduler import MedianStopping
      >>> check_protocol("scheduler", MedianStopping, TrialScheduler, SCHEDULER_METHODS)
      Traceback (most recent call last):
      ...
      ValueError: scheduler must be an instance, got the class MedianStopping; call it, e.g. MedianStopping()
    """
    if isinstance(obj, type):
        raise ValueError(
            f"{name} must be an instance, got the class {obj.__name__}; call it, e.g. {obj.__name__}()"
        )
    if isinstance(obj, base):
        return
    missing = [m for m in methods if not callable(getattr(obj, m, None))]
    if missing:
        raise ValueError(
            f"{name} must implement the jopt.sweep.{base.__name__} protocol (subclass it), got "
            f"{type(obj).__name__} {obj!r:.60}, which lacks {', '.join(missing)}"
        )


def search(
    task: Task,
    space: Space | Mapping[str, Any],
    sampler: Sampler,
    scheduler: TrialScheduler | None = None,
    *,
    parallel: int | None = None,
    method: Mapping[str, Any] | None = None,
    single_chunk: bool = False,
    _on_segment: Callable[[int], None] | None = None,
    _on_update: Callable[..., None] | None = None,
    **options: Any,
) -> SweepResult:
    """Run ``sampler`` and ``scheduler`` on the vectorized engine (the one execution path).

    Args:
      task: a :class:`~jopt.sweep.task.Task`.
      space: a :class:`~jopt.sweep.space.Space` (or a dict of dimensions).
      sampler: where configurations come from (:class:`~jopt.sweep.samplers.Sampler`).
      scheduler: what happens to trials after each segment
        (:class:`~jopt.sweep.scheduler.TrialScheduler`; default: every trial runs to ``steps``).
        One object may be both the sampler and the scheduler.
      parallel: trials a chunk is sized for when neither says (default: the sampler's total).
      method: a JSON-ready description of the method (part of the checkpoint fingerprint).
      single_chunk: every trial must train in one chunk (``ValueError`` otherwise; PBT).
      **options: the shared options of :func:`jopt.sweep.options.make_options` (``steps``,
        ``eval_every``, ``mode``, ``seed``, ``max_parallel``, ``memory_budget``, ``devices``,
        ``patience``, ``min_delta``, ``folds``, ``checkpoint_dir``, ``keep_states``, ``progress``,
        ``check_params``, ``timeout``).

    Returns:
      A :class:`~jopt.sweep.results.SweepResult`; ``stats`` holds compile counts and times,
      chunk sizes, devices, bytes per member, ``trial_steps`` (steps computed for trials),
      ``slot_steps`` (steps computed by all slots) and ``utilization`` (their ratio), ``refills``.
    """
    opts = validate_options(options, where="sweep.search", own=SEARCH_ARGS)
    check_task_object(task)
    space = as_space(space)
    check_protocol("sampler", sampler, Sampler, SAMPLER_METHODS)
    if scheduler is not None:
        check_protocol("scheduler", scheduler, TrialScheduler, SCHEDULER_METHODS)
    parallel = check_int("parallel", parallel, optional=True)
    if not isinstance(single_chunk, bool):
        raise ValueError(f"single_chunk must be True or False, got {single_chunk!r}")
    if method is not None and not isinstance(method, Mapping):
        raise ValueError(f"method must be None or a JSON-ready dict describing the search, got {method!r}")
    hooks = {k: v for k, v in (("segment", _on_segment), ("update", _on_update)) if v is not None}
    scheduler = scheduler if scheduler is not None else TrialScheduler()
    ex = Executor(task, space, sampler, scheduler, opts, parallel=parallel, method=method, hooks=hooks,
                  single_chunk=single_chunk)  # fmt: skip
    return ex.run()


def configs_of(
    space: Space,
    trials: int | Sequence[Mapping[str, Any]] | None,
    method: str,
    seed: int,
    grid_points: int,
    *,
    name: str = "trials",
) -> list[dict]:
    """The configurations of ``trials``: an explicit list (each validated against the space, the
    message naming ``trials[i]``; a value outside the space warns, see
    :meth:`~jopt.sweep.space.Space.validate_config`) or ``trials`` samples of ``method``;
    ``name``: the argument's name in messages.

    Example:
      >>> from jopt import sweep
      >>> space = sweep.Space(x=sweep.uniform(0.0, 1.0))
      >>> configs_of(space, [{"x": 0.5}], "random", 0, 5)
      [{'x': 0.5}]
      >>> configs_of(space, [{"x": "a"}], "random", 0, 5)
      Traceback (most recent call last):
      ...
      jopt.sweep.space.SearchSpaceError: trials[0]: x: traced hyperparameter needs a number, got 'a'
    """
    check_int("grid_points", grid_points)
    if isinstance(trials, Sequence) and not isinstance(trials, str):
        if not trials:
            raise SearchSpaceError(f"{name} is an empty list of configurations")
        return [space.validate_config(c, where=f"{name}[{i}]", outside="warn") for i, c in enumerate(trials)]
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, (int, np.integer))):
        raise ValueError(f"{name} must be an int, a list of configurations or None, got {trials!r}")
    return sample(space, method, trials, seed=seed, grid_points=grid_points)


def run(
    task: Task,
    space: Space | Mapping[str, Any],
    trials: int | Sequence[Mapping[str, Any]] | None = None,
    *,
    steps: int,
    method: str = "random",
    grid_points: int = 5,
    trial_ids: Sequence[int] | None = None,
    scheduler: TrialScheduler | None = None,
    **options: Any,
) -> SweepResult:
    """Run a vectorized hyperparameter sweep of given, grid, random or quasi-random configurations.

    Args:
      task: a :class:`~jopt.sweep.task.Task` (see :func:`~jopt.sweep.task.supervised_task`).
      space: a :class:`~jopt.sweep.space.Space` (or a dict of dimensions).
      trials: number of trials to sample, or an explicit list of configurations;
        ``None`` with ``method="grid"`` for the whole grid. A listed value outside the space
        (beyond a range, not a listed choice) is used as given, with an
        :class:`~jopt.sweep.space.OutsideSpaceWarning` naming ``trials[i]``, the dimension and
        its bounds (make it an error with ``warnings.simplefilter("error", OutsideSpaceWarning)``).
      steps: training steps per trial.
      method: ``"grid"``, ``"random"``, ``"sobol"`` or ``"halton"``.
      grid_points: grid values per continuous dimension (grid search).
      trial_ids: ids of the configurations (default ``0..n-1``); a trial's random keys depend
        only on ``(seed, id)``, so ``run(task, space, [r.trials[i].hyperparams], trial_ids=[i])``
        reruns trial ``i`` of an earlier sweep alone.
      scheduler: a trial scheduler (e.g. :class:`~jopt.sweep.scheduler.MedianStopping`); a
        stopped trial's slot is refilled with the next configuration.
      **options: the shared options (:func:`jopt.sweep.options.make_options`): ``eval_every``,
        ``mode``, ``seed``, ``max_parallel``, ``memory_budget``, ``devices``, ``patience``,
        ``min_delta``, ``folds``, ``checkpoint_dir``, ``keep_states``, ``progress``,
        ``check_params``, ``timeout``.

    Returns:
      A :class:`~jopt.sweep.results.SweepResult`.

    Raises:
      SearchSpaceError: invalid space, configuration or task (before any compile).
      ValueError: a bad option or argument, named in the message (before any compile).
    """
    opts = validate_options(options, where="sweep.run", own=RUN_ARGS, steps=steps)
    check_task_object(task)
    space = as_space(space)
    if scheduler is not None:
        check_protocol("scheduler", scheduler, TrialScheduler, SCHEDULER_METHODS)
    configs = configs_of(space, trials, method, opts.seed, grid_points)
    ids = _trial_ids(trial_ids, len(configs))
    sampler = ListSampler(configs, ids, lambda c: tuple(repr(c[n]) for n in space.static_names))
    described = {"name": "run", "configs": [encode_config(space, c) for c in configs], "ids": ids}
    if scheduler is not None:
        described["scheduler"] = type(scheduler).__name__
    return search(task, space, sampler, scheduler, steps=steps, method=described, **options)


def _trial_ids(trial_ids: Any, n: int) -> list[int]:
    """``trial_ids`` (default ``0..n-1``) as ``n`` distinct non-negative ints, else ``ValueError``."""
    if trial_ids is None:
        return list(range(n))
    ok = isinstance(trial_ids, Sequence) and not isinstance(trial_ids, str)
    ids = list(trial_ids) if ok else []
    ok = ok and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 0 for i in ids)
    if not ok or len(ids) != n or len(set(ids)) != n:
        raise ValueError(
            f"trial_ids must be {n} distinct non-negative ints (one per configuration), got {trial_ids!r}"
        )
    return [int(i) for i in ids]
