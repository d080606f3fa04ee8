"""The Adam family (adam, adamw, nadam, nadamw, amsgrad, adamax, radam, adabelief, yogi).

Reference: optax 0.2.8's implementations with the same hyperparameters, compared
over whole 100-step trajectories on the shared test problems.

jopt resolves every hyperparameter to a float32 array, whereas optax computes
with Python floats where it is given them, so that e.g. ``1 - b2`` is formed in
float64 (``1 - 0.999`` differs from float32's ``1 - float32(0.999)`` by 1.3e-5
relative). Given the same hyperparameters as float32 arrays, optax does the
same arithmetic as jopt, and trajectories agree to float32 tolerance (in fact
bit for bit). ``test_matches_optax_with_python_float_hyperparameters`` covers
the Python-float path with a tolerance that allows for that difference.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import PROBLEMS, OptCase, assert_trees_close, assert_trees_equal, quadratic, trajectory


def _f32(kwargs: dict) -> dict:
    """Python-float hyperparameters as float32 arrays (what jopt computes with)."""
    return {k: jnp.float32(v) if isinstance(v, float) else v for k, v in kwargs.items()}


# Non-default values for every numeric hyperparameter, so that a swapped or
# ignored argument shows up in the comparison with optax.
_BETAS = {"b1": 0.85, "b2": 0.995}
_RADAM = dict(learning_rate=0.05, **_BETAS, eps=1e-7, eps_root=1e-9, threshold=5.0)

CASES: list[OptCase] = [
    OptCase("adam", jopt.adam, dict(learning_rate=0.05, **_BETAS, eps=1e-7, eps_root=1e-9), optax.adam),
    OptCase(
        "adamw",
        jopt.adamw,
        dict(learning_rate=0.05, **_BETAS, eps=1e-7, eps_root=1e-9, weight_decay=1e-3),
        optax.adamw,
    ),
    OptCase("nadam", jopt.nadam, dict(learning_rate=0.05, **_BETAS, eps=1e-7, eps_root=1e-9), optax.nadam),
    OptCase(
        "nadamw",
        jopt.nadamw,
        dict(learning_rate=0.05, **_BETAS, eps=1e-7, eps_root=1e-9, weight_decay=1e-3),
        optax.nadamw,
    ),
    # AMSGrad's nu_max remembers Rosenbrock's initial |g| ~ 200, shrinking later steps: larger lr.
    OptCase(
        "amsgrad",
        jopt.amsgrad,
        dict(learning_rate=0.05, **_BETAS, eps=1e-7, eps_root=1e-9),
        optax.amsgrad,
        converge_kwargs=dict(learning_rate=0.3, **_BETAS, eps=1e-7, eps_root=1e-9),
    ),
    OptCase("adamax", jopt.adamax, dict(learning_rate=0.05, **_BETAS, eps=1e-7), optax.adamax),
    # RAdam's first steps (rho_t < threshold) are momentum-SGD steps of size lr * |g|; on
    # Rosenbrock |g| ~ 200 at the start, which needs lr <~ 0.0035, and with so small an lr
    # the rectified steps (at most lr each) cannot cross the quadratic's distance of 3 in 500
    # steps. So RAdam is registered twice: once per learning-rate regime.
    OptCase("radam", jopt.radam, _RADAM, optax.radam, converges_on=("quadratic", "mlp")),
    OptCase(
        "radam_small_lr",
        jopt.radam,
        _RADAM,
        optax.radam,
        converges_on=("rosenbrock",),
        converge_kwargs={**_RADAM, "learning_rate": 3e-3, "b2": 0.9},
    ),
    OptCase(
        "adabelief",
        jopt.adabelief,
        dict(learning_rate=0.05, **_BETAS, eps=1e-12, eps_root=1e-14),
        optax.adabelief,
    ),
    OptCase("yogi", jopt.yogi, dict(learning_rate=0.05, **_BETAS, eps=1e-3), optax.yogi),
]
CASES = [c._replace(reference_kwargs=_f32(c.kwargs)) for c in CASES]
CASE_BY_NAME = {c.name: c for c in CASES}
OPTIMIZER_CASES = [c for c in CASES if c.name != "radam_small_lr"]

# Learning rates per problem for the optax comparison (Rosenbrock needs a small one).
LR = {"quadratic": 0.05, "rosenbrock": 2e-3, "mlp": 0.01}


def _with_lr(kwargs: dict, lr: float) -> dict:
    return {**kwargs, "learning_rate": lr}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("case", OPTIMIZER_CASES, ids=[c.name for c in OPTIMIZER_CASES])
def test_trajectory_equals_optax_bit_for_bit(case, problem):
    # Python-number hyperparameters: optax's weak-type arithmetic, the same float32 bits.
    prob = PROBLEMS[problem]()
    kwargs = _with_lr(case.kwargs, LR[problem])
    ours = trajectory(case.make(**kwargs), prob, 100)
    ref = trajectory(case.reference(**kwargs), prob, 100)
    assert_trees_equal(ours, ref, err_msg=f"{case.name} on {problem}")


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
@pytest.mark.parametrize("case", OPTIMIZER_CASES, ids=[c.name for c in OPTIMIZER_CASES])
def test_array_hyperparameters_follow_optax_given_arrays(case, problem):
    # float32-array hyperparameters take the traced path: optax given the same arrays agrees
    # bit for bit, and the constant path agrees with it to float32 rounding (1 - float32(b2)
    # vs float32(1 - b2), ~1e-6 relative; RAdam's steep rectification near its threshold
    # amplifies that ~4x).
    prob = PROBLEMS[problem]()
    kwargs = _with_lr(case.kwargs, LR[problem])
    traced = trajectory(case.make(**_f32(kwargs)), prob, 100)
    assert_trees_equal(traced, trajectory(case.reference(**_f32(kwargs)), prob, 100))
    tol = dict(rtol=1e-4, atol=1e-5) if case.name.startswith("radam") else {}
    assert_trees_close(trajectory(case.make(**kwargs), prob, 100), traced, **tol)


# Structural options (booleans, dtypes) and defaults, against optax on the MLP.
VARIANTS = {
    "adam_defaults": (jopt.adam, optax.adam, {}),
    "adamw_defaults": (jopt.adamw, optax.adamw, {}),
    "adamw_mask": (
        jopt.adamw,
        optax.adamw,
        {"weight_decay": 0.1, "mask": lambda p: {k: {"w": True, "b": False} for k in p}},
    ),
    "amsgrad_paper": (
        jopt.amsgrad,
        optax.amsgrad,
        {"bias_correction_mu": False, "bias_correction_nu": False},
    ),
    "amsgrad_defaults": (jopt.amsgrad, optax.amsgrad, {}),
    "adamax_defaults": (jopt.adamax, optax.adamax, {}),
    "radam_defaults": (jopt.radam, optax.radam, {}),
    "radam_nesterov": (jopt.radam, optax.radam, {"nesterov": True}),
    "radam_high_threshold": (jopt.radam, optax.radam, {"threshold": 30.0}),
    "adabelief_defaults": (jopt.adabelief, optax.adabelief, {}),
    "adabelief_nesterov": (jopt.adabelief, optax.adabelief, {"nesterov": True}),
    "yogi_defaults": (jopt.yogi, optax.yogi, {}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variants_match_optax_on_mlp(name):
    ours_fn, ref_fn, kwargs = VARIANTS[name]
    prob = PROBLEMS["mlp"]()
    ours = trajectory(ours_fn(0.01, **kwargs), prob, 100)
    ref = trajectory(ref_fn(0.01, **kwargs), prob, 100)
    assert_trees_equal(ours, ref, err_msg=name)


def test_positional_arguments_follow_optax_order():
    prob = quadratic()
    args = (0.05, 0.8, 0.99, 1e-6, 1e-9, None, 1e-2)  # ..., mu_dtype, weight_decay
    assert_trees_equal(trajectory(jopt.adamw(*args), prob), trajectory(optax.adamw(*args), prob))
    args = (0.05, 0.8, 0.99, 1e-6, 1e-9, 30.0)  # ..., threshold
    assert_trees_equal(trajectory(jopt.radam(*args), prob), trajectory(optax.radam(*args), prob))


@pytest.mark.parametrize("name", [c.name for c in OPTIMIZER_CASES])
def test_signature_is_a_superset_of_optax(name):
    ours = inspect.signature(getattr(jopt, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    positional = lambda ps: [
        (p.name, p.default) for p in ps.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    assert positional(ours) == positional(theirs)
    # optax's nadam/nadamw are adam/adamw with nesterov=True bound; jopt omits the flag there.
    keyword = {n: p.default for n, p in theirs.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if name in ("nadam", "nadamw"):
        keyword.pop("nesterov")
    assert all(n in ours and ours[n].default == d for n, d in keyword.items())


def test_schedules_as_learning_rate_and_weight_decay_match_optax():
    prob = PROBLEMS["mlp"]()
    lr = optax.warmup_cosine_decay_schedule(0.0, 0.02, 10, 100)
    wd = lambda t: 1e-2 / (1.0 + 0.1 * t)
    ours = trajectory(jopt.adamw(lr, weight_decay=wd), prob, 100)
    ref = trajectory(optax.adamw(lr, weight_decay=wd), prob, 100)
    assert_trees_equal(ours, ref)
    assert_trees_equal(trajectory(jopt.radam(lr), prob, 100), trajectory(optax.radam(lr), prob, 100))


def test_state_records_hyperparameters_of_latest_step():
    params = {"w": jnp.ones(3)}
    opt = jopt.adamw(lambda t: 0.1 / (1.0 + t), b1=lambda t: 0.9 - 0.1 * t, weight_decay=jnp.float32(0.01))
    state = opt.init(params)
    hp = jopt.current_hyperparams(state)
    # schedules, arrays and the learning rate are logged; Python constants (b2, eps, ...) are not
    assert set(hp) == {"b1", "weight_decay", "learning_rate"}
    np.testing.assert_allclose(hp["b1"], 0.9)
    for _ in range(3):
        _, state = opt.update(params, state, params)
    hp = jopt.current_hyperparams(state)
    np.testing.assert_allclose(hp["b1"], 0.7, rtol=1e-6)
    np.testing.assert_allclose(hp["learning_rate"], 0.1 / 3.0, rtol=1e-6)
    assert all(v.dtype == jnp.float32 for v in hp.values())


def _numpy_adam(grads: list[np.ndarray], b1s, b2: float, eps: float) -> list[np.ndarray]:
    """Adam's direction, transcribed from Kingma & Ba (2015), with a per-step b1."""
    m = np.zeros_like(grads[0], np.float64)
    v = np.zeros_like(grads[0], np.float64)
    out = []
    for t, (g, b1) in enumerate(zip(grads, b1s, strict=True), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        out.append((m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
    return out


def test_scheduled_b1_matches_numpy_transcription():
    b1 = lambda t: 0.5 + 0.1 * t  # evaluated at the step index 0, 1, 2, ...
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=4).astype(np.float32) for _ in range(5)]
    tx = jopt.scale_by_adam(b1=b1, b2=0.99, eps=1e-6)
    state = tx.init(jnp.zeros(4))
    ours = []
    for g in grads:
        u, state = tx.update(jnp.asarray(g), state)
        ours.append(np.asarray(u))
    expected = _numpy_adam(grads, [b1(t) for t in range(5)], 0.99, 1e-6)
    np.testing.assert_allclose(np.stack(ours), np.stack(expected), rtol=1e-5, atol=1e-6)


def _numpy_radam(grads, b1, b2, eps, threshold):
    """RAdam, transcribed from Liu et al. (2020), Algorithm 2."""
    m = np.zeros_like(grads[0], np.float64)
    v = np.zeros_like(grads[0], np.float64)
    rho_inf = 2 / (1 - b2) - 1
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            out.append(r * m_hat / (np.sqrt(v / (1 - b2**t)) + eps))
        else:
            out.append(m_hat)
    return np.stack(out)


def test_radam_rectification_switch_is_traceable():
    """Threshold and b2 are traced under vmap; each member follows the paper's rule."""
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=3).astype(np.float32) for _ in range(12)]
    # b2 = 0.75 is exact in float32, so rho_inf is the same in float32 and float64.
    configs = [(0.75, 5.0), (0.75, 6.5), (0.75, 1e9), (0.5, 2.0)]

    def run(b2, threshold):
        tx = jopt.scale_by_radam(b1=0.9, b2=b2, eps=1e-8, threshold=threshold)

        def step(state, g):
            u, state = tx.update(g, state)
            return state, u

        return jax.lax.scan(step, tx.init(jnp.zeros(3)), jnp.asarray(np.stack(grads)))[1]

    b2s, thresholds = (jnp.array(c, jnp.float32) for c in zip(*configs, strict=True))
    batched = jax.jit(jax.vmap(run))(b2s, thresholds)
    for i, (b2, threshold) in enumerate(configs):
        expected = _numpy_radam(grads, 0.9, b2, 1e-8, threshold)
        np.testing.assert_allclose(batched[i], expected, rtol=1e-4, atol=1e-6, err_msg=str(configs[i]))


