"""Vectorized hyperparameter sweeps: many trials in one compiled, vmapped, sharded program.

Write the search space, a task (``init``, ``step``, ``evaluate`` as pure
functions of the hyperparameters), and call :func:`run`::

    import flax.linen as nn, jopt
    from jopt import sweep, datasets

    data = datasets.digits()
    space = sweep.Space(
        learning_rate=sweep.loguniform(1e-4, 3e-2),
        weight_decay=sweep.loguniform(1e-6, 1e-2),
        b1=sweep.uniform(0.8, 0.95),
        width=sweep.choice([64, 128], static=True),   # changes shapes: static
    )
    task = sweep.supervised_task(
        model=lambda hp: MLP(hp["width"]),
        optimizer=lambda hp: jopt.adamw(hp["learning_rate"], b1=hp["b1"], weight_decay=hp["weight_decay"]),
        data=data, batch_size=128)
    result = sweep.run(task, space, 64, steps=300, eval_every=50, method="sobol")
    print(result.table()); print(result.best_config)
    result.plot_learning_curves("curves.png")

One execution path (:func:`search`, :mod:`~jopt.sweep.executor`): a :class:`Plan`
(:mod:`~jopt.sweep.plan`: static groups, chunk sizes from ``max_parallel`` / ``memory_budget``,
the device mesh, keys) -> chunks run segment by segment (:mod:`~jopt.sweep.chunk`, compiled
programs in :mod:`~jopt.sweep.programs`) -> after each segment a trial scheduler decides
(:mod:`~jopt.sweep.scheduler`: continue, prune, pause, exploit) and freed slots are refilled
from a sampler (:mod:`~jopt.sweep.samplers`: the ask/tell protocol) -> results
(:mod:`~jopt.sweep.history`, :mod:`~jopt.sweep.results`). Shared options, validated once:
:mod:`~jopt.sweep.options`. Also :mod:`~jopt.sweep.space`, :mod:`~jopt.sweep.task`,
:mod:`~jopt.sweep.folds` (cross-validation), :mod:`~jopt.sweep.checkpoint` (orbax),
:mod:`~jopt.sweep.transfer` (host copies of states, across processes), :mod:`~jopt.sweep.plots`,
:mod:`~jopt.sweep.pareto` (multi-objective fronts), :mod:`~jopt.sweep.export` (Optuna studies,
importance), :mod:`~jopt.sweep.callbacks` (loggers), :mod:`~jopt.sweep.display` (notebooks),
:mod:`~jopt.sweep.conditional` (branches with their own sub-spaces).

Every search method is a front-end on it: :func:`run` (grid, random, Sobol, Halton; optionally
with a scheduler such as :class:`MedianStopping`), :func:`successive_halving` and
:func:`hyperband` (:mod:`~jopt.sweep.halving`), :func:`asha` (:mod:`~jopt.sweep.async_halving`),
population-based training :func:`pbt` (:mod:`~jopt.sweep.population_based`), Bayesian
optimization :func:`bayesian` (:mod:`~jopt.sweep.bayes`, with the JAX Gaussian process in
:mod:`~jopt.sweep.gp`), and Optuna samplers and pruners :func:`optuna_search`
(:mod:`~jopt.sweep.optuna_adapter`, studies in :mod:`~jopt.sweep.optuna_study`; optional
dependency).
"""

from jopt.sweep import (
    async_halving,
    bayes,
    callbacks,
    checkpoint,
    chunk,
    conditional,
    display,
    engine,
    executor,
    export,
    folds,
    gp,
    halving,
    history,
    optuna_adapter,
    optuna_study,
    options,
    pareto,
    plan,
    plots,
    population_based,
    programs,
    results,
    samplers,
    scheduler,
    space,
    task,
    transfer,
)
from jopt.sweep.async_halving import ASHA, asha
from jopt.sweep.bayes import BayesSampler, bayesian, propose
from jopt.sweep.callbacks import Callback, TensorBoardLogger
from jopt.sweep.conditional import Conditional
from jopt.sweep.engine import run, search
from jopt.sweep.export import importance, to_optuna
from jopt.sweep.history import History, TrialRecord
from jopt.sweep.options import Options, make_options
from jopt.sweep.plan import Plan
from jopt.sweep.halving import SuccessiveHalving, hyperband, successive_halving
from jopt.sweep.optuna_adapter import optuna_search
from jopt.sweep.population_based import PBT, PBTResult, pbt
from jopt.sweep.results import SweepResult, TrialResult
from jopt.sweep.samplers import ListSampler, Proposal, Sampler, StreamSampler, sample
from jopt.sweep.scheduler import (
    COMPLETE,
    CONTINUE,
    PAUSE,
    PRUNE,
    Exploit,
    MedianStopping,
    TrialScheduler,
)
from jopt.sweep.space import (
    Hyperparams,
    OutsideSpaceWarning,
    SearchSpaceError,
    Space,
    choice,
    fixed,
    integer,
    loguniform,
    uniform,
)
from jopt.sweep.programs import shard_batch
from jopt.sweep.task import Task, TrainState, check_task, supervised_task

__all__ = [
    "ASHA",
    "PBT",
    "SuccessiveHalving",
    "asha",
    "COMPLETE",
    "CONTINUE",
    "PAUSE",
    "PRUNE",
    "BayesSampler",
    "Callback",
    "Conditional",
    "Exploit",
    "History",
    "ListSampler",
    "MedianStopping",
    "Options",
    "Plan",
    "Proposal",
    "Sampler",
    "StreamSampler",
    "TrialRecord",
    "TrialScheduler",
    "make_options",
    "search",
    "Hyperparams",
    "OutsideSpaceWarning",
    "PBTResult",
    "SearchSpaceError",
    "Space",
    "SweepResult",
    "TensorBoardLogger",
    "Task",
    "TrainState",
    "TrialResult",
    "bayesian",
    "check_task",
    "choice",
    "fixed",
    "hyperband",
    "importance",
    "integer",
    "loguniform",
    "optuna_search",
    "pbt",
    "propose",
    "run",
    "sample",
    "shard_batch",
    "successive_halving",
    "supervised_task",
    "to_optuna",
    "uniform",
]
