"""Padded shapes: masked width (linen Dense, nnx Linear), padded batch rows, gated depth, buckets.

A padded trial must equal the same configuration trained unpadded. Initial values are bit-equal
(padding-invariant initializers: per-element keys, true fans); after training the two agree to
float32 rounding, rtol 1e-5 / atol 1e-6 (the padded matmuls and sums run over extra exact zeros,
so XLA's reduction order, not the arithmetic, differs). Masked parameters, their gradients and
their optimizer state are checked to be exactly zero.
"""

from __future__ import annotations

from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fnnx

import jopt
from jopt import datasets, sweep
from jopt import nn as jnn
from jopt.nn import initializers
from jopt.nn import nnx as jnnx

RTOL, ATOL = 1e-5, 1e-6
LECUN = initializers.lecun_normal()
DATA = datasets.synthetic_classification(96, features=8, classes=3)


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- initializers


def test_initializers_are_padding_invariant():
    key = jax.random.key(11)
    cases = [
        (initializers.lecun_normal(), (16, 24), (5, 7)),
        (initializers.lecun_normal(), (3, 3, 8, 16), (3, 3, 5, 7)),  # a conv kernel: receptive field
        (initializers.variance_scaling(0.5, "fan_avg", "uniform"), (16, 24), (5, 7)),
    ]
    for init, padded, true in cases:
        small = jax.jit(lambda i=init, t=true: i(key, t))()
        traced = jax.jit(lambda n, i=init, p=padded, t=true: i(key, p, true_shape=t[:-2] + (n, t[-1])))
        full = traced(jnp.int32(true[-2]))  # a traced fan-in
        np.testing.assert_array_equal(full[tuple(slice(0, t) for t in true)], small)
        assert float(jnp.sum(jnp.abs(full))) == pytest.approx(float(jnp.sum(jnp.abs(small))), rel=1e-6)


def test_initializer_scale_follows_the_true_fan_in():
    @jax.jit
    def draws(key):
        return (
            initializers.lecun_normal()(key, (256, 512), true_shape=(64, 512)),
            initializers.he_normal()(key, (128, 256)),
        )

    w, he = draws(jax.random.key(0))
    assert float(jnp.var(w[:64]) * 64) == pytest.approx(1.0, rel=0.05)  # 1 / fan_in with fan_in = 64
    assert float(jnp.var(he) * 128) == pytest.approx(2.0, rel=0.05)
    assert float(jnp.max(jnp.abs(w[:64]))) <= 2.0 / 0.87962566103423978 / 8 + 1e-6  # truncated at 2 sigma


def test_initializer_errors():
    with pytest.raises(ValueError, match="mode"):
        initializers.variance_scaling(1.0, "fan_sum")
    with pytest.raises(ValueError, match="distribution"):
        initializers.variance_scaling(1.0, "fan_in", "cauchy")
    with pytest.raises(ValueError, match="rank"):
        initializers.lecun_normal()(jax.random.key(0), (4, 4), true_shape=(2,))


# ----------------------------------------------------------------------------- linen Dense


def test_dense_unmasked_equals_flax_dense_bit_for_bit():
    x = jax.random.normal(jax.random.key(0), (5, 7))
    ours, theirs = jnn.Dense(6), fnn.Dense(6)
    params = theirs.init(jax.random.key(1), x)
    assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(params)
    np.testing.assert_array_equal(ours.apply(params, x), theirs.apply(params, x))
    no_bias = fnn.Dense(6, use_bias=False)
    p = no_bias.init(jax.random.key(1), x)
    np.testing.assert_array_equal(jnn.Dense(6, use_bias=False).apply(p, x), no_bias.apply(p, x))


