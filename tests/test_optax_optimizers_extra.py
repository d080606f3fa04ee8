"""optax 0.2.8's remaining optimizers in jopt: adan, adamaxw, rprop, signum, sm3, fromage,
noisy_sgd, polyak_sgd, optimistic_gradient_descent, optimistic_adam(_v2).

* With Python-number hyperparameters, jopt's parameters after 100 steps equal optax's
  exactly (float32 and float64) on the small MLP and on an ill-conditioned quadratic.
  Each comparison runs both libraries in one jitted ``lax.scan`` (one compile per case).
* The array-hyperparameter path agrees with the Python-number path to float32 rounding.
* ``jax.vmap`` over all numeric hyperparameters of each optimizer at once equals a loop.
* Names, signatures and defaults are optax's; bad concrete values raise ``ValueError``
  naming the argument.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import Problem, mlp, quadratic

STEPS = 100


def _dense(params):
    """Mask for weight decay: matrices only."""
    return jax.tree.map(lambda x: x.ndim > 1, params)


def _schedule(count):
    return 0.05 / (1.0 + 0.1 * count)


class Case(NamedTuple):
    """One optimizer under test.

    Attributes:
      name: the function's name in both optax and jopt.
      configs: keyword arguments (Python numbers and structural options) compared with optax on
        the MLP; ``configs[1]`` holds the main options and is also compared on the quadratic.
      batch: three values for every numeric hyperparameter of ``configs[1]`` (the first being
        ``configs[1]``'s), vmapped over together and run as arrays.
      pass_value: pass the loss as ``value=``.
    """

    name: str
    configs: tuple[dict[str, Any], ...]
    batch: dict[str, list[float]]
    pass_value: bool = False


CASES = [
    Case(
        "adan",
        (
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, b1=0.9, b2=0.8, b3=0.999, eps=1e-6, eps_root=0.0, weight_decay=1e-2),
            dict(learning_rate=1e-2, weight_decay=0.1, mask=_dense),
        ),
        dict(
            learning_rate=[1e-2, 2e-2, 5e-3],
            b1=[0.9, 0.8, 0.95],
            b2=[0.8, 0.9, 0.7],
            b3=[0.999, 0.99, 0.9],
            eps=[1e-6, 1e-8, 1e-4],
            eps_root=[0.0, 1e-8, 1e-6],
            weight_decay=[1e-2, 0.0, 0.1],
        ),
    ),
    Case(
        "adamaxw",
        (
            dict(learning_rate=1e-2),
            dict(learning_rate=3e-3, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1, mask=_dense),
        ),
        dict(
            learning_rate=[3e-3, 1e-2, 1e-3],
            b1=[0.8, 0.9, 0.5],
            b2=[0.99, 0.9, 0.999],
            eps=[1e-6, 1e-8, 1e-3],
            weight_decay=[0.1, 0.0, 0.3],
        ),
    ),
    Case(
        "rprop",
        (
            dict(learning_rate=1e-3),
            dict(learning_rate=1e-2, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-4, max_step_size=0.05),
        ),
        dict(
            learning_rate=[1e-2, 1e-3, 3e-2],
            eta_minus=[0.3, 0.5, 0.1],
            eta_plus=[1.5, 1.2, 2.0],
            min_step_size=[1e-4, 1e-6, 1e-3],
            max_step_size=[0.05, 0.5, 0.1],
        ),
    ),
    Case(
        "signum",
        (dict(learning_rate=1e-3), dict(learning_rate=3e-3, beta=0.5)),
        dict(learning_rate=[3e-3, 1e-3, 1e-2], beta=[0.5, 0.9, 0.0]),
    ),
    Case(
        "sm3",
        (dict(learning_rate=1e-2), dict(learning_rate=0.1, momentum=0.5)),
        dict(learning_rate=[0.1, 0.03, 0.3], momentum=[0.5, 0.9, 0.0]),
    ),
    Case(
        "fromage",
        (dict(learning_rate=1e-2), dict(learning_rate=0.1, min_norm=1e-3), dict(learning_rate=_schedule)),
        dict(learning_rate=[0.1, 0.01, 0.3], min_norm=[1e-3, 1e-6, 0.0]),
    ),
    Case(
        "noisy_sgd",
        (
            dict(learning_rate=1e-2, key=0),
            dict(learning_rate=1e-2, eta=0.1, gamma=0.3, key=jax.random.key(3)),
        ),
        dict(learning_rate=[1e-2, 3e-2, 3e-3], eta=[0.1, 0.01, 1.0], gamma=[0.3, 0.55, 1.0]),
    ),
    Case(
        "polyak_sgd",
        (
            dict(),
            dict(max_learning_rate=0.3, scaling=0.5, f_min=0.01, eps=1e-3, variant="sps+"),
            dict(max_learning_rate=0.5, f_min=-0.1, variant="sps"),
        ),
        dict(
            max_learning_rate=[0.3, 1.0, 0.1],
            scaling=[0.5, 1.0, 0.2],
            f_min=[0.01, 0.0, 0.5],
            eps=[1e-3, 0.0, 1e-2],
        ),
        pass_value=True,
    ),
    Case(
        "optimistic_gradient_descent",
        (dict(learning_rate=1e-2), dict(learning_rate=2e-2, alpha=0.5, beta=0.7)),
        dict(learning_rate=[2e-2, 1e-2, 5e-2], alpha=[0.5, 1.0, 0.2], beta=[0.7, 1.0, 0.0]),
    ),
    Case(
        "optimistic_adam",
        (
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, optimism=0.5, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8, nesterov=False),
        ),
        dict(
            learning_rate=[1e-2, 3e-2, 3e-3],
            optimism=[0.5, 0.1, 1.0],
            b1=[0.8, 0.9, 0.5],
            b2=[0.99, 0.999, 0.9],
            eps=[1e-6, 1e-8, 1e-4],
            eps_root=[1e-8, 0.0, 1e-6],
        ),
    ),
    Case(
        "optimistic_adam_v2",
        (
            dict(learning_rate=1e-2),
            dict(learning_rate=1e-2, alpha=0.5, beta=2.0, b1=0.8, b2=0.99, eps_root=1e-8, nesterov=False),
        ),
        dict(
            learning_rate=[1e-2, 3e-2, 3e-3],
            alpha=[0.5, 1.0, 2.0],
            beta=[2.0, 1.0, 0.0],
            b1=[0.8, 0.9, 0.5],
            b2=[0.99, 0.999, 0.9],
            eps_root=[1e-8, 0.0, 1e-6],
        ),
    ),
]
BY_NAME = {c.name: c for c in CASES}
IDS = [c.name for c in CASES]
TRANSFORMS = [
    "scale_by_adan",
    "scale_by_rprop",
    "scale_by_sm3",
    "scale_by_optimistic_gradient",
    "scale_by_polyak",
    "add_noise",
]


# --------------------------------------------------------------------------- runners


def _make(lib, name: str, kwargs: dict):
    with warnings.catch_warnings():  # optax deprecates optimistic_adam
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(lib, name)(**kwargs)


def _scan(txs, apply_fns, problem: Problem, params, steps: int, pass_value: bool):
    """Final parameters of each transform after ``steps`` steps, all in one ``lax.scan``."""

    def body(carry, _):
        new = []
        for tx, apply, (p, s) in zip(txs, apply_fns, carry):
            value, grads = jax.value_and_grad(problem.loss)(p)
            updates, s = tx.update(grads, s, p, **({"value": value} if pass_value else {}))
            new.append((apply(p, updates), s))
        return tuple(new), None

    init = tuple((params, tx.init(params)) for tx in txs)
    final, _ = jax.lax.scan(body, init, None, length=steps)
    return [p for p, _ in final]


def _jopt_and_optax(case: Case, kwargs: dict, problem: Problem):
    """(jopt's, optax's) final parameters, from one compiled program."""
    txs = (_make(jopt, case.name, kwargs), _make(optax, case.name, kwargs))
    run = jax.jit(
        lambda p: _scan(txs, (jopt.apply_updates, optax.apply_updates), problem, p, STEPS, case.pass_value)
    )
    return run(problem.params)


def _assert_equal(actual, expected):
    a_leaves, a_def = jax.tree.flatten(actual)
    e_leaves, e_def = jax.tree.flatten(expected)
    assert a_def == e_def
    for a, e in zip(a_leaves, e_leaves):
        assert np.asarray(a).dtype == np.asarray(e).dtype
        assert np.all(np.isfinite(a)), "diverged: pick a smaller step for this case"
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _as_float64(problem: Problem) -> Problem:
    return problem._replace(params=jax.tree.map(lambda x: x.astype(jnp.float64), problem.params))


@functools.cache
def _python_number_result(name: str):
    """jopt's and optax's quadratic results for ``configs[1]`` (shared by several tests)."""
    case = BY_NAME[name]
    return _jopt_and_optax(case, case.configs[1], quadratic())


def _jopt_make(case: Case, hyperparams: dict):
    """jopt's optimizer for ``configs[1]`` with ``hyperparams`` replacing its numeric values."""
    return _make(jopt, case.name, {**case.configs[1], **hyperparams})


@functools.cache
def _array_runner(name: str):
    """``hyperparams -> final params`` on the quadratic: (jitted, plain) for vmapping."""
    case = BY_NAME[name]
    problem = quadratic()

    def run(hyperparams):
        tx = _jopt_make(case, hyperparams)
        return _scan((tx,), (jopt.apply_updates,), problem, problem.params, STEPS, case.pass_value)[0]

    return jax.jit(run), run


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "case, config",
    [(c, i) for c in CASES for i in range(len(c.configs))],
    ids=lambda x: getattr(x, "name", x),
)
def test_equals_optax_on_mlp(case, config):
    actual, expected = _jopt_and_optax(case, case.configs[config], mlp())
    _assert_equal(actual, expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_equals_optax_on_quadratic(case):
    actual, expected = _python_number_result(case.name)
    _assert_equal(actual, expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_equals_optax_in_float64(case):
    with jax.enable_x64(True):
        problem = _as_float64(mlp())
        actual, expected = _jopt_and_optax(case, case.configs[0], problem)
        assert jax.tree.leaves(actual)[0].dtype == jnp.float64
        _assert_equal(actual, expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vmap_over_hyperparameters_equals_loop(case):
    run_jit, run = _array_runner(case.name)
    batch = {k: jnp.asarray(v, jnp.float32) for k, v in case.batch.items()}
    batched = jax.jit(jax.vmap(run))(batch)
    for i in range(3):
        one = run_jit({k: v[i] for k, v in batch.items()})
        for b, o in zip(jax.tree.leaves(batched), jax.tree.leaves(one)):
            assert np.all(np.isfinite(o))
            np.testing.assert_allclose(np.asarray(b)[i], np.asarray(o), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_batch_covers_the_numeric_hyperparameters(case):
    numeric = {
        k for k, v in case.configs[1].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    assert set(case.batch) == numeric
    for name, values in case.batch.items():
        assert values[0] == case.configs[1][name] and len(values) == 3


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_array_hyperparameters_agree_with_python_numbers(case):
    run_jit, _ = _array_runner(case.name)
    actual = run_jit({k: jnp.asarray(v[0], jnp.float32) for k, v in case.batch.items()})
    expected, _ = _python_number_result(case.name)
    # The paths differ by float32 rounding of the constants: 1 - float32(0.999) is 1.3e-5 relative
    # away from float32(1 - 0.999), which moves Adan (b3=0.999) by ~6e-6 over 100 steps of ~1e-2.
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", IDS + TRANSFORMS)
def test_signature_is_optax(name):
    ours = inspect.signature(getattr(jopt, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [
        (p.name, p.kind, p.default) for p in theirs.values()
    ]


BAD_VALUES = [
    ("adan", dict(learning_rate=1e-3, b3=1.0), "b3"),
    ("adan", dict(learning_rate=1e-3, eps_root=-1.0), "eps_root"),
    ("adamaxw", dict(learning_rate=1e-3, weight_decay=-0.1), "weight_decay"),
    ("adamaxw", dict(learning_rate=-1e-3), "learning_rate"),
    ("rprop", dict(learning_rate=1e-3, eta_plus=0.5), "eta_plus"),
    ("rprop", dict(learning_rate=1e-3, eta_minus=1.5), "eta_minus"),
    ("rprop", dict(learning_rate=1e-3, min_step_size=1.0, max_step_size=0.1), "min_step_size"),
    ("signum", dict(learning_rate=1e-3, beta=1.5), "beta"),
    ("sm3", dict(learning_rate=1e-3, momentum=1.0), "momentum"),
    ("fromage", dict(learning_rate=-0.1), "learning_rate"),
    ("fromage", dict(learning_rate=0.1, min_norm=-1.0), "min_norm"),
    ("noisy_sgd", dict(learning_rate=0.1, eta=-1.0, key=0), "eta"),
    ("noisy_sgd", dict(learning_rate=0.1, gamma=float("nan"), key=0), "gamma"),
    ("noisy_sgd", dict(learning_rate=0.1, key=0, seed=1), "seed"),
    ("polyak_sgd", dict(max_learning_rate=-1.0), "max_learning_rate"),
    ("polyak_sgd", dict(scaling=-1.0), "scaling"),
    ("polyak_sgd", dict(variant="sps-"), "variant"),
    ("optimistic_gradient_descent", dict(learning_rate=0.1, beta=-1.0), "beta"),
    ("optimistic_adam", dict(learning_rate=0.1, optimism=-1.0), "optimism"),
    ("optimistic_adam", dict(learning_rate=0.1, b2=1.0), "b2"),
    ("optimistic_adam_v2", dict(learning_rate=0.1, alpha=-1.0), "alpha"),
]


@pytest.mark.parametrize("name, kwargs, argument", BAD_VALUES, ids=[f"{n}-{a}" for n, _, a in BAD_VALUES])
def test_bad_values_raise_naming_the_argument(name, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            getattr(jopt, name)(**kwargs)


def test_polyak_without_loss_raises():
    opt = jopt.polyak_sgd()
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="value"):
        opt.update(params, opt.init(params), params)


def test_noisy_sgd_without_key_warns_and_uses_seed_zero():
    params = {"w": jnp.zeros(3)}
    with pytest.warns(UserWarning, match="key"):
        opt = jopt.noisy_sgd(0.1)
    seeded = jopt.noisy_sgd(0.1, key=0)
    a, _ = opt.update(params, opt.init(params), params)
    b, _ = seeded.update(params, seeded.init(params), params)
    np.testing.assert_array_equal(a["w"], b["w"])
    assert np.all(np.asarray(a["w"]) != 0)


def test_noisy_sgd_seeds_differ_and_vmap_over_keys():
    params = {"w": jnp.zeros(4)}

    def first_update(key):
        opt = jopt.noisy_sgd(0.1, key=key)
        return opt.update(params, opt.init(params), params)[0]["w"]

    keys = jax.random.split(jax.random.key(1), 3)
    batched = jax.vmap(first_update)(keys)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], first_update(keys[i]))
    assert not np.array_equal(batched[0], batched[1])


def test_rprop_first_update_is_zero_as_in_optax():
    opt = jopt.rprop(0.1)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.array([1.0, -1.0])}, state, params)
    np.testing.assert_array_equal(updates["w"], [0.0, 0.0])
    updates, state = opt.update({"w": jnp.array([1.0, -1.0])}, state, params)
    np.testing.assert_allclose(updates["w"], [-0.1, 0.1])  # the step computed at update 1
    updates, state = opt.update({"w": jnp.array([1.0, 1.0])}, state, params)
    np.testing.assert_allclose(updates["w"], [-0.12, 0.0])  # update 2's step; no step on a sign flip
    np.testing.assert_allclose(state[0].step_sizes["w"], [0.144, 0.06])


def test_sm3_state_is_one_vector_per_axis():
    opt = jopt.sm3(0.1)
    state = opt.init({"m": jnp.ones((3, 4, 5)), "v": jnp.ones(6), "s": jnp.ones(())})
    mu = state[0].mu
    assert [a.shape for a in mu["m"]] == [(3,), (4,), (5,)]
    assert [a.shape for a in mu["v"]] == [(6,)]
    assert [a.shape for a in mu["s"]] == [()]
    updates, _ = opt.update({"m": jnp.ones((3, 4, 5)), "v": jnp.ones(6), "s": jnp.ones(())}, state)
    np.testing.assert_allclose(updates["s"], -0.1 * (1 - 0.9) / np.sqrt(1 + 1e-8), rtol=1e-6)


def test_schedules_are_logged_for_current_hyperparams():
    opt = jopt.optimistic_gradient_descent(0.1, alpha=lambda c: 1.0 / (1 + c), beta=0.5)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    for _ in range(3):
        _, state = opt.update(params, state, params)
    hp = jopt.current_hyperparams(state)
    np.testing.assert_allclose(hp["alpha"], 1.0 / 3)
    assert "beta" not in hp  # a constant is not stored


def test_optimistic_adam_is_deprecated_like_optax():
    with pytest.warns(DeprecationWarning, match="use `optimistic_adam_v2` instead"):
        jopt.optimistic_adam(0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jopt.optimistic_adam_v2(0.1)
