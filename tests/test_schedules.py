"""Schedules: optax/NumPy references, traced (vmapped) arguments, properties and validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jopt
from jopt import schedules as S

STEPS = np.arange(0, 301)
_STEPS = jnp.asarray(STEPS, jnp.int32)
F32 = np.float32


def ftz(x):
    """A float32 product as XLA's CPU backend returns it: subnormal results are flushed to zero."""
    x = F32(x)
    return F32(0.0) if abs(x) < np.finfo(np.float32).tiny else x


def values(sched, steps=_STEPS):
    """The schedule on a vector of steps (one vmap), as a NumPy array."""
    return np.asarray(jax.vmap(sched)(steps))


# --------------------------------------------------------------------------- NumPy references


def np_inverse_time(init, rate, decay_steps, staircase, steps=STEPS):
    p = steps / decay_steps
    return init / (1.0 + rate * (np.floor(p) if staircase else p))


def np_wsd(peak, warmup, stable, decay_steps, init, end, decay, steps=STEPS):
    out = []
    for t in steps:
        if t < warmup:
            out.append(init + (peak - init) * t / warmup)
        elif t < warmup + stable:
            out.append(peak)
        else:
            q = min((t - warmup - stable) / decay_steps, 1.0) if decay_steps > 0 else 1.0
            w = {"linear": 1 - q, "cosine": 0.5 * (1 + math.cos(math.pi * q)), "sqrt": 1 - math.sqrt(q)}[
                decay
            ]
            out.append(end + (peak - end) * w)
    return np.array(out)


def np_warm_restarts(init, first, mult, alpha, steps=STEPS):
    out = []
    for t in steps:
        start, length = 0.0, float(first)
        while t >= start + length:
            start, length = start + length, length * mult
        q = (t - start) / length
        out.append(init * (alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * q))))
    return np.array(out)


def restart_starts(first, mult, limit=STEPS[-1]):
    """Cycle starts (floats) of SGDR with cycle lengths ``first * mult**k`` up to ``limit``."""
    starts, start, length = [], 0.0, float(first)
    while start <= limit:
        starts.append(start)
        start, length = start + length, length * mult
    return starts


# --------------------------------------------------------------------------- against optax / NumPy

_SGDR_CYCLES = [
    dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=80, end_value=0.01),
    dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=100),
    dict(init_value=0.0, peak_value=0.25, warmup_steps=20, decay_steps=150, exponent=2.0),
]


def _optax_cycles(first, mult, alpha, n):
    return [
        dict(init_value=1.0, peak_value=1.0, warmup_steps=0, decay_steps=first * mult**k, end_value=alpha)
        for k in range(n)
    ]


