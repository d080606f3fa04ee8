"""An optimizer race on a real task: a character-level transformer language model.

A small decoder-only transformer (flax linen) learns to predict the next byte of
Python source code — the standard library's own ``.py`` files, read from the
running interpreter (no download). Every optimizer gets the same step budget and
a learning-rate sweep run by :func:`jopt.sweep.run` (the learning rate is traced:
one compile per optimizer for the whole sweep). For each optimizer's best
learning rate it prints:

* validation loss at equal steps (each evaluation point) and at equal wall time
  (the wall time AdamW needs for the whole budget, converted to steps with each
  optimizer's measured time per step);
* steps to a target validation loss;
* ms/step of jopt's implementation against the peer's (optax, or psgd-jax for
  Kron) on the same model and batch, interleaved;
* optimizer state bytes per parameter.

Usage:
  python benchmarks/optimizer_race.py                 # ~15-30 min on a 2-core CPU
  python benchmarks/optimizer_race.py --quick         # a smoke run (seconds per optimizer)
  python benchmarks/optimizer_race.py --plot race.png # also the loss curves
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

# jaxlib 0.10's CPU runtime can deadlock when two batched LAPACK calls (SOAP's eigh/QR, Kron's
# triangular solves, vmapped over the sweep's trials) run concurrently on a small thread pool;
# the default scheduler's concurrency is what lets them overlap (see benchmarks/README.md).
CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if CPU_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_FLAG}".strip()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jopt  # noqa: E402
from jopt import sweep  # noqa: E402

VOCAB = 256  # bytes


# --------------------------------------------------------------------------- data


def stdlib_corpus(train_bytes: int, val_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Bytes of the standard library's ``.py`` files: train and validation from disjoint files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "test" not in p.parts and "site-packages" not in p.parts)
    chunks, total = [], 0
    for path in files:
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= train_bytes + val_bytes:
            break
    corpus = np.frombuffer(b"".join(chunks), np.uint8)
    return corpus[:train_bytes].astype(np.int32), corpus[-val_bytes:].astype(np.int32)


# --------------------------------------------------------------------------- model


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a GELU MLP."""

    dim: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h, mask=mask)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(self.dim)(nn.gelu(nn.Dense(4 * self.dim)(h)))


class CharTransformer(nn.Module):
    """Decoder-only transformer over bytes with learned position embeddings."""

    dim: int
    depth: int
    heads: int
    context: int

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(VOCAB, self.dim)(tokens)
        x = x + self.param("pos", nn.initializers.normal(0.02), (self.context, self.dim))
        for _ in range(self.depth):
            x = Block(self.dim, self.heads)(x)
        return nn.Dense(VOCAB)(nn.LayerNorm()(x))


# --------------------------------------------------------------------------- optimizers


class Contender(NamedTuple):
    """An optimizer in the race: jopt's factory of the (traced) learning rate, its LR grid, its peer."""

    name: str
    make: Callable[[Any, int], Any]  # (learning_rate, steps) -> jopt transformation
    lr_range: tuple[float, float]
    peer: Callable[[float, int], Any] | None  # same optimizer in optax (or psgd-jax), or None
    eval_params: Callable[[Any, Any], Any] | None = None  # (params, opt_state) -> evaluation point


