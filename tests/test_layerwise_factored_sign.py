"""Sign (signSGD, Lion), layer-wise (LARS, LAMB, NovoGrad) and factored (Adafactor) optimizers.

Every optimizer is compared with optax 0.2.8's implementation over 100-step
trajectories on the shared problems; Adafactor additionally on a problem whose
matrices are large enough to be factored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import PROBLEMS, OptCase, Problem, assert_trees_close, trajectory

# Per-problem learning rates; Rosenbrock needs small steps to stay in its valley.
LR = {"quadratic": 0.05, "rosenbrock": 1e-3, "mlp": 0.02}

# Hyperparameters are float32 arrays in jopt (so they can be traced), so 1 - 0.9 is rounded
# differently than optax's Python-float 1 - 0.9 (2e-7 relative). Through an undebiased momentum
# that grows to ~4e-6 (Adafactor momentum) or ~3e-5 (LAMB) over 100 MLP steps, so equality tests
# use moving-average decays whose complement is exact in binary (0.5, 0.75, 0.875), which makes
# the trajectories agree bit for bit; test_common_decays_close_to_optax covers 0.9/0.999.


def _no_bias(params: Any) -> Any:
    return jax.tree.map(lambda x: x.ndim > 1, params)


class Pair(NamedTuple):
    name: str
    ours: Callable[..., Any]
    ref: Callable[..., Any]
    kwargs: dict
    problems: tuple[str, ...] = ("quadratic", "rosenbrock", "mlp")


PAIRS = [
    Pair("sign_sgd", jopt.sign_sgd, optax.sign_sgd, {}),
    Pair("lion", jopt.lion, optax.lion, {"b1": 0.9, "b2": 0.99, "weight_decay": 1e-2}),
    Pair("lion_masked", jopt.lion, optax.lion, {"b1": 0.8, "b2": 0.95, "mask": _no_bias}, ("mlp",)),
    Pair(
        "lion_prefix_mask",
        jopt.lion,
        optax.lion,
        {"mask": {"layer0": False, "layer1": True, "layer2": True}},
        ("mlp",),
    ),
    Pair("lamb", jopt.lamb, optax.lamb, {"b1": 0.75, "b2": 0.875, "eps": 1e-6, "weight_decay": 1e-2}),
    Pair(
        "lars",
        jopt.lars,
        optax.lars,
        {"weight_decay": 1e-3, "trust_coefficient": 0.1, "eps": 1e-8, "momentum": 0.9},
    ),
    Pair(
        "lars_nesterov_masked",
        jopt.lars,
        optax.lars,
        {
            "weight_decay": 1e-2,
            "weight_decay_mask": _no_bias,
            "trust_coefficient": 0.5,
            "trust_ratio_mask": _no_bias,
            "momentum": 0.8,
            "nesterov": True,
        },
        ("mlp",),
    ),
    Pair(
        "lars_prefix_mask",
        jopt.lars,
        optax.lars,
        {
            "weight_decay": 1e-2,
            "weight_decay_mask": {"layer0": True, "layer1": False, "layer2": True},
            "trust_ratio_mask": {"layer0": False, "layer1": True, "layer2": True},
        },
        ("mlp",),
    ),
    Pair("novograd", jopt.novograd, optax.novograd, {"b1": 0.9, "b2": 0.3, "weight_decay": 1e-3}),
    Pair("adafactor", jopt.adafactor, optax.adafactor, {}),
    Pair(
        "adafactor_all_options",
        jopt.adafactor,
        optax.adafactor,
        {
            "decay_rate": 0.7,
            "clipping_threshold": 2.0,
            "momentum": 0.75,
            "weight_decay_rate": 1e-3,
            "weight_decay_mask": _no_bias,
        },
    ),
    Pair(
        "adafactor_unfactored_no_param_scale",
        jopt.adafactor,
        optax.adafactor,
        {"factored": False, "multiply_by_parameter_scale": False, "clipping_threshold": None},
    ),
]


@pytest.mark.parametrize(
    "pair,problem",
    [(p, prob) for p in PAIRS for prob in p.problems],
    ids=[f"{p.name}-{prob}" for p in PAIRS for prob in p.problems],
)
def test_trajectory_matches_optax(pair, problem):
    prob = PROBLEMS[problem]()
    ours = trajectory(pair.ours(LR[problem], **pair.kwargs), prob)
    ref = trajectory(pair.ref(LR[problem], **pair.kwargs), prob)
    assert_trees_close(ours, ref, err_msg=f"{pair.name} on {problem}")
    # The trajectory actually moved (a no-op optimizer would match a no-op reference).
    start = jax.tree.leaves(prob.params)
    assert any(not np.allclose(a[-1], s) for a, s in zip(jax.tree.leaves(ours), start, strict=True))


@pytest.mark.parametrize("problem", ["quadratic", "mlp"])
def test_adafactor_relative_step_without_learning_rate_matches_optax(problem):
    prob = PROBLEMS[problem]()
    opt = jopt.adafactor()  # learning_rate=None: the step is relative to the parameter scale
    assert_trees_close(trajectory(opt, prob), trajectory(optax.adafactor(), prob))


def test_sign_sgd_matches_numpy_rule():
    prob = PROBLEMS["quadratic"]()
    ours = trajectory(jopt.sign_sgd(0.01), prob, steps=20)
    p = {k: np.asarray(v, np.float64) for k, v in prob.params.items()}
    a = np.array([1.0, 4.0, 9.0, 0.5])
    for t in range(20):
        grads = {"x": a * (p["x"] - 1.0), "y": p["y"] + 2.0}
        p = {k: p[k] - 0.01 * np.sign(grads[k]) for k in p}
        np.testing.assert_allclose(ours["x"][t], p["x"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours["y"][t], p["y"], rtol=1e-6, atol=1e-6)


def test_lion_mu_dtype_sets_momentum_dtype():
    # Not compared with optax: optax rounds b2 * m to bfloat16 before adding (jopt adds in
    # float32), and sign() turns those roundings into different steps for near-zero gradients.
    prob = PROBLEMS["mlp"]()
    opt = jopt.lion(0.01, b2=0.99, mu_dtype=jnp.bfloat16)
    state = opt.init(prob.params)
    assert all(m.dtype == jnp.bfloat16 for m in jax.tree.leaves(state[0].mu))
    grads = jax.grad(prob.loss)(prob.params)
    updates, state = opt.update(grads, state, prob.params)
    expected_mu = jax.tree.map(lambda g: (np.float32(1 - np.float32(0.99)) * g).astype(jnp.bfloat16), grads)
    assert_trees_close(state[0].mu, expected_mu, rtol=0, atol=0)
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))
    final = jax.tree.map(lambda x: x[-1], trajectory(opt, prob))
    assert float(prob.loss(final)) < 0.5 * float(prob.loss(prob.params))


def test_novograd_second_moment_is_one_scalar_per_leaf():
    prob = PROBLEMS["mlp"]()
    state = jopt.novograd(0.01).init(prob.params)[0]
    assert all(v.shape == () and v.dtype == jnp.float32 for v in jax.tree.leaves(state.nu))
    grads = jax.grad(prob.loss)(prob.params)
    _, state = jopt.scale_by_novograd().update(grads, jopt.scale_by_novograd().init(prob.params), prob.params)
    expected = jax.tree.map(lambda g: jnp.sum(g**2), grads)
    assert_trees_close(state.nu, expected)


# --- Adafactor with factored statistics -------------------------------------------------------


def wide_problem() -> Problem:
    """A 2-layer MLP with 24x40 and 40x20 matrices plus a 3-D leaf, large enough to factor."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(64, 24)), jnp.float32)
    y = jnp.asarray(np.tanh(rng.normal(size=(64, 20))), jnp.float32)
    target = jnp.asarray(rng.normal(size=(3, 20, 18)), jnp.float32)
    params = {
        "w1": jnp.asarray(rng.normal(size=(24, 40)) / np.sqrt(24), jnp.float32),
        "b1": jnp.zeros(40, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(40, 20)) / np.sqrt(40), jnp.float32),
        "k": jnp.asarray(rng.normal(size=(3, 20, 18)), jnp.float32),
    }

    def loss(p):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        return jnp.mean((h @ p["w2"] - y) ** 2) + 0.1 * jnp.mean((p["k"] - target) ** 2)

    return Problem("wide", params, loss)


