"""Optimizer step and compile time: jopt fused and unfused, optax, optax.flatten, and the floor.

Optimizer: AdamW with global-norm clipping and a warmup-cosine learning-rate
schedule. For each parameter count (``--params``) and number of leaves
(``--leaves``) the parameters are split into that many leaves of equal size
(alternating matrices and vectors), the gradients arrive as such a tree, and we
compare, in one process:

* ``optax``       -- ``optax.chain(clip_by_global_norm, adamw)`` on the tree;
* ``optax.flat``  -- the same inside ``optax.flatten`` (concatenates every step);
* ``jopt``        -- jopt's unfused optimizer on the tree;
* ``fused.tree``  -- ``jopt.fuse(...)`` used as a drop-in (trees in and out, state packed);
* ``fused``       -- ``jopt.fuse(...)`` with packed parameters (``opt.pack(params)``;
  the gradients arrive as a tree and are packed inside the step);
* ``fused.pg``    -- the same with the gradients arriving packed, as ``jax.grad`` of a
  loss of ``flat.unpack()`` gives them (the pack moves into the backward pass);
* ``floor``       -- jopt's optimizer on a single leaf with the same number of
  parameters: the memory-bandwidth floor of the step.

For each variant: lowering + compile time (the minimum of ``--rounds``), the
median wall time of the compiled step over ``--repeats`` calls (all variants'
calls interleaved, so machine noise hits them alike; parameters and state are
donated, as in a training loop), XLA's estimate of the step's peak memory
(arguments + outputs - aliased + temporaries) and the largest difference of the
final parameters from the unfused jopt run.

Usage:  python benchmarks/step_overhead.py [--quick] [--params 2e6 2e7] [--leaves 10 100 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt

VARIANTS = ("optax", "optax.flat", "jopt", "fused.tree", "fused", "fused.pg", "floor")


def make_tree(n_params: int, n_leaves: int, seed: int = 0) -> dict:
    """``n_leaves`` leaves of ``n_params // n_leaves`` elements, alternating (64, k) matrices and vectors."""
    rng = np.random.default_rng(seed)
    size = max(n_params // n_leaves, 1)
    shapes = [(64, size // 64) if i % 2 == 0 and size % 64 == 0 else (size,) for i in range(n_leaves)]
    return {f"p{i:04d}": jnp.asarray(rng.normal(size=s), jnp.float32) for i, s in enumerate(shapes)}


def jopt_tx():
    lr = jopt.schedules.warmup_cosine_decay(0.0, 1e-3, 100, 10_000, end_value=1e-5)
    return jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(lr, weight_decay=1e-4))


def optax_tx():
    lr = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 100, 10_000, end_value=1e-5)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=1e-4))


def setup(variant: str, params: dict, grads: dict):
    """``(step, params, state, grads)``: the step takes ``(params, state, grads)``, grads a tree.

    The floor's parameters and gradients are single leaves. Parameters are copied (they are donated).
    """
    params = jax.tree.map(jnp.copy, params)
    if variant == "floor":
        params = {"w": jnp.concatenate([x.ravel() for x in params.values()])}
        grads = {"w": jnp.concatenate([x.ravel() for x in grads.values()])}
    tx = {
        "optax": optax_tx,
        "optax.flat": lambda: optax.flatten(optax_tx()),
        "jopt": jopt_tx,
        "floor": jopt_tx,
    }.get(variant, lambda: jopt.fuse(jopt_tx()))()
    packed = variant == "fused"
    if variant in ("fused", "fused.pg"):
        params = tx.pack(params)
    if variant == "fused.pg":
        grads = params.layout.pack(grads)

    def step(p, s, g):
        if packed:
            g = s.layout.pack(g)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return step, params, tx.init(params), grads


def compile_step(variant: str, params: dict, grads: dict, rounds: int) -> dict:
    best = None
    for _ in range(rounds):
        step, p, s, g = setup(variant, params, grads)
        t0 = time.perf_counter()
        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(p, s, g).compile()
        seconds = time.perf_counter() - t0
        if best is None or seconds < best["compile_s"]:
            best = {"compiled": compiled, "params": p, "state": s, "grads": g, "compile_s": seconds}
    mem = best["compiled"].memory_analysis()
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
    best["peak_mb"] = (peak + mem.temp_size_in_bytes) / 2**20
    return best


def time_interleaved(runs: dict[str, dict], repeats: int) -> dict[str, float]:
    """Median step time (ms) of each compiled step; calls interleaved so machine noise hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(repeats + 5):
        for k, r in runs.items():
            t0 = time.perf_counter()
            r["params"], r["state"] = r["compiled"](r["params"], r["state"], r["grads"])
            jax.block_until_ready(r["params"])
            if i >= 5:  # warm-up calls are not timed
                times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def final_params(variant: str, r: dict) -> list[jax.Array]:
    p = r["params"]
    if variant in ("fused", "fused.pg"):
        p = p.unpack()
    if variant == "floor":
        return [p["w"]]
    return jax.tree.leaves(p)


def run_size(n_params: int, n_leaves: int, args) -> list[dict]:
    params, grads = make_tree(n_params, n_leaves), make_tree(n_params, n_leaves, seed=1)
    runs = {v: compile_step(v, params, grads, args.rounds) for v in args.variants}
    ms = time_interleaved(runs, args.repeats)
    ref = final_params("jopt", runs["jopt"])
    rows = []
    for v, r in runs.items():
        diff = float("nan")
        if v != "floor":
            diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(final_params(v, r), ref))
        rows.append(
            {
                "variant": v,
                "compile_s": r["compile_s"],
                "step_ms": ms[v],
                "peak_mb": r["peak_mb"],
                "diff": diff,
            }
        )
    return rows


def print_table(n_params: int, n_leaves: int, rows: list[dict]) -> None:
    floor = next((r["step_ms"] for r in rows if r["variant"] == "floor"), float("nan"))
    ref = next((r["step_ms"] for r in rows if r["variant"] == "optax"), float("nan"))
    print(f"\n## {n_params / 1e6:g}M parameters in {n_leaves} leaves")
    header = (
        f"{'variant':>10} | {'compile s':>9} | {'step ms':>8} | {'/ floor':>7} | {'/ optax':>7} | "
        f"{'peak MB':>8} | {'max |diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['variant']:>10} | {r['compile_s']:>9.2f} | {r['step_ms']:>8.2f} | "
            f"{r['step_ms'] / floor:>7.2f} | {r['step_ms'] / ref:>7.2f} | {r['peak_mb']:>8.1f} | "
            f"{r['diff']:>10.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=float, nargs="+", default=[2e6, 2e7])
    parser.add_argument("--leaves", type=int, nargs="+", default=[10, 100, 500, 1000, 2000])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1, help="compiles per variant; the minimum is kept")
    parser.add_argument("--quick", action="store_true", help="2M parameters, 10/100/1000 leaves, 10 repeats")
    args = parser.parse_args()
    if args.quick:
        args.params, args.leaves, args.repeats = [2e6], [10, 100, 1000], 10
    if "jopt" not in args.variants:
        args.variants = ["jopt", *args.variants]

    dev = jax.devices()[0]
    print(
        f"# jax {jax.__version__}, optax {optax.__version__}, {dev.platform} ({dev.device_kind}), "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; load average "
        f"{os.getloadavg()[0]:.1f}; median of {args.repeats} steps, ratios to the floor and to optax"
    )
    for n_params in args.params:
        for n_leaves in args.leaves:
            print_table(int(n_params), n_leaves, run_size(int(n_params), n_leaves, args))
    print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
