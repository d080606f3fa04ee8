"""optax's schedules in jopt: names and signatures, optax's float32 bits, traced arguments, big counts.

For Python-number arguments every optax schedule name in jopt gives optax 0.2.8's float32 values
bit for bit (``np.testing.assert_array_equal``): eagerly and jitted, on arrays of steps, on
Python-int steps and on int32 steps up to 2**31 - 1. Every numeric argument may also be traced:
vmapping over it equals a loop over concrete values. Steps and step counts beyond int32 work.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt import schedules as S

OPTAX_NAMES = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]
# jopt's own names for the same functions
ALIASES = {
    "constant": "constant_schedule",
    "linear": "linear_schedule",
    "polynomial": "polynomial_schedule",
    "cosine_decay": "cosine_decay_schedule",
    "warmup_cosine_decay": "warmup_cosine_decay_schedule",
    "one_cycle": "cosine_onecycle_schedule",
    "join": "join_schedules",
    "sgdr": "sgdr_schedule",
}
# optax evaluates these one step at a time (a dot over the pieces): vmap optax over the steps
SCALAR_STEP_IN_OPTAX = {
    "piecewise_interpolate_schedule",
    "cosine_onecycle_schedule",
    "linear_onecycle_schedule",
}

# one int32 array of steps for every test (eager primitives compile once per shape): 0..399 and
# large counts up to 2**31 - 1
STEPS = jnp.concatenate(
    [jnp.arange(0, 400), jnp.array([2**24 - 1, 2**24 + 1, 123_456_789, 10**9, 2**31 - 1], jnp.int32)]
)
PY_STEPS = [7, 2**24 + 1, 2**31 - 1]
HUGE_STEPS = [2**31, 10**12]  # beyond int32


def test_optax_names_with_optax_signatures_at_both_levels():
    for name in OPTAX_NAMES:
        ours, theirs = getattr(S, name), getattr(optax, name)
        assert getattr(jopt, name) is ours, name
        got = [(p.name, p.kind, p.default) for p in inspect.signature(ours).parameters.values()]
        want = [(p.name, p.kind, p.default) for p in inspect.signature(theirs).parameters.values()]
        assert got == want, name
        assert ours.__doc__ and ".. math::" in ours.__doc__ and ">>> " in ours.__doc__, name


def test_jopt_names_are_the_same_functions():
    for alias, name in ALIASES.items():
        assert getattr(S, alias) is getattr(S, name), alias


# --------------------------------------------------------------------------- float32 bits

_SGDR = [
    dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=80, end_value=0.01),
    dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=100),
    dict(init_value=0.0, peak_value=0.25, warmup_steps=20, decay_steps=150, exponent=2.0),
]

# (name, Python-number arguments); a "schedules" argument is built from the same library
# fmt: off
CASES = [
    ("constant_schedule", dict(value=0.3)),
    ("constant_schedule", dict(value=7)),
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.01, power=2, transition_steps=120)),
    ("polynomial_schedule", dict(init_value=0.5, end_value=2.0, power=0.5, transition_steps=200,
                                 transition_begin=10)),
    ("polynomial_schedule", dict(init_value=0.7, end_value=0.1, power=1.5, transition_steps=0)),
    ("linear_schedule", dict(init_value=0.1, end_value=0.3, transition_steps=100)),
    ("linear_schedule", dict(init_value=1.0, end_value=0.1, transition_steps=50, transition_begin=20)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=10, decay_rate=0.9)),
    ("exponential_decay", dict(init_value=2.0, transition_steps=30, decay_rate=0.5, transition_begin=15,
                               staircase=True)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=20, decay_rate=0.5, end_value=0.1)),
    ("exponential_decay", dict(init_value=0.1, transition_steps=25, decay_rate=1.5, end_value=1.0)),
    ("exponential_decay", dict(init_value=0.3, transition_steps=7, decay_rate=0.97, staircase=True,
                               end_value=0.01)),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=200)),
    ("cosine_decay_schedule", dict(init_value=2.0, decay_steps=150, alpha=0.1, exponent=2.0)),
    ("cosine_decay_schedule", dict(init_value=0.3, decay_steps=333, alpha=0.07, exponent=1.5)),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=25, decay_steps=200,
                                          end_value=0.05)),
    ("warmup_cosine_decay_schedule", dict(init_value=0.1, peak_value=0.8, warmup_steps=40, decay_steps=250,
                                          exponent=1.5)),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=3e-3, warmup_steps=0, decay_steps=300,
                                          end_value=3e-5)),
    ("warmup_cosine_decay_schedule", dict(init_value=0.2, peak_value=0, end_value=-3.0, warmup_steps=50,
                                          decay_steps=100, exponent=2)),
    ("warmup_constant_schedule", dict(init_value=0.01, peak_value=0.7, warmup_steps=33)),
    ("warmup_exponential_decay_schedule", dict(init_value=0.0, peak_value=0.9, warmup_steps=20,
                                               transition_steps=15, decay_rate=0.8, transition_begin=5,
                                               end_value=0.05)),
    ("warmup_exponential_decay_schedule", dict(init_value=0.1, peak_value=1.1, warmup_steps=10,
                                               transition_steps=30, decay_rate=0.7, staircase=True)),
    ("piecewise_constant_schedule", dict(init_value=1.0,
                                         boundaries_and_scales={30: 0.5, 100: 0.1, 150: 2.0})),
    ("piecewise_constant_schedule", dict(init_value=0.3, boundaries_and_scales={200: 0.5, 50: 0.1})),
    ("piecewise_constant_schedule", dict(init_value=0.3)),
    ("piecewise_interpolate_schedule", dict(interpolate_type="linear", init_value=200.0,
                                            boundaries_and_scales={50: 1.5, 100: 0.25, 333: 0.1})),
    ("piecewise_interpolate_schedule", dict(interpolate_type="cosine", init_value=0.4,
                                            boundaries_and_scales={50: 1.2, 30: 0.6, 70: 1.0, 310: 0.01})),
    ("piecewise_interpolate_schedule", dict(interpolate_type="linear", init_value=13.0,
                                            boundaries_and_scales={0: 2.0, 5: 3.0})),
    ("piecewise_interpolate_schedule", dict(interpolate_type="cosine", init_value=13.0,
                                            boundaries_and_scales={})),
    ("sgdr_schedule", dict(cosine_kwargs=_SGDR)),
    ("cosine_onecycle_schedule", dict(transition_steps=200, peak_value=1.0, pct_start=0.25, div_factor=10.0,
                                      final_div_factor=100.0)),
    ("cosine_onecycle_schedule", dict(transition_steps=317, peak_value=0.3)),
    ("cosine_onecycle_schedule", dict(transition_steps=100, peak_value=0.3, pct_start=1.0)),  # merged keys
    ("cosine_onecycle_schedule", dict(transition_steps=100, peak_value=0.3, pct_start=0.0)),
    ("linear_onecycle_schedule", dict(transition_steps=300, peak_value=0.7)),
    ("linear_onecycle_schedule", dict(transition_steps=10, peak_value=1000, pct_start=0.3, pct_final=0.7,
                                      div_factor=10.0, final_div_factor=100.0)),
    ("linear_onecycle_schedule", dict(transition_steps=100, peak_value=0.5, pct_start=0.4, pct_final=0.4)),
    ("linear_onecycle_schedule", dict(transition_steps=100, peak_value=0.5, pct_start=0.4, pct_final=1.0)),
    ("join_schedules", dict(boundaries=[20, 120])),
]
# fmt: on


def build(lib, name, kwargs):
    """``lib.<name>(**kwargs)`` for lib = jopt.schedules or optax."""
    if name == "join_schedules":
        members = [
            lib.linear_schedule(0.0, 1.0, 20),
            lib.cosine_decay_schedule(1.0, 100),
            lib.constant_schedule(0.05),
        ]
        kwargs = dict(kwargs, schedules=members)
    return getattr(lib, name)(**kwargs)


def optax_on(sched, name, steps):
    """optax's schedule on an array of steps, as float32."""
    out = jax.vmap(sched)(steps) if name in SCALAR_STEP_IN_OPTAX else sched(steps)
    return jnp.broadcast_to(out, steps.shape).astype(jnp.float32)