def test_adafactor_factors_large_leaves():
    prob = wide_problem()
    state = jopt.adafactor(0.01, min_dim_size_to_factor=16).init(prob.params)[0]
    assert isinstance(state, jopt.FactoredState)
    shapes = lambda t: {k: v.shape for k, v in t.items()}
    # v_row averages out the largest axis, v_col the second largest (as in optax); the 3-D
    # leaf k (3x20x18) is factored over its two largest axes and keeps the leading one.
    assert shapes(state.v_row) == {"w1": (24,), "w2": (20,), "k": (3, 18), "b1": (1,)}
    assert shapes(state.v_col) == {"w1": (40,), "w2": (40,), "k": (3, 20), "b1": (1,)}
    assert shapes(state.v) == {"w1": (1,), "w2": (1,), "k": (1,), "b1": (40,)}
    stats = sum(x.size for x in jax.tree.leaves((state.v_row, state.v_col, state.v)))
    assert stats < sum(x.size for x in jax.tree.leaves(prob.params)) / 5
    # With the default min_dim_size_to_factor=128 nothing here is factored.
    unfactored = jopt.adafactor(0.01).init(prob.params)[0]
    assert shapes(unfactored.v) == {k: v.shape for k, v in prob.params.items()}


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": 0.5, "weight_decay_rate": 1e-3, "decay_rate": 0.6}],
    ids=["default", "momentum_decay"],
)
def test_adafactor_factored_trajectory_matches_optax(kwargs):
    prob = wide_problem()
    ours = trajectory(jopt.adafactor(0.01, min_dim_size_to_factor=16, **kwargs), prob)
    ref = trajectory(optax.adafactor(0.01, min_dim_size_to_factor=16, **kwargs), prob)
    assert_trees_close(ours, ref)
    assert float(prob.loss(jax.tree.map(lambda x: x[-1], ours))) < 0.5 * float(prob.loss(prob.params))


