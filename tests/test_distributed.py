"""Data-parallel training with jit + NamedSharding, shard_map and pmap equals single-device training.

Reference: the same optimizer run plainly on one device over the whole batch.
Sharded runs reduce the batch in a different order, so results agree to float32
rounding accumulated over ``STEPS`` steps: rtol 1e-4, atol 1e-5.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jopt
from jopt import distributed as jd
from tests.reference import assert_trees_close

STEPS = 10
TOL = {"rtol": 1e-4, "atol": 1e-5}
N_DEV = 8


def _problem():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)
    y = jnp.asarray(np.sin(x[:, :2] * 1.5), jnp.float32)
    params = {
        "w1": jnp.asarray(rng.normal(size=(5, 16)) / np.sqrt(5), jnp.float32),
        "b1": jnp.zeros(16, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(16, 2)) / 4, jnp.float32),
    }
    return params, x, y


def _loss(p, x, y):
    h = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]
    return jnp.mean((h - y) ** 2)


def _optimizers():
    return {"sgd": jopt.sgd(0.1, momentum=0.9), "adamw": jopt.adamw(1e-2, weight_decay=0.1)}


def _single_device(opt, params, x, y, steps=STEPS):
    @jax.jit
    def step(p, s):
        g = jax.grad(_loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return jopt.apply_updates(p, u), s

    state = opt.init(params)
    losses = []
    for _ in range(steps):
        losses.append(float(_loss(params, x, y)))
        params, state = step(params, state)
    return params, state, losses


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_jit_named_sharding_equals_single_device(name, axis_type):
    opt = _optimizers()[name]
    params, x, y = _problem()
    mesh = jd.data_mesh(N_DEV, axis_type=axis_type)
    xs, ys = jax.device_put((x, y), jd.batch_sharding(mesh))
    ps = jax.device_put(params, jd.replicated(mesh))
    state = jd.init_sharded(opt, ps)

    @jax.jit  # the unchanged single-device step
    def step(p, s, x, y):
        g = jax.grad(_loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return jopt.apply_updates(p, u), s

    with jax.set_mesh(mesh):
        for _ in range(STEPS):
            ps, state = step(ps, state, xs, ys)
    for leaf in jax.tree.leaves((ps, state)):
        assert leaf.sharding.is_fully_replicated
    assert xs.addressable_shards[0].data.shape == (64 // N_DEV, 5)
    ref_params, ref_state, _ = _single_device(opt, params, x, y)
    assert_trees_close(ps, ref_params, **TOL)
    assert_trees_close(state, ref_state, **TOL)


def _shard_map_step(tx, mesh, axis="data", check_vma=True, out_param_spec=None):
    def local(p, s, x, y):
        # Differentiate this replica's shard only. With check_vma, mark the parameters per-replica
        # (varying) so autodiff does not sum their gradients over the replicas itself.
        p_local = jax.lax.pcast(p, axis, to="varying") if check_vma else p
        g = jax.grad(_loss)(p_local, x, y)
        u, s = tx.update(g, s, p)
        return jopt.apply_updates(p, u), s

    return jax.jit(
        jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), P(), P(axis), P(axis)),
            out_specs=(P() if out_param_spec is None else out_param_spec, P()),
            check_vma=check_vma,
        )
    )


def _placed(tx, mesh):
    params, x, y = _problem()
    xs, ys = jax.device_put((x, y), jd.batch_sharding(mesh))
    ps = jax.device_put(params, jd.replicated(mesh))
    return ps, jd.init_sharded(tx, ps), xs, ys


@pytest.mark.parametrize("check_vma", [True, False])
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_shard_map_with_mean_gradients_equals_single_device(name, check_vma):
    opt = _optimizers()[name]
    tx = jopt.chain(jd.mean_gradients_over("data"), opt)
    mesh = jd.data_mesh(N_DEV)
    ps, state, xs, ys = _placed(tx, mesh)
    step = _shard_map_step(tx, mesh, check_vma=check_vma)
    for _ in range(STEPS):
        ps, state = step(ps, state, xs, ys)
    ref_params, ref_state, _ = _single_device(opt, *_problem())
    assert_trees_close(ps, ref_params, **TOL)
    assert_trees_close(state[1], ref_state, **TOL)


def test_shard_map_already_summed_gradient_raises():
    """check_vma=True, replicated params: autodiff sums over replicas; averaging again is refused."""
    tx = jopt.chain(jd.mean_gradients_over("data"), jopt.sgd(0.1))
    mesh = jd.data_mesh(N_DEV)
    ps, state, xs, ys = _placed(tx, mesh)

    def local(p, s, x, y):
        u, s = tx.update(jax.grad(_loss)(p, x, y), s, p)
        return jopt.apply_updates(p, u), s

    step = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")), out_specs=(P(), P()))
    with pytest.raises(ValueError, match="pcast"):
        step(ps, state, xs, ys)


def test_shard_map_without_averaging_replicas_diverge():
    """Without the mean, each replica follows its own shard's gradient (why the transform exists)."""
    opt = jopt.sgd(0.1)
    mesh = jd.data_mesh(N_DEV)
    ps, state, xs, ys = _placed(opt, mesh)
    step = _shard_map_step(opt, mesh, check_vma=False, out_param_spec=P("data"))
    stacked, _ = step(ps, state, xs, ys)  # per-replica parameters stacked on axis 0
    w1 = np.asarray(stacked["w1"]).reshape(N_DEV, 5, 16)
    assert np.max(np.abs(w1[0] - w1[1])) > 1e-4
    # Their mean is the data-parallel (averaged-gradient) SGD step, since SGD is linear in g.
    ref_params, _, _ = _single_device(opt, *_problem(), steps=1)
    np.testing.assert_allclose(w1.mean(axis=0), ref_params["w1"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_pmap_with_mean_gradients_equals_single_device(name):
    opt = _optimizers()[name]
    tx = jopt.chain(jd.mean_gradients_over("replica"), opt)
    params, x, y = _problem()
    n = jax.local_device_count()
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), params)
    state = jax.pmap(tx.init)(stacked)
    xs, ys = x.reshape(n, -1, 5), y.reshape(n, -1, 2)

    def local(p, s, x, y):
        g = jax.grad(_loss)(p, x, y)
        u, s = tx.update(g, s, p)
        return jopt.apply_updates(p, u), s

    step = jax.pmap(local, axis_name="replica")
    for _ in range(STEPS):
        stacked, state = step(stacked, state, xs, ys)
    ref_params, _, _ = _single_device(opt, params, x, y)
    for r in range(n):  # every replica holds the same parameters
        assert_trees_close(jax.tree.map(lambda a, r=r: a[r], stacked), ref_params, **TOL)


