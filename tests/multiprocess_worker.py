"""One process of a multi-process data-parallel jopt run (used by ``tests/test_multiprocess.py``).

Run as a script, one copy per process::

    python tests/multiprocess_worker.py --coordinator 127.0.0.1:PORT --num-processes 2 \
        --process-id 0 --local-devices 2 --out /tmp/result0.npz

Each process simulates ``--local-devices`` CPU devices, joins the job with
``jax.distributed.initialize``, feeds its own rows of the global batch and runs
the *same* jitted data-parallel step as a single-process program. On a GPU
cluster or TPU pod the same code runs with ``jax.distributed.initialize()``
(no arguments: the cluster environment provides them) and real devices.

Importing this module (as the test does for :func:`problem` and
:func:`train_step`) has no side effects.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # device flags must be set before JAX is imported
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from processes import worker_arguments

    ARGS = worker_arguments(__doc__)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jopt  # noqa: E402
from jopt import distributed as jd  # noqa: E402

GLOBAL_BATCH = 64
STEPS = 8


def problem():
    """Deterministic (params, x, y): the same arrays in every process."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH, 5)).astype(np.float32)
    y = np.sin(1.5 * x[:, :2]).astype(np.float32)
    params = {
        "w1": (rng.normal(size=(5, 16)) / np.sqrt(5)).astype(np.float32),
        "b1": np.zeros(16, np.float32),
        "w2": (rng.normal(size=(16, 2)) / 4).astype(np.float32),
    }
    return params, x, y


def loss(p, x, y):
    h = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]
    return jnp.mean((h - y) ** 2)


def optimizer():
    return jopt.adamw(1e-2, weight_decay=0.1)


def train_step(opt):
    """The single-device training step; data parallelism comes from the inputs' shardings."""

    @jax.jit
    def step(p, s, x, y):
        value, g = jax.value_and_grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return jopt.apply_updates(p, u), s, value

    return step


def main(args) -> None:
    from processes import join_job

    join_job(args)
    assert jax.process_count() == args.num_processes
    assert jax.device_count() == args.num_processes * args.local_devices

    mesh = jd.data_mesh()  # every device of every process on the "data" axis
    params, x, y = problem()
    rows = GLOBAL_BATCH // jax.process_count()
    mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    xs, ys = jd.global_batch((x[mine], y[mine]), mesh)  # each process feeds only its rows
    params = jax.tree.map(lambda a: jax.make_array_from_process_local_data(jd.replicated(mesh), a), params)
    opt = optimizer()
    state = jd.init_sharded(opt, params)
    step = train_step(opt)
    losses = []
    with jax.set_mesh(mesh):
        for _ in range(STEPS):
            params, state, value = step(params, state, xs, ys)
            losses.append(float(value.addressable_data(0)))
    host = {k: np.asarray(v.addressable_data(0)) for k, v in params.items()}
    np.savez(args.out, losses=np.asarray(losses), devices=jax.device_count(), **host)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(ARGS)
