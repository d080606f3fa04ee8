r"""Combinators that route parameter groups to different transforms (optax's names and semantics).

* :func:`masked` -- apply a transform to some leaves, pass the others through.
* :func:`partition` (alias :func:`multi_transform`) -- one transform per labelled
  group (e.g. per-layer learning rates).
* :func:`selective_transform` -- transfer learning: frozen leaves get zero
  updates and *no* optimizer state; the others are optimized by the inner transform.
* :func:`freeze` -- zero the updates of the masked leaves (``optax.freeze(mask)``).

Masks and labels are *structural*: a pytree with the structure of the
parameters (or a prefix of it, e.g. ``{"encoder": True, "head": False}``), or a
function ``tree -> pytree`` (called with the parameters in ``init`` and with the
updates in ``update``, as optax does). Their leaves are Python values (``bool``
for masks, hashable labels for :func:`partition`), fixed when the step is traced.

A mask is called only when every one of its leaves is callable (optax's rule):
a plain function is a mask function, but a pytree that happens to be callable
(an equinox-style module, a registered dataclass with ``__call__``) whose leaves
are booleans is used as a pytree. Labels follow the same rule.

The inner transform sees the selected leaves only: the others are replaced by
:class:`MaskedNode`, an empty pytree node, so the inner state holds nothing for
them and reductions such as a global norm are over the selected leaves only.
Extra arguments (``value=loss``, ...) are forwarded to each inner transform
that declares them.

Migration: jopt's former ``freeze(inner, frozen=mask)`` is
``selective_transform(inner, freeze_mask=mask)``; the old call form still works
(with a ``DeprecationWarning``). ``freeze(mask)`` is now optax's transform.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt.core import GradientTransformation, as_transformation, stateless, transformation

PyTree = Any
MaskOrFn = Any | Callable[[Any], Any]

__all__ = [
    "MaskedNode",
    "MaskedState",
    "MultiTransformState",
    "PartitionState",
    "freeze",
    "masked",
    "multi_transform",
    "partition",
    "selective_transform",
]


class MaskedNode(NamedTuple):
    """Placeholder for a leaf (or subtree) a masked inner transform does not see.

    It is an empty pytree node: ``jax.tree.map`` passes it through unchanged and
    it contributes no leaves to the inner state.
    """


def _forwarded(tx: GradientTransformation, extra_args: Mapping[str, Any]) -> dict[str, Any]:
    """The extra arguments ``tx`` declares (the forwarding rule of every jopt combinator)."""
    return {k: v for k, v in extra_args.items() if k in tx.extra_args}


def calls_mask(spec: Any) -> bool:
    """Whether a mask/label ``spec`` is a function to call (optax's rule), not a pytree.

    True when ``spec`` has at least one leaf and every leaf is callable: a plain
    function is its own single leaf. A callable pytree (e.g. a registered
    dataclass with ``__call__``) whose leaves are booleans is a pytree.

    Example:
      >>> from jopt.transforms.parameter_groups import calls_mask
      >>> calls_mask(lambda p: p), calls_mask({"w": True})
      (True, False)
    """
    leaves = jax.tree.leaves(jax.tree.map(callable, spec))
    return bool(leaves) and all(leaves)


def _static_leaf(value: Any, what: str) -> Any:
    """A mask/label leaf as a plain Python value; raises on traced values."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{what} must be static (Python values), got a traced array")
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        if np.ndim(value) != 0:
            raise TypeError(f"{what} leaves must be scalars, got shape {np.shape(value)}")
        return np.asarray(value).item()
    return value


def _resolve_tree(spec: MaskOrFn, tree: PyTree, what: str) -> PyTree:
    resolved = spec(tree) if calls_mask(spec) else spec
    return jax.tree.map(lambda x: _static_leaf(x, what), resolved)


def _bool_mask(spec: MaskOrFn, tree: PyTree) -> PyTree:
    mask = _resolve_tree(spec, tree, "mask")
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


