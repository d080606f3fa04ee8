"""Successive halving and Hyperband: exact top-1/eta selection on a task with a known ordering,
exact state continuation across rungs (against training a survivor alone), compile counts bounded by
the distinct rung batch sizes, compute accounting, static groups, determinism and bad arguments.

Float tolerance: a survivor trained in shrinking vectorized batches and the same trial trained alone
agree to rtol=1e-5, atol=1e-6 over 18 steps (batched and unbatched float32 matmuls round
differently); everything within one batch layout is bit-exact.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from jopt import sweep
from jopt.sweep import programs
from jopt.sweep.halving import hyperband, hyperband_brackets, rung_budgets, rung_sizes, successive_halving
from tests.sweep_helpers import SPACE, CompileCounter, make_task

matplotlib.use("Agg")
RTOL, ATOL = 1e-5, 1e-6
ORDERED_SPACE = sweep.Space(x=sweep.uniform(0.0, 1.0), boom=sweep.choice([0, 1]))


def ordered_task(sign: float = 1.0) -> sweep.Task:
    """Objective ``sign * ((x - 0.3)^2 + 1 / (1 + steps))``: at equal steps the ordering is by
    ``|x - 0.3|``; ``boom = 1`` makes every step non-finite (the trial diverges at once)."""

    def init(hp, key):
        return jnp.zeros((), jnp.float32)

    def step(hp, w, key):
        w = w + jnp.where(hp["boom"] == 1, jnp.nan, 1.0)
        return w, {"loss": w}

    def evaluate(hp, w):
        return sign * ((hp["x"] - 0.3) ** 2 + 1.0 / (1.0 + w))

    return sweep.Task(init, step, evaluate)


def ordered_configs(n: int, seed: int = 0) -> list[dict]:
    xs = np.random.default_rng(seed).permutation(np.linspace(0.0, 1.0, n))
    cfgs = [{"x": float(x), "boom": 0} for x in xs]
    cfgs[5] = {"x": 0.3, "boom": 1}  # would be the best trial, but diverges
    return cfgs


def expected_top(cfgs: list[dict], among: list[int], k: int) -> list[int]:
    ok = [i for i in among if cfgs[i]["boom"] == 0]
    return sorted(sorted(ok, key=lambda i: (abs(cfgs[i]["x"] - 0.3), i))[:k])


def at_least(result, k: int) -> list[int]:
    return sorted(t.trial for t in result.trials if t.rung >= k)


def test_rung_planning_known_answers():
    assert rung_budgets(27, min_steps=1, eta=3) == ([1, 3, 9, 27], 1)
    assert rung_budgets(100, min_steps=10, eta=3) == ([10, 30, 100], 10)
    assert rung_budgets(64, min_steps=4, eta=2, eval_every=4) == ([4, 8, 16, 32, 64], 4)
    assert rung_budgets(None, budgets=[6, 12, 30]) == ([6, 12, 30], 6)
    assert rung_sizes(27, 3, 4) == [27, 9, 3, 1] and rung_sizes(10, 3, 4) == [10, 3, 1, 1]
    # Li et al. (2017), Table 1: R = 81, eta = 3
    assert hyperband_brackets(5, 3) == [(4, 81), (3, 34), (2, 15), (1, 8), (0, 5)]
    assert hyperband_brackets(5, 3, brackets=2) == [(4, 81), (3, 34)]


def test_keeps_exactly_the_top_trials_and_counts_compiles():
    cfgs = ordered_configs(27)
    programs.member_keys(0, np.arange(27), np.zeros(27))  # warm the (cached) eager key derivation
    task = ordered_task()  # a fresh task: nothing cached
    with CompileCounter() as counter:
        r = successive_halving(task, ORDERED_SPACE, cfgs, max_steps=9, min_steps=1, eta=3,
                               devices=1, progress=False)  # fmt: skip
    rung1 = expected_top(cfgs, list(range(27)), 9)
    rung2 = expected_top(cfgs, rung1, 3)
    assert at_least(r, 1) == rung1 and at_least(r, 2) == rung2
    assert r.best.trial == expected_top(cfgs, rung2, 1)[0] and r.best.status == "completed"
    budgets = [1, 3, 9]
    for t in r.trials:
        if t.trial == 5:
            assert t.status == "diverged" and t.rung == 0 and t.objective == math.inf
            continue
        assert t.status == ("completed" if t.rung == 2 else "pruned")
        assert t.steps_trained == budgets[t.rung] and t.history["step"][-1] == budgets[t.rung]
    assert r.ranked()[-1].trial == 5
    assert [x["rung"] for x in r.stats["rungs"]] == [0, 1, 2]
    assert [x["trials"] for x in r.stats["rungs"]] == [27, 9, 3]
    assert r.stats["trial_steps"] == 27 * 1 + 9 * 2 + 3 * 6
    assert r.stats["random_search_trial_steps"] == 27 * 9
    assert r.stats["compute_fraction"] == pytest.approx(63 / 243)
    # one segment program per distinct chunk size (27, 9, 3), one init, one gather per transition
    assert r.stats["batch_sizes"] == [3, 9, 27] and r.stats["chunks"] == 3
    assert r.stats["compiles"] == 1 + 3 and r.stats["gather_compiles"] == 2
    assert counter.count == r.stats["compiles"] + r.stats["gather_compiles"]
    assert "1 pruned" not in r.summary() and "pruned" in r.summary()
    # min_batch: rungs smaller than 9 trials run padded to 9 -- programs 27 and 9 are reused
    padded = successive_halving(task, ORDERED_SPACE, cfgs, max_steps=9, min_steps=1, eta=3, min_batch=9,
                                devices=1, progress=False)  # fmt: skip
    assert padded.stats["batch_sizes"] == [9, 27] and padded.stats["compiles"] == 0
    assert [t.rung for t in padded.trials] == [t.rung for t in r.trials]
    assert padded.stats["trial_steps"] == r.stats["trial_steps"]


def test_survivors_continue_exactly_chunking_and_determinism():
    task = make_task()
    kw = dict(max_steps=18, min_steps=2, eta=3, method="sobol", seed=0, devices=2, progress=False)
    r = successive_halving(task, SPACE, 9, keep_states="all", **kw)
    assert r.stats["batch_sizes"] == [2, 4, 10] and r.stats["devices"] == 2  # padded: 9, 3, 1 trials
    assert [x["trials"] for x in r.stats["rungs"]] == [9, 3, 1]
    budgets = [2, 6, 18]
    # a survivor gathered into smaller batches continues exactly as if trained alone to its budget
    for rung in (2, 1, 0):
        t = next(t for t in r.trials if t.rung == rung)
        solo = sweep.run(task, SPACE, [t.hyperparams], trial_ids=[t.trial], steps=budgets[rung], eval_every=2,
                         devices=1, progress=False)  # fmt: skip
        for name in ("objective", "train/loss", "eval/accuracy"):
            np.testing.assert_allclose(t.history[name], solo.trials[0].history[name], rtol=RTOL, atol=ATOL)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
                     r.state(t.trial), solo.state(t.trial))  # fmt: skip
    # each rung kept the trials with the best recorded objective at that rung's budget
    for rung, keep in ((0, 3), (1, 1)):
        at = [t for t in r.trials if t.rung >= rung]
        top = sorted(
            at, key=lambda t: (t.history["objective"][t.history["step"].index(budgets[rung])], t.trial)
        )
        assert sorted(t.trial for t in top[:keep]) == at_least(r, rung + 1)
    # several batches per rung (waiting on the host, gathered from there): the same trials and curves
    chunked = successive_halving(task, SPACE, 9, max_parallel=4, **kw)
    assert chunked.stats["chunk_sizes"] == {"-": [2, 4]} and chunked.stats["chunks"] == 3 + 1 + 1
    assert [t.rung for t in chunked.trials] == [t.rung for t in r.trials]
    for a, b in zip(chunked.trials, r.trials, strict=True):
        np.testing.assert_allclose(a.history["objective"], b.history["objective"], rtol=RTOL, atol=ATOL)
    # same seed: bit-identical, and nothing recompiled; another seed: other configurations
    again = successive_halving(task, SPACE, 9, **kw)
    assert again.stats["compiles"] == 0 and again.stats["gather_compiles"] == 0
    assert [(t.rung, t.history) for t in again.trials] == [(t.rung, t.history) for t in r.trials]
    other = successive_halving(task, SPACE, 9, **dict(kw, seed=1))
    assert [t.hyperparams for t in other.trials] != [t.hyperparams for t in r.trials]


def test_static_groups_rank_globally(tmp_path):
    # a static offset splits the trials into two compiled groups; survivors are chosen across both
    def task_fn():
        base = ordered_task()
        return sweep.Task(base.init, base.step, lambda hp, w: base.evaluate(hp, w) + hp["offset"])

    space = sweep.Space(x=sweep.uniform(0.0, 1.0), boom=0, offset=sweep.choice([0.0, 0.02], static=True))
    r = successive_halving(task_fn(), space, 12, budgets=[1, 2], eta=3, seed=3, devices=1, progress=False)
    assert r.stats["groups"] == 2 and len({t.hyperparams["offset"] for t in r.trials}) == 2
    value = [(t.hyperparams["x"] - 0.3) ** 2 + t.hyperparams["offset"] for t in r.trials]
    assert at_least(r, 1) == sorted(sorted(range(12), key=lambda i: (value[i], i))[:4])
    assert r.best.rung == 1 and r.best.steps_trained == 2 and r.best.trial == int(np.argmin(value))
    assert len(r.to_dataframe()["rung"]) == 12
    fig = r.plot_learning_curves(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert "pruned" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_hyperband_brackets_and_compiles():
    space = sweep.Space(x=sweep.uniform(0.0, 1.0), boom=0)  # nothing diverges
    r = hyperband(ordered_task(sign=-1.0), space, max_steps=9, min_steps=1, eta=3, seed=0, mode="max",
                  devices=1, progress=False)  # fmt: skip
    assert r.stats["brackets"] == [(2, 9, 0), (1, 5, 9), (0, 3, 14)] and len(r.trials) == 17
    assert r.stats["budgets"] == [1, 3, 9]
    cfgs = [t.hyperparams for t in r.trials]
    rungs = [t.rung for t in r.trials]
    assert sorted(rungs[:9]) == [0] * 6 + [1] * 2 + [2]  # bracket s=2: 9 -> 3 -> 1 trials
    assert sorted(rungs[9:14]) == [1] * 4 + [2] and rungs[14:] == [2, 2, 2]  # s=1: 5 -> 1; s=0: 3
    assert [t for t in range(9) if rungs[t] >= 1] == expected_top(cfgs, list(range(9)), 3)
    assert [t for t in range(9, 14) if rungs[t] == 2] == expected_top(cfgs, list(range(9, 14)), 1)
    assert all(t.steps_trained == [1, 3, 9][t.rung] for t in r.trials)
    top = [t for t in r.trials if t.rung == 2]
    assert r.best.trial == min(top, key=lambda t: (abs(t.hyperparams["x"] - 0.3), t.trial)).trial
    # batch sizes 9, 3, 1 | 5, 1 | 3: four segment programs; init at the first sizes 9, 5, 3
    assert r.stats["batch_sizes"] == [1, 3, 5, 9] and r.stats["compiles"] == 4 + 3
    assert r.stats["trial_steps"] == (9 + 3 * 2 + 6) + (5 * 3 + 6) + 3 * 9
    assert r.stats["random_search_trial_steps"] == 17 * 9


def test_bad_configuration_raises_before_compile():
    task = ordered_task()
    cfgs = ordered_configs(9)
    kw = dict(max_steps=9, min_steps=1, progress=False)
    cases = [
        (dict(kw, eta=1), "eta"), (dict(kw, eta=0.5), "eta"), (dict(kw, eta=True), "eta"),
        (dict(kw, eta=float("nan")), "eta"), (dict(max_steps=9, min_steps=10), "min_steps"),
        (dict(max_steps=9), "min_steps"), (dict(max_steps=0, min_steps=1), "max_steps"),
        (dict(max_steps=9, min_steps=1, eval_every=2), "eval_every"),
        (dict(budgets=[3, 3, 9]), "budgets"), (dict(budgets=[2, 5], eval_every=2), "eval_every"),
        (dict(kw, mode="best"), "mode"), (dict(kw, keep_states="some"), "keep_states"),
        (dict(kw, max_parallel=0), "max_parallel"), (dict(kw, min_batch=0), "min_batch"),
    ]  # fmt: skip
    with CompileCounter() as counter:
        for args, name in cases:
            with pytest.raises(ValueError, match=name):
                successive_halving(task, ORDERED_SPACE, cfgs, **args)
        with pytest.raises(ValueError, match="at least eta"):
            successive_halving(task, ORDERED_SPACE, cfgs[:2], **kw)
        with pytest.raises(ValueError, match="brackets"):
            hyperband(task, ORDERED_SPACE, brackets=4, **kw)
        with pytest.raises(ValueError, match="method"):
            hyperband(task, ORDERED_SPACE, method="grid", **kw)
        with pytest.raises(ValueError, match="eta"):
            hyperband(task, ORDERED_SPACE, eta=1, **kw)
    assert counter.count == 0


def test_docstring_examples_run():
    import doctest
    import importlib

    for name in ("jopt.sweep.halving", "jopt.sweep.async_halving"):
        assert doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS).failed == 0