def _case_id(case):
    name, kwargs = case
    return name + "-" + "-".join(f"{v}" for k, v in kwargs.items() if k not in ("cosine_kwargs",))[:60]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[_case_id(c) for c in CASES])
def test_float32_bits_equal_optax_eagerly(name, kwargs):
    ours, theirs = build(S, name, kwargs), build(optax, name, kwargs)
    np.testing.assert_array_equal(ours(STEPS), optax_on(theirs, name, STEPS))
    for count in PY_STEPS:  # Python ints: optax's Python arithmetic on the step where it has some
        np.testing.assert_array_equal(ours(count), np.float32(theirs(count)), err_msg=str(count))
    for count in HUGE_STEPS:  # optax needs a float step there (an int would overflow int32)
        np.testing.assert_array_equal(ours(count), np.float32(theirs(float(count))), err_msg=str(count))
    assert ours(STEPS).dtype == jnp.float32 and ours(3).shape == ()


def test_float32_bits_equal_optax_jitted():
    """All cases in one compile per library (XLA rewrites divisions the same way for both)."""
    ours = [build(S, name, kwargs) for name, kwargs in CASES]
    theirs = [build(optax, name, kwargs) for name, kwargs in CASES]
    names = [name for name, _ in CASES]

    @jax.jit
    def jopt_all(steps):  # on the array of steps, and vmapped over it
        return jnp.stack([s(steps) for s in ours]), jnp.stack([jax.vmap(s)(steps) for s in ours])

    @jax.jit
    def optax_all(steps):
        return jnp.stack([optax_on(s, n, steps) for s, n in zip(theirs, names, strict=True)])

    got, got_vmapped = map(np.asarray, jopt_all(STEPS))
    want = np.asarray(optax_all(STEPS))
    for i, case in enumerate(CASES):
        np.testing.assert_array_equal(got[i], want[i], err_msg=_case_id(case))
        np.testing.assert_array_equal(got_vmapped[i], want[i], err_msg=_case_id(case))


