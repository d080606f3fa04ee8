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

import contextlib
import inspect
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from jopt.sweep import engine
from jopt.sweep.results import SweepResult, TrialResult
from jopt.sweep.samplers import sample
from jopt.sweep.space import Choice, Fixed, Integer, LogUniform, Space, Uniform
from jopt.sweep.task import Task, check_task

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["SAMPLERS", "config_from_params", "create_study", "optuna_search", "to_distributions"]

SAMPLERS = ("tpe", "cmaes", "qmc", "random")
MAX_RETRIES = 2
PAD_ID = 2**31  # trial ids of padding members (never an Optuna trial number in practice)


def _optuna():
    try:
        import optuna
    except ImportError as err:  # pragma: no cover - exercised with optuna hidden
        raise ImportError("optuna_search needs Optuna: pip install 'jopt[optuna]'") from err
    return optuna


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


# ----------------------------------------------------------------------------- arguments, study


def _make_sampler(sampler: Any, seed: int) -> optuna.samplers.BaseSampler:
    optuna = _optuna()
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(
            f"sampler must be one of {list(SAMPLERS)} or an optuna.samplers.BaseSampler, got {sampler!r}"
        )
    s = optuna.samplers
    if sampler == "tpe":
        return s.TPESampler(seed=seed, constant_liar=True)
    if sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError as err:
            raise ImportError("sampler='cmaes' needs the cmaes package: pip install cmaes") from err
        return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if sampler == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return s.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    return s.RandomSampler(seed=seed)


def _storage(storage: Any, heartbeat_interval: int | None, grace_period: int | None) -> Any:
    """An RDB storage with heartbeats for a URL; other storages unchanged."""
    if not isinstance(storage, str):
        return storage
    optuna = _optuna()
    kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # wait for other workers' writes
    if heartbeat_interval is not None:  # named failed_trial_callback before Optuna 4.9
        names = inspect.signature(optuna.storages.RDBStorage).parameters
        key = (
            "heartbeat_stale_trial_callback"
            if "heartbeat_stale_trial_callback" in names
            else "failed_trial_callback"
        )
        kwargs[key] = _retry_callback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, **kwargs
        )


def create_study(
    *,
    sampler: str | optuna.samplers.BaseSampler = "tpe",
    sampler_seed: int = 0,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    mode: str = "min",
    heartbeat_interval: int | None = 10,
    grace_period: int | None = None,
) -> optuna.Study:
    """Create (or, with a storage, load) a study the way :func:`optuna_search` does.

    ``sampler``: ``"tpe"`` (constant liar, for trials asked together), ``"cmaes"``, ``"qmc"``
    (scrambled Sobol), ``"random"`` -- seeded with ``sampler_seed`` -- or a sampler object. A
    storage URL becomes an ``RDBStorage`` that records heartbeats every ``heartbeat_interval`` s
    (``None``: none) and fails trials silent for ``grace_period`` s (default twice the interval),
    queueing their configurations again.

    Example:
      >>> study = create_study(sampler="qmc", sampler_seed=1, mode="max")
      >>> type(study.sampler).__name__, study.direction.name
      ('QMCSampler', 'MAXIMIZE')
    """
    optuna = _optuna()
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if storage is not None and study_name is None:
        raise ValueError("study_name is required with storage= (it names the study to resume)")
    for name, v in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be None or a positive int (seconds), got {v!r}")
    smp, store = _make_sampler(sampler, sampler_seed), _storage(storage, heartbeat_interval, grace_period)
    direction = "minimize" if mode == "min" else "maximize"
    study = optuna.create_study(
        storage=store,
        study_name=study_name,
        sampler=smp,
        direction=direction,
        load_if_exists=storage is not None,
    )
    _check_direction(study, mode)
    return study


def _check_direction(study, mode: str) -> None:
    if not isinstance(study, _optuna().Study):
        raise ValueError(f"study must be an optuna.Study, got {type(study).__name__}")
    if len(study.directions) != 1:
        raise ValueError("optuna_search needs a single-objective study")
    direction = "minimize" if mode == "min" else "maximize"
    if study.direction.name.lower() != direction:
        raise ValueError(f"mode={mode!r} but the study's direction is {study.direction.name.lower()}")