# (id, jopt schedule, optax schedule); built lazily so a failure is reported per case.
# fmt: off
REFERENCE_CASES = [
    ("constant", lambda: S.constant(0.3), lambda: optax.constant_schedule(0.3)),
    ("linear-up", lambda: S.linear(0.0, 1.0, 100), lambda: optax.linear_schedule(0.0, 1.0, 100)),
    ("linear-begin", lambda: S.linear(1.0, 0.1, 50, transition_begin=20),
     lambda: optax.linear_schedule(1.0, 0.1, 50, transition_begin=20)),
    ("linear-zero-steps", lambda: S.linear(0.7, 0.1, 0), lambda: optax.linear_schedule(0.7, 0.1, 0)),
    ("poly-2", lambda: S.polynomial(1.0, 0.01, 2, 120), lambda: optax.polynomial_schedule(1.0, 0.01, 2, 120)),
    ("poly-sqrt-begin", lambda: S.polynomial(0.5, 2.0, 0.5, 200, 10),
     lambda: optax.polynomial_schedule(0.5, 2.0, 0.5, 200, 10)),
    ("exp", lambda: S.exponential_decay(1.0, 10, 0.9),
     lambda: optax.exponential_decay(1.0, transition_steps=10, decay_rate=0.9)),
    ("exp-staircase-begin", lambda: S.exponential_decay(2.0, 30, 0.5, transition_begin=15, staircase=True),
     lambda: optax.exponential_decay(2.0, 30, 0.5, transition_begin=15, staircase=True)),
    ("exp-end-lower", lambda: S.exponential_decay(1.0, 20, 0.5, end_value=0.1),
     lambda: optax.exponential_decay(1.0, 20, 0.5, end_value=0.1)),
    ("exp-end-upper", lambda: S.exponential_decay(0.1, 25, 1.5, end_value=1.0),
     lambda: optax.exponential_decay(0.1, 25, 1.5, end_value=1.0)),
    ("step_decay", lambda: S.step_decay(2.0, 0.5, 30),
     lambda: optax.exponential_decay(2.0, 30, 0.5, staircase=True)),
    ("piecewise", lambda: S.piecewise_constant(1.0, [30, 100, 150], [0.5, 0.1, 2.0]),
     lambda: optax.piecewise_constant_schedule(1.0, {30: 0.5, 100: 0.1, 150: 2.0})),
    ("piecewise-dict", lambda: S.piecewise_constant(0.3, {200: 0.5, 50: 0.1}),
     lambda: optax.piecewise_constant_schedule(0.3, {200: 0.5, 50: 0.1})),
    ("piecewise-values", lambda: S.piecewise_constant_values(jnp.array([30, 100]), [1.0, 0.3, 0.05]),
     lambda: optax.join_schedules([optax.constant_schedule(v) for v in (1.0, 0.3, 0.05)], [30, 100])),
    ("join", lambda: S.join([S.linear(0.0, 1.0, 20), S.cosine_decay(1.0, 100), S.constant(0.05)], [20, 120]),
     lambda: optax.join_schedules(
         [optax.linear_schedule(0.0, 1.0, 20), optax.cosine_decay_schedule(1.0, 100), lambda t: 0.05],
         [20, 120])),
    ("cosine", lambda: S.cosine_decay(1.0, 200), lambda: optax.cosine_decay_schedule(1.0, 200)),
    ("cosine-alpha-exponent", lambda: S.cosine_decay(2.0, 150, alpha=0.1, exponent=2.0),
     lambda: optax.cosine_decay_schedule(2.0, 150, alpha=0.1, exponent=2.0)),
    ("warmup-cosine", lambda: S.warmup_cosine_decay(0.0, 1.0, 25, 200, end_value=0.05),
     lambda: optax.warmup_cosine_decay_schedule(0.0, 1.0, 25, 200, end_value=0.05)),
    ("warmup-cosine-exponent", lambda: S.warmup_cosine_decay(0.1, 0.8, 40, 250, exponent=1.5),
     lambda: optax.warmup_cosine_decay_schedule(0.1, 0.8, 40, 250, exponent=1.5)),
    ("warmup-cosine-no-warmup", lambda: S.warmup_cosine_decay(0.0, 1.0, 0, 100, end_value=0.2),
     lambda: optax.warmup_cosine_decay_schedule(0.0, 1.0, 0, 100, end_value=0.2)),
    ("warmup-linear", lambda: S.warmup_linear_decay(0.05, 1.0, 30, 230, end_value=0.1),
     lambda: optax.join_schedules(
         [optax.linear_schedule(0.05, 1.0, 30), optax.linear_schedule(1.0, 0.1, 200)], [30])),
    ("one-cycle", lambda: S.one_cycle(200, 1.0, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
     lambda: optax.cosine_onecycle_schedule(200, 1.0, 0.25, div_factor=10.0, final_div_factor=100.0)),
    ("one-cycle-defaults", lambda: S.one_cycle(250, 0.5), lambda: optax.cosine_onecycle_schedule(250, 0.5)),
    ("sgdr", lambda: S.sgdr(_SGDR_CYCLES), lambda: optax.sgdr_schedule(_SGDR_CYCLES)),
    ("warm-restarts-equal", lambda: S.cosine_with_warm_restarts(1.0, 40, alpha=0.1),
     lambda: optax.sgdr_schedule(_optax_cycles(40, 1, 0.1, 8))),
    ("warm-restarts-double", lambda: S.cosine_with_warm_restarts(1.0, 10, cycle_mult=2.0),
     lambda: optax.sgdr_schedule(_optax_cycles(10, 2, 0.0, 6))),
    ("warm-restarts-triple", lambda: S.cosine_with_warm_restarts(1.0, 7, cycle_mult=3.0, alpha=0.2),
     lambda: optax.sgdr_schedule(_optax_cycles(7, 3, 0.2, 5))),
]
# fmt: on


@pytest.mark.parametrize("ours, theirs", [pytest.param(a, b, id=n) for n, a, b in REFERENCE_CASES])
def test_matches_optax(ours, theirs):
    np.testing.assert_allclose(values(ours()), values(theirs()), rtol=1e-5, atol=1e-6)


# fmt: off
NUMPY_CASES = [
    ("inverse-time", lambda: S.inverse_time_decay(1.0, 0.5, 10),
     lambda: np_inverse_time(1.0, 0.5, 10, False)),
    ("inverse-time-staircase", lambda: S.inverse_time_decay(0.3, 2.0, 7, staircase=True),
     lambda: np_inverse_time(0.3, 2.0, 7, True)),
    ("wsd-linear", lambda: S.warmup_stable_decay(1.0, 20, 100, 80, init_value=0.1, end_value=0.01),
     lambda: np_wsd(1.0, 20, 100, 80, 0.1, 0.01, "linear")),
    ("wsd-cosine", lambda: S.warmup_stable_decay(0.5, 0, 50, 120, decay="cosine"),
     lambda: np_wsd(0.5, 0, 50, 120, 0.0, 0.0, "cosine")),
    ("wsd-sqrt", lambda: S.warmup_stable_decay(2.0, 30, 0, 200, end_value=0.2, decay="sqrt"),
     lambda: np_wsd(2.0, 30, 0, 200, 0.0, 0.2, "sqrt")),
    ("wsd-no-cooldown", lambda: S.warmup_stable_decay(1.0, 10, 100, 0, end_value=0.3),
     lambda: np_wsd(1.0, 10, 100, 0, 0.0, 0.3, "linear")),
    ("warm-restarts-1.5", lambda: S.cosine_with_warm_restarts(2.0, 12, cycle_mult=1.5, alpha=0.05),
     lambda: np_warm_restarts(2.0, 12, 1.5, 0.05)),
]
# fmt: on


@pytest.mark.parametrize("ours, reference", [pytest.param(a, b, id=n) for n, a, b in NUMPY_CASES])
def test_matches_numpy_reference(ours, reference):
    np.testing.assert_allclose(values(ours()), reference(), rtol=1e-5, atol=1e-6)


def test_schedules_are_elementwise_in_an_array_of_steps_and_float32():
    for name, ours, _ in REFERENCE_CASES:
        sched = jax.jit(ours())  # one program per call form (eager dispatch is the slow part here)
        direct = sched(_STEPS)
        assert direct.dtype == jopt.hyperparams.hyperparam_dtype(), name
        np.testing.assert_array_equal(direct, values(sched), err_msg=name)
        assert sched(5).dtype == jnp.float32 and sched(5).shape == ()


def test_schedule_drives_learning_rate_of_an_optimizer():
    sched = S.warmup_cosine_decay(0.0, 0.1, 5, 50, end_value=0.001)
    tx = jopt.chain(jopt.identity(), jopt.scale_by_learning_rate(sched))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for t in range(12):
        updates, state = tx.update(params, state, params)
        lr = jopt.current_hyperparams(state)["learning_rate"]
        np.testing.assert_allclose(lr, sched(t), rtol=1e-7)
        np.testing.assert_allclose(updates["w"], -sched(t) * np.ones(3), rtol=1e-6)


# --------------------------------------------------------------------------- traced arguments


def _sgdr_two_cycles(init_value=0.0, warmup_steps=10, decay_steps=80):
    return S.sgdr(
        [
            dict(init_value=init_value, peak_value=1.0, warmup_steps=warmup_steps, decay_steps=decay_steps),
            dict(init_value=0.0, peak_value=0.5, warmup_steps=0, decay_steps=100),
        ]
    )


def _join3(boundaries):
    return S.join([S.linear(0.0, 1.0, 20), S.cosine_decay(1.0, 100), 0.05], boundaries)


# (id, factory, base kwargs, {argument: values to vmap over})
# fmt: off
VMAP_CASES = [
    ("constant", S.constant, dict(value=0.5), {"value": [0.1, 0.5, 2.0]}),
    ("linear", S.linear, dict(init_value=1.0, end_value=0.1, transition_steps=100, transition_begin=10),
     {"init_value": [0.0, 1.0, 3.0], "end_value": [0.0, 0.5, 2.0], "transition_steps": [0, 50, 200],
      "transition_begin": [0, 20, 400]}),
    ("polynomial", S.polynomial,
     dict(init_value=1.0, end_value=0.1, power=2.0, transition_steps=100, transition_begin=10),
     {"power": [0.5, 1.0, 3.0], "transition_steps": [0, 60, 150], "transition_begin": [0, 5, 50]}),
    ("exponential_decay", S.exponential_decay,
     dict(init_value=1.0, decay_rate=0.5, transition_steps=30, transition_begin=5, end_value=0.05),
     {"init_value": [0.5, 1.0, 2.0], "decay_rate": [0.1, 0.5, 0.99], "transition_steps": [1, 10, 100],
      "transition_begin": [0, 7, 100], "end_value": [0.0, 0.05, 0.3]}),
    ("exponential_decay-staircase", lambda **kw: S.exponential_decay(staircase=True, **kw),
     dict(init_value=1.0, decay_rate=0.5, transition_steps=30),
     {"decay_rate": [0.1, 0.5, 0.9], "transition_steps": [1, 7, 100]}),
    ("step_decay", S.step_decay, dict(init_value=1.0, drop=0.5, every=30),
     {"init_value": [0.1, 1.0], "drop": [0.1, 0.5, 0.9], "every": [1, 10, 100]}),
    ("inverse_time_decay", S.inverse_time_decay, dict(init_value=1.0, decay_rate=0.5, decay_steps=10),
     {"init_value": [0.1, 1.0], "decay_rate": [0.0, 0.5, 3.0], "decay_steps": [1, 10, 100]}),
    ("piecewise_constant", S.piecewise_constant,
     dict(init_value=1.0, boundaries=[30, 100, 150], scales=[0.5, 0.1, 2.0]),
     {"init_value": [0.1, 1.0], "boundaries": [[30, 100, 150], [0, 10, 20], [100, 200, 290]],
      "scales": [[0.5, 0.1, 2.0], [1.0, 1.0, 1.0], [0.0, 3.0, 0.5]]}),
    ("piecewise_constant_values", S.piecewise_constant_values,
     dict(boundaries=[30, 100], values=[1.0, 0.3, 0.05]),
     {"boundaries": [[30, 100], [0, 1], [150, 299]], "values": [[1.0, 0.3, 0.05], [0.0, 2.0, -1.0]]}),
    ("join", _join3, dict(boundaries=[20, 120]), {"boundaries": [[20, 120], [0, 50], [30, 30]]}),
    ("cosine_decay", S.cosine_decay, dict(init_value=1.0, decay_steps=100, alpha=0.1, exponent=1.0),
     {"init_value": [0.5, 2.0], "decay_steps": [1, 100, 250], "alpha": [0.0, 0.1, 1.0],
      "exponent": [0.5, 1.0, 3.0]}),
    ("warmup_cosine_decay", S.warmup_cosine_decay,
     dict(init_value=0.0, peak_value=1.0, warmup_steps=20, decay_steps=200, end_value=0.01, exponent=1.0),
     {"init_value": [0.0, 0.5, 2.0], "peak_value": [0.0, 1.0, 3.0], "warmup_steps": [0, 10, 100],
      "decay_steps": [100, 150, 300], "end_value": [0.0, 0.01, 0.5], "exponent": [0.5, 1.0, 2.0]}),
    ("warmup_linear_decay", S.warmup_linear_decay,
     dict(init_value=0.0, peak_value=1.0, warmup_steps=20, decay_steps=200, end_value=0.01),
     {"warmup_steps": [0, 10, 200], "decay_steps": [50, 200, 300], "peak_value": [0.1, 1.0]}),
    ("warmup_stable_decay", S.warmup_stable_decay,
     dict(peak_value=1.0, warmup_steps=20, stable_steps=100, decay_steps=80, init_value=0.0, end_value=0.1),
     {"peak_value": [0.5, 2.0], "warmup_steps": [0, 20, 50], "stable_steps": [0, 100, 300],
      "decay_steps": [0, 30, 150], "init_value": [0.0, 0.3], "end_value": [0.0, 0.1]}),
    ("one_cycle", S.one_cycle,
     dict(transition_steps=200, peak_value=1.0, pct_start=0.25, div_factor=25.0, final_div_factor=1e4),
     {"transition_steps": [10, 200, 500], "peak_value": [0.1, 1.0], "pct_start": [0.0, 0.25, 1.0],
      "div_factor": [1.0, 25.0], "final_div_factor": [1.0, 1e4]}),
    ("cosine_with_warm_restarts", S.cosine_with_warm_restarts,
     dict(init_value=1.0, first_cycle_steps=10, cycle_mult=2.0, alpha=0.0),
     {"init_value": [0.5, 1.0], "first_cycle_steps": [1, 10, 33], "cycle_mult": [1.0, 1.5, 2.0, 3.0],
      "alpha": [0.0, 0.2]}),
    ("sgdr", _sgdr_two_cycles, dict(init_value=0.0, warmup_steps=10, decay_steps=80),
     {"init_value": [0.0, 0.5], "warmup_steps": [0, 10, 40], "decay_steps": [40, 80, 200]}),
]
# fmt: on


@pytest.mark.parametrize(
    "factory, kwargs, arg, sweep",
    [
        pytest.param(f, kw, arg, vals, id=f"{name}-{arg}")
        for name, f, kw, sweeps in VMAP_CASES
        for arg, vals in sweeps.items()
    ],
)
def test_vmap_over_argument_equals_python_loop(factory, kwargs, arg, sweep):
    """Every numeric argument may be traced: vmapping over it equals a loop over concrete values."""

    def run(v):
        return jax.vmap(factory(**{**kwargs, arg: v}))(_STEPS)

    batched = np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(sweep)))
    for i, v in enumerate(sweep):  # each concrete value compiled as a constant (jit keeps CI fast)
        loop = jax.jit(lambda v=v: jax.vmap(factory(**{**kwargs, arg: v}))(_STEPS))()
        np.testing.assert_allclose(batched[i], loop, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "arg, sweep, make_ours, make_optax",
    [
        pytest.param(
            "warmup_steps",
            [0, 10, 100],
            lambda w: S.warmup_cosine_decay(0.0, 1.0, w, 200, end_value=0.01),
            lambda w: optax.warmup_cosine_decay_schedule(0.0, 1.0, w, 200, end_value=0.01),
            id="warmup_cosine_decay",
        ),
        pytest.param(
            "decay_rate",
            [0.1, 0.5, 0.99],
            lambda r: S.exponential_decay(1.0, 10, r, end_value=0.01),
            lambda r: optax.exponential_decay(1.0, 10, r, end_value=0.01),
            id="exponential_decay",
        ),
        pytest.param(
            "scales",
            [[0.5, 0.1], [1.0, 2.0], [0.0, 1.0]],
            lambda s: S.piecewise_constant(1.0, [50, 150], s),
            lambda s: optax.piecewise_constant_schedule(1.0, {50: s[0], 150: s[1]}),
            id="piecewise_constant",
        ),
    ],
)
def test_optax_fails_with_traced_arguments_but_jopt_does_not(arg, sweep, make_ours, make_optax):
    sweep_arr = jnp.asarray(sweep)
    with pytest.raises(TypeError):  # jax's ConcretizationTypeError family
        jax.vmap(lambda v: jax.vmap(make_optax(v))(_STEPS))(sweep_arr)
    batched = np.asarray(jax.vmap(lambda v: jax.vmap(make_ours(v))(_STEPS))(sweep_arr))
    for i, v in enumerate(sweep):
        np.testing.assert_allclose(batched[i], values(make_ours(v)), rtol=1e-6, atol=1e-7, err_msg=arg)
        np.testing.assert_allclose(batched[i], values(make_optax(v)), rtol=1e-5, atol=1e-6, err_msg=arg)


