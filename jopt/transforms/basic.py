r"""Basic stateless transforms: zeroing updates and mapping a function over leaves.

:func:`jopt.stateless` (in :mod:`jopt.core`) turns ``fn(updates, params)`` into a
transform; :func:`stateless_with_tree_map` does the same for a function of one
leaf, and :func:`set_to_zero` returns zeros (parameters stay unchanged, e.g.
frozen parts in :func:`jopt.partition`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from jopt.core import GradientTransformation, stateless
from jopt.tree import zeros_like

Array = jax.Array

__all__ = ["set_to_zero", "stateless_with_tree_map"]


def set_to_zero() -> GradientTransformation:
    r"""The transform that maps every update to zero, :math:`u \leftarrow 0` (freezes parameters).

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.set_to_zero()
      >>> tx.update({"w": jnp.ones(2)}, tx.init(None))[0]["w"].tolist()
      [0.0, 0.0]
    """
    return stateless(lambda updates, params: zeros_like(updates))


def stateless_with_tree_map(f: Callable[[Array, Array | None], Array]) -> GradientTransformation:
    r"""A stateless transform applying ``f(update_leaf, param_leaf)`` to every leaf.

    .. math:: u_i \leftarrow f(u_i, \theta_i)

    Without ``params``, ``f`` receives ``None`` as its second argument.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.stateless_with_tree_map(lambda u, p: 2 * u)
      >>> tx.update({"w": jnp.ones(2)}, tx.init(None))[0]["w"].tolist()
      [2.0, 2.0]
    """

    def fn(updates, params):
        if params is None:
            return jax.tree.map(lambda u: f(u, None), updates)
        return jax.tree.map(f, updates, params)

    return stateless(fn)
