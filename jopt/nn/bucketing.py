r"""Buckets: a few padded sizes for a wide range of shape values, and the compute padding wastes.

Padding every trial to the largest value of a wide range (widths 4..1024) makes the small
trials cost as much as the largest. Grouping the values into buckets -- each value padded only
to its bucket's size -- bounds the number of compiled programs by the number of buckets (one
static group each) and the waste by the bucket ratio (below 2x for powers of two).

The wasted fraction of compute is

.. math::

   \mathrm{wasted} = \frac{\sum_i s_i^{\,p}}{\sum_i v_i^{\,p}} - 1

over the trials ``i``, with ``v_i`` the true value, ``s_i`` its padded size and ``p`` the
``power`` the cost grows with (1: a layer whose cost is linear in the width, e.g. the first and
last layer of an MLP or the batch size; 2: a hidden-to-hidden layer). 0 means no waste; 1 means
the padded programs do twice the useful work.

Example:
  >>> from jopt import nn
  >>> b = nn.buckets([4, 5, 8, 100])
  >>> b.sizes, b.groups
  ((4, 8, 8, 128), {4: (0,), 8: (1, 2), 128: (3,)})
  >>> round(b.wasted, 3)   # (4 + 8 + 8 + 128) / (4 + 5 + 8 + 100) - 1
  0.265
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = ["Buckets", "bucket_configs", "buckets"]


class Buckets(NamedTuple):
    """Padded sizes of a list of values (see :func:`buckets`).

    Attributes:
      values: the true values, one per trial.
      sizes: each value's padded size (its bucket).
      groups: padded size -> indices of the values in that bucket (sizes ascending).
      wasted: the wasted fraction of compute (module docstring).
      power: the cost exponent ``p`` used for ``wasted``.
    """

    values: tuple[int, ...]
    sizes: tuple[int, ...]
    groups: dict[int, tuple[int, ...]]
    wasted: float
    power: float


def _pow2(value: int) -> int:
    return 1 << max(0, math.ceil(math.log2(value))) if value > 1 else 1


def _size_of(value: int, kind: str | Sequence[int], largest: int) -> int:
    if kind == "pow2":
        return _pow2(value)
    if kind == "max":
        return largest
    if kind == "exact":
        return value
    fits = [s for s in kind if s >= value]
    if not fits:
        raise ValueError(f"buckets: value {value} exceeds the largest bucket size {max(kind)}")
    return min(fits)


def buckets(
    values: Sequence[int], kind: str | Sequence[int] = "pow2", *, power: float = 1.0, minimum: int = 1
) -> Buckets:
    """Map shape values (widths, batch sizes, depths) to padded sizes and report the waste.

    .. math:: \\mathrm{wasted} = \\sum_i s_i^{\\,p} \\,/\\, \\sum_i v_i^{\\,p} - 1

    Args:
      values: positive integers, one per trial.
      kind: ``"pow2"`` (the next power of two), ``"max"`` (one bucket: the largest value),
        ``"exact"`` (no padding: one bucket per distinct value), or a sequence of sizes (the
        smallest size that holds the value).
      power: the exponent of the cost in the size (1 linear, 2 quadratic).
      minimum: the smallest padded size (merges the tiny buckets).

    Raises:
      ValueError: an empty list, a value below 1, a bad ``kind`` or a value above every size.

    Example:
      >>> b = buckets([3, 6, 7, 30], kind=[8, 32])
      >>> b.sizes, b.groups
      ((8, 8, 8, 32), {8: (0, 1, 2), 32: (3,)})
      >>> buckets([3, 30], minimum=16).sizes
      (16, 32)
    """
    vals = tuple(int(v) for v in values)
    if not vals:
        raise ValueError("buckets: values must not be empty")
    if min(vals) < 1:
        raise ValueError(f"buckets: values must be integers >= 1, got {min(vals)}")
    if isinstance(kind, str) and kind not in ("pow2", "max", "exact"):
        raise ValueError(f"buckets: kind must be 'pow2', 'max', 'exact' or a list of sizes, got {kind!r}")
    if not power > 0:
        raise ValueError(f"buckets: power must be in (0, inf), got {power!r}")
    largest = max(vals)
    sizes = tuple(max(_size_of(v, kind, largest), int(minimum), v) for v in vals)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault(s, []).append(i)
    wasted = sum(s**power for s in sizes) / sum(v**power for v in vals) - 1.0
    return Buckets(vals, sizes, {s: tuple(groups[s]) for s in sorted(groups)}, float(wasted), float(power))


def bucket_configs(
    configs: Sequence[Mapping[str, Any]],
    names: str | Sequence[str],
    pad_name: str = "padded",
    kind: str | Sequence[int] = "pow2",
    *,
    power: float = 1.0,
    minimum: int = 1,
) -> tuple[list[dict[str, Any]], Buckets]:
    """Add each configuration's padded size (``pad_name``) for the shape hyperparameters ``names``.

    The bucketed value of a configuration is the largest of its ``names`` (all of them are
    padded to one size). Declare ``pad_name`` static in the space (e.g.
    ``sweep.choice(sizes, static=True)``) and keep ``names`` traced: the sweep then compiles one
    program per bucket.

    .. math:: s(c) = \\mathrm{bucket}(\\max_{n \\in \\mathrm{names}} c_n)

    Returns:
      The configurations with ``pad_name`` added, and the :class:`Buckets` of their values.

    Example:
      >>> cfgs, b = bucket_configs([{"w1": 5, "w2": 20}, {"w1": 3, "w2": 2}], ["w1", "w2"])
      >>> [c["padded"] for c in cfgs], sorted(b.groups)
      ([32, 4], [4, 32])
    """
    names = [names] if isinstance(names, str) else list(names)
    largest = [max(int(c[n]) for n in names) for c in configs]
    b = buckets(largest, kind, power=power, minimum=minimum)
    return [{**dict(c), pad_name: s} for c, s in zip(configs, b.sizes)], b
