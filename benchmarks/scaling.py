"""Scaling of jopt training over devices, and optimizer-state memory per parameter.

Table 1 -- for 1, 2, 4, 8 devices, an MLP (``--depth`` layers of ``--width``
squared) trained with AdamW in two layouts:

* ``data-parallel``: batch split over a ``data`` axis, parameters and optimizer
  state replicated (every device holds all of them);
* ``sharded-state``: batch split over ``data`` and parameters *and* optimizer
  state sharded over the same axis (FSDP / ZeRO-3: weights are all-gathered for
  the computation, gradients reduce-scattered, state created directly sharded
  with ``jopt.distributed.init_sharded``).

Columns: time per step (median of ``--steps``), the bytes of parameters plus
optimizer state resident on one device, and XLA's estimate of the peak memory
of one step on one device (arguments + outputs + temporaries, minus aliased
buffers). On CPU the devices are simulated threads sharing the host's cores,
so times show only the overhead of sharding, not speed-ups.

Table 2 -- optimizer-state bytes per parameter for every optimizer at several
dtype settings, from ``jax.eval_shape`` (nothing is allocated), for a
transformer-like set of shapes.

    python benchmarks/scaling.py                  # defaults sized for a laptop CPU
    python benchmarks/scaling.py --width 2048 --depth 8 --batch 1024   # on accelerators
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jopt  # noqa: E402
from jopt import distributed as jd  # noqa: E402

MiB = 2.0**20

OPTIMIZERS = {
    "sgd": {"learning_rate": 0.1},
    "sgd+momentum": {"learning_rate": 0.1, "momentum": 0.9},
    "heavy_ball_momentum": {"learning_rate": 0.1},
    "rmsprop": {"learning_rate": 1e-3},
    "adagrad": {"learning_rate": 0.1},
    "adadelta": {},
    "adam": {"learning_rate": 1e-3},
    "adamw": {"learning_rate": 1e-3},
    "nadam": {"learning_rate": 1e-3},
    "nadamw": {"learning_rate": 1e-3},
    "radam": {"learning_rate": 1e-3},
    "adabelief": {"learning_rate": 1e-3},
    "yogi": {"learning_rate": 1e-3},
    "amsgrad": {"learning_rate": 1e-3},
    "adamax": {"learning_rate": 1e-3},
    "lion": {"learning_rate": 1e-4},
    "sign_sgd": {"learning_rate": 1e-4},
    "lamb": {"learning_rate": 1e-3},
    "lars": {"learning_rate": 0.1},
    "novograd": {"learning_rate": 1e-3},
    "adafactor": {"learning_rate": 1e-3},
    "adafactor+momentum": {"learning_rate": 1e-3, "momentum": 0.9},
}
# Keyword that sets the dtype of each kind of moment, by optimizer signature.
FIRST_MOMENT_ARGS = ("mu_dtype", "accumulator_dtype", "dtype_momentum")
SECOND_MOMENT_ARGS = ("nu_dtype",)


# --- Table 1: step time and memory over devices ------------------------------------------------


def make_params(width: int, depth: int):
    rng = np.random.default_rng(0)
    return {
        f"layer{i}": {
            "w": jnp.asarray(rng.normal(size=(width, width)) / np.sqrt(width), jnp.float32),
            "b": jnp.zeros(width, jnp.float32),
        }
        for i in range(depth)
    }


def loss_fn(params, x, gather: bool):
    h = x
    for layer in params.values():
        w, b = layer["w"], layer["b"]
        if gather:  # FSDP: all-gather the sharded weight for the computation
            w, b = jax.reshard(w, P()), jax.reshard(b, P())
        h = jnp.tanh(h @ w + b)
    return jnp.mean((h - x) ** 2)


def bytes_on_device0(tree) -> int:
    device = jax.devices()[0]
    total = 0
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            if shard.device == device:
                total += shard.data.nbytes
    return total


def run_layout(layout: str, n: int, args) -> dict:
    mesh = jd.data_mesh(n)
    opt = jopt.adamw(1e-3, weight_decay=1e-4)
    host = make_params(args.width, args.depth)
    if layout == "data-parallel":
        shardings = jax.tree.map(lambda _: jd.replicated(mesh), host)
    else:
        shardings = jax.tree.map(lambda a: NamedSharding(mesh, P("data", *[None] * (a.ndim - 1))), host)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), host, shardings)
    state = jd.init_sharded(opt, abstract)
    params = jax.device_put(host, shardings)
    x = jax.device_put(
        jnp.asarray(np.random.default_rng(1).normal(size=(args.batch, args.width)), jnp.float32),
        jd.batch_sharding(mesh),
    )
    gather = layout != "data-parallel"

    def step(p, s, x):
        loss, g = jax.value_and_grad(loss_fn)(p, x, gather)
        u, s = opt.update(g, s, p)
        return jopt.apply_updates(p, u), s, loss

    with jax.set_mesh(mesh):
        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, x).compile()
        resident = bytes_on_device0((params, state))
        mem = compiled.memory_analysis()
        peak = None
        if mem is not None:
            peak = (
                mem.argument_size_in_bytes
                + mem.output_size_in_bytes
                - mem.alias_size_in_bytes
                + mem.temp_size_in_bytes
            )
        params, state, loss = compiled(params, state, x)  # warm-up
        jax.block_until_ready(loss)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            params, state, loss = compiled(params, state, x)
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - start)
    return {"ms": 1e3 * statistics.median(times), "resident": resident, "peak": peak}


def table_scaling(args) -> None:
    counts = [n for n in args.devices if n <= jax.device_count()]
    n_params = args.depth * (args.width**2 + args.width)
    print(
        f"\nTable 1: AdamW, MLP {args.depth} x {args.width}^2 ({n_params / 1e6:.2f}M params), "
        f"global batch {args.batch}, {jax.devices()[0].platform}, {jax.device_count()} devices available"
    )
    header = f"{'layout':<15}{'devices':>8}{'ms/step':>10}{'params+state MiB/dev':>22}{'peak MiB/dev':>14}"
    print(header)
    print("-" * len(header))
    for layout in ("data-parallel", "sharded-state"):
        for n in counts:
            r = run_layout(layout, n, args)
            peak = "n/a" if r["peak"] is None else f"{r['peak'] / MiB:.2f}"
            print(f"{layout:<15}{n:>8}{r['ms']:>10.2f}{r['resident'] / MiB:>22.2f}{peak:>14}")


# --- Table 2: optimizer-state bytes per parameter -----------------------------------------------


def transformer_shapes(d: int = 1024, layers: int = 2):
    """Shapes of ``layers`` transformer blocks (attention + 4x MLP + norms) of width ``d``."""
    block = {
        "qkv": (d, 3 * d),
        "out": (d, d),
        "mlp_in": (d, 4 * d),
        "mlp_in_b": (4 * d,),
        "mlp_out": (4 * d, d),
        "mlp_out_b": (d,),
        "ln1": (d,),
        "ln2": (d,),
    }
    return {f"block{i}": dict(block) for i in range(layers)}


def state_bytes_per_param(name: str, kwargs: dict, setting: str) -> float | None:
    factory = getattr(jopt, name.split("+")[0])
    signature = inspect.signature(factory).parameters
    kwargs = dict(kwargs)
    param_dtype = jnp.float32
    if setting in ("mu=bf16", "mu,nu=bf16"):
        first = [a for a in FIRST_MOMENT_ARGS if a in signature]
        if not first:
            return None
        kwargs[first[0]] = jnp.bfloat16
    if setting == "mu,nu=bf16":
        second = [a for a in SECOND_MOMENT_ARGS if a in signature]
        if not second:
            return None
        kwargs[second[0]] = jnp.bfloat16
    if setting == "bf16 params":
        param_dtype = jnp.bfloat16
    opt = factory(**kwargs)
    params = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, param_dtype),
        transformer_shapes(),
        is_leaf=lambda x: isinstance(x, tuple),
    )
    state = jax.eval_shape(opt.init, params)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    state_bytes = sum(int(np.prod(s.shape)) * jnp.dtype(s.dtype).itemsize for s in jax.tree.leaves(state))
    return state_bytes / n_params


def table_state_bytes() -> None:
    settings = ("fp32", "mu=bf16", "mu,nu=bf16", "bf16 params")
    print(
        "\nTable 2: optimizer-state bytes per parameter (2 transformer blocks, d=1024; "
        "fp32 params unless noted; '-' = no such dtype option)"
    )
    header = f"{'optimizer':<22}" + "".join(f"{s:>13}" for s in settings)
    print(header)
    print("-" * len(header))
    for name, kwargs in OPTIMIZERS.items():
        if not hasattr(jopt, name.split("+")[0]):
            print(f"{name:<22}  (not in jopt)")
            continue
        cells = [state_bytes_per_param(name, kwargs, s) for s in settings]
        print(f"{name:<22}" + "".join(f"{'-' if c is None else f'{c:.3f}':>13}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 8])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip-scaling", action="store_true", help="only print the state-bytes table")
    args = parser.parse_args()
    if not args.skip_scaling:
        table_scaling(args)
    table_state_bytes()


if __name__ == "__main__":
    main()
