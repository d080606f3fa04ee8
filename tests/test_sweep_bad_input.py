"""Bad inputs to the sweep front-ends: a ValueError naming the argument, before any compile.

Every case calls a front-end (``run``, ``successive_halving``, ``hyperband``, ``asha``, ``pbt``,
``bayesian``, ``search``), builds a space or a ``supervised_task`` with one bad input, and checks
that a ``ValueError`` (``SearchSpaceError`` is one) is raised whose message matches a pattern
naming the argument, and that no XLA compile happened (the errors come first, so the test is
cheap: a fresh task per case, so a compile could not hide in a cache).
"""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt import sweep
from jopt.sweep.engine import configs_of
from jopt.sweep.space import OutsideSpaceWarning
from tests.sweep_helpers import DATA, SPACE, CompileCounter, make_task

CFG = {"learning_rate": 0.01, "weight_decay": 1e-4, "b1": 0.9}
K = {"progress": False, "devices": 1}
SH = {"max_steps": 9, "min_steps": 1, **K}


def run(**kw):
    trials = kw.pop("trials", 2)
    task = kw.pop("task", None) or make_task()
    space = kw.pop("space", SPACE)
    return sweep.run(task, space, trials, **{"steps": 2, **K, **kw})


def with_evaluate(fn):
    t = make_task()
    return sweep.Task(t.init, t.step, lambda hp, s: fn(hp, s), t.params)


def with_step(fn):
    t = make_task()
    return sweep.Task(t.init, lambda hp, s, k: fn(hp, s, k), t.evaluate, t.params)


class NotAProtocol:
    """Neither a sampler nor a trial scheduler."""


def sup(**kw):
    """A supervised task on numpy copies of DATA (building bad data this way compiles nothing)."""
    args = {
        "model": lambda hp: nn.Dense(DATA.num_classes),
        "optimizer": lambda hp: jopt.chain(jopt.scale_by_learning_rate(hp["learning_rate"])),
        "data": NP_DATA,
        "batch_size": 16,
        **kw,
    }
    return sweep.supervised_task(**args)


NP_DATA = DATA._replace(**{f: np.asarray(getattr(DATA, f)) for f in ("x_train", "y_train", "x_val", "y_val")})
LR_SPACE = sweep.Space(learning_rate=sweep.loguniform(1e-3, 1.0))
INT_SPACE = sweep.Space(dict(SPACE), n=sweep.integer(1, 4))


