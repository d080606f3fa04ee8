"""Padded LayerNorm (traced width) and multi-head attention (traced number of heads).

A padded trial must equal the unpadded layer: ``jopt.nn.LayerNorm(width=w)`` equals
``flax.linen.LayerNorm`` on the first ``w`` features, and ``jopt.nn.MultiHeadAttention(H, d,
num_heads=n)`` equals ``flax.linen.MultiHeadDotProductAttention(num_heads=n, qkv_features=n * d,
kernel_init=jopt.nn.initializers.lecun_normal())`` (initial values bit-equal on the real part;
outputs and gradients to float32 rounding, rtol 1e-5 / atol 1e-6). Padded parts output and
receive exactly zero, even when their parameters are nonzero. Every padded case runs as one
vmapped program over the traced value.
"""

from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import nn as jnn
from jopt.nn import attention, initializers

RTOL, ATOL = 1e-5, 1e-6
FEATURES, HEADS, DIM = 8, 4, 3
X = jax.random.normal(jax.random.key(0), (2, 5, FEATURES))
HEAD_COUNTS = (1, 3, 4)


def close(a, b, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=atol)


def loss(module, params, x):
    return jnp.sum(jnp.sin(module.apply(params, x)))


# ----------------------------------------------------------------------------- LayerNorm


def test_layer_norm_equals_flax_on_the_active_features():
    x = 0.5 + 2.0 * jax.random.normal(jax.random.key(1), (3, FEATURES))
    widths = (3, 5, FEATURES)
    base = jnn.LayerNorm(width=3).init(jax.random.key(0), x)["params"]
    assert base["scale"].tolist() == [1.0] * 3 + [0.0] * 5 and not base["bias"].any()
    # nonzero values everywhere: the padded entries must not leak into the real features
    params = {k: v + jax.random.normal(jax.random.key(i), v.shape) for i, (k, v) in enumerate(base.items())}

    def value_and_grads(module, params, x):
        return module.apply(params, x), jax.grad(lambda p, x: loss(module, p, x), argnums=(0, 1))(params, x)

    @jax.jit
    def run(params, x):
        padded = jax.vmap(lambda w: value_and_grads(jnn.LayerNorm(width=w), {"params": params}, x))
        sliced = [({"params": {k: v[:w] for k, v in params.items()}}, x[:, :w]) for w in widths]
        # width=None is flax's arithmetic over the whole axis (both variance formulas)
        unpadded = [
            tuple(m(use_fast_variance=f).apply({"params": params}, x) for m in (jnn.LayerNorm, fnn.LayerNorm))
            for f in (True, False)
        ]
        return (
            padded(jnp.array(widths, jnp.int32)),
            [value_and_grads(fnn.LayerNorm(), *a) for a in sliced],
            unpadded,
        )

    (ys, (grads, x_grads)), refs, unpadded = run(params, x)
    assert jax.tree.structure(jnn.LayerNorm().init(jax.random.key(2), x)) == jax.tree.structure(
        {"params": params}
    )
    for ours, theirs in unpadded:
        np.testing.assert_array_equal(ours, theirs)
    for i, (w, (ref_y, (ref_grads, ref_x_grads))) in enumerate(zip(widths, refs)):
        close(ys[i, :, :w], ref_y)
        np.testing.assert_array_equal(ys[i, :, w:], 0.0)
        for name in ("scale", "bias"):
            close(grads["params"][name][i, :w], ref_grads["params"][name])
            np.testing.assert_array_equal(grads["params"][name][i, w:], 0.0)
        close(x_grads[i, :, :w], ref_x_grads)
        np.testing.assert_array_equal(x_grads[i, :, w:], 0.0)


def test_layer_norm_rejects_bad_width_before_tracing():
    x = jnp.ones((2, 4))
    for width in (0, 5, 2.5, True):
        with pytest.raises(ValueError, match=r"width must be an integer in \[1, 4\]"):
            jnn.LayerNorm(width=width).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="epsilon"):
        jnn.layer_norm(x, 2, epsilon=-1.0)


# ----------------------------------------------------------------------------- attention


def _reference(n: int) -> fnn.MultiHeadDotProductAttention:
    return fnn.MultiHeadDotProductAttention(
        num_heads=n, qkv_features=n * DIM, kernel_init=initializers.lecun_normal()
    )


