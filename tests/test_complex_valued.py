"""Complex parameters as real pairs: equal to optax.contrib.split_real_and_imaginary bit for bit,
and to the inner optimizer run on the real and imaginary parts as two real parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt
from jopt.transforms.complex_valued import split_real_and_imaginary

PARAMS = {"z": jnp.array([1.0 + 2.0j, -0.5 + 0.1j], jnp.complex64), "x": jnp.array([3.0, -1.0])}


def loss(p):
    return jnp.sum(jnp.abs(p["z"] - (2.0 - 1.0j)) ** 2) + jnp.sum(p["x"] ** 2)


def trajectory(tx, steps=15):
    p, s = PARAMS, tx.init(PARAMS)
    for _ in range(steps):
        g = jax.tree.map(jnp.conj, jax.grad(loss)(p))
        u, s = tx.update(g, s, p)
        p = jopt.apply_updates(p, u)
    return p


def test_equals_optax_for_adam_and_sgd():
    for ours, theirs in (
        (jopt.adam(0.1), optax.adam(0.1)),
        (jopt.sgd(0.05, momentum=0.9), optax.sgd(0.05, 0.9)),
    ):
        a = trajectory(split_real_and_imaginary(ours))
        b = trajectory(optax.contrib.split_real_and_imaginary(theirs))
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_a_complex_leaf_is_two_real_leaves_and_training_converges():
    p = trajectory(split_real_and_imaginary(jopt.adam(0.1)), steps=200)
    np.testing.assert_allclose(np.asarray(p["z"]), [2.0 - 1.0j] * 2, atol=1e-2)
    real = {"re": PARAMS["z"].real, "im": PARAMS["z"].imag, "x": PARAMS["x"]}
    tx = jopt.adam(0.1)
    s = tx.init(real)
    q = real
    for _ in range(15):
        z = q["re"] + 1j * q["im"]
        g = jax.tree.map(jnp.conj, jax.grad(loss)({"z": z, "x": q["x"]}))
        u, s = tx.update({"re": g["z"].real, "im": g["z"].imag, "x": g["x"]}, s, q)
        q = jopt.apply_updates(q, u)
    p = trajectory(split_real_and_imaginary(jopt.adam(0.1)))
    np.testing.assert_array_equal(np.asarray(p["z"]), np.asarray(q["re"] + 1j * q["im"]))
