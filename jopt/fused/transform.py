r"""``jopt.fuse``: an optimizer whose state lives in a few large buffers, one pass per step.

An element-wise optimizer does the same arithmetic on every parameter leaf, so
on a tree of :math:`L` leaves an unfused step is :math:`L` small loops (and
XLA compiles :math:`L` kernels). :func:`fuse` keeps the optimizer state packed,
one buffer per dtype, placement and mask value (see :mod:`jopt.fused.layout`),
and runs the element-wise members of the optimizer once per buffer:

.. math::

    b = \operatorname{pack}(g) = [\operatorname{vec}(g_1), \dots, \operatorname{vec}(g_L)],
    \qquad (u_b, s) = f(b, s), \qquad u = \operatorname{unpack}(u_b)

Results are those of the unfused optimizer (element-wise arithmetic on a
concatenation is the same arithmetic); reductions over the whole tree (the
global norm of :func:`jopt.clip_by_global_norm`, ``skip_large_updates``) add the
same terms in another order, so they agree to float32 rounding.

Two ways to call it:

* **drop-in** -- ``opt.update(grads, state, params)`` with trees returns a tree
  of updates. The state is packed; the gradients are packed and the updates
  unpacked at every step, which are per-leaf copies.
* **packed parameters** (fastest) -- keep the parameters packed
  (``flat = opt.pack(params)``), take gradients with respect to them
  (``jax.grad(lambda f: loss(f.unpack()))(flat)`` is a :class:`Packed`), and
  ``opt.update`` / :func:`jopt.apply_updates` work on a few buffers: the step
  compiles and runs in about the same time for 10 or 2000 leaves.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from jopt.core import GradientTransformation, as_transformation
from jopt.fused.layout import (
    MAX_BUFFER_BYTES,
    SOLO_BYTES_ACCELERATOR,
    SOLO_BYTES_CPU,
    Layout,
    Packed,
    build_layout,
    is_packed,
    plain_tree,
    sharding_is_typed,
)
from jopt.fused.lowering import leaf_tags, lower
from jopt.fused.recognize import (
    Chain,
    Elementwise,
    Masked,
    Node,
    Partition,
    PerLeaf,
    WithMask,
    Wrapper,
    closure,
    describe,
    function_name,
    unwrapped,
)
from jopt.transforms.parameter_groups import MaskedNode

PyTree = Any

__all__ = ["FusedState", "FusedTransformation", "fuse", "fused_state_to_unfused", "unfused_to_fused"]


class FusedState(NamedTuple):
    """State of a :func:`fuse`\\ d optimizer.

    Attributes:
      inner: the wrapped optimizer's state, with a :class:`jopt.fused.Packed`
        wherever the unfused state holds a tree of per-leaf arrays (moments,
        accumulators); everything else (counts, ``hyperparams``) as unfused.
      layout: the :class:`jopt.fused.Layout` of the parameters (static, no leaves).
    """

    inner: Any
    layout: Layout


class FusedTransformation(GradientTransformation):
    """The :class:`jopt.GradientTransformation` returned by :func:`fuse`, with packing helpers."""

    __slots__ = ()

    @property
    def inner(self) -> GradientTransformation:
        """The wrapped (unfused) optimizer."""
        return self.update.inner  # type: ignore[attr-defined]

    def layout(self, params: PyTree) -> Layout:
        """The :class:`jopt.fused.Layout` this optimizer packs ``params`` with (every leaf packed)."""
        return self.update.layout_of(params, packing=True)  # type: ignore[attr-defined]

    def pack(self, params: PyTree) -> Packed:
        """``params`` packed with :meth:`layout` (keep parameters packed for the fastest step)."""
        return params if is_packed(params) else self.layout(params).pack(params)

    def plan(self) -> str:
        """Which members run on packed buffers and which leaf by leaf, one per line."""
        return "\n".join(_explain(self.update.plan))  # type: ignore[attr-defined]

    def state_to_unfused(self, state: FusedState) -> PyTree:
        """See :func:`fused_state_to_unfused`."""
        return fused_state_to_unfused(self, state)

    def state_from_unfused(self, state: PyTree, params: PyTree) -> FusedState:
        """See :func:`unfused_to_fused`."""
        return unfused_to_fused(self, state, params)


def _signature(leaves: list[Any], treedef: Any) -> tuple:
    return (treedef, tuple((tuple(np.shape(x)), str(x.dtype)) for x in leaves))


def _placement_unknown(x: Any) -> bool:
    """A tracer whose sharding is not part of its type (auto axes or no mesh) may be sharded anyway."""
    return isinstance(x, jax.core.Tracer) and not sharding_is_typed(x)


def fuse(
    tx: Any, *, max_buffer_bytes: int | None | str = "auto", solo_bytes: int | None | str = "auto"
) -> FusedTransformation:
    r"""Run ``tx`` on packed buffers: state in a few large arrays, one pass per step.

    .. math:: (u, s) = \operatorname{unpack}\big(f(\operatorname{pack}(g), s)\big)

    ``tx`` may be any jopt (or optax) transformation. Its element-wise members
    (SGD and momentum, RMSprop, Adagrad, Adadelta, the Adam family, Lion, sign
    methods, weight decay, L1/L2, clipping by value and by global norm,
    learning rates and schedules) run on the buffers; :func:`jopt.chain`,
    :func:`jopt.masked`, :func:`jopt.partition`, :func:`jopt.freeze`,
    :func:`jopt.selective_transform`, :func:`jopt.apply_if_finite`,
    :func:`jopt.skip_non_finite` and :func:`jopt.accumulate_gradients` are
    rebuilt around them, with one mask or label per buffer (leaves are grouped
    so that every mask is constant on a buffer). Members that need the leaves
    (per-leaf norms such as LAMB's trust ratio, factored moments, Muon, optax
    transforms unless marked with :func:`jopt.fused.elementwise`) run on the
    unpacked leaves, exactly as without fusion. :meth:`FusedTransformation.plan`
    lists which is which.

    The state is a :class:`FusedState`; :func:`jopt.current_hyperparams` reads
    it as the unfused one (a name that occurs several times is qualified with
    the path ``inner/...``). Leaves are grouped by dtype and by sharding
    (rearranged without communication, see :mod:`jopt.fused.layout`); call
    ``init`` outside ``jax.jit`` or on a mesh with explicit axes so that the
    shardings are known.

    Args:
      tx: the optimizer to fuse.
      max_buffer_bytes: the largest buffer, in bytes per device (``None``: one
        buffer per dtype, placement and mask value). ``"auto"``: 16 MiB on CPU,
        where larger temporaries (the packed gradients) are mapped afresh by the
        allocator at every step, else ``None``.
      solo_bytes: with trees in (``init(params)`` on a tree), a leaf of at least
        this many bytes per device keeps its own buffer, in its shape: packing
        it would copy it at every step, which costs more than the few kernels
        it saves. ``None``: pack every leaf. ``"auto"``: 64 KiB on CPU (per leaf
        and step, a buffer of its own costs ~20 us of kernel overhead, packing
        ~1.5 ns per element), 8 MiB on accelerators, and packed parameters
        (:meth:`FusedTransformation.pack`) pack every leaf: their gradients
        arrive packed, so packing costs nothing. A number applies to both.

    Returns:
      A :class:`FusedTransformation`: ``init``/``update`` (trees or
      :class:`jopt.fused.Packed` trees in, the same kind out), plus ``pack``,
      ``layout``, ``plan`` and state conversion.

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
      >>> opt = jopt.fuse(jopt.adamw(1e-2, weight_decay=0.1))
      >>> flat = opt.pack(params)                        # parameters kept packed
      >>> state = opt.init(flat)
      >>> loss = lambda p: jnp.sum((p["w"] @ jnp.ones(2) + p["b"].sum()) ** 2)
      >>> grads = jax.grad(lambda f: loss(f.unpack()))(flat)
      >>> updates, state = opt.update(grads, state, flat)
      >>> flat = jopt.apply_updates(flat, updates)
      >>> ref = jopt.adamw(1e-2, weight_decay=0.1)      # the same step unfused
      >>> u, _ = ref.update(jax.grad(loss)(params), ref.init(params), params)
      >>> bool(jnp.array_equal(flat.unpack()["w"], jopt.apply_updates(params, u)["w"]))
      True
    """
    if isinstance(tx, FusedTransformation):
        return tx
    tx = as_transformation(tx)
    plan = describe(tx)
    cpu = jax.default_backend() == "cpu"
    if max_buffer_bytes == "auto":
        max_buffer_bytes = MAX_BUFFER_BYTES if cpu else None
    # "auto": big leaves solo with trees in, every leaf packed by pack(); a number: both
    solo_for_pack = None if solo_bytes == "auto" else solo_bytes
    if solo_bytes == "auto":
        solo_bytes = SOLO_BYTES_CPU if cpu else SOLO_BYTES_ACCELERATOR
    known: dict[tuple, Layout] = {}

    def layout_of(params, packing: bool = False):
        """The layout of a tree: every leaf packed for ``pack`` (``packing``), big leaves solo else."""
        if is_packed(params):  # lowering checks that every mask is constant on its buffers
            return params.layout
        leaves, treedef = jax.tree.flatten(plain_tree(params))
        sig = (_signature(leaves, treedef), packing)
        if any(_placement_unknown(x) for x in leaves) and sig in known:
            return known[sig]
        view = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves])
        tags = leaf_tags(plan, view)
        solo = solo_for_pack if packing else solo_bytes
        layout = build_layout(leaves, treedef, tags, max_buffer_bytes, solo)
        if not any(_placement_unknown(x) for x in leaves):
            known[sig] = layout
        return layout

    def init(params):
        layout = layout_of(params)
        packed = params if is_packed(params) else layout.pack(params)
        return FusedState(lower(plan, layout).init(packed), layout)

    def update(updates, state, params=None, **extra_args):
        layout = state.layout
        packed_in = is_packed(updates)
        for name, value in (("gradients", updates), ("parameters", params)):
            if is_packed(value) and value.layout != layout:
                raise ValueError(
                    f"fused update: the {name} are packed with another layout than the state; with "
                    "packed parameters, init the state with them: state = opt.init(opt.pack(params))"
                )
        grads = updates if packed_in else layout.pack(updates)
        if params is not None and not is_packed(params):
            params = layout.pack(params)
        new, inner = lower(plan, layout).update(grads, state.inner, params, **extra_args)
        return (new if packed_in else layout.unpack(new, like=updates)), FusedState(inner, layout)

    update.extra_args = tx.extra_args  # type: ignore[attr-defined]
    update.inner = tx  # type: ignore[attr-defined]
    update.plan = plan  # type: ignore[attr-defined]
    update.layout_of = layout_of  # type: ignore[attr-defined]
    return FusedTransformation(init, update)


def _visible(packed: Packed) -> list[int]:
    return [g for g, b in enumerate(packed.buffers) if not isinstance(b, MaskedNode)]


def fused_state_to_unfused(opt: FusedTransformation, state: FusedState) -> PyTree:
    """The state ``opt.inner`` would have, from a fused state (for checkpoints, inspection).

    Every :class:`jopt.fused.Packed` node of the state is unpacked into the
    leaves it holds (shards stay on their devices); the result has the structure
    of ``opt.inner.init(params)``.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> from jopt.fused import fused_state_to_unfused
      >>> opt = jopt.fuse(jopt.adam(1e-3))
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(3)}
      >>> state = fused_state_to_unfused(opt, opt.init(params))
      >>> state[0].mu["w"].shape
      (2, 2)
    """
    layout = state.layout
    target = jax.eval_shape(opt.inner.init, layout.abstract())
    structure = jax.tree.structure(target)

    def run(inner):
        pieces = []
        for leaf in jax.tree.leaves(inner, is_leaf=is_packed):
            if is_packed(leaf):
                groups = _visible(leaf)
                leaves = layout.unpack_groups({g: leaf.buffers[g] for g in groups})
                pieces.extend(leaves[i] for i in sorted(leaves))
            else:
                pieces.append(leaf)
        if len(pieces) != structure.num_leaves:
            raise ValueError(
                f"fused_state_to_unfused: the fused state holds {len(pieces)} arrays, the unfused "
                f"state of this optimizer {structure.num_leaves}"
            )
        return jax.tree.unflatten(structure, pieces)

    return jax.jit(run)(state.inner)


def unfused_to_fused(opt: FusedTransformation, state: PyTree, params: PyTree) -> FusedState:
    """A fused state from the state of ``opt.inner`` (e.g. an existing checkpoint).

    Args:
      opt: the fused optimizer.
      state: a state of ``opt.inner`` for ``params``.
      params: the parameters (a tree or :class:`jopt.fused.Packed`), for the layout.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> from jopt.fused import unfused_to_fused
      >>> opt = jopt.fuse(jopt.adam(1e-3))
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(3)}
      >>> fused = unfused_to_fused(opt, opt.inner.init(params), params)
      >>> [b.shape for b in fused.inner[0].mu.buffers]
      [(7,)]
    """
    layout = opt.update.layout_of(params)  # type: ignore[attr-defined]  # the layout init(params) uses
    target = jax.eval_shape(opt.init, layout.abstract_packed()).inner
    slots, structure = jax.tree.flatten(target, is_leaf=is_packed)
    given = jax.tree.leaves(state)

    def run(given):
        it = iter(given)
        out = []
        for slot in slots:
            if not is_packed(slot):
                out.append(next(it))
                continue
            groups = _visible(slot)
            leaves = {i: next(it) for i in sorted(i for g in groups for i in layout.groups[g].members)}
            buffers = iter(layout.pack_groups(leaves, groups))
            out.append(
                Packed(
                    layout, [next(buffers) if g in groups else MaskedNode() for g in range(len(slot.buffers))]
                )
            )
        if next(it, None) is not None:
            raise ValueError("unfused_to_fused: the state has more arrays than this optimizer's state")
        return FusedState(jax.tree.unflatten(structure, out), layout)

    needed = sum(
        sum(len(layout.groups[g].members) for g in _visible(s)) if is_packed(s) else 1 for s in slots
    )
    if len(given) != needed:
        raise ValueError(
            f"unfused_to_fused: the state holds {len(given)} arrays, this optimizer's unfused state {needed}"
        )
    return jax.jit(run)(given)


def _explain(node: Node, indent: str = "") -> list[str]:
    """Lines describing a plan: what runs on buffers (fused) and what per leaf."""
    if isinstance(node, Elementwise):
        return [f"{indent}fused: {_label(node.tx)}"]
    if isinstance(node, WithMask):
        return [f"{indent}fused, one mask value per buffer: {_label(node.rebuild(None))}"]
    if isinstance(node, PerLeaf):
        return [f"{indent}per leaf: {_label(node.tx)}"]
    if isinstance(node, Chain):
        return [f"{indent}chain"] + [line for m in node.members for line in _explain(m, indent + "  ")]
    if isinstance(node, Masked):
        return [f"{indent}masked"] + _explain(node.inner, indent + "  ")
    if isinstance(node, Partition):
        lines = [f"{indent}partition"]
        for key, member in node.members.items():
            lines += [f"{indent}  {key!r}:"] + _explain(member, indent + "    ")
        return lines
    if isinstance(node, Wrapper):
        return [f"{indent}wrapper (skip_non_finite / MultiSteps)"] + _explain(node.inner, indent + "  ")
    return [f"{indent}{type(node).__name__}"]


def _label(tx: GradientTransformation) -> str:
    """A transform's name: its ``owner``, or the function that built it (``optax: chain`` for optax's)."""
    fn = unwrapped(tx.update)
    if getattr(fn, "fusion", None) == "elementwise":
        return f"{_label(closure(fn)['tx'])} (declared element-wise)"
    owner = closure(fn).get("owner")
    if isinstance(owner, str):
        return owner
    inner = closure(fn).get("f")
    module, qualname = function_name(inner if inner is not None else fn).split(":")
    name = qualname.split(".<locals>")[0]
    return name if module.startswith("jopt") else f"{module.split('.')[0]}: {name}"
