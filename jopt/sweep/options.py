"""The options every search method shares, validated once into one :class:`Options` object.

Every front-end (:func:`~jopt.sweep.run`, :func:`~jopt.sweep.successive_halving`,
:func:`~jopt.sweep.asha`, :func:`~jopt.sweep.hyperband`, :func:`~jopt.sweep.pbt`,
:func:`~jopt.sweep.bayesian`, :func:`~jopt.sweep.optuna_search`, :func:`~jopt.sweep.search`)
forwards its ``**options`` to :func:`make_options`; the engine reads only the resulting
:class:`Options`. Bad values raise ``ValueError`` naming the argument before anything is traced
or compiled.

Example:
  >>> o = make_options(steps=100, eval_every=25, mode="max", folds=3, memory_budget="1GB")
  >>> o.segments, o.sign, o.members_per_trial, o.memory_budget
  (4, -1.0, 3, 1000000000)
  >>> make_options(steps=100, eval_every=30)
  Traceback (most recent call last):
  ...
  ValueError: eval_every must be a positive int dividing steps=100, got 30
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import jax
import numpy as np

__all__ = [
    "KEEP_STATES",
    "MODES",
    "Options",
    "OPTION_NAMES",
    "check_int",
    "check_mode",
    "check_option_names",
    "make_options",
    "parse_bytes",
    "validate_options",
]

MODES = ("min", "max")
KEEP_STATES = ("best", "all", "none")


def check_int(name: str, value: Any, low: int = 1, *, optional: bool = False) -> int | None:
    """``value`` as an int ``>= low`` (bools rejected), else ``ValueError`` naming ``name``.

    Example:
      >>> check_int("trials", 4), check_int("patience", None, optional=True)
      (4, None)
    """
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(low, f"an int >= {low}")
        what = f"None or {kind}" if optional else kind
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_mode(mode: Any) -> str:
    """``mode`` if it is ``"min"`` or ``"max"``, else ``ValueError``."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode


