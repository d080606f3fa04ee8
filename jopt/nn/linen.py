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
from jopt.nn import attention, initializers, normalization
from jopt.nn.regularization import dropout

__all__ = ["Dense", "Dropout", "LayerNorm", "MultiHeadAttention"]


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


class LayerNorm(fnn.Module):
    """``flax.linen.LayerNorm`` over the first ``width`` features of the last axis (the rest zero).

    Attributes:
      epsilon, dtype, param_dtype, use_bias, use_scale, bias_init, scale_init,
        use_fast_variance: as ``flax.linen.LayerNorm`` (epsilon 1e-6, fast variance).
      width: the true number of features, an int or a traced int (``None``: all).

    The statistics run over the ``width`` real features only (:func:`jopt.nn.layer_norm`);
    padded features output exactly zero, and their ``scale``/``bias`` entries start at zero
    and get zero gradients. Parameter names and shapes are flax's; only the last axis is
    normalized (flax's default ``reduction_axes=feature_axes=-1``).

    Example (the active features equal flax's LayerNorm on the unpadded slice):
      >>> import jax, jax.numpy as jnp, flax.linen as fnn
      >>> x = jax.random.normal(jax.random.key(0), (2, 6))
      >>> layer = LayerNorm(width=jnp.int32(4))
      >>> y = layer.apply(layer.init(jax.random.key(1), x), x)
      >>> ref = fnn.LayerNorm().apply({"params": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}, x[:, :4])
      >>> bool(jnp.allclose(y[:, :4], ref, atol=1e-6)), bool((y[:, 4:] == 0).all())
      (True, True)
    """

    epsilon: float = 1e-6
    width: Any = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Callable[..., jax.Array] = fnn.initializers.zeros_init()
    scale_init: Callable[..., jax.Array] = fnn.initializers.ones_init()
    use_fast_variance: bool = True

    @fnn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalize ``x``'s last axis over its first ``width`` entries, then scale and shift."""
        features = jnp.shape(x)[-1]
        normalization.check_count(self.width, "width", features)
        true = None if self.width is None else (self.width,)
        scale = bias = None
        if self.use_scale:
            init = initializers.padded_init(self.scale_init, true)
            scale = self.param("scale", init, (features,), self.param_dtype)
        if self.use_bias:
            bias = self.param(
                "bias", initializers.padded_init(self.bias_init, true), (features,), self.param_dtype
            )
        return normalization.layer_norm(
            x,
            self.width,
            scale,
            bias,
            epsilon=self.epsilon,
            use_fast_variance=self.use_fast_variance,
            dtype=self.dtype,
        )


class _Projection(fnn.Module):
    """Declares a kernel (and a bias) of the given shapes; the attention does the arithmetic."""

    kernel_shape: tuple[int, ...]
    bias_shape: tuple[int, ...] | None
    kernel_init: Callable[..., jax.Array]
    bias_init: Callable[..., jax.Array]
    param_dtype: Any

    @fnn.compact
    def __call__(self) -> dict[str, jax.Array]:
        params = {"kernel": self.param("kernel", self.kernel_init, self.kernel_shape, self.param_dtype)}
        if self.bias_shape is not None:
            params["bias"] = self.param("bias", self.bias_init, self.bias_shape, self.param_dtype)
        return params


class MultiHeadAttention(fnn.Module):
    """Multi-head dot-product attention built at ``num_heads_max`` heads, ``num_heads`` of them real.

    Attributes:
      num_heads_max: the padded (maximum) number of heads; the parameters' shape.
      head_dim: the (static) size of each head (flax's ``qkv_features / num_heads``).
      num_heads: the true number of heads, an int or a traced int (``None``: ``num_heads_max``).
      out_features: the output's last-axis size (``None``: the input's).
      use_bias, dtype, param_dtype, precision: as flax's ``MultiHeadDotProductAttention``.
      kernel_init: the query/key/value kernels' initializer (default the padding-invariant
        :func:`jopt.nn.initializers.lecun_normal`); out_kernel_init: the output kernel's
        (``None``: ``kernel_init``); bias_init / out_bias_init likewise (default zeros).

    The parameter tree is flax's ``MultiHeadDotProductAttention(num_heads_max,
    qkv_features=num_heads_max * head_dim)`` tree (``query``, ``key``, ``value``, ``out``), and
    with ``num_heads=None`` the initial values and outputs are that layer's for the same
    initializers. Heads ``>= num_heads`` are masked (:func:`jopt.nn.attention.multi_head_attention`):
    they contribute nothing and get zero gradients; the real heads start from the values of
    ``flax.linen.MultiHeadDotProductAttention(num_heads=n, qkv_features=n * head_dim,
    kernel_init=jopt.nn.initializers.lecun_normal())``. No attention dropout and no decoding cache.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((2, 5, 8))
      >>> layer = MultiHeadAttention(4, 2, num_heads=jnp.int32(3))
      >>> params = layer.init(jax.random.key(0), x)
      >>> params["params"]["query"]["kernel"].shape, layer.apply(params, x).shape
      ((8, 4, 2), (2, 5, 8))
      >>> bool((params["params"]["out"]["kernel"][3:] == 0).all())
      True
    """

    num_heads_max: int
    head_dim: int
    num_heads: Any = None
    out_features: int | None = None
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable[..., jax.Array] = initializers.lecun_normal()
    out_kernel_init: Callable[..., jax.Array] | None = None
    bias_init: Callable[..., jax.Array] = fnn.initializers.zeros_init()
    out_bias_init: Callable[..., jax.Array] | None = None

    @fnn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_k: jax.Array | None = None,
        inputs_v: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """Attend from ``inputs_q`` to ``inputs_k`` (default ``inputs_q``) / ``inputs_v`` (default
        ``inputs_k``); ``mask`` broadcastable to ``(..., heads, q_length, kv_length)``."""
        for name in ("num_heads_max", "head_dim"):
            normalization.check_count(getattr(self, name), name, 2**31 - 1)
        normalization.check_count(self.num_heads, "num_heads", self.num_heads_max)
        inputs_k = inputs_q if inputs_k is None else inputs_k
        inputs_v = inputs_k if inputs_v is None else inputs_v
        features, heads, dim = jnp.shape(inputs_q)[-1], self.num_heads_max, self.head_dim
        out_features = features if self.out_features is None else self.out_features
        n, bias = self.num_heads, self.bias_init
        params = {}
        for name, x in (("query", inputs_q), ("key", inputs_k), ("value", inputs_v)):
            params[name] = _Projection(
                (jnp.shape(x)[-1], heads, dim),
                (heads, dim) if self.use_bias else None,
                attention.head_kernel_init(self.kernel_init, n),
                attention.head_bias_init(bias, n),
                self.param_dtype,
                name=name,
            )()
        params["out"] = _Projection(
            (heads, dim, out_features),
            (out_features,) if self.use_bias else None,
            attention.out_kernel_init(
                self.kernel_init if self.out_kernel_init is None else self.out_kernel_init, n
            ),
            bias if self.out_bias_init is None else self.out_bias_init,
            self.param_dtype,
            name="out",
        )()
        return attention.multi_head_attention(
            inputs_q, inputs_k, inputs_v, params, n, mask=mask, precision=self.precision, dtype=self.dtype
        )
