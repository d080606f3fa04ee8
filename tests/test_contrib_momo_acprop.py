"""jopt.contrib's momo, momo_adam, acprop and reduce_on_plateau against optax.contrib (bit for bit)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt import contrib
from tests.reference import assert_trees_close, assert_trees_equal, mlp3d

STEPS = 20


def run(tx, problem, steps=STEPS, pass_value=True):
    """Stacked parameters after each step and the final state, from one jitted scan."""

    @jax.jit
    def go(params):
        def step(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(problem.loss)(p)
            u, s = tx.update(g, s, p, **({"value": value} if pass_value else {}))
            p = jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u)
            return (p, s), p

        (_, state), ps = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return ps, state

    return go(problem.params)


MOMO_CASES = [
    ("momo", {"learning_rate": 1.0}),
    (
        "momo",
        {
            "learning_rate": 0.5,
            "beta": 0.8,
            "lower_bound": 0.02,
            "weight_decay": 1e-2,
            "adapt_lower_bound": True,
        },
    ),
    ("momo_adam", {"learning_rate": 1e-2}),
    (
        "momo_adam",
        {"learning_rate": 0.1, "b1": 0.8, "b2": 0.99, "weight_decay": 1e-2, "adapt_lower_bound": True},
    ),
]


@pytest.mark.parametrize("name,kwargs", MOMO_CASES)
def test_momo_matches_optax_exactly(name, kwargs):
    problem = mlp3d()
    ours, our_state = run(getattr(contrib, name)(**kwargs), problem)
    theirs, their_state = run(getattr(optax.contrib, name)(**kwargs), problem)
    assert_trees_equal(ours, theirs)
    for field in ("barf", "gamma", "lb"):
        np.testing.assert_array_equal(getattr(our_state, field), getattr(their_state, field), err_msg=field)
    assert_trees_equal(our_state.exp_avg, their_state.exp_avg)
    assert int(our_state.count) == STEPS
    # the runs move, and the adaptive lower bound does adapt
    assert float(problem.loss(jax.tree.map(lambda x: x[-1], ours))) < float(problem.loss(problem.params))
    if kwargs.get("adapt_lower_bound"):
        assert float(our_state.lb) != kwargs.get("lower_bound", 0.0)


ACPROP_CASES = [
    {"learning_rate": 1e-2},
    {"learning_rate": 3e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-8, "eps_root": 1e-10, "weight_decay": 1e-2},
]


@pytest.mark.parametrize("kwargs", ACPROP_CASES)
def test_acprop_matches_optax_exactly(kwargs):
    problem = mlp3d()
    mask = jax.tree.map(lambda x: x.ndim > 1, problem.params)
    ours, our_state = run(contrib.acprop(**kwargs, mask=mask), problem, pass_value=False)
    theirs, their_state = run(optax.contrib.acprop(**kwargs, mask=mask), problem, pass_value=False)
    assert_trees_equal(ours, theirs)
    assert_trees_equal(our_state[0].nu, their_state[0].nu)
    assert_trees_equal(our_state[0].mu, their_state[0].mu)


def test_scale_by_acprop_first_step_divides_by_one_then_by_previous_moment():
    tx = contrib.scale_by_acprop(b1=0.5, b2=0.5, eps=0.0, eps_root=0.0)
    params = jnp.zeros(2)
    g1, g2 = jnp.array([3.0, -2.0]), jnp.array([1.0, 1.0])
    u1, state = tx.update(g1, tx.init(params))
    np.testing.assert_array_equal(u1, g1)
    u2, _ = tx.update(g2, state)
    s1 = 0.5 * g1**2  # (g1 - m0)^2 with m0 = 0, bias-corrected by 1 - 0.5
    np.testing.assert_allclose(u2, g2 / np.sqrt(s1 / 0.5), rtol=1e-6)


def test_reduce_on_plateau_has_optax_signature_and_matches_it():
    ours_sig = list(inspect.signature(contrib.reduce_on_plateau).parameters)
    assert ours_sig == list(inspect.signature(optax.contrib.reduce_on_plateau).parameters)
    problem = mlp3d()
    kw = {"factor": 0.5, "patience": 2, "rtol": 5e-2, "cooldown": 1}
    ours, our_state = run(jopt.chain(jopt.sgd(0.5), contrib.reduce_on_plateau(**kw)), problem, 30)
    theirs, their_state = run(optax.chain(optax.sgd(0.5), optax.contrib.reduce_on_plateau(**kw)), problem, 30)
    assert_trees_equal(ours, theirs)
    for field in ("scale", "best_value", "plateau_count", "cooldown_count", "count", "avg_value"):
        np.testing.assert_array_equal(
            getattr(our_state[1], field), getattr(their_state[1], field), err_msg=field
        )
    assert float(our_state[1].scale) < 1.0  # the plateau logic did reduce
    assert isinstance(our_state[1], contrib.ReduceLROnPlateauState)


def test_reduce_on_plateau_loss_stuck_at_minus_one_is_a_plateau():
    tx = contrib.reduce_on_plateau(factor=0.5, patience=2)
    g = jnp.ones(2)
    state = tx.init(g)
    for _ in range(3):
        u, state = tx.update(g, state, value=jnp.asarray(-1.0))
    assert float(state.scale) == 0.5
    np.testing.assert_array_equal(u, 0.5 * g)


def _vmapped_vs_single(make, name, values, base, problem, steps=10):
    """Final parameters of runs vmapped over ``name`` against one run per Python value."""

    def final(v):
        return jax.tree.map(lambda x: x[-1], run(make(**{**base, name: v}), problem, steps)[0])

    batched = jax.jit(jax.vmap(final))(jnp.asarray(values, jnp.float32))
    for i, v in enumerate(values):
        single = final(v)
        assert_trees_close(
            jax.tree.map(lambda x, i=i: x[i], batched), single, rtol=2e-5, atol=2e-6, err_msg=name
        )


@pytest.mark.parametrize(
    "make,name,values,base",
    [
        (contrib.momo, "learning_rate", [0.3, 1.0], {"weight_decay": 1e-2}),
        (contrib.momo, "beta", [0.8, 0.9], {"weight_decay": 1e-2}),
        (contrib.momo_adam, "b2", [0.99, 0.999], {"learning_rate": 0.1, "weight_decay": 1e-2}),
        (contrib.acprop, "b1", [0.8, 0.9], {"learning_rate": 1e-2}),
    ],
)
def test_array_hyperparameters_under_vmap_agree_to_float32_rounding(make, name, values, base):
    _vmapped_vs_single(make, name, values, base, mlp3d())


def test_momo_errors_name_the_problem():
    with pytest.raises(ValueError, match="beta"):
        contrib.momo(beta=1.5)
    with pytest.raises(ValueError, match="b2"):
        contrib.momo_adam(b2=-0.1)
    tx = contrib.momo()
    params = jnp.ones(2)
    with pytest.raises(ValueError, match="value"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params), value=1.0)


@pytest.mark.parametrize("name", ["momo", "momo_adam"])
def test_scheduled_learning_rate_matches_optax_exactly(name):
    schedule = optax.linear_schedule(1.0, 0.1, 10)
    ours, _ = run(getattr(contrib, name)(learning_rate=schedule), mlp3d())
    theirs, _ = run(getattr(optax.contrib, name)(learning_rate=schedule), mlp3d())
    assert_trees_equal(ours, theirs)
