r"""flax.linen layers whose hyperparameters may be traced: a dropout with a traced rate and a
Dense layer padded to a maximum width and masked to a trial's true width.

:class:`Dropout` is a drop-in for ``flax.linen.Dropout`` (same fields, same call, same RNG use:
equal outputs bit for bit with a Python-number rate) whose ``rate`` may be a traced value.

:class:`Dense` is ``flax.linen.Dense`` built at ``features`` units of which the first ``width``
are real; ``in_width`` says how many of the input features are real (the previous layer's
width). Kernel entries outside ``[:in_width, :width]`` and bias entries outside ``[:width]`` are
masked to zero in the forward pass, so masked units output exactly zero and the masked
parameters receive zero gradients; a padding-invariant initializer
(:mod:`jopt.nn.initializers`, the default) starts them at zero with the real block scaled by
the true fan-in, so with an element-wise optimizer (Adam, AdamW with weight decay, SGD, ...)
they and their optimizer state stay exactly zero.

.. math::

   y = x\, (M \odot W) + m \odot b,\qquad M_{ij} = [i < n_\mathrm{in}][j < n],\quad m_j = [j < n]

Example (one program for both widths; width 3 of 8 equals an unpadded width-3 layer):
  >>> import jax, jax.numpy as jnp, flax.linen as fnn
  >>> from jopt import nn
  >>> x = jnp.ones((2, 4))
  >>> padded = nn.Dense(8, width=jnp.int32(3))
  >>> params = padded.init(jax.random.key(0), x)
  >>> y = padded.apply(params, x)
  >>> bool((y[:, 3:] == 0).all())
  True
  >>> plain = fnn.Dense(3, kernel_init=nn.initializers.lecun_normal())
  >>> ref = plain.apply(plain.init(jax.random.key(0), x), x)
  >>> bool(jnp.allclose(y[:, :3], ref, rtol=1e-6))
  True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from jopt.hyperparams import is_python_number
from jopt.nn import initializers
from jopt.nn.regularization import dropout

__all__ = ["Dense", "Dropout"]


class Dense(fnn.Module):
    """A Dense layer of ``features`` units, the first ``width`` real (the rest masked to zero).

    Attributes:
      features: the padded (maximum) number of output units; the parameters' shape.
      width: the true number of output units, an int or a traced int (``None``: ``features``).
      in_width: the true number of input features, e.g. the previous layer's ``width``
        (``None``: all of the input's last axis).
      use_bias, dtype, param_dtype, precision: as ``flax.linen.Dense``.
      kernel_init: a padding-invariant initializer (default
        :func:`jopt.nn.initializers.lecun_normal`, flax's distribution with per-element draws)
        or any flax initializer (see :func:`jopt.nn.initializers.padded_init`).
      bias_init: the bias initializer (default zeros).

    With ``width`` and ``in_width`` both ``None`` this is ``flax.linen.Dense`` (the same
    parameters and the same arithmetic), named like it (``Dense_0``, ...), so swapping the
    import keeps a model's parameter names and initial keys.
    """

    features: int
    width: Any = None
    in_width: Any = None
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable[..., jax.Array] = initializers.lecun_normal()
    bias_init: Callable[..., jax.Array] = fnn.initializers.zeros_init()

    @fnn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """``inputs @ kernel + bias`` over the last axis, with the padded entries masked."""
        in_features = jnp.shape(inputs)[-1]
        padded = self.width is not None or self.in_width is not None
        true_out = self.features if self.width is None else self.width
        true_in = in_features if self.in_width is None else self.in_width
        kernel_true = (true_in, true_out) if padded else None
        bias_true = (true_out,) if padded else None
        kernel_init = initializers.padded_init(self.kernel_init, kernel_true)
        kernel = self.param("kernel", kernel_init, (in_features, self.features), self.param_dtype)
        bias = None
        if self.use_bias:
            bias_init = initializers.padded_init(self.bias_init, bias_true)
            bias = self.param("bias", bias_init, (self.features,), self.param_dtype)
        kernel = initializers.mask_outside(kernel, kernel_true)
        bias = initializers.mask_outside(bias, bias_true)
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = lax.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision=self.precision)
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        return y


class Dropout(fnn.Dropout):
    """``flax.linen.Dropout`` whose ``rate`` may be an array or a traced value.

    The fields and the call are flax's (``rate``, ``broadcast_dims``, ``deterministic``,
    ``rng_collection``; ``__call__(inputs, deterministic=None, rng=None)``); the mask is drawn
    as flax draws it (:func:`jopt.nn.dropout`), so with a Python-number rate the output equals
    flax's bit for bit. With an array rate nothing branches on its value (rate 0 is the
    identity exactly) and an RNG is always drawn when not deterministic.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = Dropout(jnp.float32(0.5), deterministic=False)
      >>> y = layer.apply({}, jnp.ones(6), rngs={"dropout": jax.random.key(0)})
      >>> sorted(set(y.tolist()))
      [0.0, 2.0]
    """

    def __call__(
        self, inputs: jax.Array, deterministic: bool | None = None, rng: jax.Array | None = None
    ) -> jax.Array:
        """Drop entries of ``inputs`` with probability ``rate``, scaling the kept ones by
        ``1 / (1 - rate)``; ``inputs`` unchanged when deterministic."""
        deterministic = fnn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic:
            return inputs
        rate = self.rate
        if is_python_number(rate) and rate in (0.0, 1.0):
            return dropout(None, inputs, rate, broadcast_dims=self.broadcast_dims)
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        return dropout(rng, inputs, rate, broadcast_dims=self.broadcast_dims)