# --------------------------------------------------------------------------- beyond int32


def test_cosine_decay_with_counts_beyond_int32():
    """Regression: decay_steps=int(1e10) overflowed int32; optax gives 975.528... at step 1e9."""
    ours = S.cosine_decay(1000.0, int(1e10))
    theirs = optax.cosine_decay_schedule(1000.0, int(1e10))
    np.testing.assert_allclose(ours(int(1e9)), 975.52826, rtol=1e-7)
    for count in (int(1e9), 3 * 10**9, int(1e10), 3 * 10**10):
        np.testing.assert_array_equal(ours(count), np.float32(theirs(count)), err_msg=str(count))
    np.testing.assert_array_equal(jax.jit(ours)(int(1e9)), np.float32(theirs(int(1e9))))
    np.testing.assert_array_equal(ours(jnp.int32(10**9)), np.float32(theirs(jnp.int32(10**9))))
    counts = np.array([10**9, 5 * 10**9, 2 * 10**10], np.int64)  # an int64 NumPy array of steps
    np.testing.assert_array_equal(ours(counts), [np.float32(theirs(int(c))) for c in counts])
    # vmapped over a traced decay_steps of 1e10 (float32 holds it exactly)
    traced = jax.vmap(lambda d: S.cosine_decay(1000.0, d)(int(1e9)))(jnp.array([1e10, 2e10]))
    np.testing.assert_allclose(traced, [975.52826, 993.8442], rtol=1e-6)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda lib: lib.linear_schedule(1.0, 0.0, int(1e10)), lambda t: 1 - min(t / 1e10, 1)),
        (
            lambda lib: lib.polynomial_schedule(1.0, 0.0, 2, int(1e10), int(3e9)),
            lambda t: (1 - min(max(t - 3e9, 0) / 1e10, 1)) ** 2,
        ),
        (lambda lib: lib.exponential_decay(1.0, int(1e10), 0.5), lambda t: 0.5 ** (t / 1e10)),
        (
            lambda lib: lib.warmup_cosine_decay_schedule(0.0, 1.0, int(3e9), int(1e10)),
            lambda t: t / 3e9 if t < 3e9 else 0.5 * (1 + math.cos(math.pi * min(t - 3e9, 7e9) / 7e9)),
        ),
        (
            lambda lib: lib.piecewise_constant_schedule(1.0, {int(3e9): 0.5}),
            lambda t: 1.0 if t < 3e9 else 0.5,
        ),
        (
            lambda lib: lib.piecewise_interpolate_schedule("linear", 1.0, {int(4e9): 0.5}),
            lambda t: 1 - 0.5 * min(t / 4e9, 1),
        ),
        (
            lambda lib: lib.cosine_onecycle_schedule(int(1e10), 1.0, pct_start=0.5, div_factor=2.0),
            lambda t: 0.75 - 0.25 * math.cos(math.pi * t / 5e9) if t < 5e9 else None,
        ),
        (
            lambda lib: lib.join_schedules(
                [lib.constant_schedule(1.0), lib.constant_schedule(2.0)], [int(3e9)]
            ),
            lambda t: 1.0 if t < 3e9 else 2.0,
        ),
    ],
)
def test_step_counts_beyond_int32(make, expected):
    """Step counts and steps beyond int32 work (as floats) and agree with a float64 reference."""
    ours = make(S)
    for t in (0, 10**9, 2 * 10**9, 4 * 10**9, 6 * 10**9, 2 * 10**10):
        want = expected(t)
        if want is not None:
            np.testing.assert_allclose(ours(t), want, rtol=2e-6, atol=1e-6, err_msg=str(t))
    # optax fails here (int32 overflow) except where it computes in float; at a float step it agrees
    try:
        theirs = make(optax)
        theirs(float(10**9))
    except OverflowError:
        return
    for t in (10**9, 4 * 10**9, 2 * 10**10):
        np.testing.assert_array_equal(ours(t), np.float32(theirs(float(t))))