_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(value: int | float | str) -> int:
    """Bytes from a number or a string such as ``"512MB"`` or ``"2 GiB"``.

    Example:
      >>> parse_bytes("1.5GB"), parse_bytes("64 MiB"), parse_bytes(1000)
      (1500000000, 67108864, 1000)
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"cannot parse memory size {value!r} (examples: '512MB', '2GiB')")
    text = value.strip().lower().replace(" ", "")
    num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(num) :]
    if unit not in _UNITS or not num:
        raise ValueError(f"cannot parse memory size {value!r} (examples: '512MB', '2GiB')")
    return int(float(num) * _UNITS[unit])


@dataclass(frozen=True)
class Options:
    """Validated options of one search (see :func:`make_options` for their meaning).

    Derived: :attr:`sign` (+1 minimizing, -1 maximizing), :attr:`segments`
    (``steps // eval_every``) and :attr:`members_per_trial` (folds, or 1).
    """

    steps: int
    eval_every: int
    mode: str = "min"
    seed: int = 0
    max_parallel: int | None = None
    memory_budget: int | None = None
    devices: int | tuple | None = None
    patience: int | None = None
    min_delta: float = 0.0
    folds: int | None = None
    checkpoint_dir: str | None = None
    keep_states: str = "best"
    progress: bool = True
    check_params: bool = True
    timeout: float | None = None
    data_parallel: int = 1
    callbacks: tuple = ()
    directions: tuple[str, ...] | None = None
    constraints: Callable[[Mapping[str, float]], Any] | None = None

    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "min" else -1.0

    @property
    def segments(self) -> int:
        return self.steps // self.eval_every

    @property
    def members_per_trial(self) -> int:
        return self.folds or 1


OPTION_NAMES = frozenset(f.name for f in fields(Options))


def check_option_names(
    options: Iterable[str], *, where: str = "the search", own: Iterable[str] = (), fixed: Iterable[str] = ()
) -> None:
    """``ValueError`` for a name in ``options`` that is not a shared option (with a did-you-mean
    hint among the shared options and ``own``, the front-end's own arguments) or that the
    front-end ``where`` sets itself (``fixed``, e.g. ``steps`` from ``max_steps``).

    Example:
      >>> try:
      ...     check_option_names(["seed", "eval_evry"], where="sweep.run", own=["method"])
      ... except ValueError as err:
      ...     print(str(err).split(";")[0])
      sweep.run got an unknown argument 'eval_evry' (did you mean 'eval_every'?)
    """
    own, fixed = [str(n) for n in own], set(fixed)
    for name in options:
        if name.startswith("_"):
            continue
        if name in fixed:
            raise ValueError(f"{where} sets {name!r} itself; do not pass {name}= (see its own arguments)")
        if name not in OPTION_NAMES:
            known = sorted(OPTION_NAMES | set(own))
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            mine = sorted(set(own) - OPTION_NAMES)
            mine = f"{', '.join(mine)} and " if mine else ""
            raise ValueError(
                f"{where} got an unknown argument {name!r}{hint}; its arguments are {mine}the shared "
                f"options {', '.join(sorted(OPTION_NAMES))}"
            )


def validate_options(
    options: dict[str, Any], *, where: str = "the search", own: Iterable[str] = (), **fixed: Any
) -> Options:
    """:func:`make_options` of a front-end's ``**options`` (private ``_hooks`` left out) and the
    values it sets itself (``fixed``, e.g. ``steps``); unknown names are reported by
    :func:`check_option_names` (``where``: the front-end, ``own``: its own argument names)."""
    check_option_names(options, where=where, own=own, fixed=fixed)
    return make_options(**fixed, **{k: v for k, v in options.items() if not k.startswith("_")})


def _check_memory_budget(value: Any) -> int | None:
    """Bytes of ``memory_budget`` (``None``: no budget), else ``ValueError`` naming it."""
    if value is None:
        return None
    what = "memory_budget must be None, a positive number of bytes or a size such as '512MB' or '2GiB'"
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        raise ValueError(f"{what}, got {value!r}")
    try:
        budget = parse_bytes(value)
    except ValueError:
        raise ValueError(f"{what}, got {value!r}") from None
    if budget < 1:
        raise ValueError(f"{what}, got {value!r}")
    return budget


def _check_devices(devices: Any) -> int | tuple | None:
    """``devices`` as ``None``, a count in ``[1, available]`` or a tuple of distinct devices."""
    if devices is None:
        return None
    available = len(jax.devices())
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= available:
            raise ValueError(
                f"devices must be None, a device count in [1, {available}] (the devices available) "
                f"or a list of devices, got {devices!r}"
            )
        return int(devices)
    if isinstance(devices, (str, bytes, Mapping)) or not isinstance(devices, Iterable):
        raise ValueError(f"devices must be None, a device count or a list of devices, got {devices!r}")
    devices = tuple(devices)
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if not devices or bad or len(set(devices)) != len(devices):
        raise ValueError(
            "devices must be None, a device count or a non-empty list of distinct jax devices "
            f"(e.g. jax.devices()[:2]), got {devices!r}"
        )
    return devices


def _check_directions(directions: Any, mode: str, patience: int | None) -> tuple[tuple | None, str]:
    """``(directions as a tuple or None, the mode they imply)``, else ``ValueError``."""
    if directions is None:
        return None, mode
    ok = isinstance(directions, Sequence) and not isinstance(directions, str)
    if not ok or len(directions) < 2 or any(d not in MODES for d in directions):
        raise ValueError(
            f"directions must be None or a sequence of two or more of 'min' / 'max' (one per objective), "
            f"got {directions!r}"
        )
    if mode != "min" and mode != directions[0]:
        raise ValueError(f"mode={mode!r} contradicts directions={tuple(directions)!r}: give directions only")
    if patience is not None:
        raise ValueError("patience (early stopping on one objective) cannot be combined with directions")
    return tuple(directions), directions[0]


def make_options(
    *,
    steps: int,
    eval_every: int | None = None,
    mode: str = "min",
    seed: int = 0,
    max_parallel: int | None = None,
    memory_budget: int | str | None = None,
    devices: int | Sequence[Any] | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    folds: int | None = None,
    checkpoint_dir: str | None = None,
    keep_states: str = "best",
    progress: bool = True,
    check_params: bool = True,
    timeout: float | None = None,
    data_parallel: int = 1,
    callbacks: Sequence[Any] = (),
    directions: Sequence[str] | None = None,
    constraints: Callable[[Mapping[str, float]], Any] | None = None,
) -> Options:
    """Validate the shared options of a search.

    Args:
      steps: training steps of a trial that runs to the end.
      eval_every: steps per segment (one compiled ``lax.scan``, then one evaluation and one
        scheduler decision); must divide ``steps``. Default: ``steps``.
      mode: ``"min"`` or ``"max"`` the objective.
      seed: seeds the sampler and every trial's keys (trial ``i`` always gets the same keys).
      max_parallel: most members (trials x folds) in one compiled chunk.
      memory_budget: bytes (or ``"2GB"``) for a chunk's states and temporaries; caps the chunk
        from an estimate of one member's needs (``stats["bytes_per_member"]``).
      devices: a device count or list to shard the trial axis over (default: all devices).
      patience, min_delta: early stopping of a member after ``patience`` evaluations without an
        improvement of more than ``min_delta``; it keeps its best state.
      folds: k-fold cross-validation (``hp["fold"]`` in the task); a trial is ``k`` members.
      checkpoint_dir: save at every segment boundary and resume from there when rerun.
      keep_states: keep the trained state of the ``"best"`` trial, of ``"all"``, or ``"none"``.
      progress: show a progress bar (tqdm).
      check_params: also treat a non-finite training *state* as divergence (not only metrics).
      timeout: seconds of wall time: no segment starts that would end after it (estimated from
        the last one); trials still running then are pruned.
      data_parallel: devices per member: the mesh becomes ``("trials", "data")`` and a task's
        minibatch marked with :func:`jopt.sweep.shard_batch` is split over a member's devices.
        Must divide the device count.
      callbacks: objects with ``on_segment`` / ``on_trial_end`` / ``on_end`` methods (see
        :mod:`jopt.sweep.callbacks`), called on process 0 at each segment boundary, when a trial
        ends and at the end.
      directions: a multi-objective search: ``("min", "min")``, ... one per objective of a
        ``task.evaluate`` that returns a 1-D array of them (objective 0 is the engine's
        objective: best state, ranking; ``result.pareto_front()`` uses all). Sets ``mode``.
      constraints: ``metrics -> values``, feasible when every value is ``<= 0``; ``metrics``
        maps ``"objective"``, ``"train/<name>"`` and ``"eval/<name>"`` to their values at one
        evaluation. Infeasible trials rank after every feasible one (by total violation), in
        results and in every method's decisions.

    Raises:
      ValueError: naming the first bad argument.
    """
    steps = check_int("steps", steps)
    eval_every = steps if eval_every is None else eval_every
    if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive int dividing steps={steps}, got {eval_every!r}")
    if steps % eval_every:
        raise ValueError(f"eval_every must be a positive int dividing steps={steps}, got {eval_every!r}")
    check_mode(mode)
    seed = check_int("seed", seed, 0)
    max_parallel = check_int("max_parallel", max_parallel, optional=True)
    budget = _check_memory_budget(memory_budget)
    devices = _check_devices(devices)
    patience = check_int("patience", patience, optional=True)
    ok = isinstance(min_delta, (int, float, np.number)) and not isinstance(min_delta, bool)
    if not ok or not min_delta >= 0 or not math.isfinite(min_delta):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
    folds = check_int("folds", folds, 2, optional=True)
    if keep_states not in KEEP_STATES:
        raise ValueError(f"keep_states must be 'best', 'all' or 'none', got {keep_states!r}")
    if timeout is not None:
        ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
        if not ok or not timeout > 0:
            raise ValueError(f"timeout must be None or a positive number of seconds, got {timeout!r}")
    if checkpoint_dir is not None:
        if not isinstance(checkpoint_dir, (str, os.PathLike)) or not str(checkpoint_dir):
            raise ValueError(f"checkpoint_dir must be None or a directory path, got {checkpoint_dir!r}")
        checkpoint_dir = os.fspath(checkpoint_dir)
    data_parallel = check_int("data_parallel", data_parallel)
    if data_parallel > len(jax.devices()) and devices is None:
        raise ValueError(
            f"data_parallel must be at most the {len(jax.devices())} devices, got {data_parallel}"
        )
    if callbacks is None or (isinstance(callbacks, (tuple, list)) and not callbacks):
        callbacks = ()
    else:
        from jopt.sweep.callbacks import check_callbacks

        callbacks = check_callbacks(callbacks)
    directions, mode = _check_directions(directions, mode, patience)
    if constraints is not None and not callable(constraints):
        raise ValueError(
            f"constraints must be None or a function metrics -> values (<= 0 feasible), got {constraints!r}"
        )
    for name, flag in (("progress", progress), ("check_params", check_params)):
        if not isinstance(flag, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    return Options(
        int(steps), int(eval_every), mode, seed, max_parallel, budget, devices, patience, float(min_delta),
        folds, checkpoint_dir, keep_states, bool(progress), bool(check_params),
        None if timeout is None else float(timeout), data_parallel, tuple(callbacks), directions, constraints,
    )  # fmt: skip
