"""2-D parallelism: a ``data`` x ``model`` mesh training a tensor-parallel MLP block with jopt.

The batch is split over ``data``; the MLP's hidden layer is split over ``model``
(Megatron style: the first weight by columns, the second by rows). The optimizer
state is created directly sharded from abstract parameters
(``jopt.distributed.init_sharded`` on ``jax.ShapeDtypeStruct``), so every moment
lives where its parameter lives. The result is compared with single-device
training.

    python examples/model_parallel_2d.py                 # 8 simulated CPU devices: 4 x 2
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jopt  # noqa: E402
from jopt import distributed as jd  # noqa: E402

D_IN, D_HIDDEN, D_OUT, BATCH, STEPS = 16, 128, 16, 64, 30
SPECS = {
    "w1": P(None, "model"),  # column-parallel
    "b1": P("model"),
    "w2": P("model", None),  # row-parallel
    "b2": P(),
    "ln": P(),
}


def init_params():
    rng = np.random.default_rng(0)
    return {
        "w1": jnp.asarray(rng.normal(size=(D_IN, D_HIDDEN)) / np.sqrt(D_IN), jnp.float32),
        "b1": jnp.zeros(D_HIDDEN, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(D_HIDDEN, D_OUT)) / np.sqrt(D_HIDDEN), jnp.float32),
        "b2": jnp.zeros(D_OUT, jnp.float32),
        "ln": jnp.ones(D_IN, jnp.float32),
    }


def block(params, x, out_sharding=None):
    """Pre-norm residual MLP block: ``x + W2 gelu(W1 norm(x) + b1) + b2``."""
    h = x * jax.lax.rsqrt(jnp.mean(x**2, axis=-1, keepdims=True) + 1e-6) * params["ln"]
    h = jax.nn.gelu(h @ params["w1"] + params["b1"])  # hidden units sharded over "model"
    # Contracting the sharded hidden axis needs a sum over "model": say where the result lives.
    out = jnp.matmul(h, params["w2"], out_sharding=out_sharding)
    return x + out + params["b2"]


def make_step(opt, out_sharding=None):
    def loss_fn(params, x, y):
        return jnp.mean((block(params, x, out_sharding) - y) ** 2)

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return jopt.apply_updates(params, updates), state, loss

    return step


def run(steps: int = STEPS, verbose: bool = True):
    """Train sharded and on one device; returns (sharded params, sharded state, single-device params)."""
    n = jax.device_count()
    model = 2 if n % 2 == 0 else 1  # 8 devices: data=4 x model=2; one GPU: 1 x 1
    mesh = jax.make_mesh((n // model, model), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(BATCH, D_IN)), jnp.float32)
    y = jnp.asarray(np.tanh(np.asarray(x)[:, ::-1]), jnp.float32)
    opt = jopt.adamw(3e-3, weight_decay=1e-4)
    host = init_params()

    # Optimizer state from abstract, sharded parameters: nothing is materialised on one device.
    shardings = {k: NamedSharding(mesh, spec) for k, spec in SPECS.items()}
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[k]) for k, v in host.items()}
    state = jd.init_sharded(opt, abstract)
    params = jax.device_put(host, shardings)
    xs, ys = jax.device_put((x, y), NamedSharding(mesh, P("data", None)))

    step = make_step(opt, out_sharding=P("data", None))
    with jax.set_mesh(mesh):
        for i in range(steps):
            params, state, loss = step(params, state, xs, ys)
            if verbose and (i % 10 == 0 or i == steps - 1):
                print(f"step {i:3d}  loss {float(loss):.6f}")

    ref_step, ref_params, ref_state = make_step(opt), host, opt.init(host)
    for _ in range(steps):
        ref_params, ref_state, ref_loss = ref_step(ref_params, ref_state, x, y)
    if verbose:
        report(params, state, ref_params, float(ref_loss))
    return params, state, ref_params


def report(params, state, ref_params, ref_loss) -> None:
    adam_state = state[0]
    mesh = params["w1"].sharding.mesh
    print(f"\nparameter / first moment shardings (mesh {dict(mesh.shape)}):")
    for k in SPECS:
        shard = params[k].addressable_shards[0].data.shape
        print(f"  {k:3s} {str(params[k].shape):10s} {str(params[k].sharding.spec):22s} "
              f"mu {str(adam_state.mu[k].sharding.spec):22s} per-device shard {shard}")  # fmt: skip
    diff = max(float(jnp.max(jnp.abs(params[k] - ref_params[k]))) for k in SPECS)
    print(f"\nsingle device: loss {ref_loss:.6f}; max |param - single device| = {diff:.2e}")


if __name__ == "__main__":
    run()
