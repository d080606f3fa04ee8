r"""Gradient noise: annealed Gaussian perturbations of the updates (Neelakantan et al., 2015).

:func:`add_noise` keeps a PRNG key in its state and splits it at every step the
way ``optax.add_noise`` does, so for the same ``key`` (an int seed or a typed
key) the noise, and hence the trajectory, equals optax's bit for bit.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, hyperparam_transformation
from jopt.hyperparams import NONNEGATIVE, Hyperparam, cast_hyperparam, compute_dtype

Array = jax.Array
PyTree = Any

__all__ = ["AddNoiseState", "add_noise"]


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`.

    Attributes:
      count: number of updates so far (int32), for the annealing.
      rng_key: the typed PRNG key the next step splits.
      hyperparams: hyperparameter values used at the latest step (non-constant ones).
    """

    count: Array
    rng_key: Array
    hyperparams: dict[str, Array]


def _typed_key(key: Array | int) -> Array:
    """A typed PRNG key from a typed key, a raw ``uint32[2]`` key or an integer seed."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if jnp.ndim(key) == 1:
        return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    return jax.random.key(key)


def _noise_like(key: Array, tree: PyTree) -> PyTree:
    """Standard normal noise shaped like ``tree``, one split of ``key`` per leaf (leaf order)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, x.shape, compute_dtype(x.dtype)) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, noise)


def add_noise(
    eta: Hyperparam,
    gamma: Hyperparam,
    key: Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    r"""Add Gaussian noise with an annealed variance to the updates.

    .. math::

        u_t \leftarrow u_t + \sigma_t\, \xi_t, \qquad
        \sigma_t^2 = \frac{\eta}{t^{\gamma}}, \qquad \xi_t \sim \mathcal N(0, I)

    At every step the state key is split into the next state key and a sample
    key, and the sample key into one key per leaf (optax's order). Noise is
    drawn in at least float32.

    Args:
      eta: initial variance :math:`\eta \ge 0`.
      gamma: annealing exponent :math:`\gamma \ge 0`.
      key: a typed key (``jax.random.key``), a raw ``uint32[2]`` key or an int
        seed; ``None`` warns and uses seed 0 (as optax does).
      seed: deprecated spelling of an int ``key`` (as in optax).

    Raises:
      ValueError: when both ``key`` and ``seed`` are given.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> tx = jopt.add_noise(eta=0.01, gamma=0.55, key=jax.random.key(0))
      >>> g = {"w": jnp.zeros(3)}
      >>> u, state = tx.update(g, tx.init(g))
      >>> bool(jnp.all(u["w"] != 0)), bool(jnp.all(jnp.abs(u["w"]) < 1.0))
      (True, True)
    """
    if seed is not None:
        warnings.warn('add_noise: "seed" is deprecated, use "key"', DeprecationWarning, stacklevel=2)
        if key is not None:
            raise ValueError("add_noise: give only one of key and seed")
        key = seed
    if key is None:
        warnings.warn("add_noise: no key given, using seed 0; pass key=", UserWarning, stacklevel=2)
        key = 0
    hp = {"eta": eta, "gamma": gamma}
    ranges = {"eta": NONNEGATIVE, "gamma": NONNEGATIVE}

    def init_fields(params, h):
        return (_typed_key(key),)

    def step(updates, state, params, h, count_inc):
        std = jnp.sqrt(h["eta"] / count_inc ** h["gamma"])
        next_key, sample_key = jax.random.split(state.rng_key)
        noise = _noise_like(sample_key, updates)

        def perturb(u, xi):
            u = u.astype(compute_dtype(u.dtype))
            return u + cast_hyperparam(std, u.dtype) * xi.astype(u.dtype)

        return jax.tree.map(perturb, updates, noise), (next_key,)

    return hyperparam_transformation(
        "add_noise", hp, ranges, AddNoiseState, step, init_fields, counted=True, cast_fields=False
    )