@pytest.mark.parametrize("make", [jopt.adam, jopt.amsgrad, lambda lr, **kw: jopt.adamw(lr, **kw)])
def test_bf16_mu_dtype_keeps_state_dtype(make):
    prob = PROBLEMS["mlp"]()
    opt = make(0.01, mu_dtype=jnp.bfloat16)
    params, state = prob.params, opt.init(prob.params)
    step = jax.jit(lambda p, s: opt.update(jax.grad(prob.loss)(p), s, p))
    for _ in range(5):
        updates, state = step(params, state)
        params = jopt.apply_updates(params, updates)
    moments = state[0]
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(moments.mu))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(moments.nu))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(updates))
    assert np.isfinite(float(prob.loss(params)))


def test_bf16_mu_dtype_moment_arithmetic_is_float32():
    # Deliberate difference from optax: with mu_dtype=bfloat16 optax multiplies the stored
    # bf16 moment by b1 in bf16 (b1 = 0.9 becomes 0.8984375); jopt upcasts the moment to
    # float32, updates it there and rounds only the stored result.
    b1 = 0.9
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=4).astype(np.float32) for _ in range(3)]
    tx = jopt.scale_by_adam(b1=b1, mu_dtype=jnp.bfloat16)
    state = tx.init({"w": jnp.zeros(4)})
    mu = np.zeros(4, jnp.bfloat16)
    for g in grads:
        _, state = tx.update({"w": jnp.asarray(g)}, state)
        mu = (np.float32(1 - b1) * g + np.float32(b1) * mu.astype(np.float32)).astype(jnp.bfloat16)
        np.testing.assert_array_equal(np.asarray(state.mu["w"]), mu)
    ref = optax.scale_by_adam(b1=b1, mu_dtype=jnp.bfloat16)
    ref_state = ref.init({"w": jnp.zeros(4)})
    for g in grads:
        _, ref_state = ref.update({"w": jnp.asarray(g)}, ref_state)
    assert not np.array_equal(np.asarray(ref_state.mu["w"]), np.asarray(state.mu["w"]))


