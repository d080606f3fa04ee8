"""Cross-validation: k-fold splits as device arrays, indexed by a traced fold number.

A sweep run with ``folds=k`` trains every trial once per fold (the members of
the vectorized batch are ``trials x k folds``) and reports the objective
averaged over folds -- the ``GridSearchCV(cv=k)`` use case. Inside the task,
``hp["fold"]`` is the fold index (a traced int32) and ``hp.num_folds`` is ``k``.

All folds share one array shape: training index lists are padded to the
longest one and sampled with :func:`sample_train`, which draws uniformly among
the fold's real training examples; validation sets are padded and come with a
0/1 mask (:func:`val_batch`).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jopt.sweep import folds
  >>> split = folds.kfold_split(10, 3, seed=0)
  >>> split.train_idx.shape, split.val_idx.shape
  ((3, 7), (3, 4))
  >>> idx = folds.sample_train(split, jnp.int32(1), jax.random.key(0), 5)
  >>> bool(jnp.all(split.val_idx[1][split.val_mask[1] > 0][:, None] != idx[None, :]))
  True
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FoldSplit", "fold_mean", "kfold_split", "sample_train", "val_batch"]


class FoldSplit(NamedTuple):
    """k-fold split of ``n`` examples as padded index arrays.

    Attributes:
      train_idx: ``(k, max_train)`` int32 (NumPy) training indices of each fold (padded).
      train_count: ``(k,)`` int32 number of real training indices per fold.
      val_idx: ``(k, max_val)`` int32 validation indices (padded with index 0).
      val_mask: ``(k, max_val)`` float32, 1 for real validation entries.
    """

    train_idx: jax.Array
    train_count: jax.Array
    val_idx: jax.Array
    val_mask: jax.Array


def kfold_split(n: int, k: int, seed: int = 0, *, shuffle: bool = True) -> FoldSplit:
    """Split ``range(n)`` into ``k`` folds of near-equal size (like ``sklearn.model_selection.KFold``).

    Raises:
      ValueError: if ``k < 2`` or ``k > n``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= n:
        raise ValueError(f"folds must be an int with 2 <= folds <= number of examples ({n}), got {k!r}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    parts = np.array_split(order, k)
    max_val = max(len(p) for p in parts)
    max_train = n - min(len(p) for p in parts)
    train_idx = np.zeros((k, max_train), np.int32)
    train_count = np.zeros(k, np.int32)
    val_idx = np.zeros((k, max_val), np.int32)
    val_mask = np.zeros((k, max_val), np.float32)
    for f, part in enumerate(parts):
        rest = np.sort(np.concatenate([p for g, p in enumerate(parts) if g != f]))
        train_idx[f, : len(rest)] = rest
        train_count[f] = len(rest)
        val_idx[f, : len(part)] = np.sort(part)
        val_mask[f, : len(part)] = 1.0
    # NumPy arrays: they are embedded in the compiled program as constants where used
    return FoldSplit(train_idx, train_count, val_idx, val_mask)


def sample_train(split: FoldSplit, fold: jax.Array, key: jax.Array, batch_size: int) -> jax.Array:
    """``batch_size`` training indices of fold ``fold``, uniform with replacement."""
    pos = jax.random.randint(key, (batch_size,), 0, jnp.asarray(split.train_count)[fold])
    return jnp.asarray(split.train_idx)[fold][pos]


def val_batch(split: FoldSplit, fold: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Validation indices and 0/1 mask of fold ``fold`` (weight metrics by the mask)."""
    return jnp.asarray(split.val_idx)[fold], jnp.asarray(split.val_mask)[fold]


def fold_mean(values: np.ndarray, num_folds: int) -> np.ndarray:
    """Average a ``(trials * folds, ...)`` array (trial-major) over folds.

    Example:
      >>> fold_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2)
      array([2., 6.])
    """
    values = np.asarray(values)
    return values.reshape((-1, num_folds) + values.shape[1:]).mean(axis=1)