def _masked_update(inner, mask_tree, updates, inner_state, params, extra_args, mask_extra_args):
    """One update of ``inner`` on the leaves selected by ``mask_tree``; the others pass through."""
    kwargs = _forwarded(inner, extra_args)
    if mask_extra_args:
        structure = jax.tree.structure(updates)
        kwargs = {
            k: _select(v, mask_tree) if jax.tree.structure(v) == structure else v for k, v in kwargs.items()
        }
    new, inner_state = inner.update(
        _select(updates, mask_tree), inner_state, _select(params, mask_tree), **kwargs
    )
    return _merge(mask_tree, new, updates), inner_state


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner state (holding the selected leaves only)."""

    inner_state: Any


def masked(inner: Any, mask: MaskOrFn, *, mask_compatible_extra_args: bool = False) -> GradientTransformation:
    r"""Apply ``inner`` to the leaves selected by ``mask``; pass the others through (``optax.masked``).

    .. math::
       u_l \leftarrow \begin{cases}
         f(u_{\mathcal S})_l & l \in \mathcal S \\
         u_l & l \notin \mathcal S
       \end{cases}

    where :math:`\mathcal S` is the set of leaves whose mask is True and
    :math:`f` is ``inner`` applied to those leaves only.

    Args:
      inner: a jopt or optax transform.
      mask: pytree (or prefix) of bools, or a function ``tree -> pytree`` (see
        the module docstring for when a callable is called).
      mask_compatible_extra_args: also mask the forwarded extra arguments whose
        tree structure is that of the updates.

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
        return MaskedState(inner.init(_select(params, _bool_mask(mask, params))))

    def update(updates, state, params=None, **extra_args):
        mask_tree = _bool_mask(mask, updates)
        new, inner_state = _masked_update(
            inner, mask_tree, updates, state.inner_state, params, extra_args, mask_compatible_extra_args
        )
        return new, MaskedState(inner_state)

    return transformation(init, update, extra_args=inner.extra_args)


class PartitionState(NamedTuple):
    """State of :func:`partition`: per label, a :class:`MaskedState` holding that group's leaves only."""

    inner_states: dict[Hashable, Any]


MultiTransformState = PartitionState


