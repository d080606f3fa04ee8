r"""Scaling gradients in the backward pass only (identity in the forward pass).

``scale_gradient(x, s)`` returns ``x`` but scales the cotangent flowing back
through it by :math:`s`: :math:`\partial L / \partial x \leftarrow s\,\partial L / \partial x`.
Used to slow down parts of a model (e.g. an encoder) or, with :math:`s < 0`,
for gradient reversal (domain-adversarial training).
"""

from __future__ import annotations

from typing import Any

import jax

from jopt.hyperparams import ANY, is_python_number

Array = jax.Array
PyTree = Any

__all__ = ["scale_gradient"]


@jax.custom_vjp
def _scaled_backward(inputs: PyTree, scale: Array | float) -> PyTree:
    del scale
    return inputs


def _forward(inputs: PyTree, scale: Array | float) -> tuple[PyTree, Array | float]:
    return inputs, scale


def _backward(scale: Array | float, cotangent: PyTree) -> tuple[PyTree, None]:
    return jax.tree.map(lambda g: g * scale, cotangent), None


_scaled_backward.defvjp(_forward, _backward)


def scale_gradient(inputs: PyTree, scale: Array | float) -> PyTree:
    r"""``inputs`` unchanged, with their gradient multiplied by ``scale`` in the backward pass.

    .. math:: y = x, \qquad \bar x = s\,\bar y

    A Python-number ``scale`` of 1 returns ``inputs`` as is and of 0 stops the
    gradient (``jax.lax.stop_gradient``); any other value, including arrays and
    traced values (so ``scale`` can be vmapped), goes through a custom VJP.

    Raises:
      ValueError: when a concrete ``scale`` is not finite.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> jax.grad(lambda x: jnp.sum(jopt.scale_gradient(x, -0.5) ** 2))(jnp.ones(2)).tolist()
      [-1.0, -1.0]
    """
    ANY.check(scale, "scale", "scale_gradient")
    if is_python_number(scale):
        if scale == 1.0:
            return inputs
        if scale == 0.0:
            return jax.lax.stop_gradient(inputs)
    return _scaled_backward(inputs, scale)