def _check_settings(study, settings: dict) -> None:
    """Store the training settings in the study; refuse to mix trials trained differently."""
    old = study.user_attrs.get("jopt_settings")
    if old is None:
        study.set_user_attr("jopt_settings", settings)
        return
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
        detail = ", ".join(f"{k}: study {old.get(k)!r} vs {settings.get(k)!r}" for k in diff)
        raise ValueError(f"study {study.study_name!r} was run with other settings ({detail}); use a new one")


# ----------------------------------------------------------------------------- trial bookkeeping


def _counted(study) -> tuple[list[int], int]:
    """Sorted numbers of the trials :math:`C` that count toward the requested number (see the
    module doc), and how many of them are not WAITING (asked already)."""
    trials = study.get_trials(deepcopy=False)
    numbers = sorted(
        t.number
        for t in trials
        if t.state.name in ("COMPLETE", "PRUNED", "RUNNING", "WAITING")
        or (t.state.name == "FAIL" and t.user_attrs.get("jopt_status") == "diverged")
    )
    return numbers, len(numbers) - sum(t.state.name == "WAITING" for t in trials)


def _retry(study, trial, reason: str) -> bool:
    """Queue a failed trial's configuration again (at most MAX_RETRIES times); True if queued."""
    retries = int(trial.user_attrs.get("jopt_retries", 0))
    if retries >= MAX_RETRIES or not trial.params:
        return False
    attrs = {"jopt_retry_of": trial.number, "jopt_retries": retries + 1, "jopt_retry_reason": reason}
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    return True


def _retry_callback(study, trial) -> None:
    """Heartbeat-stale trial callback of the storages built here."""
    _retry(study, trial, "stale")


def _fail_stale(study) -> None:
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _abandon(study, trials: Sequence[Any], reason: str, retry: bool) -> int:
    """Fail unfinished trials (asked ``Trial`` objects, or trial numbers); set ``jopt_status`` to
    ``reason`` on Trial objects; queue their configurations again if ``retry``. Returns how many
    were queued."""
    fail = _optuna().trial.TrialState.FAIL
    queued = 0
    for t in trials:
        try:
            if not isinstance(t, int):
                t.set_user_attr("jopt_status", reason)
            frozen = study.tell(t, state=fail, skip_if_finished=True)
            if retry:
                queued += _retry(study, frozen, reason)
        except Exception as err:  # noqa: BLE001 - never mask the interruption being handled
            warnings.warn(f"could not fail trial {getattr(t, 'number', t)}: {err}", stacklevel=2)
    return queued


def _reset_running(study) -> int:
    """Fail every RUNNING trial of the study and queue its configuration again."""
    running = study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.RUNNING,))
    return _abandon(study, [t.number for t in running], "interrupted", retry=True)


def _beat(storage, trial_ids: Sequence[int]) -> None:
    """Record a heartbeat of each trial (by storage id) if the storage keeps them."""
    for i in trial_ids if storage is not None else ():
        try:
            storage.record_heartbeat(i)
        except Exception as err:  # noqa: BLE001 - a missed beat must not stop training
            warnings.warn(f"heartbeat of trial id {i} failed: {err}", stacklevel=2)


@contextlib.contextmanager
def _heartbeat(storage, trial_ids: Sequence[int]):
    """Beat now, then every heartbeat interval from a daemon thread while the block runs."""
    if storage is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(storage.get_heartbeat_interval()):
            _beat(storage, trial_ids)

    _beat(storage, trial_ids)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _heartbeat_storage(study):
    """The study's storage if it records heartbeats (RDB storages with an interval), else None."""
    storage = getattr(study, "_storage", None)
    ok = hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval() is not None
    return storage if ok else None


def _ask(study, dists: dict, k: int, host: str) -> list:
    """Ask ``k`` trials; beat their heartbeat at once (a process killed right after asking
    leaves trials that become stale) and record the asking host and process."""
    trials = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        for _ in range(k):
            trials.append(study.ask(dists))
    # ``_trial_id`` (the storage's id, not the number) is what storages take; Optuna has no public name
    _beat(_heartbeat_storage(study), [t._trial_id for t in trials])
    for t in trials:
        t.set_user_attr("jopt_host", host)
    return trials


def _keep_within_budget(study, asked: list, trials: int) -> tuple[list, list]:
    """Split newly asked trials into those within the first ``trials`` counted ones and the excess."""
    rank = {n: i for i, n in enumerate(_counted(study)[0])}
    keep = [t for t in asked if rank.get(t.number, trials) < trials]
    return keep, [t for t in asked if t not in keep]


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
        patience=patience, min_delta=min_delta, folds=folds, check_params=check_params, progress=False,
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
