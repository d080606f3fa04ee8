"""Shared test problems and a trajectory runner for comparing optimizers.

``trajectory(tx, problem, steps)`` runs ``steps`` optimizer steps inside one
jitted ``lax.scan`` and returns the stacked parameters, so a whole 100+-step run
costs one compile. Works for jopt and optax transforms alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Problem(NamedTuple):
    name: str
    params: Any
    loss: Callable[[Any], jax.Array]


def quadratic() -> Problem:
    """Ill-conditioned quadratic ``0.5 * sum(a * (x - 1)^2)`` with two leaves."""
    a = jnp.array([1.0, 4.0, 9.0, 0.5])

    def loss(p):
        return 0.5 * jnp.sum(a * (p["x"] - 1.0) ** 2) + 0.5 * jnp.sum((p["y"] + 2.0) ** 2)

    return Problem("quadratic", {"x": jnp.zeros(4), "y": jnp.ones((2, 3))}, loss)


def rosenbrock() -> Problem:
    """2-D Rosenbrock function, minimum at (1, 1)."""

    def loss(p):
        x, y = p["xy"][0], p["xy"][1]
        return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2

    return Problem("rosenbrock", {"xy": jnp.array([-1.0, 1.5])}, loss)


def mlp() -> Problem:
    """Small MLP regression (3 layers, 6 leaves) on fixed random data."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 5)), jnp.float32)
    y = jnp.asarray(np.sin(rng.normal(size=(32, 2))), jnp.float32)
    sizes = [(5, 16), (16, 8), (8, 2)]
    params = {
        f"layer{i}": {
            "w": jnp.asarray(rng.normal(size=s) / np.sqrt(s[0]), jnp.float32),
            "b": jnp.zeros(s[1], jnp.float32),
        }
        for i, s in enumerate(sizes)
    }

    def loss(p):
        h = x
        for i in range(len(sizes)):
            h = h @ p[f"layer{i}"]["w"] + p[f"layer{i}"]["b"]
            if i < len(sizes) - 1:
                h = jnp.tanh(h)
        return jnp.mean((h - y) ** 2)

    return Problem("mlp", params, loss)


def mlp3d() -> Problem:
    """MLP regression with matrix, vector and 3-D leaves (a stack of two square layers).

    Leaves: ``inp/w`` (5, 8), ``inp/b`` (8,), ``stack/w`` (2, 8, 8), ``stack/b`` (2, 8),
    ``out/w`` (8, 2), ``out/b`` (2,) — the shapes Muon-, Shampoo- and SOAP-style
    optimizers treat differently (matrices, vectors, stacked matrices).
    """
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(32, 5)), jnp.float32)
    y = jnp.asarray(np.sin(rng.normal(size=(32, 2))), jnp.float32)

    def dense(shape):
        return jnp.asarray(rng.normal(size=shape) / np.sqrt(shape[-2]), jnp.float32)

    params = {
        "inp": {"w": dense((5, 8)), "b": jnp.zeros(8, jnp.float32)},
        "stack": {"w": dense((2, 8, 8)), "b": jnp.zeros((2, 8), jnp.float32)},
        "out": {"w": dense((8, 2)), "b": jnp.zeros(2, jnp.float32)},
    }

    def loss(p):
        h = jnp.tanh(x @ p["inp"]["w"] + p["inp"]["b"])
        for i in range(2):
            h = jnp.tanh(h @ p["stack"]["w"][i] + p["stack"]["b"][i])
        return jnp.mean((h @ p["out"]["w"] + p["out"]["b"] - y) ** 2)

    return Problem("mlp3d", params, loss)


PROBLEMS = {"quadratic": quadratic, "rosenbrock": rosenbrock, "mlp": mlp}  # mlp3d(): imported by name


def trajectory(tx, problem: Problem, steps: int = 100, *, pass_value: bool = False, apply=None):
    """Parameters after each of ``steps`` updates, stacked on a leading axis.

    ``pass_value`` passes the loss as ``value=`` (for loss-driven transforms).
    ``apply`` defaults to ``params + updates`` leafwise.
    """
    apply = apply or (lambda p, u: jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u))

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(problem.loss)(p)
            kwargs = {"value": value} if pass_value else {}
            u, s = tx.update(g, s, p, **kwargs)
            p = apply(p, u)
            return (p, s), p

        _, ps = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return ps

    return run(problem.params)


def assert_trees_close(actual, expected, *, rtol=1e-5, atol=1e-6, err_msg=""):
    """Leafwise ``np.testing.assert_allclose`` with matching structure."""
    a_leaves, a_def = jax.tree.flatten(actual)
    e_leaves, e_def = jax.tree.flatten(expected)
    assert a_def == e_def, f"tree structures differ: {a_def} vs {e_def}"
    for a, e in zip(a_leaves, e_leaves):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol, err_msg=err_msg)


def assert_trees_equal(actual, expected, *, err_msg=""):
    """Leafwise bit-for-bit equality (``np.testing.assert_array_equal``) with matching structure."""
    a_leaves, a_def = jax.tree.flatten(actual)
    e_leaves, e_def = jax.tree.flatten(expected)
    assert a_def == e_def, f"tree structures differ: {a_def} vs {e_def}"
    for a, e in zip(a_leaves, e_leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e), err_msg=err_msg)


class OptCase(NamedTuple):
    """An optimizer under test, registered in a ``CASES`` list by each optimizer test module.

    Attributes:
      name: id for test output.
      make: jopt factory, called as ``make(**kwargs)``.
      kwargs: numeric hyperparameters (every one of them is vmapped over by the
        generic tests, so list all that can be traced), e.g. learning_rate, b1.
      reference: independent reference factory called as ``reference(**reference_kwargs)``
        (optax), or None when the module tests against a NumPy transcription.
      reference_kwargs: kwargs for ``reference``; defaults to ``kwargs``.
      converges_on: problems where ``make(**kwargs)`` (or ``converge_kwargs``)
        must reduce the loss by 10x within 500 steps.
      converge_kwargs: kwargs for the convergence test, if different.
    """

    name: str
    make: Callable[..., Any]
    kwargs: dict
    reference: Callable[..., Any] | None = None
    reference_kwargs: dict | None = None
    converges_on: tuple[str, ...] = ("quadratic", "rosenbrock")
    converge_kwargs: dict | None = None
