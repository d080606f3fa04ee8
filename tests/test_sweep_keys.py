"""Typed PRNG keys (``jax.random.key``) in a trial's training state.

The common case is a flax ``TrainState`` with an ``rng`` field that the step splits for dropout.
The sweep must estimate its memory, keep its best state (early stopping selects whole states,
keys included), checkpoint and resume it, and hand the user back a state whose ``rng`` is a key
array again. Reference: the same sweep run without interruption (bit-exact), and a NumPy-free
replay of the rng field (split once per step from the state's initial key).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.training import train_state

import jopt
from jopt import sweep
from tests.sweep_helpers import DATA

STEPS, EVERY = 4, 2
KW = dict(steps=STEPS, eval_every=EVERY, seed=0, devices=2, progress=False, keep_states="all",
          memory_budget="1GB", patience=1)  # fmt: skip
SPACE = sweep.Space(learning_rate=sweep.loguniform(1e-3, 1e-1))


class State(train_state.TrainState):
    rng: jax.Array


class Model(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dropout(0.2, deterministic=not train)(nn.relu(nn.Dense(8)(x)))
        return nn.Dense(3)(x)


def _loss(params, x, y, rng=None):
    rngs = {"dropout": rng} if rng is not None else {}
    logits = Model().apply({"params": params}, x, train=rng is not None, rngs=rngs)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


# A TrainState's optimizer is a static field, the same object in every trial: the swept learning
# rate lives in the optimizer state (inject_hyperparams), as when changing it during training.
TX = jopt.inject_hyperparams(jopt.adam)(learning_rate=0.0)


def make_task() -> sweep.Task:
    def init(hp, key):
        init_key, rng = jax.random.split(key)
        params = Model().init(init_key, DATA.x_train[:1], train=False)["params"]
        state = State.create(apply_fn=None, params=params, tx=TX, rng=rng)
        hyper = dict(state.opt_state.hyperparams, learning_rate=jnp.asarray(hp["learning_rate"], jnp.float32))
        return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))

    def step(hp, state, key):
        rng, dropout = jax.random.split(state.rng)
        idx = jax.random.randint(key, (16,), 0, DATA.x_train.shape[0])
        loss, g = jax.value_and_grad(_loss)(state.params, DATA.x_train[idx], DATA.y_train[idx], dropout)
        return state.apply_gradients(grads=g).replace(rng=rng), {"loss": loss}

    def evaluate(hp, state):
        return _loss(state.params, DATA.x_val, DATA.y_val)

    return sweep.Task(init, step, evaluate)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def task():
    return make_task()


def test_train_state_with_a_key_sweeps_checkpoints_and_resumes(task, tmp_path):
    ref = sweep.run(task, SPACE, 3, **KW)
    assert ref.stats["bytes_per_member"] > 0

    def hook(event):
        if event == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweep.run(task, SPACE, 3, checkpoint_dir=str(tmp_path), _on_segment=hook, **KW)
    resumed = sweep.run(task, SPACE, 3, checkpoint_dir=str(tmp_path), **KW)
    for a, b in zip(ref.trials, resumed.trials, strict=True):
        np.testing.assert_array_equal(a.history["objective"], b.history["objective"])
        sa, sb = ref.state(a.trial), resumed.state(b.trial)
        assert jax.dtypes.issubdtype(sa.rng.dtype, jax.dtypes.prng_key)
        assert jax.dtypes.issubdtype(sb.rng.dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(jax.random.key_data(sa.rng), jax.random.key_data(sb.rng))
        jax.tree.map(np.testing.assert_array_equal, sa.params, sb.params)
    datas = [tuple(np.asarray(jax.random.key_data(ref.state(t.trial).rng)).tolist()) for t in ref.trials]
    assert len(set(datas)) == 3  # every trial has its own key stream


def test_kept_key_is_the_initial_key_split_once_per_step(task):
    """The rng field of the returned (best) state is the init key advanced by its steps."""
    r = sweep.run(task, SPACE, 2, **KW)
    for t in r.trials:
        state = r.state(t.trial)
        # the best state of a trial is the one at its best evaluation
        best = int(np.argmin(t.history["objective"]))
        steps = t.history["step"][best] if "step" in t.history else (best + 1) * EVERY
        init_keys, _ = sweep.programs.member_keys(0, np.array([t.trial]), np.zeros(1))
        rng = jax.random.split(jax.random.wrap_key_data(jnp.asarray(init_keys[0])))[1]
        for _ in range(steps):
            rng = jax.random.split(rng)[0]
        np.testing.assert_array_equal(jax.random.key_data(state.rng), jax.random.key_data(rng))
