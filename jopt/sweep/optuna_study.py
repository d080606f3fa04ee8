"""Optuna studies for :func:`jopt.sweep.optuna_search`: creation, samplers, storages, bookkeeping.

:func:`create_study` builds (or, with a storage, loads) the study; the private helpers keep the
trial accounting of the search (which trials count toward the requested number, retries of
failed or stale trials, heartbeats while a chunk trains, which other workers' trials to wait
for). See :mod:`jopt.sweep.optuna_adapter` for the algorithm they implement.

Workers starting together on a new database race to create its tables and the study (SQLite
answers "table ... already exists", "database is locked" or a UNIQUE-constraint error to the
losers); :func:`create_study` retries those errors, and only those, a few times with a short
random backoff. On a SQLite file it also makes every transaction take the write lock when it
begins (:func:`_serialize_sqlite`): SQLite has no row locks, and Optuna's read-then-write steps
(popping a queued trial, failing a stale one) would otherwise race between workers.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import random
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["MAX_RETRIES", "SAMPLERS", "create_study"]

SAMPLERS = ("tpe", "cmaes", "qmc", "random", "nsga2")
MAX_RETRIES = 2
_OPEN_ATTEMPTS = 6  # storage/study creation tries when workers race on a new database
_RACE_MESSAGES = ("already exists", "database is locked", "database table is locked", "unique constraint")


def _optuna():
    try:
        import optuna
    except ImportError as err:  # pragma: no cover - exercised with optuna hidden
        raise ImportError("optuna_search needs Optuna: pip install 'jopt[optuna]'") from err
    return optuna


# ----------------------------------------------------------------------------- arguments, study


def constraint_values(trial: Any) -> list[float]:
    """Optuna's constraints function of the samplers built here: the jopt trial's total
    constraint violation, stored as the user attribute ``jopt_constraint`` when it is told
    (feasible: ``<= 0``)."""
    return list(trial.user_attrs.get("jopt_constraint", [0.0]))


def _make_sampler(sampler: Any, seed: int, constrained: bool = False) -> optuna.samplers.BaseSampler:
    optuna = _optuna()
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(
            f"sampler must be one of {list(SAMPLERS)} or an optuna.samplers.BaseSampler, got {sampler!r}"
        )
    s = optuna.samplers
    # Optuna 5 reads constraints set on the trial (Trial.set_constraint); earlier ones need the function
    old_api = not hasattr(optuna.trial.Trial, "set_constraint")
    extra = {"constraints_func": constraint_values} if constrained and old_api else {}
    if sampler == "tpe":
        return s.TPESampler(seed=seed, constant_liar=True, **extra)
    if sampler == "nsga2":
        return s.NSGAIISampler(seed=seed, **extra)
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
        store = optuna.storages.RDBStorage(
            storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, **kwargs
        )
    _serialize_sqlite(store)
    return store


def _serialize_sqlite(storage) -> None:
    """Make every transaction of an RDB storage on a SQLite file take the write lock when it
    begins (``BEGIN IMMEDIATE``).

    SQLite has no row locks (Optuna's ``SELECT ... FOR UPDATE`` is ignored) and Python's driver
    begins a transaction only at the first write, so Optuna's read-then-write steps race between
    processes: two workers can pop the same queued trial (both then train it), fail the same
    stale trial (both queue its retry), or overwrite each other's study attributes. Taking the
    lock at the start makes each step atomic; other workers wait for it (the connection's busy
    timeout).
    """
    engine = getattr(storage, "engine", None)
    if engine is None or engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return
    from sqlalchemy import event

    engine.dispose()  # connections opened so far (table creation, schema check) lack the settings

    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_study(
    *,
    sampler: str | optuna.samplers.BaseSampler = "tpe",
    sampler_seed: int = 0,
    pruner: optuna.pruners.BasePruner | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str | None = None,
    mode: str | Sequence[str] = "min",
    heartbeat_interval: int | None = 10,
    grace_period: int | None = None,
    constrained: bool = False,
) -> optuna.Study:
    """Create (or, with a storage, load) a study the way :func:`optuna_search` does.

    ``sampler``: ``"tpe"`` (constant liar, for trials asked together), ``"cmaes"``, ``"qmc"``
    (scrambled Sobol), ``"random"`` -- seeded with ``sampler_seed`` -- or a sampler object;
    ``"nsga2"`` (NSGA-II, for several objectives); ``pruner``: an Optuna pruner (default: none);
    ``mode``: ``"min"``/``"max"``, or a sequence of them (a multi-objective study);
    ``constrained``: give TPE and NSGA-II the constraints of the jopt search
    (:func:`constraint_values`). A
    storage URL becomes an ``RDBStorage`` that records heartbeats every ``heartbeat_interval`` s
    (``None``: none) and fails trials silent for ``grace_period`` s (default twice the interval),
    queueing their configurations again.

    Example:
      >>> study = create_study(sampler="qmc", sampler_seed=1, mode="max")
      >>> type(study.sampler).__name__, study.direction.name
      ('QMCSampler', 'MAXIMIZE')
    """
    optuna = _optuna()
    modes = [mode] if isinstance(mode, str) else list(mode)
    if not modes or any(m not in ("min", "max") for m in modes):
        raise ValueError(f"mode must be 'min', 'max' or a sequence of them, got {mode!r}")
    if pruner is not None and not isinstance(pruner, optuna.pruners.BasePruner):
        raise ValueError(f"pruner must be an optuna.pruners.BasePruner, got {pruner!r}")
    if storage is not None and study_name is None:
        raise ValueError("study_name is required with storage= (it names the study to resume)")
    for name, v in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be None or a positive int (seconds), got {v!r}")
    smp = _make_sampler(sampler, sampler_seed, constrained)
    directions = ["minimize" if m == "min" else "maximize" for m in modes]
    pruner = pruner if pruner is not None else optuna.pruners.NopPruner()
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            study = optuna.create_study(
                storage=_storage(storage, heartbeat_interval, grace_period),
                study_name=study_name,
                sampler=smp,
                pruner=pruner,
                directions=directions,
                load_if_exists=storage is not None,
            )
            break
        except Exception as err:
            if attempt == _OPEN_ATTEMPTS - 1 or not _is_creation_race(err):
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))  # the winner finishes meanwhile
    _check_direction(study, mode)
    return study


def _is_creation_race(err: BaseException) -> bool:
    """Whether ``err`` is what a worker gets when another one creates the same tables or study at
    the same time (SQLAlchemy's OperationalError / IntegrityError, possibly wrapped in Optuna's
    StorageInternalError, or DuplicatedStudyError)."""
    optuna = _optuna()
    if isinstance(err, optuna.exceptions.DuplicatedStudyError):
        return True
    try:
        from sqlalchemy import exc
    except ImportError:  # pragma: no cover - no RDB storage without SQLAlchemy
        return False
    chain = [err, err.__cause__, err.__context__]
    if not any(isinstance(e, (exc.OperationalError, exc.IntegrityError)) for e in chain):
        return False
    text = " ".join(str(e) for e in chain if e is not None).lower()
    return any(m in text for m in _RACE_MESSAGES)


def _check_direction(study, mode: str | Sequence[str]) -> None:
    if not isinstance(study, _optuna().Study):
        raise ValueError(f"study must be an optuna.Study, got {type(study).__name__}")
    modes = [mode] if isinstance(mode, str) else list(mode)
    want = ["minimize" if m == "min" else "maximize" for m in modes]
    have = [d.name.lower() for d in study.directions]
    if have != want:
        what = "mode" if isinstance(mode, str) else "directions"
        raise ValueError(f"{what}={mode!r} but the study's directions are {have}")


def _check_settings(study, settings: dict) -> None:
    """Store the training settings in the study; refuse to mix trials trained differently."""
    old = study.user_attrs.get("jopt_settings")
    if old is None:  # the first worker to store them wins (the storage ignores a second insert)
        study.set_user_attr("jopt_settings", settings)
        old = study.user_attrs.get("jopt_settings", settings)
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
        detail = ", ".join(f"{k}: study {old.get(k)!r} vs {settings.get(k)!r}" for k in diff)
        raise ValueError(f"study {study.study_name!r} was run with other settings ({detail}); use a new one")


# ----------------------------------------------------------------------------- trial bookkeeping


def _counted(study, trials: Sequence[Any] | None = None) -> tuple[list[int], int]:
    """Sorted numbers of the trials :math:`C` that count toward the requested number (see the
    module doc of :mod:`jopt.sweep.optuna_adapter`), and how many of them are not WAITING (asked
    already). ``trials``: the study's trials, if just read.

    A queued or running retry counts only if it is the first retry of its trial: two workers
    failing the same stale trial at once may both queue it (SQLite does not lock the row), and
    the second copy must neither take a place in :math:`C` nor be trained.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    first: dict[int, int] = {}
    for t in trials:
        of = t.user_attrs.get("jopt_retry_of")
        if of is not None:
            first[of] = min(first.get(of, t.number), t.number)

    def counts(t) -> bool:
        state = t.state.name
        if state in ("RUNNING", "WAITING"):
            of = t.user_attrs.get("jopt_retry_of")
            return of is None or first[of] == t.number
        diverged = state == "FAIL" and t.user_attrs.get("jopt_status") == "diverged"
        return state in ("COMPLETE", "PRUNED") or diverged

    numbers = sorted(t.number for t in trials if counts(t))
    waiting = sum(t.state.name == "WAITING" and counts(t) for t in trials)
    return numbers, len(numbers) - waiting


def _retry(study, trial, reason: str) -> bool:
    """Queue a failed trial's configuration again (at most MAX_RETRIES times, once per failed
    trial); True if queued."""
    retries = int(trial.user_attrs.get("jopt_retries", 0))
    if retries >= MAX_RETRIES or not trial.params:
        return False
    if any(t.user_attrs.get("jopt_retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        return False  # another worker failed it at the same time and queued it already
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
def _heartbeat(storage, trial_ids: Sequence[int] | Callable[[], Sequence[int]]):
    """Beat now, then every heartbeat interval from a daemon thread while the block runs;
    ``trial_ids`` may be a function giving the current ids (trials in training change)."""
    if storage is None:
        yield
        return
    stop = threading.Event()
    ids = trial_ids if callable(trial_ids) else (lambda: trial_ids)

    def loop() -> None:
        while not stop.wait(storage.get_heartbeat_interval()):
            _beat(storage, list(ids()))

    _beat(storage, list(ids()))
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


def _ask(study, dists: dict, k: int, host: str, suggest: Callable[[Any], None] | None = None) -> list:
    """Ask ``k`` trials; beat their heartbeat at once (a process killed right after asking
    leaves trials that become stale) and record the asking host and process, and whether it
    beats (``jopt_heartbeat``: other workers then wait for the trial, see :func:`_awaited`)."""
    trials = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        for _ in range(k):
            if suggest is None:
                trials.append(study.ask(dists))
            else:  # define-by-run (a conditional space): the branch first, then its names
                trials.append(study.ask())
                suggest(trials[-1])
    # ``_trial_id`` (the storage's id, not the number) is what storages take; Optuna has no public name
    storage = _heartbeat_storage(study)
    _beat(storage, [t._trial_id for t in trials])
    for t in trials:
        t.set_user_attr("jopt_host", host)
        t.set_user_attr("jopt_heartbeat", storage is not None)
    return trials


def _awaited(study, trials: Sequence[Any], mine: Sequence[int]) -> list[int]:
    """Numbers of the counted RUNNING trials of other workers (not in ``mine``) that will end:
    asked by a worker that beats their heartbeat (they finish, or go stale and are failed), or
    started less than a grace period ago without a ``jopt_host`` yet (being asked right now).
    Trials of workers without heartbeats, or of other Optuna clients, are not waited for."""
    storage = _heartbeat_storage(study)
    if storage is None:
        return []
    backend = getattr(storage, "_backend", storage)  # the RDB storage under Optuna's cache
    interval = storage.get_heartbeat_interval()
    grace = getattr(backend, "grace_period", None) or 2 * interval
    recent = datetime.datetime.now() - datetime.timedelta(seconds=grace)
    counted, out = set(_counted(study, trials)[0]), []
    for t in trials:
        if t.state.name != "RUNNING" or t.number not in counted or t.number in mine:
            continue
        attrs = t.user_attrs
        asking = "jopt_host" not in attrs and t.datetime_start is not None and t.datetime_start > recent
        if attrs.get("jopt_heartbeat") or asking:
            out.append(t.number)
    return out


def _keep_within_budget(study, asked: list, trials: int) -> tuple[list, list]:
    """Split newly asked trials into those within the first ``trials`` counted ones and the excess."""
    rank = {n: i for i, n in enumerate(_counted(study)[0])}
    keep = [t for t in asked if rank.get(t.number, trials) < trials]
    return keep, [t for t in asked if t not in keep]
