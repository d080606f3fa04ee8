"""Main job: a vectorized hyperparameter sweep of a flax MLP on scikit-learn's digits.

64 trials (Sobol) of learning rate x weight decay x beta1 for AdamW, and a static
choice of hidden width; 300 steps at batch 256, evaluated every 50 steps. The
trial axis is sharded over the CPU cores (simulated CPU devices, set below
before JAX starts). Prints a results table and the best configuration, and
saves learning curves and objective-vs-hyperparameter plots.

Usage:
  python examples/digits_sweep.py            # ~15 s on a 2-core CPU
  python examples/digits_sweep.py --quick    # a few seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":  # must happen before JAX starts its backend
    _n = os.cpu_count() or 1
    _flag = f"--xla_force_host_platform_device_count={min(_n, 8)}"
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jopt  # noqa: E402
from jopt import datasets, sweep  # noqa: E402


class MLP(nn.Module):
    """Two hidden ReLU layers of ``width`` units."""

    width: int
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.classes)(x)


def make_optimizer(hp):
    """AdamW with traced learning rate, beta1 and weight decay."""
    return jopt.adamw(learning_rate=hp["learning_rate"], b1=hp["b1"], weight_decay=hp["weight_decay"])


def build(quick: bool = False):
    """The dataset, search space and task of the main job."""
    data = datasets.digits(limit=400 if quick else None)
    space = sweep.Space(
        learning_rate=sweep.loguniform(1e-4, 3e-1),
        weight_decay=sweep.loguniform(1e-6, 1e-1),
        b1=sweep.uniform(0.7, 0.99),
        width=sweep.choice([32, 64] if quick else [64, 128], static=True),
    )
    task = sweep.supervised_task(
        model=lambda hp: MLP(hp["width"]),
        optimizer=make_optimizer,
        data=data,
        batch_size=32 if quick else 256,
    )
    return data, space, task


def main(argv=None) -> sweep.SweepResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sweep for tests")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default="digits_sweep", help="output prefix for plots and CSV")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    trials = args.trials or (8 if args.quick else 64)
    steps = args.steps or (40 if args.quick else 300)
    data, space, task = build(args.quick)
    print(f"devices: {jax.devices()}")
    print(f"train {data.x_train.shape}, val {data.x_val.shape}; {trials} trials x {steps} steps")
    result = sweep.run(
        task,
        space,
        trials,
        steps=steps,
        eval_every=steps // 6 if steps % 6 == 0 else steps,
        method="sobol",
        seed=0,
        checkpoint_dir=args.checkpoint_dir,
        progress=not args.no_progress,
    )
    cols = ["trial", "status", "objective", "eval/accuracy", "learning_rate", "weight_decay", "b1", "width"]
    print("\nTop trials (objective = validation cross-entropy, lower is better):")
    print(result.table(top=15, columns=cols))
    print("\n" + result.summary())
    best = result.best
    print(f"best configuration: {best.hyperparams}")
    print(f"best validation accuracy: {best.history['eval/accuracy'][-1]:.4f}")
    s = result.stats
    print(
        f"wall {s['wall_seconds']:.1f} s, compile {s['compile_seconds']:.1f} s ({s['compiles']} programs), "
        f"{s['devices']} device(s), chunk sizes {s['chunk_sizes']}"
    )
    curves = result.plot_learning_curves(f"{args.out}_curves.png", log_y=True)
    del curves
    result.plot_objective_vs(f"{args.out}_objective.png")
    result.to_csv(f"{args.out}.csv")
    print(
        f"saved plots: {os.path.abspath(args.out + '_curves.png')}, "
        f"{os.path.abspath(args.out + '_objective.png')}"
    )
    print(f"saved table: {os.path.abspath(args.out + '.csv')}")
    return result


if __name__ == "__main__":
    main()