def _slice(params, n: int):
    """The real heads' part of a padded parameter tree (flax's layout)."""
    out = {
        name: {"kernel": params[name]["kernel"][:, :n], "bias": params[name]["bias"][:n]}
        for name in ("query", "key", "value")
    }
    out["out"] = {"kernel": params["out"]["kernel"][:n], "bias": params["out"]["bias"]}
    return out


def _inactive(params, n):
    """Masks of the entries belonging to heads ``>= n``."""
    head = lambda shape, axis: (jnp.arange(shape[axis]) >= n).reshape(
        (1,) * axis + (-1,) + (1,) * (len(shape) - axis - 1)
    )
    masks = {
        name: {"kernel": head(params[name]["kernel"].shape, 1), "bias": head(params[name]["bias"].shape, 0)}
        for name in ("query", "key", "value")
    }
    masks["out"] = {"kernel": head(params["out"]["kernel"].shape, 0), "bias": jnp.zeros((), bool)}
    return masks


@pytest.fixture(scope="module")
def padded_attention():
    """Initial parameters, outputs and gradients for each traced head count, in one program."""

    @jax.jit
    @jax.vmap
    def run(n):
        module = jnn.MultiHeadAttention(HEADS, DIM, num_heads=n)
        params = module.init(jax.random.key(7), X)["params"]
        # the padded heads' parameters made nonzero: they must change nothing
        noisy = jax.tree.map(lambda p, m: jnp.where(m, p + 1.0, p), params, _inactive(params, n))
        y = module.apply({"params": noisy}, X)
        grads = jax.grad(lambda p: loss(module, {"params": p}, X))(noisy)
        return params, y, grads

    return run(jnp.array(HEAD_COUNTS, jnp.int32))


@pytest.fixture(scope="module")
def reference_attention(padded_attention):
    """The unpadded flax layer at each head count, from the padded run's real-head parameters
    (outputs and gradients), and its own initial parameters at 3 heads; one program."""

    @jax.jit
    def run(padded_params):
        out = {}
        for i, n in enumerate(HEAD_COUNTS):
            ref, params = (
                _reference(n),
                {"params": _slice(jax.tree.map(lambda p, i=i: p[i], padded_params), n)},
            )
            out[n] = ref.apply(params, X), jax.grad(lambda p, ref=ref: loss(ref, p, X))(params)["params"]
        return out, _reference(3).init(jax.random.key(7), X)["params"]

    return run(padded_attention[0])


def test_padded_attention_starts_from_the_unpadded_flax_layer(padded_attention, reference_attention):
    params, ref = padded_attention[0], reference_attention[1]
    three = jax.tree.map(lambda p: p[HEAD_COUNTS.index(3)], params)
    assert jax.tree.map(jnp.shape, _slice(three, 3)) == jax.tree.map(jnp.shape, ref)
    jax.tree.map(np.testing.assert_array_equal, _slice(three, 3), ref)  # per-element keys: bit-equal
    for i, n in enumerate(HEAD_COUNTS):
        mine = jax.tree.map(lambda p, i=i: p[i], params)
        # the real heads' values do not depend on n (the query/key/value fan-in is the features)
        for name in ("query", "key", "value"):
            np.testing.assert_array_equal(mine[name]["kernel"][:, :1], three[name]["kernel"][:, :1])
        masks = _inactive(mine, n)
        jax.tree.map(lambda p, m: np.testing.assert_array_equal(jnp.where(m, p, 0.0), 0.0), mine, masks)
    # the output kernel's fan-in is the true heads * head_dim: the same draws, scaled by 1/sqrt(n d)
    one, four = params["out"]["kernel"][0, 0], params["out"]["kernel"][2, 0]
    close(one * jnp.sqrt(1.0 * DIM), four * jnp.sqrt(4.0 * DIM))


def test_padded_attention_equals_unpadded_flax_values_and_gradients(padded_attention, reference_attention):
    _, ys, grads = padded_attention
    for i, n in enumerate(HEAD_COUNTS):
        ref_y, ref_grads = reference_attention[0][n]
        close(ys[i], ref_y)
        mine = jax.tree.map(lambda g, i=i: g[i], grads)
        jax.tree.map(close, _slice(mine, n), ref_grads)
        masks = _inactive(mine, n)
        jax.tree.map(lambda g, m: np.testing.assert_array_equal(jnp.where(m, g, 0.0), 0.0), mine, masks)


