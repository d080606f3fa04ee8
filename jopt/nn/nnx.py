r"""flax.nnx layers whose hyperparameters may be traced: :class:`Dropout` (a traced rate) and
:class:`Linear` (padded to ``out_features``, masked to a trial's true ``width``).

Both follow :mod:`jopt.nn.linen`'s rules. A traced rate or width given to the constructor is
stored as pytree data (it is part of ``nnx.split``'s state, next to the parameters, not of the
static graph definition), so a model built inside a vmapped function holds each trial's value;
a Python number stays a static attribute, as in flax.

.. math::

   y = x\, (M \odot W) + m \odot b,\qquad M_{ij} = [i < n_\mathrm{in}][j < n],\quad m_j = [j < n]

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx as fnnx
  >>> from jopt.nn import nnx
  >>> layer = nnx.Linear(4, 8, width=jnp.int32(3), rngs=fnnx.Rngs(0))
  >>> y = layer(jnp.ones((2, 4)))
  >>> bool((y[:, 3:] == 0).all()), bool((layer.kernel[...][:, 3:] == 0).all())
  (True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx as _nnx
from flax.nnx import rnglib
from jax import lax

from jopt.hyperparams import is_python_number
from jopt.nn import attention, initializers, normalization
from jopt.nn.regularization import dropout

__all__ = ["Dropout", "LayerNorm", "Linear", "MultiHeadAttention"]

_KERNEL_INIT = initializers.lecun_normal()
_BIAS_INIT = _nnx.initializers.zeros_init()
_SCALE_INIT = _nnx.initializers.ones_init()


def _data(value: Any) -> Any:
    """Arrays (traced or not) as pytree data; Python values stay static attributes."""
    return value if value is None or isinstance(value, (int, float)) else _nnx.data(value)


class Dropout(_nnx.Dropout):
    """``flax.nnx.Dropout`` whose ``rate`` may be an array or a traced value.

    The constructor and the call are flax's (``rate``, ``broadcast_dims``, ``deterministic``,
    ``rng_collection``, ``rngs``; ``__call__(inputs, *, deterministic=None, rngs=None)``,
    ``train()``/``eval()``); the RNG stream is forked and consumed as flax does and the mask is
    drawn as flax draws it (:func:`jopt.nn.dropout`), so with a Python-number rate the output
    equals flax's bit for bit. An array rate is pytree data and nothing branches on its value.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx as fnnx
      >>> layer = Dropout(jnp.float32(0.0), rngs=fnnx.Rngs(0))
      >>> bool((layer(jnp.ones(4)) == 1).all())
      True
    """

    def __init__(
        self,
        rate: Any,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: rnglib.Rngs | rnglib.RngStream | None = None,
    ) -> None:
        super().__init__(
            0.0,
            broadcast_dims=broadcast_dims,
            deterministic=deterministic,
            rng_collection=rng_collection,
            rngs=rngs,
        )
        self.rate = _data(rate)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Drop entries with probability ``rate`` (kept ones scaled by ``1 / (1 - rate)``);
        ``inputs`` unchanged when deterministic (the call's flag wins over the constructor's)."""
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic is None:
            raise ValueError("Dropout: pass deterministic=True/False to the constructor or the call")
        if deterministic:
            return inputs
        rate = self.rate
        if is_python_number(rate) and rate in (0.0, 1.0):
            return dropout(None, inputs, rate, broadcast_dims=self.broadcast_dims)
        source = self.rngs if rngs is None else rngs
        if source is None:
            raise ValueError("Dropout: deterministic is False but no rngs were given (constructor or call)")
        if isinstance(source, rnglib.Rngs):
            key = source[self.rng_collection]()
        elif isinstance(source, rnglib.RngStream):
            key = source()
        elif isinstance(source, jax.Array):
            key = source
        else:
            raise TypeError(f"rngs must be an Rngs, an RngStream or a key array, got {type(source).__name__}")
        return dropout(key, inputs, rate, broadcast_dims=self.broadcast_dims)


