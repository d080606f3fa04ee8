"""Moving loop states between the devices and host memory, on one process or many.

The engine keeps what it needs between segments (outputs, loop states of paused and kept
trials, checkpoints) in host memory as plain NumPy arrays. Two things make that more than
``jax.device_get``:

* typed PRNG keys (``jax.random.key``, e.g. the ``rng`` field of a flax ``TrainState``) have no
  NumPy form: on the host a key array is its ``key_data`` (``uint32``, one more axis), and it is
  wrapped back into a key when it returns to the devices (:func:`to_device`) or to the user
  (:func:`restore_keys`), as the *abstract* tree (``jax.ShapeDtypeStruct`` leaves) says;
* with several processes (``jax.distributed.initialize``) an array sharded over every device
  of every process is not addressable from one process: :func:`to_host` gathers it
  (``process_allgather``), so every process holds the same host copy and takes the same
  decisions.

Example:
  >>> import jax, jax.numpy as jnp
  >>> state = {"w": jnp.ones(2), "rng": jax.random.key(0)}
  >>> host = to_host(state)
  >>> host["rng"].dtype, host["rng"].shape
  (dtype('uint32'), (2,))
  >>> back = restore_keys(host, jax.eval_shape(lambda: state))
  >>> bool(jnp.all(jax.random.key_data(back["rng"]) == jax.random.key_data(state["rng"])))
  True
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

__all__ = [
    "check_host",
    "host_abstract",
    "is_key",
    "key_impl_name",
    "put",
    "restore_keys",
    "to_device",
    "to_host",
]


def is_key(x: Any) -> bool:
    """Whether ``x`` (an array or a ``ShapeDtypeStruct``) holds typed PRNG keys."""
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


@functools.cache
def _impl_of_dtype(dtype: Any) -> str:
    for name in _IMPLS:
        if jax.eval_shape(lambda name=name: jax.random.key(0, impl=name)).dtype == dtype:
            return name
    raise ValueError(f"unknown PRNG key dtype {dtype}: use one of the implementations {list(_IMPLS)}")


def key_impl_name(x: Any) -> str:
    """The PRNG implementation (``"threefry2x32"``, ``"rbg"``, ...) of a key array or its abstract value."""
    if isinstance(x, jax.Array):
        return str(jax.random.key_impl(x))
    return _impl_of_dtype(x.dtype)


def _unkey(x: Any) -> Any:
    return jax.random.key_data(x) if is_key(x) else x


def to_host(tree: Any) -> Any:
    """NumPy copies of ``tree``'s leaves (keys as their ``key_data``; arrays spanning several
    processes gathered, so that every process gets the whole value)."""
    tree = jax.tree.map(_unkey, tree)
    leaves, treedef = jax.tree.flatten(tree)
    remote = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and not x.is_fully_addressable]
    if remote:
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather([leaves[i] for i in remote], tiled=True)
        for i, x in zip(remote, gathered, strict=True):
            leaves[i] = x
    leaves = jax.device_get(leaves)
    return jax.tree.unflatten(treedef, [np.asarray(x) for x in leaves])


def _wrap(abstract: Any, value: Any) -> Any:
    if not is_key(abstract):
        return value
    return jax.random.wrap_key_data(value, impl=key_impl_name(abstract))


def put(host: Any, sharding: Any) -> Any:
    """Host arrays placed with ``sharding``. With several processes every process passes the
    same values and each one places only its own devices' shards (no collective)."""
    if jax.process_count() == 1:
        return jax.device_put(host, sharding)

    def one(x: Any) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, host)


def to_device(host: Any, abstract: Any, sharding: Any) -> Any:
    """``host`` (a :func:`to_host` tree with ``abstract``'s structure) placed with ``sharding``
    (see :func:`put`), key leaves wrapped back into keys."""
    return jax.tree.map(_wrap, abstract, put(host, sharding))


def restore_keys(host: Any, abstract: Any) -> Any:
    """``host`` with its key leaves (``key_data`` on the host) turned back into key arrays."""
    return jax.tree.map(lambda a, v: _wrap(a, jax.numpy.asarray(v)) if is_key(a) else v, abstract, host)


def host_abstract(abstract: Any) -> Any:
    """Shapes and dtypes of :func:`to_host`'s result for a tree with these abstract values."""

    def one(a: Any) -> jax.ShapeDtypeStruct:
        if is_key(a):
            return jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(a.shape, a.dtype))
        return jax.ShapeDtypeStruct(a.shape, a.dtype)

    return jax.tree.map(one, abstract)


def check_host(host: Any, abstract: Any, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``host`` has the structure, shapes and dtypes
    that :func:`to_host` gives for ``abstract``."""
    expected = host_abstract(abstract)
    if jax.tree.structure(host) != jax.tree.structure(expected):
        raise ValueError(f"{what}: structure {jax.tree.structure(host)} != {jax.tree.structure(expected)}")
    for got, want in zip(jax.tree.leaves(host), jax.tree.leaves(expected), strict=True):
        if np.shape(got) != want.shape or np.asarray(got).dtype != want.dtype:
            raise ValueError(
                f"{what}: an array of shape {np.shape(got)} and dtype {np.asarray(got).dtype}, expected "
                f"{want.shape} {want.dtype}"
            )