@pytest.mark.parametrize(
    "ours,ref,kwargs",
    [
        (jopt.adafactor, optax.adafactor, {"momentum": 0.9}),
        (jopt.lamb, optax.lamb, {"b1": 0.9, "b2": 0.999, "weight_decay": 1e-2}),
    ],
    ids=["adafactor_momentum", "lamb"],
)
def test_common_decays_close_to_optax(ours, ref, kwargs):
    prob = PROBLEMS["mlp"]()
    actual, expected = trajectory(ours(0.02, **kwargs), prob), trajectory(ref(0.02, **kwargs), prob)
    # Loose: float32 1 - 0.9 differs from optax's Python-float 1 - 0.9 (see the comment on LR).
    assert_trees_close(actual, expected, rtol=1e-3, atol=1e-4)


def test_adafactor_custom_decay_rate_fn_matches_optax():
    def capped(step, decay_rate):  # Zhai et al. (2021): bound the decay below 1
        return jnp.minimum(1.0 - (step + 1.0) ** (-decay_rate), 0.99)

    prob = wide_problem()
    ours = jopt.chain(
        jopt.scale_by_factored_rms(decay_rate=0.8, min_dim_size_to_factor=16, decay_rate_fn=capped),
        jopt.scale_by_learning_rate(0.01),
    )
    ref = optax.chain(
        optax.scale_by_factored_rms(decay_rate=0.8, min_dim_size_to_factor=16, decay_rate_fn=capped),
        optax.scale(-0.01),
    )
    assert_trees_close(trajectory(ours, prob), trajectory(ref, prob))