CASES = {
    # ---------------------------------------------------------------- sweep.run: arguments and options
    "run-trials-float": (lambda: run(trials=2.5), r"trials must be an int"),
    "run-trials-zero": (lambda: run(trials=0), r"trials >= 1"),
    "run-steps-bool": (lambda: run(steps=True), r"steps must be a positive int, got True"),
    "run-steps-zero": (lambda: run(steps=0), r"steps must be a positive int"),
    "run-eval-every": (lambda: run(steps=4, eval_every=3), r"eval_every must be a positive int dividing"),
    "run-max-parallel-0": (lambda: run(max_parallel=0), r"max_parallel must be"),
    "run-max-parallel-neg": (lambda: run(max_parallel=-2), r"max_parallel must be"),
    "run-max-parallel-str": (lambda: run(max_parallel="4"), r"max_parallel must be .*'4'"),
    "run-seed-neg": (lambda: run(seed=-1), r"seed must be a non-negative int"),
    "run-seed-str": (lambda: run(seed="0"), r"seed must be a non-negative int"),
    "run-typo": (lambda: run(eval_evry=1), r"unknown argument 'eval_evry' \(did you mean 'eval_every'\?\)"),
    "run-steps-typo": (lambda: run(step=2), r"unknown argument 'step' \(did you mean 'steps'\?\)"),
    "run-mode": (lambda: run(mode="minimize"), r"mode must be 'min' or 'max'"),
    "run-folds-1": (lambda: run(folds=1), r"folds must be None or an int >= 2"),
    "run-patience-0": (lambda: run(patience=0), r"patience must be"),
    "run-min-delta": (lambda: run(min_delta=-1.0), r"min_delta must be"),
    "run-memory-budget": (lambda: run(memory_budget="lots"), r"memory_budget must be .*'lots'"),
    "run-timeout": (lambda: run(timeout=-1), r"timeout must be None or a positive number"),
    "run-devices-0": (lambda: run(devices=0), r"devices must be .*got 0"),
    "run-devices-too-many": (lambda: run(devices=99), r"devices must be .*\[1, 8\].*got 99"),
    "run-devices-str": (lambda: run(devices="cpu"), r"devices must be .*'cpu'"),
    "run-keep-states": (lambda: run(keep_states="some"), r"keep_states must be"),
    "run-progress": (lambda: run(progress="no"), r"progress must be True or False"),
    "run-checkpoint-dir": (lambda: run(checkpoint_dir=3), r"checkpoint_dir must be"),
    "run-method": (lambda: run(method="sobolx"), r"unknown search method 'sobolx'"),
    "run-grid-points": (lambda: run(trials=None, method="grid", grid_points=0), r"grid_points must be"),
    "run-trial-ids": (lambda: run(trial_ids=[0, 0]), r"trial_ids must be 2 distinct"),
    "run-scheduler-str": (lambda: run(scheduler="median"), r"scheduler must implement .*TrialScheduler"),
    "run-scheduler-class": (lambda: run(scheduler=sweep.MedianStopping), r"scheduler must be an instance"),
    "run-task-tuple": (lambda: run(task=(print, print, print)), r"task must be a jopt.sweep.Task"),
    "run-task-not-callable": (lambda: run(task=sweep.Task(1, 2, 3)), r"task.init must be a function"),
    "run-space-int": (lambda: run(space=3), r"space must be a sweep.Space or a dict"),
    # ---------------------------------------------------------------- explicit configurations
    "config-missing": (
        lambda: run(trials=[{"b1": 0.9}]),
        r"trials\[0\] .*lacks hyperparameter 'learning_rate'",
    ),
    "config-unknown": (
        lambda: run(trials=[dict(CFG, zz=1)]),
        r"trials\[0\] has hyperparameters not in the space",
    ),
    "config-not-dict": (lambda: run(trials=[CFG, 3]), r"trials\[1\] must be a dict"),
    "config-not-number": (lambda: run(trials=[dict(CFG, b1="x")]), r"trials\[0\]: b1: .*needs a number"),
    "config-not-integer": (
        lambda: run(space=INT_SPACE, trials=[dict(CFG, n=2.5)]),
        r"trials\[0\]: n=2.5 must be an integer",
    ),
    "config-nan": (lambda: run(trials=[dict(CFG, b1=float("nan"))]), r"trials\[0\]: b1=nan must be finite"),
    # ---------------------------------------------------------------- what the task returns (check_task)
    "evaluate-none": (
        lambda: run(task=with_evaluate(lambda hp, s: None)),
        r"task.evaluate must return a scalar objective .*got None",
    ),
    "evaluate-str": (
        lambda: run(task=with_evaluate(lambda hp, s: "bad")),
        r"task.evaluate must return a scalar objective .*'bad'",
    ),
    "evaluate-vector-without-directions": (
        lambda: run(task=with_evaluate(lambda hp, s: jnp.zeros(3))),
        r"task.evaluate returns 3 objectives: give directions",
    ),
    "evaluate-matrix": (
        lambda: run(task=with_evaluate(lambda hp, s: jnp.zeros((2, 2)))),
        r"task.evaluate must return a scalar objective .*shape \(2, 2\)",
    ),
    "evaluate-triple": (
        lambda: run(task=with_evaluate(lambda hp, s: (1.0, {}, 2.0))),
        r"task.evaluate must return .*tuple of length 3",
    ),
    "evaluate-metrics-not-dict": (
        lambda: run(task=with_evaluate(lambda hp, s: (1.0, 2.0))),
        r"task.evaluate metrics must be a dict",
    ),
    "evaluate-metrics-vector": (
        lambda: run(task=with_evaluate(lambda hp, s: (1.0, {"acc": jnp.zeros(2)}))),
        r"task.evaluate metrics must be a dict of numeric scalars; 'acc' is an array of shape \(2,\)",
    ),
    "step-metrics-list": (
        lambda: run(task=with_step(lambda hp, s, k: (s, [1.0]))),
        r"task.step must return \(state, metrics\) with metrics a dict .*list \[1.0\]",
    ),
    "step-metrics-vector": (
        lambda: run(task=with_step(lambda hp, s, k: (s, {"loss": jnp.zeros(2)}))),
        r"task.step metrics .*'loss' is an array of shape \(2,\)",
    ),
    "step-metrics-str": (
        lambda: run(task=with_step(lambda hp, s, k: (s, {"loss": "low"}))),
        r"task.step metrics .*'loss' is str",
    ),
    "step-no-metrics": (
        lambda: run(task=with_step(lambda hp, s, k: s)),
        r"task.step must return \(state, metrics\)",
    ),
    "step-changes-state": (
        lambda: run(task=with_step(lambda hp, s, k: (s[0], {}))),
        r"task.step must return a state with the same structure",
    ),
    "init-not-arrays": (
        lambda: run(
            task=sweep.Task(lambda hp, k: {"w": "zeros"}, lambda hp, s, k: (s, {}), lambda hp, s: 0.0)
        ),
        r"task.init must return a pytree of arrays.*\['w'\] is str",
    ),
    # ---------------------------------------------------------------- spaces
    "space-inverted": (lambda: sweep.Space(a=sweep.uniform(1.0, 0.0)), r"a: empty or inverted range"),
    "space-log-zero": (
        lambda: sweep.Space(a=sweep.loguniform(0.0, 1.0)),
        r"a: loguniform bounds must be > 0",
    ),
    "space-choice-empty": (lambda: sweep.Space(a=sweep.choice([])), r"a: choice needs at least one value"),
    "space-choice-str": (lambda: sweep.choice("adam"), r"choice needs a list of values"),
    "space-integer-float": (lambda: sweep.Space(a=sweep.integer(1.5, 3)), r"a: integer low must be an int"),
    "space-factory": (lambda: sweep.Space(a=sweep.uniform), r"a: got uniform itself"),
    # ---------------------------------------------------------------- successive halving, hyperband
    "sh-eta": (lambda: sweep.successive_halving(make_task(), SPACE, 9, **dict(SH, eta=1)), r"eta must be"),
    "sh-min-steps-0": (
        lambda: sweep.successive_halving(make_task(), SPACE, 9, **dict(SH, min_steps=0)),
        r"min_steps",
    ),
    "sh-min-steps-big": (
        lambda: sweep.successive_halving(make_task(), SPACE, 9, **dict(SH, min_steps=10)),
        r"min_steps must be in \[1, max_steps=9\]",
    ),
    "sh-budgets": (
        lambda: sweep.successive_halving(make_task(), SPACE, 9, budgets=[3, 2], **K),
        r"budgets must be .*strictly increasing",
    ),
    "sh-budgets-and-min-steps": (
        lambda: sweep.successive_halving(make_task(), SPACE, 9, budgets=[3, 9], min_steps=3, **K),
        r"give min_steps or budgets, not both",
    ),
    "sh-min-batch": (
        lambda: sweep.successive_halving(make_task(), SPACE, 9, min_batch=0, **SH),
        r"min_batch",
    ),
    "sh-few-trials": (
        lambda: sweep.successive_halving(make_task(), SPACE, 2, **SH),
        r"at least eta=3 trials",
    ),
    "sh-steps": (
        lambda: sweep.successive_halving(make_task(), SPACE, 9, steps=9, **SH),
        r"successive_halving sets 'steps' itself",
    ),
    "sh-typo": (
        lambda: sweep.successive_halving(make_task(), SPACE, 9, max_steps=9, min_step=1, **K),
        r"unknown argument 'min_step' \(did you mean 'min_steps'\?\)",
    ),
    "sh-config": (
        lambda: sweep.successive_halving(make_task(), SPACE, [CFG, {"b1": 0.5}, CFG], **SH),
        r"trials\[1\] .*lacks",
    ),
    "hyperband-brackets-0": (
        lambda: sweep.hyperband(make_task(), SPACE, brackets=0, **SH),
        r"brackets must be",
    ),
    "hyperband-brackets-big": (
        lambda: sweep.hyperband(make_task(), SPACE, brackets=9, **SH),
        r"brackets must be in \[1, 3\]",
    ),
    "hyperband-method": (lambda: sweep.hyperband(make_task(), SPACE, method="grid", **SH), r"method must be"),
    # ---------------------------------------------------------------- asha
    "asha-parallel": (lambda: sweep.asha(make_task(), SPACE, 4, parallel=0, **SH), r"parallel must be"),
    "asha-trials": (lambda: sweep.asha(make_task(), SPACE, 2.5, **SH), r"trials must be"),
    "asha-method": (lambda: sweep.asha(make_task(), SPACE, 4, method="grid", **SH), r"method must be"),
    "asha-eta": (lambda: sweep.asha(make_task(), SPACE, 4, eta="3", **SH), r"eta must be"),
    # ---------------------------------------------------------------- pbt
    "pbt-population-float": (
        lambda: sweep.pbt(make_task(), SPACE, 2.5, steps=4, eval_every=2, **K),
        r"population must be an int",
    ),
    "pbt-population-small": (
        lambda: sweep.pbt(make_task(), SPACE, 1, steps=4, eval_every=2, **K),
        r"population must have at least",
    ),
    "pbt-population-empty": (
        lambda: sweep.pbt(make_task(), SPACE, [], steps=4, eval_every=2, **K),
        r"population is an empty list",
    ),
    "pbt-population-config": (
        lambda: sweep.pbt(make_task(), SPACE, [CFG] * 3 + [{"b1": 0.5}], steps=4, eval_every=2, **K),
        r"population\[3\] .*lacks",
    ),
    "pbt-interval": (
        lambda: sweep.pbt(make_task(), SPACE, 8, steps=4, eval_every=3, **K),
        r"eval_every \(the ready interval\)",
    ),
    "pbt-quantile": (
        lambda: sweep.pbt(make_task(), SPACE, 8, steps=4, eval_every=2, quantile=0.7, **K),
        r"quantile must be in",
    ),
    "pbt-perturb": (
        lambda: sweep.pbt(make_task(), SPACE, 8, steps=4, eval_every=2, perturb=(1.0,), **K),
        r"perturb must be",
    ),
    "pbt-resample": (
        lambda: sweep.pbt(make_task(), SPACE, 8, steps=4, eval_every=2, resample_probability=2, **K),
        r"resample_probability must be",
    ),
    "pbt-method": (
        lambda: sweep.pbt(make_task(), SPACE, 8, steps=4, eval_every=2, method="grid", **K),
        r"method must be 'random', 'sobol' or 'halton' for pbt",
    ),
    "pbt-static": (
        lambda: sweep.pbt(
            make_task(),
            sweep.Space(dict(SPACE), w=sweep.choice([1, 2], static=True)),
            8,
            steps=4,
            eval_every=2,
            **K,
        ),  # fmt: skip
        r"pbt cannot tune static hyperparameters \['w'\]",
    ),
    "pbt-typo": (
        lambda: sweep.pbt(make_task(), SPACE, 8, steps=4, eval_every=2, quantil=0.5, **K),
        r"unknown argument 'quantil' \(did you mean 'quantile'\?\)",
    ),
    # ---------------------------------------------------------------- bayesian
    "bayes-initial": (
        lambda: sweep.bayesian(make_task(), SPACE, 8, steps=2, initial=1, **K),
        r"initial must be",
    ),
    "bayes-batch": (lambda: sweep.bayesian(make_task(), SPACE, 8, steps=2, batch=0, **K), r"batch must be"),
    "bayes-trials": (lambda: sweep.bayesian(make_task(), SPACE, 8.5, steps=2, **K), r"trials must be an int"),
    "bayes-acquisition": (
        lambda: sweep.bayesian(make_task(), SPACE, 8, steps=2, acquisition="ucb", **K),
        r"acquisition must be",
    ),
    "bayes-candidates": (
        lambda: sweep.bayesian(make_task(), SPACE, 8, steps=2, num_candidates=0, **K),
        r"num_candidates must be",
    ),
    "bayes-fit-steps": (
        lambda: sweep.bayesian(make_task(), SPACE, 8, steps=2, fit_steps=0, **K),
        r"fit_steps must be",
    ),
    "bayes-restarts": (
        lambda: sweep.bayesian(make_task(), SPACE, 8, steps=2, restarts="4", **K),
        r"restarts must be",
    ),
    "bayes-callback": (
        lambda: sweep.bayesian(make_task(), SPACE, 8, steps=2, callback=3, **K),
        r"callback must be None or a function",
    ),
    "bayes-scheduler": (
        lambda: sweep.bayesian(make_task(), SPACE, 8, steps=2, scheduler=NotAProtocol(), **K),
        r"scheduler must implement",
    ),
    # ---------------------------------------------------------------- search (sampler / scheduler objects)
    "search-sampler": (
        lambda: sweep.search(make_task(), SPACE, NotAProtocol(), steps=2, **K),
        r"sampler must implement the jopt.sweep.Sampler protocol .*lacks propose",
    ),
    "search-scheduler": (
        lambda: sweep.search(make_task(), SPACE, sweep.ListSampler([CFG]), NotAProtocol(), steps=2, **K),
        r"scheduler must implement the jopt.sweep.TrialScheduler protocol .*lacks decide",
    ),
    "search-parallel": (
        lambda: sweep.search(make_task(), SPACE, sweep.ListSampler([CFG]), parallel=0, steps=2, **K),
        r"parallel must be",
    ),
    "search-single-chunk": (
        lambda: sweep.search(make_task(), SPACE, sweep.ListSampler([CFG]), single_chunk="yes", steps=2, **K),
        r"single_chunk must be True or False",
    ),
    # ---------------------------------------------------------------- supervised_task
    "sup-train-lengths": (
        lambda: sup(data=NP_DATA._replace(y_train=NP_DATA.y_train[:10])),
        r"data.x_train and data.y_train must have the same length",
    ),
    "sup-val-lengths": (
        lambda: sup(data=NP_DATA._replace(y_val=NP_DATA.y_val[:3])),
        r"data.x_val and data.y_val must have the same length",
    ),
    "sup-label-range": (
        lambda: sup(data=NP_DATA._replace(y_train=NP_DATA.y_train + 1)),
        r"data.y_train must hold labels in \[0, num_classes=3\)",
    ),
    "sup-label-dtype": (
        lambda: sup(data=NP_DATA._replace(y_val=NP_DATA.y_val.astype(np.float32))),
        r"data.y_val must hold integer class labels",
    ),
    "sup-data": (lambda: sup(data=(1, 2)), r"data must be a jopt.datasets.Dataset"),
    "sup-batch-0": (lambda: sup(batch_size=0), r"batch_size must be an int in \[1, \d+\]"),
    "sup-batch-big": (lambda: sup(batch_size=10_000), r"batch_size must be an int in \[1, \d+\]"),
    "sup-batch-str": (lambda: sup(batch_size="16"), r"batch_size must be .*'16'"),
    "sup-batch-fn": (
        lambda: sweep.run(sup(batch_size=lambda hp: 0), LR_SPACE, 2, steps=2, **K),
        r"batch_size must be an int in",
    ),
    "sup-folds-too-many": (
        lambda: sweep.run(sup(), LR_SPACE, 2, steps=2, folds=10_000, **K),
        r"folds must be an int with 2 <= folds <= number of examples",
    ),
    "sup-objective": (lambda: sup(objective="acc"), r"objective must be 'loss' or 'error'"),
    "sup-fold-seed": (lambda: sup(fold_seed=-1), r"fold_seed must be a non-negative int"),
    "sup-optimizer": (lambda: sup(optimizer=3), r"optimizer must be a function"),
    "sup-model": (lambda: sup(model=3), r"model must be a flax Module"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_raises_a_named_value_error_before_compiling(name):
    call, pattern = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unused hyperparameters of the toy tasks
        with CompileCounter() as counter, pytest.raises(ValueError, match=pattern):
            call()
    assert counter.count == 0


def test_a_configuration_outside_the_space_warns_naming_it_and_can_be_made_an_error():
    configs = [CFG, dict(CFG, b1=2.0)]
    with pytest.warns(
        OutsideSpaceWarning, match=r"trials\[1\]: b1=2.0 is outside the space's bounds \[0.5, 0.95\]"
    ):
        assert configs_of(SPACE, configs, "random", 0, 5) == configs  # used as given
    choice = sweep.Space(w=sweep.choice([1, 2], static=True))
    with pytest.warns(OutsideSpaceWarning, match=r"population\[0\]: w=3 is not one of the choices \[1, 2\]"):
        configs_of(choice, [{"w": 3}], "random", 0, 5, name="population")
    with pytest.raises(sweep.SearchSpaceError, match=r"trials\[0\]: lr=2.0 is outside"):
        sweep.Space(lr=sweep.uniform(0.0, 1.0)).validate_config(
            {"lr": 2.0}, where="trials[0]", outside="raise"
        )
    # at the bound in float32 (a value read back from a float32 array) is inside
    assert SPACE.validate_config(dict(CFG, b1=float(np.float32(0.95))), outside="raise")["b1"] == np.float32(
        0.95
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutsideSpaceWarning)
        with CompileCounter() as counter, pytest.raises(OutsideSpaceWarning, match=r"trials\[1\]: b1"):
            run(trials=configs)
    assert counter.count == 0


def test_the_cases_are_one_input_away_from_valid():
    """The helpers build valid inputs (so each case fails for its one bad input), and the counter
    sees compiles (so ``count == 0`` above means something)."""
    task = sup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sweep.check_task(task, LR_SPACE)
        sweep.check_task(with_evaluate(lambda hp, s: (1.0, {"acc": 0.5})), SPACE)
    assert configs_of(SPACE, [CFG], "random", 0, 5) == [CFG]
    with CompileCounter() as counter:
        jax.jit(lambda x: x * 3.0 + 1.0)(jnp.float32(2.0))
    assert counter.count >= 1