# --------------------------------------------------------------------------- staircase


@pytest.mark.parametrize("transition_steps", [1, 7, 41, 47, 55, 61, 97, 100])
def test_staircase_drops_exactly_at_multiples(transition_steps):
    """jopt's staircase is exact; optax's floor(t / T) is one too small at some multiples of T
    (XLA divides as t * (1 / T); e.g. T = 47, t = 47 on CPU). Everywhere else they are equal."""
    ours = S.exponential_decay(1.0, transition_steps, 0.5, staircase=True)
    theirs = optax.exponential_decay(1.0, transition_steps, 0.5, staircase=True)
    steps = np.arange(0, 400)
    exact = np.float32(0.5) ** (steps // transition_steps).astype(np.float32)
    exact[exact < np.finfo(np.float32).tiny] = 0.0  # XLA flushes subnormals
    for got in (ours(jnp.asarray(steps)), jax.jit(ours)(jnp.asarray(steps))):
        np.testing.assert_array_equal(got, exact)
    differ = np.nonzero(np.asarray(ours(jnp.asarray(steps))) != np.asarray(theirs(jnp.asarray(steps))))[0]
    assert (differ % transition_steps == 0).all(), differ
    traced = jax.jit(jax.vmap(lambda t: S.exponential_decay(1.0, t, 0.5, staircase=True)(jnp.asarray(steps))))
    np.testing.assert_array_equal(traced(jnp.array([transition_steps], jnp.float32))[0], exact)


# --------------------------------------------------------------------------- traced arguments


def _sgdr_with(**changes):
    return [dict(cycle, **changes) if i == 0 else cycle for i, cycle in enumerate(_SGDR)]


# (name, base Python arguments, {argument: values}); dict- and list-valued arguments are pytrees
# whose leaves are all traced together
# fmt: off
VMAP_CASES = [
    ("constant_schedule", dict(value=0.5), {"value": [0.1, 0.5, 2.0]}),
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.1, power=2.0, transition_steps=100,
                                 transition_begin=10),
     {"init_value": [0.0, 3.0], "end_value": [0.0, 2.0], "power": [0.5, 1.0, 3.0],
      "transition_steps": [0, 60, 150], "transition_begin": [0, 5, 500]}),
    ("linear_schedule", dict(init_value=1.0, end_value=0.1, transition_steps=100, transition_begin=10),
     {"init_value": [0.0, 3.0], "end_value": [0.0, 2.0], "transition_steps": [0, 50, 200],
      "transition_begin": [0, 20, 400]}),
    ("exponential_decay", dict(init_value=1.0, transition_steps=30, decay_rate=0.5, transition_begin=5,
                               end_value=0.05),
     {"init_value": [0.5, 2.0], "transition_steps": [1, 10, 100], "decay_rate": [0.1, 0.99, 1.5],
      "transition_begin": [0, 7, 100], "end_value": [0.0, 0.3], "staircase": [False, True]}),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=100, alpha=0.1, exponent=1.0),
     {"init_value": [0.5, 2.0], "decay_steps": [1, 100, 250], "alpha": [0.0, 0.1, 1.0],
      "exponent": [0.5, 1.0, 3.0]}),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=20, decay_steps=200,
                                          end_value=0.01, exponent=1.0),
     {"init_value": [0.0, 2.0], "peak_value": [0.0, 1.0, 3.0], "warmup_steps": [0, 10, 100, 200],
      "decay_steps": [100, 150, 300], "end_value": [0.0, 0.5], "exponent": [0.5, 2.0]}),
    ("warmup_constant_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=20),
     {"init_value": [0.0, 2.0], "peak_value": [0.5, 3.0], "warmup_steps": [0, 10, 100]}),
    ("warmup_exponential_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=20,
                                               transition_steps=30, decay_rate=0.5, transition_begin=10,
                                               end_value=0.01),
     {"init_value": [0.0, 2.0], "peak_value": [0.5, 3.0], "warmup_steps": [0, 10, 100],
      "transition_steps": [1, 30], "decay_rate": [0.1, 0.9], "transition_begin": [0, 50],
      "end_value": [0.0, 0.2], "staircase": [False, True]}),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={30: 0.5, 100: 0.1, 150: 2.0}),
     {"init_value": [0.1, 1.0], "boundaries_and_scales": [{30: 0.5, 100: 0.1, 150: 2.0},
                                                          {30: 1.0, 100: 0.0, 150: 3.0}]}),
    ("piecewise_interpolate_schedule", dict(interpolate_type="linear", init_value=2.0,
                                            boundaries_and_scales={50: 1.5, 100: 0.25}),
     {"init_value": [0.5, 2.0], "boundaries_and_scales": [{50: 1.5, 100: 0.25}, {50: 0.1, 100: 4.0}]}),
    ("piecewise_interpolate_schedule", dict(interpolate_type="cosine", init_value=2.0,
                                            boundaries_and_scales={50: 1.5, 100: 0.25}),
     {"init_value": [0.5, 2.0], "boundaries_and_scales": [{50: 1.5, 100: 0.25}, {50: 0.1, 100: 4.0}]}),
    ("sgdr_schedule", dict(cosine_kwargs=_SGDR),
     {"cosine_kwargs": [_SGDR, _sgdr_with(peak_value=2.0, warmup_steps=0, decay_steps=40),
                        _sgdr_with(init_value=0.5, end_value=0.3, decay_steps=200)]}),
    ("cosine_onecycle_schedule", dict(transition_steps=200, peak_value=1.0, pct_start=0.25, div_factor=25.0,
                                      final_div_factor=1e4),
     {"transition_steps": [10, 200, 500], "peak_value": [0.1, 1.0], "pct_start": [0.0, 0.25, 1.0],
      "div_factor": [1.0, 25.0], "final_div_factor": [1.0, 1e4]}),
    ("linear_onecycle_schedule", dict(transition_steps=200, peak_value=1.0, pct_start=0.3, pct_final=0.85,
                                      div_factor=25.0, final_div_factor=1e4),
     {"transition_steps": [3, 200, 500], "peak_value": [0.1, 1.0], "pct_start": [0.0, 0.3, 0.85],
      "pct_final": [0.3, 0.5, 1.0], "div_factor": [1.0, 25.0], "final_div_factor": [1.0, 1e4]}),
    ("join_schedules", dict(boundaries=[20, 120]), {"boundaries": [[20, 120], [0, 50], [30, 30]]}),
]
# fmt: on


