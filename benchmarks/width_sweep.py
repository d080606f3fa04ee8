"""Width sweeps: static groups vs one padded program vs power-of-two buckets vs the Optuna loop.

The task is examples/width_sweep.py's: a digits MLP whose two hidden widths (integers 4..128)
and AdamW learning rate are tuned. For each trial count (default 16 and 64) the same Sobol
configurations are trained by

* ``static``: widths declared ``sweep.integer(4, 128, static=True)`` and an unpadded flax MLP --
  one static group (and its compiles) per distinct width pair;
* ``padded``: widths traced, the model built at 128 units and masked (``jopt.nn.Dense``) --
  one static group;
* ``bucketed``: widths traced, each trial padded to the next power of two of its larger width
  (``jopt.nn.bucket_configs``) -- one static group per bucket;
* ``optuna`` (if installed): the usual Optuna loop, TPE over the same ranges, one jitted step
  function per trial, a Python loop over steps (its own configurations, same trial count).

Each (method, trials) runs in its own process (fresh compile caches). Columns: wall seconds
(including compiles), compiled programs, static groups, best validation cross-entropy, and the
MLP flops wasted on padding (sum of padded flops / sum of true flops - 1).

Usage:
  python benchmarks/width_sweep.py                              # 16 and 64 trials, 100 steps
  python benchmarks/width_sweep.py --trials 16 --steps 50 --methods padded bucketed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("static", "padded", "bucketed", "optuna")


def _example():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    sys.path.insert(0, ROOT)
    import width_sweep

    return width_sweep


def run_optuna(data, trials: int, steps: int, batch: int, seed: int) -> dict:
    """TPE over the same ranges; a jitted step per trial; widths change shapes, so every trial compiles."""
    import flax.linen as fnn
    import jax
    import jax.numpy as jnp
    import optuna

    import jopt

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class MLP(fnn.Module):
        width1: int
        width2: int

        @fnn.compact
        def __call__(self, x):
            x = fnn.relu(fnn.Dense(self.width1)(x))
            x = fnn.relu(fnn.Dense(self.width2)(x))
            return fnn.Dense(data.num_classes)(x)

    def xent(model, params, x, y):
        return jnp.mean(jopt.nn.smoothed_cross_entropy(model.apply(params, x), y))

    def objective(trial):
        model = MLP(trial.suggest_int("width1", 4, 128), trial.suggest_int("width2", 4, 128))
        opt = jopt.adamw(trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True), weight_decay=1e-4)
        key = jax.random.key(trial.number)
        params = model.init(key, data.x_train[:1])
        state = opt.init(params)

        @jax.jit
        def train_step(params, state, key):
            idx = jax.random.randint(key, (batch,), 0, data.x_train.shape[0])
            grads = jax.grad(lambda p: xent(model, p, data.x_train[idx], data.y_train[idx]))(params)
            updates, state = opt.update(grads, state, params)
            return jopt.apply_updates(params, updates), state

        for k in jax.random.split(jax.random.fold_in(key, 1), steps):
            params, state = train_step(params, state, k)
        value = float(xent(model, params, data.x_val, data.y_val))
        return value if value == value else float("inf")

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    # compiles: one jitted train step per trial (counted, not measured)
    return {"best": study.best_value, "compiles": trials, "groups": trials, "waste": 0.0}


def child(args) -> None:
    """Run one (method, trials) in this process and print one JSON line."""
    ex = _example()
    from jopt import datasets, sweep

    data = datasets.digits()
    configs = sweep.sample(ex.base_space(), "sobol", args.trials, seed=args.seed)
    t0 = time.perf_counter()
    if args.method == "optuna":
        out = run_optuna(data, args.trials, args.steps, args.batch, args.seed)
    else:
        if args.method == "static":
            space = sweep.Space(
                width1=sweep.integer(4, 128, static=True),
                width2=sweep.integer(4, 128, static=True),
                learning_rate=sweep.loguniform(1e-4, 1e-1),
            )
            task = sweep.supervised_task(
                lambda hp: ex.MLP(hp["width1"], hp["width2"], data.num_classes),
                lambda hp: ex.jopt.adamw(hp["learning_rate"], weight_decay=1e-4),
                data,
                batch_size=args.batch,
            )
            sizes = None
        elif args.method == "padded":
            space, task = ex.base_space(), ex.padded_task(data, args.batch, ex.MAX_WIDTH)
            sizes = [ex.MAX_WIDTH] * len(configs)
        else:
            space, configs, b = ex.bucketed(configs)
            task, sizes = ex.padded_task(data, args.batch), list(b.sizes)
        r = sweep.run(task, space, configs, steps=args.steps, eval_every=args.steps, seed=args.seed,
                      progress=False, keep_states="none")  # fmt: skip
        vals = [t.final_objective for t in r.trials if t.status != "diverged"]
        out = {
            "best": min(vals, default=float("inf")),
            "compiles": r.stats["compiles"],
            "groups": r.stats["groups"],
            "waste": 0.0 if sizes is None else ex.padding_waste(configs, sizes),
        }
    out.update(method=args.method, trials=args.trials, wall=time.perf_counter() - t0)
    print(json.dumps(out))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.method is not None:
        args.trials = args.trials[0]
        return child(args)
    rows = []
    for trials in args.trials:
        for method in args.methods:
            if method == "optuna":
                try:
                    import optuna  # noqa: F401
                except ImportError:
                    print("optuna not installed: skipping the Optuna loop")
                    continue
            flags = {"--method": method, "--trials": trials, "--steps": args.steps, "--batch": args.batch}
            cmd = [sys.executable, os.path.abspath(__file__), "--seed", str(args.seed)]
            cmd += [str(v) for kv in flags.items() for v in kv]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-2000:])
                raise SystemExit(f"{method} x {trials} failed")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.steps} steps at batch {args.batch}, digits (1437 train / 360 val), seed {args.seed}")
    print("| trials | method | wall s | compiles | static groups | best val xent | padding waste |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['trials']} | {r['method']} | {r['wall']:.1f} | {r['compiles']} | {r['groups']} | "
              f"{r['best']:.4f} | {r['waste']:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
