"""Checkpoint and resume of a sweep with orbax-checkpoint.

A checkpoint holds JSON metadata (the sweep's fingerprint, every member's
evaluation history and status, which chunk is in progress and how many of its
segments are done) and arrays (the in-progress chunk's loop state and the kept
trained states), flattened to ``{"0000": leaf, ...}`` dicts so that they
restore without a target structure. Orbax writes each step to a temporary
directory and renames it when complete, so a sweep killed while saving resumes
from the previous complete checkpoint.

Example:
  >>> import tempfile, numpy as np
  >>> from jopt.sweep.checkpoint import Checkpointer
  >>> got = {}
  >>> with tempfile.TemporaryDirectory() as d:
  ...     ck = Checkpointer(d, fingerprint(options={"steps": 4}))
  ...     ck.save(1, {"x": 1}, {"a": np.arange(3)})
  ...     meta = ck.restore(lambda meta, arrays: got.update(arrays))
  ...     ck.close()
  >>> meta["x"], got["a"].tolist()
  (1, [0, 1, 2])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["Checkpointer", "fingerprint", "flatten_leaves", "unflatten_leaves"]


def fingerprint(**parts: Any) -> dict[str, str]:
    """A stable hash of each part of what defines a sweep (options, space, method, task identity).

    Example:
      >>> fp = fingerprint(options={"steps": 4}, task="ab12")
      >>> sorted(fp), len(fp["options"])
      (['options', 'task'], 16)
    """
    return {
        name: hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()[:16]
        for name, value in parts.items()
    }


def flatten_leaves(tree: Any) -> dict[str, np.ndarray]:
    """``{"0000": leaf0, "0001": leaf1, ...}`` as NumPy arrays, in ``jax.tree.leaves`` order."""
    leaves = jax.tree.leaves(tree)
    return {f"{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}


def unflatten_leaves(treedef: Any, flat: dict[str, Any]) -> Any:
    """Inverse of :func:`flatten_leaves` given the tree structure."""
    leaves = [np.asarray(flat[k]) for k in sorted(flat)]
    return jax.tree.unflatten(treedef, leaves)


class Checkpointer:
    """Save and restore sweep checkpoints in ``directory`` (orbax ``CheckpointManager``).

    ``fingerprint``: the parts of :func:`fingerprint`; a checkpoint whose parts differ is refused.
    """

    def __init__(self, directory: str | Path, fingerprint: Mapping[str, str], *, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.fingerprint = dict(fingerprint)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self.step = max(self._manager.all_steps(), default=0)

    def save_next(self, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
        """Save as the step after the latest one (checkpoint steps only increase)."""
        self.step += 1
        self.save(self.step, meta, arrays)

    def save(self, step: int, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
        """Write checkpoint ``step`` (synchronously; replaces an existing one with that step).
        Every process calls it with the same values; orbax writes them once."""
        ocp = self._ocp
        meta = dict(meta, fingerprint=self.fingerprint)
        arrays = dict(arrays) or {}
        arrays["_"] = np.zeros((), np.int32)
        if step in self._manager.all_steps():
            self._manager.delete(step)
        self._manager.save(
            step,
            args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._manager.wait_until_finished()
        self.step = max(self.step, step)

    def _read(self, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
        ocp, where = self._ocp, self.directory / str(step)
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            if not isinstance(meta, Mapping) or "fingerprint" not in meta:
                raise ValueError(f"no fingerprint in {meta!r:.80}")
        except Exception as err:  # noqa: BLE001 - any unreadable metadata is a corrupted checkpoint
            raise _Unusable(where / "meta" / "metadata", err) from err
        self._check_fingerprint(dict(meta))
        try:
            with _quiet_closed_loop():
                out = self._manager.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore()))
            arrays = jax.tree.map(np.asarray, dict(out["arrays"]))
        except Exception as err:  # noqa: BLE001
            raise _Unusable(where / "arrays", err) from err
        arrays.pop("_", None)
        return dict(meta), arrays

    def _check_fingerprint(self, meta: dict[str, Any]) -> None:
        old = meta["fingerprint"]
        old = old if isinstance(old, Mapping) else {"sweep": old}
        if dict(old) != self.fingerprint:
            parts = sorted(
                n for n in set(old) | set(self.fingerprint) if old.get(n) != self.fingerprint.get(n)
            )
            raise ValueError(
                f"checkpoint directory {self.directory} holds a different sweep: its "
                f"{', '.join(parts)} differ{'s' if len(parts) == 1 else ''} from this call's "
                f"({_PARTS_HELP}); use another checkpoint_dir, or delete this one to start over"
            )

    def restore(self, load: Callable[[dict[str, Any], dict[str, Any]], None]) -> dict[str, Any] | None:
        """Load the newest usable checkpoint with ``load(meta, arrays)`` and return its metadata;
        ``None`` if there is none. A checkpoint that cannot be read, or that ``load`` rejects, is
        skipped with a warning naming its file, and the one before it is tried.

        Raises:
          ValueError: the directory holds a different sweep, or no checkpoint in it is usable.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        bad: list[str] = []
        for step in steps:
            try:
                meta, arrays = self._read(step)
                try:
                    load(meta, arrays)
                except Exception as err:  # noqa: BLE001 - inconsistent records
                    raise _Unusable(self.directory / str(step), err) from err
            except _Unusable as err:
                bad.append(str(err))
                warnings.warn(f"skipping an unusable sweep checkpoint: {err}", RuntimeWarning, stacklevel=3)
                continue
            return meta
        if bad:
            raise ValueError(
                f"no usable checkpoint in {self.directory} ({'; '.join(bad)}); delete the directory to "
                "start the sweep over, or use another checkpoint_dir"
            )
        return None

    def close(self) -> None:
        """Release the manager's resources."""
        self._manager.close()


_PARTS_HELP = (
    "options: steps, eval_every, mode, seed, patience, folds...; space: the search space; "
    "method: the search method and its arguments; task: the init/step/evaluate programs and the "
    "data they close over"
)


@contextlib.contextmanager
def _quiet_closed_loop():
    """On a failed read of a damaged checkpoint, orbax's reader threads later report "Event loop
    is closed" as unraisable exceptions (harmless: the read was abandoned). During a read, and for
    the rest of the process after a failed one, a filter drops exactly those reports; every other
    unraisable exception is shown."""
    previous = sys.unraisablehook
    _install_closed_loop_filter()
    yield  # on an error the filter stays: the abandoned read's threads may report after it
    sys.unraisablehook = previous


def _install_closed_loop_filter() -> None:
    previous = sys.unraisablehook
    if getattr(previous, "_jopt_closed_loop_filter", False):
        return

    def hook(unraisable: Any) -> None:
        err = unraisable.exc_value
        if not (isinstance(err, RuntimeError) and "Event loop is closed" in str(err)):
            previous(unraisable)

    hook._jopt_closed_loop_filter = True
    sys.unraisablehook = hook


class _Unusable(Exception):
    """A checkpoint that cannot be used: ``path`` names the file or directory at fault."""

    def __init__(self, path: Path, err: BaseException):
        super().__init__(f"{path}: {type(err).__name__}: {str(err)[:300]}")
