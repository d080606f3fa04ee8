"""Step time and compile time of jopt vs optax, side by side in one process.

Optimizer: AdamW with global-norm clipping and a warmup-cosine learning-rate
schedule, on parameter trees of 10, 100 and 1000 leaves. For each size we time
(a) lowering + compiling the jitted step (``--rounds`` alternating compiles, minimum kept) and
(b) the median wall time of the compiled step over ``--repeats`` calls after warm-up, the two
libraries' calls interleaved so that machine noise affects both alike, and print the
jopt/optax ratios.

Usage:  python benchmarks/step_overhead.py [--repeats 1000] [--sizes 10 100 1000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt


def make_params(n_leaves: int, seed: int = 0) -> dict:
    """``n_leaves`` leaves alternating (64, 64) matrices and (64,) vectors, like an MLP."""
    rng = np.random.default_rng(seed)
    shapes = [(64, 64) if i % 2 == 0 else (64,) for i in range(n_leaves)]
    return {f"p{i:04d}": jnp.asarray(rng.normal(size=s), jnp.float32) for i, s in enumerate(shapes)}


def jopt_tx():
    lr = jopt.schedules.warmup_cosine_decay(0.0, 1e-3, 100, 10_000, end_value=1e-5)
    return jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(lr, weight_decay=1e-4))


def optax_tx():
    lr = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 100, 10_000, end_value=1e-5)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=1e-4))


def compile_step(make_tx, params, grads) -> dict:
    """Lower and compile one jitted train step; returns the executable, its state and compile time."""
    tx = make_tx()

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(params, state, grads).compile()
    return {"compiled": compiled, "state": state, "compile_s": time.perf_counter() - t0}


def time_interleaved(runs: dict[str, dict], params, grads, repeats: int) -> dict[str, float]:
    """Median step time of each compiled step, calls interleaved so machine noise hits all alike."""
    carry = {k: (params, r["state"]) for k, r in runs.items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(repeats + 5):
        for k, r in runs.items():
            t0 = time.perf_counter()
            carry[k] = r["compiled"](*carry[k], grads)
            jax.block_until_ready(carry[k])
            if i >= 5:  # warm-up calls are not timed
                times[k].append(time.perf_counter() - t0)
    for k in runs:
        runs[k]["final"] = carry[k][0]
    return {k: 1e6 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the minimum is kept")
    args = parser.parse_args()

    dev = jax.devices()[0]
    print(
        f"# jax {jax.__version__}, optax {optax.__version__}, device {dev.device_kind} ({dev.platform}), "
        f"{platform.processor() or platform.machine()}"
    )
    header = (
        f"{'leaves':>6} | {'optax compile s':>15} | {'jopt compile s':>14} | {'ratio':>5} | "
        f"{'optax step us':>13} | {'jopt step us':>12} | {'ratio':>5} | {'max |diff|':>9}"
    )
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        params = make_params(n)
        grads = make_params(n, seed=1)
        # Compile alternately (`--rounds` times, minimum kept), then time the calls interleaved.
        compiles = {"optax": [], "jopt": []}
        for _ in range(args.rounds):
            for name, make in (("optax", optax_tx), ("jopt", jopt_tx)):
                compiles[name].append(compile_step(make, params, grads))
        oc, jc = (min(r["compile_s"] for r in compiles[k]) for k in ("optax", "jopt"))
        runs = {k: v[-1] for k, v in compiles.items()}
        step_us = time_interleaved(runs, params, grads, args.repeats)
        os_, js = step_us["optax"], step_us["jopt"]
        o, j = runs["optax"], runs["jopt"]
        diff = max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(o["final"]), jax.tree.leaves(j["final"]))
        )
        print(
            f"{n:>6} | {oc:>15.3f} | {jc:>14.3f} | {jc / oc:>5.2f} | {os_:>13.1f} | {js:>12.1f} | "
            f"{js / os_:>5.2f} | {diff:>9.2e}"
        )
    print("ratio = jopt / optax (below 1.00: jopt faster)")


if __name__ == "__main__":
    main()
