"""The compiled programs of a chunk: ``init``, ``segment``, ``update`` and ``gather``.

The unit of work is a *member*: one trial, or one (trial, fold) pair in a cross-validated sweep.
A *chunk* is ``size`` slots of one static group (every static hyperparameter equal); each slot
holds a member or nothing. Per (group, size) up to three programs are compiled, ahead of time and
cached (so a rerun with the same task object compiles nothing):

* ``init(hp, init_keys, train_keys, status)`` -- every slot's training state (``task.init``);
* ``segment(hp, carry)`` -- ``eval_every`` training steps (one ``lax.scan``) then one
  evaluation, per slot (``jax.vmap``);
* ``update(hp, carry, src, key_src, fresh, status, init_keys, train_keys)`` -- between segments:
  slot ``j`` takes a copy of slot ``src[j]``'s loop state with slot ``key_src[j]``'s key stream
  (PBT's exploit; the identity otherwise), slots with ``fresh[j]`` are re-initialised by
  ``task.init`` for a new trial (refill), and every slot gets the status ``status[j]``.
  Hyperparameters are inputs of every program, so a new trial's values are simply written into
  the arrays: nothing recompiles. Compiled on first use.

and per (group, input size, output size) a ``gather`` program that moves members into a chunk of
another size on the devices (successive halving shrinks its batches).

Inside ``segment``, per member (``jnp.where`` on scalars and whole states, no Python branch):

* the ``lax.scan`` runs the task's steps unmasked; at the end, if a training metric of any step
  (or, with ``check_params``, the new state) is not finite, the segment is discarded -- the state
  stays the one at the segment's start, the last finite one -- and the member is *diverged*.
  Slots that are not running (diverged, stopped, empty) are computed too (a vmapped batch has one
  shape) but their results are discarded the same way: checking once per segment instead of after
  every step is what keeps the program as fast as a hand-written ``vmap`` of the training loop;
* the evaluation's objective tracks the best value (and, with ``patience``, the best state);
  after ``patience`` evaluations without an improvement of more than ``min_delta`` the member is
  *stopped*: its state is reset to its best state and stops changing.

The member axis is sharded over the ``"trials"`` axis of the device mesh; within one compiled
chunk a member's result does not depend on the other members or on its slot. With
``data_parallel=d`` the mesh is ``("trials", "data")`` with ``d`` devices per member: the
members are vmapped with ``spmd_axis_name="trials"`` and a task that marks its minibatch with
:func:`shard_batch` has each member's batch split over its ``d`` devices (gradients reduced by
the compiler).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jopt.sweep.task import BoundTask, abstract_hyperparams
from jopt.sweep.transfer import host_abstract, is_key

__all__ = [
    "DIVERGED",
    "INACTIVE",
    "RUNNING",
    "STOPPED",
    "Carry",
    "GroupPrograms",
    "ProgramOptions",
    "SegmentOutput",
    "chunk_size",
    "clear_program_cache",
    "estimate_member_bytes",
    "gather",
    "make_mesh",
    "member_keys",
    "shard_batch",
    "tree_all_finite",
    "tree_bytes",
    "tree_where",
]

RUNNING, DIVERGED, STOPPED, INACTIVE = 0, 1, 2, 3
TRIALS_AXIS = "trials"
DATA_AXIS = "data"
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}  # init/update run rarely: compile fast


class Carry(NamedTuple):
    """Per-member loop state (every leaf has a leading slot axis in a chunk).

    Attributes:
      state: the task's training state.
      best_state: state at the best evaluation (``()`` without early stopping).
      key: raw uint32 key data of the member's training key stream.
      status: RUNNING, DIVERGED, STOPPED or INACTIVE.
      best: best objective so far, oriented for minimization (``+inf`` before the first).
      bad: evaluations since the last improvement.
      steps: training steps actually applied.
    """

    state: Any
    best_state: Any
    key: jax.Array
    status: jax.Array
    best: jax.Array
    bad: jax.Array
    steps: jax.Array


class SegmentOutput(NamedTuple):
    """What one ``segment`` reports per slot (host NumPy arrays after transfer).

    Attributes:
      objective: the evaluation's objective (the best one once stopped; ``+-inf`` if diverged).
      train: mean training metrics over the segment's steps (NaN if the segment was discarded).
      eval: the evaluation's metrics.
      status: RUNNING, DIVERGED, STOPPED or INACTIVE after the segment.
      steps: training steps applied so far.
    """

    objective: Any
    train: dict[str, Any]
    eval: dict[str, Any]
    status: Any
    steps: Any


@dataclass(frozen=True)
class ProgramOptions:
    """Static options baked into the compiled ``segment`` program."""

    eval_every: int
    sign: float = 1.0  # +1 minimize, -1 maximize
    patience: int | None = None
    min_delta: float = 0.0
    check_params: bool = True


# ----------------------------------------------------------------------------- tree helpers


def tree_where(cond: jax.Array, new: Any, old: Any) -> Any:
    """Leafwise ``jnp.where(cond, new, old)``; ``cond`` is a scalar or has one value per leading
    index (broadcast over the other axes); typed PRNG keys supported.

    Example:
      >>> tree_where(jnp.array([True, False]), {"a": jnp.ones((2, 3))}, {"a": jnp.zeros((2, 3))})["a"].sum()
      Array(3., dtype=float32)
    """

    def pick(a, b):
        data_a = jax.random.key_data(a) if is_key(a) else a
        data_b = jax.random.key_data(b) if is_key(b) else b
        c = jnp.reshape(cond, cond.shape + (1,) * (data_a.ndim - cond.ndim))
        out = jnp.where(c, data_a, data_b)
        return jax.random.wrap_key_data(out, impl=jax.random.key_impl(a)) if is_key(a) else out

    return jax.tree.map(pick, new, old)


def tree_all_finite(tree: Any) -> jax.Array:
    """True when every inexact leaf of ``tree`` is finite (integer and key leaves are ignored).

    Example:
      >>> bool(tree_all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.nan])}))
      False
    """
    # One sum per leaf then isfinite: NaN and Inf propagate through sums, and this compiles
    # much faster than a per-element isfinite-and-reduce over every leaf.
    sums = [
        jnp.sum(x, dtype=jnp.float32)
        for x in jax.tree.leaves(tree)
        if not is_key(x) and jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.isfinite(sum(sums)) if sums else jnp.bool_(True)


def tree_bytes(tree: Any) -> int:
    """Total bytes of the array leaves (concrete or abstract) of ``tree``."""
    leaves = jax.tree.leaves(host_abstract(tree))  # a key counts as its key data
    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves))


# ----------------------------------------------------------------------------- planning helpers


def make_mesh(devices: int | Sequence[Any] | None = None, data_parallel: int = 1) -> jax.sharding.Mesh:
    """A ``("trials",)`` mesh over ``devices`` (a count, a list, or ``None`` for all), or with
    ``data_parallel > 1`` a ``("trials", "data")`` mesh with that many devices per member."""
    if devices is None:
        devs = jax.devices()
    elif isinstance(devices, int):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            raise ValueError(f"devices={devices} but {len(available)} device(s) are available")
        devs = available[:devices]
    else:
        devs = list(devices)
    if len(devs) % data_parallel:
        raise ValueError(f"data_parallel={data_parallel} must divide the number of devices ({len(devs)})")
    if data_parallel == 1:
        return jax.make_mesh(
            (len(devs),), (TRIALS_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devs
        )
    auto = (jax.sharding.AxisType.Auto,) * 2
    shape = (len(devs) // data_parallel, data_parallel)
    return jax.make_mesh(shape, (TRIALS_AXIS, DATA_AXIS), axis_types=auto, devices=devs)


def shard_batch(batch: Any, axis: int = 0) -> Any:
    """Mark a minibatch (an array or a tree of arrays) to be split along ``axis`` over the
    ``"data"`` devices of its member, in a sweep with ``data_parallel > 1``; unchanged
    otherwise (so a task calls it unconditionally).

    Example:
      >>> import jax.numpy as jnp
      >>> shard_batch(jnp.ones((4, 2))).shape  # outside a data-parallel sweep: the identity
      (4, 2)
    """
    if DATA_AXIS not in jax.sharding.get_abstract_mesh().axis_names:
        return batch

    def one(x: Any) -> Any:
        spec = [None] * jnp.ndim(x)
        spec[axis] = DATA_AXIS
        return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec))

    return jax.tree.map(one, batch)


def chunk_size(members: int, num_devices: int, cap: int | None) -> int:
    """Slots per chunk for ``members`` members: a multiple of the device count, at most ``cap``
    (when ``cap >= devices``), balanced so that the last chunk needs the least padding.

    Example:
      >>> chunk_size(10, 4, None), chunk_size(10, 4, 6), chunk_size(10, 4, 2), chunk_size(256, 2, 108)
      (12, 4, 2, 86)
    """
    full = -(-members // num_devices) * num_devices
    if cap is None:
        return full
    if cap < num_devices:
        return max(1, cap)
    limit = min(full, (cap // num_devices) * num_devices)
    chunks = -(-members // limit)  # fewest chunks, least padding: 256 at cap 108 -> 3 x 86
    return -(-members // (chunks * num_devices)) * num_devices


def _jaxpr_temp_bytes(fn: Callable, *args: Any) -> int:
    jaxpr = jax.make_jaxpr(fn)(*args)
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = v.aval
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                try:
                    total += math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
                except TypeError:
                    total += 8 * math.prod(aval.shape)
    return int(total)


def estimate_member_bytes(bound: BoundTask, hp_abstract: Mapping[str, Any], patience: int | None) -> int:
    """Estimated device bytes one member needs: state (x2 for the update, +1 for the best state
    with early stopping) plus the largest sum of temporaries of one step or one evaluation
    (an upper bound: it assumes no temporary is freed early)."""
    key = jax.eval_shape(lambda: jax.random.key(0))
    state = jax.eval_shape(bound.init, hp_abstract, key)
    step_tmp = _jaxpr_temp_bytes(bound.step, hp_abstract, state, key)
    eval_tmp = _jaxpr_temp_bytes(bound.evaluate, hp_abstract, state)
    copies = 3 if patience is not None else 2
    return copies * tree_bytes(state) + max(step_tmp, eval_tmp)


# ----------------------------------------------------------------------------- member functions


def _member_fns(bound: BoundTask, opts: ProgramOptions):
    def init_member(hp, init_key, train_key, status):
        state = bound.init(hp, jax.random.wrap_key_data(init_key))
        best_state = state if opts.patience is not None else ()
        inf = jnp.asarray(jnp.inf, jnp.float32)
        return Carry(state, best_state, train_key, status, inf, jnp.int32(0), jnp.int32(0))

    def segment_member(hp, carry: Carry):
        def body(c, _):
            state, key = c
            key, sub = jax.random.split(jax.random.wrap_key_data(key))
            state, metrics = bound.step(hp, state, sub)
            return (state, jax.random.key_data(key)), metrics

        (state, key), metrics = jax.lax.scan(body, (carry.state, carry.key), None, length=opts.eval_every)
        ok = tree_all_finite(metrics)
        if opts.check_params:
            ok = ok & tree_all_finite(state)
        running = carry.status == RUNNING
        accept = running & ok
        state = tree_where(accept, state, carry.state)
        key = jnp.where(accept, key, carry.key)
        status = jnp.where(running & ~ok, DIVERGED, carry.status)
        steps = carry.steps + jnp.where(accept, opts.eval_every, 0).astype(jnp.int32)
        train = {k: jnp.where(accept, jnp.mean(v), jnp.nan) for k, v in metrics.items()}
        objective, evals = bound.evaluate(hp, state)
        status = jnp.where((status == RUNNING) & ~jnp.isfinite(objective), DIVERGED, status)
        signed = jnp.where(status == DIVERGED, jnp.inf, opts.sign * objective)
        running = status == RUNNING
        improved = running & (signed < carry.best - opts.min_delta)
        best = jnp.where(status == DIVERGED, jnp.inf, jnp.where(improved, signed, carry.best))
        bad = jnp.where(improved, 0, carry.bad + running.astype(jnp.int32))
        best_state = carry.best_state
        if opts.patience is not None:
            best_state = tree_where(improved, state, best_state)
            stop = running & (bad >= opts.patience)
            state = tree_where(stop, best_state, state)
            status = jnp.where(stop, STOPPED, status)
        worst = jnp.asarray(opts.sign * jnp.inf, jnp.float32)
        # a stopped member holds its best state: report the best objective from the stop on
        reported = jnp.where(status == STOPPED, opts.sign * best, objective)
        reported = jnp.where(status == DIVERGED, worst, reported)
        new = Carry(state, best_state, key, status, best, bad, steps)
        return new, SegmentOutput(reported, train, evals, status, steps)

    return init_member, segment_member


# ----------------------------------------------------------------------------- compiled programs

_CACHE: dict[tuple, Any] = {}
_CACHE_SIZE = 64


def clear_program_cache() -> None:
    """Forget the compiled programs kept for reuse by later sweeps."""
    _CACHE.clear()


def _cached(key: tuple, build: Callable[[], Any]) -> tuple[Any, bool]:
    hit = _CACHE.get(key)
    if hit is not None:
        return hit, False
    value = build()
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = value
    return value, True


class GroupPrograms:
    """The ``init``, ``segment`` and ``update`` programs of one static group at one chunk size.

    Each is lowered and compiled on first use (``init`` and ``update`` without backend
    optimizations: they run once per chunk or refill) and cached across sweeps by the task
    object, the static values, the dtypes, the options, the size and the mesh. ``compiled``
    counts the programs this object compiled and ``compile_seconds`` their time (cache hits: 0).
    """

    def __init__(
        self,
        bound: BoundTask,
        cache_key: tuple,
        traced_dtypes: Mapping[str, str],
        num_folds: int | None,
        opts: ProgramOptions,
        size: int,
        mesh: jax.sharding.Mesh,
    ):
        self.size, self.mesh, self.opts = int(size), mesh, opts
        self.key = cache_key + (tuple(traced_dtypes.items()), num_folds, opts, self.size, mesh)
        self.sharding = NamedSharding(mesh, PartitionSpec(TRIALS_AXIS))
        self._init_member, self._segment_member = _member_fns(bound, opts)
        spec = lambda shape, dtype: jax.ShapeDtypeStruct((self.size, *shape), np.dtype(dtype),
                                                         sharding=self.sharding)  # fmt: skip
        self.hp_abstract = {k: spec((), d) for k, d in abstract_hyperparams(traced_dtypes, num_folds).items()}
        self.key_abstract, self.status_abstract = spec((2,), np.uint32), spec((), np.int32)
        self.mask_abstract, self.index_abstract = spec((), np.bool_), spec((), np.int32)
        self.compiled, self.compile_seconds = 0, 0.0
        self._programs: dict[str, Any] = {}
        self._carry_abstract = None
        self._data_parallel = DATA_AXIS in mesh.axis_names
        self._vmap = (
            functools.partial(jax.vmap, spmd_axis_name=TRIALS_AXIS) if self._data_parallel else jax.vmap
        )

    def _program(self, name: str, lower: Callable[[], Any], options: dict | None = None):
        if name not in self._programs:
            t0 = time.perf_counter()
            prog, fresh = _cached(self.key + (name,), lambda: self._lower(lower).compile(options))
            if fresh:
                self.compiled += 1
                self.compile_seconds += time.perf_counter() - t0
            self._programs[name] = prog
        return self._programs[name]

    def _lower(self, lower: Callable[[], Any]) -> Any:
        """Lower under the mesh when members span a data axis (for :func:`shard_batch`)."""
        if not self._data_parallel:
            return lower()
        with jax.set_mesh(self.mesh):
            return lower()

    def _init_jit(self):
        return jax.jit(self._vmap(self._init_member), in_shardings=self.sharding, out_shardings=self.sharding)

    @property
    def carry_abstract(self) -> Carry:
        """Shapes, dtypes and sharding of a chunk's :class:`Carry`."""
        if self._carry_abstract is None:
            abs_ = jax.eval_shape(self._init_jit(), self.hp_abstract, self.key_abstract, self.key_abstract,
                                  self.status_abstract)  # fmt: skip
            self._carry_abstract = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.sharding), abs_
            )
        return self._carry_abstract

    def init(self, hp, init_keys, train_keys, status) -> Carry:
        """Fresh loop states of every slot."""
        args = (self.hp_abstract, self.key_abstract, self.key_abstract, self.status_abstract)
        prog = self._program("init", lambda: self._init_jit().lower(*args), INIT_COMPILER_OPTIONS)
        return prog(hp, init_keys, train_keys, status)

    def segment(self, hp, carry: Carry) -> tuple[Carry, SegmentOutput]:
        """One segment of every slot."""

        def lower():
            jitted = jax.jit(self._vmap(self._segment_member), in_shardings=self.sharding,
                             out_shardings=self.sharding)  # fmt: skip
            return jitted.lower(self.hp_abstract, self.carry_abstract)

        return self._program("segment", lower)(hp, carry)

    def update(self, hp, carry: Carry, src, key_src, fresh, status, init_keys, train_keys) -> Carry:
        """Copy, re-initialise and re-status slots between segments (see the module docstring)."""
        init_member, vmap = self._init_member, self._vmap

        def update(hp, carry, src, key_src, fresh, status, init_keys, train_keys):
            moved = jax.tree.map(lambda x: x[src], carry)._replace(key=carry.key[key_src])
            new = vmap(init_member)(hp, init_keys, train_keys, status)
            out = tree_where(fresh, new, moved)
            return out._replace(status=status)

        def lower():
            jitted = jax.jit(update, in_shardings=self.sharding, out_shardings=self.sharding)
            i, m, k = self.index_abstract, self.mask_abstract, self.key_abstract
            return jitted.lower(self.hp_abstract, self.carry_abstract, i, i, m, self.status_abstract, k, k)

        prog = self._program("update", lower, INIT_COMPILER_OPTIONS)
        return prog(hp, carry, src, key_src, fresh, status, init_keys, train_keys)