def test_vmap_over_traced_warmup_in_doc_example():
    warmups = jnp.array([0, 10, 50])
    got = jax.vmap(lambda w: S.warmup_cosine_decay(0.0, 1.0, w, 100)(jnp.int32(30)))(warmups)
    expected = [float(S.warmup_cosine_decay(0.0, 1.0, w, 100)(30)) for w in (0, 10, 50)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got[2], 30 / 50, rtol=1e-6)


def test_jit_taking_schedule_arguments_compiles_once():
    traces = []

    @jax.jit
    def lr_curve(warmup, total, rate, boundaries, mult):
        traces.append(1)
        scheds = [
            S.warmup_cosine_decay(0.0, 1.0, warmup, total),
            S.exponential_decay(1.0, total, rate),
            S.piecewise_constant_values(boundaries, [1.0, 0.5, 0.1]),
            S.cosine_with_warm_restarts(1.0, warmup + 1, mult),
            S.one_cycle(total, 1.0, pct_start=rate),
        ]
        return jnp.stack([jax.vmap(s)(_STEPS) for s in scheds])

    args = [(10, 100, 0.5, [20, 40], 1.0), (0, 250, 0.9, [0, 299], 2.0), (50, 60, 0.1, [5, 6], 1.5)]
    for w, total, rate, b, mult in args:
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        got = lr_curve(f32(w), f32(total), f32(rate), f32(b), f32(mult))
        # (traced step counts: XLA turns the division by T - W into a multiplication by its reciprocal)
        expected = values(S.warmup_cosine_decay(0.0, 1.0, w, total))
        np.testing.assert_allclose(got[0], expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got[3], values(S.cosine_with_warm_restarts(1.0, w + 1, mult)), rtol=1e-6)
    assert len(traces) == 1


