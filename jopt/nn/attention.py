r"""Multi-head dot-product attention built at ``num_heads_max`` heads, the first ``num_heads`` real.

The number of heads changes parameter shapes, so as a static value each choice is its own
program. Built at the largest value, :func:`multi_head_attention` realises a trial's (traced)
``num_heads = n`` by masking: the query, key and value kernels and biases of heads ``>= n`` and
the output kernel's rows for those heads are set to exactly zero in the forward pass, so the
masked heads contribute nothing to the output and all their parameters receive zero gradients
(with an element-wise optimizer their state stays zero). ``head_dim`` is static.

The parameters are laid out as flax's ``MultiHeadDotProductAttention`` lays them out
(``query``/``key``/``value``: kernel ``(features, heads, head_dim)``, bias ``(heads, head_dim)``;
``out``: kernel ``(heads, head_dim, out_features)``, bias ``(out_features,)``), and the initializers
here (:func:`head_kernel_init`, :func:`head_bias_init`, :func:`out_kernel_init`) call the
element initializer on the same flattened shapes flax uses (``(features, heads * head_dim)`` and
``(heads * head_dim, out_features)``). With a padding-invariant initializer
(:mod:`jopt.nn.initializers`, one key per element, true fans) the flat index of head ``h``,
component ``d`` is ``h * head_dim + d`` whatever the number of heads, so the real heads start
from exactly the values of the unpadded model with ``n`` heads, and the output kernel's fan-in is
the true ``n * head_dim``. The unpadded reference is therefore
``flax.linen.MultiHeadDotProductAttention(num_heads=n, qkv_features=n * head_dim,
kernel_init=jopt.nn.initializers.lecun_normal())`` (flax's own bulk draws cannot be sliced).

.. math::

   \mathrm{out} = \sum_{h < n} \mathrm{softmax}\Big(\frac{q_h k_h^\top}{\sqrt{d}}\Big) v_h\, W^O_h + b^O

The flax layers are :class:`jopt.nn.MultiHeadAttention` (linen) and
:class:`jopt.nn.nnx.MultiHeadAttention`.

Example (4 heads built, 2 real; the heads' kernels are the padded part):
  >>> import jax, jax.numpy as jnp
  >>> from jopt.nn import attention, initializers
  >>> init = attention.head_kernel_init(initializers.lecun_normal(), num_heads=2)
  >>> w = init(jax.random.key(0), (6, 4, 3))
  >>> bool((w[:, 2:] == 0).all()), bool((w[:, :2] != 0).all())
  (True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jopt.nn import initializers
from jopt.nn.normalization import check_count

__all__ = [
    "dot_product_attention",
    "head_bias_init",
    "head_kernel_init",
    "multi_head_attention",
    "out_kernel_init",
]

Init = Callable[..., jax.Array]


def _flat_init(init: Init, flat: Callable[[tuple[int, ...]], tuple[int, ...]], true: Any) -> Init:
    """An initializer of a head-shaped parameter that draws ``init`` at its flattened shape.

    ``flat(shape)`` is flax's flattening of ``shape``; ``true(shape)`` the flat true shape (or
    ``None`` when nothing is padded).
    """

    def initialize(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        shape = tuple(int(s) for s in shape)
        flat_shape = flat(shape)
        values = initializers.padded_init(init, true(shape))(key, flat_shape, dtype)
        return jnp.reshape(values, shape)

    return initialize


def head_kernel_init(init: Init, num_heads: Any = None) -> Init:
    """Initializer of a query/key/value kernel ``(features, heads, head_dim)``: ``init`` drawn at
    ``(features, heads * head_dim)`` (flax's flattening), zero for heads ``>= num_heads``.

    Example:
      >>> import jax
      >>> head_kernel_init(jax.nn.initializers.ones, 1)(jax.random.key(0), (1, 2, 2)).tolist()
      [[[1.0, 1.0], [0.0, 0.0]]]
    """
    flat = lambda s: (s[0], s[1] * s[2])
    true = lambda s: None if num_heads is None else (s[0], num_heads * s[2])
    return _flat_init(init, flat, true)


def head_bias_init(init: Init, num_heads: Any = None) -> Init:
    """Initializer of a query/key/value bias ``(heads, head_dim)``, drawn flat, zero for heads
    ``>= num_heads``.

    Example:
      >>> import jax
      >>> head_bias_init(jax.nn.initializers.ones, 1)(jax.random.key(0), (2, 2)).tolist()
      [[1.0, 1.0], [0.0, 0.0]]
    """
    flat = lambda s: (s[0] * s[1],)
    true = lambda s: None if num_heads is None else (num_heads * s[1],)
    return _flat_init(init, flat, true)


def out_kernel_init(init: Init, num_heads: Any = None) -> Init:
    """Initializer of the output kernel ``(heads, head_dim, out_features)``: ``init`` drawn at
    ``(heads * head_dim, out_features)`` with the true fan-in ``num_heads * head_dim``, zero for
    heads ``>= num_heads``.

    Example:
      >>> import jax
      >>> from jopt.nn import initializers
      >>> w = out_kernel_init(initializers.lecun_normal(), 16)(jax.random.key(0), (64, 4, 32))
      >>> round(float(w[:16].var() * 16 * 4), 1)  # variance 1 / (16 heads * 4)
      1.0
    """
    flat = lambda s: (s[0] * s[1], s[2])
    true = lambda s: None if num_heads is None else (num_heads * s[1], s[2])
    return _flat_init(init, flat, true)


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: jax.Array | None = None,
    *,
    precision: Any = None,
) -> jax.Array:
    r"""Softmax attention of ``query (..., q, heads, d)`` over ``key``/``value (..., k, heads, d)``.

    .. math:: \mathrm{out}_h = \mathrm{softmax}\big(q_h k_h^\top / \sqrt{d}\big)\, v_h

    ``mask`` (boolean, broadcastable to ``(..., heads, q, k)``) removes the False pairs (their
    logits are set to the dtype's lowest value, as flax does). Returns ``(..., q, heads, d)``.

    Example:
      >>> import jax.numpy as jnp
      >>> q = k = jnp.zeros((1, 3, 2, 4))
      >>> v = jnp.arange(24.0).reshape(1, 3, 2, 4)
      >>> out = dot_product_attention(q, k, v)[0, 0, 0]  # uniform weights: the mean of v
      >>> [round(float(o), 4) for o in out]
      [8.0, 9.0, 10.0, 11.0]
    """
    dtype = jnp.result_type(query, key)
    query, key = jnp.asarray(query, dtype), jnp.asarray(key, dtype)
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
    weights = jax.nn.softmax(logits).astype(dtype)
    return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)


def _project(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, contract: int, precision: Any
) -> jax.Array:
    """``x``'s last ``contract`` axes times the kernel's first ``contract`` axes, plus ``bias``."""
    dims = (tuple(range(x.ndim - contract, x.ndim)), tuple(range(contract)))
    y = lax.dot_general(x, kernel, (dims, ((), ())), precision=precision)
    if bias is not None:
        y = y + jnp.reshape(bias, (1,) * (y.ndim - bias.ndim) + bias.shape)
    return y


def _promote(dtype: Any, *arrays: jax.Array | None) -> list[jax.Array | None]:
    dtype = dtype or jnp.result_type(*(a for a in arrays if a is not None))
    return [None if a is None else jnp.asarray(a, dtype) for a in arrays]


def multi_head_attention(
    inputs_q: jax.Array,
    inputs_k: jax.Array,
    inputs_v: jax.Array,
    params: Mapping[str, Mapping[str, jax.Array]],
    num_heads: Any = None,
    *,
    mask: jax.Array | None = None,
    precision: Any = None,
    dtype: Any = None,
) -> jax.Array:
    """Multi-head attention with flax's parameter tree, heads ``>= num_heads`` masked out.

    Args:
      inputs_q: ``(..., q_length, features)``; inputs_k, inputs_v: ``(..., kv_length, features)``.
      params: ``{"query"|"key"|"value": {"kernel": (features, H, d), "bias": (H, d)},
        "out": {"kernel": (H, d, out_features), "bias": (out_features,)}}`` (biases optional).
      num_heads: the true number of heads, an int or a traced int (``None``: all ``H``).
      mask: boolean, broadcastable to ``(..., heads, q_length, kv_length)``.
      precision, dtype: as flax's layers (``dtype``: the computation's; default promoted).

    Returns:
      ``(..., q_length, out_features)``.

    Raises:
      ValueError: ``num_heads`` an integer outside ``[1, H]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = {n: {"kernel": jnp.ones((2, 3, 1))} for n in ("query", "key", "value")}
      >>> p["out"] = {"kernel": jnp.ones((3, 1, 2))}
      >>> x = jnp.ones((1, 4, 2))
      >>> multi_head_attention(x, x, x, p, 1)[0, 0].tolist(), multi_head_attention(x, x, x, p)[0, 0].tolist()
      ([2.0, 2.0], [6.0, 6.0])
    """
    heads = int(params["query"]["kernel"].shape[1])
    check_count(num_heads, "num_heads", heads)
    projected = []
    for name, x in (("query", inputs_q), ("key", inputs_k), ("value", inputs_v)):
        kernel, bias = params[name]["kernel"], params[name].get("bias")
        if num_heads is not None:
            kernel = initializers.mask_outside(kernel, (kernel.shape[0], num_heads, kernel.shape[2]))
            bias = initializers.mask_outside(bias, (num_heads, kernel.shape[2]))
        x, kernel, bias = _promote(dtype, x, kernel, bias)
        projected.append(_project(x, kernel, bias, 1, precision))
    heads_out = dot_product_attention(*projected, mask, precision=precision)
    kernel, bias = params["out"]["kernel"], params["out"].get("bias")
    if num_heads is not None:
        kernel = initializers.mask_outside(kernel, (num_heads,) + kernel.shape[1:])
    heads_out, kernel, bias = _promote(dtype, heads_out, kernel, bias)
    return _project(heads_out, kernel, bias, 2, precision)
