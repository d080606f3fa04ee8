"""Data-parallel training with jopt: ``jit`` + ``NamedSharding``, ``shard_map`` and ``pmap``.

The batch is split over a ``data`` mesh axis and the parameters (and optimizer
state) are replicated. Each variant is compared with plain single-device
training on the whole batch.

* ``jit``: the single-device step, unchanged; shardings on the inputs are all it takes.
* ``shard_map``: each device differentiates its own shard, and
  ``jopt.distributed.mean_gradients_over("data")`` at the head of the chain
  averages the gradients.
* ``pmap`` (maintenance mode in JAX, still common): the same transform over the pmap axis.

Run on CPU (8 simulated devices) or on any machine with several accelerators::

    python examples/data_parallel.py
"""

from __future__ import annotations

import os

# Simulate 8 CPU devices when no accelerator is present (ignored by GPU/TPU backends).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jopt  # noqa: E402
from jopt import distributed as jd  # noqa: E402

STEPS = 50


def make_problem(batch: int):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, 8)), jnp.float32)
    y = jnp.asarray(np.sin(2.0 * np.asarray(x[:, :2])), jnp.float32)
    params = {
        "w1": jnp.asarray(rng.normal(size=(8, 64)) / np.sqrt(8), jnp.float32),
        "b1": jnp.zeros(64, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(64, 2)) / 8, jnp.float32),
    }
    return params, x, y


def loss_fn(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]
    return jnp.mean((h - y) ** 2)


def make_step(opt):
    """The ordinary single-device training step."""

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return jopt.apply_updates(params, updates), state, loss

    return step


def single_device(opt, params, x, y):
    step, state = make_step(opt), opt.init(params)
    for _ in range(STEPS):
        params, state, loss = step(params, state, x, y)
    return params, float(loss)


def with_jit(opt, params, x, y, mesh):
    x, y = jax.device_put((x, y), jd.batch_sharding(mesh))  # rows split over "data"
    params = jax.device_put(params, jd.replicated(mesh))
    state = jd.init_sharded(opt, params)  # replicated like the parameters
    step = make_step(opt)
    with jax.set_mesh(mesh):
        for _ in range(STEPS):
            params, state, loss = step(params, state, x, y)
    return params, float(loss)


def with_shard_map(opt, params, x, y, mesh):
    tx = jopt.chain(jd.mean_gradients_over("data"), opt)

    def local_step(params, state, x, y):
        # Differentiate with respect to per-replica ("varying") parameters, so that each device gets
        # its own shard's gradient and mean_gradients_over does the averaging.
        local = jax.lax.pcast(params, "data", to="varying")
        loss, grads = jax.value_and_grad(loss_fn)(local, x, y)
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state, jax.lax.pmean(loss, "data")

    step = jax.jit(
        jax.shard_map(
            local_step, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")), out_specs=(P(), P(), P())
        )
    )
    x, y = jax.device_put((x, y), jd.batch_sharding(mesh))
    params = jax.device_put(params, jd.replicated(mesh))
    state = jd.init_sharded(tx, params)
    for _ in range(STEPS):
        params, state, loss = step(params, state, x, y)
    return params, float(loss)


def with_pmap(opt, params, x, y):
    tx = jopt.chain(jd.mean_gradients_over("replica"), opt)
    n = jax.local_device_count()

    def local_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state, jax.lax.pmean(loss, "replica")

    step = jax.pmap(local_step, axis_name="replica")
    params = jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), params)  # one copy per device
    state = jax.pmap(tx.init)(params)
    x, y = x.reshape(n, -1, x.shape[-1]), y.reshape(n, -1, y.shape[-1])
    for _ in range(STEPS):
        params, state, loss = step(params, state, x, y)
    return jax.tree.map(lambda a: a[0], params), float(loss[0])


def max_diff(a, b) -> float:
    return max(jax.tree.leaves(jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a, b)))


def main() -> None:
    n = jax.device_count()
    params, x, y = make_problem(batch=32 * n)
    opt = jopt.adamw(1e-2, weight_decay=1e-4)
    mesh = jd.data_mesh()
    print(f"{n} devices ({jax.devices()[0].platform}), global batch {x.shape[0]}, {STEPS} steps of adamw")
    ref, ref_loss = single_device(opt, params, x, y)
    print(f"{'single device':>14}: loss {ref_loss:.6f}")
    for name, (p, loss) in {
        "jit": with_jit(opt, params, x, y, mesh),
        "shard_map": with_shard_map(opt, params, x, y, mesh),
        "pmap": with_pmap(opt, params, x, y),
    }.items():
        print(f"{name:>14}: loss {loss:.6f}   max |param - single device| = {max_diff(p, ref):.2e}")


if __name__ == "__main__":
    main()
