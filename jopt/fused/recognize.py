"""What a transformation is made of, as far as fusion is concerned.

:func:`describe` turns a transformation into a small tree of nodes:

* :class:`Elementwise` -- a transform whose update on concatenated leaves equals
  its per-leaf update concatenated (every element-wise rule, optionally with
  reductions over the whole tree such as the global norm); it runs as is on
  packed buffers;
* :class:`WithMask` -- an element-wise transform with a leaf mask (weight decay,
  L1/L2), rebuilt with a mask per buffer;
* :class:`Chain`, :class:`Masked`, :class:`Partition` and :class:`Wrapper`
  (``apply_if_finite``, ``skip_non_finite``, ``MultiSteps``) -- combinators,
  rebuilt around their lowered members;
* :class:`PerLeaf` -- anything else (per-leaf norms, factored moments, foreign
  transforms): it runs on the unpacked leaves, exactly as without fusion.

jopt's transforms are recognized by the function that built them (its module
and qualified name) and read through their closures with
:func:`inspect.getclosurevars`. A transform that is not recognized, including
every optax transform, is :class:`PerLeaf` unless marked with
:func:`elementwise`, so an unknown transform can cost speed but never change
results.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from jopt.core import GradientTransformation, as_transformation, chain, named_chain
from jopt.transforms.accumulation import MultiSteps, skip_large_updates, skip_not_finite
from jopt.transforms.conditionals import skip_non_finite
from jopt.transforms.regularization import add_l1_subgradient, add_l2_penalty, proximal_l1
from jopt.transforms.weight_decay import add_decayed_weights

__all__ = [
    "ELEMENTWISE_OWNERS",
    "Chain",
    "Elementwise",
    "Masked",
    "Node",
    "Partition",
    "PerLeaf",
    "WithMask",
    "Wrapper",
    "closure",
    "describe",
    "elementwise",
    "function_name",
    "unwrapped",
]

#: ``owner`` names of :func:`jopt.hyperparam_transformation` transforms that are element-wise.
ELEMENTWISE_OWNERS: set[str] = {
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_adamax",
    "scale_by_radam",
    "scale_by_belief",
    "scale_by_yogi",
    "scale_by_adan",
    "scale_by_rms",
    "scale_by_stddev",
    "scale_by_rss",
    "scale_by_adadelta",
    "scale_by_lion",
    "trace",
    "heavy_ball",
    "heavy_ball_momentum",
    "sgd",
    "rmsprop",
    "ema",
    "clip",
    "clip_by_global_norm",
    "scale_by_adopt",
    "scale_by_ademamix",
    "scale_by_madgrad",
    "scale_by_cocob",
    "scale_by_simplified_ademamix",
    # learning-rate-free: element-wise, with sums and norms over the whole tree
    "scale_by_dog",
    "scale_by_dowg",
    "prodigy",
    "dadapt_adamw",
    "dadapt_sgd",
}

# Element-wise transforms with a leaf mask: owner -> (hyperparameter names, constructor(*hp, mask)).
_MASKED_RULES: dict[str, tuple[tuple[str, ...], Callable[..., GradientTransformation]]] = {
    "add_decayed_weights": (("weight_decay",), add_decayed_weights),
    "add_l2_penalty": (("l2",), add_l2_penalty),
    "add_l1_subgradient": (("l1",), add_l1_subgradient),
    "proximal_l1": (("l1", "learning_rate"), proximal_l1),
}

# Element-wise transforms built directly with ``transformation`` / ``stateless``: "module:qualname".
_ELEMENTWISE_FUNCTIONS = {
    "jopt.transforms.scaling:scale.<locals>.update",
    "jopt.transforms.scaling:scale_by_schedule.<locals>.update",
    "jopt.transforms.scaling:scale_by_learning_rate.<locals>.update",
    "jopt.transforms.accumulation:apply_every.<locals>.update",
    "jopt.core:identity.<locals>.<lambda>",
    "jopt.transforms.sign:scale_by_sign.<locals>.<lambda>",
    "jopt.transforms.basic:set_to_zero.<locals>.<lambda>",
    "jopt.transforms.parameter_groups:_zero_updates.<locals>.<lambda>",
}

# MultiSteps skip tests that are reductions over the whole tree (safe on packed buffers).
_TREE_SKIP_TESTS = (skip_not_finite, skip_large_updates)


class Node:
    """A node of the fusion plan of a transformation."""


@dataclass(frozen=True, eq=False)
class Elementwise(Node):
    tx: GradientTransformation


@dataclass(frozen=True, eq=False)
class WithMask(Node):
    mask: Any
    rebuild: Callable[[Any], GradientTransformation]


@dataclass(frozen=True, eq=False)
class Chain(Node):
    members: tuple[Node, ...]
    keys: tuple[str, ...] | None


@dataclass(frozen=True, eq=False)
class Masked(Node):
    inner: Node
    mask: Any
    mask_compatible_extra_args: bool


@dataclass(frozen=True, eq=False)
class Partition(Node):
    members: Mapping[Hashable, Node]
    labels: Any
    mask_compatible_extra_args: bool


@dataclass(frozen=True, eq=False)
class Wrapper(Node):
    """A combinator around one inner transform; ``rebuild(lowered_inner, to_tree)`` rebuilds it."""

    inner: Node
    rebuild: Callable[[GradientTransformation, Callable[[Any], Any]], GradientTransformation]


@dataclass(frozen=True, eq=False)
class PerLeaf(Node):
    tx: GradientTransformation


def elementwise(tx: Any) -> GradientTransformation:
    r"""Declare a transform (e.g. an optax one) safe to run on packed buffers.

    A transform is element-wise when its update of the concatenation of leaves
    is the concatenation of its per-leaf updates: :math:`f([g_1, g_2]) = [f(g_1), f(g_2)]`
    (reductions over *all* leaves, such as a global norm, are allowed; per-leaf
    norms, shapes or random keys are not). :func:`jopt.fuse` then runs it on the
    buffers instead of leaf by leaf. jopt's own element-wise transforms need no
    declaration.

    Example:
      >>> import jax.numpy as jnp, jopt, optax
      >>> opt = jopt.fuse(jopt.fused.elementwise(optax.adam(1e-3)))
      >>> state = opt.init({"w": jnp.ones(3), "b": jnp.ones(2)})
      >>> [x.shape for x in state.inner[0].mu.buffers]
      [(5,)]
    """
    tx = as_transformation(tx)

    def update(updates, state, params=None, **extra_args):
        return tx.update(updates, state, params, **extra_args)

    update.extra_args = tx.extra_args  # type: ignore[attr-defined]
    update.fusion = "elementwise"  # type: ignore[attr-defined]
    return GradientTransformation(tx.init, update)


def unwrapped(fn: Any) -> Any:
    """The function under jopt's ``update`` wrappers (``transformation``, ``as_transformation``)."""
    while hasattr(fn, "__wrapped__") and getattr(fn, "fusion", None) is None:
        fn = fn.__wrapped__
    return fn