class Linear(_nnx.Module):
    """``flax.nnx.Linear`` with ``out_features`` padded units, the first ``width`` real.

    Args:
      in_features: the input's last-axis size (padded).
      out_features: the padded (maximum) number of output units.
      width: the true number of output units, an int or a traced int (``None``: all).
      in_width: the true number of input features, e.g. the previous layer's ``width``.
      use_bias, dtype, param_dtype, precision: as ``flax.nnx.Linear``.
      kernel_init: a padding-invariant initializer (default
        :func:`jopt.nn.initializers.lecun_normal`) or any flax initializer (values outside the
        true shape zeroed, see :func:`jopt.nn.initializers.padded_init`).
      bias_init: the bias initializer (default zeros).
      rngs: the ``Rngs``; the kernel and then the bias draw from ``rngs.params()`` as flax's
        ``Linear`` does, so ``flax.nnx.Linear(n_in, n, kernel_init=lecun_normal(), ...)`` is the
        unpadded reference.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx as fnnx
      >>> Linear(3, 2, rngs=fnnx.Rngs(0))(jnp.ones((1, 3))).shape
      (1, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        width: Any = None,
        in_width: Any = None,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., jax.Array] = _KERNEL_INIT,
        bias_init: Callable[..., jax.Array] = _BIAS_INIT,
        rngs: rnglib.Rngs,
    ) -> None:
        padded = width is not None or in_width is not None
        true_out = out_features if width is None else width
        true_in = in_features if in_width is None else in_width
        kernel_true = (true_in, true_out) if padded else None
        kernel_fn = initializers.padded_init(kernel_init, kernel_true)
        self.kernel = _nnx.Param(kernel_fn(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = _nnx.data(None)
        if use_bias:
            bias_fn = initializers.padded_init(bias_init, (true_out,) if padded else None)
            self.bias = _nnx.Param(bias_fn(rngs.params(), (out_features,), param_dtype))
        self.in_features, self.out_features = in_features, out_features
        self.width, self.in_width = _data(width), _data(in_width)
        self.use_bias, self.dtype, self.param_dtype, self.precision = use_bias, dtype, param_dtype, precision

    def _true_shapes(self) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]:
        if self.width is None and self.in_width is None:
            return None, None
        true_out = self.out_features if self.width is None else self.width
        true_in = self.in_features if self.in_width is None else self.in_width
        return (true_in, true_out), (true_out,)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """``inputs @ kernel + bias`` over the last axis, with the padded entries masked."""
        kernel_true, bias_true = self._true_shapes()
        kernel = initializers.mask_outside(self.kernel[...], kernel_true)
        bias = initializers.mask_outside(self.bias[...], bias_true) if self.bias is not None else None
        inputs, kernel, bias = _nnx.nn.dtypes.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        y = lax.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision=self.precision)
        if bias is not None:
            y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
        return y


class LayerNorm(_nnx.Module):
    """``flax.nnx.LayerNorm`` over the first ``width`` of ``num_features`` features (the rest zero).

    Args:
      num_features: the padded feature count (the last axis).
      width: the true number of features, an int or a traced int (``None``: all).
      epsilon, dtype, param_dtype, use_bias, use_scale, bias_init, scale_init,
        use_fast_variance, rngs: as ``flax.nnx.LayerNorm`` (the scale and then the bias draw
        from ``rngs.params()``); only the last axis is normalized.

    The statistics run over the real features only (:func:`jopt.nn.layer_norm`); padded
    features output exactly zero, and their scale/bias entries start at zero and get zero
    gradients.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx as fnnx
      >>> y = LayerNorm(4, width=jnp.int32(2), rngs=fnnx.Rngs(0))(jnp.array([1.0, 3.0, 9.0, 9.0]))
      >>> [round(v, 3) for v in y.tolist()]
      [-1.0, 1.0, 0.0, 0.0]
    """

    def __init__(
        self,
        num_features: int,
        *,
        width: Any = None,
        epsilon: float = 1e-6,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Callable[..., jax.Array] = _BIAS_INIT,
        scale_init: Callable[..., jax.Array] = _SCALE_INIT,
        use_fast_variance: bool = True,
        rngs: rnglib.Rngs,
    ) -> None:
        normalization.check_count(width, "width", num_features)
        true = None if width is None else (width,)
        shape = (num_features,)
        self.scale = _nnx.data(None)
        self.bias = _nnx.data(None)
        if use_scale:
            self.scale = _nnx.Param(
                initializers.padded_init(scale_init, true)(rngs.params(), shape, param_dtype)
            )
        if use_bias:
            self.bias = _nnx.Param(
                initializers.padded_init(bias_init, true)(rngs.params(), shape, param_dtype)
            )
        self.num_features, self.width = num_features, _data(width)
        self.epsilon, self.dtype, self.param_dtype = epsilon, dtype, param_dtype
        self.use_bias, self.use_scale, self.use_fast_variance = use_bias, use_scale, use_fast_variance

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalize ``x``'s last axis over its first ``width`` entries, then scale and shift."""
        scale = None if self.scale is None else self.scale[...]
        bias = None if self.bias is None else self.bias[...]
        return normalization.layer_norm(
            x,
            self.width,
            scale,
            bias,
            epsilon=self.epsilon,
            use_fast_variance=self.use_fast_variance,
            dtype=self.dtype,
        )


