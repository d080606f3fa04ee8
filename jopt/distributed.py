r"""Data parallelism, sharded (FSDP / ZeRO-style) optimizer state and multi-process helpers.

jopt transforms are pure functions of pytrees, so they compose with every JAX
parallelism mechanism without changes:

* **``jax.jit`` + ``NamedSharding``** (recommended): shard the batch over a
  ``data`` mesh axis, replicate (or shard) the parameters, and ``jit`` the
  training step. The gradient of a mean loss is already the global mean; no
  jopt transform is needed.
* **``jax.shard_map`` / ``jax.pmap``**: each replica sees only its shard of the
  batch, so its gradient is a *local* mean. Put :func:`mean_gradients_over` at
  the head of the chain to average gradients over the replica axis,

  .. math:: g \leftarrow \frac{1}{R} \sum_{r=1}^{R} g^{(r)},

  which makes every replica apply the same update to the same parameters.
* **Sharded optimizer state**: every moment is created with
  ``jnp.zeros_like(param)``, so under ``jit`` it inherits the parameter's
  sharding. :func:`state_shardings` computes the sharding of every state leaf
  from (possibly abstract) parameters with :func:`jax.eval_shape`, and
  :func:`init_sharded` creates the state directly sharded, from
  ``jax.ShapeDtypeStruct`` parameters if ``init`` does not read parameter
  values, so a model too large for one device never materialises on one.
  Scalars (step counts, hyperparameters) are replicated; factored statistics
  (Adafactor's row/column vectors) keep the sharding of the parameter axis they
  were not reduced over.

Multi-process training (GPU clusters, TPU pods, or several processes on one
machine) is the same code after ``jax.distributed.initialize()``; build the
global batch from each process's local data with :func:`global_batch`.

Example (data parallel with ``jit``)::

    mesh = jopt.distributed.data_mesh()                  # all devices on a "data" axis
    batch = jax.device_put(batch, jopt.distributed.batch_sharding(mesh))
    params = jax.device_put(params, jopt.distributed.replicated(mesh))
    opt_state = jopt.distributed.init_sharded(opt, params)
    step = jax.jit(train_step)                           # unchanged single-device code
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jopt.core import GradientTransformation, stateless

PyTree = Any

__all__ = [
    "batch_sharding",
    "data_mesh",
    "global_batch",
    "init_sharded",
    "mean_gradients_over",
    "replicated",
    "state_shardings",
]


# --- Gradient averaging -------------------------------------------------------------------------


def _check_axis_name(axis_name: Any) -> None:
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"mean_gradients_over: axis_name must be a non-empty str or tuple of str, got {axis_name!r}"
        )


def _vma_checked() -> bool:
    """Whether the enclosing ``shard_map`` tracks varying manual axes (``check_vma=True``)."""
    try:
        from jax._src import config as jax_config  # no public accessor in JAX 0.10

        return bool(jax_config._check_vma.value)
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions: assume unchecked
        return False


def _varying_axes(x: Any) -> frozenset:
    mat = getattr(jax.typeof(x), "mat", None)
    return frozenset(getattr(mat, "varying", ()) or ())


def mean_gradients_over(axis_name: str | tuple[str, ...]) -> GradientTransformation:
    r"""Average per-replica updates over a named axis: :math:`g \leftarrow \frac{1}{R}\sum_r g^{(r)}`.

    Put it at the head of any chain used inside ``jax.shard_map`` or
    ``jax.pmap``, where each replica computes the gradient of its own shard of
    the batch; afterwards every replica holds the global-batch gradient (for
    equal-sized shards and a mean loss) and applies the same update. The state is
    empty, so the optimizer state stays identical across replicas.

    Under ``jax.shard_map(..., check_vma=True)`` (the default), autodiff already
    *sums* the gradient of a replicated (invariant) parameter over the replicas.
    Such a gradient is not per-replica, so this transform raises ``ValueError``
    instead of silently returning :math:`R` times the mean. Either differentiate
    with respect to per-replica parameters,
    ``jax.grad(loss)(jax.lax.pcast(params, axis_name, to="varying"), batch)``
    (then this transform averages), or average the loss instead
    (``jax.lax.pmean(loss, axis_name)``) and leave this transform out. With
    ``jax.pmap`` and ``check_vma=False`` gradients are always per-replica.

    Not needed (and not allowed, since no axis is bound) under plain ``jax.jit``
    with sharded inputs: there the gradient is already global.

    Args:
      axis_name: the ``shard_map`` mesh axis or ``pmap`` axis name (or a tuple of
        names, e.g. ``("data", "fsdp")``) to average over.

    Example:
      >>> import jax, jax.numpy as jnp, jopt, jopt.distributed
      >>> tx = jopt.chain(jopt.distributed.mean_gradients_over("i"), jopt.sgd(0.1))
      >>> def step(p, g):
      ...     u, _ = tx.update(g, tx.init(p), p)
      ...     return jopt.apply_updates(p, u)
      >>> n = jax.local_device_count()
      >>> p = jnp.zeros((n, 2)); g = jnp.arange(n, dtype=jnp.float32)[:, None] * jnp.ones((n, 2))
      >>> out = jax.pmap(step, axis_name="i")(p, g)
      >>> bool(jnp.allclose(out, -0.1 * (n - 1) / 2))
      True
    """
    _check_axis_name(axis_name)
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)

    def mean_leaf(g):
        if _vma_checked():
            invariant = [n for n in names if n not in _varying_axes(g)]
            if invariant:
                raise ValueError(
                    f"mean_gradients_over: the gradient (shape {g.shape}) is not per-replica over axis "
                    f"{invariant}: under shard_map(check_vma=True) autodiff has already summed the "
                    "gradient of a replicated parameter over the replicas. Differentiate with respect "
                    f"to jax.lax.pcast(params, {axis_name!r}, to='varying'), or average the loss "
                    f"(jax.lax.pmean(loss, {axis_name!r})) and drop mean_gradients_over."
                )
        return jax.lax.pmean(g, axis_name)

    def mean(updates, params):
        del params
        return jax.tree.map(mean_leaf, updates)

    return stateless(mean)


# --- Meshes and shardings -------------------------------------------------------------------------


def data_mesh(
    num_devices: int | None = None,
    axis_name: str = "data",
    *,
    axis_type: AxisType = AxisType.Explicit,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all global devices by default).

    Args:
      num_devices: number of devices, ``1 <= num_devices <= len(devices)``.
      axis_name: name of the mesh axis.
      axis_type: ``AxisType.Explicit`` (JAX's default, shardings are part of the
        types) or ``AxisType.Auto`` (compiler-chosen propagation).
      devices: devices to use (default ``jax.devices()``, i.e. all processes').

    Example:
      >>> import jopt.distributed
      >>> dict(jopt.distributed.data_mesh(1).shape)
      {'data': 1}
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices) if num_devices is None else num_devices
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= len(devices):
        raise ValueError(f"num_devices must be an int in [1, {len(devices)}], got {num_devices!r}")
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"axis_name must be a non-empty str, got {axis_name!r}")
    return jax.make_mesh((int(n),), (axis_name,), axis_types=(axis_type,), devices=devices[: int(n)])


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis_name: str | tuple[str, ...] = "data") -> NamedSharding:
    """Sharding that splits an array's leading (batch) axis over ``axis_name``."""
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    missing = [n for n in names if n not in mesh.axis_names]
    if missing:
        raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {mesh.axis_names}")
    return NamedSharding(mesh, P(axis_name))


