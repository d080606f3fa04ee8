"""Small datasets as float32 device arrays, for examples, tests and benchmarks.

Example:
  >>> from jopt import datasets
  >>> data = datasets.digits()
  >>> data.x_train.shape[1], data.num_classes
  (64, 10)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Dataset", "digits", "synthetic_classification"]


class Dataset(NamedTuple):
    """A supervised train/validation split on the device.

    Attributes:
      x_train, y_train: training inputs (float32) and integer labels (int32).
      x_val, y_val: validation inputs and labels.
      num_classes: number of classes.
    """

    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    num_classes: int


def _split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int, num_classes: int) -> Dataset:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(val_fraction * len(x))))
    val, train = order[:n_val], order[n_val:]
    return Dataset(
        jnp.asarray(x[train], jnp.float32),
        jnp.asarray(y[train], jnp.int32),
        jnp.asarray(x[val], jnp.float32),
        jnp.asarray(y[val], jnp.int32),
        num_classes,
    )


def digits(val_fraction: float = 0.2, seed: int = 0, *, limit: int | None = None) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, 64 features scaled to [0, 1], 10 classes).

    Args:
      val_fraction: fraction of examples held out for validation.
      seed: seed of the shuffle before splitting.
      limit: keep only the first ``limit`` examples (after shuffling), for fast tests.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32) / 16.0
    if limit is not None:
        keep = np.random.default_rng(seed + 1).permutation(len(x))[:limit]
        x, y = x[keep], y[keep]
    return _split(x, y, val_fraction, seed, 10)


def synthetic_classification(
    n: int = 256, features: int = 8, classes: int = 3, *, val_fraction: float = 0.25, seed: int = 0
) -> Dataset:
    """Gaussian blobs, linearly separable-ish: a tiny problem for tests."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, features)) * 2.0
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(size=(n, features))
    return _split(x.astype(np.float32), y, val_fraction, seed, classes)