def test_dense_masked_units_are_zero_and_get_zero_gradients():
    x = jax.random.normal(jax.random.key(0), (5, 7))
    layer = jnn.Dense(8, width=3, in_width=4)
    ones = jnn.Dense(8, width=3, kernel_init=fnn.initializers.ones_init())

    @jax.jit
    def run(x):
        params = layer.init(jax.random.key(1), x)
        # even nonzero padded parameters (e.g. written by some other optimizer) do not leak
        noisy = jax.tree.map(lambda a: a + 1.0, params)
        grads = jax.grad(lambda p: jnp.sum(jnp.sin(layer.apply(p, x))))(noisy)["params"]
        return params["params"], layer.apply(noisy, x), grads, ones.init(jax.random.key(1), x)["params"]

    params, y, grads, ones_params = run(x)
    kernel = params["kernel"]
    assert kernel.shape == (7, 8) and bool(jnp.all(kernel[4:] == 0)) and bool(jnp.all(kernel[:, 3:] == 0))
    assert bool(jnp.all(kernel[:4, :3] != 0))
    np.testing.assert_array_equal(y[:, 3:], 0.0)
    np.testing.assert_array_equal(grads["kernel"][4:], 0.0)
    np.testing.assert_array_equal(grads["kernel"][:, 3:], 0.0)
    np.testing.assert_array_equal(grads["bias"][3:], 0.0)
    assert bool(jnp.all(grads["kernel"][:4, :3] != 0))
    # a fan-independent flax initializer is masked too
    np.testing.assert_array_equal(ones_params["kernel"][:, 3:], 0.0)
    np.testing.assert_array_equal(ones_params["kernel"][:, :3], 1.0)


class PaddedMLP(fnn.Module):
    """Two hidden ReLU layers built at ``features`` units, ``width`` of them real."""

    features: int
    width: Any

    @fnn.compact
    def __call__(self, x):
        x = fnn.relu(jnn.Dense(self.features, width=self.width)(x))
        x = fnn.relu(jnn.Dense(self.features, width=self.width, in_width=self.width)(x))
        return jnn.Dense(DATA.num_classes, in_width=self.width)(x)


class PlainMLP(fnn.Module):
    """The unpadded reference: flax Dense layers with jopt's padding-invariant init."""

    width: int

    @fnn.compact
    def __call__(self, x):
        x = fnn.relu(fnn.Dense(self.width, kernel_init=LECUN)(x))
        x = fnn.relu(fnn.Dense(self.width, kernel_init=LECUN)(x))
        return fnn.Dense(DATA.num_classes, kernel_init=LECUN)(x)


def _train(model, opt, steps=30):
    """Init and ``steps`` full-batch steps; returns (initial params, final params, opt state, losses)."""
    x, y = DATA.x_train, DATA.y_train

    def loss_fn(p):
        return jnp.mean(jnn.smoothed_cross_entropy(model.apply(p, x), y))

    params = model.init(jax.random.key(0), x[:1])
    state = opt.init(params)

    def body(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p)
        return (jopt.apply_updates(p, u), s), loss

    (final, state), losses = jax.lax.scan(body, (params, state), None, length=steps)
    return params, final, state, losses


def _real(params, w):
    """The real block of a padded MLP's parameters (width ``w``)."""
    p = params["params"]
    return {
        "Dense_0": {"kernel": p["Dense_0"]["kernel"][:, :w], "bias": p["Dense_0"]["bias"][:w]},
        "Dense_1": {"kernel": p["Dense_1"]["kernel"][:w, :w], "bias": p["Dense_1"]["bias"][:w]},
        "Dense_2": {"kernel": p["Dense_2"]["kernel"][:w], "bias": p["Dense_2"]["bias"]},
    }


def _padding_is_zero(tree, w):
    for name, leaves in tree.items():
        kernel = leaves["kernel"]
        if name != "Dense_0":
            np.testing.assert_array_equal(kernel[w:], 0.0)
        if name != "Dense_2":
            np.testing.assert_array_equal(kernel[:, w:], 0.0)
            np.testing.assert_array_equal(leaves["bias"][w:], 0.0)


