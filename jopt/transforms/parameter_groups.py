r"""Combinators that route parameter groups to different transforms.

* :func:`masked` -- apply a transform to some leaves, pass the others through.
* :func:`partition` -- one transform per labelled group (e.g. per-layer learning rates).
* :func:`freeze` -- transfer learning: frozen leaves get zero updates and *no*
  optimizer state; the others are optimized by the inner transform.

Masks and labels are *structural*: a pytree with the structure of the
parameters (or a prefix of it, e.g. ``{"encoder": True, "head": False}``), or a
function ``params -> pytree``. Their leaves are Python values (``bool`` for
masks, hashable labels for :func:`partition`), fixed when the step is traced.

The inner transform sees the selected leaves only: the others are replaced by
:class:`MaskedNode`, an empty pytree node, so the inner state holds nothing for
them and reductions such as a global norm are over the selected leaves only.
Extra arguments (``value=loss``, ...) are forwarded to each inner transform
that declares them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.core import GradientTransformation, as_transformation, transformation

PyTree = Any
MaskOrFn = Any | Callable[[Any], Any]

__all__ = ["FreezeState", "MaskedNode", "MaskedState", "PartitionState", "freeze", "masked", "partition"]


class MaskedNode(NamedTuple):
    """Placeholder for a leaf (or subtree) a masked inner transform does not see.

    It is an empty pytree node: ``jax.tree.map`` passes it through unchanged and
    it contributes no leaves to the inner state.
    """


def _forwarded(tx: GradientTransformation, extra_args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in extra_args.items() if k in tx.extra_args}


def _static_leaf(value: Any, what: str) -> Any:
    """A mask/label leaf as a plain Python value; raises on traced values."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{what} must be static (Python values), got a traced array")
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        if np.ndim(value) != 0:
            raise TypeError(f"{what} leaves must be scalars, got shape {np.shape(value)}")
        return np.asarray(value).item()
    return value


def _resolve_tree(spec: MaskOrFn, updates: PyTree, params: PyTree | None, what: str) -> PyTree:
    tree = spec(params if params is not None else updates) if callable(spec) else spec
    return jax.tree.map(lambda x: _static_leaf(x, what), tree)


def _bool_mask(spec: MaskOrFn, updates: PyTree, params: PyTree | None) -> PyTree:
    mask = _resolve_tree(spec, updates, params, "mask")
    for leaf in jax.tree.leaves(mask):
        if not isinstance(leaf, (bool, np.bool_)):
            raise TypeError(f"mask leaves must be booleans, got {leaf!r}")
    return jax.tree.map(bool, mask)


def _select(tree: PyTree | None, mask: PyTree) -> PyTree | None:
    """``tree`` with every subtree whose mask leaf is False replaced by :class:`MaskedNode`."""
    if tree is None:
        return None
    return jax.tree.map(lambda m, sub: sub if m else MaskedNode(), mask, tree)


