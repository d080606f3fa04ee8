"""Train a flax MLP on scikit-learn's digits with a jopt optimizer: a plain training loop.

The optimizer is a short chain: global-norm clipping, AdamW with a warmup +
cosine learning-rate schedule, and no weight decay on biases. The current
learning rate is read from the optimizer state for logging, without wrapping
the optimizer in anything.

Usage:
  python examples/train_digits.py               # 600 steps, a few seconds on a CPU
  python examples/train_digits.py --steps 50    # shorter
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jopt  # noqa: E402
from jopt import datasets  # noqa: E402


class MLP(nn.Module):
    """Two hidden ReLU layers."""

    width: int = 128
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.classes)(x)


def make_optimizer(steps: int, peak_lr: float = 3e-3) -> jopt.GradientTransformation:
    """Clip to norm 1, then AdamW (decay on kernels only) with warmup + cosine decay."""
    schedule = jopt.schedules.warmup_cosine_decay(
        0.0, peak_lr, warmup_steps=max(1, steps // 10), decay_steps=steps, end_value=peak_lr / 100
    )
    kernels_only = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    return jopt.chain(
        jopt.clip_by_global_norm(1.0),
        jopt.adamw(schedule, weight_decay=1e-4, mask=kernels_only),
    )


def loss_fn(params: Any, model: nn.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = model.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train(steps: int = 600, batch_size: int = 128, seed: int = 0, log_every: int = 100) -> dict[str, float]:
    """Train and return the final training loss, validation loss and accuracy."""
    data = datasets.digits()
    model = MLP()
    init_key, data_key = jax.random.split(jax.random.key(seed))
    params = model.init(init_key, data.x_train[:1])
    optimizer = make_optimizer(steps)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, key):
        idx = jax.random.randint(key, (batch_size,), 0, data.x_train.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(params, model, data.x_train[idx], data.y_train[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return jopt.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params):
        logits = model.apply(params, data.x_val)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, data.y_val).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == data.y_val)

    loss = jnp.nan
    for step, key in enumerate(jax.random.split(data_key, steps), start=1):
        params, opt_state, loss = train_step(params, opt_state, key)
        if step % log_every == 0 or step == steps:
            val_loss, acc = evaluate(params)
            lr = jopt.current_hyperparams(opt_state)["learning_rate"]
            print(
                f"step {step:5d}  lr {float(lr):.2e}  train loss {float(loss):.4f}  "
                f"val loss {float(val_loss):.4f}  val accuracy {float(acc):.3f}"
            )
    val_loss, acc = evaluate(params)
    return {"train_loss": float(loss), "val_loss": float(val_loss), "val_accuracy": float(acc)}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = train(args.steps, args.batch_size, args.seed, log_every=max(1, args.steps // 6))
    print(f"final validation accuracy: {result['val_accuracy']:.3f}")
    return result


if __name__ == "__main__":
    main()