def test_padded_mlp_trains_like_the_unpadded_mlp():
    opt = jopt.adamw(1e-2, weight_decay=1e-2)
    widths = jnp.array([8, 12], jnp.int32)
    padded = jax.jit(jax.vmap(lambda w: _train(PaddedMLP(16, w), opt)))(widths)  # one program
    for i, w in enumerate([8, 12]):
        init0, final, state, losses = jax.tree.map(lambda a, i=i: a[i], padded)
        ref_init, ref_final, _, ref_losses = jax.jit(lambda w=w: _train(PlainMLP(w), opt))()
        jax.tree.map(np.testing.assert_array_equal, _real(init0, w), ref_init["params"])  # same start
        jax.tree.map(close, _real(final, w), ref_final["params"])
        close(losses, ref_losses)
        _padding_is_zero(final["params"], w)
        adam = state[0]  # ScaleByAdamState of adamw's chain: mu and nu stay zero where masked
        _padding_is_zero(adam.mu["params"], w)
        _padding_is_zero(adam.nu["params"], w)


@pytest.mark.parametrize(
    "opt",
    [jopt.sgd(0.1, momentum=0.9, nesterov=True), jopt.lion(1e-3, weight_decay=0.1), jopt.adagrad(0.1)],
    ids=["sgd-nesterov", "lion-wd", "adagrad"],
)
def test_padded_parameters_stay_zero_with_other_optimizers(opt):
    model = PaddedMLP(16, jnp.int32(5))
    params, final, state, _ = jax.jit(lambda: _train(model, opt, steps=5))()
    _padding_is_zero(final["params"], 5)
    init_state = jax.jit(opt.init)(params)
    for got, start in zip(jax.tree.leaves(state), jax.tree.leaves(init_state)):
        if np.ndim(got) == 2 and got.shape[0] == 16:  # hidden-to-hidden kernels' state: untouched padding
            np.testing.assert_array_equal(got[5:], start[5:])


def test_width_sweep_trial_equals_unpadded_static_run():
    space = sweep.Space(width=sweep.choice([8, 12]), learning_rate=sweep.loguniform(1e-3, 1e-1))
    padded_task = sweep.supervised_task(
        lambda hp: PaddedMLP(16, hp["width"]), lambda hp: jopt.adamw(hp["learning_rate"], weight_decay=1e-3),
        DATA, batch_size=16,
    )  # fmt: skip
    configs = [{"width": 8, "learning_rate": 0.05}, {"width": 12, "learning_rate": 0.01}]
    r = sweep.run(padded_task, space, configs, steps=10, eval_every=5, devices=1, progress=False)
    assert r.stats["groups"] == 1
    static = sweep.Space(width=sweep.choice([8, 12], static=True), learning_rate=sweep.loguniform(1e-3, 1e-1))
    plain_task = sweep.supervised_task(
        lambda hp: PlainMLP(hp["width"]), lambda hp: jopt.adamw(hp["learning_rate"], weight_decay=1e-3),
        DATA, batch_size=16,
    )  # fmt: skip
    assert r.trials[0].final_objective != r.trials[1].final_objective
    # trial 1 (width 12 of 16) alone, unpadded: same keys (seed, id), same batches, same start
    solo = sweep.run(plain_task, static, [configs[1]], trial_ids=[1], steps=10, eval_every=5, devices=1,
                     progress=False)  # fmt: skip
    close(solo.trials[0].history["objective"], r.trials[1].history["objective"])


# ----------------------------------------------------------------------------- nnx Linear