def _as_arrays(value):
    """A concrete argument with every number as a JAX scalar (the traced code path, untraced)."""
    return jax.tree.map(jnp.asarray, value)


@pytest.mark.parametrize(
    "name, kwargs, arg, sweep",
    [
        pytest.param(name, kwargs, arg, vals, id=f"{name}-{arg}")
        for name, kwargs, sweeps in VMAP_CASES
        for arg, vals in sweeps.items()
    ],
)
def test_vmap_over_argument_equals_loop(name, kwargs, arg, sweep):
    def curve(value):
        return build(S, name, {**kwargs, arg: value})(STEPS)

    stacked = jax.tree.map(lambda *leaves: jnp.asarray(leaves), *sweep)
    batched = np.asarray(jax.vmap(curve)(stacked))
    changed = set()
    for i, value in enumerate(sweep):
        # the same arithmetic on concrete arrays: bit for bit
        np.testing.assert_array_equal(batched[i], curve(_as_arrays(value)), err_msg=f"{arg}={value}")
        # Python numbers (arithmetic between arguments in double precision, as optax): within rounding
        python = np.asarray(curve(value))
        np.testing.assert_allclose(batched[i], python, rtol=2e-6, atol=2e-7, err_msg=f"{arg}={value}")
        changed.add(python.tobytes())
        try:
            theirs = build(optax, name, {**kwargs, arg: value})
        except ValueError:  # optax rejects it (e.g. warmup_steps == decay_steps)
            continue
        np.testing.assert_array_equal(python, optax_on(theirs, name, STEPS), err_msg=f"{arg}={value}")
    assert len(changed) == len(sweep), "the sweep must change the schedule"


