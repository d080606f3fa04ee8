"""L-BFGS, the backtracking and zoom line searches and value_and_grad_from_state against optax 0.2.8.

Trajectories are compared bit for bit (``np.testing.assert_array_equal``) with
Python-number hyperparameters, in float32 and in float64. Each configuration is
one jitted ``lax.scan`` over the steps, so it compiles once per library.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt

STEPS = 30


# --------------------------------------------------------------------------- problems


def _rosenbrock(dtype):
    def fn(p):
        x, y = p["xy"][0], p["xy"][1]
        return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2

    return fn, {"xy": jnp.array([-1.2, 1.0], dtype)}, {}


def _least_squares(dtype):
    """Linear least squares whose data reach ``value_fn`` as extra keyword arguments."""
    rng = np.random.default_rng(0)
    data = {"x": jnp.asarray(rng.normal(size=(12, 4)), dtype), "y": jnp.asarray(rng.normal(size=12), dtype)}

    def fn(p, x, y):
        return 0.5 * jnp.sum((x @ p["w"] + p["b"] - y) ** 2)

    return fn, {"w": jnp.zeros(4, dtype), "b": jnp.zeros((), dtype)}, data


def _mlp(dtype):
    """One tanh hidden layer, three leaves, fixed data."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(16, 3)), dtype)
    y = jnp.asarray(np.sin(rng.normal(size=16)), dtype)
    params = {
        "w1": jnp.asarray(rng.normal(size=(3, 8)) / 2, dtype),
        "b1": jnp.zeros(8, dtype),
        "w2": jnp.asarray(rng.normal(size=8) / 3, dtype),
    }

    def fn(p):
        return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] - y) ** 2)

    return fn, params, {}


PROBLEMS = {"rosenbrock": _rosenbrock, "least_squares": _least_squares, "mlp": _mlp}


def _plain_value_and_grad(fn):
    """For optimizers whose state stores no value: ``jax.value_and_grad`` with the state ignored."""
    return lambda params, state, **data: jax.value_and_grad(fn)(params, **data)


def trajectory(lib, opt, fn, params, data, *, reuse=True, steps=STEPS):
    """Parameters and values along ``steps`` steps of optax's documented full-batch loop.

    ``lib`` is ``jopt`` or ``optax``: the loop is the same code for both
    (``import jopt as optax`` works).
    """
    value_and_grad = lib.value_and_grad_from_state(fn) if reuse else _plain_value_and_grad(fn)

    @jax.jit
    def run(params, data):
        def step(carry, _):
            p, state = carry
            value, grad = value_and_grad(p, state=state, **data)
            updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=fn, **data)
            p = lib.apply_updates(p, updates)
            return (p, state), (p, value)

        return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)[1]

    return run(params, data)


def assert_same_trajectory(make, problem, dtype, *, reuse=True, steps=STEPS):
    """Equal parameters and values at every step; returns jopt's trajectory."""
    fn, params, data = PROBLEMS[problem](dtype)
    ours = trajectory(jopt, make(jopt), fn, params, data, reuse=reuse, steps=steps)
    theirs = trajectory(optax, make(optax), fn, params, data, reuse=reuse, steps=steps)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        assert a.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    values = np.asarray(ours[1])
    assert np.all(np.isfinite(values)) and values[-1] < values[0], "the run must make progress"
    return ours


# --------------------------------------------------------------------------- optax parity

