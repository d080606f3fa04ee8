"""The vectorized, chunked, sharded trial runner.

The unit of work is a *member*: one trial, or one (trial, fold) pair in a
cross-validated sweep. Members are grouped by their static hyperparameters;
each group is cut into chunks of one fixed size (the last one padded with
inactive members), so a group compiles exactly two programs -- ``init`` and
``segment`` -- whatever the number of chunks.

``segment`` is one ``jax.jit`` of a ``jax.vmap`` over members of
``lax.scan`` over ``eval_every`` training steps followed by the evaluation.
Inside it, everything per member is ``jnp.where``-masked:

* a step whose new state or metrics are not finite is discarded and the member
  is marked *diverged* (its state stops changing; its objective is the worst);
* at each evaluation, the best objective and (with early stopping) the best
  state are tracked; after ``patience`` evaluations without an improvement of
  more than ``min_delta`` the member is *stopped*: its state is reset to its
  best state and stops changing.

The member axis is sharded over a 1-D ``("trials",)`` device mesh
(``NamedSharding``); with one device this is a no-op. Within one compiled
batch a member's result does not depend on the other members.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jopt.sweep.space import Hyperparams
from jopt.sweep.task import Task, abstract_hyperparams, eval_objective

__all__ = [
    "Carry",
    "ChunkPlan",
    "DIVERGED",
    "INACTIVE",
    "RUNNING",
    "STOPPED",
    "EngineOptions",
    "GroupPrograms",
    "chunk_size",
    "clear_program_cache",
    "compile_group",
    "estimate_member_bytes",
    "make_mesh",
    "parse_bytes",
    "plan_chunks",
    "tree_all_finite",
    "tree_where",
]

RUNNING, DIVERGED, STOPPED, INACTIVE = 0, 1, 2, 3
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
TRIALS_AXIS = "trials"


class Carry(NamedTuple):
    """Per-member loop state (every leaf has a leading member axis when batched).

    Attributes:
      state: the task's training state.
      best_state: state at the best evaluation (``()`` without early stopping).
      key: raw uint32 key data of the member's training key stream.
      status: RUNNING, DIVERGED, STOPPED or INACTIVE (padding).
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


@dataclass(frozen=True)
class EngineOptions:
    """Static options baked into the compiled segment program."""

    eval_every: int
    sign: float = 1.0  # +1 minimize, -1 maximize
    patience: int | None = None
    min_delta: float = 0.0
    check_params: bool = True


# ----------------------------------------------------------------------------- tree helpers


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def tree_where(cond: jax.Array, new: Any, old: Any) -> Any:
    """Leafwise ``jnp.where(cond, new, old)`` for a scalar ``cond`` (typed PRNG keys supported)."""

    def pick(a, b):
        if _is_key(a):
            data = jnp.where(cond, jax.random.key_data(a), jax.random.key_data(b))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        return jnp.where(cond, a, b)

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
        if not _is_key(x) and jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.isfinite(sum(sums)) if sums else jnp.bool_(True)


def tree_bytes(tree: Any) -> int:
    """Total bytes of the array leaves (concrete or abstract) of ``tree``."""
    total = 0
    for x in jax.tree.leaves(tree):
        dtype = jax.random.key_data(x).dtype if _is_key(x) else x.dtype
        size = math.prod(x.shape) * (2 if _is_key(x) else 1)
        total += size * np.dtype(dtype).itemsize
    return int(total)


# ----------------------------------------------------------------------------- planning

_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(value: int | float | str) -> int:
    """Bytes from a number or a string such as ``"512MB"`` or ``"2 GiB"``.

    Example:
      >>> parse_bytes("1.5GB"), parse_bytes("64 MiB"), parse_bytes(1000)
      (1500000000, 67108864, 1000)
    """
    if isinstance(value, (int, float)):
        return int(value)
    text = value.strip().lower().replace(" ", "")
    num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(num) :]
    if unit not in _UNITS or not num:
        raise ValueError(f"cannot parse memory size {value!r} (examples: '512MB', '2GiB')")
    return int(float(num) * _UNITS[unit])