@pytest.mark.parametrize(
    "make, sweep",
    [
        pytest.param(lambda lib, v: lib.polynomial_schedule(1.0, 0.0, 2, v), [100, 200], id="polynomial"),
        pytest.param(lambda lib, v: lib.exponential_decay(1.0, 10, v), [0.5, 0.9], id="exponential"),
        pytest.param(lambda lib, v: lib.cosine_decay_schedule(1.0, v), [100, 200], id="cosine"),
        pytest.param(
            lambda lib, v: lib.warmup_cosine_decay_schedule(0.0, v, 10, 100), [0.5, 2.0], id="warmup_cos"
        ),
        pytest.param(
            lambda lib, v: lib.piecewise_constant_schedule(1.0, {10: v}), [0.5, 2.0], id="piecewise"
        ),
        pytest.param(
            lambda lib, v: lib.piecewise_interpolate_schedule("cosine", 1.0, {99: v}),
            [0.5, 2.0],
            id="interpolate",
        ),
        pytest.param(lambda lib, v: lib.cosine_onecycle_schedule(v, 1.0), [100, 200], id="cosine_onecycle"),
        pytest.param(
            lambda lib, v: lib.linear_onecycle_schedule(100, 1.0, pct_start=v),
            [0.2, 0.4],
            id="linear_onecycle",
        ),
    ],
)
def test_traced_arguments_where_optax_fails(make, sweep):
    """optax needs these arguments concrete; jopt's schedule of the same name takes them traced."""
    steps = jnp.arange(0, 300)
    with pytest.raises(jax.errors.ConcretizationTypeError):
        jax.vmap(lambda v: jax.vmap(make(optax, v))(steps))(jnp.asarray(sweep))
    batched = np.asarray(jax.jit(jax.vmap(lambda v: make(S, v)(steps)))(jnp.asarray(sweep)))
    for i, v in enumerate(sweep):  # optax with the Python number, jitted (XLA's rewrites on both)
        theirs = np.asarray(jax.jit(jax.vmap(make(optax, v)))(steps))
        np.testing.assert_allclose(batched[i], theirs, rtol=2e-6, atol=2e-7)