def partition(
    transforms: Mapping[Hashable, Any],
    param_labels: Any | Callable[[Any], Any],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    r"""Apply a different transform to each labelled group of parameters (``optax.partition``).

    .. math:: u_{\mathcal G_k} \leftarrow f_k(u_{\mathcal G_k}) \quad \text{for every label } k

    Each group :math:`\mathcal G_k` (the leaves labelled ``k``) is transformed by
    ``transforms[k]`` alone, as :func:`masked` does: its state, and any norm it
    computes, covers that group only.

    Args:
      transforms: mapping ``label -> transform`` (jopt or optax).
      param_labels: pytree (or prefix) of labels, or a function ``tree -> pytree``.
        Every label must be a key of ``transforms``.
      mask_compatible_extra_args: see :func:`masked`.

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

    def group_masks(tree):
        labels = _resolve_tree(param_labels, tree, "param_labels")
        unknown = set(jax.tree.leaves(labels)) - set(members)
        if unknown:
            raise ValueError(
                f"partition: param_labels {sorted(map(repr, unknown))} have no transform "
                f"(transforms are given for {sorted(map(repr, members))})"
            )
        return {k: jax.tree.map(lambda lab, k=k: lab == k, labels) for k in members}

    def init(params):
        masks = group_masks(params)
        states = {k: MaskedState(tx.init(_select(params, masks[k]))) for k, tx in members.items()}
        return PartitionState(states)

    def update(updates, state, params=None, **extra_args):
        masks = group_masks(updates)
        inner_states = {}
        for k, tx in members.items():
            updates, inner = _masked_update(
                tx,
                masks[k],
                updates,
                state.inner_states[k].inner_state,
                params,
                extra_args,
                mask_compatible_extra_args,
            )
            inner_states[k] = MaskedState(inner)
        return updates, PartitionState(inner_states)

    return transformation(init, update, extra_args=names)


multi_transform = partition


def _zero_updates() -> GradientTransformation:
    """Every update replaced by zeros of its shape and dtype (state: ``EmptyState``)."""
    return stateless(lambda updates, params: jax.tree.map(jnp.zeros_like, updates))


def selective_transform(optimizer: Any, *, freeze_mask: MaskOrFn) -> GradientTransformation:
    r"""Optimize the trainable leaves with ``optimizer``; frozen leaves get zero updates and no state.

    .. math::
       u_l \leftarrow \begin{cases}
         0 & l \text{ frozen} \\
         f(u_{\text{trainable}})_l & \text{otherwise}
       \end{cases}

    For transfer learning: the optimizer's state (e.g. Adam's moments) is
    allocated for the trainable leaves only, so freezing a large backbone also
    frees its optimizer memory, and zero updates leave frozen parameters
    bit-for-bit unchanged by ``apply_updates``. This is :func:`partition` with
    the groups ``"train"`` (``optimizer``) and ``"freeze"`` (zeros), so the state
    is ``PartitionState({"freeze": MaskedState(EmptyState()), "train": MaskedState(...)})``
    as in optax.

    Args:
      optimizer: the optimizer for the trainable leaves (jopt or optax).
      freeze_mask: a bool (freeze all or nothing), a pytree (or prefix) of bools,
        True for frozen leaves, or a function ``tree -> pytree``; keyword-only.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> p = {"backbone": jnp.ones(3), "head": jnp.ones(2)}
      >>> tx = jopt.selective_transform(
      ...     jopt.scale_by_learning_rate(0.1), freeze_mask={"backbone": True, "head": False})
      >>> u, _ = tx.update(p, tx.init(p), p)
      >>> u["backbone"].tolist(), [round(float(x), 4) for x in u["head"]]
      ([0.0, 0.0, 0.0], [-0.1, -0.1])
    """

    def labels(tree):
        return jax.tree.map(lambda frozen: "freeze" if frozen else "train", _bool_mask(freeze_mask, tree))

    return partition({"train": optimizer, "freeze": _zero_updates()}, labels)


_UNSET: Any = object()


def freeze(mask: MaskOrFn, *, frozen: MaskOrFn = _UNSET) -> GradientTransformation:
    r"""Zero the updates of the leaves where ``mask`` is True; pass the others through (``optax.freeze``).

    .. math:: u_l \leftarrow \begin{cases} 0 & \text{mask}_l \\ u_l & \text{otherwise} \end{cases}

    It is :func:`masked` around a transform returning zeros, so it has no state.
    Placed before an optimizer in a chain, that optimizer still keeps state for
    the frozen leaves; :func:`selective_transform` keeps none.

    Args:
      mask: a bool, a pytree (or prefix) of bools, or a function ``tree -> pytree``.
      frozen: deprecated: ``freeze(inner, frozen=mask)`` (jopt's former form) is
        ``selective_transform(inner, freeze_mask=mask)`` and still returns it,
        with a ``DeprecationWarning``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> p = {"a": jnp.ones(1), "b": jnp.ones(2)}
      >>> tx = jopt.freeze({"a": True, "b": False})
      >>> u, _ = tx.update(p, tx.init(p), p)
      >>> u["a"].tolist(), u["b"].tolist()
      ([0.0], [1.0, 1.0])
    """
    if frozen is not _UNSET:
        warnings.warn(
            "freeze(inner, frozen=mask) is deprecated: use selective_transform(inner, freeze_mask=mask); "
            "freeze(mask) is optax's transform",
            DeprecationWarning,
            stacklevel=2,
        )
        return selective_transform(mask, freeze_mask=frozen)
    return masked(_zero_updates(), mask)