# --------------------------------------------------------------------------- properties (hypothesis)

PROPS = settings()  # examples and deadline come from the profile in conftest.py
_value = st.floats(-2.0, 2.0, width=32, allow_subnormal=False)
_positive = st.floats(0.015625, 2.0, width=32, allow_subnormal=False)
_steps = st.integers(0, 120)


def _assert_monotone(v, increasing, msg=""):
    d = np.diff(v.astype(np.float64))
    tol = 1e-6 * max(1.0, float(np.max(np.abs(v))))
    assert (d >= -tol).all() if increasing else (d <= tol).all(), msg


def _assert_within(v, *bounds, tol=0.0):
    assert v.min() >= min(bounds) - tol and v.max() <= max(bounds) + tol, (v.min(), v.max(), bounds)


def _ulps(*magnitudes, n=4):
    """``n`` float32 roundings of numbers as large as ``magnitudes``: the slack of optax's arithmetic.

    optax computes e.g. ``(init - end) * frac + end``, which is ``init`` at ``frac = 1`` only up to
    rounding; jopt computes the same bits (tests/test_schedules_optax.py), so endpoint checks of
    the schedules that share optax's arithmetic allow these few roundings.
    """
    return n * float(np.finfo(np.float32).eps) * max(abs(float(m)) for m in magnitudes)


