"""Fused multi-tensor optimizer steps: state in a few large buffers, one pass per step.

``jopt.fuse(tx)`` (also :func:`jopt.fused.fuse`) wraps an optimizer; see
:mod:`jopt.fused.transform`. Parameters can be kept packed (:class:`Packed`,
from ``opt.pack(params)``) for the fastest step.
"""

from jopt.fused.layout import Layout, Packed, is_packed
from jopt.fused.recognize import elementwise
from jopt.fused.transform import (
    FusedState,
    FusedTransformation,
    fuse,
    fused_state_to_unfused,
    unfused_to_fused,
)

__all__ = [
    "FusedState",
    "FusedTransformation",
    "Layout",
    "Packed",
    "elementwise",
    "fuse",
    "fused_state_to_unfused",
    "is_packed",
    "unfused_to_fused",
]