def gather(source: GroupPrograms, target: GroupPrograms, carry: Carry, idx, status) -> tuple[Carry, bool]:
    """Slot ``j`` of a ``target``-sized chunk <- slot ``idx[j]`` of a ``source``-sized carry, with
    status ``status[j]``; on the devices, one program per (group, sizes). Returns ``(carry, compiled)``."""

    def move(carry, idx, status):
        return jax.tree.map(lambda x: x[idx], carry)._replace(status=status)

    def build():
        jitted = jax.jit(move, in_shardings=(source.sharding, target.sharding, target.sharding),
                         out_shardings=target.sharding)  # fmt: skip
        return jitted.lower(source.carry_abstract, target.index_abstract, target.status_abstract).compile(
            INIT_COMPILER_OPTIONS
        )

    prog, fresh = _cached(source.key + ("gather", target.size), build)
    return prog(carry, idx, status), fresh


# ----------------------------------------------------------------------------- keys

_KEY_BLOCK = 64  # key derivation runs on padded blocks: one compile for any number of members


@jax.jit
def _member_keys(seed: jax.Array, trials: jax.Array, folds: jax.Array) -> tuple[jax.Array, jax.Array]:
    def one(t, f):
        base = jax.random.fold_in(jax.random.key(seed), t)
        init = jax.random.fold_in(base, 0)
        train = jax.random.fold_in(jax.random.fold_in(base, 1), f)
        return jax.random.key_data(init), jax.random.key_data(train)

    return jax.vmap(one)(trials, folds)


def member_keys(seed: int, trials: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw init and training keys of members: init from ``(seed, trial id)`` (shared by a trial's
    folds), training from ``(seed, trial id, fold)``; independent of chunking and device count.

    Example:
      >>> a = member_keys(0, np.array([3, 4]), np.array([0, 0]))
      >>> b = member_keys(0, np.array([4]), np.array([0]))
      >>> bool((a[1][1] == b[1][0]).all()), a[0].shape
      (True, (2, 2))
    """
    trials, folds = np.asarray(trials, np.uint32).ravel(), np.asarray(folds, np.uint32).ravel()
    n = len(trials)
    padded = max(_KEY_BLOCK, -(-n // _KEY_BLOCK) * _KEY_BLOCK)
    t, f = np.zeros(padded, np.uint32), np.zeros(padded, np.uint32)
    t[:n], f[:n] = trials, folds
    cpu = jax.local_devices(backend="cpu")[0]
    init, train = _member_keys(*jax.device_put((np.uint32(seed), t, f), cpu))
    return np.asarray(init)[:n], np.asarray(train)[:n]