CONFIGS = {
    # name: (factory taking the library, reuse the stored value/grad)
    "lbfgs": (lambda m: m.lbfgs(), True),
    "lbfgs_fixed_step": (lambda m: m.lbfgs(linesearch=None), False),
    "lbfgs_learning_rate": (lambda m: m.lbfgs(learning_rate=0.1, memory_size=4, linesearch=None), False),
    "lbfgs_backtracking": (
        lambda m: m.lbfgs(
            scale_init_precond=False,
            linesearch=m.scale_by_backtracking_linesearch(max_backtracking_steps=20, store_grad=True),
        ),
        True,
    ),
    "lbfgs_zoom_capped": (
        lambda m: m.lbfgs(
            memory_size=3,
            linesearch=m.scale_by_zoom_linesearch(
                max_linesearch_steps=8,
                max_learning_rate=0.5,
                curv_rtol=0.5,
                approx_dec_rtol=None,
                initial_guess_strategy="one",
            ),
        ),
        True,
    ),
    "sgd_backtracking": (
        lambda m: m.chain(
            m.sgd(learning_rate=1.0),
            m.scale_by_backtracking_linesearch(max_backtracking_steps=40, store_grad=True),
        ),
        True,
    ),
    "sgd_backtracking_tolerances": (
        lambda m: m.chain(
            m.sgd(learning_rate=1.0),
            m.scale_by_backtracking_linesearch(
                max_backtracking_steps=40, slope_rtol=0.3, decrease_factor=0.5, atol=1e-3, rtol=1e-3
            ),
        ),
        False,
    ),
    "sgd_zoom_keep": (
        lambda m: m.chain(m.sgd(learning_rate=1.0), m.scale_by_zoom_linesearch(max_linesearch_steps=15)),
        True,
    ),
}

FLOAT32_CASES = [  # plus lbfgs on rosenbrock in test_lbfgs_reaches_rosenbrock_minimum
    ("lbfgs", "mlp"),
    ("lbfgs_fixed_step", "mlp"),
    ("lbfgs_learning_rate", "rosenbrock"),
    ("lbfgs_learning_rate", "least_squares"),
    ("lbfgs_backtracking", "rosenbrock"),
    ("lbfgs_zoom_capped", "rosenbrock"),
    ("sgd_backtracking", "rosenbrock"),
    ("sgd_backtracking", "least_squares"),
    ("sgd_backtracking_tolerances", "mlp"),
    ("sgd_zoom_keep", "least_squares"),
]
FLOAT64_CASES = [
    ("lbfgs", "rosenbrock"),
    ("lbfgs", "least_squares"),
    ("lbfgs_fixed_step", "rosenbrock"),
    ("sgd_backtracking", "mlp"),
]


@pytest.mark.parametrize("config,problem", FLOAT32_CASES)
def test_float32_trajectory_equals_optax(config, problem):
    make, reuse = CONFIGS[config]
    assert_same_trajectory(make, problem, jnp.float32, reuse=reuse)


@pytest.mark.parametrize("config,problem", FLOAT64_CASES)
def test_float64_trajectory_equals_optax(config, problem):
    make, reuse = CONFIGS[config]
    with jax.enable_x64(True):
        assert_same_trajectory(make, problem, jnp.float64, reuse=reuse)


def test_lbfgs_reaches_rosenbrock_minimum():
    ps, values = assert_same_trajectory(CONFIGS["lbfgs"][0], "rosenbrock", jnp.float32, steps=45)
    np.testing.assert_allclose(np.asarray(ps["xy"][-1]), [1.0, 1.0], atol=1e-4)
    assert float(values[-1]) < 1e-8


def test_complex_parameters_match_optax():
    rng = np.random.default_rng(2)
    a = jnp.asarray(rng.normal(size=(6, 3)) + 1j * rng.normal(size=(6, 3)), jnp.complex64)
    b = jnp.asarray(rng.normal(size=6) + 1j * rng.normal(size=6), jnp.complex64)

    def fn(z):
        return jnp.sum(jnp.abs(a @ z - b) ** 2)

    z0 = jnp.asarray([0.3 + 0.1j, -0.2j, 0.5], jnp.complex64)
    make = lambda m: m.chain(m.sgd(0.05), m.scale_by_backtracking_linesearch(20, store_grad=True))  # noqa: E731
    ours = trajectory(jopt, make(jopt), fn, z0, {}, steps=10)
    theirs = trajectory(optax, make(optax), fn, z0, {}, steps=10)
    np.testing.assert_array_equal(ours[0], theirs[0])
    assert ours[0].dtype == jnp.complex64 and ours[1][-1] < ours[1][0]


# --------------------------------------------------------------------------- names and signatures