def _warmup_cosine(lib, lr, steps):
    return lib.warmup_cosine_decay_schedule(0.0, lr, max(steps // 10, 1), steps, lr * 0.1)


def contenders() -> list[Contender]:
    """The optimizers of the race, each with a learning-rate range and its peer implementation."""
    import optax
    import optax.contrib as oc

    def sf_eval(params, opt_state):
        return jopt.schedule_free_eval_params(opt_state, params)

    def kron_peer(lr, steps):
        try:
            from psgd_jax.kron import kron
        except ImportError:
            return None
        return kron(_warmup_cosine(optax, lr, steps), weight_decay=0.0)

    return [
        Contender(
            "adamw",
            lambda lr, n: jopt.adamw(_warmup_cosine(jopt, lr, n), weight_decay=0.01),
            (3e-4, 1e-2),
            lambda lr, n: optax.adamw(_warmup_cosine(optax, lr, n), weight_decay=0.01),
        ),
        Contender(
            "muon",
            lambda lr, n: jopt.muon(_warmup_cosine(jopt, lr, n)),
            (3e-3, 1e-1),
            lambda lr, n: oc.muon(_warmup_cosine(optax, lr, n)),
        ),
        Contender("soap", lambda lr, n: jopt.soap(_warmup_cosine(jopt, lr, n)), (3e-4, 1e-2), None),
        Contender(
            "kron",
            lambda lr, n: jopt.kron(_warmup_cosine(jopt, lr, n), weight_decay=0.0),
            (1e-4, 3e-3),
            kron_peer,
        ),
        Contender(
            "schedule_free_adamw",
            lambda lr, n: jopt.schedule_free_adamw(lr, warmup_steps=max(n // 10, 1)),
            (1e-3, 3e-2),
            lambda lr, n: oc.schedule_free_adamw(lr, warmup_steps=max(n // 10, 1)),
            sf_eval,
        ),
        Contender(
            "prodigy",
            lambda lr, n: jopt.prodigy(jopt.cosine_decay_schedule(lr, n)),
            (0.3, 3.0),
            lambda lr, n: oc.prodigy(optax.cosine_decay_schedule(lr, n)),
        ),
        Contender(
            "ademamix",
            lambda lr, n: jopt.ademamix(_warmup_cosine(jopt, lr, n)),
            (3e-4, 1e-2),
            lambda lr, n: oc.ademamix(_warmup_cosine(optax, lr, n)),
        ),
        Contender(
            "lion",
            lambda lr, n: jopt.lion(_warmup_cosine(jopt, lr, n), weight_decay=0.1),
            (3e-5, 1e-3),
            lambda lr, n: optax.lion(_warmup_cosine(optax, lr, n), weight_decay=0.1),
        ),
    ]


# --------------------------------------------------------------------------- task


class Setup(NamedTuple):
    model: CharTransformer
    train: jax.Array
    val_x: jax.Array
    val_y: jax.Array
    batch: int
    context: int


def _batch(setup: Setup, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    starts = jax.random.randint(key, (setup.batch,), 0, setup.train.shape[0] - setup.context - 1)
    idx = starts[:, None] + jnp.arange(setup.context)
    return setup.train[idx], setup.train[idx + 1]


def _loss(setup: Setup, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = setup.model.apply({"params": params}, x)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1))


def race_task(setup: Setup, contender: Contender, steps: int) -> sweep.Task:
    """The sweep task of one contender: learning rate ``hp["learning_rate"]`` traced."""

    def init(hp, key):
        params = setup.model.init(key, setup.val_x[:1])["params"]
        return sweep.TrainState(params, contender.make(hp["learning_rate"], steps).init(params))

    def step(hp, state, key):
        x, y = _batch(setup, key)
        loss, grads = jax.value_and_grad(lambda p: _loss(setup, p, x, y))(state.params)
        tx = contender.make(hp["learning_rate"], steps)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return sweep.TrainState(jopt.apply_updates(state.params, updates), opt_state), {"loss": loss}

    def evaluate(hp, state):
        params = state.params
        if contender.eval_params is not None:
            params = contender.eval_params(params, state.opt_state)
        return _loss(setup, params, setup.val_x, setup.val_y)

    return sweep.Task(init, step, evaluate)


# --------------------------------------------------------------------------- timing and memory


def _timed_loop(setup: Setup, tx: Any, steps: int) -> Callable[[Any, Any, jax.Array], Any]:
    """A jitted ``steps``-step training loop of one trial with transformation ``tx``."""

    @jax.jit
    def loop(params, opt_state, key):
        def body(carry, k):
            p, s = carry
            x, y = _batch(setup, k)
            g = jax.grad(lambda q: _loss(setup, q, x, y))(p)
            u, s = tx.update(g, s, p)
            return (jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u), s), None

        (p, s), _ = jax.lax.scan(body, (params, opt_state), jax.random.split(key, steps))
        return p, s

    return loop


def ms_per_step(setup: Setup, txs: dict[str, Any], steps: int, rounds: int) -> dict[str, float]:
    """Median ms/step of each transformation, measured interleaved (round-robin) after a warm-up."""
    params = setup.model.init(jax.random.key(0), setup.val_x[:1])["params"]
    loops = {}
    for name, tx in txs.items():
        loops[name] = (_timed_loop(setup, tx, steps), tx.init(params))
        jax.block_until_ready(loops[name][0](params, loops[name][1], jax.random.key(1)))
    times: dict[str, list[float]] = {name: [] for name in txs}
    for r in range(rounds):
        for name, (loop, state) in loops.items():
            t0 = time.perf_counter()
            jax.block_until_ready(loop(params, state, jax.random.key(2 + r)))
            times[name].append((time.perf_counter() - t0) * 1e3 / steps)
    return {name: float(np.median(v)) for name, v in times.items()}


def state_bytes_per_param(tx: Any, params: Any) -> float:
    """Bytes of optimizer state (array leaves) per model parameter."""
    state = jax.eval_shape(tx.init, params)
    nbytes = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state))
    return nbytes / sum(math.prod(x.shape) for x in jax.tree.leaves(params))


# --------------------------------------------------------------------------- the race


class Entry(NamedTuple):
    name: str
    best_lr: float
    steps: list[int]
    val: list[float]
    ms_jopt: float
    ms_peer: float | None
    state_bpp: float
    sweep_wall: float
    compiles: int


def _loss_at(entry: Entry, step: float) -> tuple[float, bool]:
    """Validation loss interpolated at ``step``; True when ``step`` is past the last evaluation."""
    xs, ys = [0, *entry.steps], [math.log(VOCAB), *entry.val]
    if step >= xs[-1]:
        return ys[-1], step > xs[-1]
    return float(np.interp(step, xs, ys)), False


def _steps_to(entry: Entry, target: float) -> int | None:
    for s, v in zip(entry.steps, entry.val):
        if v <= target:
            return s
    return None


def run_contender(setup: Setup, c: Contender, args: argparse.Namespace) -> Entry:
    space = sweep.Space(learning_rate=sweep.loguniform(*c.lr_range))
    result = sweep.run(
        race_task(setup, c, args.steps),
        space,
        steps=args.steps,
        eval_every=args.eval_every,
        method="grid",
        grid_points=args.lrs,
        seed=0,
        progress=False,
    )
    best = result.best
    lr = float(best.hyperparams["learning_rate"])
    txs = {"jopt": c.make(lr, args.steps)}
    peer = c.peer(lr, args.steps) if c.peer is not None else None
    if peer is not None:
        txs["peer"] = peer
    ms = ms_per_step(setup, txs, args.timing_steps, args.timing_rounds)
    params = setup.model.init(jax.random.key(0), setup.val_x[:1])["params"]
    hist = best.history
    return Entry(
        c.name,
        lr,
        [int(s) for s in hist["step"]],
        [float(v) for v in hist["objective"]],
        ms["jopt"],
        ms.get("peer"),
        state_bytes_per_param(txs["jopt"], params),
        float(result.stats["wall_seconds"]),
        int(result.stats["compiles"]),
    )


def report(entries: list[Entry], target: float) -> str:
    lines = []
    evals = entries[0].steps
    head = "| optimizer | best lr | " + " | ".join(f"val @ {s}" for s in evals) + " |"
    lines += ["Validation loss (nats/byte) at equal steps, best learning rate of the sweep:", "", head]
    lines.append("|" + "---|" * (2 + len(evals)))
    for e in entries:
        lines.append(f"| {e.name} | {e.best_lr:.3g} | " + " | ".join(f"{v:.4f}" for v in e.val) + " |")
    ref = next((e for e in entries if e.name == "adamw"), entries[0])
    budget_ms = ref.ms_jopt * ref.steps[-1]
    lines += [
        "",
        f"Equal wall time ({budget_ms / 1e3:.1f} s of training, {ref.name}'s full budget), steps to "
        f"val loss {target}, speed and memory:",
        "",
        "| optimizer | steps in budget | val @ equal time | steps to target | ms/step jopt | ms/step peer "
        "| jopt/peer | state bytes/param | sweep wall s | compiles |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        n = budget_ms / e.ms_jopt
        v, past = _loss_at(e, n)
        hit = _steps_to(e, target)
        peer = f"{e.ms_peer:.2f}" if e.ms_peer is not None else "—"
        ratio = f"{e.ms_jopt / e.ms_peer:.2f}" if e.ms_peer is not None else "—"
        hit_s = str(hit) if hit is not None else f">{e.steps[-1]}"
        lines.append(
            f"| {e.name} | {n:.0f} | {'≤' if past else ''}{v:.4f} | {hit_s}"
            f" | {e.ms_jopt:.2f} | {peer} | {ratio} | {e.state_bpp:.1f} | {e.sweep_wall:.1f} | {e.compiles} |"
        )
    return "\n".join(lines)


def plot(entries: list[Entry], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for e in entries:
        ax.plot(e.steps, e.val, marker="o", ms=3, label=f"{e.name} (lr {e.best_lr:.2g})")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/byte)")
    ax.set_title("Optimizer race: char-level transformer on stdlib source")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> list[Entry]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--lrs", type=int, default=4, help="learning rates per optimizer (log grid)")
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--target", type=float, default=None, help="validation loss for 'steps to target'")
    parser.add_argument("--timing-steps", type=int, default=None)
    parser.add_argument("--timing-rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, help="subset of optimizers")
    parser.add_argument("--plot", default=None, help="write the loss curves to this PNG")
    args = parser.parse_args(argv)
    q = args.quick
    args.steps = args.steps or (40 if q else 600)
    args.eval_every = args.eval_every or (20 if q else 100)
    args.batch = args.batch or (8 if q else 32)
    args.timing_steps = args.timing_steps or (5 if q else 50)
    args.target = args.target or (3.5 if q else 2.0)
    train, val = stdlib_corpus(200_000 if q else 2_000_000, 20_000 if q else 100_000)
    n_val = 8 if q else 64
    starts = np.linspace(0, val.shape[0] - args.context - 2, n_val).astype(np.int64)
    vidx = starts[:, None] + np.arange(args.context)
    model = CharTransformer(args.dim or (32 if q else 128), args.depth or (1 if q else 4), 4, args.context)
    val_x, val_y = jnp.asarray(val[vidx]), jnp.asarray(val[vidx + 1])
    setup = Setup(model, jnp.asarray(train), val_x, val_y, args.batch, args.context)
    n_params = sum(x.size for x in jax.tree.leaves(model.init(jax.random.key(0), setup.val_x[:1])["params"]))
    print(
        f"devices {jax.devices()}; model dim {model.dim} depth {model.depth} context {args.context}: "
        f"{n_params:,} parameters; batch {args.batch}; {args.steps} steps; {args.lrs} learning rates each"
    )
    entries = []
    for c in contenders():
        if args.only and c.name not in args.only:
            continue
        e = run_contender(setup, c, args)
        print(f"  {e.name}: lr {e.best_lr:.3g}, val {e.val[-1]:.4f}, {e.ms_jopt:.2f} ms/step", flush=True)
        entries.append(e)
    print()
    print(report(entries, args.target))
    if args.plot:
        plot(entries, args.plot)
        print(f"\nloss curves: {os.path.abspath(args.plot)}")
    return entries


if __name__ == "__main__":
    main()