# --------------------------------------------------------------------------- validation

_f = S.constant_schedule(1.0)

BAD = [
    (lambda: S.constant_schedule(float("nan")), r"constant_schedule: value"),
    (lambda: S.polynomial_schedule(1.0, 0.0, 0.0, 10), r"polynomial_schedule: power must be in \(0, inf"),
    (lambda: S.polynomial_schedule(1.0, 0.0, 1, -1), r"transition_steps must be in \[0, inf"),
    (lambda: S.linear_schedule(1.0, 0.0, 10, -5), r"linear_schedule: transition_begin must be in \[0, inf"),
    (lambda: S.exponential_decay(1.0, 0, 0.5), r"exponential_decay: transition_steps must be in \(0, inf"),
    (lambda: S.exponential_decay(1.0, 10, 0.0), r"decay_rate must be in \(0, inf"),
    (lambda: S.cosine_decay_schedule(1.0, 0), r"cosine_decay_schedule: decay_steps must be in \(0, inf"),
    (lambda: S.cosine_decay_schedule(1.0, 10, alpha=1.5), r"alpha must be in \[0, 1\]"),
    (lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 200, 100), r"warmup_steps must be <= decay_steps"),
    (
        lambda: S.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, exponent=-1.0),
        r"exponent must be in \(0, inf",
    ),
    (
        lambda: S.warmup_constant_schedule(0.0, 1.0, -1),
        r"warmup_constant_schedule: warmup_steps must be in \[0",
    ),
    (
        lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 10, 0, 0.5),
        r"transition_steps must be in \(0, inf",
    ),
    (lambda: S.warmup_exponential_decay_schedule(0.0, 1.0, 10, 5, -0.5), r"decay_rate must be in \(0, inf"),
    (
        lambda: S.piecewise_constant_schedule(1.0, {10: -0.5}),
        r"boundaries_and_scales \(scale\) must be in \[0",
    ),
    (
        lambda: S.piecewise_constant_schedule(1.0, {-10: 0.5}),
        r"boundaries_and_scales \(boundary\) must be in \[0",
    ),
    (lambda: S.piecewise_interpolate_schedule("linar", 1.0), r"interpolate_type must be one of"),
    (lambda: S.piecewise_interpolate_schedule("linear", 1.0, {5: -3}), r"\(scale\) must be in \[0, inf"),
    (
        lambda: S.cosine_onecycle_schedule(0, 1.0),
        r"cosine_onecycle_schedule: transition_steps must be in \(0",
    ),
    (lambda: S.cosine_onecycle_schedule(100, 1.0, pct_start=1.5), r"pct_start must be in \[0, 1\]"),
    (lambda: S.cosine_onecycle_schedule(100, 1.0, div_factor=0.0), r"div_factor must be in \(0, inf"),
    (
        lambda: S.linear_onecycle_schedule(0, 5.0),
        r"linear_onecycle_schedule: transition_steps must be in \(0",
    ),
    (lambda: S.linear_onecycle_schedule(100, 5.0, pct_final=1.5), r"pct_final must be in \[0, 1\]"),
    (lambda: S.linear_onecycle_schedule(100, 5.0, 0.9, 0.5), r"pct_start must be <= pct_final"),
    (lambda: S.linear_onecycle_schedule(100, 5.0, final_div_factor=-1.0), r"final_div_factor must be in \(0"),
    (lambda: S.join_schedules([_f, _f], [10, 20]), r"len\(schedules\) must equal len\(boundaries\) \+ 1"),
    (lambda: S.join_schedules([_f, _f], [-1]), r"join_schedules: boundaries must be in \[0, inf"),
    (lambda: S.sgdr_schedule([]), r"sgdr_schedule: cosine_kwargs must hold at least one cycle"),
    (
        lambda: S.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=0)]),
        r"decay_steps must be in \(0, inf",
    ),
]


@pytest.mark.parametrize("make, match", [pytest.param(m, r, id=r[:50]) for m, r in BAD])
def test_bad_concrete_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()
