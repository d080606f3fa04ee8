"""Mixed precision: dtype policy, dynamic loss scaling, and hyperparameters kept in float32.

References are independent: a float32 run of the same optimizer, and a plain
Python transcription of the loss-scale rule.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jopt
from jopt import distributed as jd
from jopt import precision as mp
from tests.reference import assert_trees_close
from tests.test_sharded_state import OPTIMIZERS


def _mlp_problem():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(128, 8)), jnp.float32)
    y = jnp.asarray(np.sin(2.0 * np.asarray(x[:, :2])), jnp.float32)
    params = {
        "w1": jnp.asarray(rng.normal(size=(8, 32)) / np.sqrt(8), jnp.float32),
        "b1": jnp.zeros(32, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(32, 2)) / np.sqrt(32), jnp.float32),
    }
    return params, x, y


def _mlp(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def _train(opt, params, loss_fn, steps, *, scaled=False):
    """``steps`` updates in one jitted scan; ``scaled`` differentiates ``scale_loss(loss, state)``."""

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            if scaled:
                g = jax.grad(lambda q: mp.scale_loss(loss_fn(q), s))(p)
            else:
                g = jax.grad(loss_fn)(p)
            u, s = opt.update(g, s, p)
            return (jopt.apply_updates(p, u), s), None

        (p, s), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return p, s

    return run(params)


# --- Policy ------------------------------------------------------------------------------------


def test_policy_casts_floating_leaves_only():
    policy = mp.Policy.from_string("params=float32,compute=bfloat16,output=float32")
    assert (policy.param_dtype, policy.compute_dtype, policy.output_dtype) == (
        jnp.float32,
        jnp.bfloat16,
        jnp.float32,
    )
    tree = {"w": jnp.ones(3, jnp.float32), "n": jnp.arange(3), "mask": jnp.array([True])}
    out = policy.cast_to_compute(tree)
    assert out["w"].dtype == jnp.bfloat16 and out["n"].dtype == tree["n"].dtype
    assert out["mask"].dtype == jnp.bool_
    assert policy.cast_to_output(out)["w"].dtype == jnp.float32
    assert policy.cast_to_param(out)["w"].dtype == jnp.float32
    assert mp.Policy.from_string("p=f32,c=f16,o=f32").compute_dtype == jnp.float16
    assert mp.Policy.from_string("bf16") == mp.Policy(jnp.bfloat16, jnp.bfloat16, jnp.bfloat16)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"compute_dtype": jnp.int32}, "compute_dtype"), ({"param_dtype": "nonsense"}, "param_dtype")],
)
def test_policy_rejects_bad_dtypes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mp.Policy(**kwargs)
    with pytest.raises(ValueError, match="spec"):
        mp.Policy.from_string("params=float32,weights=bf16")


@pytest.mark.parametrize(
    "name, kwargs", [("adam", {"learning_rate": 1e-2}), ("sgd", {"learning_rate": 0.1, "momentum": 0.9})]
)
def test_bf16_compute_reaches_fp32_loss(name, kwargs):
    """bf16 compute with fp32 master params: final loss within 5% (relative) of the fp32 run."""
    params, x, y = _mlp_problem()
    policy = mp.Policy.from_string("params=float32,compute=bfloat16,output=float32")

    def loss32(p):
        return jnp.mean((_mlp(p, x) - y) ** 2)

    def loss_bf16(p):
        out = _mlp(policy.cast_to_compute(p), policy.cast_to_compute(x))
        return jnp.mean((policy.cast_to_output(out) - y) ** 2)

    opt = getattr(jopt, name)(**kwargs)
    p32, _ = _train(opt, params, loss32, 300)
    pbf, state = _train(opt, params, loss_bf16, 300)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(pbf))
    assert all(
        leaf.dtype == jnp.float32
        for leaf in jax.tree.leaves(state)
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    )
    initial, final32, final_bf = float(loss32(params)), float(loss32(p32)), float(loss32(pbf))
    assert final32 < 0.2 * initial
    assert abs(final_bf - final32) <= 0.05 * final32, (final_bf, final32)


# --- Dynamic loss scaling ------------------------------------------------------------------------


def _overflow_problem():
    """Linear least squares with a *summed* loss and large inputs: fp16 gradients overflow at scale 1."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(100.0 * rng.normal(size=(64, 4)), jnp.float32)
    w_true = jnp.asarray(rng.normal(size=(4, 1)), jnp.float32)
    return {"w": jnp.zeros((4, 1), jnp.float32)}, x, x @ w_true


