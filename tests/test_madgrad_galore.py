"""MADGRAD and GaLore against optax 0.2.8's ``optax.contrib`` implementations.

Whole 120-step trajectories, bit for bit in float32 and float64, on ``mlp3d``
(matrix, vector and 3-D leaves) and a second problem: Rosenbrock for MADGRAD,
the quadratic for GaLore (its ``(2, 3)`` leaf is projected; Rosenbrock has no
matrix). GaLore's projector refreshes (one SVD per matrix every
``update_proj_gap`` steps) happen several times within each trajectory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.optimizers.dual_averaging import madgrad
from jopt.optimizers.low_rank import galore
from jopt.transforms.dual_averaging import MadgradState, scale_by_madgrad
from jopt.transforms.low_rank import GaLoreDimensionNumbers, GaLoreState, scale_by_galore
from tests.reference import (
    OptCase,
    Problem,
    assert_trees_close,
    assert_trees_equal,
    mlp3d,
    quadratic,
    rosenbrock,
)
from tests.reference import trajectory as _trajectory

STEPS = 120


def trajectory(tx, problem: Problem, steps: int = STEPS):
    return _trajectory(tx, problem, steps)


def _float64(problem: Problem) -> Problem:
    return problem._replace(params=jax.tree.map(lambda x: x.astype(jnp.float64), problem.params))


def _arrays(kwargs: dict) -> dict:
    """Numeric hyperparameters as float32 / int32 arrays (the traced path)."""
    return {
        k: jnp.asarray(v, jnp.int32 if isinstance(v, int) else jnp.float32)
        if isinstance(v, (int, float)) and k != "rank"
        else v
        for k, v in kwargs.items()
    }


# --------------------------------------------------------------------------- MADGRAD

MADGRAD = dict(learning_rate=0.02, momentum=0.8, weight_decay=1e-3, eps=1e-5)


@pytest.mark.parametrize("problem", ["mlp3d", "rosenbrock"])
def test_madgrad_trajectory_equals_optax_float32(problem):
    prob = {"mlp3d": mlp3d, "rosenbrock": rosenbrock}[problem]()
    lr = MADGRAD["learning_rate"] if problem == "mlp3d" else 2e-3
    kw = {**MADGRAD, "learning_rate": lr}
    assert_trees_equal(trajectory(madgrad(**kw), prob), trajectory(optax.contrib.madgrad(**kw), prob))


def test_madgrad_defaults_and_schedule_equal_optax():
    prob = mlp3d()
    assert_trees_equal(trajectory(madgrad(0.01), prob), trajectory(optax.contrib.madgrad(0.01), prob))
    ours = madgrad(jopt.linear_schedule(0.02, 0.002, STEPS), momentum=0.5)
    theirs = optax.contrib.madgrad(optax.linear_schedule(0.02, 0.002, STEPS), momentum=0.5)
    assert_trees_equal(trajectory(ours, prob), trajectory(theirs, prob))


def test_madgrad_trajectory_equals_optax_float64():
    with jax.enable_x64(True):
        prob = _float64(mlp3d())
        ours = trajectory(madgrad(**MADGRAD), prob)
        assert jax.tree.leaves(ours)[0].dtype == jnp.float64
        assert_trees_equal(ours, trajectory(optax.contrib.madgrad(**MADGRAD), prob))


def test_madgrad_array_hyperparameters_follow_number_path():
    # 1 - float32(momentum) against float32(1 - momentum). MADGRAD's step grows like g^(1/3), so
    # coordinates with tiny gradients amplify rounding differences; with lr 0.02 the two paths drift
    # apart by O(1) on mlp3d within 60 steps. At lr 0.005 they agree to 1e-3 relative over 120 steps.
    prob = mlp3d()
    kw = {**MADGRAD, "learning_rate": 0.005}
    ours = trajectory(madgrad(**_arrays(kw)), prob)
    assert_trees_close(ours, trajectory(madgrad(**kw), prob), rtol=1e-3, atol=1e-5)


def test_madgrad_state_keeps_initial_params_and_counts():
    prob = quadratic()
    tx = scale_by_madgrad(0.1)
    state = tx.init(prob.params)
    assert isinstance(state, MadgradState)
    for _ in range(3):
        _, state = jax.jit(tx.update)(jax.grad(prob.loss)(prob.params), state, prob.params)
    assert int(state.count) == 3
    assert_trees_equal(state.x0, prob.params)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(prob.params, state)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"learning_rate": -0.1}, r"learning_rate must be in \[0, inf\]"),
        ({"eps": -1e-6}, r"eps must be in \[0, inf\]"),
    ],
)
def test_madgrad_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        madgrad(**{"learning_rate": 0.1, **kwargs})


# --------------------------------------------------------------------------- GaLore

GALORE = dict(learning_rate=0.01, rank=2, update_proj_gap=10, scale=0.5, weight_decay=1e-3)


def _stack_dims(dims):
    """mlp3d's leaves as matrices: the (2, 8, 8) stack as 16 x 8, inp/w transposed, vectors skipped."""

    def specs(params):
        del params
        return {
            "inp": {"w": dims(1, 0), "b": None},
            "stack": {"w": dims((0, 1), -1), "b": dims()},
            "out": {"w": dims(), "b": None},
        }

    return specs