class _Projection(_nnx.Module):
    """A kernel and an optional bias, named as flax's ``LinearGeneral`` names them."""

    def __init__(self, kernel: jax.Array, bias: jax.Array | None) -> None:
        self.kernel = _nnx.Param(kernel)
        self.bias = _nnx.data(None) if bias is None else _nnx.Param(bias)

    def params(self) -> dict[str, jax.Array]:
        out = {"kernel": self.kernel[...]}
        if self.bias is not None:
            out["bias"] = self.bias[...]
        return out


class MultiHeadAttention(_nnx.Module):
    """Multi-head attention with ``num_heads_max`` heads built, the first ``num_heads`` real.

    Args:
      num_heads_max: the padded (maximum) number of heads.
      in_features: the input's last-axis size; head_dim: each head's (static) size.
      num_heads: the true number of heads, an int or a traced int (``None``: all).
      out_features: the output size (``None``: ``in_features``).
      use_bias, dtype, param_dtype, precision, kernel_init, out_kernel_init, bias_init,
        out_bias_init, rngs: as ``flax.nnx.MultiHeadAttention`` (default kernel init: the
        padding-invariant :func:`jopt.nn.initializers.lecun_normal`); parameters are drawn
        from ``rngs.params()`` in flax's order (query, key, value, out; kernel then bias).

    The submodules ``query``, ``key``, ``value``, ``out`` hold flax's shapes, so with
    ``num_heads=None`` this starts where ``flax.nnx.MultiHeadAttention(num_heads_max,
    in_features, num_heads_max * head_dim, decode=False)`` starts for the same initializers;
    masked heads contribute nothing and get zero gradients (see :mod:`jopt.nn.attention`).
    No attention dropout and no decoding cache.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx as fnnx
      >>> layer = MultiHeadAttention(4, 8, 2, num_heads=jnp.int32(1), rngs=fnnx.Rngs(0))
      >>> layer(jnp.ones((1, 3, 8))).shape, bool((layer.value.kernel[...][:, 1:] == 0).all())
      ((1, 3, 8), True)
    """

    def __init__(
        self,
        num_heads_max: int,
        in_features: int,
        head_dim: int,
        *,
        num_heads: Any = None,
        out_features: int | None = None,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., jax.Array] = _KERNEL_INIT,
        out_kernel_init: Callable[..., jax.Array] | None = None,
        bias_init: Callable[..., jax.Array] = _BIAS_INIT,
        out_bias_init: Callable[..., jax.Array] | None = None,
        rngs: rnglib.Rngs,
    ) -> None:
        for name, value in (
            ("num_heads_max", num_heads_max),
            ("in_features", in_features),
            ("head_dim", head_dim),
        ):
            normalization.check_count(value, name, 2**31 - 1)
        normalization.check_count(num_heads, "num_heads", num_heads_max)
        heads, out_features = num_heads_max, in_features if out_features is None else out_features
        for name in ("query", "key", "value"):
            kernel = attention.head_kernel_init(kernel_init, num_heads)
            kernel = kernel(rngs.params(), (in_features, heads, head_dim), param_dtype)
            bias = None
            if use_bias:
                bias = attention.head_bias_init(bias_init, num_heads)(
                    rngs.params(), (heads, head_dim), param_dtype
                )
            setattr(self, name, _Projection(kernel, bias))
        out_init = attention.out_kernel_init(
            kernel_init if out_kernel_init is None else out_kernel_init, num_heads
        )
        kernel = out_init(rngs.params(), (heads, head_dim, out_features), param_dtype)
        out_bias = bias_init if out_bias_init is None else out_bias_init
        bias = out_bias(rngs.params(), (out_features,), param_dtype) if use_bias else None
        self.out = _Projection(kernel, bias)
        self.num_heads_max, self.in_features, self.head_dim = num_heads_max, in_features, head_dim
        self.num_heads, self.out_features = _data(num_heads), out_features
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision

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
        inputs_k = inputs_q if inputs_k is None else inputs_k
        inputs_v = inputs_k if inputs_v is None else inputs_v
        params = {name: getattr(self, name).params() for name in ("query", "key", "value", "out")}
        return attention.multi_head_attention(
            inputs_q,
            inputs_k,
            inputs_v,
            params,
            self.num_heads,
            mask=mask,
            precision=self.precision,
            dtype=self.dtype,
        )
