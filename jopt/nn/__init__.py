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

The flax layers (``Dense``, ``Dropout``, :mod:`jopt.nn.linen`, :mod:`jopt.nn.nnx`) are imported
on first use, so ``import jopt`` does not need flax.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jopt import nn
  >>> nn.buckets([5, 12, 100]).sizes
  (8, 16, 128)
"""

from jopt.nn import bucketing, initializers, masking, regularization
from jopt.nn.bucketing import Buckets, bucket_configs, buckets
from jopt.nn.masking import gate_residual, mask_units, masked_mean, prefix_mask, sample_rows
from jopt.nn.regularization import dropout, smoothed_cross_entropy

__all__ = [
    "Buckets",
    "Dense",
    "Dropout",
    "bucket_configs",
    "bucketing",
    "buckets",
    "dropout",
    "gate_residual",
    "initializers",
    "linen",
    "mask_units",
    "masked_mean",
    "masking",
    "nnx",
    "prefix_mask",
    "regularization",
    "sample_rows",
    "smoothed_cross_entropy",
]

_LAZY = {"Dense": "linen", "Dropout": "linen", "linen": None, "nnx": None}


def __getattr__(name: str):
    # The flax layers are imported on first use (flax is an optional dependency).
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"jopt.nn.{_LAZY[name] or name}")
        return module if _LAZY[name] is None else getattr(module, name)
    raise AttributeError(f"module 'jopt.nn' has no attribute {name!r}")