@jax.jit
def _linear_curve(init, end, power, transition, begin):
    return jax.vmap(S.polynomial(init, end, power, transition, begin))(_STEPS)


@PROPS
@given(_value, _value, st.sampled_from([1.0, 0.3, 2.0, 4.0]), st.integers(1, 150), _steps)
def test_property_polynomial(init, end, power, transition, begin):
    v = np.asarray(_linear_curve(F32(init), F32(end), F32(power), F32(transition), F32(begin)))
    assert _linear_curve._cache_size() == 1  # every example reuses one compile
    tol = _ulps(init, end)
    np.testing.assert_allclose(v[: begin + 1], F32(init), rtol=0, atol=tol)
    assert (v[begin + transition :] == F32(end)).all()
    _assert_within(v, F32(init), F32(end), tol=tol)
    _assert_monotone(v, increasing=end >= init)
    if power == 1.0:
        linear = values(S.linear(init, end, transition, begin))
        np.testing.assert_allclose(v, linear, rtol=1e-6, atol=1e-6)


@jax.jit
def _exp_curve(init, rate, transition, begin, end):
    return (
        jax.vmap(S.exponential_decay(init, transition, rate, begin))(_STEPS),
        jax.vmap(S.exponential_decay(init, transition, rate, begin, staircase=True, end_value=end))(_STEPS),
    )


