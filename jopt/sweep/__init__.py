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

Modules: :mod:`~jopt.sweep.space` (dimensions, validation), :mod:`~jopt.sweep.samplers`
(grid, random, Sobol, Halton), :mod:`~jopt.sweep.task` (Task, supervised_task),
:mod:`~jopt.sweep.runner` (compiled programs, chunks, sharding), :mod:`~jopt.sweep.folds`
(cross-validation), :mod:`~jopt.sweep.checkpoint` (orbax), :mod:`~jopt.sweep.results`,
:mod:`~jopt.sweep.plots`.
"""

from jopt.sweep import checkpoint, folds, plots, results, runner, samplers, space, task
from jopt.sweep.engine import run
from jopt.sweep.results import SweepResult, TrialResult
from jopt.sweep.samplers import sample
from jopt.sweep.space import (
    Hyperparams,
    SearchSpaceError,
    Space,
    choice,
    fixed,
    integer,
    loguniform,
    uniform,
)
from jopt.sweep.task import Task, TrainState, check_task, supervised_task

__all__ = [
    "Hyperparams",
    "SearchSpaceError",
    "Space",
    "SweepResult",
    "Task",
    "TrainState",
    "TrialResult",
    "check_task",
    "choice",
    "fixed",
    "integer",
    "loguniform",
    "run",
    "sample",
    "supervised_task",
    "uniform",
]
