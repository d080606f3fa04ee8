"""A real model with many leaves: a flax transformer (~600 leaves), fused optimizer vs optax.

A decoder-only transformer (flax.linen, pre-LayerNorm, ``--layers`` blocks of
16 leaves each: attention q/k/v/out kernels and biases, two LayerNorms, a
two-layer MLP) trained with AdamW + global-norm clipping + warmup-cosine
(weight decay masked off biases and LayerNorm scales) on random tokens. One
training step = forward, backward and optimizer update, jitted with the
parameters and state donated. Variants:

* ``optax``       -- optax on the parameter tree;
* ``jopt``        -- jopt unfused on the tree;
* ``fused.tree``  -- ``jopt.fuse`` as a drop-in (tree parameters, packed state);
* ``fused``       -- ``jopt.fuse`` with packed parameters: the loss is taken of
  ``flat.unpack()``, so the gradient is packed and the update is a few buffers.

Reported: lowering + compile time, median step time over ``--repeats`` calls
(variants interleaved) and the largest parameter difference from optax after
the timed steps.

Usage:  python benchmarks/fused_transformer.py [--quick] [--layers 37] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt

VARIANTS = ("optax", "jopt", "fused.tree", "fused")


class Block(nn.Module):
    heads: int
    mlp: int

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(
            h, h, mask=nn.make_causal_mask(x[..., 0])
        )
        h = nn.LayerNorm()(x)
        return x + nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp)(h)))


class Transformer(nn.Module):
    vocab: int
    dim: int
    layers: int
    heads: int

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.dim)(tokens)
        x = x + self.param("pos", nn.initializers.normal(0.02), (tokens.shape[-1], self.dim))
        for _ in range(self.layers):
            x = Block(self.heads, 4 * self.dim)(x)
        return nn.Dense(self.vocab)(nn.LayerNorm()(x))


def decay_mask(params):
    return jax.tree_util.tree_map_with_path(lambda path, x: x.ndim > 1 and "pos" not in str(path), params)


def make_tx(lib):
    if lib == "optax":
        lr = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 100, 10_000, end_value=1e-5)
        return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=0.1, mask=decay_mask))
    lr = jopt.schedules.warmup_cosine_decay(0.0, 1e-3, 100, 10_000, end_value=1e-5)
    return jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(lr, weight_decay=0.1, mask=decay_mask))


def setup(variant, model, params, batch):
    tx = make_tx("optax" if variant == "optax" else "jopt")
    if variant.startswith("fused"):
        tx = jopt.fuse(tx)
    packed = variant == "fused"
    params = jax.tree.map(jnp.copy, params)
    p = tx.pack(params) if packed else params

    def loss(p, tokens):
        tree = p.unpack() if packed else p
        logits = model.apply({"params": tree}, tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    def step(p, s, tokens):
        value, g = jax.value_and_grad(loss)(p, tokens)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, value

    state = tx.init(p)
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(p, state, batch).compile()
    return {"compiled": compiled, "params": p, "state": state, "compile_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=37)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--quick", action="store_true", help="8 layers (~134 leaves), 5 repeats")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.repeats = 8, 5

    model = Transformer(vocab=256, dim=args.dim, layers=args.layers, heads=4)
    rng = np.random.default_rng(0)
    batch = jnp.asarray(rng.integers(0, 256, size=(args.batch, args.seq + 1)), jnp.int32)
    params = model.init(jax.random.key(0), batch[:, :-1])["params"]
    n_leaves = len(jax.tree.leaves(params))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(
        f"# jax {jax.__version__}, optax {optax.__version__}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; transformer: {args.layers} layers, dim {args.dim}, {n_leaves} leaves, "
        f"{n_params / 1e6:.2f}M parameters, batch {args.batch}x{args.seq}"
    )
    runs = {}
    for v in args.variants:
        runs[v] = setup(v, model, params, batch)
        print(f"compiled {v}: {runs[v]['compile_s']:.1f} s", flush=True)
    times = {v: [] for v in runs}
    for i in range(args.repeats + 3):
        for v, r in runs.items():
            t0 = time.perf_counter()
            r["params"], r["state"], loss = r["compiled"](r["params"], r["state"], batch)
            jax.block_until_ready(r["params"])
            if i >= 3:
                times[v].append(time.perf_counter() - t0)
    tree = lambda r, v: r["params"].unpack() if v == "fused" else r["params"]
    ref = tree(runs[args.variants[0]], args.variants[0])
    header = f"{'variant':>10} | {'compile s':>9} | {'step ms':>8} | {'/ first':>7} | {'max |diff|':>10}"
    print(header + "\n" + "-" * len(header))
    first = statistics.median(times[args.variants[0]])
    for v, r in runs.items():
        ms = statistics.median(times[v])
        diff = max(
            float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(tree(r, v)), jax.tree.leaves(ref))
        )
        print(f"{v:>10} | {r['compile_s']:>9.2f} | {1e3 * ms:>8.2f} | {ms / first:>7.2f} | {diff:>10.2e}")
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
