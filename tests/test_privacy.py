"""DP-SGD aggregation against optax.contrib (bit for bit in float32 for the same key), and a plain
NumPy transcription of the rule when the noise is off."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.transforms.privacy import differentially_private_aggregate, dpsgd

BATCH = 5


def _per_example(seed: int):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(rng.normal(size=(BATCH, 4, 3)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(BATCH, 3)), jnp.float32)}  # fmt: skip


def _run(tx, steps: int = 4):
    state = tx.init({"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)})
    out = []
    for t in range(steps):
        u, state = jax.jit(tx.update)(_per_example(t), state)
        out.append(u)
    return out


def _optax(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn(*args, **kwargs)


@pytest.mark.parametrize("clip, noise", [(1.0, 1.1), (0.5, 0.0), (100.0, 0.3)])
def test_aggregate_equals_optax_for_the_same_key(clip, noise):
    ours = _run(differentially_private_aggregate(clip, noise, key=jax.random.key(7)))
    theirs = _run(optax.contrib.differentially_private_aggregate(clip, noise, key=jax.random.key(7)))
    for a, b in zip(ours, theirs, strict=True):
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_dpsgd_equals_optax_with_momentum():
    ours = _run(dpsgd(0.1, 1.0, 0.7, seed=3, momentum=0.9, nesterov=True))
    theirs = _run(_optax(optax.contrib.dpsgd, 0.1, 1.0, 0.7, seed=3, momentum=0.9, nesterov=True))
    for a, b in zip(ours, theirs, strict=True):
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_noise_free_aggregate_is_the_clipped_mean():
    g = _per_example(0)
    tx = differentially_private_aggregate(0.8, 0.0, key=0)
    u, _ = tx.update(g, tx.init(None))
    flat = np.concatenate([np.asarray(g["w"]).reshape(BATCH, -1), np.asarray(g["b"])], axis=1)
    scale = np.minimum(1.0, 0.8 / np.linalg.norm(flat, axis=1))
    want = (flat * scale[:, None]).sum(0) / BATCH
    got = np.concatenate([np.asarray(u["w"]).ravel(), np.asarray(u["b"])])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)  # float32 sums vs float64


def test_traced_hyperparameters_vmap_and_agree_with_python_numbers():
    g = _per_example(1)

    def first(clip, noise):
        tx = differentially_private_aggregate(clip, noise, key=jax.random.key(1))
        return tx.update(g, tx.init(None))[0]

    batched = jax.vmap(first)(jnp.array([0.5, 2.0]), jnp.array([0.0, 0.4]))
    for i, (c, n) in enumerate([(0.5, 0.0), (2.0, 0.4)]):
        jax.tree.map(
            lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7), batched, first(c, n)
        )


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="l2_norm_clip"):
        differentially_private_aggregate(-1.0, 1.0, key=0)
    with pytest.raises(ValueError, match="only one of key and seed"), pytest.warns(DeprecationWarning):
        differentially_private_aggregate(1.0, 1.0, key=0, seed=1)
    tx = differentially_private_aggregate(1.0, 1.0, key=0)
    with pytest.raises(ValueError, match="batch"):
        tx.update({"w": jnp.ones((2, 3)), "b": jnp.ones((3,))}, tx.init(None))
    assert jopt.transforms.privacy.DifferentiallyPrivateAggregateState._fields[1] == "rng_key"
