"""Architecture sweep in one program: an MLP's two layer widths (4..128) and the learning rate.

The widths are *traced* integers: the model is built at 128 units per layer
(:class:`jopt.nn.Dense` masks each trial's units beyond its width; the initial values of the
real units are those of an unpadded model of that width, so a trial equals its unpadded run to
float32 rounding). The whole sweep is one static group: one compile for any number of trials,
instead of one per width pair.

With ``--buckets pow2`` each trial is padded only to the next power of two of its larger width
(``jopt.nn.bucket_configs``): one static group per bucket (at most 6 for 4..128), and less
compute wasted on padding (printed).

Usage:
  python examples/width_sweep.py                  # 64 trials, 300 steps
  python examples/width_sweep.py --buckets pow2   # bucketed: a few programs, less padding
  python examples/width_sweep.py --quick          # a few seconds (small data, 8 trials)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import flax.linen as fnn
import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jopt  # noqa: E402
from jopt import datasets, sweep  # noqa: E402
from jopt import nn as jnn  # noqa: E402

MAX_WIDTH = 128


class PaddedMLP(fnn.Module):
    """Two hidden ReLU layers of ``width1`` and ``width2`` real units, built at ``features``."""

    width1: Any
    width2: Any
    features: int = MAX_WIDTH
    classes: int = 10

    @fnn.compact
    def __call__(self, x):
        x = fnn.relu(jnn.Dense(self.features, width=self.width1)(x))
        x = fnn.relu(jnn.Dense(self.features, width=self.width2, in_width=self.width1)(x))
        return jnn.Dense(self.classes, in_width=self.width2)(x)


class MLP(fnn.Module):
    """The unpadded model (static widths; the same initial values as :class:`PaddedMLP`'s real units)."""

    width1: int
    width2: int
    classes: int = 10

    @fnn.compact
    def __call__(self, x):
        x = fnn.relu(jnn.Dense(self.width1)(x))
        x = fnn.relu(jnn.Dense(self.width2)(x))
        return jnn.Dense(self.classes)(x)


def base_space(max_width: int = MAX_WIDTH) -> sweep.Space:
    """Widths and learning rate, all traced."""
    return sweep.Space(
        width1=sweep.integer(4, max_width),
        width2=sweep.integer(4, max_width),
        learning_rate=sweep.loguniform(1e-4, 1e-1),
    )


def padded_task(data: datasets.Dataset, batch_size: int, features: int | None = None) -> sweep.Task:
    """The digits task with widths realised by masking; ``features=None`` reads the padded size
    from the (static) ``padded`` hyperparameter (bucketed sweeps)."""

    def model(hp):
        size = features if features is not None else hp["padded"]
        return PaddedMLP(hp["width1"], hp["width2"], size, data.num_classes)

    return sweep.supervised_task(
        model=model,
        optimizer=lambda hp: jopt.adamw(hp["learning_rate"], weight_decay=1e-4),
        data=data,
        batch_size=batch_size,
    )


def mlp_flops(width1: int, width2: int, inputs: int = 64, classes: int = 10) -> int:
    """Multiply-adds per example of the MLP's three matmuls."""
    return inputs * width1 + width1 * width2 + width2 * classes


def padding_waste(configs: list[dict], sizes: list[int]) -> float:
    """The MLP's compute wasted on padding: sum of padded flops / sum of true flops - 1."""
    true = sum(mlp_flops(c["width1"], c["width2"]) for c in configs)
    return sum(mlp_flops(s, s) for s in sizes) / true - 1.0


def bucketed(configs: list[dict], kind: str = "pow2") -> tuple[sweep.Space, list[dict], jnn.Buckets]:
    """Configurations with their padded size, and the space declaring it static (one group per bucket)."""
    configs, b = jnn.bucket_configs(configs, ["width1", "width2"], "padded", kind, minimum=4)
    base = base_space()
    space = sweep.Space({n: base[n] for n in base}, padded=sweep.choice(sorted(b.groups), static=True))
    return space, configs, b


def main(argv=None) -> sweep.SweepResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sweep for tests")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--buckets", choices=["none", "pow2"], default="none")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    trials = args.trials or (8 if args.quick else 64)
    steps = args.steps or (40 if args.quick else 300)
    data = datasets.digits(limit=400 if args.quick else None)
    batch = 32 if args.quick else 128
    configs = sweep.sample(base_space(), "sobol", trials, seed=0)
    if args.buckets == "pow2":
        space, configs, b = bucketed(configs)
        task = padded_task(data, batch)
        waste = padding_waste(configs, list(b.sizes))
        print(f"buckets {sorted(b.groups)}: {len(b.groups)} groups; padding wastes {waste:.0%} of flops")
    else:
        space, task = base_space(), padded_task(data, batch, MAX_WIDTH)
        waste = padding_waste(configs, [MAX_WIDTH] * len(configs))
        print(f"all trials padded to {MAX_WIDTH}: padding wastes {waste:.0%} of the flops")
    print(f"devices: {jax.devices()}; {trials} trials x {steps} steps")
    result = sweep.run(
        task, space, configs, steps=steps, eval_every=steps // 4, seed=0, progress=not args.no_progress
    )
    cols = ["trial", "status", "objective", "eval/accuracy", "width1", "width2", "learning_rate"]
    print("\nTop trials (objective = validation cross-entropy, lower is better):")
    print(result.table(top=12, columns=cols))
    print("\n" + result.summary())
    s = result.stats
    print(
        f"wall {s['wall_seconds']:.1f} s, compile {s['compile_seconds']:.1f} s ({s['compiles']} programs, "
        f"{s['groups']} static group(s))"
    )
    return result


if __name__ == "__main__":
    main()