def test_nnx_linear_padded_equals_unpadded():
    x = jax.random.normal(jax.random.key(0), (5, 7))
    xm = x.at[:, 5:].set(100.0)  # padded input features are ignored (in_width)

    @jax.jit
    def run(x, xm):
        padded = jnnx.Linear(7, 16, width=jnp.int32(6), in_width=jnp.int32(5), rngs=fnnx.Rngs(2))
        plain = fnnx.Linear(5, 6, kernel_init=LECUN, rngs=fnnx.Rngs(2))
        grads = fnnx.grad(lambda m: jnp.sum(jnp.sin(m(xm))))(padded)
        unmasked = jnnx.Linear(7, 4, rngs=fnnx.Rngs(3))
        flax_linear = fnnx.Linear(7, 4, kernel_init=LECUN, rngs=fnnx.Rngs(3))
        return (padded.kernel[...], plain.kernel[...], padded(xm), plain(x[:, :5]), grads.kernel[...],
                grads.bias[...], unmasked(x), flax_linear(x))  # fmt: skip

    kernel, ref_kernel, y, ref_y, g_kernel, g_bias, unmasked_y, flax_y = run(x, xm)
    np.testing.assert_array_equal(kernel[:5, :6], ref_kernel)
    np.testing.assert_array_equal(kernel[5:], 0.0)
    close(y[:, :6], ref_y)
    np.testing.assert_array_equal(y[:, 6:], 0.0)
    np.testing.assert_array_equal(g_kernel[5:], 0.0)
    np.testing.assert_array_equal(g_kernel[:, 6:], 0.0)
    np.testing.assert_array_equal(g_bias[6:], 0.0)
    assert bool(jnp.all(g_kernel[:5, :6] != 0))
    np.testing.assert_array_equal(unmasked_y, flax_y)


def test_nnx_traced_width_is_state():
    def build(w):
        return fnnx.split(jnnx.Linear(4, 8, width=w, rngs=fnnx.Rngs(0)))[1]

    states = jax.vmap(build)(jnp.array([2, 5], jnp.int32))
    np.testing.assert_array_equal(states["width"], [2, 5])
    np.testing.assert_array_equal(states["kernel"][...][0][:, 2:], 0.0)
    assert bool(jnp.all(states["kernel"][...][1][:, :5] != 0))


# ----------------------------------------------------------------------------- batch rows


def test_masked_mean_and_sample_rows():
    v = jax.random.normal(jax.random.key(0), (32, 3))
    for b in (1, 7, 32):
        close(jnn.masked_mean(v, b), jnp.mean(v[:b], axis=0))
        close(jax.jit(jnn.masked_mean)(v, jnp.int32(b)), jnp.mean(v[:b], axis=0))
    close(jnn.masked_mean(v, 2, axis=1), jnp.mean(v[:, :2], axis=1))
    key = jax.random.key(4)
    rows = jnn.sample_rows(key, 64, 10)
    assert rows.shape == (64,) and int(rows.min()) >= 0 and int(rows.max()) < 10
    np.testing.assert_array_equal(jnn.sample_rows(key, 5, 10), rows[:5])


def _batch_train(batch, size, steps=20):
    """Softmax regression, each step on ``batch`` (traced) of ``size`` padded rows."""
    x, y = DATA.x_train, DATA.y_train
    opt = jopt.adam(0.05)
    w = jnp.zeros((x.shape[1], DATA.num_classes))

    def body(carry, key):
        w, s = carry
        idx = jnn.sample_rows(key, size, x.shape[0])

        def loss_fn(w):
            losses = jnn.smoothed_cross_entropy(x[idx] @ w, y[idx])
            return jnn.masked_mean(losses, batch)

        loss, g = jax.value_and_grad(loss_fn)(w)
        u, s = opt.update(g, s, w)
        return (w + u, s), loss

    keys = jax.random.split(jax.random.key(1), steps)
    (w, _), losses = jax.lax.scan(body, (w, opt.init(w)), keys)
    return w, losses


def test_padded_batch_trains_like_the_unpadded_batch():
    ws, losses = jax.jit(jax.vmap(lambda b: _batch_train(b, 16)))(jnp.array([5, 16], jnp.int32))
    for i, b in enumerate([5, 16]):
        ref_w, ref_losses = jax.jit(lambda b=b: _batch_train(b, b))()
        close(ws[i], ref_w)
        close(losses[i], ref_losses)
    assert not np.allclose(ws[0], ws[1])