def test_mean_gradients_over_tuple_of_axes():
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Explicit,) * 2)
    tx = jd.mean_gradients_over(("data", "fsdp"))
    g = jax.device_put(jnp.arange(8.0), NamedSharding(mesh, P(("data", "fsdp"))))

    def local(g):
        u, _ = tx.update(g, tx.init(g))
        return u

    out = jax.shard_map(local, mesh=mesh, in_specs=P(("data", "fsdp")), out_specs=P())(g)
    np.testing.assert_allclose(np.asarray(out), [3.5], rtol=0)


@pytest.mark.parametrize("bad", ["", 3, (), ("data", 1), None])
def test_mean_gradients_over_rejects_bad_axis_name(bad):
    with pytest.raises(ValueError, match="axis_name"):
        jd.mean_gradients_over(bad)


def test_data_mesh_and_shardings():
    mesh = jd.data_mesh()
    assert mesh.shape == {"data": N_DEV} and mesh.axis_types == (AxisType.Explicit,)
    assert jd.data_mesh(2, "batch", axis_type=AxisType.Auto).shape == {"batch": 2}
    for bad in (0, N_DEV + 1, 1.5):
        with pytest.raises(ValueError, match="num_devices"):
            jd.data_mesh(bad)
    with pytest.raises(ValueError, match="axis_name"):
        jd.batch_sharding(mesh, "model")
    batch = jd.global_batch({"x": np.arange(16.0).reshape(8, 2)}, mesh)
    assert batch["x"].sharding.spec == P("data")
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(16.0).reshape(8, 2))


def test_data_parallel_example_equals_single_device():
    path = Path(__file__).resolve().parents[1] / "examples" / "data_parallel.py"
    spec = importlib.util.spec_from_file_location("example_data_parallel", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.STEPS = 5
    params, x, y = example.make_problem(batch=64)
    opt = jopt.adam(1e-2)
    ref, ref_loss = example.single_device(opt, params, x, y)
    for p, loss in (
        example.with_jit(opt, params, x, y, jd.data_mesh()),
        example.with_shard_map(opt, params, x, y, jd.data_mesh()),
        example.with_pmap(opt, params, x, y),
    ):
        assert_trees_close(p, ref, **TOL)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
