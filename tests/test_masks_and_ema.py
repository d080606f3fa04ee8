"""Weight-decay masks in every accepted form, and the ``ema`` transform, against optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import Problem, assert_trees_close, trajectory

PARAMS = {
    "enc": {"w": jnp.arange(6.0).reshape(2, 3) / 6, "b": jnp.ones(3)},
    "head": jnp.linspace(-1.0, 1.0, 4),
}
FULL = {"enc": {"w": True, "b": False}, "head": True}


def _loss(params):
    return sum(jnp.sum(0.1 * jnp.sin(x) + 0.05 * x + 0.2 * x**2) for x in jax.tree.leaves(params))


PROBLEM = Problem("masked", PARAMS, _loss)


@pytest.mark.parametrize(
    "mask, expected",
    [
        (None, {"enc": {"w": True, "b": True}, "head": True}),
        (True, {"enc": {"w": True, "b": True}, "head": True}),
        (False, {"enc": {"w": False, "b": False}, "head": False}),
        ({"enc": True, "head": False}, {"enc": {"w": True, "b": True}, "head": False}),
        (FULL, FULL),
        (lambda p: {"enc": {"w": True, "b": False}, "head": True}, FULL),
    ],
    ids=["none", "true", "false", "prefix", "full", "callable"],
)
def test_resolve_mask_broadcasts_every_form_to_one_entry_per_leaf(mask, expected):
    assert jopt.resolve_mask(mask, PARAMS) == expected


@pytest.mark.parametrize(
    "mask",
    [{"enc": True, "head": False}, FULL, lambda p: jax.tree.map(lambda x: x.ndim > 1, p)],
    ids=["prefix", "full", "callable"],
)
def test_adamw_mask_forms_match_optax_with_the_equivalent_full_mask(mask):
    full = jopt.resolve_mask(mask, PARAMS)
    ours = jopt.adamw(0.05, weight_decay=0.3, mask=mask)
    ref = optax.adamw(0.05, weight_decay=0.3, mask=full)
    got = trajectory(ours, PROBLEM, 30)
    want = trajectory(ref, PROBLEM, 30)
    # Adam near its optimum amplifies float32 rounding: 2e-5 absolute; a wrong mask
    # would be off by about lr * weight_decay * |theta| = 1.5e-2 per step.
    assert_trees_close(got, want, rtol=1e-5, atol=2e-5)


def test_masked_leaves_are_not_decayed():
    tx = jopt.add_decayed_weights(0.5, {"enc": False, "head": True})
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(updates["enc"]["w"], 0.0)
    np.testing.assert_array_equal(updates["enc"]["b"], 0.0)
    np.testing.assert_allclose(updates["head"], 0.5 * PARAMS["head"])


def test_lamb_prefix_mask_matches_optax():
    mask = {"enc": True, "head": False}
    got = trajectory(jopt.lamb(0.01, weight_decay=0.1, mask=mask), PROBLEM, 30)
    want = trajectory(optax.lamb(0.01, weight_decay=0.1, mask=jopt.resolve_mask(mask, PARAMS)), PROBLEM, 30)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("debias", [True, False])
def test_ema_matches_optax_over_many_steps(debias):
    params = {"a": jnp.linspace(0.0, 1.0, 5), "b": jnp.ones((2, 2))}
    ours = jopt.chain(jopt.ema(0.9, debias=debias), jopt.scale(-0.1))
    ref = optax.chain(optax.ema(0.9, debias=debias), optax.scale(-0.1))
    assert_trees_close(
        trajectory(ours, Problem("ema", params, _loss), 100),
        trajectory(ref, Problem("ema", params, _loss), 100),
        rtol=1e-5,
    )


def test_ema_decay_is_data_under_vmap_and_checked_when_concrete():
    params = {"a": jnp.ones(3)}

    def run(decay):
        tx = jopt.ema(decay)
        u, state = tx.update(params, tx.init(params))
        u, state = tx.update(jax.tree.map(lambda x: 3 * x, params), state)
        return u["a"][0]

    decays = jnp.array([0.0, 0.5, 0.9])
    np.testing.assert_allclose(jax.vmap(run)(decays), [run(float(d)) for d in decays], rtol=1e-6)
    with pytest.raises(ValueError, match="decay"):
        jopt.ema(1.5)