def _fp16_loss(x, y):
    policy = mp.Policy.from_string("params=float32,compute=float16,output=float32")

    def loss(p):
        pred = policy.cast_to_compute(x) @ policy.cast_to_compute(p["w"])
        return jnp.sum((policy.cast_to_output(pred) - y) ** 2)

    return loss


def test_fp16_overflow_recovers_with_dynamic_loss_scale():
    params, x, y = _overflow_problem()
    loss16 = _fp16_loss(x, y)

    def loss32(p):
        return jnp.sum((x @ p["w"] - y) ** 2)

    g16 = jax.grad(loss16)(params)["w"]
    assert not np.all(np.isfinite(np.asarray(g16)))  # unscaled fp16 gradient overflows

    steps = 200
    plain, _ = _train(jopt.adam(0.05), params, loss16, steps)
    assert not np.all(np.isfinite(np.asarray(plain["w"])))  # and ruins training

    opt = mp.dynamic_loss_scale(jopt.adam(0.05), initial_scale=1.0, growth_interval=20, min_scale=2.0**-20)
    scaled, state = _train(opt, params, loss16, steps, scaled=True)
    ref, _ = _train(jopt.adam(0.05), params, loss32, steps)
    # Early overflows were skipped while the scale backed off below 1 (how many depends on the
    # backend's fp16 matmul); as the residual (and the gradient) shrank, the scale grew back.
    assert int(state.skipped) >= 1 and float(state.loss_scale) > 2.0**-20
    assert np.all(np.isfinite(np.asarray(scaled["w"])))
    initial, final_ref, final = float(loss32(params)), float(loss32(ref)), float(loss32(scaled))
    assert final_ref < 1e-3 * initial
    # Tolerance: fp16 rounding of x and w (~1e-3 relative) bounds how far the fit can go.
    assert final < 1e-3 * initial, (final, final_ref, initial)
    np.testing.assert_allclose(np.asarray(scaled["w"]), np.asarray(ref["w"]), rtol=0.02, atol=0.02)


def _reference_scale_trajectory(finite_flags, s0, growth, backoff, interval, lo, hi):
    s, good, skipped, out = s0, 0, 0, []
    for ok in finite_flags:
        if ok:
            good += 1
            if good >= interval:
                s, good = min(s * growth, hi), 0
        else:
            s, good, skipped = max(s * backoff, lo), 0, skipped + 1
        out.append((s, good, skipped))
    return out


def test_loss_scale_rule_matches_reference_and_skips_steps():
    hp = dict(
        initial_scale=8.0,
        growth_factor=2.0,
        backoff_factor=0.25,
        growth_interval=3,
        min_scale=1.0,
        max_scale=32.0,
    )
    opt = mp.dynamic_loss_scale(jopt.sgd(0.5, momentum=0.9), **hp)
    flags = [c == "1" for c in "11101000111111111"]
    params = {"w": jnp.array([1.0, -2.0])}
    state = opt.init(params)
    update = jax.jit(opt.update)
    expected = _reference_scale_trajectory(flags, 8.0, 2.0, 0.25, 3, 1.0, 32.0)
    for ok, (s, good, skipped) in zip(flags, expected, strict=True):
        scale = float(state.loss_scale)
        g = {"w": jnp.array([0.5, jnp.inf if not ok else 1.0]) * scale}
        u, new_state = update(g, state, params)
        if ok:  # the inner optimizer sees the unscaled gradient
            ref_u, ref_inner = jopt.sgd(0.5, momentum=0.9).update(
                {"w": jnp.array([0.5, 1.0])}, state.inner_state, params
            )
            assert_trees_close(u, ref_u, rtol=1e-6, atol=0)
            assert_trees_close(new_state.inner_state, ref_inner, rtol=1e-6, atol=0)
        else:  # skipped: zero update, inner state untouched
            assert_trees_close(u, {"w": jnp.zeros(2)}, rtol=0, atol=0)
            assert_trees_close(new_state.inner_state, state.inner_state, rtol=0, atol=0)
        got = (float(new_state.loss_scale), int(new_state.good_steps), int(new_state.skipped))
        assert got == (s, good, skipped)
        assert bool(new_state.last_finite) == ok
        params = jopt.apply_updates(params, u)
        state = new_state
    assert float(mp.current_loss_scale(jopt.chain(jopt.identity(), opt).init(params))) == 8.0