def test_adafactor_decay_rate_is_traceable_and_vmaps():
    prob = wide_problem()
    rates = [0.8, 0.6, 0.4]

    def final(decay_rate):
        return jax.tree.map(lambda x: x[-1], trajectory(jopt.adafactor(0.01, 16, decay_rate), prob, steps=30))

    batched = jax.vmap(final)(jnp.asarray(rates))
    for i, rate in enumerate(rates):
        ref = trajectory(optax.adafactor(0.01, 16, rate), prob, steps=30)
        member = jax.tree.map(lambda x, i=i: x[i], batched)
        assert_trees_close(member, jax.tree.map(lambda x: x[-1], ref))


def test_adafactor_decay_offset_restarts_the_schedule():
    prob = wide_problem()
    grads = jax.grad(prob.loss)(prob.params)
    ours, ref = jopt.adafactor(0.01, 16, decay_offset=7), optax.adafactor(0.01, 16, decay_offset=7)
    # Resuming at step 10 with offset 7 uses the decay of step 3, as in optax.
    s_ours = ours.init(prob.params)
    s_ours = (s_ours[0]._replace(count=jnp.int32(10)), *s_ours[1:])
    s_ref = ref.init(prob.params)
    s_ref = (s_ref[0]._replace(count=jnp.int32(10)), *s_ref[1:])
    for _ in range(3):
        u_ours, s_ours = ours.update(grads, s_ours, prob.params)
        u_ref, s_ref = ref.update(grads, s_ref, prob.params)
        assert_trees_close(u_ours, u_ref)
    assert_trees_close(s_ours[0].v_row, s_ref[0].v_row)
    # Before the offset optax divides by zero; jopt uses the step-0 decay and stays finite.
    u, _ = ours.update(grads, ours.init(prob.params), prob.params)
    expected, _ = optax.adafactor(0.01, 16).update(
        grads, optax.adafactor(0.01, 16).init(prob.params), prob.params
    )
    assert_trees_close(u, expected)


