r"""Per-example gradient clipping for differentially private training (DP-SGD).

The gradients carry a leading batch axis (one gradient per example). Each
example's gradient is scaled down to a norm of at most :math:`C`, then the
scaled gradients are summed over the batch:

.. math::
   \tilde g = \sum_{b} g_b \min\Big(1, \frac{C}{\|g_b\|_2}\Big)

(Abadi et al., 2016). :func:`per_example_layer_norm_clip` clips each layer (leaf)
separately (McMahan et al., 2017). Both follow optax's arithmetic, so float32
results equal optax's bit for bit; norms are computed in at least float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt.hyperparams import NONNEGATIVE
from jopt.tree import norm, tree_unzip

Array = jax.Array
PyTree = Any

__all__ = ["per_example_global_norm_clip", "per_example_layer_norm_clip"]


def _check_batched(owner: str, grads: PyTree) -> None:
    leaves = jax.tree.leaves(grads)
    if not leaves:
        raise ValueError(f"{owner}: grads has no leaves")
    batch = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else None
    if batch is None or any(jnp.ndim(g) < 1 or jnp.shape(g)[0] != batch for g in leaves):
        shapes = jax.tree.map(jnp.shape, grads)
        raise ValueError(
            f"{owner}: every leaf of grads needs the same leading batch axis; got shapes {shapes}"
        )


def _clip_and_sum(grads: PyTree, l2_norm_clip: Array | float) -> tuple[PyTree, Array]:
    norms = jax.vmap(norm)(grads)
    multipliers = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
    clipped = jnp.sum(multipliers < 1.0)
    return jax.tree.map(lambda g: jnp.tensordot(multipliers, g, axes=1), grads), clipped


def per_example_global_norm_clip(grads: PyTree, l2_norm_clip: Array | float) -> tuple[PyTree, Array]:
    r"""Clip each example's gradient (all leaves together) to norm :math:`C`, then sum over the batch.

    .. math:: \tilde g = \sum_b g_b \min(1, C / \|g_b\|_2)

    Args:
      grads: per-example gradients, every leaf with the same leading batch axis.
      l2_norm_clip: :math:`C \ge 0` (``inf`` disables clipping).

    Returns:
      ``(clipped_sum, num_clipped)``: the summed clipped gradients (no batch
      axis) and how many examples were scaled down.

    Raises:
      ValueError: when leaves lack a common leading batch axis, or a concrete
        ``l2_norm_clip`` is negative.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> grads = [jnp.array([[0.0, 0.0, 0.0], [0.0, 3.0, 4.0], [4.0, 0.0, 3.0]])]
      >>> total, n = jopt.per_example_global_norm_clip(grads, 2.5)
      >>> total[0].tolist(), int(n)
      ([2.0, 1.5, 3.5], 2)
    """
    _check_batched("per_example_global_norm_clip", grads)
    NONNEGATIVE.check(l2_norm_clip, "l2_norm_clip", "per_example_global_norm_clip")
    return _clip_and_sum(grads, l2_norm_clip)


def per_example_layer_norm_clip(
    grads: PyTree, global_l2_norm_clip: Array | float, uniform: bool = True
) -> tuple[PyTree, PyTree]:
    r"""Clip each example's gradient layer by layer (leaf by leaf), then sum over the batch.

    With :math:`K` leaves, leaf :math:`k` is clipped to :math:`C_k = C / \sqrt K`
    when ``uniform``, else to :math:`C_k = C \sqrt{D_k / D}` (:math:`D_k` the
    leaf's size per example, :math:`D` the total), so that
    :math:`\sum_k C_k^2 = C^2`.

    Returns:
      ``(clipped_sums, num_clipped)``: two trees structured like ``grads``.

    Raises:
      ValueError: when leaves lack a common leading batch axis, or a concrete
        ``global_l2_norm_clip`` is negative.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> grads = [jnp.array([[0.0, 3.0, 4.0], [4.0, 0.0, 3.0]])]
      >>> total, n = jopt.per_example_layer_norm_clip(grads, 2.5)
      >>> total[0].tolist(), [int(c) for c in n]
      ([2.0, 1.5, 3.5], [2])
    """
    _check_batched("per_example_layer_norm_clip", grads)
    NONNEGATIVE.check(global_l2_norm_clip, "global_l2_norm_clip", "per_example_layer_norm_clip")
    if uniform:
        share = (1.0 / len(jax.tree.leaves(grads))) ** 0.5
        limits = jax.tree.map(lambda g: global_l2_norm_clip * share, grads)
    else:
        total = 0
        for g in jax.tree.leaves(grads):
            total = total + g[0].size
        limits = jax.tree.map(lambda g: global_l2_norm_clip * (g[0].size / total) ** 0.5, grads)
    pairs = jax.tree.map(_clip_and_sum, grads, limits)
    return tree_unzip(pairs, grads, 2)