def make_mesh(devices: int | Sequence[Any] | None = None) -> jax.sharding.Mesh:
    """A 1-D ``("trials",)`` mesh over ``devices`` (a count, a list, or ``None`` for all)."""
    if devices is None:
        devs = jax.devices()
    elif isinstance(devices, int):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            raise ValueError(f"devices={devices} but {len(available)} device(s) are available")
        devs = available[:devices]
    else:
        devs = list(devices)
    return jax.make_mesh((len(devs),), (TRIALS_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devs)


def chunk_size(group_members: int, num_devices: int, cap: int | None) -> int:
    """Members per chunk: a multiple of the device count, at most ``cap`` (when ``cap >= devices``),
    balanced so that the last chunk needs the least padding.

    Example:
      >>> chunk_size(10, 4, None), chunk_size(10, 4, 6), chunk_size(10, 4, 2), chunk_size(256, 2, 108)
      (12, 4, 2, 86)
    """
    full = -(-group_members // num_devices) * num_devices
    if cap is None:
        return full
    if cap < num_devices:
        return max(1, cap)
    limit = min(full, (cap // num_devices) * num_devices)
    # balance the chunks (fewest chunks, least padding): 256 members, cap 108 -> 3 x 86, not 3 x 108
    chunks = -(-group_members // limit)
    return -(-group_members // (chunks * num_devices)) * num_devices


class ChunkPlan(NamedTuple):
    """One chunk: its static group, member indices (``None`` = padding) and size."""

    group: tuple
    members: tuple[int | None, ...]


def plan_chunks(member_groups: Sequence[tuple], sizes: Mapping[tuple, int]) -> list[ChunkPlan]:
    """Chunks of every group in order of first appearance, each padded to its group's size."""
    order: dict[tuple, list[int]] = {}
    for i, g in enumerate(member_groups):
        order.setdefault(g, []).append(i)
    chunks = []
    for g, members in order.items():
        size = sizes[g]
        for start in range(0, len(members), size):
            part = members[start : start + size]
            chunks.append(ChunkPlan(g, tuple(part) + (None,) * (size - len(part))))
    return chunks


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


def estimate_member_bytes(task: Task, hp_abstract: Mapping[str, Any], num_folds: int | None, patience) -> int:
    """Estimated device bytes one member needs: state (x2 for the update, +1 for the best state
    with early stopping) plus the largest sum of temporaries of one step or one evaluation
    (an upper bound: it assumes no temporary is freed early)."""
    key = jax.eval_shape(lambda: jax.random.key(0))

    def init(h, k):
        return task.init(Hyperparams(h, num_folds), k)

    state = jax.eval_shape(init, hp_abstract, key)
    step_tmp = _jaxpr_temp_bytes(
        lambda h, s, k: task.step(Hyperparams(h, num_folds), s, k), hp_abstract, state, key
    )
    eval_tmp = _jaxpr_temp_bytes(lambda h, s: task.evaluate(Hyperparams(h, num_folds), s), hp_abstract, state)
    copies = 3 if patience is not None else 2
    return copies * tree_bytes(state) + max(step_tmp, eval_tmp)


# ----------------------------------------------------------------------------- compiled programs


@dataclass
class GroupPrograms:
    """The two compiled programs of one static group, and their compile time."""

    init: Any
    segment: Any
    size: int
    compile_seconds: float
    sharding: NamedSharding
    carry_abstract: Any = field(default=None)
    fresh: bool = True  # False when taken from the program cache
    compiled: int = 2  # programs compiled by this call: 0 (cache hit), 1 or 2


def _member_fns(task: Task, statics: Mapping[str, Any], num_folds: int | None, opts: EngineOptions):
    def hp_of(hp_arrays):
        return Hyperparams({**hp_arrays, **statics}, num_folds)

    def init_member(hp_arrays, init_key, train_key, status):
        state = task.init(hp_of(hp_arrays), jax.random.wrap_key_data(init_key))
        best_state = state if opts.patience is not None else ()
        inf = jnp.asarray(jnp.inf, jnp.float32)
        return Carry(state, best_state, train_key, status, inf, jnp.int32(0), jnp.int32(0))

    def segment_member(hp_arrays, carry: Carry):
        hp = hp_of(hp_arrays)

        def body(c, _):
            state, key, status, steps = c
            key, sub = jax.random.split(jax.random.wrap_key_data(key))
            new_state, metrics = task.step(hp, state, sub)
            metrics = {k: jnp.asarray(v, jnp.float32) for k, v in dict(metrics).items()}
            ok = tree_all_finite(metrics)
            if opts.check_params:
                ok = ok & tree_all_finite(new_state)
            running = status == RUNNING
            accept = running & ok
            state = tree_where(accept, new_state, state)
            status = jnp.where(running & ~ok, DIVERGED, status)
            metrics = {k: jnp.where(accept, v, jnp.nan) for k, v in metrics.items()}
            return (state, jax.random.key_data(key), status, steps + accept.astype(jnp.int32)), metrics

        init = (carry.state, carry.key, carry.status, carry.steps)
        (state, key, status, steps), metrics = jax.lax.scan(body, init, None, length=opts.eval_every)
        train_metrics = {k: jnp.nanmean(v) for k, v in metrics.items()}
        objective, eval_metrics = eval_objective(task, hp, state)
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
        return new, (reported, train_metrics, eval_metrics, status, steps)

    return init_member, segment_member


_PROGRAM_CACHE: dict[tuple, GroupPrograms] = {}
_CACHE_SIZE = 16


def clear_program_cache() -> None:
    """Forget the compiled programs kept for reuse by later sweeps."""
    _PROGRAM_CACHE.clear()


def compile_group(
    task: Task,
    statics: Mapping[str, Any],
    traced_dtypes: Mapping[str, str],
    num_folds: int | None,
    opts: EngineOptions,
    size: int,
    mesh: jax.sharding.Mesh,
    *,
    with_init: bool = True,
) -> GroupPrograms:
    """Lower and compile the ``init`` and ``segment`` programs of one static group (AOT).

    Programs are cached (up to 16) by task, static values, dtypes, options, chunk size and
    mesh, so rerunning a sweep with the same task object does not recompile; a cache hit
    reports ``compile_seconds == 0``. With ``with_init=False`` only ``segment`` is compiled
    (``init`` is ``None`` unless cached): a batch gathered from other batches' carries (successive
    halving) is never initialized. ``compiled`` counts the programs this call compiled.
    """
    key = (task, tuple((k, repr(v)) for k, v in statics.items()), tuple(traced_dtypes.items()))
    key += (num_folds, opts, size, mesh)
    hit = _PROGRAM_CACHE.get(key)
    if hit is not None and (hit.init is not None or not with_init):
        return GroupPrograms(hit.init, hit.segment, size, 0.0, hit.sharding, hit.carry_abstract, False, 0)
    init_member, segment_member = _member_fns(task, statics, num_folds, opts)
    sharding = NamedSharding(mesh, PartitionSpec(TRIALS_AXIS))
    hp_abs = {
        k: jax.ShapeDtypeStruct((size,), np.dtype(d), sharding=sharding)
        for k, d in abstract_hyperparams(traced_dtypes, num_folds).items()
    }
    key_abs = jax.ShapeDtypeStruct((size, 2), np.uint32, sharding=sharding)
    status_abs = jax.ShapeDtypeStruct((size,), np.int32, sharding=sharding)
    t0 = time.perf_counter()
    init_jit = jax.jit(jax.vmap(init_member), in_shardings=sharding, out_shardings=sharding)
    # init runs once per chunk: compile it without backend optimizations (10x faster to
    # compile, e.g. for random initializers); the same program serves every chunk and trial.
    init_c = None
    if with_init:
        init_c = init_jit.lower(hp_abs, key_abs, key_abs, status_abs).compile(INIT_COMPILER_OPTIONS)
    if hit is not None:  # the segment program is cached; only init was missing
        programs = GroupPrograms(
            init_c, hit.segment, size, time.perf_counter() - t0, sharding, hit.carry_abstract, True, 1
        )
        _PROGRAM_CACHE[key] = programs
        return programs
    carry_abs = jax.eval_shape(init_jit, hp_abs, key_abs, key_abs, status_abs)
    carry_abs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), carry_abs)
    seg_jit = jax.jit(jax.vmap(segment_member), in_shardings=sharding, out_shardings=sharding)
    seg_c = seg_jit.lower(hp_abs, carry_abs).compile()
    elapsed = time.perf_counter() - t0
    programs = GroupPrograms(init_c, seg_c, size, elapsed, sharding, carry_abs, True, 1 + with_init)
    if len(_PROGRAM_CACHE) >= _CACHE_SIZE:
        _PROGRAM_CACHE.pop(next(iter(_PROGRAM_CACHE)))
    _PROGRAM_CACHE[key] = programs
    return programs


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
    folds), training from ``(seed, trial id, fold)``; independent of chunking and device count."""
    cpu = jax.devices("cpu")[0]
    args = jax.device_put((np.uint32(seed), np.asarray(trials, np.uint32), np.asarray(folds, np.uint32)), cpu)
    init, train = _member_keys(*args)
    return np.asarray(init), np.asarray(train)