# ----------------------------------------------------------------------------- depth


class ResMLP(fnn.Module):
    """``blocks`` residual blocks built; with ``depth`` (traced) only the first ``depth`` applied."""

    blocks: int
    depth: Any = None

    @fnn.compact
    def __call__(self, x):
        x = fnn.Dense(16, kernel_init=LECUN, name="stem")(x)
        for i in range(self.blocks):
            delta = fnn.Dense(16, kernel_init=LECUN, name=f"block_{i}")(fnn.relu(x))
            x = x + delta if self.depth is None else jnn.gate_residual(x, delta, i, self.depth)
        return fnn.Dense(DATA.num_classes, kernel_init=LECUN, name="head")(x)


def test_gated_depth_trains_like_the_shallow_model():
    opt = jopt.adamw(1e-2, weight_decay=1e-2)
    out = jax.jit(jax.vmap(lambda d: _train(ResMLP(3, d), opt, steps=20)))(jnp.array([1, 2], jnp.int32))
    _, final, state, losses = jax.tree.map(lambda a: a[1], out)  # depth 2 of 3
    _, ref_final, _, ref_losses = jax.jit(lambda: _train(ResMLP(2), opt, steps=20))()
    for name, leaves in ref_final["params"].items():
        jax.tree.map(close, final["params"][name], leaves)
    close(losses, ref_losses)
    assert not np.allclose(out[3][0], out[3][1])  # depth 1 trains differently
    for d, j in [(1, 1), (1, 2), (2, 2)]:  # inactive blocks: zero gradients, so zero Adam moments
        for moment in (out[2][0].mu, out[2][0].nu):
            jax.tree.map(
                lambda a, d=d: np.testing.assert_array_equal(a[d - 1], 0.0), moment["params"][f"block_{j}"]
            )


# ----------------------------------------------------------------------------- buckets


def test_buckets_sizes_groups_and_waste():
    values = [4, 5, 8, 9, 33, 100, 128]
    b = jnn.buckets(values)
    assert b.sizes == (4, 8, 8, 16, 64, 128, 128)
    assert b.groups == {4: (0,), 8: (1, 2), 16: (3,), 64: (4,), 128: (5, 6)}
    assert b.wasted == pytest.approx(sum(b.sizes) / sum(values) - 1)
    quad = jnn.buckets(values, power=2)
    assert quad.wasted == pytest.approx(sum(s * s for s in quad.sizes) / sum(v * v for v in values) - 1)
    assert jnn.buckets(values, "exact").wasted == 0.0 and len(jnn.buckets(values, "exact").groups) == 7
    one = jnn.buckets(values, "max")
    assert set(one.sizes) == {128} and one.wasted == pytest.approx(7 * 128 / sum(values) - 1)
    assert jnn.buckets(values, [16, 128]).groups == {16: (0, 1, 2, 3), 128: (4, 5, 6)}
    assert jnn.buckets([1, 2, 3], minimum=8).sizes == (8, 8, 8)
    for bad, match in [([], "empty"), ([0], ">= 1"), ([200], "exceeds")]:
        with pytest.raises(ValueError, match=match):
            jnn.buckets(bad, [16, 128])
    with pytest.raises(ValueError, match="kind"):
        jnn.buckets([3], "pow3")


def test_bucket_configs_pads_to_the_largest_named_value():
    configs = [{"w1": 4, "w2": 30, "lr": 0.1}, {"w1": 100, "w2": 7, "lr": 0.2}, {"w1": 3, "w2": 2, "lr": 0.3}]
    out, b = jnn.bucket_configs(configs, ["w1", "w2"], "pad")
    assert [c["pad"] for c in out] == [32, 128, 4]
    assert out[0]["lr"] == 0.1 and "pad" not in configs[0]
    assert b.values == (30, 100, 3)
