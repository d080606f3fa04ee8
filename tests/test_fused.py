"""jopt.fuse: fused (packed-buffer) optimizer steps equal the unfused ones.

Element-wise arithmetic is compared bit for bit (np.testing.assert_array_equal)
on a tree of mixed shapes and dtypes (float32 and bfloat16 leaves, a scalar),
over three jitted steps, in both modes (trees in and out; packed parameters).
Transforms that reduce over the whole tree (global-norm clipping, the squared
norm of MultiSteps' skip test) sum in another order: 1e-6 relative there.
"""

import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jopt
import jopt.distributed
from jopt.fused import Packed, elementwise, fuse, fused_state_to_unfused, unfused_to_fused
from tests.sweep_helpers import DATA, _loss

STEPS = 3


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    return {
        "dense": {"w": f32(4, 3), "b": f32(3)},
        "emb": jnp.asarray(rng.normal(size=(5, 2)), jnp.bfloat16),
        "norm": {"scale": f32(3)},
        "t": f32(),
    }


PARAMS = make_params()
GRADS = [make_params(seed) for seed in (1, 2, 3)]
NDIM_MASK = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)


def run(opt, params=PARAMS, grads=GRADS, packed=False):
    """``STEPS`` steps, one jitted call each (a fixed program per step, as in a training loop).

    Returns the final parameters (a tree), the updates of the last step and the final state.
    """
    p = opt.pack(params) if packed else params
    state = opt.init(p)

    @jax.jit
    def step(p, state, g):
        g = state.layout.pack(g) if packed else g
        u, state = opt.update(g, state, p)
        return jopt.apply_updates(p, u), u, state

    for g in grads[:STEPS]:
        p, u, state = step(p, state, g)
    return (p.unpack(), u.unpack(), state) if packed else (p, u, state)


def ulps(x, y):
    """Distance in units in the last place (of the arrays' own float dtype), elementwise."""
    x, y = np.asarray(x), np.asarray(y)
    bits = {2: np.int16, 4: np.int32}[x.dtype.itemsize]
    ix, iy = x.view(bits).astype(np.int64), y.view(bits).astype(np.int64)
    top = np.int64(1) << (8 * x.dtype.itemsize - 1)
    ix, iy = np.where(ix < 0, -top - ix, ix), np.where(iy < 0, -top - iy, iy)  # monotone in value
    return np.abs(ix - iy)