@pytest.mark.parametrize("nu_dtype", [jnp.bfloat16, jnp.float32])
def test_nu_dtype_is_kept(nu_dtype):
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    for tx in (
        jopt.scale_by_adam(nu_dtype=nu_dtype),
        jopt.scale_by_amsgrad(nu_dtype=nu_dtype),
        jopt.scale_by_adamax(nu_dtype=nu_dtype),
        jopt.scale_by_radam(nu_dtype=nu_dtype),
        jopt.scale_by_belief(nu_dtype=nu_dtype),
        jopt.scale_by_yogi(nu_dtype=nu_dtype),
    ):
        state = tx.init(params)
        u, new = tx.update({"w": jnp.full(3, 0.5, jnp.bfloat16)}, state)
        assert new.nu["w"].dtype == nu_dtype and new.mu["w"].dtype == jnp.bfloat16
        assert u["w"].dtype == jnp.bfloat16


def test_bf16_params_do_not_round_b2():
    """With bfloat16 params, b2=0.999 is used as 0.999, not rounded to 1.0 (which gives 0/0)."""
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    grads = [{"w": jnp.asarray(np.linspace(-1, 1, 4) * (k + 1), jnp.bfloat16)} for k in range(3)]

    def run(b2, dtype):
        tx = jopt.scale_by_adam(b2=b2)
        state = tx.init(jax.tree.map(lambda x: x.astype(dtype), params))
        for g in grads:
            u, state = tx.update(jax.tree.map(lambda x: x.astype(dtype), g), state)
        return u["w"]

    bf16 = run(0.999, jnp.bfloat16)
    assert bf16.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(bf16)))
    # b2 is traced here, so 1.0 passes construction; it is what bf16 rounding of 0.999 gives.
    rounded = jax.jit(run, static_argnums=1)(jnp.float32(1.0), jnp.bfloat16)
    assert not np.allclose(np.asarray(bf16, np.float32), np.asarray(rounded, np.float32), equal_nan=True)
    # ...and agrees with the float32 computation up to bfloat16 resolution.
    np.testing.assert_allclose(
        np.asarray(bf16, np.float32), np.asarray(run(0.999, jnp.float32)), rtol=1e-2, atol=1e-2
    )


