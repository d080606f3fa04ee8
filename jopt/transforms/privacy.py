r"""Differentially private gradient aggregation (DP-SGD, Abadi et al., 2016).

:func:`differentially_private_aggregate` takes *per-example* gradients (a leading batch axis on
every leaf, e.g. from ``jax.vmap(jax.grad(loss))``), clips each example's gradient to global norm
:math:`C`, sums them, adds Gaussian noise of standard deviation :math:`\sigma C` and divides by
the batch size:

.. math::

    \tilde g = \frac{1}{B}\Big(\sum_{b=1}^{B} g_b \min\big(1, C / \|g_b\|_2\big)
               + \sigma C\, \xi\Big), \qquad \xi \sim \mathcal N(0, I)

The state key is split into the next key and one key per leaf, in optax's order, so for the
same key the noise (and the trajectory) equals ``optax.contrib.differentially_private_aggregate``
bit for bit. :func:`dpsgd` is that aggregation followed by SGD (optionally with momentum).
It must come first in a chain (its input has the batch axis).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax

from jopt.core import GradientTransformation, chain, hyperparam_transformation, identity
from jopt.hyperparams import NONNEGATIVE, Hyperparam, cast_hyperparam
from jopt.transforms.momentum import trace
from jopt.transforms.noise import _typed_key
from jopt.transforms.per_example import _check_batched, _clip_and_sum
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate

Array = jax.Array

__all__ = ["DifferentiallyPrivateAggregateState", "differentially_private_aggregate", "dpsgd"]


class DifferentiallyPrivateAggregateState(NamedTuple):
    """State of :func:`differentially_private_aggregate`.

    Attributes:
      count: ``None`` (a step count only when a hyperparameter is a schedule).
      rng_key: the typed PRNG key the next step splits.
      hyperparams: hyperparameter values used at the latest step (non-constant ones).
    """

    count: Array | None
    rng_key: Array
    hyperparams: dict[str, Array]


def differentially_private_aggregate(
    l2_norm_clip: Hyperparam,
    noise_multiplier: Hyperparam,
    key: Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    r"""Clip per-example gradients to norm :math:`C`, sum, add :math:`\mathcal N(0, (\sigma C)^2)`
    noise and average over the batch (see the module docstring).

    Args:
      l2_norm_clip: :math:`C \ge 0`, the largest L2 norm of one example's gradient.
      noise_multiplier: :math:`\sigma \ge 0`, the noise's standard deviation relative to :math:`C`.
      key: a typed key, a raw ``uint32[2]`` key or an int seed; ``None`` warns and uses seed 0
        (as optax does).
      seed: deprecated spelling of an int ``key`` (as in optax).

    Raises:
      ValueError: both ``key`` and ``seed`` given, a negative concrete hyperparameter, or leaves
        without a common leading batch axis.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> tx = jopt.contrib.differentially_private_aggregate(1.0, 0.0, key=0)
      >>> per_example = {"w": jnp.array([[3.0, 4.0], [0.3, 0.4]])}  # norms 5 and 0.5
      >>> u, _ = tx.update(per_example, tx.init(None))
      >>> [round(v, 3) for v in u["w"].tolist()]  # (0.6, 0.8) + (0.3, 0.4), halved
      [0.45, 0.6]
    """
    if seed is not None:
        warnings.warn(
            'differentially_private_aggregate: "seed" is deprecated, use "key"',
            DeprecationWarning,
            stacklevel=2,
        )
        if key is not None:
            raise ValueError("differentially_private_aggregate: give only one of key and seed")
        key = seed
    if key is None:
        warnings.warn("differentially_private_aggregate: no key given, using seed 0; pass key=", stacklevel=2)
        key = 0
    hp = {"l2_norm_clip": l2_norm_clip, "noise_multiplier": noise_multiplier}
    ranges = {"l2_norm_clip": NONNEGATIVE, "noise_multiplier": NONNEGATIVE}

    def init_fields(params: Any, h: dict) -> tuple:
        return (_typed_key(key),)

    def step(updates, state, params, h, count_inc):
        leaves, treedef = jax.tree.flatten(updates)
        _check_batched("differentially_private_aggregate", leaves)
        batch = leaves[0].shape[0]
        clipped, _ = _clip_and_sum(leaves, h["l2_norm_clip"])
        noise_std = h["l2_norm_clip"] * h["noise_multiplier"]  # Python numbers stay Python numbers
        next_key, *keys = jax.random.split(state.rng_key, len(leaves) + 1)
        noised = [
            (g + cast_hyperparam(noise_std, g.dtype) * jax.random.normal(k, g.shape, g.dtype)) / batch
            for g, k in zip(clipped, keys, strict=True)
        ]
        return jax.tree.unflatten(treedef, noised), (next_key,)

    return hyperparam_transformation(
        "differentially_private_aggregate",
        hp,
        ranges,
        DifferentiallyPrivateAggregateState,
        step,
        init_fields,
        cast_fields=False,
    )


def dpsgd(
    learning_rate: Hyperparam | StatefulSchedule,
    l2_norm_clip: Hyperparam,
    noise_multiplier: Hyperparam,
    seed: int,
    momentum: Hyperparam | None = None,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""DP-SGD: :func:`differentially_private_aggregate` (keyed by ``seed``), then SGD with an
    optional ``momentum`` trace (Nesterov with ``nesterov``): :math:`u = -\eta\, \tilde g`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.contrib.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
      >>> u, _ = tx.update({"w": jnp.array([[3.0, 4.0]])}, tx.init({"w": jnp.zeros(2)}))
      >>> [round(v, 3) for v in u["w"].tolist()]
      [-0.06, -0.08]
    """
    return chain(
        differentially_private_aggregate(l2_norm_clip, noise_multiplier, key=seed),
        trace(decay=momentum, nesterov=nesterov) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )
