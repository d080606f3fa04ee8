"""The plan of a search: static groups, chunk sizes, the device mesh, keys and compiled programs.

A :class:`Plan` is built once per search from the task, the space and the validated
:class:`~jopt.sweep.options.Options`. It

* names a configuration's static group (:meth:`Plan.group_of`) and binds a group's static values
  to the task (:meth:`Plan.bound`, through :func:`jopt.sweep.task.bind_group`: the one place);
* checks each new group's task abstractly (:func:`~jopt.sweep.task.check_task`, no compile);
* caps a group's chunk from ``max_parallel`` and ``memory_budget`` (an estimate of one member's
  bytes) and sizes chunks (:meth:`Plan.size`: a multiple of the device count);
* builds the ``("trials",)`` mesh -- over fewer devices when a chunk holds fewer members than
  there are devices;
* hands out the :class:`~jopt.sweep.programs.GroupPrograms` of a (group, size), counting what
  was compiled (:meth:`Plan.stats`).

Example:
  >>> import jax.numpy as jnp
  >>> from jopt import sweep
  >>> from jopt.sweep.options import make_options
  >>> task = sweep.Task(lambda hp, k: jnp.zeros(3), lambda hp, w, k: (w - hp["lr"], {"loss": w.sum()}),
  ...                   lambda hp, w: w.sum())
  >>> space = sweep.Space(lr=sweep.uniform(0.0, 1.0), n=sweep.choice([1, 2], static=True))
  >>> plan = Plan(task, space, make_options(steps=4, devices=1, max_parallel=5))
  >>> g = plan.group_of({"lr": 0.5, "n": 2})
  >>> g, plan.size(g, 12), plan.size(g, 3)
  (('2',), 4, 3)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jopt.sweep import programs as P
from jopt.sweep.options import Options
from jopt.sweep.space import Space
from jopt.sweep.task import BoundTask, Task, abstract_hyperparams, bind_group, check_task
from jopt.sweep.transfer import is_key

__all__ = ["Plan", "group_label"]


def _hash_array(digest: Any, x: Any) -> None:
    """Feed an array's dtype, shape and values into ``digest`` (only dtype and shape for an array
    spread over several processes)."""
    if is_key(x):
        x = jax.random.key_data(x)
    digest.update(f"{np.dtype(x.dtype).str}{tuple(np.shape(x))}".encode())
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        digest.update(np.ascontiguousarray(np.asarray(x)).tobytes())


def _check_processes(mesh: jax.sharding.Mesh, options: Options) -> None:
    """With several processes every process must own devices of the mesh (each runs the same
    programs on its own shards)."""
    if jax.process_count() == 1:
        return
    owners = {d.process_index for d in mesh.devices.flat}
    missing = sorted(set(range(jax.process_count())) - owners)
    if missing:
        raise ValueError(
            f"a multi-process sweep shards trials over the devices of every process, but the mesh of "
            f"{mesh.devices.size} device(s) has none of process(es) {missing}: give devices=None (all "
            f"{jax.device_count()}), or a max_parallel / memory_budget that fits at least one member "
            "per device"
        )


def group_label(group: tuple) -> str:
    """A static group's name in statistics (``"-"`` without static hyperparameters)."""
    return ", ".join(group) or "-"