def test_loss_scale_hyperparams_are_data_under_jit_and_vmap():
    params = {"w": jnp.ones(3)}
    flags = [True, False, True, True, True, False, True]

    def run(s0, interval, backoff):
        opt = mp.dynamic_loss_scale(
            jopt.adam(0.1), initial_scale=s0, growth_interval=interval, backoff_factor=backoff
        )
        state = opt.init(params)
        p = params
        for ok in flags:
            g = {"w": jnp.where(ok, 1.0, jnp.nan) * jnp.arange(3.0) * state.loss_scale}
            u, state = opt.update(g, state, p)
            p = jopt.apply_updates(p, u)
        return p, state.loss_scale, state.skipped

    traces = []

    @jax.jit
    def batched(s0, interval, backoff):
        traces.append(1)
        return jax.vmap(run)(s0, interval, backoff)

    s0 = jnp.array([4.0, 16.0, 1024.0])
    interval = jnp.array([1, 2, 5])
    backoff = jnp.array([0.5, 0.25, 0.125])
    out = batched(s0, interval, backoff)
    batched(s0 * 2, interval + 1, backoff)  # new values: no retrace
    assert len(traces) == 1
    for i in range(3):
        single = run(float(s0[i]), int(interval[i]), float(backoff[i]))
        assert_trees_close(jax.tree.map(lambda a, i=i: a[i], out), single, rtol=1e-6, atol=1e-7)
    expected = [
        _reference_scale_trajectory(
            flags, float(s0[i]), 2.0, float(backoff[i]), int(interval[i]), 1.0, 2.0**24
        )[-1]
        for i in range(3)
    ]
    np.testing.assert_allclose(np.asarray(out[1]), [e[0] for e in expected], rtol=0)


def test_loss_scale_state_replicated_under_data_parallel_jit():
    params, x, y = _mlp_problem()
    opt = mp.dynamic_loss_scale(jopt.adam(1e-2), initial_scale=2.0**10)

    def loss(p, x, y):
        return jnp.mean((_mlp(p, x) - y) ** 2)

    def step(p, s, x, y):
        g = jax.grad(lambda q: mp.scale_loss(loss(q, x, y), s))(p)
        u, s = opt.update(g, s, p)
        return jopt.apply_updates(p, u), s

    mesh = jd.data_mesh(8)
    ps = jax.device_put(params, jd.replicated(mesh))
    state = jd.init_sharded(opt, ps)
    xs, ys = jax.device_put((x, y), jd.batch_sharding(mesh))
    p_ref, s_ref = params, opt.init(params)
    sharded_step, single_step = jax.jit(step), jax.jit(step)
    with jax.set_mesh(mesh):
        for _ in range(5):
            ps, state = sharded_step(ps, state, xs, ys)
    for _ in range(5):
        p_ref, s_ref = single_step(p_ref, s_ref, x, y)
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state))
    assert_trees_close(ps, p_ref, rtol=1e-4, atol=1e-5)
    assert_trees_close(state, s_ref, rtol=1e-4, atol=1e-5)


