"""Lowering a fusion plan onto a packed layout.

Two passes walk the plan of :mod:`jopt.fused.recognize` with the *view* every
node sees without fusion (the parameter tree, with :class:`jopt.MaskedNode`
where an enclosing mask hides leaves), so that masks and labels are evaluated
exactly as the unfused transformation evaluates them:

* :func:`leaf_tags` records, per leaf, the value of every mask and label it
  meets; leaves with the same tags (and dtype and placement) share a buffer, so
  every mask is constant on every buffer;
* :func:`lower` builds the transformation that runs on :class:`Packed` trees:
  element-wise members as they are, masks and labels as one value per buffer,
  combinators rebuilt around their lowered members, and per-leaf members
  between an unpack and a pack of the leaves they see.

The lowered transformation's state has the structure of the unfused one, with
a :class:`Packed` node wherever the unfused state holds a tree of leaves.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax

from jopt.core import GradientTransformation, transformation
from jopt.fused.layout import Layout, Packed
from jopt.fused.recognize import (
    Chain,
    Elementwise,
    Masked,
    Node,
    Partition,
    PerLeaf,
    WithMask,
    Wrapper,
    rebuild_chain,
)
from jopt.transforms.parameter_groups import MaskedNode, _bool_mask, _resolve_tree, _select, masked, partition
from jopt.transforms.weight_decay import resolve_mask

PyTree = Any

__all__ = ["leaf_tags", "lower", "per_leaf_adapter"]


def _values(prefix: PyTree, idx_view: PyTree) -> dict[int, Any]:
    """The value of a (prefix) mask or label tree at every leaf index of ``idx_view``."""
    out: dict[int, Any] = {}

    def visit(value, sub):
        for i in jax.tree.leaves(sub):
            out[i] = value

    jax.tree.map(visit, prefix, idx_view)
    return out


def _mask_values(node: WithMask, view: PyTree, idx_view: PyTree) -> dict[int, Any] | None:
    """Per-leaf values of a ``WithMask`` mask; ``None`` when not all are Python bools (runs per leaf)."""
    values = _values(resolve_mask(node.mask, view), idx_view)
    return values if all(isinstance(v, bool) for v in values.values()) else None


def _labels(node: Partition, view: PyTree) -> PyTree:
    return _resolve_tree(node.labels, view, "param_labels")


def _walk(node: Node, view: PyTree, idx_view: PyTree, visit) -> None:
    """Call ``visit(node, values)`` for every mask or label site, in a fixed order."""
    if isinstance(node, WithMask):
        visit(_mask_values(node, view, idx_view))
    elif isinstance(node, Masked):
        mask = _bool_mask(node.mask, view)
        visit(_values(mask, idx_view))
        _walk(node.inner, _select(view, mask), _select(idx_view, mask), visit)
    elif isinstance(node, Partition):
        labels = _labels(node, view)
        visit(_values(labels, idx_view))
        for key, member in node.members.items():
            mask = jax.tree.map(lambda lab, key=key: lab == key, labels)
            _walk(member, _select(view, mask), _select(idx_view, mask), visit)
    elif isinstance(node, Chain):
        for member in node.members:
            _walk(member, view, idx_view, visit)
    elif isinstance(node, Wrapper):
        _walk(node.inner, view, idx_view, visit)


def leaf_tags(node: Node, view: PyTree) -> list[tuple[Hashable, ...]]:
    """Per leaf (in tree order), the values of the masks and labels of ``node`` it meets."""
    leaves, treedef = jax.tree.flatten(view)
    idx_view = jax.tree.unflatten(treedef, list(range(len(leaves))))
    tags: list[list[Hashable]] = [[] for _ in leaves]
    site = [0]

    def visit(values):
        site[0] += 1
        for i, value in (values or {}).items():
            tags[i].append((site[0], value))

    _walk(node, view, idx_view, visit)
    return [tuple(t) for t in tags]


def _visible_groups(layout: Layout, idx_view: PyTree) -> list[int]:
    visible = set(jax.tree.leaves(idx_view))
    return [g for g, group in enumerate(layout.groups) if visible.intersection(group.members)]


def _per_group(layout: Layout, values: dict[int, Any], what: str) -> Packed:
    """A :class:`Packed` of one value per buffer (``MaskedNode`` for buffers not in ``values``)."""
    children = []
    for group in layout.groups:
        found = [values[i] for i in group.members if i in values]
        if any(v != found[0] for v in found):
            raise ValueError(
                f"fused: a packed buffer mixes leaves with different {what}s ({found[0]!r}, ...); "
                "pack the parameters with the fused optimizer's own pack() or layout()"
            )
        children.append(found[0] if found else MaskedNode())
    return Packed(layout, children)


def per_leaf_adapter(tx: GradientTransformation, layout: Layout, idx_view: PyTree) -> GradientTransformation:
    """Run ``tx`` on the leaves of ``idx_view``, unpacked from packed trees and packed back."""
    groups = _visible_groups(layout, idx_view)
    order = jax.tree.leaves(idx_view)

    def to_tree(packed):
        if packed is None:
            return None
        leaves = layout.unpack_groups({g: packed.buffers[g] for g in groups})
        return jax.tree.map(lambda i: leaves[i], idx_view)

    def to_packed(tree):
        leaves = dict(zip(order, jax.tree.leaves(tree), strict=True))
        buffers = iter(layout.pack_groups(leaves, groups))
        return Packed(
            layout, [next(buffers) if g in groups else MaskedNode() for g in range(len(layout.groups))]
        )

    def init(params):
        return tx.init(to_tree(params))

    def update(updates, state, params=None, **extra_args):
        new, state = tx.update(to_tree(updates), state, to_tree(params), **extra_args)
        return to_packed(new), state

    adapter = transformation(init, update, extra_args=tx.extra_args)
    adapter.update.to_tree = to_tree  # type: ignore[attr-defined]
    return adapter


def lower(node: Node, layout: Layout) -> GradientTransformation:
    """The transformation of ``node`` on :class:`Packed` trees with ``layout``."""
    view = layout.abstract()
    idx_view = jax.tree.unflatten(layout.treedef, list(range(layout.num_leaves)))
    return _build(node, layout, view, idx_view)


def _build(node: Node, layout: Layout, view: PyTree, idx_view: PyTree) -> GradientTransformation:
    if isinstance(node, Elementwise):
        return node.tx
    if isinstance(node, PerLeaf):
        return per_leaf_adapter(node.tx, layout, idx_view)
    if isinstance(node, WithMask):
        values = _mask_values(node, view, idx_view)
        if values is None:  # array-valued masks select inside leaves: not per buffer
            return per_leaf_adapter(node.rebuild(node.mask), layout, idx_view)
        return node.rebuild(_per_group(layout, values, "mask value"))
    if isinstance(node, Chain):
        return rebuild_chain([_build(m, layout, view, idx_view) for m in node.members], node.keys)
    if isinstance(node, Masked):
        mask = _bool_mask(node.mask, view)
        inner = _build(node.inner, layout, _select(view, mask), _select(idx_view, mask))
        packed_mask = _per_group(layout, _values(mask, idx_view), "mask value")
        return masked(inner, packed_mask, mask_compatible_extra_args=node.mask_compatible_extra_args)
    if isinstance(node, Partition):
        labels = _labels(node, view)
        members = {}
        for key, member in node.members.items():
            mask = jax.tree.map(lambda lab, key=key: lab == key, labels)
            members[key] = _build(member, layout, _select(view, mask), _select(idx_view, mask))
        packed_labels = _per_group(layout, _values(labels, idx_view), "label")
        return partition(members, packed_labels, mask_compatible_extra_args=node.mask_compatible_extra_args)
    if isinstance(node, Wrapper):
        inner = _build(node.inner, layout, view, idx_view)
        return node.rebuild(inner, per_leaf_adapter(inner, layout, idx_view).update.to_tree)
    raise TypeError(f"fused: unknown plan node {type(node).__name__}")