def function_name(fn: Any) -> str:
    """``"module:qualname"`` of a function or bound method, the key of the recognizers."""
    if inspect.ismethod(fn):
        return f"{type(fn.__self__).__module__}:{type(fn.__self__).__qualname__}.{fn.__name__}"
    return f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"


def closure(fn: Any) -> dict[str, Any]:
    """The variables a function closes over (by name)."""
    return dict(inspect.getclosurevars(fn).nonlocals) if inspect.isfunction(fn) else {}


def describe(tx: Any) -> Node:
    """The fusion plan of ``tx`` (see the module docstring).

    Example:
      >>> import jopt
      >>> from jopt.fused.recognize import describe
      >>> [type(m).__name__ for m in describe(jopt.adamw(1e-3)).members]
      ['Elementwise', 'Elementwise', 'Elementwise']
    """
    tx = as_transformation(tx)
    fn = unwrapped(tx.update)
    if getattr(fn, "fusion", None) == "elementwise":
        return Elementwise(tx)
    handler = _HANDLERS.get(function_name(fn))
    node = handler(tx, fn) if handler is not None else None
    return PerLeaf(tx) if node is None else node


def _hyperparam(tx, fn):
    nl = closure(fn)
    owner = nl.get("owner")
    if owner in ELEMENTWISE_OWNERS:
        return Elementwise(tx)
    if owner in _MASKED_RULES:
        names, make = _MASKED_RULES[owner]
        mask = closure(nl["step"]).get("mask")
        if mask is None:
            return Elementwise(tx)
        hp = nl["hyperparams"]
        return WithMask(mask, lambda m: make(*(hp[k] for k in names), m))
    return None


