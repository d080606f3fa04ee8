r"""Dropout and label smoothing whose rates may be traced (swept inside one compiled program).

flax's ``Dropout`` tests ``rate == 0.0`` in Python, so a traced rate fails and every rate
becomes its own program. :func:`dropout` has no such branch for an array (or traced) rate:
rate 0 draws an all-true mask (uniform draws lie in [0, 1)) and divides by 1, the identity
exactly. For a Python-number rate it is flax's computation, step for step (the same
``jax.random.bernoulli(key, 1 - rate, shape)`` mask, ``lax.select`` of ``x / (1 - rate)``),
so the result equals flax's bit for bit given the same key.

.. math::

   y = \frac{m \odot x}{1 - p}, \qquad m \sim \mathrm{Bernoulli}(1 - p)

:func:`smoothed_cross_entropy` is the cross-entropy against smoothed one-hot labels with a
smoothing that may be traced; with a Python-number (or array) smoothing it equals
``optax.losses.softmax_cross_entropy(logits, optax.smooth_labels(one_hot, alpha))`` bit for bit.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jopt import nn
  >>> x = jnp.ones(8)
  >>> rates = jnp.array([0.0, 0.5])
  >>> out = jax.vmap(lambda r: nn.dropout(jax.random.key(0), x, r))(rates)
  >>> bool((out[0] == x).all()), sorted(set(out[1].tolist()))
  (True, [0.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jopt.hyperparams import check_hyperparam, compute_dtype, is_python_number

__all__ = ["dropout", "smoothed_cross_entropy"]


def _mask_shape(shape: Sequence[int], broadcast_dims: Sequence[int]) -> list[int]:
    out = list(shape)
    for dim in broadcast_dims:
        out[dim] = 1
    return out


def dropout(
    key: jax.Array | None,
    inputs: jax.Array,
    rate: Any,
    *,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    r"""Inverted dropout with a rate that may be a Python number, an array or a traced value.

    .. math::

       y_i = \begin{cases} x_i / (1 - p) & m_i = 1 \\ 0 & m_i = 0 \end{cases},\qquad
       m \sim \mathrm{Bernoulli}(1 - p)

    the mask shared along ``broadcast_dims``. An array rate takes no Python branch: ``p = 0``
    gives ``x`` exactly, ``p = 1`` gives zeros with zero (not NaN) gradients. A Python-number
    rate follows flax's ``Dropout`` exactly (``p = 0`` returns ``inputs`` without using ``key``,
    which may then be ``None``).

    Args:
      key: the PRNG key of the mask.
      inputs: the array to drop from.
      rate: the drop probability ``p`` in [0, 1] (not the keep probability).
      broadcast_dims: dimensions that share one mask value.

    Raises:
      ValueError: a concrete rate outside [0, 1].

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y = dropout(jax.random.key(1), jnp.ones((2, 4)), 0.5, broadcast_dims=(0,))
      >>> bool((y[0] == y[1]).all())
      True
    """
    check_hyperparam(rate, "rate", low=0.0, high=1.0, owner="dropout")
    shape = _mask_shape(inputs.shape, broadcast_dims)
    zeros = jnp.zeros_like(inputs)
    if is_python_number(rate):
        if rate == 0.0:
            return inputs
        if rate == 1.0:
            return zeros
        keep_prob = 1.0 - rate
        mask = jax.random.bernoulli(key, p=keep_prob, shape=shape)
        return lax.select(jnp.broadcast_to(mask, inputs.shape), inputs / keep_prob, zeros)
    keep = 1 - jnp.asarray(rate, compute_dtype(inputs.dtype))
    mask = jax.random.bernoulli(key, p=keep, shape=shape)
    safe_keep = jnp.where(keep > 0, keep, jnp.ones((), keep.dtype))
    scaled = (inputs / safe_keep).astype(inputs.dtype)
    return lax.select(jnp.broadcast_to(mask, inputs.shape), scaled, zeros)


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: Any = 0.0) -> jax.Array:
    r"""Softmax cross-entropy with integer labels against smoothed one-hot targets.

    .. math::

       t_k = (1 - \alpha)\,[k = y] + \frac{\alpha}{K}, \qquad
       \ell = -\sum_k t_k \log \mathrm{softmax}(z)_k

    ``smoothing`` (:math:`\alpha`) may be a Python number, an array or a traced value; no Python
    branch reads it. The order of operations is optax's (``smooth_labels`` then
    ``softmax_cross_entropy``), so the result equals optax's bit for bit.

    Args:
      logits: ``[..., K]`` unnormalized log-probabilities.
      labels: ``[...]`` integer class labels.
      smoothing: :math:`\alpha` in [0, 1].

    Returns:
      The per-example losses, shape ``labels.shape``.

    Raises:
      ValueError: a concrete smoothing outside [0, 1].

    Example:
      >>> import jax.numpy as jnp
      >>> logits, labels = jnp.array([[2.0, 0.0, 0.0]]), jnp.array([0])
      >>> plain = smoothed_cross_entropy(logits, labels, 0.0)
      >>> smooth = smoothed_cross_entropy(logits, labels, 0.1)
      >>> bool(smooth[0] > plain[0])
      True
    """
    check_hyperparam(smoothing, "smoothing", low=0.0, high=1.0, owner="smoothed_cross_entropy")
    num_classes = logits.shape[-1]
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    alpha = smoothing if is_python_number(smoothing) else jnp.asarray(smoothing)
    targets = (1.0 - alpha) * one_hot + alpha / num_classes
    log_probs = jax.nn.log_softmax(logits, -1)
    return -(targets * log_probs).sum(-1)