def _merge(mask: PyTree, selected: PyTree, others: PyTree) -> PyTree:
    """Subtrees from ``selected`` where the mask is True, from ``others`` elsewhere."""
    return jax.tree.map(lambda m, a, b: a if m else b, mask, selected, others)


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner state (holding the selected leaves only)."""

    inner_state: Any


def masked(inner: Any, mask: MaskOrFn) -> GradientTransformation:
    r"""Apply ``inner`` to the leaves selected by ``mask``; pass the others through.

    .. math::
       u_l \leftarrow \begin{cases}
         f(u_{\mathcal S})_l & l \in \mathcal S \\
         u_l & l \notin \mathcal S
       \end{cases}

    where :math:`\mathcal S` is the set of leaves whose mask is True and
    :math:`f` is ``inner`` applied to those leaves only.

    Args:
      inner: a jopt or optax transform.
      mask: pytree (or prefix) of bools, or ``params -> pytree``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> p = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
      >>> tx = jopt.masked(jopt.clip(0.5), lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
      >>> u, _ = tx.update(p, tx.init(p), p)
      >>> float(u["w"][0, 0]), float(u["b"][0])
      (0.5, 1.0)
    """
    inner = as_transformation(inner)

    def init(params):
        mask_tree = _bool_mask(mask, params, params)
        return MaskedState(inner.init(_select(params, mask_tree)))

    def update(updates, state, params=None, **extra_args):
        mask_tree = _bool_mask(mask, updates, params)
        new, inner_state = inner.update(
            _select(updates, mask_tree),
            state.inner_state,
            _select(params, mask_tree),
            **_forwarded(inner, extra_args),
        )
        return _merge(mask_tree, new, updates), MaskedState(inner_state)

    return transformation(init, update, extra_args=inner.extra_args)


class PartitionState(NamedTuple):
    """State of :func:`partition`: one inner state per label (each holding its own leaves only)."""

    inner_states: dict[Hashable, Any]


def partition(
    transforms: Mapping[Hashable, Any], labels: Any | Callable[[Any], Any]
) -> GradientTransformation:
    r"""Apply a different transform to each labelled group of parameters.

    .. math:: u_{\mathcal G_k} \leftarrow f_k(u_{\mathcal G_k}) \quad \text{for every label } k

    Each group :math:`\mathcal G_k` (the leaves labelled ``k``) is transformed by
    ``transforms[k]`` alone: its state, and any norm it computes, covers that
    group only.

    Args:
      transforms: mapping ``label -> transform`` (jopt or optax).
      labels: pytree (or prefix) of labels, or ``params -> pytree``. Every label
        must be a key of ``transforms``.

    Raises:
      ValueError: at ``init``/``update`` when a label has no transform.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> p = {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
      >>> tx = jopt.partition(
      ...     {"slow": jopt.scale_by_learning_rate(0.01), "fast": jopt.scale_by_learning_rate(0.1)},
      ...     {"body": "slow", "head": "fast"})
      >>> u, _ = tx.update(p, tx.init(p), p)
      >>> round(float(u["body"]["w"][0]), 4), round(float(u["head"]["w"][0]), 4)
      (-0.01, -0.1)
    """
    members = {k: as_transformation(tx) for k, tx in transforms.items()}
    names = frozenset().union(*(tx.extra_args for tx in members.values()))

    def group_masks(updates, params):
        tree = _resolve_tree(labels, updates, params, "labels")
        unknown = set(jax.tree.leaves(tree)) - set(members)
        if unknown:
            raise ValueError(
                f"partition: labels {sorted(map(repr, unknown))} have no transform "
                f"(transforms are given for {sorted(map(repr, members))})"
            )
        return {k: jax.tree.map(lambda lab, k=k: lab == k, tree) for k in members}

    def init(params):
        masks = group_masks(params, params)
        return PartitionState({k: tx.init(_select(params, masks[k])) for k, tx in members.items()})

    def update(updates, state, params=None, **extra_args):
        masks = group_masks(updates, params)
        inner_states = {}
        for k, tx in members.items():
            new, inner_states[k] = tx.update(
                _select(updates, masks[k]),
                state.inner_states[k],
                _select(params, masks[k]),
                **_forwarded(tx, extra_args),
            )
            updates = _merge(masks[k], new, updates)
        return updates, PartitionState(inner_states)

    return transformation(init, update, extra_args=names)


class FreezeState(NamedTuple):
    """State of :func:`freeze`: the inner state, for the trainable leaves only."""

    inner_state: Any


def freeze(inner: Any, *, frozen: MaskOrFn) -> GradientTransformation:
    r"""Optimize the trainable leaves with ``inner``; frozen leaves get zero updates and no state.

    .. math::
       u_l \leftarrow \begin{cases}
         0 & l \text{ frozen} \\
         f(u_{\text{trainable}})_l & \text{otherwise}
       \end{cases}

    For transfer learning: the inner optimizer's state (e.g. Adam's moments)
    is allocated for the trainable leaves only, so freezing a large backbone
    also frees its optimizer memory. Zero updates leave frozen parameters
    bit-for-bit unchanged by ``apply_updates``.

    Args:
      inner: the optimizer for the trainable leaves (jopt or optax).
      frozen: pytree (or prefix) of bools, True for frozen leaves, or
        ``params -> pytree``; keyword-only.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> p = {"backbone": jnp.ones(3), "head": jnp.ones(2)}
      >>> tx = jopt.freeze(jopt.scale_by_learning_rate(0.1), frozen={"backbone": True, "head": False})
      >>> u, _ = tx.update(p, tx.init(p), p)
      >>> u["backbone"].tolist(), [round(float(x), 4) for x in u["head"]]
      ([0.0, 0.0, 0.0], [-0.1, -0.1])
    """
    inner = as_transformation(inner)

    def trainable(updates, params):
        return jax.tree.map(lambda m: not m, _bool_mask(frozen, updates, params))

    def init(params):
        return FreezeState(inner.init(_select(params, trainable(params, params))))

    def update(updates, state, params=None, **extra_args):
        mask_tree = trainable(updates, params)
        new, inner_state = inner.update(
            _select(updates, mask_tree),
            state.inner_state,
            _select(params, mask_tree),
            **_forwarded(inner, extra_args),
        )
        return _merge(mask_tree, new, jax.tree.map(jnp.zeros_like, updates)), FreezeState(inner_state)

    return transformation(init, update, extra_args=inner.extra_args)