@PROPS
@given(
    _positive,
    st.floats(0.0625, 1.0, exclude_max=True, width=32, allow_subnormal=False),
    st.integers(1, 100),
    _steps,
    st.floats(0.0, 0.5, width=32, allow_subnormal=False),
)
def test_property_exponential_decay(init, rate, transition, begin, end):
    smooth, stairs = map(np.asarray, _exp_curve(F32(init), F32(rate), F32(transition), F32(begin), F32(end)))
    assert _exp_curve._cache_size() == 1  # every example reuses one compile
    p = np.maximum(STEPS - begin, 0) / transition
    np.testing.assert_allclose(smooth, init * np.float64(rate) ** p, rtol=2e-5, atol=1e-30)
    expected = np.maximum(init * np.float64(rate) ** np.floor(p), F32(end))
    np.testing.assert_allclose(stairs, expected, rtol=2e-5, atol=1e-30)
    assert (smooth[: begin + 1] == F32(init)).all()
    # the staircase holds its first value for `transition` steps after `begin`, never below end_value
    assert (stairs[: begin + transition] == max(F32(init), F32(end))).all()
    assert stairs.min() >= F32(end)
    for v in (smooth, stairs):
        _assert_monotone(v, increasing=False)


@jax.jit
def _cosine_curve(init, decay_steps, alpha, exponent):
    return jax.vmap(S.cosine_decay(init, decay_steps, alpha, exponent))(_STEPS)


@PROPS
@given(
    _positive,
    st.integers(1, 250),
    st.floats(0.0, 1.0, width=32, allow_subnormal=False),
    st.floats(0.25, 4.0, width=32, allow_subnormal=False),
)
def test_property_cosine_decay(init, decay_steps, alpha, exponent):
    v = np.asarray(_cosine_curve(F32(init), F32(decay_steps), F32(alpha), F32(exponent)))
    assert _cosine_curve._cache_size() == 1  # every example reuses one compile
    final = ftz(F32(alpha) * F32(init))
    tol = _ulps(init)
    np.testing.assert_allclose(v[0], F32(init), rtol=0, atol=tol)
    assert (v[decay_steps:] == final).all()
    _assert_within(v, F32(init), final, tol=tol)
    _assert_monotone(v, increasing=False)


@jax.jit
def _warmup_curves(init, peak, warmup, decay_steps, end, exponent):
    return (
        jax.vmap(S.warmup_cosine_decay(init, peak, warmup, decay_steps, end, exponent))(_STEPS),
        jax.vmap(S.warmup_linear_decay(init, peak, warmup, decay_steps, end))(_STEPS),
    )


@PROPS
@given(
    _value,
    _value,
    _value,
    st.integers(0, 100),
    st.integers(0, 180),
    st.floats(0.25, 3.0, width=32, allow_subnormal=False),
)
def test_property_warmup_then_decay(init, peak, end, warmup, extra, exponent):
    decay_steps = max(warmup + extra, 1)
    curves = _warmup_curves(F32(init), F32(peak), F32(warmup), F32(decay_steps), F32(end), F32(exponent))
    assert _warmup_curves._cache_size() == 1  # every example reuses one compile
    # warmup_cosine_decay has optax's arithmetic (ends up to rounding; a zero peak gives 0 after the
    # warmup whatever end_value is, as optax); warmup_linear_decay is exact at its ends.
    cosine_end = F32(end) if peak != 0.0 else F32(0.0)
    for v, tol, final in ((curves[0], _ulps(init, peak, end), cosine_end), (curves[1], 0.0, F32(end))):
        v = np.asarray(v)
        if warmup > 0:
            np.testing.assert_allclose(v[0], F32(init), rtol=0, atol=tol)
            _assert_monotone(v[: warmup + (warmup < decay_steps)], increasing=peak >= init)
        if warmup < decay_steps:
            np.testing.assert_allclose(v[warmup], F32(peak), rtol=0, atol=tol)
            _assert_monotone(v[warmup:], increasing=final >= peak)
        np.testing.assert_allclose(v[decay_steps:], final, rtol=0, atol=tol)
        _assert_within(v, F32(init), F32(peak), final, tol=tol)
    if warmup < decay_steps:
        ref = optax.warmup_cosine_decay_schedule(init, peak, warmup, decay_steps, end, exponent)
        np.testing.assert_allclose(np.asarray(curves[0]), values(ref), rtol=1e-4, atol=1e-5)


@jax.jit
def _wsd_curves(peak, warmup, stable, decay_steps, init, end):
    return [
        jax.vmap(S.warmup_stable_decay(peak, warmup, stable, decay_steps, init, end, decay=d))(_STEPS)
        for d in ("linear", "cosine", "sqrt")
    ]


