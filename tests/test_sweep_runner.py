"""The vectorized runner: solo equality, determinism, chunking/devices, compiles, divergence,
early stopping and cross-validation. Tiny softmax-regression task; 8 simulated CPU devices.

Float tolerance: a trial in a vectorized batch and the same trial alone (or in another chunk
size / device count) agree to rtol=1e-5, atol=1e-6 over 20 steps (batched and unbatched float32
matmuls round differently). Within one compiled batch layout, a trial's result does not depend on
the other trials: those comparisons are bit-exact.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jopt import sweep
from tests.sweep_helpers import SPACE, CompileCounter, make_task

RTOL, ATOL = 1e-5, 1e-6
STEPS, EVERY = 20, 10
N = 12


def objectives(result):
    return np.array([t.final_objective for t in result.trials])


def histories(result):
    return np.array([t.history["objective"] for t in result.trials])


@pytest.fixture(scope="module")
def task():
    return make_task()


@pytest.fixture(scope="module")
def base(task):
    assert len(jax.devices()) == 8
    return sweep.run(task, SPACE, N, steps=STEPS, eval_every=EVERY, method="sobol", seed=0, progress=False)


def test_base_sweep(base):
    assert base.stats["devices"] == 8
    assert base.stats["members"] == N and base.stats["chunks"] == 1
    assert [t.trial for t in base.trials] == list(range(N))
    assert all(t.status == "completed" and t.steps_trained == STEPS for t in base.trials)
    assert all(len(t.history["objective"]) == STEPS // EVERY for t in base.trials)
    assert np.all(np.isfinite(objectives(base)))
    assert len(set(objectives(base).tolist())) == N  # different hyperparameters, different results
    best = base.best
    assert best.objective == min(objectives(base))
    assert set(base.states) == {best.trial}
    assert set(base.params()) == {"w", "b"}


def test_trial_alone_equals_trial_in_sweep(task, base):
    for i in (0, 5, 11):
        solo = sweep.run(
            task, SPACE, [base.trials[i].hyperparams], trial_ids=[i], steps=STEPS, eval_every=EVERY,
            devices=1, progress=False,
        )  # fmt: skip
        np.testing.assert_allclose(histories(solo)[0], histories(base)[i], rtol=RTOL, atol=ATOL)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
            solo.params(i), base.params(base.best.trial) if i == base.best.trial else solo.params(i),
        )  # fmt: skip


def test_same_seed_same_results_different_seed_different(task, base):
    again = sweep.run(task, SPACE, N, steps=STEPS, eval_every=EVERY, method="sobol", seed=0, progress=False)
    np.testing.assert_array_equal(histories(again), histories(base))
    assert again.stats["compiles"] == 0  # same task object: compiled programs are reused
    other = sweep.run(task, SPACE, N, steps=STEPS, eval_every=EVERY, method="sobol", seed=1, progress=False)
    assert not np.allclose(histories(other), histories(base))


@pytest.mark.parametrize("devices, max_parallel", [(1, 5), (2, 4)])
def test_chunk_size_and_device_count_do_not_change_results(task, base, devices, max_parallel):
    r = sweep.run(
        task, SPACE, N, steps=STEPS, eval_every=EVERY, method="sobol", seed=0, progress=False,
        devices=devices, max_parallel=max_parallel,
    )  # fmt: skip
    assert r.stats["devices"] == devices
    np.testing.assert_allclose(histories(r), histories(base), rtol=RTOL, atol=ATOL)
    assert r.best.trial == base.best.trial


def test_one_compile_per_static_group():
    from jopt.sweep.programs import member_keys

    member_keys(0, np.arange(12), np.zeros(12))  # warm the (cached) eager key derivation
    task = make_task(hidden_static=True)  # fresh task: nothing cached
    space = sweep.Space(dict(SPACE), batch_size=sweep.choice([8, 16], static=True))
    with CompileCounter() as counter:
        r = sweep.run(
            task, space, 12, steps=4, eval_every=2, seed=0, devices=2, max_parallel=2, progress=False
        )
    groups = {t.hyperparams["batch_size"] for t in r.trials}
    assert groups == {8, 16} and r.stats["groups"] == 2
    assert r.stats["chunks"] >= 6  # several chunks per group ...
    assert r.stats["compiles"] == 4  # ... but one init and one segment program per group
    assert counter.count == 4  # XLA backend compiles seen by jax.monitoring


HUGE = {"learning_rate": 1e6, "weight_decay": 1e-2, "b1": 0.9}


def test_divergence_is_isolated(task, base):
    configs = [t.hyperparams for t in base.trials]
    mixed = list(configs)
    mixed[3], mixed[8] = HUGE, dict(HUGE, b1=0.6)
    kw = dict(steps=STEPS, eval_every=EVERY, progress=False, keep_states="all")
    r_mixed = sweep.run(task, SPACE, mixed, **kw)
    r_clean = sweep.run(task, SPACE, configs, **kw)
    assert [t.status for t in r_mixed.trials].count("diverged") == 2
    for i in (3, 8):
        t = r_mixed.trials[i]
        assert t.status == "diverged" and t.objective == np.inf and t.final_objective == np.inf
        assert t.steps_trained < STEPS and len(t.history["objective"]) < STEPS // EVERY  # ended
        leaves = jax.tree.leaves(r_mixed.state(i))
        assert all(np.all(np.isfinite(x)) for x in leaves)  # frozen at the last finite state
    assert r_mixed.best.trial not in (3, 8) and r_mixed.ranked()[-1].status == "diverged"
    for i in range(N):
        if i in (3, 8):
            continue
        # bit-for-bit unaffected by the diverging neighbours
        np.testing.assert_array_equal(
            r_mixed.trials[i].history["objective"], r_clean.trials[i].history["objective"]
        )
        jax.tree.map(np.testing.assert_array_equal, r_mixed.state(i), r_clean.state(i))
        # and equal to the sweep's own trial (same configuration and key)
        np.testing.assert_allclose(
            r_mixed.trials[i].history["objective"], histories(base)[i], rtol=RTOL, atol=ATOL
        )


def test_early_stopping_freezes_best_state(task, base):
    cfg = [t.hyperparams for t in base.trials]  # same chunk layout as base: its program is reused
    r = sweep.run(
        task, SPACE, cfg, steps=40, eval_every=10, patience=1, min_delta=10.0, progress=False,
        keep_states="all",
    )  # fmt: skip
    short = sweep.run(task, SPACE, cfg, steps=10, eval_every=10, progress=False, keep_states="all")
    for t, s in zip(r.trials, short.trials, strict=True):
        # first evaluation improves on +inf, the second cannot improve by 10: stop at step 20
        assert t.status == "stopped" and t.steps_trained == 20
        assert t.best_step == 10
        np.testing.assert_allclose(t.history["objective"][1:], t.history["objective"][0], rtol=0, atol=0)
        np.testing.assert_allclose(t.objective, s.final_objective, rtol=RTOL, atol=ATOL)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
            r.state(t.trial),
            short.state(t.trial),
        )


def test_early_stopping_patience_allows_improvement(task, base):
    cfg = [base.trials[i].hyperparams for i in range(2)]
    r = sweep.run(task, SPACE, cfg, steps=40, eval_every=10, patience=3, progress=False)
    for t in r.trials:
        assert t.status in ("completed", "stopped")
        assert t.objective == t.best_objective
        assert t.objective <= t.final_objective


def test_cross_validation_folds(base):
    import flax.linen as nn

    import jopt
    from jopt.datasets import synthetic_classification

    data = synthetic_classification(96, features=8, classes=3, seed=2)
    task = sweep.supervised_task(
        lambda hp: nn.Dense(3), lambda hp: jopt.chain(jopt.scale_by_learning_rate(hp["learning_rate"])), data,
        batch_size=8,
    )  # fmt: skip
    space = sweep.Space(learning_rate=sweep.loguniform(1e-2, 1.0))
    r = sweep.run(task, space, 4, steps=10, eval_every=5, folds=3, progress=False, keep_states="all")
    assert r.stats["members"] == 12
    for t in r.trials:
        assert len(t.fold_objectives) == 3
        assert len(set(t.fold_objectives)) == 3  # different validation folds
        np.testing.assert_allclose(t.final_objective, np.mean(t.fold_objectives), rtol=1e-6)
        assert isinstance(r.state(t.trial), list) and len(r.state(t.trial)) == 3
    solo = sweep.run(task, space, [r.trials[2].hyperparams], trial_ids=[2], steps=10, eval_every=5, folds=3,
                     progress=False, devices=1)  # fmt: skip
    np.testing.assert_allclose(
        solo.trials[0].fold_objectives, r.trials[2].fold_objectives, rtol=RTOL, atol=ATOL
    )


def test_kfold_split_partitions():
    from jopt.sweep.folds import kfold_split

    s = kfold_split(23, 5, seed=1)
    vals = [np.asarray(s.val_idx[f])[np.asarray(s.val_mask[f]) > 0] for f in range(5)]
    assert sorted(np.concatenate(vals).tolist()) == list(range(23))
    for f in range(5):
        train = np.asarray(s.train_idx[f])[: int(s.train_count[f])]
        assert set(train) | set(vals[f]) == set(range(23)) and not set(train) & set(vals[f])


def test_memory_budget_sets_chunk_size(task):
    per = sweep.run(task, SPACE, 2, steps=2, eval_every=2, progress=False).stats["bytes_per_member"]
    r = sweep.run(
        task, SPACE, 16, steps=2, eval_every=2, progress=False, devices=2, memory_budget=int(per * 5.5)
    )
    assert r.stats["chunk_sizes"] == {"-": [4]} and r.stats["chunks"] == 4
