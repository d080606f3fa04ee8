"""jopt transforms inside optax and flax, optax transforms inside jopt, and extra arguments across them.

What happens to ``value=loss`` across the boundary:

* ``jopt.chain`` passes it to optax members whose ``update`` has a keyword-only
  ``value`` parameter (e.g. ``optax.polyak_sgd``), or that are wrapped with
  ``jopt.with_extra_args``;
* ``optax.chain`` passes extra arguments only to members that are
  ``optax.GradientTransformationExtraArgs``; a jopt transform is not one, so
  optax calls it *without* them. A jopt transform that needs ``value`` then
  fails with ``TypeError`` (missing argument), never silently. Wrapping it as
  ``optax.GradientTransformationExtraArgs(tx.init, tx.update)`` makes optax
  forward the argument;
* ``flax.nnx.Optimizer.update(model, grads, value=loss)`` forwards keyword
  arguments to ``tx.update`` directly, so they reach jopt transforms.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import jopt
from tests.reference import assert_trees_close, mlp, quadratic, trajectory


def _data(n=32, d=4, out=2, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    y = jnp.asarray(np.sin(rng.normal(size=(n, out))), jnp.float32)
    return x, y


def _jopt_adam_clipped(lr):
    return jopt.chain(jopt.clip_by_global_norm(0.5), optax.scale_by_adam(), jopt.scale_by_learning_rate(lr))


def _optax_adam_clipped(lr):
    return optax.chain(optax.clip_by_global_norm(0.5), optax.adam(lr))


def test_jopt_transforms_inside_optax_chain():
    prob = mlp()
    ours = optax.chain(
        jopt.clip_by_global_norm(0.5), optax.scale_by_adam(), jopt.scale_by_learning_rate(0.01)
    )
    mixed = optax.chain(
        jopt.partition(
            {"a": jopt.clip(0.1), "b": optax.clip(0.1)},
            lambda p: {k: "a" if k == "layer0" else "b" for k in p},
        ),
        optax.sgd(0.05),
    )
    assert_trees_close(
        trajectory(ours, prob, 120), trajectory(_optax_adam_clipped(0.01), prob, 120), rtol=1e-5
    )
    assert_trees_close(
        trajectory(mixed, prob, 120), trajectory(optax.chain(optax.clip(0.1), optax.sgd(0.05)), prob, 120)
    )


def test_optax_transforms_inside_jopt_combinators():
    prob = quadratic()
    ours = jopt.chain(
        optax.clip_by_global_norm(0.5), jopt.masked(optax.scale_by_adam(), {"x": True, "y": False})
    )
    ref = optax.chain(
        optax.clip_by_global_norm(0.5), optax.masked(optax.scale_by_adam(), {"x": True, "y": False})
    )
    assert_trees_close(
        trajectory(jopt.chain(ours, optax.scale(-0.05)), prob),
        trajectory(optax.chain(ref, optax.scale(-0.05)), prob),
    )
    # A foreign loss-driven transform gets the loss through jopt.chain when its update has a
    # keyword-only `value` (detected) or when it is declared with jopt.with_extra_args.
    detected = jopt.chain(
        jopt.clip_by_global_norm(10.0), optax.scale_by_polyak(max_learning_rate=0.1), optax.scale(-1.0)
    )
    declared = jopt.chain(
        jopt.clip_by_global_norm(10.0), jopt.with_extra_args(optax.polyak_sgd(max_learning_rate=0.1), "value")
    )
    ref = trajectory(
        optax.chain(optax.clip_by_global_norm(10.0), optax.polyak_sgd(max_learning_rate=0.1)),
        prob,
        pass_value=True,
    )
    assert "value" in detected.extra_args and "value" in declared.extra_args
    assert_trees_close(trajectory(detected, prob, pass_value=True), ref)
    assert_trees_close(trajectory(declared, prob, pass_value=True), ref)
    # optax.polyak_sgd is an optax.chain whose update takes **extra_args: as in optax, such a member
    # is forwarded every extra argument, so it gets the loss without being declared.
    undeclared = jopt.chain(jopt.clip_by_global_norm(10.0), optax.polyak_sgd(max_learning_rate=0.1))
    assert "value" in undeclared.extra_args and "anything" in undeclared.extra_args
    assert_trees_close(trajectory(undeclared, prob, pass_value=True), ref)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(8)(x))
        return nn.Dense(2)(x)


def _train_linen(tx, steps=8):
    x, y = _data()
    model = _MLP()
    params = model.init(jax.random.key(0), x)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @jax.jit
    def train_step(state):
        def loss_fn(p):
            return jnp.mean((state.apply_fn(p, x) - y) ** 2)

        grads = jax.grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads)

    for _ in range(steps):
        state = train_step(state)
    return state


def test_flax_train_state_with_jopt_tx_matches_optax():
    ours = _train_linen(_jopt_adam_clipped(0.02))
    ref = _train_linen(_optax_adam_clipped(0.02))
    assert int(ours.step) == 8
    assert_trees_close(ours.params, ref.params)
    initial = _MLP().init(jax.random.key(0), _data()[0])
    assert not np.allclose(ours.params["params"]["Dense_0"]["kernel"], initial["params"]["Dense_0"]["kernel"])


def test_flax_train_state_with_jopt_selective_transform_matches_optax():
    frozen = {"params": {"Dense_0": True, "Dense_1": False}}
    ours = _train_linen(jopt.selective_transform(_jopt_adam_clipped(0.02), freeze_mask=frozen))
    ref = _train_linen(optax.selective_transform(_optax_adam_clipped(0.02), freeze_mask=frozen))
    initial = _MLP().init(jax.random.key(0), _data()[0])
    assert_trees_close(ours.params, ref.params)
    np.testing.assert_array_equal(
        ours.params["params"]["Dense_0"]["kernel"], initial["params"]["Dense_0"]["kernel"]
    )
    # No optimizer state for the frozen layer (optax's selective_transform keeps a MaskedNode there too).
    frozen_state = [x for x in jax.tree.leaves(ours.opt_state) if x.shape == (4, 8)]
    assert frozen_state == []


class _NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(4, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


def _train_nnx(tx, steps=8, pass_value=False):
    x, y = _data()
    model = _NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        def loss_fn(m):
            return jnp.mean((m(x) - y) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, **({"value": loss} if pass_value else {}))
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(steps)]
    return model, optimizer, losses


def test_flax_nnx_optimizer_with_jopt_tx_matches_optax():
    ours, _, ours_losses = _train_nnx(_jopt_adam_clipped(0.02))
    ref, _, ref_losses = _train_nnx(_optax_adam_clipped(0.02))
    assert_trees_close(nnx.state(ours, nnx.Param), nnx.state(ref, nnx.Param))
    np.testing.assert_allclose(ours_losses, ref_losses, rtol=1e-6)
    assert ours_losses[-1] < ours_losses[0]


def test_flax_nnx_optimizer_with_a_fused_jopt_tx():
    # nnx.Optimizer inits with a state of nnx.Param variables and updates with plain arrays.
    tx = jopt.chain(jopt.clip_by_global_norm(0.5), jopt.adam(0.02))
    ours, optimizer, ours_losses = _train_nnx(jopt.fuse(tx))
    ref, _, ref_losses = _train_nnx(tx)
    is_packed = lambda x: isinstance(x, jopt.fused.Packed)  # noqa: E731
    state = nnx.as_pure(optimizer.opt_state)
    assert sum(map(is_packed, jax.tree.leaves(state, is_leaf=is_packed))) == 2  # Adam's two moments
    assert_trees_close(nnx.state(ours, nnx.Param), nnx.state(ref, nnx.Param))
    np.testing.assert_allclose(ours_losses, ref_losses, rtol=1e-6)


def _sgd_recording_value(lr):
    """Plain SGD that requires ``value=`` and keeps the latest one in its state."""

    def init(params):
        del params
        return jnp.zeros([], jnp.float32)

    def update(updates, state, params=None, *, value, **extra_args):
        del state, params, extra_args
        return jax.tree.map(lambda u: -lr * u, updates), jnp.asarray(value, jnp.float32)

    return jopt.transformation(init, update, extra_args=("value",))


def test_flax_nnx_optimizer_with_jopt_masked_and_value():
    # Only matrices are clipped (callable mask); nnx forwards value= to a loss-driven jopt transform.
    mask = lambda p: jax.tree.map(lambda a: a.ndim > 1, p)  # noqa: E731
    ours_tx = jopt.chain(jopt.masked(jopt.clip(0.01), mask), _sgd_recording_value(0.1))
    ref_tx = optax.chain(optax.masked(optax.clip(0.01), mask), optax.sgd(0.1))
    ours, optimizer, losses = _train_nnx(ours_tx, pass_value=True)
    ref, _, ref_losses = _train_nnx(ref_tx)
    assert_trees_close(nnx.state(ours, nnx.Param), nnx.state(ref, nnx.Param))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    recorded = nnx.as_pure(optimizer.opt_state)[1]
    np.testing.assert_allclose(float(recorded), losses[-1], rtol=1e-6)
    with pytest.raises(TypeError, match="value"):
        _train_nnx(ours_tx, pass_value=False)


def _loss_scaled_sgd(lr):
    """SGD whose step is scaled by ``value / value_at_first_call`` (a loss-driven jopt transform).

    The state keeps the first loss; the numbers equal plain SGD only when the
    loss arrives each step, and a missing ``value`` is a ``TypeError``.
    """

    def init(params):
        del params
        return jnp.zeros([], jnp.float32)

    def update(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        first = jnp.where(state == 0, value, state)
        factor = -lr * value / first
        return jax.tree.map(lambda u: (factor * u).astype(u.dtype), updates), first

    return jopt.transformation(init, update, extra_args=("value",))


def test_value_through_optax_chain_is_an_error_unless_wrapped():
    prob = quadratic()
    loss_driven = _loss_scaled_sgd(0.1)
    # optax.chain calls a jopt transform without extra args: a clear TypeError, not silent wrong numbers.
    dropped = optax.chain(optax.clip(10.0), loss_driven)
    with pytest.raises(TypeError, match="value"):
        trajectory(dropped, prob, 5, pass_value=True)
    # Declared as optax's extra-args type, the loss is forwarded and the numbers are right.
    wrapped = optax.chain(
        optax.clip(10.0), optax.GradientTransformationExtraArgs(loss_driven.init, loss_driven.update)
    )
    ours = trajectory(wrapped, prob, 100, pass_value=True)
    # NumPy transcription: step t is -lr * (L_t / L_0) * g_t.
    a = np.array([1.0, 4.0, 9.0, 0.5], np.float32)
    x, y = np.zeros(4, np.float32), np.ones((2, 3), np.float32)
    first = None
    for _ in range(100):
        loss = 0.5 * np.sum(a * (x - 1) ** 2) + 0.5 * np.sum((y + 2) ** 2)
        first = loss if first is None else first
        gx, gy = np.clip(a * (x - 1), -10, 10), np.clip(y + 2, -10, 10)
        x, y = x - 0.1 * loss / first * gx, y - 0.1 * loss / first * gy
    assert_trees_close(jax.tree.map(lambda v: v[-1], ours), {"x": x, "y": y}, rtol=1e-5, atol=1e-6)
