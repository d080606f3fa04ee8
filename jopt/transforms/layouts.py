r"""Layout wrappers: run a transform on all parameters concatenated into one vector (``optax.flatten``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.core import GradientTransformation, as_transformation, transformation
from jopt.transforms.parameter_groups import _forwarded

PyTree = Any

__all__ = ["flatten"]


def _to_vector(tree: PyTree) -> jax.Array:
    return jnp.concatenate([jnp.reshape(x, [-1]) for x in jax.tree.leaves(tree)])


def _from_vector(like: PyTree, flat: jax.Array) -> PyTree:
    leaves, treedef = jax.tree.flatten(like)
    offsets = np.cumsum([np.size(x) for x in leaves])[:-1]
    pieces = jnp.split(flat, offsets)
    return jax.tree.unflatten(
        treedef, [jnp.reshape(piece, x.shape).astype(x.dtype) for piece, x in zip(pieces, leaves)]
    )


def flatten(inner: Any) -> GradientTransformation:
    r"""Apply ``inner`` to the concatenation of all leaves, then split the result back.

    .. math:: u \leftarrow \operatorname{unvec}\big(f(\operatorname{vec}(u))\big)

    One large array instead of many small ones cuts per-leaf overhead (at the
    cost of a copy); the inner state is over the flat vector. Leaves of mixed
    dtypes are concatenated in their promoted dtype; each result leaf is cast
    back to its update's dtype.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.flatten(jopt.clip_by_global_norm(1.0))
      >>> p = {"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}
      >>> u, _ = tx.update(p, tx.init(p), p)
      >>> [round(float(u[k].ravel()[0]), 3) for k in ("a", "b")]
      [0.6, 0.8]
    """
    inner = as_transformation(inner)

    def init(params):
        return inner.init(_to_vector(params))

    def update(updates, state, params=None, **extra_args):
        flat_params = None if params is None else _to_vector(params)
        flat, state = inner.update(_to_vector(updates), state, flat_params, **_forwarded(inner, extra_args))
        return _from_vector(updates, flat), state

    return transformation(init, update, extra_args=inner.extra_args)