PUBLIC = [
    "lbfgs",
    "scale_by_lbfgs",
    "scale_by_backtracking_linesearch",
    "scale_by_zoom_linesearch",
    "value_and_grad_from_state",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_signature_matches_optax(name):
    ours = inspect.signature(getattr(jopt, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    assert list(ours) == list(theirs)
    for key, param in theirs.items():
        assert ours[key].kind == param.kind, key
        if key != "linesearch":  # a transformation object: compared below
            assert ours[key].default == param.default, key


def test_state_fields_match_optax():
    # optax's fields at optax's positions (code indexing ``state[0]`` keeps working); jopt's extras last.
    for name in ("ScaleByLBFGSState", "ScaleByBacktrackingLinesearchState", "ScaleByZoomLinesearchState"):
        theirs = getattr(optax, name)._fields
        assert getattr(jopt, name)._fields[: len(theirs)] == theirs, name
    assert jopt.ZoomLinesearchInfo._fields == optax.ZoomLinesearchInfo._fields
    state = jopt.lbfgs().init({"w": jnp.ones(3)})
    assert isinstance(state[2], jopt.ScaleByZoomLinesearchState)
    assert state[2].value == jnp.inf and state[0].weights_memory.shape == (10,)
    assert state[2][0] == 1.0  # learning_rate, as optax's state[0]


# --------------------------------------------------------------------------- traced hyperparameters


def _backtracking_run(slope_rtol, decrease_factor):
    fn, params, data = _least_squares(jnp.float32)
    opt = jopt.chain(
        jopt.sgd(1.0),
        jopt.scale_by_backtracking_linesearch(
            max_backtracking_steps=30, slope_rtol=slope_rtol, decrease_factor=decrease_factor, store_grad=True
        ),
    )
    return trajectory(jopt, opt, fn, params, data, steps=10)[1]


def test_vmap_over_backtracking_hyperparameters():
    slope_rtol = jnp.array([1e-4, 0.3, 0.45])
    decrease_factor = jnp.array([0.8, 0.5, 0.3])
    batched = jax.jit(jax.vmap(_backtracking_run))(slope_rtol, decrease_factor)
    single = jax.jit(_backtracking_run)
    for i in range(3):
        np.testing.assert_allclose(batched[i], single(slope_rtol[i], decrease_factor[i]), rtol=1e-6)
    # Different hyperparameters give different runs (the values really reach the search).
    assert not np.allclose(batched[0], batched[2])
    # The array path agrees with the Python-number path to float32 rounding.
    np.testing.assert_allclose(batched[1], _backtracking_run(0.3, 0.5), rtol=1e-5)


def _lbfgs_run(learning_rate, slope_rtol, curv_rtol):
    fn, params, data = _rosenbrock(jnp.float32)
    linesearch = jopt.scale_by_zoom_linesearch(
        max_linesearch_steps=20, slope_rtol=slope_rtol, curv_rtol=curv_rtol, initial_guess_strategy="one"
    )
    opt = jopt.lbfgs(learning_rate=learning_rate, linesearch=linesearch)
    return trajectory(jopt, opt, fn, params, data, steps=15)[1]


def test_vmap_over_lbfgs_and_zoom_hyperparameters():
    learning_rate = jnp.array([1.0, 0.5, 2.0])
    slope_rtol = jnp.array([1e-4, 1e-3, 1e-2])
    curv_rtol = jnp.array([0.9, 0.5, 0.1])
    batched = jax.jit(jax.vmap(_lbfgs_run))(learning_rate, slope_rtol, curv_rtol)
    single = jax.jit(_lbfgs_run)
    for i in range(3):
        np.testing.assert_allclose(
            batched[i], single(learning_rate[i], slope_rtol[i], curv_rtol[i]), rtol=1e-5
        )
    assert not np.allclose(batched[0], batched[2])


def test_schedule_hyperparameter_counts_steps():
    fn, params, data = _least_squares(jnp.float32)
    tx = jopt.scale_by_backtracking_linesearch(max_backtracking_steps=10, decrease_factor=lambda t: 0.5)
    state = tx.init(params)
    assert int(state.count) == 0
    value, grad = jax.value_and_grad(fn)(params, **data)
    updates = jax.tree.map(lambda g: -g, grad)
    _, state = tx.update(updates, state, params, value=value, grad=grad, value_fn=fn, **data)
    assert int(state.count) == 1
    assert float(jopt.current_hyperparams(state)["decrease_factor"]) == 0.5


# --------------------------------------------------------------------------- validation

BAD = [
    (lambda: jopt.scale_by_lbfgs(memory_size=0), r"memory_size must be in \[1, inf\]"),
    (lambda: jopt.scale_by_lbfgs(memory_size=2.5), "memory_size must be a Python int"),
    (lambda: jopt.scale_by_backtracking_linesearch(-1), r"max_backtracking_steps must be in \[0, inf\]"),
    (lambda: jopt.scale_by_backtracking_linesearch(5, slope_rtol=1.0), r"slope_rtol must be in \[0, 1\)"),
    (lambda: jopt.scale_by_backtracking_linesearch(5, decrease_factor=1.0), r"decrease_factor .* \(0, 1\)"),
    (lambda: jopt.scale_by_backtracking_linesearch(5, increase_factor=0.0), r"increase_factor .* \(0, inf\]"),
    (
        lambda: jopt.scale_by_backtracking_linesearch(5, max_learning_rate=0.0),
        r"max_learning_rate .*\(0, inf",
    ),
    (lambda: jopt.scale_by_backtracking_linesearch(5, atol=-1.0), r"atol must be in \[0, inf\]"),
    (lambda: jopt.scale_by_zoom_linesearch(0), r"max_linesearch_steps must be in \[1, inf\]"),
    (lambda: jopt.scale_by_zoom_linesearch(5, max_learning_rate=-1.0), "max_learning_rate must be in"),
    (lambda: jopt.scale_by_zoom_linesearch(5, increase_factor=-1.0), r"increase_factor .* \(0, inf\]"),
    (lambda: jopt.scale_by_zoom_linesearch(5, curv_rtol=-0.5), r"curv_rtol must be in \[0, inf\]"),
    (lambda: jopt.scale_by_zoom_linesearch(5, approx_dec_rtol=-1.0), "approx_dec_rtol must be in"),
    (lambda: jopt.scale_by_zoom_linesearch(5, initial_guess_strategy="two"), "initial_guess_strategy"),
    (lambda: jopt.lbfgs(learning_rate=-1.0), "learning_rate"),
    (lambda: jopt.lbfgs(memory_size=0), "memory_size"),
]


@pytest.mark.parametrize("build,message", BAD)
def test_bad_values_raise_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_infinite_factors_are_accepted():
    jopt.scale_by_backtracking_linesearch(5, increase_factor=float("inf"))
    jopt.scale_by_zoom_linesearch(5, curv_rtol=float("inf"))


# --------------------------------------------------------------------------- extra arguments


def _one_search(tx, **extra):
    fn, params, data = _least_squares(jnp.float32)
    value, grad = jax.value_and_grad(fn)(params, **data)
    updates = jax.tree.map(lambda g: -g, grad)
    return tx.update(updates, tx.init(params), params, value=value, grad=grad, **extra)


def test_missing_extra_arguments_raise():
    fn, params, data = _least_squares(jnp.float32)
    for tx in (jopt.scale_by_backtracking_linesearch(5), jopt.scale_by_zoom_linesearch(5)):
        with pytest.raises(TypeError, match="value_fn"):
            _one_search(tx, **data)
        with pytest.raises(ValueError, match="needs params"):
            tx.update(params, tx.init(params), value=1.0, grad=params, value_fn=fn, **data)


def test_data_reach_value_fn_through_chain_and_unaccepted_names_raise():
    fn, params, data = _least_squares(jnp.float32)
    tx = jopt.chain(jopt.identity(), jopt.scale_by_backtracking_linesearch(10, store_grad=True))
    assert {"value", "grad", "value_fn"} <= set(tx.extra_args)
    updates, state = _one_search(tx, value_fn=fn, **data)
    assert float(state[1].value) < float(fn(params, **data))
    with pytest.raises(TypeError, match=r"\['unrelated'\] .*value_fn does not accept"):
        _one_search(tx, value_fn=fn, unrelated=3, **data)

    def with_kwargs(p, **kw):  # takes every extra argument
        return fn(p, kw["x"], kw["y"])

    also, _ = _one_search(tx, value_fn=with_kwargs, unrelated=3, **data)
    jax.tree.map(np.testing.assert_array_equal, updates, also)


def test_verbose_zoom_explains_a_failed_search(capfd):
    fn, params, data = _least_squares(jnp.float32)
    value, grad = jax.value_and_grad(fn)(params, **data)
    tx = jopt.scale_by_zoom_linesearch(3, verbose=True)
    _, state = tx.update(grad, tx.init(params), params, value=value, grad=grad, value_fn=fn, **data)  # ascent
    jax.effects_barrier()
    out = capfd.readouterr().out
    assert "not a descent direction" in out and "trial budget" in out
    assert int(state.info.num_linesearch_steps) == 3


def test_lbfgs_passes_data_to_its_line_search():
    fn, params, data = _least_squares(jnp.float32)
    opt = jopt.lbfgs(linesearch=jopt.scale_by_backtracking_linesearch(10))
    assert "x" in opt.extra_args  # accepts any extra argument, as its line search does
    value, grad = jax.value_and_grad(fn)(params, **data)
    updates, state = opt.update(grad, opt.init(params), params, value=value, grad=grad, value_fn=fn, **data)
    assert float(state[2].value) < float(value)


# --------------------------------------------------------------------------- value_and_grad_from_state


def test_value_and_grad_from_state_reuses_the_stored_pair():
    fn, params, data = _rosenbrock(jnp.float32)
    opt = jopt.lbfgs()
    state = opt.init(params)
    value_and_grad = jopt.value_and_grad_from_state(fn)
    value, grad = value_and_grad(params, state=state)  # nothing stored yet: computed
    expected = jax.value_and_grad(fn)(params)
    np.testing.assert_allclose(value, expected[0], rtol=1e-6)
    np.testing.assert_allclose(grad["xy"], expected[1]["xy"], rtol=1e-6)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fn)
    params = jopt.apply_updates(params, updates)
    value, grad = value_and_grad(params, state=state)
    np.testing.assert_array_equal(value, state[2].value)
    np.testing.assert_array_equal(grad["xy"], state[2].grad["xy"])
    np.testing.assert_allclose(value, fn(params), rtol=1e-6)
    # optax's own helper reads jopt's state too.
    theirs = optax.value_and_grad_from_state(fn)(params, state=state)
    np.testing.assert_array_equal(theirs[0], value)


def test_value_and_grad_from_state_needs_exactly_one_stored_pair():
    fn, params, _ = _rosenbrock(jnp.float32)
    value_and_grad = jopt.value_and_grad_from_state(fn)
    with pytest.raises(ValueError, match="no 'value'"):
        value_and_grad(params, state=jopt.sgd(0.1).init(params))
    no_grad = jopt.scale_by_backtracking_linesearch(5).init(params)  # store_grad=False
    with pytest.raises(ValueError, match="no 'grad'"):
        value_and_grad(params, state=no_grad)
    two = jopt.chain(jopt.scale_by_zoom_linesearch(5), jopt.scale_by_zoom_linesearch(5)).init(params)
    with pytest.raises(KeyError, match="2 fields named 'value'"):
        value_and_grad(params, state=two)


def test_nested_chain_forwards_data_arguments_to_the_line_search():
    # A chain holding a line search forwards every extra argument (data for value_fn), also
    # when that chain is itself inside another chain.
    a = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    b = jnp.array([1.0, -1.0])

    def value_fn(params, *, data):
        return 0.5 * jnp.sum((data @ params - b) ** 2)

    inner = jopt.chain(jopt.sgd(1.0), jopt.scale_by_backtracking_linesearch(max_backtracking_steps=15))
    tx = jopt.chain(jopt.identity(), inner)
    params = jnp.zeros(2)
    state = tx.init(params)
    value, grad = jax.value_and_grad(value_fn)(params, data=a)
    updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=value_fn, data=a)
    assert value_fn(params + updates, data=a) < value