def test_attention_unpadded_is_flax_attention_with_a_mask():
    xq = jax.random.normal(jax.random.key(3), (2, 4, FEATURES))
    causal = fnn.make_causal_mask(jnp.ones((2, 4)))
    theirs = fnn.MultiHeadDotProductAttention(num_heads=HEADS, qkv_features=HEADS * DIM, out_features=6)
    ours = jnn.MultiHeadAttention(HEADS, DIM, out_features=6, kernel_init=fnn.initializers.lecun_normal())

    @jax.jit
    def run():
        params = theirs.init(jax.random.key(4), xq, X)
        outputs = [m.apply(params, xq, X) for m in (ours, theirs)]
        outputs += [m.apply(params, xq, mask=causal) for m in (ours, theirs)]
        return params, ours.init(jax.random.key(4), xq, X), outputs

    params, mine, (y, ref_y, y_causal, ref_causal) = run()
    jax.tree.map(np.testing.assert_array_equal, mine, params)  # flax's initializer: flax's values
    close(y, ref_y)
    close(y_causal, ref_causal)


def test_attention_rejects_bad_head_counts():
    for kwargs, name in (({"num_heads": 5}, "num_heads"), ({"num_heads": 0}, "num_heads")):
        with pytest.raises(ValueError, match=rf"{name} must be an integer in \[1, {HEADS}\]"):
            jnn.MultiHeadAttention(HEADS, DIM, **kwargs).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match="head_dim must be an integer"):
        jnn.MultiHeadAttention(HEADS, 0).init(jax.random.key(0), X)
    with pytest.raises(ValueError, match="num_heads must be"):
        params = {name: {"kernel": jnp.ones((FEATURES, 2, 2))} for name in ("query", "key", "value")}
        attention.multi_head_attention(X, X, X, params | {"out": {"kernel": jnp.ones((2, 2, 3))}}, 3)


# ----------------------------------------------------------------------------- nnx


def test_nnx_layers_equal_the_unpadded_flax_nnx_layers():
    from flax import nnx as fnnx

    from jopt.nn import nnx as jnnx

    counts, widths = (1, 3), (3, FEATURES)  # traced; compared with flax at the last pair

    def padded(n, w):
        mha = jnnx.MultiHeadAttention(HEADS, FEATURES, DIM, num_heads=n, rngs=fnnx.Rngs(5))
        norm = jnnx.LayerNorm(FEATURES, width=w, rngs=fnnx.Rngs(5))
        params = {name: getattr(mha, name).params() for name in ("query", "key", "value", "out")}
        return params, mha(X), norm.scale[...], norm(X)

    @jax.jit
    def run():
        mine = jax.vmap(padded)(jnp.array(counts, jnp.int32), jnp.array(widths, jnp.int32))
        refs = []
        for n, w in zip(counts[1:], widths[1:]):  # the reference at 3 heads, all features
            mha = fnnx.MultiHeadAttention(
                n, FEATURES, n * DIM, kernel_init=initializers.lecun_normal(), decode=False, rngs=fnnx.Rngs(5)
            )
            params = {
                name: {
                    k: getattr(mha, name).kernel[...] if k == "kernel" else getattr(mha, name).bias[...]
                    for k in ("kernel", "bias")
                }
                for name in ("query", "key", "value", "out")
            }
            refs.append((params, mha(X), fnnx.LayerNorm(w, rngs=fnnx.Rngs(5))(X[..., :w])))
        return mine, refs

    (params, ys, scales, norms), ((ref_params, ref_y, ref_norm),) = run()
    for i, (n, w) in enumerate(zip(counts, widths)):
        mine = jax.tree.map(lambda p, i=i: p[i], params)
        np.testing.assert_array_equal(mine["out"]["kernel"][n:], 0.0)
        np.testing.assert_array_equal(mine["value"]["kernel"][:, n:], 0.0)
        np.testing.assert_array_equal(scales[i], (jnp.arange(FEATURES) < w).astype(jnp.float32))
        np.testing.assert_array_equal(norms[i, ..., w:], 0.0)
    jax.tree.map(np.testing.assert_array_equal, _slice(mine, counts[-1]), ref_params)
    close(ys[-1], ref_y)
    close(norms[-1], ref_norm)
