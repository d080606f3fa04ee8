"""SGD, momentum, RMSprop, Adagrad and Adadelta against optax and NumPy transcriptions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import (
    PROBLEMS,
    OptCase,
    assert_trees_close,
    assert_trees_equal,
    quadratic,
    rosenbrock,
    trajectory,
)

STEPS = 100

_CENTERED = {"centered": True, "bias_correction": True, "eps_in_sqrt": False, "nesterov": True}

CASES: list[OptCase] = [
    OptCase("sgd", jopt.sgd, {"learning_rate": 2e-3, "momentum": 0.9}, optax.sgd),
    OptCase("heavy_ball_momentum", jopt.heavy_ball_momentum, {"learning_rate": 2e-3, "momentum": 0.9}),
    OptCase(
        "rmsprop",
        jopt.rmsprop,
        {"learning_rate": 0.01, "decay": 0.9, "eps": 1e-8, "initial_scale": 0.1, "momentum": 0.5},
        optax.rmsprop,
    ),
    OptCase(
        "rmsprop_centered",
        lambda **kw: jopt.rmsprop(**_CENTERED, **kw),
        {"learning_rate": 3e-3, "decay": 0.95, "eps": 1e-8, "initial_scale": 0.1, "momentum": 0.9},
        lambda **kw: optax.rmsprop(**_CENTERED, **kw),
    ),
    # Adagrad's step size only shrinks: on Rosenbrock it ends near loss 2 (from 29)
    # for any learning rate in [0.25, 0.4]; 0.25 keeps the most margin.
    OptCase(
        "adagrad",
        jopt.adagrad,
        {"learning_rate": 0.25, "initial_accumulator_value": 0.1, "eps": 1e-7},
        optax.adagrad,
    ),
    OptCase(
        "adadelta",
        jopt.adadelta,
        {"learning_rate": 3.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 1e-4},
        optax.adadelta,
    ),
]


# --------------------------------------------------------------------------- optax parity

# Learning rates per optimizer and problem: stable for the problem (small on Rosenbrock).
LEARNING_RATES = {
    "sgd": {"quadratic": 0.1, "rosenbrock": 1e-3, "mlp": 0.1},
    "rmsprop": {"quadratic": 0.03, "rosenbrock": 1e-3, "mlp": 3e-3},
    "adagrad": {"quadratic": 0.5, "rosenbrock": 0.05, "mlp": 0.1},
    "adadelta": {"quadratic": 3.0, "rosenbrock": 1.0, "mlp": 1.0},
}

# RMSprop's (1 - decay) is computed from the float32 decay in jopt (hyperparameters are
# arrays) but in float64 from a Python float in optax; on the MLP RMSprop amplifies that
# 1-ulp difference to ~1e-3 (optax against itself with decay one ulp apart differs as
# much). The RMSprop configs therefore use decays exact in float32 (0.875, 0.9375); the
# default 0.9 is checked in test_rmsprop_default_decay_differs_only_by_float32_rounding.
OPTAX_CONFIGS = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("sgd", {"momentum": 0.5, "accumulator_dtype": jnp.float32}),
    ("rmsprop", {"decay": 0.875}),
    ("rmsprop", {"decay": 0.9375, "eps_in_sqrt": False, "eps": 1e-6}),
    ("rmsprop", {"decay": 0.875, "initial_scale": 1.0, "bias_correction": True}),
    ("rmsprop", {"decay": 0.875, "momentum": 0.9}),
    ("rmsprop", {"decay": 0.875, "momentum": 0.9, "nesterov": True}),
    ("rmsprop", {"decay": 0.875, "centered": True}),
    ("rmsprop", {"decay": 0.9375, "centered": True, "momentum": 0.9}),
    # With initial_scale=0 the bias-corrected first-step variance is exactly 0 and the
    # step is rounding noise / eps; a positive initial_scale keeps the test meaningful.
    (
        "rmsprop",
        {
            "decay": 0.875,
            "centered": True,
            "bias_correction": True,
            "eps_in_sqrt": False,
            "initial_scale": 0.1,
            "momentum": 0.5,
            "nesterov": True,
        },
    ),
    ("adagrad", {}),
    ("adagrad", {"initial_accumulator_value": 0.0, "eps": 1e-4}),
    ("adadelta", {}),
    ("adadelta", {"rho": 0.95, "eps": 1e-4, "weight_decay": 1e-2}),
]


def _config_id(config) -> str:
    name, kwargs = config
    return name + "".join(f"-{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items())


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock", "mlp"])
@pytest.mark.parametrize("config", OPTAX_CONFIGS, ids=[_config_id(c) for c in OPTAX_CONFIGS])
def test_trajectory_matches_optax(config, problem):
    name, kwargs = config
    prob = PROBLEMS[problem]()
    lr = LEARNING_RATES[name][problem]
    ours = trajectory(getattr(jopt, name)(lr, **kwargs), prob, STEPS)
    ref = trajectory(getattr(optax, name)(lr, **kwargs), prob, STEPS)
    assert_trees_close(ours, ref, err_msg=f"{name} {kwargs} on {problem}")


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_default_decay_equals_optax_bit_for_bit(centered):
    prob = PROBLEMS["mlp"]()
    ours = trajectory(jopt.rmsprop(3e-3, centered=centered), prob, STEPS)
    assert_trees_equal(ours, trajectory(optax.rmsprop(3e-3, centered=centered), prob, STEPS))
    # A float32-array decay takes the traced path: optax given the same array agrees bit for bit.
    ours = trajectory(jopt.rmsprop(3e-3, decay=jnp.float32(0.9), centered=centered), prob, STEPS)
    ref = trajectory(optax.rmsprop(3e-3, decay=jnp.float32(0.9), centered=centered), prob, STEPS)
    assert_trees_equal(ours, ref)


def test_learning_rate_schedule_matches_optax():
    prob = quadratic()
    schedule = lambda t: 0.1 / (1.0 + 0.02 * t)
    for name, kwargs in [("sgd", {"momentum": 0.9}), ("rmsprop", {"momentum": 0.5}), ("adagrad", {})]:
        ours = trajectory(getattr(jopt, name)(schedule, **kwargs), prob, STEPS)
        ref = trajectory(getattr(optax, name)(schedule, **kwargs), prob, STEPS)
        assert_trees_close(ours, ref, err_msg=name)


def test_adadelta_without_learning_rate_is_zeilers_descent():
    # optax.adadelta(None) skips the sign flip and ascends; jopt uses eta = 1.
    prob = quadratic()
    ours = trajectory(jopt.adadelta(), prob, STEPS)
    ref = trajectory(optax.adadelta(1.0), prob, STEPS)
    assert_trees_close(ours, ref)
    final = jax.tree.map(lambda x: x[-1], ours)
    assert float(prob.loss(final)) < float(prob.loss(prob.params))


def test_bfloat16_accumulator_is_stored_in_bfloat16():
    prob = quadratic()
    tx = jopt.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16)
    state = tx.init(prob.params)
    g = jax.grad(prob.loss)(prob.params)
    u, state = tx.update(g, state, prob.params)
    assert all(t.dtype == jnp.bfloat16 for t in jax.tree.leaves(state[0].trace))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(u))
    # Only the stored buffer is rounded to bfloat16 (relative error <= 2**-8 per step).
    low = trajectory(tx, prob, STEPS)
    full = trajectory(jopt.sgd(0.1, momentum=0.9), prob, STEPS)
    assert_trees_close(low, full, rtol=0.0, atol=1e-2)
    assert any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), low, full)))


# --------------------------------------------------------------------------- NumPy transcriptions


def _least_squares_data(n: int = 128, d: int = 6):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w_true = rng.normal(size=d).astype(np.float32)
    y = (x @ w_true + 0.5 + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x, y


def _batch_indices(key: jax.Array, step: jax.Array, n: int, batch: int) -> jax.Array:
    return jax.random.choice(jax.random.fold_in(key, step), n, (batch,), replace=False)


@pytest.mark.parametrize("momentum,nesterov", [(None, False), (0.9, False), (0.9, True)])
def test_minibatch_sgd_on_least_squares_matches_numpy(momentum, nesterov):
    x, y = _least_squares_data()
    n, d = x.shape
    batch, lr, steps = 16, 0.02, STEPS
    key = jax.random.key(0)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    params = {"w": jnp.zeros(d), "b": jnp.zeros(())}
    tx = jopt.sgd(lr, momentum=momentum, nesterov=nesterov)

    def loss(p, xb, yb):
        return jnp.mean((xb @ p["w"] + p["b"] - yb) ** 2)

    @jax.jit
    def run(params):
        def step(carry, t):
            p, s = carry
            idx = _batch_indices(key, t, n, batch)
            g = jax.grad(loss)(p, xj[idx], yj[idx])
            u, s = tx.update(g, s, p)
            p = jopt.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))[1]

    ours = run(params)

    # The minibatches are data, drawn from the same keys; the update rule is NumPy.
    idx_all = np.asarray(jax.vmap(lambda t: _batch_indices(key, t, n, batch))(jnp.arange(steps)))
    assert len({tuple(sorted(row)) for row in idx_all}) == steps, "every step must see a new minibatch"
    w, b = np.zeros(d), 0.0
    mw, mb = np.zeros(d), 0.0
    ws, bs = [], []
    for t in range(steps):
        xb, yb = x[idx_all[t]].astype(np.float64), y[idx_all[t]].astype(np.float64)
        r = xb @ w + b - yb
        gw, gb = 2.0 * xb.T @ r / batch, 2.0 * r.mean()
        if momentum is not None:
            mw, mb = gw + momentum * mw, gb + momentum * mb
            if nesterov:
                gw, gb = gw + momentum * mw, gb + momentum * mb
            else:
                gw, gb = mw, mb
        w, b = w - lr * gw, b - lr * gb
        ws.append(w)
        bs.append(b)
    expected = {"w": np.stack(ws), "b": np.array(bs)}
    # float32 (ours) against float64 (NumPy): rounding differences stay ~1e-6.
    assert_trees_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert float(loss(jax.tree.map(lambda v: v[-1], ours), xj, yj)) < float(loss(params, xj, yj)) / 10


def _quadratic_grad(p):
    a = np.array([1.0, 4.0, 9.0, 0.5])
    return {"x": a * (p["x"] - 1.0), "y": p["y"] + 2.0}


def _rosenbrock_grad(p):
    x, y = p["xy"]
    return {"xy": np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x**2), 200.0 * (y - x**2)])}


def _numpy_heavy_ball(grad_fn, params, lr_fn, momentum, steps):
    r"""Polyak: :math:`v \leftarrow \mu v + \eta_t g`, :math:`\theta \leftarrow \theta - v`."""
    theta = {k: np.asarray(v, np.float64) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    out = []
    for t in range(steps):
        g = grad_fn(theta)
        v = {k: momentum * v[k] + lr_fn(t) * g[k] for k in theta}
        theta = {k: theta[k] - v[k] for k in theta}
        out.append(theta)
    return {k: np.stack([o[k] for o in out]) for k in theta}


@pytest.mark.parametrize(
    "problem,grad_fn,lr0", [(quadratic, _quadratic_grad, 0.05), (rosenbrock, _rosenbrock_grad, 1e-3)]
)
@pytest.mark.parametrize("scheduled", [False, True])
def test_heavy_ball_matches_numpy(problem, grad_fn, lr0, scheduled):
    prob = problem()
    lr_np = (lambda t: lr0 / (1.0 + 0.05 * t)) if scheduled else (lambda t: lr0)
    lr = (lambda t: lr0 / (1.0 + 0.05 * t)) if scheduled else lr0
    ours = trajectory(jopt.heavy_ball_momentum(lr, momentum=0.9), prob, STEPS)
    expected = _numpy_heavy_ball(grad_fn, prob.params, lr_np, 0.9, STEPS)
    assert_trees_close(ours, expected, rtol=1e-5, atol=1e-5)

    # optax.sgd rescales the whole buffer by the current rate: equal only for a constant rate.
    sgd = trajectory(optax.sgd(lr, momentum=0.9), prob, STEPS)
    if scheduled:
        gap = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), ours, sgd)
        assert max(jax.tree.leaves(gap)) > 1e-2
    else:
        # Same values, different order of arithmetic (eta * sum vs sum of eta * g): a few ulp.
        assert_trees_close(ours, sgd, atol=1e-5)


def test_rms_decay_schedule_is_resolved_per_step_like_numpy():
    decay = lambda t: 0.5 + 0.4 * t / (t + 5.0)
    grads = np.random.default_rng(2).normal(size=(12, 3)).astype(np.float32)
    tx = jopt.scale_by_rms(decay=decay, eps=1e-3, initial_scale=0.5, bias_correction=True)
    state = tx.init({"w": jnp.zeros(3)})
    nu = np.full(3, 0.5)
    for t, g in enumerate(grads):
        u, state = tx.update({"w": jnp.asarray(g)}, state)
        d = decay(float(t))
        nu = d * nu + (1 - d) * g.astype(np.float64) ** 2
        hat = nu / (1 - d ** (t + 1))  # bias correction with the current decay, as optax does
        np.testing.assert_allclose(u["w"], g / np.sqrt(hat + 1e-3), rtol=2e-6)
        np.testing.assert_allclose(state.hyperparams["decay"], d, rtol=1e-6)


def test_adagrad_skips_coordinates_without_gradient_history():
    tx = jopt.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
    g = {"w": jnp.array([3.0, 0.0, -4.0])}
    u, state = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(u["w"], [1.0, 0.0, -1.0])
    u, state = tx.update(g, state)
    np.testing.assert_allclose(u["w"], [1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)], rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(u["w"])))


# --------------------------------------------------------------------------- structure and logging


def test_momentum_none_is_structural_and_traced_zero_uses_the_buffer():
    params = {"w": jnp.ones(2)}
    plain = jopt.sgd(0.1).init(params)
    assert not any(isinstance(s, jopt.TraceState) for s in plain)
    prob = quadratic()

    def final(momentum):
        return jax.tree.map(lambda x: x[-1], trajectory(jopt.sgd(0.1, momentum=momentum), prob, 20))

    batched = jax.jit(jax.vmap(final))(jnp.array([0.0, 0.5]))
    no_momentum = jax.tree.map(lambda x: x[-1], trajectory(jopt.sgd(0.1), prob, 20))
    assert_trees_close(jax.tree.map(lambda x: x[0], batched), no_momentum)
    assert_trees_close(jax.tree.map(lambda x: x[1], batched), final(0.5))


def test_current_hyperparams_of_rmsprop_with_momentum():
    # arrays (e.g. traced sweep values) and schedules are logged; the Python constant eps is not
    arr = jnp.float32
    opt = jopt.rmsprop(
        lambda t: 0.1 / (1.0 + t), decay=arr(0.8), eps=1e-8, initial_scale=arr(0.3), momentum=arr(0.7)
    )
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    for _ in range(3):
        _, state = opt.update(params, state, params)
    hp = jopt.current_hyperparams(state)
    assert set(hp) == {"learning_rate", "decay", "initial_scale", "momentum"}
    np.testing.assert_allclose(
        [hp["learning_rate"], hp["decay"], hp["initial_scale"], hp["momentum"]],
        [0.1 / 3.0, 0.8, 0.3, 0.7],
        rtol=1e-6,
    )


def test_heavy_ball_transform_after_learning_rate_equals_optimizer():
    prob = quadratic()
    lr = lambda t: 0.05 / (1.0 + 0.05 * t)
    chained = trajectory(jopt.chain(jopt.scale_by_learning_rate(lr), jopt.heavy_ball(0.8)), prob, STEPS)
    assert_trees_close(chained, trajectory(jopt.heavy_ball_momentum(lr, 0.8), prob, STEPS), rtol=0, atol=0)


# --------------------------------------------------------------------------- validation


BAD_VALUES = [
    (jopt.sgd, {"learning_rate": 0.1, "momentum": 1.01}, "momentum"),  # 1.0 (no decay) is valid, as in optax
    (jopt.sgd, {"learning_rate": 0.1, "momentum": -0.1}, "momentum"),
    (jopt.sgd, {"learning_rate": -0.1}, "learning_rate"),
    (jopt.heavy_ball_momentum, {"learning_rate": 0.1, "momentum": 1.5}, "momentum"),
    (jopt.heavy_ball_momentum, {"learning_rate": float("nan")}, "learning_rate"),
    (jopt.rmsprop, {"learning_rate": 0.1, "decay": 1.0}, "decay"),
    (jopt.rmsprop, {"learning_rate": 0.1, "eps": -1e-8}, "eps"),
    (jopt.rmsprop, {"learning_rate": 0.1, "initial_scale": -1.0}, "initial_scale"),
    (jopt.rmsprop, {"learning_rate": 0.1, "momentum": np.array([0.5, 1.2])}, "momentum"),
    (jopt.adagrad, {"learning_rate": 0.1, "initial_accumulator_value": -0.1}, "initial_accumulator_value"),
    (jopt.adagrad, {"learning_rate": 0.1, "eps": -1e-7}, "eps"),
    (jopt.adadelta, {"rho": 1.0}, "rho"),
    (jopt.adadelta, {"eps": 0.0}, "eps"),
    (jopt.adadelta, {"weight_decay": -1e-4}, "weight_decay"),
    (jopt.trace, {"decay": 1.5}, "decay"),
    (jopt.heavy_ball, {"momentum": -0.5}, "momentum"),
    (jopt.scale_by_rms, {"decay": -0.1}, "decay"),
    (jopt.scale_by_stddev, {"eps": float("nan")}, "eps"),
    (jopt.scale_by_rss, {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
    (jopt.scale_by_adadelta, {"eps": 0.0}, "eps"),
]


@pytest.mark.parametrize(
    "factory,kwargs,name", BAD_VALUES, ids=[f"{f.__name__}-{n}-{i}" for i, (f, _, n) in enumerate(BAD_VALUES)]
)
def test_bad_concrete_values_raise_value_error_naming_argument(factory, kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        factory(**kwargs)


def test_traced_values_are_not_validated():
    params = {"w": jnp.array([1.0, -2.0])}

    def step(momentum, decay):
        opt = jopt.rmsprop(0.1, decay=decay, momentum=momentum)
        u, _ = opt.update(params, opt.init(params), params)
        return u["w"]

    traced = jax.jit(step)(jnp.float32(0.5), jnp.float32(0.875))
    np.testing.assert_allclose(traced, step(0.5, 0.875), rtol=1e-6)
    np.testing.assert_allclose(traced, -0.1 * np.sign([1.0, -2.0]) / np.sqrt(0.125), rtol=1e-6)
