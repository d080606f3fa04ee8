"""A chunk: ``size`` slots of one static group on the devices, and the operations between segments.

Each slot holds one member (a ``(trial, fold)`` pair) or nothing. The host keeps, per slot, the
member, its traced hyperparameter values and the status the devices last reported; the
devices keep the :class:`~jopt.sweep.programs.Carry`. Between segments the engine

* :meth:`Chunk.place` -- puts a new trial into free slots: its state will be built by the
  jitted ``init`` for those slots and its hyperparameters are written into the traced arrays
  (refill: no recompile, the chunk stays full);
* :meth:`Chunk.exploit` -- copies another trial's loop state into a trial's slots (PBT);
* :meth:`Chunk.set_status` -- pauses or resumes a trial's slots;
* :meth:`Chunk.vacate` -- frees a finished trial's slots;

and :meth:`Chunk.flush` applies all of them with one call of the ``update`` program (compiled
once per group and size, on first use). New chunks start from the ``init`` program
(:meth:`Chunk.create`), from another chunk's slots on the devices (a ``gather``) or from states
held in host memory (a transfer), see :meth:`Chunk.create`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jopt.sweep import programs as P
from jopt.sweep.transfer import put, to_device, to_host

__all__ = ["Chunk", "Member", "host_rows"]

Member = tuple[int, int]  # (trial, fold)


def host_rows(host_carry: P.Carry, positions: Sequence[int]) -> list[P.Carry]:
    """The loop states of some slots of a host (NumPy) carry, one pytree per slot."""
    return [jax.tree.map(lambda x, p=int(p): np.array(x[p]), host_carry) for p in positions]


def _stack(rows: Sequence[P.Carry]) -> P.Carry:
    return jax.tree.map(lambda *xs: np.stack(xs), *rows)


class Chunk:
    """See the module docstring. Build with :meth:`create`."""

    def __init__(self, group: tuple, programs: P.GroupPrograms, slots: list[Member | None], hp):
        self.group, self.programs = group, programs
        self.slots = slots
        self.hp = hp  # host arrays, one value per slot
        self.carry: P.Carry | None = None
        self.status = np.full(len(slots), P.INACTIVE, np.int32)  # as last reported by the devices
        self._host: P.Carry | None = None
        self._hp_device = None
        self._reset_pending()

    def _reset_pending(self) -> None:
        n = self.size
        self._src = np.arange(n, dtype=np.int32)
        self._fresh = np.zeros(n, bool)
        self._keys = np.zeros((2, n, 2), np.uint32)
        self._want: dict[int, int] = {}

    # ------------------------------------------------------------------ layout
    @property
    def size(self) -> int:
        return len(self.slots)

    def positions(self, trial: int) -> list[int]:
        """The slots of ``trial``, in fold order."""
        found = sorted((m[1], p) for p, m in enumerate(self.slots) if m is not None and m[0] == trial)
        return [p for _, p in found]

    def trials(self) -> list[int]:
        """The trials in the chunk, in slot order."""
        seen: dict[int, None] = {}
        for m in self.slots:
            if m is not None:
                seen.setdefault(m[0])
        return list(seen)

    def free(self) -> list[int]:
        """Empty slots."""
        return [p for p, m in enumerate(self.slots) if m is None]

    def _write_hp(self, positions: Sequence[int], values: Mapping[str, Any]) -> None:
        for name, arr in self.hp.items():
            if name != "fold":
                arr[positions] = values[name]
        self._hp_device = None

    # ------------------------------------------------------------------ between segments
    def place(self, trial: int, values: Mapping[str, Any], init_keys, train_keys) -> list[int]:
        """Put a new trial (one member per row of the keys) into the lowest free slots."""
        k = len(train_keys)
        positions = self.free()[:k]
        if len(positions) < k:
            raise ValueError(f"no room for trial {trial} ({k} members) in the chunk")
        for f, p in enumerate(positions):
            self.slots[p] = (trial, f)
            if "fold" in self.hp:
                self.hp["fold"][p] = f
            self._fresh[p] = True
            self._src[p] = p
            self._keys[0, p], self._keys[1, p] = init_keys[f], train_keys[f]
            self._want[p] = P.RUNNING
        self._write_hp(positions, values)
        return positions

    def exploit(self, trial: int, donor: int, values: Mapping[str, Any]) -> None:
        """Give ``trial``'s slots a copy of ``donor``'s loop state (keeping their own key streams)
        and the hyperparameters ``values``."""
        mine, theirs = self.positions(trial), self.positions(donor)
        for p, q in zip(mine, theirs, strict=True):
            self._src[p] = q
            self._want[p] = P.RUNNING
        self._write_hp(mine, values)

    def set_status(self, trial: int, code: int) -> None:
        """Set the device status of ``trial``'s slots at the next :meth:`flush`."""
        for p in self.positions(trial):
            self._want[p] = code

    def vacate(self, trial: int) -> None:
        """Free ``trial``'s slots (their contents stay until they are refilled)."""
        for p in self.positions(trial):
            self.slots[p] = None
            self._want.pop(p, None)

    @property
    def pending(self) -> bool:
        ids = np.arange(self.size)
        want = any(self.status[p] != c for p, c in self._want.items())
        return bool(self._fresh.any() or (self._src != ids).any() or want)

    def hp_device(self):
        if self._hp_device is None:
            self._hp_device = put(self.hp, self.programs.sharding)
        return self._hp_device

    def flush(self) -> bool:
        """Apply the pending placements, copies and statuses (one ``update`` call); True if any."""
        if not self.pending:
            self._reset_pending()
            return False
        status = self.status.copy()
        for p, c in self._want.items():
            status[p] = c
        # the key stream stays with the slot: key_src is the identity
        key_src = np.arange(self.size, dtype=np.int32)
        args = (self._src, key_src, self._fresh, status, self._keys[0], self._keys[1])
        dev = put(args, self.programs.sharding)
        self.carry = self.programs.update(self.hp_device(), self.carry, *dev)
        self.status = status
        self._host = None
        self._reset_pending()
        return True

    def segment(self) -> P.SegmentOutput:
        """Run one segment (after :meth:`flush`); the outputs as host arrays."""
        self.carry, out = self.programs.segment(self.hp_device(), self.carry)
        out = to_host(out)
        self.status = np.asarray(out.status, np.int32)
        self._host = None
        return out

    def host(self) -> P.Carry:
        """The carry in host memory (one transfer per segment or update, then cached)."""
        if self._host is None:
            self._host = to_host(self.carry)
        return self._host

    def rows(self, trial: int) -> list[P.Carry]:
        """Host copies of ``trial``'s loop states, in fold order."""
        return host_rows(self.host(), self.positions(trial))

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        plan,
        group: tuple,
        size: int,
        entries: Sequence[tuple[int, Mapping[str, Any], Any]],
        source: Chunk | None = None,
    ) -> Chunk:
        """A chunk of ``size`` slots holding ``entries``: ``(trial, traced values, origin)`` where
        ``origin`` is ``("fresh", init_keys, train_keys)``, ``("slots", [positions in source])``
        or ``("host", [loop states])``. Empty slots repeat the first entry's values, inactive."""
        progs = plan.programs(group, size)
        slots: list[Member | None] = [None] * size
        folded = plan.options.folds is not None
        hp = {n: np.zeros(size, np.dtype(d)) for n, d in plan.traced.items()}
        if folded:
            hp["fold"] = np.zeros(size, np.int32)
        chunk = cls(group, progs, slots, hp)
        layout, pos = [], 0
        for trial, values, origin in entries:
            k = len(origin[1]) if origin[0] != "fresh" else len(origin[2])
            layout.append((trial, values, origin, list(range(pos, pos + k))))
            pos += k
        if pos > size:
            raise ValueError(f"{pos} members do not fit a chunk of {size}")
        first = layout[0][1]
        chunk._write_hp(range(size), first)
        status = np.full(size, P.INACTIVE, np.int32)
        for trial, values, _, positions in layout:
            for f, p in enumerate(positions):
                slots[p] = (trial, f)
                if folded:
                    hp["fold"][p] = f
            chunk._write_hp(positions, values)
            status[positions] = P.RUNNING
        kinds = {o[0] for _, _, o, _ in layout}
        if kinds == {"fresh"}:
            keys = np.zeros((2, size, 2), np.uint32)
            for _, _, origin, positions in layout:
                keys[0, positions], keys[1, positions] = origin[1], origin[2]
            keys[:, pos:] = keys[:, :1]
            dev = put((keys[0], keys[1], status), progs.sharding)
            chunk.carry = progs.init(chunk.hp_device(), *dev)
            chunk.status = status
            return chunk
        if kinds <= {"fresh", "slots"}:
            idx = np.zeros(size, np.int32)
            for _, _, origin, positions in layout:
                if origin[0] == "slots":
                    idx[positions] = origin[1]
            dev = put((idx, status), progs.sharding)
            chunk.carry = plan.gather(source.programs, progs, source.carry, *dev)
        else:
            rows: list[Any] = [None] * size
            src_host = source.host() if source is not None and "slots" in kinds else None
            for _, _, origin, positions in layout:
                if origin[0] == "host":
                    got = origin[1]
                elif origin[0] == "slots":
                    got = host_rows(src_host, origin[1])
                else:
                    continue
                for p, r in zip(positions, got, strict=True):
                    rows[p] = r
            filler = next(r for r in rows if r is not None)
            rows = [filler if r is None else r for r in rows]
            carry = _stack(rows)._replace(status=status)
            chunk.carry = to_device(carry, progs.carry_abstract, progs.sharding)
        chunk.status = status.copy()
        for _, _, origin, positions in layout:
            if origin[0] == "fresh":
                for f, p in enumerate(positions):
                    chunk._fresh[p] = True
                    chunk._keys[0, p], chunk._keys[1, p] = origin[1][f], origin[2][f]
                    chunk._want[p] = P.RUNNING
                    chunk.status[p] = P.INACTIVE
        return chunk

    @classmethod
    def restore(cls, plan, group: tuple, size: int, slots, status, host_carry, hp) -> Chunk:
        """A chunk from a checkpoint (its carry in host memory)."""
        progs = plan.programs(group, size)
        chunk = cls(group, progs, [None if m is None else (int(m[0]), int(m[1])) for m in slots], hp)
        treedef = jax.tree.structure(progs.carry_abstract)
        carry = jax.tree.unflatten(treedef, host_carry)
        chunk.carry = to_device(carry, progs.carry_abstract, progs.sharding)
        chunk.status = np.asarray(status, np.int32)
        return chunk
