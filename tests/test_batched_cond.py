"""cond_across_batch: lax.cond's results member for member, and still a branch under vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jopt
from jopt import cond_across_batch

COUNTS = jnp.array([0, 1, 2, 3, 6, 7])


def expensive(ops):
    x, scale = ops
    return jnp.sin(x) * scale, scale + 1.0


def cheap(ops):
    x, scale = ops
    return x * x, scale


def ours(count, x, scale):
    return cond_across_batch(count % 3 == 0, expensive, cheap, (x, scale))


def reference(count, x, scale):
    return lax.cond(count % 3 == 0, expensive, cheap, (x, scale))


@pytest.mark.parametrize("scale_axis", [0, None])
def test_vmap_equals_lax_cond_member_for_member(scale_axis):
    x = jnp.linspace(-1.0, 2.0, COUNTS.size)
    scale = jnp.arange(COUNTS.size, dtype=jnp.float32) if scale_axis == 0 else jnp.float32(2.0)
    got = jax.jit(jax.vmap(ours, in_axes=(0, 0, scale_axis)))(COUNTS, x, scale)
    want = jax.vmap(reference, in_axes=(0, 0, scale_axis))(COUNTS, x, scale)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_eager_calls_take_the_concrete_branch():
    for count in (3, 4):
        got = ours(jnp.int32(count), jnp.float32(0.5), jnp.float32(2.0))
        jax.tree.map(np.testing.assert_array_equal, got, reference(count, jnp.float32(0.5), jnp.float32(2.0)))


def test_nested_vmap_and_unbatched_predicate():
    counts = COUNTS.reshape(2, 3)
    x = jnp.arange(6.0).reshape(2, 3)
    nested = jax.vmap(jax.vmap(ours, in_axes=(0, 0, None)), in_axes=(0, 0, None))
    want = jax.vmap(jax.vmap(reference, in_axes=(0, 0, None)), in_axes=(0, 0, None))
    jax.tree.map(np.testing.assert_array_equal, nested(counts, x, 1.5), want(counts, x, 1.5))
    for count in (3, 4):  # one predicate for the whole batch
        got = jax.vmap(ours, in_axes=(None, 0, None))(jnp.int32(count), x[0], 1.5)
        jax.tree.map(
            np.testing.assert_array_equal, got, jax.vmap(reference, in_axes=(None, 0, None))(count, x[0], 1.5)
        )


def test_gradients_equal_lax_cond():
    x = jnp.linspace(0.1, 1.0, COUNTS.size)

    def loss(fn, x):
        return jnp.sum(jax.vmap(fn, in_axes=(0, 0, None))(COUNTS, x, 2.0)[0])

    np.testing.assert_allclose(
        jax.grad(lambda x: loss(ours, x))(x), jax.grad(lambda x: loss(reference, x))(x)
    )
    per_member = jax.vmap(jax.grad(lambda c, x: ours(c, x, 2.0)[0], argnums=1))(COUNTS, x)
    np.testing.assert_allclose(
        per_member, jax.vmap(jax.grad(lambda c, x: reference(c, x, 2.0)[0], argnums=1))(COUNTS, x)
    )


def _calls_of_expensive_branch(counts):
    calls = []

    def traced_expensive(ops):
        jax.debug.callback(lambda: calls.append(1))
        return expensive(ops)

    fn = jax.jit(jax.vmap(lambda c, x: cond_across_batch(c % 3 == 0, traced_expensive, cheap, (x, 1.0))))
    jax.block_until_ready(fn(counts, jnp.ones(counts.shape)))
    return len(calls)


def test_expensive_branch_runs_only_when_a_member_needs_it():
    assert _calls_of_expensive_branch(jnp.array([1, 1, 1, 1])) == 0
    assert _calls_of_expensive_branch(jnp.array([3, 3, 3, 3])) == 1  # once for the batch
    assert _calls_of_expensive_branch(jnp.array([1, 3, 4, 5])) == 1


def _unconditional_primitives(jaxpr) -> set[str]:
    """Primitives a jaxpr runs whatever the data: recursing into calls, not into cond branches."""
    names = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cond":
            continue
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                names |= _unconditional_primitives(inner)
            elif hasattr(param, "eqns"):
                names |= _unconditional_primitives(param)
    return names


REFRESHING = {
    "soap": lambda: jopt.scale_by_soap(precondition_frequency=4),
    "shampoo": lambda: jopt.scale_by_shampoo(precondition_frequency=4),
    "galore": lambda: jopt.galore(1e-2, rank=2, update_proj_gap=4),
}


@pytest.mark.parametrize("name", sorted(REFRESHING))
def test_preconditioner_refresh_is_a_branch_in_a_vmapped_sweep(name):
    """Eight trials' states under vmap: the eigendecompositions sit inside a cond, not on every step."""
    tx = REFRESHING[name]()
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones((3,))}
    states = jax.vmap(lambda _: tx.init(params))(jnp.arange(8))
    grads = jax.tree.map(lambda p: jnp.ones((8, *p.shape)), params)
    jaxpr = jax.make_jaxpr(jax.vmap(lambda g, s: tx.update(g, s, params)))(grads, states).jaxpr
    decompositions = {"eigh", "qr", "householder_product", "geqrf", "svd"}
    assert not _unconditional_primitives(jaxpr) & decompositions