def global_batch(local_batch: PyTree, mesh: Mesh, axis_name: str | tuple[str, ...] = "data") -> PyTree:
    """Assemble a global batch sharded over ``axis_name`` from each process's local rows.

    In a multi-process run every process passes *its own* rows (the global batch
    is the concatenation in process order); in a single process this is
    ``jax.device_put(local_batch, batch_sharding(mesh, axis_name))``.
    """
    sharding = batch_sharding(mesh, axis_name)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def _find_mesh(tree: PyTree) -> Mesh:
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, Mesh):
            return sharding.mesh
    raise ValueError(
        "params must carry NamedShardings on a Mesh (jax.Arrays placed with jax.device_put, or "
        "jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec)))"
    )


def _as_abstract(tree: PyTree, mesh: Mesh) -> PyTree:
    """ShapeDtypeStructs with NamedShardings on ``mesh`` (unsharded leaves replicated)."""

    def one(x):
        sharding = getattr(x, "sharding", None)
        spec = sharding.spec if isinstance(sharding, NamedSharding) else P()
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=NamedSharding(mesh, spec))

    return jax.tree.map(one, tree)


def _structural_shardings(state_shapes: PyTree, params: PyTree, mesh: Mesh) -> PyTree:
    """Fallback: a state leaf takes the sharding of the parameter of the same shape it mirrors."""
    param_def = jax.tree.structure(params)
    param_leaves = jax.tree.leaves(params)
    rep = NamedSharding(mesh, P())

    def mirror(subtree):
        leaves = jax.tree.leaves(subtree)
        out = []
        for s, p in zip(leaves, param_leaves, strict=True):
            same = tuple(s.shape) == tuple(p.shape)
            out.append(p.sharding if same and isinstance(p.sharding, NamedSharding) else rep)
        return jax.tree.unflatten(param_def, out)

    def is_mirror(node):
        return jax.tree.structure(node) == param_def

    return jax.tree.map(
        lambda node: mirror(node) if is_mirror(node) else jax.tree.map(lambda _: rep, node),
        state_shapes,
        is_leaf=is_mirror,
    )


