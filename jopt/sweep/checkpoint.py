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
  >>> with tempfile.TemporaryDirectory() as d:
  ...     ck = Checkpointer(d, "abc")
  ...     ck.save(1, {"x": 1}, {"a": np.arange(3)})
  ...     meta, arrays = ck.restore()
  ...     ck.close()
  >>> meta["x"], arrays["a"].tolist()
  (1, [0, 1, 2])
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["Checkpointer", "fingerprint", "flatten_leaves", "unflatten_leaves"]


def fingerprint(**parts: Any) -> str:
    """A stable hash of the sweep's defining arguments (configurations, steps, seed, ...)."""
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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

    Raises:
      ValueError: on restore, if the directory holds a checkpoint of a different sweep.
    """

    def __init__(self, directory: str | Path, fingerprint: str, *, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.fingerprint = fingerprint
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self.step = self._manager.latest_step() or 0

    def save_next(self, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
        """Save as the step after the latest one (checkpoint steps only increase)."""
        self.step += 1
        self.save(self.step, meta, arrays)

    def save(self, step: int, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
        """Write checkpoint ``step`` (synchronously; replaces an existing one with that step)."""
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

    def restore(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(meta, arrays)`` of the latest complete checkpoint, or ``None`` if there is none."""
        ocp = self._ocp
        step = self._manager.latest_step()
        if step is None:
            return None
        out = self._manager.restore(
            step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        )
        meta = dict(out["meta"])
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"checkpoint directory {self.directory} holds a different sweep "
                f"(fingerprint {meta.get('fingerprint')} != {self.fingerprint}); use another directory"
            )
        arrays = jax.tree.map(np.asarray, dict(out["arrays"]))
        arrays.pop("_", None)
        return meta, arrays

    def close(self) -> None:
        """Release the manager's resources."""
        self._manager.close()
