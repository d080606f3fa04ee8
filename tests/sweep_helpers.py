"""Tiny tasks shared by the sweep tests (fast to compile and run)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import jopt
from jopt import datasets, sweep

DATA = datasets.synthetic_classification(128, features=8, classes=3, seed=0)


def _loss(w, x, y):
    logits = x @ w["w"] + w["b"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def make_task(*, hidden_static: bool = False, shard: bool = False) -> sweep.Task:
    """Softmax regression trained with Adam(b1) + decoupled weight decay, batch 16.

    With ``hidden_static``, ``hp["batch_size"]`` (static) sets the minibatch size; with
    ``shard`` the minibatch is marked with ``sweep.shard_batch`` (split over a member's devices
    when the sweep has ``data_parallel > 1``).
    """

    def optimizer(hp):
        return jopt.chain(
            optax.scale_by_adam(b1=hp["b1"]),
            jopt.add_decayed_weights(hp["weight_decay"]),
            jopt.scale_by_learning_rate(hp["learning_rate"]),
        )

    def init(hp, key):
        params = {"w": 0.1 * jax.random.normal(key, (8, 3)), "b": jnp.zeros(3)}
        return (params, optimizer(hp).init(params))

    def step(hp, state, key):
        params, opt_state = state
        bs = hp["batch_size"] if hidden_static else 16
        idx = jax.random.randint(key, (bs,), 0, DATA.x_train.shape[0])
        xb, yb = DATA.x_train[idx], DATA.y_train[idx]
        if shard:
            xb, yb = sweep.shard_batch((xb, yb))
        loss, g = jax.value_and_grad(_loss)(params, xb, yb)
        u, opt_state = optimizer(hp).update(g, opt_state, params)
        return (jopt.apply_updates(params, u), opt_state), {"loss": loss}

    def evaluate(hp, state):
        params = state[0]
        logits = DATA.x_val @ params["w"] + params["b"]
        acc = jnp.mean(jnp.argmax(logits, -1) == DATA.y_val)
        return _loss(params, DATA.x_val, DATA.y_val), {"accuracy": acc}

    return sweep.Task(init, step, evaluate, params=lambda s: s[0])


SPACE = sweep.Space(
    learning_rate=sweep.loguniform(1e-3, 3e-1),
    weight_decay=sweep.loguniform(1e-5, 1e-2),
    b1=sweep.uniform(0.5, 0.95),
)


class CompileCounter:
    """Counts XLA backend compiles while active (jax.monitoring event)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def _listener(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)