def state_shardings(tx: Any, params: PyTree) -> PyTree:
    """The sharding of every leaf of ``tx.init(params)``, computed without running ``init``.

    Shardings are propagated through ``init`` as types (:func:`jax.eval_shape`
    on an explicit-axis copy of the mesh), so a moment created with
    ``zeros_like(param)`` gets the parameter's sharding, a reduction over a
    sharded axis (Adafactor's row/column statistics) is replicated along that
    axis only, and scalars (counts, hyperparameters) are replicated. The result
    is on the parameters' own mesh, whatever its axis types.

    Args:
      tx: a jopt or optax transformation.
      params: parameters as ``jax.Array`` or ``jax.ShapeDtypeStruct``, each with a
        ``NamedSharding`` (leaves without one count as replicated).

    Returns:
      A pytree of ``NamedSharding`` with the structure of the optimizer state,
      usable as ``out_shardings`` of a jitted ``init``/``update``.

    Example:
      >>> import jax, jax.numpy as jnp, jopt, jopt.distributed
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jopt.distributed.data_mesh(1, "fsdp")
      >>> p = {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=NamedSharding(mesh, P("fsdp")))}
      >>> s = jopt.distributed.state_shardings(jopt.adam(1e-3), p)
      >>> s[0].mu["w"].spec, s[0].count.spec
      (P('fsdp', None), P())
    """
    mesh = _find_mesh(params)
    abstract = _as_abstract(params, mesh)
    explicit_mesh = Mesh(
        mesh.devices, mesh.axis_names, axis_types=(AxisType.Explicit,) * len(mesh.axis_names)
    )
    rep = NamedSharding(mesh, P())
    try:
        with jax.set_mesh(explicit_mesh):
            shapes = jax.eval_shape(tx.init, _as_abstract(abstract, explicit_mesh))
    except Exception:  # some init cannot be typed on an explicit mesh (ambiguous contraction): use structure
        shapes = jax.eval_shape(
            tx.init, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), abstract)
        )
        return _structural_shardings(shapes, abstract, mesh)

    def one(s):
        sharding = getattr(s, "sharding", None)
        if isinstance(sharding, NamedSharding) and s.ndim > 0:
            return NamedSharding(mesh, sharding.spec)
        return rep

    return jax.tree.map(one, shapes)


def _reads_values(fn, abstract_leaves: list, treedef, which: list[int]) -> bool:
    """Whether ``fn(params)`` depends on the values (not only shapes) of leaves ``which``."""
    jaxpr = jax.make_jaxpr(lambda *leaves: fn(jax.tree.unflatten(treedef, leaves)))(*abstract_leaves).jaxpr
    watched = {id(jaxpr.invars[i]) for i in which}
    used = [v for eqn in jaxpr.eqns for v in eqn.invars] + list(jaxpr.outvars)
    return any(isinstance(v, jcore.Var) and id(v) in watched for v in used)


def init_sharded(tx: Any, params: PyTree) -> PyTree:
    """``tx.init(params)`` created directly with :func:`state_shardings`.

    Args:
      tx: a jopt or optax transformation.
      params: sharded ``jax.Array`` parameters, or ``jax.ShapeDtypeStruct`` with
        shardings (a huge model can then be given an optimizer state before, or
        without, materialising its parameters on the host). Abstract leaves are
        allowed only if ``init`` does not read their values (true of every
        moment-based optimizer; not of parameter averaging, which copies them).

    Raises:
      ValueError: if ``init`` reads the value of an abstract parameter.

    Example:
      >>> import jax, jax.numpy as jnp, jopt, jopt.distributed
      >>> from jax.sharding import NamedSharding, PartitionSpec as P
      >>> mesh = jopt.distributed.data_mesh(1, "fsdp")
      >>> p = {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=NamedSharding(mesh, P("fsdp")))}
      >>> state = jopt.distributed.init_sharded(jopt.adam(1e-3), p)
      >>> state[0].mu["w"].sharding.spec
      P('fsdp', None)
    """
    shardings = state_shardings(tx, params)
    leaves, treedef = jax.tree.flatten(params)
    abstract_idx = [i for i, x in enumerate(leaves) if not isinstance(x, jax.Array)]
    concrete_idx = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array)]
    if abstract_idx:
        shapes = [jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves]
        if _reads_values(tx.init, shapes, treedef, abstract_idx):
            raise ValueError(
                "params: this optimizer's init reads parameter values; pass concrete jax.Arrays "
                "instead of jax.ShapeDtypeStruct"
            )

    mesh = _find_mesh(params)
    abstract = jax.tree.leaves(_as_abstract(params, mesh))
    explicit = all(t == AxisType.Explicit for t in mesh.axis_types)

    def build(*concrete):  # abstract leaves become zeros that ``init`` never reads (removed by DCE)
        full = list(leaves)
        for i, x in zip(concrete_idx, concrete, strict=True):
            full[i] = x
        for i in abstract_idx:
            typed = explicit and abstract[i].sharding.spec != P()
            sharding = abstract[i].sharding if typed else None
            full[i] = jnp.zeros(np.shape(leaves[i]), leaves[i].dtype, out_sharding=sharding)
        return tx.init(jax.tree.unflatten(treedef, full))

    return jax.jit(build, out_shardings=shardings)(*[leaves[i] for i in concrete_idx])