def assert_same(a, b, max_ulp=0):
    """Same structure, dtypes and shapes; values equal (``max_ulp=0``) or within ``max_ulp`` ulps."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        if not jnp.issubdtype(x.dtype, jnp.floating) or max_ulp == 0:
            np.testing.assert_array_equal(x, y)
            continue
        worst = int(np.max(ulps(x, y), initial=0))
        assert worst <= max_ulp, f"{worst} ulps apart (allowed {max_ulp}): {x} vs {y}"


# XLA contracts multiply-adds into FMAs within a fusion, and packed buffers are fused
# differently from separate leaves, so results agree to 1-2 ulps rather than bit for bit
# (as do one unfused optimizer jitted one step at a time and three steps at a time).
ROUNDING = 4
# Sums over the whole tree (global norm) are also added in another order.
REDUCTION = 16


def check_equal(tx, max_ulp=ROUNDING, packed=(False, True), **fuse_options):
    opt = fuse(tx, **fuse_options)
    ref_p, ref_u, ref_s = run(_Unfused(tx))
    for mode in packed:
        p, u, s = run(opt, packed=mode)
        assert_same(p, ref_p, max_ulp)
        assert_same(u, ref_u, max_ulp)
        assert_same(fused_state_to_unfused(opt, s), ref_s, max_ulp)
    return opt


class _Unfused:
    """An unfused transform with the helpers `run` uses (state.layout.pack is never called)."""

    def __init__(self, tx):
        self.tx = tx

    pack = staticmethod(lambda p: p)
    init = property(lambda self: self.tx.init)
    update = property(lambda self: self.tx.update)


lr = jopt.schedules.warmup_cosine_decay(0.0, 1e-2, 2, 100, end_value=1e-4)
ELEMENTWISE = {
    "sgd": jopt.sgd(0.1),
    "sgd_nesterov": jopt.sgd(lr, momentum=0.9, nesterov=True),
    "heavy_ball": jopt.heavy_ball_momentum(0.1, 0.8),
    "rmsprop": jopt.rmsprop(1e-2, centered=True, momentum=0.9),
    "rmsprop_bias": jopt.rmsprop(1e-2, bias_correction=True, eps_in_sqrt=False),
    "adagrad": jopt.adagrad(0.1),
    "adadelta": jopt.adadelta(0.5, weight_decay=0.1, weight_decay_mask=NDIM_MASK),
    "adam": jopt.adam(lr, mu_dtype=jnp.bfloat16),
    "adamw": jopt.adamw(lr, weight_decay=0.1, mask=NDIM_MASK),
    "nadamw": jopt.nadamw(1e-2, weight_decay=0.1),
    "amsgrad": jopt.amsgrad(1e-2),
    "adamax": jopt.adamax(1e-2),
    "radam": jopt.radam(1e-2, threshold=1.0),
    "adabelief": jopt.adabelief(1e-2),
    "yogi": jopt.yogi(1e-2),
    "adan": jopt.adan(1e-2),
    "lion": jopt.lion(1e-3, weight_decay=0.1, mask={"dense": False, "emb": True, "norm": False, "t": True}),
    "sign_sgd": jopt.sign_sgd(0.1),
    "signum": jopt.signum(0.1),
    "l1_l2": jopt.chain(
        jopt.add_l2_penalty(0.1, mask=NDIM_MASK), jopt.add_l1_subgradient(0.01), jopt.sgd(0.1)
    ),
    "proximal_l1": jopt.chain(jopt.scale_by_learning_rate(0.1), jopt.proximal_l1(0.5, 0.1)),
    "clip": jopt.chain(jopt.clip(0.5), jopt.scale_by_schedule(lambda t: 0.1 / (1.0 + t)), jopt.scale(-1.0)),
    # the optimizers of 2023-2026 that are element-wise
    "adopt": jopt.adopt(1e-2, nesterov=True),
    "ademamix": jopt.ademamix(1e-2, alpha=jopt.ademamix_alpha_scheduler(5.0, 0.0, 10), weight_decay=0.1),
    "madgrad": jopt.madgrad(1e-2),
    "cocob": jopt.cocob(weight_decay=1e-2),
}


BOTH_MODES = {"adamw", "adadelta", "lion", "l1_l2", "sgd_nesterov", "clip"}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_optimizers_equal(name):
    # Both modes run the same lowered transform; the packed mode is checked on a subset.
    opt = check_equal(ELEMENTWISE[name], packed=(False, True) if name in BOTH_MODES else (False,))
    assert "per leaf" not in opt.plan()


# element-wise with sums over the whole tree, which packed buffers add in another order
TREE_REDUCING = {
    "prodigy": jopt.prodigy(1.0, weight_decay=0.1),
    "dadapt_adamw": jopt.dadapt_adamw(weight_decay=0.1),
    "dadapt_sgd": jopt.dadapt_sgd(momentum=0.9),
    "dog": jopt.dog(),
    "dowg": jopt.dowg(),
}


@pytest.mark.parametrize("name", sorted(TREE_REDUCING))
def test_learning_rate_free_optimizers_to_rounding(name):
    opt = check_equal(
        TREE_REDUCING[name], max_ulp=REDUCTION, packed=(False, True) if name == "dog" else (False,)
    )
    assert "per leaf" not in opt.plan()


def test_simplified_ademamix_equal_in_float64():
    """Its second moment g^2 + b2 (n - g^2) cancels, so float32 results differ by FMA roundings
    amplified by the cancellation; in float64 the fused step is the unfused one to 1e-15."""
    tx = jopt.simplified_ademamix(1e-2, alpha=2.0, weight_decay=0.1)
    with jax.enable_x64(True):
        f64 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), t)
        params, grads = f64(PARAMS), [f64(g) for g in GRADS]
        opt = fuse(tx)
        want = run(_Unfused(tx), params, grads)
        for packed in (False, True):
            got = run(opt, params, grads, packed=packed)
            for x, y in zip(jax.tree.leaves(got[:2]), jax.tree.leaves(want[:2]), strict=True):
                assert x.dtype == y.dtype == jnp.float64
                np.testing.assert_allclose(x, y, rtol=1e-15, atol=1e-16)
        assert "per leaf" not in opt.plan()


def test_global_norm_clipping_to_rounding():
    tx = jopt.chain(jopt.clip_by_global_norm(0.5), jopt.adamw(lr, weight_decay=1e-2))
    assert "per leaf" not in check_equal(tx, max_ulp=REDUCTION).plan()


def test_state_is_packed_by_dtype():
    state = fuse(jopt.adam(1e-3)).init(PARAMS)
    mu = state.inner[0].mu
    assert isinstance(mu, Packed)
    assert sorted((b.dtype.name, b.shape) for b in mu.buffers) == [("bfloat16", (10,)), ("float32", (19,))]


def test_buffers_are_split_at_max_buffer_bytes():
    opt = check_equal(jopt.adamw(1e-2, mask=NDIM_MASK), max_buffer_bytes=12)
    groups = opt.layout(PARAMS).groups
    assert len(groups) == 5  # every leaf alone: each is 12 bytes or more, except t (4), after scale (12)
    assert all(len(g.members) == 1 for g in groups)


def test_many_leaves_compile_to_a_few_buffers():
    params = {f"p{i}": jnp.full((3,), float(i)) for i in range(300)}
    opt = fuse(jopt.adamw(1e-2))
    flat = opt.pack(params)
    state = opt.init(flat)
    assert len(jax.tree.leaves(state)) == 4  # count, mu, nu, learning_rate
    step = jax.jit(lambda f, s: opt.update(jax.tree.map(jnp.ones_like, f), s, f))
    hlo = step.lower(flat, state).compile().as_text()
    assert hlo.count("fusion(") < 20


COMBINATORS = {
    "partition": jopt.partition(
        {"a": jopt.adamw(1e-2, weight_decay=0.1), "b": jopt.sgd(0.1, momentum=0.9), "f": jopt.set_to_zero()},
        lambda p: {"dense": "a", "emb": "b", "norm": "f", "t": "a"},
    ),
    "multi_transform_nested_mask": jopt.multi_transform(
        {"x": jopt.masked(jopt.lion(1e-3), NDIM_MASK), "y": jopt.adam(1e-2)},
        {"dense": {"w": "x", "b": "y"}, "emb": "x", "norm": "y", "t": "y"},
    ),
    "masked_prefix": jopt.chain(
        jopt.masked(jopt.rmsprop(1e-2), {"dense": True, "emb": False, "norm": True, "t": False}),
        jopt.sgd(0.1),
    ),
    "freeze": jopt.chain(
        jopt.freeze({"dense": False, "emb": True, "norm": False, "t": True}), jopt.adam(1e-2)
    ),
    "selective": jopt.selective_transform(jopt.adam(1e-2), freeze_mask=NDIM_MASK),
    "named_chain": jopt.named_chain(("clip", jopt.clip(1.0)), ("opt", jopt.adam(1e-2))),
    "accumulate": jopt.accumulate_gradients(jopt.adamw(1e-2, mask=NDIM_MASK), every_k=2),
    "multisteps_skip": jopt.MultiSteps(jopt.sgd(0.1), 2, should_skip_update_fn=jopt.skip_not_finite),
    "apply_if_finite": jopt.apply_if_finite(jopt.adam(1e-2), max_consecutive_errors=1),
}


@pytest.mark.parametrize("name", sorted(COMBINATORS))
def test_combinators_equal(name):
    opt = check_equal(COMBINATORS[name])
    assert "per leaf" not in opt.plan()


SOLO = {  # with solo_bytes=20, w (48 bytes) and emb (20) keep buffers of their own when trees come in
    "adamw_masked": (ELEMENTWISE["adamw"], ROUNDING),
    "lion_masked": (ELEMENTWISE["lion"], ROUNDING),
    "clip_global_norm": (jopt.chain(jopt.clip_by_global_norm(0.5), jopt.adam(lr)), REDUCTION),
    "partition": (COMBINATORS["partition"], ROUNDING),
    "accumulate": (COMBINATORS["accumulate"], ROUNDING),
    "lamb_per_leaf": (jopt.lamb(1e-2), ROUNDING),
}


@pytest.mark.parametrize("name", sorted(SOLO))
def test_big_leaves_keep_buffers_of_their_own(name):
    tx, max_ulp = SOLO[name]
    opt = check_equal(tx, max_ulp=max_ulp, solo_bytes=20)  # trees in, and packed parameters
    tree_layout = opt.init(PARAMS).layout
    solo = sorted(tree_layout.slots[g.members[0]].shape for g in tree_layout.groups if g.solo)
    assert solo == [(4, 3), (5, 2)]  # w (48 bytes) and emb (20); b, scale and t are packed
    assert opt.layout(PARAMS) == tree_layout  # a number applies to opt.pack too


def test_solo_leaves_cost_no_copy_and_pack_packs_every_leaf():
    """By default a big leaf is solo with trees in: its gradient goes into the step and its update
    comes out without a copy. ``opt.pack`` packs every leaf (their gradients arrive packed)."""
    params = {"big": jnp.ones((256, 256)), "small": jnp.ones(8)}  # 256 KiB: solo at the default
    opt = fuse(jopt.adam(1e-3))
    state = opt.init(params)
    assert [g.solo for g in state.layout.groups] == [True, False]
    step = jax.jit(lambda g, s, p: opt.update(g, s, p)[0])
    hlo = step.lower(params, state, params).compile().as_text()
    assert "f32[65544]" not in hlo and "f32[65536]" not in hlo  # no buffer holds the big leaf flat
    flat = opt.pack(params)
    assert [b.shape for b in flat.buffers] == [(65544,)] and opt.init(flat).layout == flat.layout
    with pytest.raises(ValueError, match=r"opt.init\(opt.pack\(params\)\)"):
        opt.update(params, state, flat)
    assert unfused_to_fused(opt, opt.inner.init(params), params).layout == state.layout


def test_multisteps_custom_skip_test_runs_on_leaves():
    def skip_big_first_leaf(updates, step, params):
        del step, params
        return jnp.max(jnp.abs(jax.tree.leaves(updates)[0])) > 2.0, ()

    tx = jopt.MultiSteps(jopt.adam(1e-2), 2, should_skip_update_fn=skip_big_first_leaf)
    check_equal(tx, packed=(False,))
    sq = functools.partial(jopt.skip_large_updates, max_squared_norm=20.0)
    check_equal(
        jopt.MultiSteps(jopt.adam(1e-2), 2, should_skip_update_fn=sq), max_ulp=REDUCTION, packed=(False,)
    )


def test_skip_non_finite_skips_nan_steps():
    grads = [
        GRADS[0],
        jax.tree.map(lambda g: g.at[...].set(jnp.nan) if g.ndim == 0 else g, GRADS[1]),
        GRADS[2],
    ]
    for tx in (jopt.skip_non_finite(jopt.adam(1e-2)), jopt.apply_if_finite(jopt.sgd(0.1, 0.9), 0)):
        opt = fuse(tx)
        ref = run(_Unfused(tx), grads=grads)
        got = run(opt, grads=grads)
        assert_same(got[0], ref[0], ROUNDING)
        assert int(got[2].inner.total_notfinite) == 1


PER_LEAF = {
    "lamb": jopt.lamb(1e-2),
    "lars": jopt.lars(1e-2),
    "adafactor": jopt.adafactor(1e-2),
    "block_rms": jopt.chain(jopt.clip_by_block_rms(0.5), jopt.adam(1e-2)),
    "optax_adamw": optax.adamw(1e-2),
    "muon": jopt.muon(1e-2, weight_decay=0.1),  # Newton-Schulz on the matrices, fused AdamW on the rest
}


@pytest.mark.parametrize("name", sorted(PER_LEAF))
def test_per_leaf_members_compose_exactly(name):
    opt = check_equal(PER_LEAF[name], packed=(False, True) if name in ("lamb", "muon") else (True,))
    assert "per leaf" in opt.plan()
    if name == "muon":
        assert "fused: scale_by_adam" in opt.plan()


def test_per_leaf_member_inside_partition_keeps_the_rest_fused():
    tx = jopt.partition(
        {"a": jopt.adam(1e-2), "b": jopt.lamb(1e-2)}, {"dense": "b", "emb": "a", "norm": "a", "t": "a"}
    )
    plan = check_equal(tx).plan()
    assert "fused: scale_by_adam" in plan and "per leaf: scale_by_trust_ratio" in plan


def test_foreign_transform_marked_elementwise_is_fused():
    opt = fuse(elementwise(optax.adam(1e-2)))
    assert "per leaf" not in opt.plan()
    _, u, _ = run(opt)
    _, ref_u, _ = run(_Unfused(optax.adam(1e-2)))
    assert_same(u, ref_u, ROUNDING)


def test_optax_interop():
    tx = optax.chain(fuse(jopt.adam(1e-2)), optax.scale(0.5))
    p, _, _ = run(_Unfused(tx))
    ref, _, _ = run(_Unfused(optax.chain(optax.adam(1e-2), optax.scale(0.5))))
    assert_same(p, ref, ROUNDING)


def test_grad_through_packed_params():
    def loss(p):
        h = jnp.tanh(jnp.ones((2, 4)) @ p["dense"]["w"] + p["dense"]["b"]) * p["norm"]["scale"]
        return jnp.sum(h**2) + jnp.sum(p["emb"].astype(jnp.float32) ** 2) * p["t"]

    tx = jopt.adamw(1e-2, weight_decay=0.1, mask=NDIM_MASK)
    opt = fuse(tx)

    @jax.jit
    def fused_step(flat, state):
        g = jax.grad(lambda f: loss(f.unpack()))(flat)
        assert isinstance(g, Packed)
        u, state = opt.update(g, state, flat)
        return jopt.apply_updates(flat, u), state

    @jax.jit
    def step(p, state):
        u, state = tx.update(jax.grad(loss)(p), state, p)
        return jopt.apply_updates(p, u), state

    flat, fs = opt.pack(PARAMS), opt.init(PARAMS)
    p, s = PARAMS, tx.init(PARAMS)
    for _ in range(STEPS):
        flat, fs = fused_step(flat, fs)
        p, s = step(p, s)
    assert_same(flat.unpack(), p, ROUNDING)


def test_vmap_over_hyperparameters():
    def train(lr, wd, wrap):
        tx = jopt.chain(jopt.clip(0.3), jopt.adamw(lr, weight_decay=wd, mask=NDIM_MASK))
        opt = wrap(tx)
        state = opt.init(PARAMS)
        for g in GRADS:
            u, state = opt.update(g, state, PARAMS)
        return u, jopt.current_hyperparams(state)

    lrs, wds = jnp.array([1e-3, 1e-2, 1e-1]), jnp.array([0.0, 0.1, 0.3])
    got = jax.jit(jax.vmap(lambda a, b: train(a, b, fuse)))(lrs, wds)
    ref = jax.jit(jax.vmap(lambda a, b: train(a, b, lambda t: t)))(lrs, wds)
    assert_same(got, ref, ROUNDING)
    assert set(got[1]) == {"learning_rate", "weight_decay"}


def test_current_hyperparams_and_schedules():
    opt = fuse(jopt.adamw(lr, weight_decay=0.1))
    _, _, state = run(opt)
    _, _, ref = run(_Unfused(opt.inner))
    assert_same(jopt.current_hyperparams(state), jopt.current_hyperparams(ref))
    # A stateful schedule reading an extra argument (value=loss) through the fused chain.
    tx = jopt.adam(jopt.schedules.reduce_on_plateau(1e-2, factor=0.5, patience=1))
    opt, fs, s = fuse(tx), fuse(tx).init(PARAMS), tx.init(PARAMS)
    for _ in range(4):
        _, fs = opt.update(GRADS[0], fs, PARAMS, value=jnp.float32(1.0))
        _, s = tx.update(GRADS[0], s, PARAMS, value=jnp.float32(1.0))
    assert float(jopt.current_hyperparams(fs)["learning_rate"]) < 1e-2
    assert_same(jopt.current_hyperparams(fs), jopt.current_hyperparams(s))


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_sharded_parameters_on_a_mesh(axis_type):
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type,) * 2)
    specs = {"a": P("data", None), "b": P(None, "data"), "c": P(), "d": P("data", "model"), "e": P("data")}
    rng = np.random.default_rng(0)
    shapes = {"a": (8, 6), "b": (6, 8), "c": (5,), "d": (4, 4), "e": (12, 3)}
    params = {
        k: jax.device_put(jnp.asarray(rng.normal(size=s), jnp.float32), NamedSharding(mesh, specs[k]))
        for k, s in shapes.items()
    }
    grads = [jax.tree.map(lambda x, i=i: x * (0.5 + i) + 0.1, params) for i in range(STEPS)]
    tx = jopt.chain(jopt.clip(1.0), jopt.adamw(1e-2, weight_decay=0.1))
    opt = fuse(tx)
    ref_p, _, _ = run(_Unfused(tx), params, grads)
    for packed in (False, True):
        p, _, state = run(opt, params, grads, packed=packed)
        assert_same(p, ref_p, ROUNDING)
        assert all(p[k].sharding.is_equivalent_to(ref_p[k].sharding, p[k].ndim) for k in p)
    mu = state.inner[1][0].mu
    assert sorted((b.shape, (*b.sharding.spec, None)[0]) for b in mu.buffers) == [
        ((4, 33), "data"),
        ((5,), None),
        ((8, 2), ("data", "model")),
    ]
    flat = opt.pack(params)
    step = jax.jit(lambda f, s, g: opt.update(s.layout.pack(g), s, f))
    hlo = step.lower(flat, opt.init(flat), grads[0]).compile().as_text()
    assert not any(c in hlo for c in ("all-gather", "all-to-all", "collective-permute", "all-reduce"))
    sharded = jopt.distributed.init_sharded(opt, params)
    for got, want in zip(sharded.inner[1][0].mu.buffers, mu.buffers, strict=True):
        assert got.shape == want.shape and got.sharding.is_equivalent_to(want.sharding, want.ndim)


def test_sharded_solo_leaves_keep_their_sharding():
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    shard = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
    params = {"big": shard(jnp.arange(64.0).reshape(8, 8), P("data", "model")), "c": shard(jnp.ones(3), P())}
    grads = [jax.tree.map(lambda x, i=i: jnp.cos(x * (i + 1)), params) for i in range(STEPS)]
    tx = jopt.adamw(1e-2, weight_decay=0.1)
    opt = fuse(tx, solo_bytes=32)  # big: 2 x 4 float32 per device, 32 bytes
    ref_p, _, _ = run(_Unfused(tx), params, grads)
    p, _, state = run(opt, params, grads)
    assert_same(p, ref_p, ROUNDING)
    mu = state.inner[0].mu.buffers
    assert [b.shape for b in mu] == [(8, 8), (3,)]
    assert mu[0].sharding.is_equivalent_to(params["big"].sharding, 2)


def test_state_conversion_round_trip_and_resume():
    tx = jopt.partition(
        {"a": jopt.adamw(1e-2, mask=NDIM_MASK), "b": jopt.lamb(1e-2)},
        {"dense": "a", "emb": "b", "norm": "a", "t": "a"},
    )
    opt = fuse(tx)
    _, _, fused_state = run(opt)
    _, _, ref_state = run(_Unfused(tx))
    back = unfused_to_fused(opt, ref_state, PARAMS)
    assert jax.tree.structure(back) == jax.tree.structure(fused_state)
    assert_same(back, fused_state, ROUNDING)
    u1, _ = jax.jit(opt.update)(GRADS[0], back, PARAMS)
    u2, _ = jax.jit(tx.update)(GRADS[0], ref_state, PARAMS)
    assert_same(u1, u2, ROUNDING)
    with pytest.raises(ValueError, match="unfused_to_fused"):
        unfused_to_fused(opt, jopt.adam(1e-2).init(PARAMS), PARAMS)


def test_orbax_checkpoint_of_a_fused_state():
    ocp = pytest.importorskip("orbax.checkpoint")
    opt = fuse(jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(lr, mask=NDIM_MASK)))
    _, _, state = run(opt)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(os.path.join(tmp, "state"), state)
        ckpt.wait_until_finished()
        restored = ckpt.restore(
            os.path.join(tmp, "state"), jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        )
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert_same(restored, state)


def test_errors_name_the_problem():
    opt = fuse(jopt.adamw(1e-2, mask=NDIM_MASK))
    state = opt.init(PARAMS)
    other = fuse(jopt.adam(1e-2)).pack(PARAMS)
    with pytest.raises(ValueError, match="another layout"):
        opt.update(other, state, PARAMS)
    with pytest.raises(ValueError, match="structure"):
        opt.update({"x": jnp.ones(2)}, state)
    with pytest.raises(ValueError, match="mixes leaves"):
        opt.init(other)


def test_flax_train_state_with_packed_parameters():
    train_state = pytest.importorskip("flax.training.train_state")
    tx = jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(lr, weight_decay=0.1, mask=NDIM_MASK))
    opt = fuse(tx)
    apply_fn = lambda p, x: jnp.tanh(x @ p["dense"]["w"] + p["dense"]["b"]) * p["norm"]["scale"] + p["t"]
    x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)

    @jax.jit
    def train_step(state):
        tree = lambda p: p.unpack() if isinstance(p, Packed) else p
        grads = jax.grad(lambda p: jnp.sum(state.apply_fn(tree(p), x) ** 2))(state.params)
        return state.apply_gradients(grads=grads)

    fused = train_state.TrainState.create(apply_fn=apply_fn, params=opt.pack(PARAMS), tx=opt)
    plain = train_state.TrainState.create(apply_fn=apply_fn, params=PARAMS, tx=tx)
    for _ in range(STEPS):
        fused, plain = train_step(fused), train_step(plain)
    assert isinstance(fused.params, Packed) and int(fused.step) == STEPS
    assert_same(fused.params.unpack(), plain.params, REDUCTION)
    assert_same(fused_state_to_unfused(opt, fused.opt_state), plain.opt_state, REDUCTION)


def _sweep_task(wrap, packed):
    """Softmax regression swept over AdamW's learning rate and weight decay (``wrap``: fuse or not)."""

    def optimizer(hp):
        return wrap(jopt.adamw(hp["learning_rate"], weight_decay=hp["weight_decay"], mask=NDIM_MASK))

    def init(hp, key):
        params = {"w": 0.1 * jax.random.normal(key, (8, 3)), "b": jnp.zeros(3)}
        params = optimizer(hp).pack(params) if packed else params
        return params, optimizer(hp).init(params)

    tree = (lambda p: p.unpack()) if packed else (lambda p: p)

    def step(hp, state, key):
        params, opt_state = state
        idx = jax.random.randint(key, (16,), 0, DATA.x_train.shape[0])
        loss, g = jax.value_and_grad(lambda p: _loss(tree(p), DATA.x_train[idx], DATA.y_train[idx]))(params)
        u, opt_state = optimizer(hp).update(g, opt_state, params)
        return (jopt.apply_updates(params, u), opt_state), {"loss": loss}

    def evaluate(hp, state):
        return _loss(tree(state[0]), DATA.x_val, DATA.y_val), {}

    return jopt.sweep.Task(init, step, evaluate, params=lambda s: tree(s[0]))


def test_sweep_of_a_fused_optimizer_equals_the_unfused_sweep():
    space = jopt.sweep.Space(
        learning_rate=jopt.sweep.loguniform(1e-3, 3e-1), weight_decay=jopt.sweep.loguniform(1e-5, 1e-1)
    )

    def run_sweep(task):
        return jopt.sweep.run(
            task, space, 4, steps=12, method="sobol", seed=0, progress=False, keep_states="all"
        )

    ref = run_sweep(_sweep_task(_Unfused, packed=False))
    for packed in (False, True):
        got = run_sweep(_sweep_task(fuse, packed))
        assert [t.hyperparams for t in got.trials] == [t.hyperparams for t in ref.trials]
        for trial in range(4):
            # 1-2 ulps per step (FMA contraction differs), fed back through 12 steps of training
            for a, b in zip(jax.tree.leaves(got.params(trial)), jax.tree.leaves(ref.params(trial))):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
            assert got.trials[trial].objective == pytest.approx(ref.trials[trial].objective, rel=1e-5)