class Plan:
    """See the module docstring. ``configs``: configurations known in advance (their groups are
    checked, and their memory estimates shape the mesh, before anything compiles)."""

    def __init__(self, task: Task, space: Space, options: Options, configs: Sequence[Mapping[str, Any]] = ()):
        self.task, self.space, self.options = task, space, options
        self.traced = {n: space[n].dtype for n in space.traced_names}
        self.hp_dtypes = abstract_hyperparams(self.traced, options.folds)
        self.program_options = P.ProgramOptions(
            options.eval_every, options.sign, options.patience, options.min_delta, options.check_params
        )
        self.statics: dict[tuple, dict[str, Any]] = {}
        self._bound: dict[tuple, BoundTask] = {}
        self._bytes: dict[tuple, int] = {}
        self._states: dict[tuple, Any] = {}
        self._programs: dict[tuple, P.GroupPrograms] = {}
        self.gather_compiles = 0
        groups: dict[tuple, Mapping[str, Any]] = {}
        for c in configs:
            groups.setdefault(self.group_of(c), c)
        if groups:
            check_task(task, space, list(groups.values()), num_folds=options.folds)
            for g, c in groups.items():
                self._add(g, c, checked=True)
        dp = options.data_parallel
        mesh = P.make_mesh(options.devices, dp)
        caps = [c for c in (self.cap(g) for g in self.statics) if c is not None]
        if options.max_parallel is not None:
            caps.append(options.max_parallel)
        shards = mesh.shape[P.TRIALS_AXIS]
        fewest = min(caps, default=shards)
        if fewest < shards:  # fewer members at once than trial shards: use as many devices
            mesh = P.make_mesh(list(mesh.devices.flat[: fewest * dp]), dp)
        _check_processes(mesh, options)
        self.mesh = mesh
        self.trial_shards = int(mesh.shape[P.TRIALS_AXIS])  # chunks are multiples of this

    # ------------------------------------------------------------------ groups
    def group_of(self, config: Mapping[str, Any]) -> tuple:
        """The static group of a configuration: the ``repr`` of its static values."""
        return tuple(repr(config[n]) for n in self.space.static_names)

    def _add(self, group: tuple, config: Mapping[str, Any], checked: bool = False) -> None:
        if group in self.statics:
            return
        if not checked:
            check_task(self.task, self.space, [config], num_folds=self.options.folds)
        self.statics[group] = {n: config[n] for n in self.space.static_names}
        self._check_objectives(group)

    def _check_objectives(self, group: tuple) -> None:
        """The number of objectives ``evaluate`` returns must match ``directions``."""
        hp_abs, _ = self._abstract_inputs()
        _, metrics = jax.eval_shape(self.bound(group).evaluate, hp_abs, self.abstract_state(group))
        count = sum(1 for k in metrics if k.startswith("objective_") and k[10:].isdigit())
        directions = self.options.directions
        if directions is None and count:
            raise ValueError(
                f"task.evaluate returns {count} objectives: give directions=(...), one 'min' or 'max' each"
            )
        if directions is not None and count != len(directions):
            raise ValueError(
                f"directions={directions!r} names {len(directions)} objectives but task.evaluate returns "
                f"{count or 'one scalar'}; return a 1-D array with one objective per direction"
            )

    def admit(self, config: Mapping[str, Any]) -> tuple:
        """The group of a new configuration (checking the task for a group not seen before)."""
        group = self.group_of(config)
        self._add(group, config)
        return group

    def bound(self, group: tuple) -> BoundTask:
        """The task with ``group``'s static values bound."""
        if group not in self._bound:
            self._bound[group] = bind_group(self.task, self.statics[group], self.options.folds)
        return self._bound[group]

    def member_bytes(self, group: tuple) -> int:
        """Estimated device bytes of one member of ``group``."""
        if group not in self._bytes:
            hp_abs, _ = self._abstract_inputs()
            self._bytes[group] = P.estimate_member_bytes(self.bound(group), hp_abs, self.options.patience)
        return self._bytes[group]

    def cap(self, group: tuple) -> int | None:
        """Most members in one chunk of ``group`` (``max_parallel`` and ``memory_budget``)."""
        cap = self.options.max_parallel
        if self.options.memory_budget is not None:
            fit = self.options.memory_budget // max(self.member_bytes(group), 1)
            if fit < 1:
                raise ValueError(
                    f"memory_budget={self.options.memory_budget!r} is too small for one trial "
                    f"(about {self.member_bytes(group)} bytes)"
                )
            cap = fit if cap is None else min(cap, fit)
        return cap

    def size(self, group: tuple, members: int) -> int:
        """Slots of a chunk of ``group`` for ``members`` members (at least one trial's folds)."""
        k = self.options.members_per_trial
        cap = self.cap(group)
        if cap is not None and cap < k:
            raise ValueError(f"a chunk must hold one trial's {k} folds, but at most {cap} members fit")
        size = P.chunk_size(max(members, k), self.trial_shards, cap)
        return max(size, k)

    def _abstract_inputs(self) -> tuple[dict[str, jax.ShapeDtypeStruct], jax.ShapeDtypeStruct]:
        """Shapes and dtypes of one member's traced hyperparameters and of its key."""
        hp_abs = {n: jax.ShapeDtypeStruct((), np.dtype(d)) for n, d in self.hp_dtypes.items()}
        return hp_abs, jax.eval_shape(lambda: jax.random.key(0))

    def abstract_state(self, group: tuple) -> Any:
        """Shapes and dtypes of one member's training state in ``group`` (traced once per group)."""
        if group not in self._states:
            self._states[group] = jax.eval_shape(self.bound(group).init, *self._abstract_inputs())
        return self._states[group]

    def abstract_carry(self, group: tuple) -> P.Carry:
        """Shapes and dtypes of one member's loop state in ``group`` (no slot axis)."""
        state = self.abstract_state(group)
        best = state if self.options.patience is not None else ()
        s = jax.ShapeDtypeStruct
        i32, f32 = np.dtype(np.int32), np.dtype(np.float32)
        return P.Carry(
            state, best, s((2,), np.dtype(np.uint32)), s((), i32), s((), f32), s((), i32), s((), i32)
        )

    def task_identity(self) -> str:
        """A hash of what the task computes: the jaxprs of ``init``, ``step`` and ``evaluate`` of
        the known static groups (else of the space's first static values) and the arrays they
        close over (datasets included). Part of the checkpoint fingerprint, so that a checkpoint
        directory reused with a changed objective or changed data is refused."""
        statics = list(self.statics.values())
        if not statics:
            statics = [{n: self.space[n].values[0] for n in self.space.static_names}]
        digest = hashlib.sha256()
        hp_abs, key = self._abstract_inputs()
        for values in sorted(statics, key=repr):
            bound = bind_group(self.task, values, self.options.folds)
            init, state = jax.make_jaxpr(bound.init, return_shape=True)(hp_abs, key)
            for closed in (init, jax.make_jaxpr(bound.step)(hp_abs, state, key),
                           jax.make_jaxpr(bound.evaluate)(hp_abs, state)):  # fmt: skip
                digest.update(str(closed.jaxpr).encode())
                for const in closed.consts:
                    _hash_array(digest, const)
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ programs
    def programs(self, group: tuple, size: int) -> P.GroupPrograms:
        """The compiled programs of ``group`` at ``size`` slots."""
        key = (group, size)
        if key not in self._programs:
            cache_key = (self.task, tuple((k, repr(v)) for k, v in self.statics[group].items()))
            self._programs[key] = P.GroupPrograms(
                self.bound(group), cache_key, self.traced, self.options.folds, self.program_options, size,
                self.mesh,
            )  # fmt: skip
        return self._programs[key]

    def gather(self, source: P.GroupPrograms, target: P.GroupPrograms, carry, idx, status):
        """Move members between chunks of two sizes on the devices (see :func:`programs.gather`)."""
        out, fresh = P.gather(source, target, carry, idx, status)
        self.gather_compiles += int(fresh)
        return out

    def stats(self) -> dict[str, Any]:
        """Compile counts and times, groups, chunk sizes, devices and bytes per member."""
        progs = self._programs.values()
        sizes: dict[str, list[int]] = {}
        for g, s in sorted(self._programs, key=lambda k: k[1]):
            sizes.setdefault(group_label(g), []).append(s)
        return {
            "compiles": sum(p.compiled for p in progs),
            "gather_compiles": self.gather_compiles,
            "compile_seconds": sum(p.compile_seconds for p in progs),
            "groups": len({g for g, _ in self._programs}),
            "chunk_sizes": sizes,
            "devices": int(self.mesh.devices.size),
            "data_parallel": self.options.data_parallel,
            "bytes_per_member": max((self.member_bytes(g) for g in self.statics), default=0),
        }