@PROPS
@given(_positive, st.integers(0, 60), st.integers(0, 100), st.integers(0, 120), _value, _value)
def test_property_warmup_stable_decay(peak, warmup, stable, decay_steps, init, end):
    curves = _wsd_curves(F32(peak), F32(warmup), F32(stable), F32(decay_steps), F32(init), F32(end))
    assert _wsd_curves._cache_size() == 1  # every example reuses one compile
    for d, v in zip(("linear", "cosine", "sqrt"), map(np.asarray, curves), strict=True):
        if warmup > 0:
            assert v[0] == F32(init)
            # (with no stable and no decay steps, step `warmup` is already the end value)
            _assert_monotone(v[: warmup + (stable + decay_steps > 0)], increasing=peak >= init)
        assert (v[warmup : warmup + stable + 1] == F32(peak)).all() or decay_steps == 0
        assert (v[warmup + stable + decay_steps :] == F32(end)).all()
        _assert_monotone(v[warmup:], increasing=end >= peak)
        _assert_within(v, F32(init), F32(peak), F32(end))
        ref = np_wsd(F32(peak), warmup, stable, decay_steps, F32(init), F32(end), d)
        np.testing.assert_allclose(v, ref, rtol=1e-5, atol=1e-5, err_msg=d)


@jax.jit
def _one_cycle_curve(total, peak, pct, div, final_div):
    return jax.vmap(S.one_cycle(total, peak, pct, div, final_div))(_STEPS)


@PROPS
@given(
    st.integers(1, 280),
    _positive,
    st.floats(0.0, 1.0, width=32, allow_subnormal=False),
    st.floats(1.0, 100.0, width=32, allow_subnormal=False),
    st.floats(1.0, 1e4, width=32, allow_subnormal=False),
)
def test_property_one_cycle(total, peak, pct, div, final_div):
    v = np.asarray(_one_cycle_curve(F32(total), F32(peak), F32(pct), F32(div), F32(final_div)))
    assert _one_cycle_curve._cache_size() == 1  # every example reuses one compile
    first = F32(peak) / F32(div)
    b = int(np.floor(F32(pct) * F32(total)))
    if b < total:
        top, last = F32(peak), first / F32(final_div)
    else:  # b == total: as in optax's {b: d, total: 1/(d f)} dict, the second scale replaces the first
        top, last = first, first / (F32(div) * F32(final_div))
    # optax's arithmetic: cumulative products of the scales, and a piece's start computed as
    # end + (start - end): a few float32 roundings of the peak
    tol = _ulps(peak)
    if b > 0:
        np.testing.assert_allclose(v[0], first, rtol=0, atol=tol)
    if 0 < b < total:
        _assert_monotone(v[: b + 1], increasing=True)
    if b < total:
        np.testing.assert_allclose(v[b], top, rtol=0, atol=tol)
    _assert_monotone(v[b if b < total else 0 :], increasing=False)
    assert (v[total:] == v[total]).all()
    np.testing.assert_allclose(v[total], last, rtol=1e-6)
    _assert_within(v, first, top, last, tol=tol)
    if int(float(pct) * total) == b:  # optax's boundary (in double precision) is the same
        ref = optax.cosine_onecycle_schedule(total, peak, pct, div, final_div)
        np.testing.assert_allclose(v, values(ref), rtol=1e-5, atol=1e-6 * peak)


@jax.jit
def _restarts_curve(init, first, mult, alpha):
    return jax.vmap(S.cosine_with_warm_restarts(init, first, mult, alpha))(_STEPS)


