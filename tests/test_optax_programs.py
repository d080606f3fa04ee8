"""Four training-program styles, written against optax, run unchanged with ``import jopt as optax``.

Each program takes the optimizer library as an argument (``optax`` or ``jopt``)
and uses it for the optimizer and schedule parts only, as a user switching with
``import jopt as optax`` would; the loss functions are optax's in both runs.
Every program's loss curve and final parameters must equal optax's bit for bit.

1. flax linen ``TrainState`` with SGD + momentum (flax's MNIST example);
2. ``flax.nnx.Optimizer`` with AdamW and dropout (the flax NNX MNIST tutorial);
3. a plain jitted loop with Adam and ``optax.apply_updates`` (an Optuna example);
4. an FSDP-sharded trainer on an 8-device mesh with a joined warmup / inverse-sqrt
   schedule and AdamW (flax's lm1b trainer).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jopt

LIBRARIES = {"optax": optax, "jopt": jopt}


def _classification_data(n: int = 64, d: int = 16, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, classes)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(np.argmax(x @ w, axis=1).astype(np.int32))


def _cross_entropy(logits, labels):
    return optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class _LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(4)(x)


def linen_train_state_program(lib, steps: int = 25):
    x, y = _classification_data()
    model = _LinenMLP()
    params = model.init(jax.random.key(0), x)["params"]
    state = train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=lib.sgd(learning_rate=0.1, momentum=0.9)
    )

    @jax.jit
    def train_step(state):
        def loss_fn(p):
            return _cross_entropy(state.apply_fn({"params": p}, x), y)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    losses = []
    for _ in range(steps):
        state, loss = train_step(state)
        losses.append(loss)
    return np.asarray(losses), state.params


class _NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(16, 32, rngs=rngs)
        self.dropout = nnx.Dropout(rate=0.1, rngs=rngs)
        self.linear2 = nnx.Linear(32, 4, rngs=rngs)

    def __call__(self, x):
        return self.linear2(self.dropout(nnx.relu(self.linear1(x))))


def nnx_optimizer_program(lib, steps: int = 30):
    x, y = _classification_data()
    model = _NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, lib.adamw(0.005, 0.9), wrt=nnx.Param)  # the tutorial's call

    @nnx.jit
    def train_step(model, optimizer):
        def loss_fn(m):
            return _cross_entropy(m(x), y)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model.train()
    losses = [train_step(model, optimizer) for _ in range(steps)]
    return np.asarray(losses), nnx.state(model, nnx.Param)


def _optax_loop(lib, tx, loss_fn, params, steps: int):
    """optax's documented loop: jitted value_and_grad, ``tx.update``, ``lib.apply_updates``."""
    opt_state = jax.jit(tx.init)(params)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return lib.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
        losses.append(loss)
    return np.asarray(losses), params, opt_state


def plain_loop_program(lib, steps: int = 40):
    x, y = _classification_data(seed=1)
    rng = np.random.default_rng(2)
    params = {
        "w1": jnp.asarray(rng.normal(size=(16, 24)) / 4, jnp.float32),
        "b1": jnp.zeros(24),
        "w2": jnp.asarray(rng.normal(size=(24, 4)) / 5, jnp.float32),
        "b2": jnp.zeros(4),
    }

    def loss_fn(p):
        return _cross_entropy(jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"], y)

    losses, params, _ = _optax_loop(lib, lib.adam(learning_rate=3e-3), loss_fn, params, steps)
    return losses, params


def _lm1b_schedule(lib, base: float, warmup: int):
    """lm1b's schedule: linear warmup, then base * sqrt(warmup / step)."""
    return lib.join_schedules(
        [
            lib.linear_schedule(init_value=0.0, end_value=base, transition_steps=warmup),
            lambda step: base * jnp.sqrt(warmup) * jax.lax.rsqrt(jnp.maximum(step + warmup, 1.0)),
        ],
        [warmup],
    )


def fsdp_program(lib, steps: int = 20):
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    x, y = _classification_data(n=64, d=16)
    rng = np.random.default_rng(3)
    params = {
        "embed": jnp.asarray(rng.normal(size=(16, 64)) / 4, jnp.float32),
        "mlp": jnp.asarray(rng.normal(size=(64, 64)) / 8, jnp.float32),
        "head": jnp.asarray(rng.normal(size=(64, 4)) / 8, jnp.float32),
        "scale": jnp.ones(64),
    }
    shard = lambda a: NamedSharding(mesh, P("fsdp") if a.shape[0] % 8 == 0 else P())
    params = jax.tree.map(lambda a: jax.device_put(a, shard(a)), params)
    x, y = (
        jax.device_put(x, NamedSharding(mesh, P("fsdp"))),
        jax.device_put(y, NamedSharding(mesh, P("fsdp"))),
    )

    def loss_fn(p):
        h = jax.nn.gelu(x @ p["embed"])
        h = h + jax.nn.gelu(h @ p["mlp"]) * p["scale"]
        return _cross_entropy(h @ p["head"], y)

    tx = lib.adamw(_lm1b_schedule(lib, 3e-3, 5), b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.1)
    losses, params, opt_state = _optax_loop(lib, tx, loss_fn, params, steps)
    mu = opt_state[0].mu  # Adam's first moment follows the parameters' sharding
    assert mu["embed"].sharding.spec == params["embed"].sharding.spec
    return losses, params


PROGRAMS = {
    "linen_train_state_sgd": linen_train_state_program,
    "nnx_optimizer_adamw_dropout": nnx_optimizer_program,
    "plain_loop_adam": plain_loop_program,
    "fsdp_adamw_joined_schedule": fsdp_program,
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_gives_optax_results_bit_for_bit(name):
    ours_losses, ours_params = PROGRAMS[name](jopt)
    ref_losses, ref_params = PROGRAMS[name](optax)
    assert ref_losses[-1] < ref_losses[0]  # the program trains
    np.testing.assert_array_equal(ours_losses, ref_losses)
    for a, b in zip(jax.tree.leaves(ours_params), jax.tree.leaves(ref_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
