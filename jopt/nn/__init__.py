"""Model-side building blocks for sweeping model hyperparameters inside one compiled program.

* Traced regularization: :func:`dropout` / :class:`Dropout` (flax.linen) /
  :class:`jopt.nn.nnx.Dropout` (flax.nnx) with a rate that may be traced (drop-ins for flax's,
  bit-equal with a Python-number rate), and :func:`smoothed_cross_entropy` with a traced label
  smoothing.
* Padded shapes: :class:`Dense` (linen) and :class:`jopt.nn.nnx.Linear` built at a maximum
  width and masked to a trial's true (traced) width, padding-invariant initializers
  (:mod:`jopt.nn.initializers`: a trial's real units start from the values an unpadded model
  of its width starts from), batch rows (:func:`masked_mean`, :func:`sample_rows`), depth
  (:func:`gate_residual`), and :func:`buckets` (padded sizes and the compute wasted on padding).
* Padded normalization and attention: :func:`layer_norm` / :class:`LayerNorm` (statistics over a
  traced ``width`` of the features) and :class:`MultiHeadAttention` (a traced number of heads,
  :mod:`jopt.nn.attention`), with nnx versions in :mod:`jopt.nn.nnx`.

The flax layers (``Dense``, ``Dropout``, ``LayerNorm``, ``MultiHeadAttention``,
:mod:`jopt.nn.linen`, :mod:`jopt.nn.nnx`) are imported on first use, so ``import jopt`` does not
need flax.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jopt import nn
  >>> nn.buckets([5, 12, 100]).sizes
  (8, 16, 128)
"""

from jopt.nn import attention, bucketing, initializers, masking, normalization, regularization
from jopt.nn.bucketing import Buckets, bucket_configs, buckets
from jopt.nn.masking import gate_residual, mask_units, masked_mean, prefix_mask, sample_rows
from jopt.nn.normalization import layer_norm
from jopt.nn.regularization import dropout, smoothed_cross_entropy

__all__ = [
    "Buckets",
    "Dense",
    "Dropout",
    "LayerNorm",
    "MultiHeadAttention",
    "attention",
    "bucket_configs",
    "bucketing",
    "buckets",
    "dropout",
    "gate_residual",
    "initializers",
    "layer_norm",
    "linen",
    "mask_units",
    "masked_mean",
    "masking",
    "nnx",
    "normalization",
    "prefix_mask",
    "regularization",
    "sample_rows",
    "smoothed_cross_entropy",
]

_LAZY = {
    "Dense": "linen",
    "Dropout": "linen",
    "LayerNorm": "linen",
    "MultiHeadAttention": "linen",
    "linen": None,
    "nnx": None,
}


def __getattr__(name: str):
    # The flax layers are imported on first use (flax is an optional dependency).
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"jopt.nn.{_LAZY[name] or name}")
        return module if _LAZY[name] is None else getattr(module, name)
    raise AttributeError(f"module 'jopt.nn' has no attribute {name!r}")
