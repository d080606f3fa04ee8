r"""Packed layouts: the leaves of a pytree laid out in a few large buffers.

A :class:`Layout` assigns every leaf of a parameter tree to a *group* and a
slice of that group's buffer. Leaves are grouped by dtype, by placement and by
the tags the caller gives (the masks and labels of an optimizer, see
:func:`jopt.fuse`); a :class:`Packed` is a pytree whose leaves are the group
buffers, so every element-wise computation over it is one pass per buffer.

Placement never moves data between devices:

* unsharded leaves (one device, or replicated on a mesh) are flattened and
  concatenated into a 1-D buffer, :math:`b = [\operatorname{vec}(x_1), \dots, \operatorname{vec}(x_n)]`;
* leaves sharded over the same mesh axes are each rearranged, without
  communication, into ``(shards, local_size)`` (row :math:`r` holds exactly the
  elements shard :math:`r` already owns) and concatenated along the second axis,
  so the buffer is sharded over its rows like the leaves;
* a leaf whose sharding cannot be rearranged that way (uneven shards, other
  sharding types) is a group of its own, kept in its shape and sharding.

Packing and unpacking are reshapes, transposes, concatenations and slices, so
they are exact and differentiable: ``jax.grad`` of a loss of ``packed.unpack()``
with respect to ``packed`` is a :class:`Packed` of gradients.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any

__all__ = [
    "MAX_BUFFER_BYTES",
    "SOLO_BYTES_ACCELERATOR",
    "SOLO_BYTES_CPU",
    "Group",
    "Layout",
    "Packed",
    "Slot",
    "build_layout",
    "is_packed",
    "plain_tree",
    "sharding_is_typed",
]


class Slot(NamedTuple):
    """Where one leaf lives: its group, offset and length along the buffer's last axis.

    ``dims`` gives, per dimension of the leaf, the mesh axes it is sharded over
    (``()`` for none); it is ``None`` for a leaf of an unsharded group.
    """

    group: int
    offset: int
    size: int
    shape: tuple[int, ...]
    dtype: Any
    dims: tuple[tuple[str, ...], ...] | None


class Group(NamedTuple):
    """One buffer: its dtype, placement and member leaves (indices in tree order).

    ``axes`` are the mesh axes its rows are sharded over (``()`` when the buffer
    is 1-D); ``mesh_shape`` is ``((axis, size), ...)`` of the mesh, or ``()``
    off a mesh. A ``solo`` group is a single leaf kept in its own shape.
    """

    dtype: Any
    axes: tuple[str, ...]
    mesh_shape: tuple[tuple[str, int], ...]
    rows: int
    width: int
    solo: bool
    members: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the buffer (of a non-solo group; see :meth:`Layout.buffer_shape`)."""
        return (self.rows, self.width) if self.axes else (self.width,)


