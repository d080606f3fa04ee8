"""Search spaces, samplers and task validation (no compile needed)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import sweep
from tests.sweep_helpers import SPACE, CompileCounter, make_task


@pytest.mark.parametrize(
    "dim, message",
    [
        (lambda: sweep.uniform(1.0, 1.0), "empty or inverted"),
        (lambda: sweep.uniform(2.0, 1.0), "empty or inverted"),
        (lambda: sweep.loguniform(0.0, 1.0), "must be > 0"),
        (lambda: sweep.loguniform(-1e-3, 1.0), "must be > 0"),
        (lambda: sweep.loguniform(1e-2, 1e-3), "empty or inverted"),
        (lambda: sweep.uniform(0.0, math.inf), "finite"),
        (lambda: sweep.integer(5, 1), "inverted"),
        (lambda: sweep.choice([]), "at least one value"),
        (lambda: sweep.choice(["adam", "sgd"]), "static=True"),
    ],
)
def test_invalid_dimensions_name_the_problem(dim, message):
    with pytest.raises(sweep.SearchSpaceError, match=message) as err:
        sweep.Space(lr=dim())
    assert "lr" in str(err.value)


def test_reserved_and_empty_space():
    with pytest.raises(sweep.SearchSpaceError, match="reserved"):
        sweep.Space(fold=sweep.uniform(0, 1))
    with pytest.raises(sweep.SearchSpaceError, match="empty"):
        sweep.Space()


def test_traced_and_static_names():
    space = sweep.Space(
        lr=sweep.loguniform(1e-3, 1.0),
        n=sweep.integer(1, 3),
        act=sweep.choice(["relu", "tanh"], static=True),
        bs=32,
    )
    assert space.traced_names == ("lr", "n")
    assert space.static_names == ("act", "bs")
    assert space["n"].dtype == "int32" and space["lr"].dtype == "float32"


@pytest.mark.parametrize("method", ["random", "sobol", "halton"])
def test_samplers_deterministic_and_in_range(method):
    space = sweep.Space(
        lr=sweep.loguniform(1e-4, 1e-1), m=sweep.uniform(0.5, 0.9), k=sweep.integer(2, 5),
        w=sweep.choice([16, 32], static=True), bs=8,
    )  # fmt: skip
    a = sweep.sample(space, method, 64, seed=3)
    assert a == sweep.sample(space, method, 64, seed=3)
    assert a != sweep.sample(space, method, 64, seed=4)
    lr = np.array([c["lr"] for c in a])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1
    assert np.log10(lr).min() < -3.5 and np.log10(lr).max() > -1.5  # log-spread, not linear
    assert {c["k"] for c in a} == {2, 3, 4, 5}
    assert {c["w"] for c in a} == {16, 32}
    assert all(c["bs"] == 8 for c in a)


def test_grid_is_cartesian():
    space = sweep.Space(
        lr=sweep.loguniform(1e-3, 1e-1), m=sweep.choice([0.0, 0.9]), w=sweep.choice([1, 2], static=True)
    )
    configs = sweep.sample(space, "grid", grid_points=3)
    assert len(configs) == 12
    assert len({tuple(c.values()) for c in configs}) == 12
    np.testing.assert_allclose(sorted({c["lr"] for c in configs}), [1e-3, 1e-2, 1e-1])
    with pytest.raises(sweep.SearchSpaceError, match="12 combinations"):
        sweep.sample(space, "grid", 10, grid_points=3)


def test_unknown_method_and_bad_config():
    with pytest.raises(sweep.SearchSpaceError, match="unknown search method"):
        sweep.sample(SPACE, "bayes", 4)
    with pytest.raises(sweep.SearchSpaceError, match="not in the space"):
        SPACE.validate_config({"learning_rate": 0.1, "weight_decay": 0.0, "b1": 0.9, "lr": 1})
    with pytest.raises(sweep.SearchSpaceError, match="lacks hyperparameter 'b1'"):
        SPACE.validate_config({"learning_rate": 0.1, "weight_decay": 0.0})


def _run(task, space, **kw):
    return sweep.run(task, space, 4, steps=4, eval_every=2, progress=False, **kw)


def test_unknown_hyperparameter_name_fails_before_compile():
    base = make_task()

    def step(hp, state, key):
        del hp["lr"]  # typo of learning_rate

    task = sweep.Task(base.init, lambda hp, s, k: (hp["lr"], step)[1](hp, s, k), base.evaluate)
    with (
        CompileCounter() as cc,
        pytest.raises(sweep.SearchSpaceError, match=r"task.step: .*'lr'.*learning_rate"),
    ):
        _run(task, SPACE)
    assert cc.count == 0


def test_fold_without_folds_is_a_clear_error():
    base = make_task()
    task = sweep.Task(lambda hp, k: (hp["fold"], base.init(hp, k))[1], base.step, base.evaluate)
    with pytest.raises(sweep.SearchSpaceError, match="folds=k"):
        _run(task, SPACE)


def test_traced_hyperparameter_used_as_shape_fails_before_compile():
    space = sweep.Space(learning_rate=sweep.loguniform(1e-3, 1e-1), width=sweep.choice([4, 8]))

    def init(hp, key):
        return jnp.zeros(hp["width"])

    def step(hp, w, key):
        return w - hp["learning_rate"] * w, {"loss": jnp.sum(w)}

    task = sweep.Task(init, step, lambda hp, w: jnp.sum(w**2))
    with CompileCounter() as cc, pytest.raises(sweep.SearchSpaceError, match=r"'width'.*static=True"):
        _run(task, space)
    assert cc.count == 0
    # declared static, the same task is fine (two groups)
    ok = sweep.Space(learning_rate=sweep.loguniform(1e-3, 1e-1), width=sweep.choice([4, 8], static=True))
    sweep.check_task(task, ok, sweep.sample(ok, "grid", grid_points=2))


def test_step_changing_state_structure_is_rejected():
    task = sweep.Task(
        lambda hp, k: jnp.zeros(3),
        lambda hp, w, k: (jnp.zeros(4) * hp["lr"], {"loss": 0.0}),
        lambda hp, w: jnp.sum(w),
    )
    with pytest.raises(sweep.SearchSpaceError, match="same structure, shapes and dtypes"):
        sweep.check_task(task, sweep.Space(lr=sweep.uniform(0.1, 1.0)))


def test_unused_hyperparameter_warns():
    space = sweep.Space(learning_rate=sweep.loguniform(1e-3, 1e-1), unused=sweep.uniform(0, 1))
    task = sweep.Task(
        lambda hp, k: jnp.ones(2),
        lambda hp, w, k: (w * (1 - hp["learning_rate"]), {"loss": jnp.sum(w)}),
        lambda hp, w: jnp.sum(w),
    )
    with pytest.warns(UserWarning, match="unused"):
        sweep.check_task(task, space)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 10, "eval_every": 3}, "dividing"),
        ({"steps": 0}, "positive"),
        ({"steps": 4, "mode": "up"}, "mode"),
        ({"steps": 4, "folds": 1}, "folds"),
        ({"steps": 4, "patience": 0}, "patience"),
    ],
)
def test_bad_run_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sweep.run(make_task(), SPACE, 2, progress=False, **kwargs)


def test_memory_budget_too_small():
    with pytest.raises(ValueError, match="too small"):
        sweep.run(make_task(), SPACE, 2, steps=2, memory_budget="1kB", progress=False)


def test_keys_are_per_trial():
    from jopt.sweep.programs import member_keys

    a, _ = member_keys(0, np.array([0, 1, 2]), np.array([0, 0, 0]))
    b, _ = member_keys(0, np.array([2, 0]), np.array([1, 0]))
    np.testing.assert_array_equal(a[2], b[0])  # init key ignores the fold and the position
    np.testing.assert_array_equal(a[0], b[1])
    assert not np.array_equal(a[0], a[1])
    assert jax.random.key_data(jax.random.key(0)).shape == a[0].shape