@PROPS
@given(
    _positive,
    st.integers(1, 60),
    st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    st.floats(0.0, 1.0, width=32, allow_subnormal=False),
)
def test_property_cosine_with_warm_restarts(init, first, mult, alpha):
    v = np.asarray(_restarts_curve(F32(init), F32(first), F32(mult), F32(alpha)))
    assert _restarts_curve._cache_size() == 1
    starts = restart_starts(first, mult)
    exact = [int(s) for s in starts if s == int(s)]
    assert (v[exact] == F32(init)).all(), exact
    _assert_within(v, F32(init), ftz(F32(alpha) * F32(init)))
    bounds = [math.ceil(s) for s in starts] + [len(v)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        _assert_monotone(v[a:b], increasing=False)
    np.testing.assert_allclose(v, np_warm_restarts(F32(init), first, mult, F32(alpha)), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- validation

_lin = S.linear(0.0, 1.0, 10)

BAD = [
    (lambda: S.constant(float("nan")), r"value"),
    (lambda: S.linear(1.0, 0.0, -1), r"transition_steps must be in \[0, inf"),
    (lambda: S.linear(1.0, 0.0, 10, transition_begin=-5), r"transition_begin must be in \[0, inf"),
    (lambda: S.polynomial(1.0, 0.0, 0.0, 10), r"power must be in \(0, inf"),
    (lambda: S.exponential_decay(1.0, 0, 0.5), r"transition_steps must be in \(0, inf"),
    (lambda: S.exponential_decay(1.0, 10, -0.5), r"decay_rate must be in \(0, inf"),
    (lambda: S.exponential_decay(1.0, 10, 0.5, transition_begin=-1), r"transition_begin"),
    (lambda: S.step_decay(1.0, 0.5, 0), r"every must be in \(0, inf"),
    (lambda: S.step_decay(1.0, 0.0, 10), r"drop must be in \(0, inf"),
    (lambda: S.inverse_time_decay(1.0, -1.0), r"decay_rate must be in \[0, inf"),
    (lambda: S.inverse_time_decay(1.0, 1.0, 0), r"decay_steps must be in \(0, inf"),
    (lambda: S.piecewise_constant(1.0, [10, 20], [0.5]), r"len\(scales\) must equal len\(boundaries\) = 2"),
    (lambda: S.piecewise_constant(1.0, [20, 10], [0.5, 0.5]), r"boundaries must be strictly increasing"),
    (lambda: S.piecewise_constant(1.0, [10, 10], [0.5, 0.5]), r"boundaries must be strictly increasing"),
    (lambda: S.piecewise_constant(1.0, [-10, 10], [0.5, 0.5]), r"boundaries must be in \[0, inf"),
    (lambda: S.piecewise_constant(1.0, [10, 20], [0.5, -0.5]), r"scales must be in \[0, inf"),
    (
        lambda: S.piecewise_constant_values([10, 20], [1.0, 0.5]),
        r"len\(values\) must equal len\(boundaries\) \+ 1",
    ),
    (lambda: S.piecewise_constant_values(jnp.array([20, 10]), [1.0, 0.5, 0.1]), r"strictly increasing"),
    (lambda: S.join([_lin, _lin], [10, 20]), r"len\(schedules\) must equal len\(boundaries\) \+ 1"),
    (lambda: S.join([_lin, _lin, _lin], [20, 10]), r"boundaries must be non-decreasing"),
    (lambda: S.cosine_decay(1.0, 0), r"decay_steps must be in \(0, inf"),
    (lambda: S.cosine_decay(1.0, 10, alpha=1.5), r"alpha must be in \[0, 1\]"),
    (lambda: S.cosine_decay(1.0, 10, exponent=0.0), r"exponent must be in \(0, inf"),
    (lambda: S.warmup_cosine_decay(0.0, 1.0, 200, 100), r"warmup_steps must be <= decay_steps"),
    (lambda: S.warmup_cosine_decay(0.0, 1.0, -1, 100), r"warmup_steps must be in \[0, inf"),
    (lambda: S.warmup_cosine_decay(0.0, 1.0, 0, 0), r"decay_steps must be in \(0, inf"),
    (lambda: S.warmup_linear_decay(0.0, 1.0, 20, 10), r"warmup_steps must be <= decay_steps"),
    (lambda: S.warmup_stable_decay(1.0, 10, 10, 10, decay="exp"), r"decay must be one of"),
    (lambda: S.warmup_stable_decay(1.0, 10, -1, 10), r"stable_steps must be in \[0, inf"),
    (lambda: S.one_cycle(0, 1.0), r"transition_steps must be in \(0, inf"),
    (lambda: S.one_cycle(100, 1.0, pct_start=1.5), r"pct_start must be in \[0, 1\]"),
    (lambda: S.one_cycle(100, 1.0, div_factor=0.0), r"div_factor must be in \(0, inf"),
    (lambda: S.cosine_with_warm_restarts(1.0, 0), r"first_cycle_steps must be in \(0, inf"),
    (lambda: S.cosine_with_warm_restarts(1.0, 10, cycle_mult=0.5), r"cycle_mult must be in \[1, inf"),
    (lambda: S.cosine_with_warm_restarts(1.0, 10, alpha=-0.1), r"alpha must be in \[0, 1\]"),
    (lambda: S.sgdr([]), r"at least one cycle"),
    (lambda: S.sgdr([dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=0)]), r"decay_steps"),
]


@pytest.mark.parametrize("make, match", [pytest.param(m, r, id=r[:40]) for m, r in BAD])
def test_bad_concrete_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_error_names_the_schedule():
    with pytest.raises(ValueError, match=r"^warmup_cosine_decay_schedule: warmup_steps"):
        S.warmup_cosine_decay(0.0, 1.0, -1, 100)


def test_traced_arguments_are_not_validated_and_stay_finite():
    """Out-of-range traced values are not checked; the schedules still return finite values."""

    def curves(steps_arg):
        return jnp.stack(
            [
                jax.vmap(S.linear(1.0, 0.0, steps_arg))(_STEPS),
                jax.vmap(S.warmup_cosine_decay(0.0, 1.0, steps_arg, 0.5 * steps_arg))(_STEPS),
                jax.vmap(S.warmup_stable_decay(1.0, steps_arg, steps_arg, steps_arg))(_STEPS),
            ]
        )

    out = np.asarray(jax.vmap(curves)(jnp.array([0.0, -5.0, 10.0])))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0, 0], 1.0)  # linear with 0 transition steps holds init_value


def test_boundaries_must_be_one_dimensional():
    with pytest.raises(ValueError, match="1-D"):
        S.piecewise_constant_values(jnp.array(3), [1.0, 2.0])
