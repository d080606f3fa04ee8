"""Traced-rate dropout (linen and nnx) and traced label smoothing.

Python-number rates: bit-equal to flax's Dropout given the same RNG (np.testing.assert_array_equal).
Array / traced rates: rate 0 is the identity exactly; rates whose keep probability is exact in
float32 (0.25, 0.5) are bit-equal to flax; others agree to float32 rounding of ``1 - rate``.
Label smoothing: bit-equal to optax's softmax_cross_entropy on smoothed one-hot labels.
The sweep test: dropout rate x learning rate x smoothing traced, one static group; the compile
count of a 2-trial and a 4-trial sweep is the same, and each trial equals the same configuration
run alone (trial_ids=[i]) to rtol 1e-5, atol 1e-6 (batched vs unbatched float32 matmuls).
"""

from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx as fnnx

import jopt
from jopt import datasets, sweep
from jopt import nn as jnn
from jopt.nn import nnx as jnnx

X = jax.random.normal(jax.random.key(3), (4, 5, 16))
RATES = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]


@pytest.mark.parametrize("broadcast_dims", [(), (1,), (0, 2)])
def test_linen_python_rate_bit_equal_to_flax(broadcast_dims):
    for rate in RATES:
        ours = jnn.Dropout(rate, broadcast_dims=broadcast_dims, deterministic=False)
        theirs = fnn.Dropout(rate, broadcast_dims=broadcast_dims, deterministic=False)
        rngs = {"dropout": jax.random.key(7)}
        want = theirs.apply({}, X, rngs=rngs)
        np.testing.assert_array_equal(ours.apply({}, X, rngs=rngs), want)
        key = jax.random.key(8)  # an explicit rng argument
        np.testing.assert_array_equal(ours.apply({}, X, rng=key), theirs.apply({}, X, rng=key))
    # deterministic (constructor or call) and rate 0 need no rng, as in flax
    np.testing.assert_array_equal(jnn.Dropout(0.5, deterministic=True).apply({}, X), X)
    np.testing.assert_array_equal(jnn.Dropout(0.5).apply({}, X, deterministic=True), X)
    np.testing.assert_array_equal(jnn.Dropout(0.0).apply({}, X, deterministic=False), X)


class _Net(fnn.Module):
    dropout_cls: type
    rate: float

    @fnn.compact
    def __call__(self, x, train: bool):
        x = fnn.relu(fnn.Dense(32)(x))
        x = self.dropout_cls(self.rate)(x, deterministic=not train)
        x = fnn.relu(fnn.Dense(32)(x))
        x = self.dropout_cls(self.rate, broadcast_dims=(0,))(x, deterministic=not train)
        return fnn.Dense(3)(x)


def test_linen_in_a_model_same_outputs_and_gradients_as_flax():
    x = X[0]
    ours, theirs = _Net(jnn.Dropout, 0.3), _Net(fnn.Dropout, 0.3)
    params = theirs.init(jax.random.key(0), x, train=False)
    assert jax.tree.structure(ours.init(jax.random.key(0), x, train=False)) == jax.tree.structure(params)

    def loss(model, p):
        out = model.apply(p, x, train=True, rngs={"dropout": jax.random.key(5)})
        return jnp.sum(out**2)

    for a, b in zip(jax.grad(lambda p: loss(ours, p))(params), jax.grad(lambda p: loss(theirs, p))(params)):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    np.testing.assert_array_equal(loss(ours, params), loss(theirs, params))


def test_traced_rate_one_program_rate_zero_identity():
    rngs = {"dropout": jax.random.key(7)}
    traces = []

    @jax.jit
    def apply(rate):
        traces.append(1)
        return jnn.Dropout(rate, deterministic=False).apply({}, X, rngs=rngs)

    outs = jax.vmap(apply)(jnp.array(RATES[:-1] + [0.3], jnp.float32))
    assert len(traces) == 1
    np.testing.assert_array_equal(outs[0], X)  # rate 0: the identity, exactly
    for i, rate in enumerate(RATES[:-1]):
        want = fnn.Dropout(rate, deterministic=False).apply({}, X, rngs=rngs)
        if rate in (0.0, 0.25, 0.5):  # 1 - rate is exact in float32: bit-equal to flax
            np.testing.assert_array_equal(outs[i], want)
        np.testing.assert_allclose(outs[i], want, rtol=1e-6)
        np.testing.assert_array_equal(outs[i] == 0, want == 0)  # the same mask
    want = fnn.Dropout(0.3, deterministic=False).apply({}, X, rngs=rngs)
    np.testing.assert_allclose(outs[-1], want, rtol=1e-6)
    # one program for every rate: a second batch of values does not retrace
    jax.vmap(apply)(jnp.array([0.7, 0.2, 0.05, 0.6, 0.4, 0.0], jnp.float32))
    assert len(traces) == 1