@pytest.mark.parametrize("problem", ["mlp3d", "quadratic"])
def test_galore_trajectory_equals_optax_float32(problem):
    prob = {"mlp3d": mlp3d, "quadratic": quadratic}[problem]()
    assert_trees_equal(trajectory(galore(**GALORE), prob), trajectory(optax.contrib.galore(**GALORE), prob))


def test_galore_dimension_numbers_and_base_optimizer_equal_optax():
    # The 3-D stack projected as a 16 x 8 matrix, a transposed view, and Lion as the base.
    prob = mlp3d()
    ours = galore(
        0.01, rank=3, update_proj_gap=7, base_optimizer=jopt.scale_by_lion(b1=0.9),
        weight_dimension_numbers=_stack_dims(GaLoreDimensionNumbers),
    )  # fmt: skip
    theirs = optax.contrib.galore(
        0.01, rank=3, update_proj_gap=7, base_optimizer=optax.scale_by_lion(b1=0.9),
        weight_dimension_numbers=_stack_dims(optax.contrib.GaLoreDimensionNumbers),
    )  # fmt: skip
    assert_trees_equal(trajectory(ours, prob), trajectory(theirs, prob))


def test_galore_single_dimension_numbers_and_defaults_equal_optax():
    prob = quadratic()  # default rank 128 is clipped to min(m, n)
    assert_trees_equal(trajectory(galore(0.05), prob), trajectory(optax.contrib.galore(0.05), prob))
    ours = galore(0.05, rank=1, weight_dimension_numbers=GaLoreDimensionNumbers(1, 0), update_proj_gap=5)
    theirs = optax.contrib.galore(
        0.05, rank=1, weight_dimension_numbers=optax.contrib.GaLoreDimensionNumbers(1, 0), update_proj_gap=5
    )
    assert_trees_equal(trajectory(ours, prob), trajectory(theirs, prob))


def test_galore_trajectory_equals_optax_float64():
    with jax.enable_x64(True):
        prob = _float64(mlp3d())
        ours = trajectory(galore(**GALORE), prob)
        assert jax.tree.leaves(ours)[0].dtype == jnp.float64
        assert_trees_equal(ours, trajectory(optax.contrib.galore(**GALORE), prob))


def test_galore_array_hyperparameters_follow_number_path():
    prob = mlp3d()
    assert_trees_close(
        trajectory(galore(**_arrays(GALORE)), prob), trajectory(galore(**GALORE), prob), rtol=1e-4, atol=1e-6
    )


def test_galore_state_shapes_and_projector_refresh():
    params = {"tall": jnp.ones((6, 3)), "wide": jnp.ones((2, 5)), "b": jnp.ones(3)}
    tx = scale_by_galore(rank=2, update_proj_gap=3)
    state = tx.init(params)
    assert isinstance(state, GaLoreState)
    shapes = jax.tree.map(jnp.shape, (state.projector, state.base_optimizer_state.mu))
    assert shapes == (
        {"tall": (6, 2), "wide": (5, 2), "b": (0, 0)},
        {"tall": (2, 3), "wide": (2, 2), "b": (3,)},
    )
    rng = np.random.default_rng(0)
    update = jax.jit(tx.update)
    projectors = []
    for _ in range(7):
        grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
        _, state = update(grads, state)
        projectors.append(np.asarray(state.projector["tall"]))
        gram = state.projector["tall"].T @ state.projector["tall"]
        np.testing.assert_allclose(gram, np.eye(2), atol=1e-5)
    changed = [not np.array_equal(a, b) for a, b in zip(projectors, projectors[1:])]
    assert changed == [False, False, True, False, False, True]  # refreshed at counts 0, 3, 6
    empty = scale_by_galore().init({})
    assert empty.projector == {} and int(empty.count) == 0


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"rank": 0}, ValueError, r"rank must be in \[1, inf\]"),
        ({"rank": 2.0}, TypeError, "rank must be an int"),
        ({"update_proj_gap": 0}, ValueError, r"update_proj_gap must be in \[1, inf\]"),
        ({"update_proj_gap": 2.5}, ValueError, "update_proj_gap must be an integer"),
        ({"learning_rate": -1.0}, ValueError, r"learning_rate must be in \[0, inf\]"),
    ],
)
def test_galore_bad_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        galore(**{"learning_rate": 0.1, **kwargs})


def test_galore_bad_dimension_numbers():
    tx = scale_by_galore(weight_dimension_numbers={"w": GaLoreDimensionNumbers(0, 0)})
    with pytest.raises(ValueError, match="disjoint"):
        tx.init({"w": jnp.ones((2, 3))})
    tx = scale_by_galore(weight_dimension_numbers={"w": GaLoreDimensionNumbers(0, 1)})
    with pytest.raises(ValueError, match="every axis"):
        tx.init({"w": jnp.ones((2, 3, 4))})


# --------------------------------------------------------------------------- generic cases


def _galore_case(**kw):
    return galore(rank=1, **kw)


CASES: list[OptCase] = [
    OptCase(
        "madgrad",
        madgrad,
        dict(learning_rate=0.01, momentum=0.9, weight_decay=1e-4, eps=1e-6),
        optax.contrib.madgrad,
    ),
    OptCase(
        "galore",
        _galore_case,
        dict(learning_rate=0.05, update_proj_gap=20, scale=1.0, weight_decay=1e-4),
        lambda **kw: optax.contrib.galore(rank=1, **kw),
    ),
]