def _axes_of(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _sharding_of(x: Any) -> Any:
    """The sharding of a leaf: concrete arrays and structs carry one, tracers carry a type."""
    if isinstance(x, jax.core.Tracer):
        sharding = jax.typeof(x).sharding
        return sharding if sharding_is_typed(x) else None
    return getattr(x, "sharding", None)


def sharding_is_typed(x: Any) -> bool:
    """Whether a tracer's sharding is part of its type (a mesh whose axes are all explicit)."""
    mesh = jax.typeof(x).sharding.mesh
    return not mesh.empty and all(t == AxisType.Explicit for t in mesh.axis_types)


def _placement(x: Any) -> tuple[Any, Any]:
    """``(key, mesh)``: how a leaf may be packed, and its concrete mesh if it has one.

    ``key`` is ``("local",)`` (flatten into a 1-D buffer), ``("mesh", mesh_shape,
    dims)`` (rearrange into rows) or ``("solo",)``. ``mesh`` is ``None`` for
    abstract meshes.
    """
    sharding = _sharding_of(x)
    if sharding is None:
        return ("local",), None
    if not isinstance(sharding, NamedSharding):
        return (("local",) if len(sharding.device_set) <= 1 else ("solo",)), None
    mesh = sharding.mesh
    mesh_shape = tuple(mesh.shape.items())
    sizes = dict(mesh_shape)
    spec = tuple(sharding.spec) + (None,) * (np.ndim(x) - len(sharding.spec))
    dims = tuple(_axes_of(e) for e in spec)
    for n, axes in zip(np.shape(x), dims):
        if n % int(np.prod([sizes[a] for a in axes], dtype=int)):
            return ("solo",), None
    return ("mesh", mesh_shape, dims), (mesh if isinstance(mesh, Mesh) else None)


#: Default largest buffer (bytes per device): XLA's CPU temporaries up to this size are reused
#: by the allocator; larger ones are mapped afresh (page faults) at every step.
MAX_BUFFER_BYTES = 16 * 2**20
#: Default smallest leaf kept in a buffer of its own when trees come in (see :func:`jopt.fuse`):
#: on CPU, where a kernel costs ~20 us per leaf and step and packing ~1.5 ns per element
#: (measured, ``benchmarks/step_overhead.py``), and on accelerators (launch cost against copy
#: bandwidth; an estimate, not measured here).
SOLO_BYTES_CPU = 64 * 2**10
SOLO_BYTES_ACCELERATOR = 8 * 2**20


def plain_tree(tree: PyTree) -> PyTree:
    """``tree`` with every ``flax.nnx.Variable`` replaced by its value (as ``nnx.as_pure``).

    ``nnx.Optimizer`` initializes an optimizer with a state of ``nnx.Param``
    variables and updates it with plain arrays; both mean the same tree of
    parameters to a layout. Trees without variables are returned as they are
    (and flax is never imported here).
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is None:
        return tree
    is_variable = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    return nnx.as_pure(tree) if any(map(is_variable, jax.tree.leaves(tree, is_leaf=is_variable))) else tree


def build_layout(
    leaves: Sequence[Any],
    treedef: Any,
    tags: Sequence[Hashable] | None = None,
    max_buffer_bytes: int | None = MAX_BUFFER_BYTES,
    solo_bytes: int | None = None,
) -> Layout:
    """Group ``leaves`` (arrays, tracers or ``ShapeDtypeStruct``) into a :class:`Layout`.

    Leaves with equal dtype, placement and tag share a buffer, up to
    ``max_buffer_bytes`` per device (``None``: no limit; a larger leaf gets a
    buffer of its own); groups are ordered by their first leaf, and leaves keep
    tree order within a group. A leaf of at least ``solo_bytes`` per device
    (``None``: no such limit) is a solo group, kept in its shape and sharding:
    packing and unpacking it cost nothing.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jopt.fused.layout import build_layout
      >>> leaves, treedef = jax.tree.flatten({"a": jnp.ones((2, 3)), "b": jnp.ones(4, jnp.bfloat16)})
      >>> [g.shape for g in build_layout(leaves, treedef).groups]
      [(6,), (4,)]
    """
    tags = [None] * len(leaves) if tags is None else list(tags)
    keys: dict[Hashable, list[int]] = {}
    open_groups: dict[Hashable, tuple[int, int]] = {}  # key -> (chunk number, bytes so far)
    placements, meshes = [], []
    for i, x in enumerate(leaves):
        key, mesh = _placement(x)
        dtype = jax.dtypes.canonicalize_dtype(x.dtype)
        rows = int(np.prod([dict(key[1])[a] for a in _lead_axes(key)], dtype=int)) if key[0] == "mesh" else 1
        nbytes = int(np.size(x)) // rows * np.dtype(dtype).itemsize
        if solo_bytes is not None and nbytes >= solo_bytes:
            key, mesh = ("solo",), None
        placements.append(key)
        meshes.append(mesh)
        base = (dtype, i if key[0] == "solo" else key[:2], _lead_axes(key), tags[i])
        chunk, used = open_groups.get(base, (0, 0))
        if max_buffer_bytes is not None and used and used + nbytes > max_buffer_bytes:
            chunk, used = chunk + 1, 0
        open_groups[base] = (chunk, used + nbytes)
        keys.setdefault((base, chunk), []).append(i)
    slots: list[Slot | None] = [None] * len(leaves)
    groups = []
    for g, members in enumerate(keys.values()):
        first = placements[members[0]]
        dtype = jax.dtypes.canonicalize_dtype(leaves[members[0]].dtype)
        if first[0] == "solo":
            x = leaves[members[0]]
            slots[members[0]] = Slot(g, 0, int(np.size(x)), tuple(np.shape(x)), dtype, None)
            groups.append(Group(dtype, (), (), 1, int(np.size(x)), True, tuple(members)))
            continue
        mesh_shape = first[1] if first[0] == "mesh" else ()
        axes = _lead_axes(first)
        rows = int(np.prod([dict(mesh_shape)[a] for a in axes], dtype=int)) if axes else 1
        offset = 0
        for i in members:
            size = int(np.size(leaves[i])) // rows
            dims = placements[i][2] if axes else None
            slots[i] = Slot(g, offset, size, tuple(np.shape(leaves[i])), dtype, dims)
            offset += size
        groups.append(Group(dtype, axes, mesh_shape, rows, offset, False, tuple(members)))
    mesh = next((m for m in meshes if m is not None), None)
    return Layout(treedef, tuple(slots), tuple(groups), mesh)


def _lead_axes(key: tuple) -> tuple[str, ...]:
    return tuple(a for axes in key[2] for a in axes) if key[0] == "mesh" else ()


def _explicit_mesh(x: Any) -> Any:
    """The abstract mesh of ``x`` if its sharding is part of its type (explicit axes), else ``None``."""
    mesh = jax.typeof(x).sharding.mesh
    if mesh.empty or not any(t == AxisType.Explicit for t in mesh.axis_types):
        return None
    return mesh


def _reshape(x: jax.Array, shape: tuple[int, ...], spec: tuple, mesh: Any) -> jax.Array:
    if mesh is None:
        return jnp.reshape(x, shape)
    return jax.lax.reshape(x, shape, out_sharding=NamedSharding(mesh, P(*spec)))


def _to_rows(x: jax.Array, slot: Slot, group: Group) -> jax.Array:
    """``(rows, local)``: row ``r`` holds the elements of shard ``r`` (no data moves)."""
    sizes = dict(group.mesh_shape)
    mesh = _explicit_mesh(x)
    split, spec, lead = [], [], []
    for n, axes in zip(slot.shape, slot.dims):
        if axes:
            count = int(np.prod([sizes[a] for a in axes], dtype=int))
            lead.append(len(split))
            split += [count, n // count]
            spec += [axes, None]
        else:
            split.append(n)
            spec.append(None)
    y = _reshape(x, tuple(split), tuple(spec), mesh)
    rest = [i for i in range(len(split)) if i not in lead]
    y = jnp.transpose(y, lead + rest)
    return _reshape(y, (group.rows, slot.size), (group.axes, None), mesh)


def _from_rows(piece: jax.Array, slot: Slot, group: Group) -> jax.Array:
    """The inverse of :func:`_to_rows`: the leaf in its shape and sharding."""
    sizes = dict(group.mesh_shape)
    mesh = _explicit_mesh(piece)
    counts, blocks, lead_spec, block_spec = [], [], [], []
    for n, axes in zip(slot.shape, slot.dims):
        count = int(np.prod([sizes[a] for a in axes], dtype=int)) if axes else 1
        if axes:
            counts.append(count)
            lead_spec.append(axes)
        blocks.append(n // count)
        block_spec.append(None)
    y = _reshape(piece, tuple(counts + blocks), tuple(lead_spec + block_spec), mesh)
    # Interleave each shard count with its block again, then merge the pairs.
    perm, c, k = [], 0, len(counts)
    for i, axes in enumerate(slot.dims):
        if axes:
            perm.append(c)
            c += 1
        perm.append(k + i)
    y = jnp.transpose(y, perm)
    return _reshape(y, slot.shape, tuple(a if a else None for a in slot.dims), mesh)


class Layout:
    """Where every leaf of a tree lives in a few buffers; static (hashable) pytree metadata.

    A layout is an empty pytree node (it has no leaves), so it can sit inside an
    optimizer state. Equal layouts are the same object.

    Attributes:
      treedef: structure of the original tree.
      slots: one :class:`Slot` per leaf, in tree order.
      groups: one :class:`Group` per buffer.
    """

    __slots__ = ("treedef", "slots", "groups", "mesh", "_key", "_hash", "_jitted", "__weakref__")
    _interned: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def __new__(cls, treedef: Any, slots: tuple[Slot, ...], groups: tuple[Group, ...], mesh: Any = None):
        key = (treedef, slots, groups)
        found = cls._interned.get(key)
        if found is not None:
            if found.mesh is None and mesh is not None:
                found.mesh = mesh
            return found
        self = super().__new__(cls)
        self.treedef, self.slots, self.groups, self.mesh = treedef, slots, groups, mesh
        self._key, self._hash, self._jitted = key, hash(key), {}
        cls._interned[key] = self
        return self

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Layout) and self._key == other._key)

    def __repr__(self) -> str:
        bufs = ", ".join(f"{jnp.dtype(g.dtype).name}{list(g.shape)}" for g in self.groups)
        return f"Layout({len(self.slots)} leaves in {len(self.groups)} buffers: {bufs})"

    @property
    def num_leaves(self) -> int:
        """Number of leaves of the original tree."""
        return len(self.slots)

    def buffer_shape(self, g: int) -> tuple[int, ...]:
        """Shape of buffer ``g`` (a solo group keeps its leaf's shape)."""
        group = self.groups[g]
        return self.slots[group.members[0]].shape if group.solo else group.shape

    def abstract_packed(self) -> Packed:
        """A :class:`Packed` of ``jax.ShapeDtypeStruct`` buffers (for ``jax.eval_shape``)."""
        return Packed(
            self, [jax.ShapeDtypeStruct(self.buffer_shape(g), gr.dtype) for g, gr in enumerate(self.groups)]
        )

    def abstract(self) -> PyTree:
        """The original tree as ``jax.ShapeDtypeStruct`` leaves (for masks, ``eval_shape``)."""
        return jax.tree.unflatten(self.treedef, [jax.ShapeDtypeStruct(s.shape, s.dtype) for s in self.slots])

    def _jit(self, name: str, fn):
        if name not in self._jitted:
            self._jitted[name] = jax.jit(fn)
        return self._jitted[name]

    def pack(self, tree: PyTree) -> Packed:
        """Pack a tree with this layout's structure (parameters, gradients, updates).

        Buffers take the dtype the leaves promote to, so gradients of another dtype
        than the parameters stay in their dtype.
        """
        leaves, treedef = jax.tree.flatten(plain_tree(tree))
        if treedef != self.treedef:
            raise ValueError(
                f"pack: the tree's structure {treedef} is not the layout's {self.treedef} "
                "(pack trees with the structure of the parameters the layout was built from)"
            )
        return self._jit("pack", lambda leaves: Packed(self, self.pack_groups(dict(enumerate(leaves)))))(
            leaves
        )

    def pack_groups(self, leaves: dict[int, Any], groups: Sequence[int] | None = None) -> tuple:
        """The buffers of ``groups`` (default: all) from leaves given by index (traceable)."""
        out = []
        for g in range(len(self.groups)) if groups is None else groups:
            group = self.groups[g]
            xs = [leaves[i] for i in group.members]
            if group.solo:
                out.append(jnp.asarray(xs[0]))
                continue
            if group.axes:
                pieces = [_to_rows(jnp.asarray(x), self.slots[i], group) for x, i in zip(xs, group.members)]
            else:
                pieces = [jnp.reshape(x, (-1,)) for x in xs]
            buf = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1)
            out.append(self._constrain(buf, group, P(group.axes, None) if group.axes else P()))
        return tuple(out)

    def unpack_groups(self, buffers: dict[int, Any]) -> dict[int, jax.Array]:
        """Leaves by index from the buffers of some groups, given by group index (traceable)."""
        leaves = {}
        for g, buf in buffers.items():
            group = self.groups[g]
            if group.solo:
                leaves[group.members[0]] = buf
                continue
            slots = [self.slots[i] for i in group.members]
            axis = jnp.ndim(buf) - 1
            pieces = jax.lax.split(buf, [s.size for s in slots], axis=axis) if len(slots) > 1 else [buf]
            for i, slot, piece in zip(group.members, slots, pieces):
                x = _from_rows(piece, slot, group) if group.axes else jnp.reshape(piece, slot.shape)
                spec = tuple(a if a else None for a in slot.dims) if group.axes else ()
                leaves[i] = self._constrain(x, group, P(*spec))
        return leaves

    def _constrain(self, x: jax.Array, group: Group, spec: P) -> jax.Array:
        """Pin ``x`` to ``spec`` on the layout's mesh when shardings are not types (auto axes)."""
        if self.mesh is None or not group.mesh_shape or not isinstance(x, jax.core.Tracer):
            return x
        if _explicit_mesh(x) is not None or tuple(self.mesh.shape.items()) != group.mesh_shape:
            return x
        if any(t == AxisType.Explicit for t in self.mesh.axis_types):
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    def unpack(self, packed: Packed, like: PyTree | None = None) -> PyTree:
        """The tree of ``packed``; with ``like``, each leaf is cast to ``like``'s leaf dtype."""
        if packed.layout != self:
            raise ValueError("unpack: the packed tree has another layout")

        def run(buffers):
            leaves = self.unpack_groups(dict(enumerate(buffers)))
            return jax.tree.unflatten(self.treedef, [leaves[i] for i in range(len(self.slots))])

        tree = self._jit("unpack", run)(packed.buffers)
        if like is not None:
            tree = jax.tree.map(lambda x, y: jnp.asarray(x, jnp.result_type(y)), tree, like)
        return tree


jax.tree_util.register_pytree_node(Layout, lambda layout: ((), layout), lambda layout, _: layout)


class Packed:
    """A pytree in packed form: its leaves are the buffers of a :class:`Layout`.

    Any pytree code treats it as a tree with a few large leaves: ``jax.grad``,
    ``jax.tree.map``, :func:`jopt.apply_updates`, optimizer states. Children may
    also be :class:`jopt.MaskedNode` (for groups a masked transform does not see)
    or other per-group values (masks, labels).

    Attributes:
      layout: the :class:`Layout` (static).
      buffers: one array per group.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
      >>> packed = jopt.fuse(jopt.sgd(0.1)).pack(params)
      >>> [b.shape for b in packed.buffers]
      [(6,)]
      >>> packed.unpack()["w"].tolist()
      [[1.0, 1.0], [1.0, 1.0]]
    """

    __slots__ = ("layout", "buffers")

    def __init__(self, layout: Layout, buffers: Sequence[Any]):
        self.layout = layout
        self.buffers = tuple(buffers)

    def unpack(self) -> PyTree:
        """The original tree (slices of the buffers; differentiable)."""
        return self.layout.unpack(self)

    def __contains__(self, key: object) -> bool:
        """Always ``False``: a packed tree has no keys of its own (use ``key in p.unpack()``).

        Code that asks ``key in params`` of a parameter tree (flax's ``TrainState``
        looks for ``overwrite_with_gradient``) so treats packed parameters as one
        tree of parameters.
        """
        return False

    def __repr__(self) -> str:
        shapes = ", ".join(str(getattr(b, "shape", b)) for b in self.buffers)
        return f"Packed({self.layout.num_leaves} leaves in {len(self.buffers)} buffers: {shapes})"


def _flatten_with_keys(p: Packed):
    return [(jax.tree_util.GetAttrKey(f"buffer{i}"), b) for i, b in enumerate(p.buffers)], p.layout


jax.tree_util.register_pytree_with_keys(
    Packed,
    _flatten_with_keys,
    lambda layout, buffers: Packed(layout, buffers),
    lambda p: (p.buffers, p.layout),
)


def is_packed(x: Any) -> bool:
    """Whether ``x`` is a :class:`Packed` tree."""
    return isinstance(x, Packed)
