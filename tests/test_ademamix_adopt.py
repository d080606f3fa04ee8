"""AdEMAMix, simplified AdEMAMix and ADOPT against optax.contrib; the paper's AdEMAMix schedulers.

* Python-number hyperparameters: optax's float32 trajectory bit for bit (and its
  float64 one under x64) over 120 steps on ``mlp3d`` (matrix, vector, 3-D
  leaves) and on the quadratic.
* float32-array hyperparameters (the vmappable path) agree with the constant
  path to float32 rounding (``1 - float32(b)`` against ``float32(1 - b)``).
* ``ademamix_alpha_scheduler`` / ``ademamix_beta3_scheduler`` against a NumPy
  transcription of the paper's formulas, and as ``alpha``/``b3`` inside the
  optimizer against optax given the same schedule.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jopt.optimizers.momentum_variants import ademamix, adopt, simplified_ademamix
from jopt.transforms.decorrelated_moments import scale_by_adopt
from jopt.transforms.ema_mixture import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    ademamix_alpha_scheduler,
    ademamix_beta3_scheduler,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
)
from jopt.transforms.moments import ScaleByAdamState
from tests.reference import (
    OptCase,
    assert_trees_close,
    assert_trees_equal,
    mlp3d,
    quadratic,
    trajectory,
)

STEPS = 120

# Non-default values for every numeric hyperparameter, so a swapped or ignored argument shows.
_ADEMAMIX = dict(learning_rate=0.02, b1=0.85, b2=0.995, b3=0.999, alpha=3.0, eps=1e-7, eps_root=1e-9)
_SIMPLIFIED = dict(learning_rate=2e-3, b1=0.9, b2=0.97, alpha=2.0, eps=1e-7, eps_root=1e-9)
_ADOPT = dict(learning_rate=0.05, b1=0.85, b2=0.995, eps=1e-5)

CASES: list[OptCase] = [
    OptCase("ademamix", ademamix, {**_ADEMAMIX, "weight_decay": 1e-3}, optax.contrib.ademamix),
    # The undamped accumulator reaches g / (1 - b1): a learning rate ~(1 - b1) times Adam's.
    OptCase(
        "simplified_ademamix",
        simplified_ademamix,
        {**_SIMPLIFIED, "weight_decay": 1e-3},
        optax.contrib.simplified_ademamix,
        converge_kwargs={**_SIMPLIFIED, "learning_rate": 5e-3, "weight_decay": 0.0},
    ),  # fmt: skip
    # Rosenbrock's curved valley needs a faster-adapting second moment (b2 = 0.9).
    OptCase(
        "adopt",
        adopt,
        _ADOPT,
        optax.contrib.adopt,
        converge_kwargs={**_ADOPT, "learning_rate": 0.02, "b2": 0.9},
    ),
]
CASE_BY_NAME = {c.name: c for c in CASES}
PROBLEMS = {"mlp3d": mlp3d, "quadratic": quadratic}


def _f32(kwargs: dict) -> dict:
    return {k: jnp.float32(v) if isinstance(v, float) else v for k, v in kwargs.items()}


def _to_f64(problem):
    return problem._replace(params=jax.tree.map(lambda x: x.astype(jnp.float64), problem.params))


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_float32_trajectory_equals_optax_bit_for_bit(case, problem):
    prob = PROBLEMS[problem]()
    ours = trajectory(case.make(**case.kwargs), prob, STEPS)
    assert_trees_equal(ours, trajectory(case.reference(**case.kwargs), prob, STEPS), err_msg=case.name)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_float64_trajectory_equals_optax_bit_for_bit(case):
    with jax.enable_x64(True):
        prob = _to_f64(mlp3d())
        ours = trajectory(case.make(**case.kwargs), prob, STEPS)
        assert jax.tree.leaves(ours)[0].dtype == jnp.float64
        assert_trees_equal(ours, trajectory(case.reference(**case.kwargs), prob, STEPS), err_msg=case.name)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_array_hyperparameters_agree_with_numbers_to_float32_rounding(case):
    # AdEMAMix: 1 - float32(b) vs float32(1 - b), ~3e-6 relative here (on mlp3d its large
    # steps amplify that to 1e-3 by step 120). Simplified AdEMAMix and ADOPT form no 1 - b
    # from Python numbers (ADOPT's jnp.where makes arrays of them), so they agree exactly.
    prob = quadratic()
    numbers = trajectory(case.make(**case.kwargs), prob, STEPS)
    arrays = trajectory(case.make(**_f32(case.kwargs)), prob, STEPS)
    if case.name == "ademamix":
        assert_trees_close(arrays, numbers, rtol=2e-5, atol=1e-6)
    else:
        assert_trees_equal(arrays, numbers)


# Structural options and schedules, against optax on the quadratic (bit for bit).
def _matrices(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


def _paper_schedules(m):
    return m(
        0.02,
        b1=0.9,
        b3=ademamix_beta3_scheduler(0.999, beta_start=0.9, warmup=80),
        alpha=ademamix_alpha_scheduler(4.0, warmup=60),
    )


VARIANTS = {
    "ademamix_defaults": (ademamix, optax.contrib.ademamix, lambda m: m(0.01)),
    "ademamix_mask": (
        ademamix,
        optax.contrib.ademamix,
        lambda m: m(0.01, weight_decay=0.1, mask=_matrices),
    ),
    "ademamix_paper_schedules": (ademamix, optax.contrib.ademamix, _paper_schedules),
    "simplified_defaults": (simplified_ademamix, optax.contrib.simplified_ademamix, lambda m: m(1e-3)),
    "simplified_alpha_schedule": (
        simplified_ademamix,
        optax.contrib.simplified_ademamix,
        lambda m: m(1e-3, alpha=ademamix_alpha_scheduler(3.0, warmup=50)),
    ),
    "adopt_defaults": (adopt, optax.contrib.adopt, lambda m: m(1e-2)),
    "adopt_nesterov": (adopt, optax.contrib.adopt, lambda m: m(1e-2, nesterov=True)),
    "adopt_no_clipping": (adopt, optax.contrib.adopt, lambda m: m(1e-2, use_clipping=False)),
    "adopt_clip_fn": (adopt, optax.contrib.adopt, lambda m: m(1e-2, clip_value_fn=lambda t: 0.5 * t**0.3)),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_equals_optax_bit_for_bit(name):
    ours, theirs, build = VARIANTS[name]
    prob = quadratic()
    assert_trees_equal(
        trajectory(build(ours), prob, STEPS), trajectory(build(theirs), prob, STEPS), err_msg=name
    )


def test_bfloat16_moments_stay_bfloat16():
    # optax's ademamix returns float32 moments from bfloat16 ones (a lax.scan over its update
    # fails); jopt keeps the state's dtypes. The trajectory stays near the float32-moment one.
    prob = quadratic()
    opt = ademamix(0.01, mu_dtype=jnp.bfloat16)
    state = opt.init(prob.params)
    _, new_state = opt.update(prob.params, state, prob.params)
    assert {x.dtype for x in jax.tree.leaves((new_state[0].m1, new_state[0].nu))} == {jnp.dtype(jnp.bfloat16)}
    low = trajectory(opt, prob, 60)
    assert_trees_close(low, trajectory(ademamix(0.01), prob, 60), rtol=0.0, atol=2e-2)


def test_scale_by_transforms_equal_optax_and_keep_optax_state_names():
    prob = quadratic()
    pairs = [
        (scale_by_ademamix(0.8, 0.99, 0.995, 2.0), optax.contrib.scale_by_ademamix(0.8, 0.99, 0.995, 2.0)),
        (
            scale_by_simplified_ademamix(0.9, 0.9, 1.0),
            optax.contrib.scale_by_simplified_ademamix(0.9, 0.9, 1.0),
        ),
        (scale_by_adopt(0.8, 0.99), optax.contrib.scale_by_adopt(0.8, 0.99)),
    ]
    for ours, theirs in pairs:
        lr = (ours, optax.scale(-1e-2))
        run = trajectory(optax.chain(*lr), prob, 60)
        assert_trees_equal(run, trajectory(optax.chain(theirs, optax.scale(-1e-2)), prob, 60))
    state = scale_by_ademamix().init(prob.params)
    assert isinstance(state, ScaleByAdemamixState)
    _, state = scale_by_ademamix().update(prob.params, state)
    assert int(state.count) == int(state.count_m2) == 1
    s2 = scale_by_simplified_ademamix().init(prob.params)
    assert isinstance(s2, ScaleBySimplifiedAdEMAMixState) and int(s2.t) == 0
    assert isinstance(scale_by_adopt().init(prob.params), ScaleByAdamState)


# --------------------------------------------------------------------------- the paper's schedulers


def _np_alpha(t: int, alpha: float, alpha_start: float, warmup: int) -> float:
    """Paper, Sec. 3: alpha_t = min(t alpha / T, alpha) from alpha_start = 0 (general start here)."""
    if t < warmup:
        frac = t / warmup
        return (1 - frac) * alpha_start + frac * alpha
    return alpha


def _np_beta3(t: int, beta_end: float, beta_start: float, warmup: int) -> float:
    """Paper, Sec. 3: linear in the half-life f(b) = ln(1/2)/ln(b) - 1, f^-1(h) = (1/2)^(1/(h+1))."""
    if t >= warmup:
        return beta_end

    def f(b):
        return math.log(0.5) / math.log(b) - 1 if b > 0 else -1.0

    frac = t / warmup
    h = (1 - frac) * f(beta_start) + frac * f(beta_end)
    return 0.5 ** (1 / (h + 1)) if h > -1 else 0.0


@pytest.mark.parametrize("start", [0.0, 0.9])
def test_beta3_scheduler_matches_paper_formula(start):
    steps = np.arange(0, 130)
    expected = np.array([_np_beta3(int(t), 0.9999, start, 100) for t in steps])
    sched = ademamix_beta3_scheduler(0.9999, beta_start=start, warmup=100)
    got = np.asarray(jax.vmap(sched)(jnp.asarray(steps)))
    # float32: beta close to 1 is resolved to ~6e-8 absolute.
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-7)
    with jax.enable_x64(True):
        got64 = np.asarray(jax.vmap(ademamix_beta3_scheduler(0.9999, start, 100))(jnp.asarray(steps)))
    np.testing.assert_allclose(got64, expected, rtol=1e-13, atol=1e-15)
    # the half-life grows linearly during the warm-up
    half_life = np.log(0.5) / np.log(expected[1:100]) - 1
    np.testing.assert_allclose(np.diff(half_life), np.diff(half_life)[0], rtol=1e-6)


def test_alpha_scheduler_matches_paper_formula_and_traces():
    steps = np.arange(0, 80)
    expected = np.array([_np_alpha(int(t), 5.0, 1.0, 60) for t in steps])
    got = np.asarray(jax.vmap(ademamix_alpha_scheduler(5.0, 1.0, 60))(jnp.asarray(steps)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(ademamix_alpha_scheduler(5.0)(jnp.asarray(0))), 5.0
    )  # no warm-up
    # every argument may be traced: vmap over the warm-up length compiles once
    values = jax.vmap(lambda w: ademamix_alpha_scheduler(2.0, warmup=w)(jnp.asarray(5)))(jnp.array([10, 20]))
    np.testing.assert_allclose(np.asarray(values), [1.0, 0.5], rtol=1e-6)


def test_schedules_are_recorded_in_the_state():
    opt = _paper_schedules(ademamix)
    params = quadratic().params
    state = opt.init(params)
    for _ in range(3):
        _, state = opt.update(params, state, params)
    h = state[0].hyperparams
    np.testing.assert_allclose(float(h["alpha"]), 4.0 * 2 / 60, rtol=1e-6)  # evaluated at count 2
    np.testing.assert_allclose(float(h["b3"]), _np_beta3(2, 0.999, 0.9, 80), rtol=1e-6)


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ademamix(0.01, b3=1.0), "b3 must be in"),
        (lambda: ademamix(0.01, alpha=-1.0), "alpha must be in"),
        (lambda: ademamix(-0.01), "learning_rate"),
        (lambda: simplified_ademamix(0.01, b1=1.5), "b1 must be in"),
        (lambda: simplified_ademamix(0.01, eps=-1e-8), "eps must be in"),
        (lambda: adopt(0.01, b2=1.0), "b2 must be in"),
        (lambda: adopt(0.01, eps=-1.0), "eps must be in"),
        (lambda: ademamix_beta3_scheduler(1.0, warmup=10), "beta_end must be in"),
        (lambda: ademamix_alpha_scheduler(2.0, warmup=-1), "warmup must be in"),
    ],
)
def test_bad_values_raise_value_error_naming_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()