def test_shard_map_overflow_on_one_replica_skips_everywhere():
    """With mean_gradients_over first, one replica's inf makes every replica skip the step."""
    mesh = jd.data_mesh(8)
    opt = jopt.chain(jd.mean_gradients_over("data"), mp.dynamic_loss_scale(jopt.sgd(0.1), initial_scale=4.0))
    params = jax.device_put({"w": jnp.ones(2)}, jd.replicated(mesh))
    state = jd.init_sharded(opt, params)
    g = np.ones((8, 2), np.float32)
    g[3, 0] = np.inf  # replica 3 overflows
    g = jax.device_put(jnp.asarray(g), NamedSharding(mesh, P("data")))

    def local(p, s, g):
        u, s = opt.update({"w": g[0]}, s, p)
        return jopt.apply_updates(p, u), s

    new_p, new_s = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=(P(), P()))(
        params, state, g
    )
    np.testing.assert_array_equal(np.asarray(new_p["w"]), [1.0, 1.0])
    assert float(new_s[1].loss_scale) == 2.0 and int(new_s[1].skipped) == 1


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"initial_scale": 0.0}, "initial_scale"),
        ({"growth_factor": 0.5}, "growth_factor"),
        ({"backoff_factor": 0.0}, "backoff_factor"),
        ({"backoff_factor": 1.5}, "backoff_factor"),
        ({"growth_interval": 0}, "growth_interval"),
        ({"growth_interval": 2.5}, "growth_interval"),
        ({"min_scale": -1.0}, "min_scale"),
        ({"min_scale": 4.0, "max_scale": 2.0}, "max_scale"),
    ],
)
def test_loss_scale_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        mp.dynamic_loss_scale(jopt.sgd(0.1), **kwargs)


def test_current_loss_scale_needs_a_loss_scale_state():
    with pytest.raises(ValueError, match="LossScaleState"):
        mp.current_loss_scale(jopt.adam(1e-3).init({"w": jnp.ones(2)}))


# --- No hyperparameter is rounded to the low precision --------------------------------------------


# float16 only: 0.999 rounds there too (to 0.99902), so a rounded hyperparameter is caught, and its
# narrow range is the harder case for the loss scale; bfloat16 parameters are checked for every
# optimizer in tests/test_optimizers_generic.py::test_bfloat16_params_keep_dtype
@pytest.mark.parametrize("dtype", [jnp.float16])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_hyperparams_stay_float32_with_low_precision_params(name, dtype):
    signature = inspect.signature(getattr(jopt, name)).parameters
    # arrays are stored in the state (Python constants are not), so the logged values can be checked
    decays = {k: jnp.float32(0.999) for k in ("b2", "decay", "rho") if k in signature}  # 1.0 in bf16
    kwargs = {**OPTIMIZERS[name], **decays}
    opt = mp.dynamic_loss_scale(getattr(jopt, name)(**kwargs), initial_scale=2.0**17)
    params = {"w": jnp.full((4, 3), 0.5, dtype), "b": jnp.full((3,), -0.25, dtype)}
    grads = jax.tree.map(lambda p: (jnp.ones_like(p) * 60000.0).astype(dtype), params)  # fp16-representable
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(grads, state, params)
    if name == "adopt":  # ADOPT's first step only sets the second moment (a zero update)
        updates, state = jax.jit(opt.update)(grads, state, params)
    assert state.loss_scale.dtype == jnp.float32 and float(state.loss_scale) == 2.0**17  # > fp16 max
    assert bool(state.last_finite)  # 60000 / 2**17 computed in float32, not inf/0 in fp16
    checked = 0
    for key, value in jopt.current_hyperparams(state).items():
        assert value.dtype in (jnp.float32, jnp.int32, jnp.bool_), (key, value.dtype)
        # schedule-free AdamW logs its b2 as its second moment's "decay"
        logged = {"decay": "b2"} if name == "schedule_free_adamw" else {}
        if logged.get(key.split("/")[-1], key.split("/")[-1]) in decays:
            assert float(value) == np.float32(0.999), key
            checked += 1
    assert checked >= len(decays), (decays, jopt.current_hyperparams(state))
    for leaf in jax.tree.leaves(updates):
        assert leaf.dtype == dtype and bool(jnp.all(jnp.isfinite(leaf)))
    assert any(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(updates))