def _stateless(tx, fn):
    f = closure(fn).get("f")
    return Elementwise(tx) if f is not None and function_name(f) in _ELEMENTWISE_FUNCTIONS else None


def _chain(tx, fn):
    return Chain(tuple(describe(m) for m in closure(fn)["members"]), None)


def _named_chain(tx, fn):
    nl = closure(fn)
    return Chain(tuple(describe(m) for m in nl["members"]), tuple(nl["keys"]))


def _masked(tx, fn):
    nl = closure(fn)
    return Masked(describe(nl["inner"]), nl["mask"], nl["mask_compatible_extra_args"])


def _partition(tx, fn):
    nl = closure(fn)
    labels = closure(nl["group_masks"])["param_labels"]
    members = {k: describe(m) for k, m in nl["members"].items()}
    return Partition(members, labels, nl["mask_compatible_extra_args"])


def _finite(tx, fn):
    nl = closure(fn)
    limit = nl["limit"]
    return Wrapper(describe(nl["inner"]), lambda inner, to_tree: skip_non_finite(inner, limit))


def _skip_test(fn: Any, to_tree: Callable[[Any], Any]) -> Any:
    base = fn.func if isinstance(fn, functools.partial) else fn
    if base in _TREE_SKIP_TESTS or getattr(base, "__name__", "") == "_never_skip":
        return fn
    return lambda updates, step, params: fn(to_tree(updates), step, to_tree(params))


def _multi_steps(tx, fn):
    ms = fn.__self__

    def rebuild(inner, to_tree):
        skip = _skip_test(ms._skip, to_tree)
        return MultiSteps(inner, ms._every_k, ms._use_grad_mean, skip, ms._accumulator_dtype)._tx

    return Wrapper(describe(ms._opt), rebuild)


def _elementwise_function(tx, fn):
    return Elementwise(tx)


_HANDLERS: dict[str, Callable[[GradientTransformation, Any], Node | None]] = {
    "jopt.core:hyperparam_transformation.<locals>.update": _hyperparam,
    "jopt.core:stateless.<locals>.update": _stateless,
    "jopt.core:chain.<locals>.update": _chain,
    "jopt.core:named_chain.<locals>.update": _named_chain,
    "jopt.transforms.parameter_groups:masked.<locals>.update": _masked,
    "jopt.transforms.parameter_groups:partition.<locals>.update": _partition,
    "jopt.transforms.conditionals:_finite_wrapper.<locals>.update": _finite,
    "jopt.transforms.accumulation:MultiSteps._update": _multi_steps,
    "jopt.transforms.accumulation:MultiSteps.update": _multi_steps,
    **{name: _elementwise_function for name in _ELEMENTWISE_FUNCTIONS if name.endswith(".update")},
}


def rebuild_chain(
    members: list[GradientTransformation], keys: tuple[str, ...] | None
) -> GradientTransformation:
    """``chain`` (or ``named_chain`` with ``keys``) of lowered members."""
    return chain(*members) if keys is None else named_chain(*zip(keys, members))
