"""Bit-for-bit equality with optax for every optimizer both libraries have.

With hyperparameters given as Python numbers, jopt does optax's arithmetic
(``jopt.hyperparams``: Python numbers stay weakly typed), so 100 steps on a
small MLP give exactly optax's float32 parameters, and exactly its float64
parameters under ``jax.enable_x64``. The optimizers added for the drop-in
(adan, sm3, lbfgs, ...) have the same check in their own test modules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import assert_trees_equal, mlp

STEPS = 100


def _matrices(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


def _warmup_cosine(lib):
    return lib.warmup_cosine_decay_schedule(0.0, 1e-2, 10, STEPS)


# name -> factory of the optimizer from a library module (jopt or optax), same call for both.
CONFIGS = {
    "sgd": lambda m: m.sgd(0.05),
    "sgd_momentum": lambda m: m.sgd(0.05, momentum=0.9),
    "sgd_nesterov": lambda m: m.sgd(0.05, momentum=0.9, nesterov=True),
    "sgd_schedule": lambda m: m.sgd(m.exponential_decay(0.05, 10, 0.9), momentum=0.5),
    "adam": lambda m: m.adam(1e-2),
    "adam_nesterov": lambda m: m.adam(1e-2, nesterov=True),
    "adam_eps_root": lambda m: m.adam(1e-2, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
    "adam_schedule": lambda m: m.adam(_warmup_cosine(m)),
    "adamw": lambda m: m.adamw(1e-2, weight_decay=1e-2),
    "adamw_mask": lambda m: m.adamw(1e-2, weight_decay=1e-2, mask=_matrices),
    "adamw_schedule": lambda m: m.adamw(_warmup_cosine(m), weight_decay=1e-3),
    "nadam": lambda m: m.nadam(1e-2),
    "nadamw": lambda m: m.nadamw(1e-2, weight_decay=1e-2),
    "amsgrad": lambda m: m.amsgrad(1e-2),
    "adamax": lambda m: m.adamax(1e-2),
    "radam": lambda m: m.radam(1e-2),
    "radam_nesterov": lambda m: m.radam(1e-2, nesterov=True),
    "adabelief": lambda m: m.adabelief(1e-2),
    "yogi": lambda m: m.yogi(1e-2),
    "lion": lambda m: m.lion(1e-3, weight_decay=1e-2),
    "lamb": lambda m: m.lamb(1e-2),
    "lamb_decay": lambda m: m.lamb(1e-2, weight_decay=1e-2, mask=_matrices),
    "lars": lambda m: m.lars(1e-2),
    "lars_nesterov": lambda m: m.lars(1e-2, momentum=0.9, nesterov=True),
    "adafactor": lambda m: m.adafactor(1e-2),
    "adafactor_momentum": lambda m: m.adafactor(1e-2, momentum=0.9, min_dim_size_to_factor=4),
    "novograd": lambda m: m.novograd(1e-2, weight_decay=1e-3),
    "sign_sgd": lambda m: m.sign_sgd(1e-3),
    "rmsprop": lambda m: m.rmsprop(1e-3),
    "rmsprop_centered": lambda m: m.rmsprop(1e-3, centered=True),
    "rmsprop_momentum": lambda m: m.rmsprop(1e-3, momentum=0.9, nesterov=True),
    "rmsprop_bias_correction": lambda m: m.rmsprop(1e-3, eps_in_sqrt=False, bias_correction=True),
    "adagrad": lambda m: m.adagrad(1e-2),
    "adadelta": lambda m: m.adadelta(1.0),
    "chain_clip_adamw": lambda m: m.chain(m.clip_by_global_norm(1.0), m.adamw(1e-2, weight_decay=1e-4)),
    "chain_clip_value_sgd": lambda m: m.chain(m.clip(0.05), m.sgd(0.05, momentum=0.9)),
    # Adafactor's statistics with the decay schedule given explicitly (see the float64 note below).
    "factored_rms": lambda m: m.chain(
        m.scale_by_factored_rms(min_dim_size_to_factor=4, decay_rate_fn=jopt.decay_rate_pow), m.scale(-1e-2)
    ),
}


def _run(tx, problem, steps: int = STEPS):
    @jax.jit
    def go(params):
        def body(carry, _):
            p, s = carry
            g = jax.grad(problem.loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
        return p

    return go(problem.params)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_float32_trajectory_equals_optax(name):
    prob = mlp()
    ours = _run(CONFIGS[name](jopt), prob)
    assert_trees_equal(ours, _run(CONFIGS[name](optax), prob), err_msg=name)


# float64 equality: a representative subset (each float64 compile is a few seconds).
FLOAT64 = ["sgd_momentum", "adam_nesterov", "adamw_mask", "radam", "rmsprop_centered", "factored_rms", "lamb"]


@pytest.mark.parametrize("name", FLOAT64)
def test_float64_trajectory_equals_optax(name):
    with jax.enable_x64(True):
        prob = mlp()
        prob = prob._replace(params=jax.tree.map(lambda x: x.astype(jnp.float64), prob.params))
        ours = _run(CONFIGS[name](jopt), prob, 50)
        ref = _run(CONFIGS[name](optax), prob, 50)
        assert jax.tree.leaves(ours)[0].dtype == jnp.float64
        assert_trees_equal(ours, ref, err_msg=name)


def test_adafactor_decay_is_computed_in_float64_under_x64_unlike_optax():
    # Deliberate difference: optax's default Adafactor decay 1 - (t + 1)^-0.8 is computed in
    # float32 even under x64 (a 1e-8 relative error that drifts float64 trajectories apart);
    # jopt's is computed in the hyperparameter dtype. With the decay given explicitly, the
    # float64 trajectories are bit-equal (``factored_rms`` above).
    with jax.enable_x64(True):
        steps = jnp.arange(1, 50)
        decay = jopt.decay_rate_pow(steps, 0.8)
        assert decay.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(decay), 1.0 - (np.arange(1, 50) + 1.0) ** -0.8)
        from optax._src import factorized

        assert factorized._decay_rate_pow(steps, 0.8).dtype == jnp.float32


def test_constant_and_traced_paths_agree_to_float32_rounding():
    # The same hyperparameters as Python numbers (optax's arithmetic) and as float32 arrays
    # (the vmappable path): 1 - float32(0.999) and float32(1 - 0.999) differ by 1.3e-5
    # relative, so the trajectories agree to float32 rounding, not bit for bit.
    prob = mlp()
    constant = _run(jopt.adamw(1e-2, b1=0.9, b2=0.999, weight_decay=1e-2), prob)
    f32 = jnp.float32
    traced = _run(jopt.adamw(f32(1e-2), b1=f32(0.9), b2=f32(0.999), weight_decay=f32(1e-2)), prob)
    for a, b in zip(jax.tree.leaves(constant), jax.tree.leaves(traced)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bf16_parameters_keep_float32_hyperparameters_unlike_optax():
    # Deliberate difference: with bfloat16 parameters optax's weak-type arithmetic multiplies
    # the bf16 moment by b1 in bf16 (0.9 becomes 0.8984375; b2 = 0.999 becomes 1.0, so the
    # second moment never decays); jopt computes the moments in float32 and stores them in
    # the parameters' dtype.
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=16).astype(jnp.bfloat16) for _ in range(3)]
    params = {"w": jnp.ones(16, jnp.bfloat16)}
    tx, ref = jopt.scale_by_adam(), optax.scale_by_adam()
    state, ref_state = tx.init(params), ref.init(params)
    mu = np.zeros(16, np.float32)
    for g in grads:
        _, state = tx.update({"w": jnp.asarray(g)}, state)
        _, ref_state = ref.update({"w": jnp.asarray(g)}, ref_state)
        mu = (np.float32(1 - 0.9) * g.astype(np.float32) + np.float32(0.9) * mu).astype(jnp.bfloat16)
        np.testing.assert_array_equal(np.asarray(state.mu["w"]), mu)
        mu = mu.astype(np.float32)
    assert state.mu["w"].dtype == jnp.bfloat16
    assert not np.array_equal(np.asarray(ref_state.mu["w"]), np.asarray(state.mu["w"]))


@pytest.mark.parametrize("mode", ["hard", "smooth", "refined"])
def test_lion_modes_equal_optax(mode):
    prob = mlp()
    ours = _run(jopt.chain(jopt.scale_by_lion(mode=mode, smooth_beta=2.0), jopt.scale(-1e-3)), prob, 30)
    ref = _run(optax.chain(optax.scale_by_lion(mode=mode, smooth_beta=2.0), optax.scale(-1e-3)), prob, 30)
    assert_trees_equal(ours, ref, err_msg=mode)
    with pytest.raises(ValueError, match="mode must be one of"):
        jopt.scale_by_lion(mode="invalid")