def test_traced_rate_one_gives_zeros_and_zero_gradients():
    def f(rate, x):
        return jnp.sum(jnn.dropout(jax.random.key(0), x, rate) ** 2)

    value, grad = jax.value_and_grad(f, argnums=1)(jnp.float32(1.0), X)
    assert value == 0.0
    np.testing.assert_array_equal(grad, jnp.zeros_like(X))
    np.testing.assert_array_equal(jnn.dropout(jax.random.key(0), X, jnp.float32(1.0)), jnp.zeros_like(X))


def test_bad_concrete_rate_raises():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rate"):
            jnn.dropout(jax.random.key(0), X, bad)
    with pytest.raises(ValueError, match="rate"):
        jnn.Dropout(2.0, deterministic=False).apply({}, X, rngs={"dropout": jax.random.key(0)})


def test_bfloat16_inputs_keep_their_dtype():
    x = X.astype(jnp.bfloat16)
    assert jnn.dropout(jax.random.key(0), x, jnp.float32(0.3)).dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        jnn.dropout(jax.random.key(0), x, 0.3),
        fnn.Dropout(0.3, deterministic=False).apply({}, x, rng=jax.random.key(0)),
    )


# ----------------------------------------------------------------------------- nnx


def test_nnx_python_rate_bit_equal_to_flax_with_streams():
    for rate in RATES:
        ours = jnnx.Dropout(rate, broadcast_dims=(1,), rngs=fnnx.Rngs(dropout=3))
        theirs = fnnx.Dropout(rate, broadcast_dims=(1,), rngs=fnnx.Rngs(dropout=3))
        for _ in range(3):  # the forked stream advances as flax's does
            np.testing.assert_array_equal(ours(X), theirs(X))
        key = jax.random.key(4)
        np.testing.assert_array_equal(ours(X, rngs=key), theirs(X, rngs=key))
        call_rngs = fnnx.Rngs(dropout=9)
        np.testing.assert_array_equal(ours(X, rngs=call_rngs), theirs(X, rngs=fnnx.Rngs(dropout=9)))
    layer = jnnx.Dropout(0.5, rngs=fnnx.Rngs(0))
    layer.eval()
    np.testing.assert_array_equal(layer(X), X)
    layer.train()
    assert not np.array_equal(layer(X), X)
    np.testing.assert_array_equal(layer(X, deterministic=True), X)
    with pytest.raises(ValueError, match="rngs"):
        jnnx.Dropout(0.5)(X)


def test_nnx_traced_rate_is_state_and_vmaps():
    def build_and_apply(rate):
        layer = jnnx.Dropout(rate, rngs=fnnx.Rngs(dropout=3))
        graphdef, state = fnnx.split(layer)
        return fnnx.merge(graphdef, state)(X), state

    outs, states = jax.jit(jax.vmap(build_and_apply))(jnp.array([0.0, 0.5, 0.25]))
    np.testing.assert_array_equal(outs[0], X)
    np.testing.assert_array_equal(states["rate"], np.array([0.0, 0.5, 0.25], np.float32))
    for i, rate in enumerate([0.5, 0.25], start=1):
        np.testing.assert_array_equal(outs[i], fnnx.Dropout(rate, rngs=fnnx.Rngs(dropout=3))(X))


# ----------------------------------------------------------------------------- label smoothing