def test_hyperparams_are_logged_in_state():
    params = {"w": jnp.ones((4, 3))}
    opt = jopt.adafactor(lambda t: 0.1 / (1.0 + t), momentum=0.5, weight_decay_rate=jnp.float32(1e-3))
    state = opt.init(params)
    for _ in range(3):
        _, state = opt.update(params, state, params)
    hp = jopt.current_hyperparams(state)
    np.testing.assert_allclose(hp["learning_rate"], 0.1 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(hp["weight_decay"], 1e-3)
    assert "decay_rate" not in hp and "step_offset" not in hp  # Python constants: not stored
    hp = jopt.current_hyperparams(jopt.adafactor(0.1, decay_rate=jnp.float32(0.7)).init(params))
    np.testing.assert_allclose(hp["decay_rate"], 0.7)
    hp = jopt.current_hyperparams(jopt.lion(0.01, b1=lambda t: 0.5 + 0.0 * t).init(params))
    np.testing.assert_allclose(hp["b1"], 0.5)
    assert "weight_decay" not in hp  # a Python constant: not stored


def test_transforms_that_need_params_say_so():
    g = {"w": jnp.ones(2)}
    for tx in (jopt.scale_by_trust_ratio(), jopt.scale_by_novograd()):
        with pytest.raises(ValueError, match="params"):
            tx.update(g, tx.init(g))


# --- Validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,kwargs,name",
    [
        (jopt.sign_sgd, {"learning_rate": -0.1}, "learning_rate"),
        (jopt.lion, {"learning_rate": 0.1, "b1": 1.5}, "b1"),
        (jopt.lion, {"learning_rate": 0.1, "b2": -0.1}, "b2"),
        (jopt.lion, {"learning_rate": 0.1, "weight_decay": -1.0}, "weight_decay"),
        (jopt.lion, {"learning_rate": float("nan")}, "learning_rate"),
        (jopt.lamb, {"learning_rate": 0.1, "b2": 1.5}, "b2"),
        (jopt.lamb, {"learning_rate": 0.1, "weight_decay": -1.0}, "weight_decay"),
        (jopt.lars, {"learning_rate": 0.1, "momentum": 1.5}, "momentum"),
        (jopt.lars, {"learning_rate": 0.1, "trust_coefficient": -1.0}, "trust_coefficient"),
        (jopt.lars, {"learning_rate": 0.1, "eps": -1.0}, "eps"),
        (jopt.lars, {"learning_rate": 0.1, "weight_decay": np.array([0.1, -1.0])}, "weight_decay"),
        (jopt.novograd, {"learning_rate": 0.1, "b1": -0.5}, "b1"),
        (jopt.novograd, {"learning_rate": 0.1, "b2": 2.0}, "b2"),
        (jopt.novograd, {"learning_rate": 0.1, "eps": -1e-6}, "eps"),
        (jopt.novograd, {"learning_rate": 0.1, "eps_root": -1.0}, "eps_root"),
        (jopt.novograd, {"learning_rate": 0.1, "weight_decay": -1.0}, "weight_decay"),
        (jopt.adafactor, {"learning_rate": -1.0}, "learning_rate"),
        (jopt.adafactor, {"decay_rate": -0.8}, "decay_rate"),
        (jopt.adafactor, {"decay_offset": 1.5}, "decay_offset"),
        (jopt.adafactor, {"decay_offset": -1}, "decay_offset"),
        (jopt.adafactor, {"clipping_threshold": 0.0}, "clipping_threshold"),
        (jopt.adafactor, {"momentum": 1.2}, "momentum"),
        (jopt.adafactor, {"weight_decay_rate": -1.0}, "weight_decay_rate"),
        (jopt.adafactor, {"eps": -1.0}, "eps"),
        (jopt.adafactor, {"min_dim_size_to_factor": 2.5}, "min_dim_size_to_factor"),
        (jopt.scale_by_trust_ratio, {"min_norm": -1.0}, "min_norm"),
        (jopt.scale_by_factored_rms, {"step_offset": 0.5}, "step_offset"),
        (jopt.scale_by_factored_rms, {"epsilon": -1e-30}, "epsilon"),
        (jopt.scale_by_lion, {"b1": float("nan")}, "b1"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_values_raise_value_error_naming_argument(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


# --- Cases for the generic optimizer tests ---------------------------------------------------

CASES: list[OptCase] = [
    # Fixed-size sign steps zigzag across Rosenbrock's curved valley (loss stalls near 4 of 29
    # for every learning rate tried), so signSGD is only required to converge on the quadratic.
    OptCase("sign_sgd", jopt.sign_sgd, {"learning_rate": 0.01}, optax.sign_sgd, converges_on=("quadratic",)),
    OptCase(
        "lion",
        jopt.lion,
        {"learning_rate": 0.01, "b1": 0.9, "b2": 0.99, "weight_decay": 1e-3},
        optax.lion,
    ),
    OptCase(
        "lamb",
        jopt.lamb,
        {"learning_rate": 0.1, "b1": 0.9, "b2": 0.999, "eps": 1e-6, "eps_root": 1e-8, "weight_decay": 1e-3},
        optax.lamb,
    ),
    OptCase(
        "lars",
        jopt.lars,
        {"learning_rate": 0.1, "weight_decay": 1e-4, "trust_coefficient": 0.1, "eps": 1e-8, "momentum": 0.9},
        optax.lars,
    ),
    OptCase(
        "novograd",
        jopt.novograd,
        {"learning_rate": 0.02, "b1": 0.9, "b2": 0.25, "eps": 1e-6, "eps_root": 1e-8, "weight_decay": 1e-4},
        optax.novograd,
    ),
    OptCase(
        "adafactor",
        jopt.adafactor,
        {
            "learning_rate": 0.05,
            "decay_rate": 0.8,
            "decay_offset": 0,
            "clipping_threshold": 1.0,
            "momentum": 0.5,
            "weight_decay_rate": 1e-4,
            "eps": 1e-30,
        },
        optax.adafactor,
    ),
]