BAD_VALUES = [
    (jopt.adam, "learning_rate", -1e-3),
    (jopt.adam, "b1", 1.0),
    (jopt.adam, "b1", -0.1),
    (jopt.adam, "b2", 1.5),
    (jopt.adam, "eps", -1e-8),
    (jopt.adam, "eps_root", float("nan")),
    (jopt.adamw, "weight_decay", -1e-4),
    (jopt.nadamw, "b2", 1.0),
    (jopt.amsgrad, "eps_root", -1.0),
    (jopt.adamax, "b2", -0.5),
    (jopt.radam, "threshold", float("nan")),
    (jopt.radam, "b2", np.array([0.9, 1.0])),
    (jopt.adabelief, "eps", -1e-16),
    (jopt.yogi, "b1", 2.0),
]


@pytest.mark.parametrize("make,name,value", BAD_VALUES, ids=[f"{m.__name__}-{n}" for m, n, _ in BAD_VALUES])
def test_bad_hyperparameter_raises_value_error_naming_it(make, name, value):
    kwargs = {"learning_rate": 1e-3, name: value}
    with pytest.raises(ValueError, match=name):
        make(**kwargs)


def test_bad_initial_accumulator_value_raises():
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        jopt.scale_by_yogi(initial_accumulator_value=-1.0)


def test_traced_hyperparameters_are_not_validated():
    params = {"w": jnp.ones(2)}

    @jax.jit
    def step(b1, eps):
        opt = jopt.adam(0.1, b1=b1, eps=eps)
        return opt.update(params, opt.init(params), params)[0]["w"]

    # b2 = 0.999 is a Python number: 1 - b2 is formed in double precision and the bias
    # correction 1 - b2**t in float32 (optax's arithmetic), so the first step is 1e-5 off -lr.
    np.testing.assert_allclose(step(0.9, 1e-8), -0.1, rtol=1e-5)


def test_radam_meta_gradient_is_finite():
    """Differentiating through RAdam's switch: the unselected r_t (NaN for rho_t < 4) is masked."""
    prob = quadratic()

    def final_loss(lr):
        opt = jopt.radam(lr)

        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(prob.loss)(p), s, p)
            return (jopt.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (prob.params, opt.init(prob.params)), None, length=8)
        return prob.loss(p)

    grad = jax.grad(final_loss)(jnp.float32(0.01))
    assert np.isfinite(float(grad)) and float(grad) < 0.0