def test_smoothed_cross_entropy_bit_equal_to_optax():
    logits = jax.random.normal(jax.random.key(1), (6, 5)) * 3
    labels = jnp.array([0, 4, 2, 2, 1, 3])
    one_hot = jax.nn.one_hot(labels, 5)
    for alpha in (0.0, 0.1, 0.3, 1.0):
        for given in (alpha, jnp.float32(alpha)):
            want = optax.losses.softmax_cross_entropy(logits, optax.smooth_labels(one_hot, given))
            np.testing.assert_array_equal(jnn.smoothed_cross_entropy(logits, labels, given), want)
    plain = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(jnn.smoothed_cross_entropy(logits, labels), plain, rtol=1e-6)
    traced = jax.jit(jax.vmap(lambda a: jnn.smoothed_cross_entropy(logits, labels, a)))
    alphas = jnp.array([0.0, 0.1, 0.3], jnp.float32)
    for a, row in zip(alphas, traced(alphas)):
        want = optax.losses.softmax_cross_entropy(logits, optax.smooth_labels(one_hot, a))
        np.testing.assert_allclose(row, want, rtol=1e-6)
    with pytest.raises(ValueError, match="smoothing"):
        jnn.smoothed_cross_entropy(logits, labels, 1.2)


# ----------------------------------------------------------------------------- a sweep, one compile

DATA = datasets.synthetic_classification(96, features=8, classes=3)
SPACE = sweep.Space(
    dropout=sweep.uniform(0.0, 0.5),
    learning_rate=sweep.loguniform(1e-3, 1e-1),
    smoothing=sweep.uniform(0.0, 0.2),
)


class _DropoutMLP(fnn.Module):
    rate: object

    @fnn.compact
    def __call__(self, x, train: bool):
        x = fnn.relu(fnn.Dense(16)(x))
        x = jnn.Dropout(self.rate)(x, deterministic=not train)
        return fnn.Dense(DATA.num_classes)(x)


def _dropout_task() -> sweep.Task:
    """supervised_task's recipe with a dropout key per step and a smoothed loss (supervised_task
    applies the model without rngs and has a fixed loss)."""

    def tx(hp):
        return jopt.adamw(hp["learning_rate"], weight_decay=1e-3)

    def init(hp, key):
        params = _DropoutMLP(hp["dropout"]).init(key, DATA.x_train[:1], train=False)
        return sweep.TrainState(params, tx(hp).init(params))

    def step(hp, state, key):
        batch_key, drop_key = jax.random.split(key)
        idx = jax.random.randint(batch_key, (16,), 0, DATA.x_train.shape[0])
        xb, yb = DATA.x_train[idx], DATA.y_train[idx]

        def loss_fn(p):
            logits = _DropoutMLP(hp["dropout"]).apply(p, xb, train=True, rngs={"dropout": drop_key})
            return jnp.mean(jnn.smoothed_cross_entropy(logits, yb, hp["smoothing"]))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx(hp).update(grads, state.opt_state, state.params)
        return sweep.TrainState(jopt.apply_updates(state.params, updates), opt_state), {"loss": loss}

    def evaluate(hp, state):
        logits = _DropoutMLP(hp["dropout"]).apply(state.params, DATA.x_val, train=False)
        return jnp.mean(jnn.smoothed_cross_entropy(logits, DATA.y_val))

    return sweep.Task(init, step, evaluate)


def _run(trials, **kw):
    return sweep.run(
        _dropout_task(), SPACE, trials, steps=12, eval_every=6, seed=0, devices=1, progress=False, **kw
    )


def test_dropout_lr_sweep_compiles_once_and_trials_equal_solo_runs():
    two, four = _run(2, method="sobol"), _run(4, method="sobol")
    assert two.stats["groups"] == four.stats["groups"] == 1
    assert two.stats["compiles"] == four.stats["compiles"]  # not one program per dropout rate
    rates = [t.hyperparams["dropout"] for t in four.trials]
    assert len(set(rates)) == 4
    objectives = [t.final_objective for t in four.trials]
    assert len(set(objectives)) == 4 and np.all(np.isfinite(objectives))
    task = _dropout_task()
    for i, trial in enumerate(four.trials):
        solo = sweep.run(
            task, SPACE, [trial.hyperparams], trial_ids=[i], steps=12, eval_every=6, seed=0, devices=1,
            progress=False,
        )  # fmt: skip
        np.testing.assert_allclose(
            solo.trials[0].history["objective"], trial.history["objective"], rtol=1e-5, atol=1e-6
        )
